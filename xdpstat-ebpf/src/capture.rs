//! `--capture`: after a packet is judged, a copy of its first bytes, with
//! its time, wire length, verdict and the rule behind it, into the ring
//! user space writes to a pcapng file, when its verdict is one the loader
//! asked for and its CPU's budget lasts. With no capture asked for, one
//! branch a packet.

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use xdpstat_common::{
    CpuState,
    capture::{Header, MAX_SNAPLEN},
    rules::conform_cost,
};

use crate::{
    atomics::bump,
    maps::{
        CAPTURE, CAPTURE_INTERVAL_NS, CAPTURE_SCRATCH, CAPTURE_SNAPLEN, CAPTURE_TOLERANCE_NS,
        CAPTURE_VERDICTS,
    },
    packet::Packet,
};

/// Copies the packet in `[start, end)` (`wire_len` bytes on the wire),
/// judged as the CPU state's `judged` word says, if it is to be captured.
#[inline(always)]
pub fn capture(state: &mut CpuState, start: usize, end: usize, wire_len: usize, packet: Packet) {
    // SAFETY: a global the loader sets before the program is loaded.
    let verdicts = unsafe { core::ptr::read_volatile(&CAPTURE_VERDICTS) };
    if verdicts == 0 {
        return;
    }
    // SAFETY: a field of this CPU's live slot, read back whole (see
    // `CpuState::judged`).
    let judged = unsafe { core::ptr::read_volatile(&state.judged) };
    let verdict = (judged & 0x1f) as u32;
    if verdicts & (1 << verdict) == 0 {
        return;
    }
    let now = packet.clock.now();
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
                bump(&mut state.capture_skipped, packet.packets, packet.len);
                return;
            }
        }
    }
    let Some(scratch) = CAPTURE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a global the loader sets.
    let snaplen = unsafe { core::ptr::read_volatile(&CAPTURE_SNAPLEN) } as usize;
    let mut len = end - start;
    if len > snaplen {
        len = snaplen;
    }
    if len > MAX_SNAPLEN {
        len = MAX_SNAPLEN;
    }
    // SAFETY: this CPU's scratch record; the packet's first `len` bytes
    // are in the frame (`len` is at most `end - start`), and the helper
    // checks the read.
    let copied = unsafe {
        (*scratch).header = Header {
            time_ns: now,
            wire_len: wire_len as u32,
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
    let total = size_of::<Header>() + len;
    // SAFETY: the record just written, `total` bytes of the scratch value.
    let record = unsafe { core::slice::from_raw_parts(scratch as *const u8, total) };
    if copied != 0 || CAPTURE.output::<[u8]>(record, 0).is_err() {
        bump(&mut state.capture_skipped, packet.packets, packet.len);
    }
}
