//! The few ways the program writes memory other CPUs (or user space) read:
//! atomic adds and compare-and-exchanges (the BPF target has neither
//! `AtomicU64::fetch_add` nor `compare_exchange`), and ordered stores.

use xdpstat_common::Counter;

/// Atomically replaces `*word` by `new` if it is `expected`.
///
/// # Safety
/// `word` points to a live, aligned u64.
#[inline(always)]
pub unsafe fn compare_exchange(word: *mut u64, expected: u64, new: u64) -> bool {
    let mut seen = expected;
    // SAFETY: the caller passes a live, aligned word; BPF_CMPXCHG (Linux
    // 5.12) compares with r0 and leaves the old value there.
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({word} + 0, r0, {new})",
            word = in(reg) word,
            new = in(reg) new,
            inout("r0") seen,
        );
    }
    seen == expected
}

/// Atomically replaces the 32-bit `*word` by `new` if it is `expected`
/// (a table entry's state, which shares its 8 bytes with the remembered
/// rule).
///
/// # Safety
/// `word` points to a live, aligned u32.
#[inline(always)]
pub unsafe fn compare_exchange_u32(word: *mut u32, expected: u32, new: u32) -> bool {
    let mut seen = u64::from(expected);
    // SAFETY: as `compare_exchange`, on 32 bits: BPF_CMPXCHG with BPF_W
    // compares with the low half of r0 and leaves the old value there,
    // zero-extended.
    unsafe {
        core::arch::asm!(
            "w0 = cmpxchg32_32({word} + 0, w0, w2)",
            word = in(reg) word,
            in("r2") u64::from(new),
            inout("r0") seen,
        );
    }
    seen as u32 == expected
}

/// Atomically adds `packets` to the 64-bit `*word`.
///
/// # Safety
/// `word` points to a live, aligned u64.
#[inline(always)]
pub unsafe fn atomic_add_word(word: *mut u64, packets: u64) {
    // SAFETY: the caller passes a live, aligned word.
    unsafe { core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) word, in(reg) packets) };
}

/// Atomically adds `run` to `*counter` (BPF_ADD with BPF_ATOMIC, the
/// kernel's xadd).
///
/// # Safety
/// `counter` points to a live, aligned counter.
#[inline(always)]
pub unsafe fn atomic_add(counter: *mut Counter, run: &Counter) {
    // SAFETY: the caller passes a live, aligned counter.
    unsafe {
        let packets = &raw mut (*counter).packets;
        let bytes = &raw mut (*counter).bytes;
        core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) packets, in(reg) run.packets);
        core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) bytes, in(reg) run.bytes);
    }
}

/// Starts a run with `packets` packets of `len` bytes (volatile, so the
/// compiler keeps it ahead of settling the run it replaces).
#[inline(always)]
pub fn start_run(run: &mut Counter, packets: u64, len: u64) {
    // SAFETY: plain stores to a live counter.
    unsafe {
        core::ptr::write_volatile(&raw mut run.packets, packets);
        core::ptr::write_volatile(&raw mut run.bytes, len);
    }
}

/// Adds `packets` packets of `len` bytes to a counter only this CPU writes.
#[inline(always)]
pub fn bump(counter: &mut Counter, packets: u64, len: u64) {
    counter.add(&Counter {
        packets,
        bytes: len,
    });
}
