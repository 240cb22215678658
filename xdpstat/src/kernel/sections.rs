//! Counters the datapath keeps a section per CPU in one memory-mappable
//! array (each rule's hits, the prefix sketches): a CPU adds only to its
//! own section, with no atomic operation and no cache line shared with
//! another CPU, as a per-CPU array would; but user space reads it through
//! a mapping, a word at a time, where a per-CPU array can only be read by
//! a system call that copies one value at a time (20,000 rules' hits took
//! 5 ms that way). Each read maps the part it wants of each section and
//! unmaps it, so nothing of it stays in xdpstat's memory.

use std::{
    io,
    os::fd::{AsFd as _, BorrowedFd},
    sync::atomic::Ordering,
};

use xdpstat_common::Counter;

use crate::kernel::mapped::{MappedArray, page_size};

/// One array of [`Counter`]s in sections of `section` per CPU.
pub struct Sections<'a> {
    map: BorrowedFd<'a>,
    section: usize,
    cpus: usize,
}

impl<'a> Sections<'a> {
    /// The array behind `map`, `cpus` sections of `section` counters.
    pub fn new(map: BorrowedFd<'a>, section: usize, cpus: usize) -> Self {
        Self { map, section, cpus }
    }

    /// Counters `[first, first + count)` of every section, each summed over
    /// the CPUs.
    pub fn sums(&self, first: usize, count: usize) -> io::Result<Vec<Counter>> {
        let mut sums = vec![Counter::default(); count];
        self.each_window(first, count, |window, skip| {
            for (at, sum) in sums.iter_mut().enumerate() {
                let packets = window.load(skip + at, 0, Ordering::Relaxed);
                if packets != 0 {
                    sum.add(&Counter {
                        packets,
                        bytes: window.load(skip + at, 8, Ordering::Relaxed),
                    });
                }
            }
        })?;
        Ok(sums)
    }

    /// Zeroes counters `[first, first + count)` of every section (only when
    /// no program adds to them: a rule slot no packet is judged by).
    pub fn zero(&self, first: usize, count: usize) -> io::Result<()> {
        self.each_window(first, count, |window, skip| {
            for at in skip..skip + count {
                window.store(at, 0, 0, Ordering::Relaxed);
                window.store(at, 8, 0, Ordering::Relaxed);
            }
        })
    }

    /// Maps counters `[first, first + count)` of each CPU's section in
    /// turn (from the page they start on) and hands each mapping to `each`
    /// with the index of counter `first` in it.
    fn each_window(
        &self,
        first: usize,
        count: usize,
        mut each: impl FnMut(&MappedArray<Counter>, usize),
    ) -> io::Result<()> {
        if count == 0 {
            return Ok(());
        }
        if first + count > self.section {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "counters {first}..{} are past a section of {}",
                    first + count,
                    self.section
                ),
            ));
        }
        let per_page = (page_size() / size_of::<Counter>()).max(1);
        for cpu in 0..self.cpus {
            let start = cpu * self.section + first;
            let aligned = start - start % per_page;
            let skip = start - aligned;
            let window = MappedArray::map_range(self.map.as_fd(), aligned, skip + count)?;
            each(&window, skip);
        }
        Ok(())
    }
}
