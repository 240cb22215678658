//! `--capture`: after a packet is judged, a copy of its first bytes, with
//! its time, wire length, verdict and the rule behind it, into the ring
//! user space writes to a pcapng file, when its verdict is one the loader
//! asked for and its CPU's budget lasts. With no capture asked for, one
//! branch a packet.

use aya_ebpf::helpers::{bpf_ktime_get_ns, generated::bpf_probe_read_kernel};
use xdpstat_common::{
    CpuState,
    capture::{Header, MAX_SNAPLEN, NO_RULE, NOT_JUDGED, judged, verdict},
    rules::conform_cost,
};

use crate::{
    atomics::bump,
    maps::{
        CAPTURE, CAPTURE_INTERVAL_NS, CAPTURE_SCRATCH, CAPTURE_SNAPLEN, CAPTURE_TOLERANCE_NS,
        CAPTURE_VERDICTS,
    },
    packet::{Clock, Packet},
};

/// Whether the loader asked for a capture (a constant to the verifier,
/// which then leaves out what follows when it did not).
#[inline(always)]
pub fn capturing() -> bool {
    // SAFETY: a global the loader sets before the program is loaded.
    unsafe { core::ptr::read_volatile(&CAPTURE_VERDICTS) != 0 }
}

/// Leaves the frame in `[start, end)` in the CPU state for [`capture`],
/// passed by no rule until the rules say otherwise.
#[inline(always)]
pub fn remember(state: &mut CpuState, start: usize, end: usize, wire_len: usize, packet: Packet) {
    let time = match packet.clock {
        Clock::Kernel => 0,
        Clock::Given(now) => now,
    };
    // SAFETY: fields of this CPU's live slot.
    unsafe {
        core::ptr::write_volatile(&raw mut state.judged, judged(verdict::PASSED, NO_RULE));
        core::ptr::write_volatile(&raw mut state.frame_start, start as u64);
        core::ptr::write_volatile(&raw mut state.frame_linear, (end - start) as u64);
        core::ptr::write_volatile(&raw mut state.frame_wire, wire_len as u64);
        core::ptr::write_volatile(&raw mut state.frame_packets, packet.packets);
        core::ptr::write_volatile(&raw mut state.frame_bytes, packet.len);
        core::ptr::write_volatile(&raw mut state.frame_time, time);
    }
}

/// A frame with no source (non-IP, malformed): never copied.
#[inline(always)]
pub fn not_judged(state: &mut CpuState) {
    // SAFETY: a field of this CPU's live slot.
    unsafe { core::ptr::write_volatile(&raw mut state.judged, judged(NOT_JUDGED, NO_RULE)) };
}

/// Copies the frame [`remember`] left, judged as the CPU state's `judged`
/// word says, if its verdict is one to capture and the CPU's budget
/// lasts. Everything it needs it reads from the CPU state.
#[inline(always)]
pub fn capture(state: &mut CpuState) {
    // SAFETY: a global the loader sets before the program is loaded.
    let verdicts = unsafe { core::ptr::read_volatile(&CAPTURE_VERDICTS) };
    // SAFETY: fields of this CPU's live slot, read back whole.
    let (judged, start, linear, wire, packets, bytes, time) = unsafe {
        (
            core::ptr::read_volatile(&state.judged),
            core::ptr::read_volatile(&state.frame_start),
            core::ptr::read_volatile(&state.frame_linear),
            core::ptr::read_volatile(&state.frame_wire),
            core::ptr::read_volatile(&state.frame_packets),
            core::ptr::read_volatile(&state.frame_bytes),
            core::ptr::read_volatile(&state.frame_time),
        )
    };
    let verdict = (judged & 0x1f) as u32;
    if verdicts & (1 << verdict) == 0 {
        return;
    }
    let now = if time == 0 {
        // SAFETY: a helper with no arguments.
        unsafe { bpf_ktime_get_ns() }
    } else {
        time
    };
    // SAFETY: globals the loader sets.
    let (interval, tolerance) = unsafe {
        (
            core::ptr::read_volatile(&CAPTURE_INTERVAL_NS),
            core::ptr::read_volatile(&CAPTURE_TOLERANCE_NS),
        )
    };
    if interval != 0 {
        match conform_cost(state.capture_tat, now, interval, tolerance) {
            Some(next) => state.capture_tat = next,
            None => {
                bump(&mut state.capture_skipped, packets, bytes);
                return;
            }
        }
    }
    let Some(scratch) = CAPTURE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a global the loader sets.
    let snaplen = u64::from(unsafe { core::ptr::read_volatile(&CAPTURE_SNAPLEN) });
    let mut len = linear;
    if len > snaplen {
        len = snaplen;
    }
    if len > MAX_SNAPLEN as u64 {
        len = MAX_SNAPLEN as u64;
    }
    // SAFETY: this CPU's scratch record; the frame's first `len` bytes
    // are linear (at most `linear`), and the helper checks the read.
    let copied = unsafe {
        (*scratch).header = Header {
            time_ns: now,
            wire_len: wire as u32,
            cap_len: len as u32,
            rule: (judged >> 8) as u32,
            verdict,
        };
        bpf_probe_read_kernel(
            (&raw mut (*scratch).bytes).cast(),
            len as u32,
            start as *const _,
        )
    };
    let total = size_of::<Header>() + len as usize;
    // SAFETY: the record just written, `total` bytes of the scratch value.
    let record = unsafe { core::slice::from_raw_parts(scratch as *const u8, total) };
    if copied != 0 || CAPTURE.output::<[u8]>(record, 0).is_err() {
        bump(&mut state.capture_skipped, packets, bytes);
    }
}
