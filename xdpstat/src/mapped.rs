//! A BPF array created with `BPF_F_MMAPABLE`, or a window of one, mapped
//! into xdpstat's memory: reading a million counters is then a walk through
//! memory, not a million system calls.

use std::{
    io,
    marker::PhantomData,
    mem::size_of,
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
};

use aya::Pod;

/// The page size BPF array mappings are aligned to (x86-64 and arm64 with
/// 4 KiB pages; the kernel refuses a misaligned offset rather than
/// mapping the wrong values).
pub const PAGE: usize = 4096;

/// `len` values of `T` shared with the kernel. The datapath writes them
/// while xdpstat reads, so every access is a volatile load or store of a
/// whole value; each 8-byte field is read whole (x86-64 and arm64 never
/// tear aligned 8-byte loads), though two fields of one value may come
/// from either side of a concurrent update.
pub struct MappedArray<T> {
    base: NonNull<T>,
    len: usize,
    bytes: usize,
    _values: PhantomData<T>,
}

// SAFETY: the mapping is plain shared memory; the type only hands out
// copies of values, so it can move to and be shared with other threads.
unsafe impl<T: Pod> Send for MappedArray<T> {}
// SAFETY: as above.
unsafe impl<T: Pod> Sync for MappedArray<T> {}

impl<T: Pod> MappedArray<T> {
    /// Maps the first `len` values of the array behind `map`, which must
    /// have been created with `BPF_F_MMAPABLE` and hold at least `len`
    /// values of `T` (whose size must be a multiple of 8, the kernel's
    /// element stride).
    pub fn map(map: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        Self::map_range(map, 0, len)
    }

    /// Maps `len` values from value `first` on; `first` values must fill
    /// whole pages (the kernel maps from page boundaries).
    pub fn map_range(map: BorrowedFd<'_>, first: usize, len: usize) -> io::Result<Self> {
        assert!(
            size_of::<T>().is_multiple_of(8) && len > 0,
            "array elements are 8-byte aligned"
        );
        let offset = first * size_of::<T>();
        assert!(
            offset.is_multiple_of(PAGE),
            "a window starts on a page boundary"
        );
        let bytes = len * size_of::<T>();
        // SAFETY: a fresh shared mapping of the map's memory; the kernel
        // checks the length against the array's size.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: NonNull::new(base.cast()).expect("mmap never maps address 0 here"),
            len,
            bytes,
            _values: PhantomData,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value at `index`.
    pub fn get(&self, index: usize) -> T {
        assert!(index < self.len, "index {index} beyond {}", self.len);
        // SAFETY: in bounds of the live mapping; `T` is `Pod` and 8-byte
        // aligned (page-aligned base, 8-byte multiple size).
        unsafe { self.base.as_ptr().add(index).read_volatile() }
    }

    /// Stores `value` at `index` (only for values no program writes any
    /// more: xdpstat clears retired entries).
    pub fn set(&self, index: usize, value: T) {
        assert!(index < self.len, "index {index} beyond {}", self.len);
        // SAFETY: as in `get`; the mapping is writable.
        unsafe { self.base.as_ptr().add(index).write_volatile(value) }
    }

    /// Stores one aligned `u64` field, `offset` bytes into the value at
    /// `index`, leaving the rest of the value to whoever else writes it.
    pub fn set_word(&self, index: usize, offset: usize, word: u64) {
        assert!(index < self.len, "index {index} beyond {}", self.len);
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= size_of::<T>(),
            "a whole aligned word inside the value"
        );
        // SAFETY: in bounds and 8-byte aligned (see `get`); a single aligned
        // 8-byte store is atomic on the architectures BPF JITs for.
        unsafe {
            self.base
                .as_ptr()
                .add(index)
                .cast::<u8>()
                .add(offset)
                .cast::<u64>()
                .write_volatile(word)
        }
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; no reference into it
        // outlives `self` (values are handed out by copy).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}
