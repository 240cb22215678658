//! A table's sources as the kernel copies them out (see
//! `xdpstat_common::compact`): the read of a million sources no longer maps
//! the tables. Mapping costs a page-table entry per 4 KiB page, made and
//! torn down at every read (about 7 ms of a million-source read, for 216
//! MB of tables); the kernel walks the tables where they are, and the
//! copies, only the entries with a source, are in a small array that stays
//! mapped.

use std::{io, ops::Range, os::fd::BorrowedFd, sync::atomic::Ordering};

use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions};
use xdpstat_common::{
    COMPACT_PROGRAM_NAME,
    compact::{COMPACTED_ENTRIES, Compacted, Control, STEP},
};

use crate::{error::one_line, kernel::mapped::MappedArray};

/// The bytes BPF_PROG_TEST_RUN makes a socket buffer of for the program,
/// which never reads them.
const FRAME: [u8; 64] = [0; 64];

/// How often a call interrupted by a signal is made again before the read
/// gives up (each call keeps what the last one did).
const INTERRUPTED_TRIES: usize = 100;

const NEXT: usize = core::mem::offset_of!(Control, next);
const END: usize = core::mem::offset_of!(Control, end);
const WRITTEN: usize = core::mem::offset_of!(Control, written);
const FAMILY: usize = core::mem::offset_of!(Control, family);

/// The copies' array and the control word, mapped for good (under a
/// megabyte).
pub struct Copies {
    control: MappedArray<Control>,
    copies: MappedArray<Compacted>,
}

impl Copies {
    pub fn open(control: BorrowedFd<'_>, copies: BorrowedFd<'_>) -> io::Result<Self> {
        Ok(Self {
            control: MappedArray::map(control, 1)?,
            copies: MappedArray::map(copies, COMPACTED_ENTRIES as usize)?,
        })
    }

    /// Has `program` copy the entries of `family`'s table in `range` that
    /// hold a source, and calls `each` with the copies and the place of
    /// each copy in them, in the order of the entries. The copies are
    /// read as `MappedArray` values: word 0 is the entry's index, the
    /// others are the entry's words from word 1 on.
    pub fn each_ready(
        &self,
        program: &SchedClassifier,
        family: u64,
        range: Range<usize>,
        mut each: impl FnMut(&MappedArray<Compacted>, usize) -> Result<(), String>,
    ) -> Result<(), String> {
        let end = range.end as u64;
        self.control
            .store(0, NEXT, range.start as u64, Ordering::Relaxed);
        self.control.store(0, END, end, Ordering::Relaxed);
        self.control.store(0, WRITTEN, 0, Ordering::Relaxed);
        self.control.store(0, FAMILY, family, Ordering::Relaxed);
        // Each call looks at up to four times the entries the copies hold:
        // a table holds a source in fewer than half its entries, and where
        // it holds more, the program stops where the copies fill up and
        // the next call goes on from there. (A call per array's worth cost
        // a million-source read 275 system calls and about a millisecond
        // more.)
        let repeat = COMPACTED_ENTRIES / STEP * 4;
        let mut interrupted = 0;
        loop {
            let next = self.control.load(0, NEXT, Ordering::Relaxed);
            if next >= end {
                return Ok(());
            }
            let options = TestRunOptions {
                data_in: Some(&FRAME),
                repeat,
                ..TestRunOptions::default()
            };
            let stopped = match program.test_run(options) {
                Ok(_) => false,
                // A signal stops the runs where they are; what they copied
                // is in the control word, so the next call goes on.
                Err(ProgramError::SyscallError(e))
                    if e.io_error.kind() == io::ErrorKind::Interrupted
                        && interrupted < INTERRUPTED_TRIES =>
                {
                    interrupted += 1;
                    true
                }
                Err(e) => return Err(format!("running {COMPACT_PROGRAM_NAME}: {}", one_line(&e))),
            };
            // The system call returned: the program's writes are visible.
            let written = self.control.load(0, WRITTEN, Ordering::Acquire);
            let after = self.control.load(0, NEXT, Ordering::Relaxed);
            if written > u64::from(COMPACTED_ENTRIES) || after > end || after < next {
                return Err(format!(
                    "{COMPACT_PROGRAM_NAME} left entry {after} of {end} with {written} copies"
                ));
            }
            if after == next && written == 0 && !stopped {
                return Err(format!(
                    "{COMPACT_PROGRAM_NAME} stopped at entry {next} of {end}"
                ));
            }
            for at in 0..written as usize {
                each(&self.copies, at)?;
            }
            self.control.store(0, WRITTEN, 0, Ordering::Relaxed);
        }
    }
}
