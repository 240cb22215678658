//! One frame as counting and rules see it: how many packets it stands for
//! (more than one for a buffer GRO merged, at tcx), its bytes on the wire,
//! and where a rate limit takes its time from.

use aya_ebpf::helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns};

/// One frame as counting and rules see it.
#[derive(Clone, Copy)]
pub struct Packet {
    pub packets: u64,
    pub len: u64,
    pub clock: Clock,
}

/// Where a rate limit's time comes from: the kernel's monotonic clock,
/// or a replayed frame's capture time.
#[derive(Clone, Copy)]
pub enum Clock {
    Kernel,
    Given(u64),
}

impl Clock {
    #[inline(always)]
    pub fn now(self) -> u64 {
        match self {
            // SAFETY: a helper with no arguments.
            Clock::Kernel => unsafe { bpf_ktime_get_ns() },
            Clock::Given(now) => now,
        }
    }

    /// The kernel's coarse clock (at most a tick behind `now`, and far
    /// cheaper to read), or the capture time.
    #[inline(always)]
    pub fn coarse_now(self) -> u64 {
        match self {
            // SAFETY: a helper with no arguments.
            Clock::Kernel => unsafe { bpf_ktime_get_coarse_ns() },
            Clock::Given(now) => now,
        }
    }
}

/// `value`, as a number the verifier tracks apart from the register it
/// came from. Copies of one number are linked for the verifier: a bound it
/// learns on one, at a branch, it learns on all, and paths that differ in
/// such a bound are not taken as the same. An ALU operation's result is
/// linked to nothing (`|= 0`, one instruction).
#[inline(always)]
pub fn unlinked(value: u64) -> u64 {
    let mut value = value;
    // SAFETY: an OR with zero on a register: no memory, no side effect.
    unsafe {
        core::arch::asm!("{0} |= 0", inout(reg) value, options(pure, nomem, nostack));
    }
    value
}
