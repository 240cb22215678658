//! Reads a whole per-CPU hash map in a few system calls with
//! BPF_MAP_LOOKUP_BATCH (Linux 5.6), which aya does not wrap.
//!
//! Per-key reading (get-next-key, then lookup, per entry) costs two system
//! calls per source and restarts from the first bucket whenever the key it
//! stands on is evicted, so a busy LRU map can hand the same source out
//! twice. A batch lookup walks the hash table bucket by bucket, copying up
//! to a buffer's worth of entries per call: each bucket is visited once, so
//! a source is seen at most once per read, and a source present for the
//! whole read is seen exactly once. Sources inserted or evicted during the
//! read may or may not be seen; the next read has them right.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::Pod;

/// `BPF_MAP_LOOKUP_BATCH` from `enum bpf_cmd` in `<linux/bpf.h>`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `ENOTSUPP` (kernel-internal, but the bpf syscall returns it for map
/// types without batch operations).
const ENOTSUPP: i32 = 524;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every entry was handed out; the number of system calls it took.
    Read { calls: usize },
    /// The kernel has no batch lookup for this map; nothing was handed out.
    Unsupported,
}

/// Reusable buffers for batch reads of a per-CPU hash map with keys `K`
/// and per-CPU values `V`.
pub struct BatchReader<K, V> {
    keys: Vec<K>,
    values: Vec<V>,
    cpus: usize,
}

impl<K: Pod, V: Pod> BatchReader<K, V> {
    /// Buffers for `entries` entries per call of a map on a machine with
    /// `cpus` possible CPUs (per-CPU maps return one value per possible CPU).
    pub fn new(cpus: usize, entries: usize) -> Self {
        assert!(
            size_of::<V>().is_multiple_of(8),
            "per-CPU values are laid out in 8-byte steps; pad V"
        );
        let entries = entries.max(1);
        Self {
            keys: vec![zeroed(); entries],
            values: vec![zeroed(); entries * cpus.max(1)],
            cpus: cpus.max(1),
        }
    }

    /// Entries one call can return.
    pub fn entries_per_call(&self) -> usize {
        self.keys.len()
    }

    /// Hands every entry of the map behind `map` to `each`, as its key and
    /// one value per possible CPU. A bucket larger than the buffer grows the
    /// buffer, up to `max_entries` (the map's capacity).
    pub fn read(
        &mut self,
        map: BorrowedFd<'_>,
        max_entries: usize,
        mut each: impl FnMut(&K, &[V]),
    ) -> io::Result<Outcome> {
        let mut in_token = 0u64;
        let mut out_token = 0u64;
        let mut first = true;
        let mut calls = 0;
        loop {
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { &raw const in_token as u64 },
                out_batch: &raw mut out_token as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: u32::try_from(self.keys.len()).unwrap_or(u32::MAX),
                map_fd: map.as_raw_fd() as u32,
                ..BatchAttr::default()
            };
            calls += 1;
            // SAFETY: `attr` is a valid `bpf_attr` prefix for this command;
            // the key and value buffers hold `count` entries (values: `cpus`
            // per entry), and the tokens are 8 bytes, more than the 4 the
            // hash map's batch token needs.
            let result = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_BATCH,
                    &raw mut attr,
                    size_of::<BatchAttr>(),
                )
            };
            let error = (result < 0).then(io::Error::last_os_error);
            let errno = error.as_ref().and_then(io::Error::raw_os_error);
            let done = match errno {
                None => false,
                Some(libc::ENOENT) => true,
                Some(libc::ENOSPC) if self.keys.len() < max_entries => {
                    // One bucket holds more entries than the buffer: grow it
                    // and ask for the same bucket again.
                    let entries = (self.keys.len() * 2).min(max_entries.max(1));
                    *self = Self::new(self.cpus, entries);
                    continue;
                }
                Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP) if first => {
                    return Ok(Outcome::Unsupported);
                }
                Some(_) => return Err(error.expect("errno implies an error")),
            };
            let filled = (attr.count as usize).min(self.keys.len());
            for (index, key) in self.keys[..filled].iter().enumerate() {
                each(
                    key,
                    &self.values[index * self.cpus..(index + 1) * self.cpus],
                );
            }
            if done {
                return Ok(Outcome::Read { calls });
            }
            in_token = out_token;
            first = false;
        }
    }
}

fn zeroed<T: Pod>() -> T {
    // SAFETY: `Pod` types are valid for any bit pattern, zero included.
    unsafe { std::mem::zeroed() }
}
