//! A BPF array created with `BPF_F_MMAPABLE`, or a window of one, mapped
//! into xdpstat's memory: reading a million counters is then a walk through
//! memory, not a million system calls.
//!
//! The XDP program writes these values while xdpstat reads them, so values
//! are never read or written whole: every access is one atomic load or
//! store of an aligned 8-byte word (each word is read whole; two words of
//! one value may come from either side of a concurrent update), and the
//! caller names the memory ordering where it matters.

use std::{
    io,
    marker::PhantomData,
    mem::size_of,
    os::fd::BorrowedFd,
    sync::atomic::{AtomicU64, Ordering},
};

use memmap2::{MmapOptions, MmapRaw};

/// The size of a memory page here: a mapping of a BPF array starts on a
/// page boundary (the kernel refuses any other offset).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// `len` values of `T` shared with the kernel, `T` a whole number of
/// 8-byte words.
pub struct MappedArray<T> {
    map: MmapRaw,
    len: usize,
    _values: PhantomData<T>,
}

impl<T> MappedArray<T> {
    /// Maps the first `len` values of the array behind `map`, which must
    /// have been created with `BPF_F_MMAPABLE` and hold at least `len`
    /// values of `T` (whose size must be a multiple of 8, the kernel's
    /// element stride).
    pub fn map(map: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        Self::map_range(map, 0, len)
    }

    /// Maps `len` values from value `first` on; the first value must start
    /// on a page boundary.
    pub fn map_range(map: BorrowedFd<'_>, first: usize, len: usize) -> io::Result<Self> {
        assert!(
            size_of::<T>().is_multiple_of(8) && len > 0,
            "array elements are whole 8-byte words"
        );
        let offset = first * size_of::<T>();
        if !offset.is_multiple_of(page_size()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a window at byte {offset} does not start on a {}-byte page",
                    page_size()
                ),
            ));
        }
        let map = MmapOptions::new()
            .offset(offset as u64)
            .len(len * size_of::<T>())
            .map_raw(&map)?;
        Ok(Self {
            map,
            len,
            _values: PhantomData,
        })
    }

    /// The word `offset` bytes into value `index`.
    fn word_ref(&self, index: usize, offset: usize) -> &AtomicU64 {
        assert!(index < self.len, "index {index} beyond {}", self.len);
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= size_of::<T>(),
            "a whole aligned word inside the value"
        );
        // SAFETY: in bounds of the live mapping (checked above), 8-byte
        // aligned (page-aligned base, values a multiple of 8 bytes); the
        // kernel and this process only ever access it atomically or with
        // aligned 8-byte accesses, which do not tear on the architectures
        // BPF JITs for.
        unsafe {
            AtomicU64::from_ptr(
                self.map
                    .as_mut_ptr()
                    .add(index * size_of::<T>() + offset)
                    .cast::<u64>(),
            )
        }
    }

    /// Loads the word `offset` bytes into value `index`.
    pub fn load(&self, index: usize, offset: usize, order: Ordering) -> u64 {
        self.word_ref(index, offset).load(order)
    }

    /// Stores `word` `offset` bytes into value `index`.
    pub fn store(&self, index: usize, offset: usize, word: u64, order: Ordering) {
        self.word_ref(index, offset).store(word, order)
    }

    /// Clears the `bits` of the word `offset` bytes into value `index`, in
    /// one atomic read-modify-write.
    pub fn clear_bits(&self, index: usize, offset: usize, bits: u64) {
        self.word_ref(index, offset)
            .fetch_and(!bits, Ordering::AcqRel);
    }
}

impl MappedArray<u64> {
    /// The value at `index`.
    pub fn get(&self, index: usize) -> u64 {
        self.load(index, 0, Ordering::Relaxed)
    }
}
