//! Reading a table for user space (see `xdpstat_common::compact`): the
//! entries that hold a source are copied, index first, into a small array
//! user space keeps mapped. Mapping a table of a million sources to walk it
//! costs user space a page-table entry per 4 KiB page, made and torn down
//! at every read; here the kernel walks the table where it already is.

use aya_ebpf::maps::Array;
use xdpstat_common::{
    V4Entry, V6Entry,
    compact::{Control, STEP, V4},
    entry_state,
};

use crate::maps::{COMPACT_CONTROL, COMPACTED, SOURCES_V4, SOURCES_V6};

/// One run: the next [`STEP`] entries of the range in `COMPACT_CONTROL`.
#[inline(always)]
pub fn run() {
    let Some(control) = COMPACT_CONTROL.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the map's one live value; only user space (between calls)
    // and this program (one run at a time, on the calling thread) use it.
    let control = unsafe { &mut *control };
    if control.family == V4 {
        copy_ready::<V4Entry, 4>(&SOURCES_V4, control);
    } else {
        copy_ready::<V6Entry, 6>(&SOURCES_V6, control);
    }
}

/// Copies the `READY` entries among the next [`STEP`] of `control`'s range,
/// their first `WORDS` words (the state word replaced by the index). Stops
/// early, where it is, when the copies fill the array.
#[inline(always)]
fn copy_ready<E, const WORDS: usize>(table: &Array<E>, control: &mut Control) {
    let (mut next, end, mut written) = (control.next, control.end, control.written);
    for _ in 0..STEP {
        if next >= end {
            break;
        }
        let Some(entry) = table.get_ptr(next as u32) else {
            break;
        };
        let entry = entry.cast::<u64>();
        // SAFETY: a live entry of at least `WORDS` words (the caller pairs
        // the table with its entry's size); other CPUs write it, so every
        // word is read once, whole, and the state first: the datapath
        // writes an entry's address before it makes the entry READY.
        // The state is the entry's first u32, in either byte order.
        let state = unsafe { core::ptr::read_volatile(entry.cast::<u32>()) };
        if state == entry_state::READY {
            let Some(slot) = COMPACTED.get_ptr_mut(written as u32) else {
                break;
            };
            let slot = slot.cast::<u64>();
            // SAFETY: `slot` is a live value of the copies' array, six
            // words long, and `WORDS` is at most six. Word 1 is read last:
            // in an IPv4 entry it holds the mixed flag, which user space
            // must load after the counters (the datapath sets it before it
            // adds to them; see the reader in user space).
            unsafe {
                *slot = next;
                for word in 2..WORDS {
                    *slot.add(word) = core::ptr::read_volatile(entry.add(word));
                }
                *slot.add(1) = core::ptr::read_volatile(entry.add(1));
            }
            written += 1;
        }
        next += 1;
    }
    control.next = next;
    control.written = written;
}
