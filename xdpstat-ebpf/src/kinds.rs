//! Counting traffic by kind: each IP packet under its protocol (and as a
//! fragment or a TCP SYN), and under its TCP destination port, or its UDP
//! destination and source ports. All in this CPU's memory (its slot of
//! the CPU state, its section of the port counters), with plain adds:
//! exact, and no cache line shared with another CPU. Ports count in runs,
//! as sources do: packets with the ports of the CPU's previous one only
//! bump a counter in its state slot; the run settles into the port
//! counters when other ports come.

use aya_ebpf::helpers::bpf_get_smp_processor_id;
use xdpstat_common::{
    Counter, CpuState,
    kinds::{
        PORTS,
        side::{self, SIDES},
        slot,
    },
};

use crate::{
    atomics::{bump, start_run},
    maps::PORTS as PORT_COUNTS,
    parse::Transport,
};

/// Counts `packets` packets of `len` bytes that carry `transport`.
#[inline(always)]
pub fn count(state: &mut CpuState, transport: &Transport, packets: u64, len: u64) {
    if let Some(kind) = state.kinds.get_mut(transport.slot) {
        bump(kind, packets, len);
    }
    if transport.fragment {
        bump(&mut state.kinds[slot::FRAGMENTS], packets, len);
    }
    if transport.syn {
        bump(&mut state.kinds[slot::TCP_SYN], packets, len);
    }
    let Some((source, destination)) = transport.ports else {
        return;
    };
    if transport.slot == slot::TCP {
        let key = u32::from(destination);
        let run = (&mut state.run_tcp, &mut state.run_tcp_port);
        if let Some((finished, key)) = port_run(run, key, packets, len) {
            settle(side::TCP_DST, key as u16, &finished);
        }
    } else {
        let key = (u32::from(source) << 16) | u32::from(destination);
        let run = (&mut state.run_udp, &mut state.run_udp_ports);
        if let Some((finished, key)) = port_run(run, key, packets, len) {
            settle(side::UDP_DST, key as u16, &finished);
            settle(side::UDP_SRC, (key >> 16) as u16, &finished);
        }
    }
}

/// Counts a packet with ports `key` in a CPU's port run (its counter and
/// key): the run goes on when the key is the run's, else a new run
/// begins; returns the run that ended, with its key, to be settled.
#[inline(always)]
fn port_run(
    (run, run_key): (&mut Counter, &mut u32),
    key: u32,
    packets: u64,
    len: u64,
) -> Option<(Counter, u32)> {
    if run.packets != 0 && *run_key == key {
        bump(run, packets, len);
        return None;
    }
    let finished = (*run, *run_key);
    start_port_run(run, run_key, key, packets, len);
    (finished.0.packets != 0).then_some(finished)
}

/// Begins a port run: no run, then the key, then the count (volatile, in
/// that order), so a reader copying the CPU's slot never sees the old
/// run's count under the new key; the old run settles after this, so a
/// read racing it misses it once rather than counting it twice.
#[inline(always)]
fn start_port_run(run: &mut Counter, key: &mut u32, new: u32, packets: u64, len: u64) {
    start_run(run, 0, 0);
    // SAFETY: a plain store to this CPU's live slot.
    unsafe { core::ptr::write_volatile(key, new) };
    start_run(run, packets, len);
}

/// Adds a finished run to one port's counter in this CPU's section.
#[inline(always)]
fn settle(side: u32, port: u16, run: &Counter) {
    // SAFETY: a helper with no arguments (the verifier inlines it).
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let index = cpu * (SIDES * PORTS) + side * PORTS + u32::from(port);
    if let Some(counter) = PORT_COUNTS.get_ptr_mut(index) {
        // SAFETY: a live array value in this CPU's section, which only
        // this CPU writes; XDP does not nest on a CPU. User space only
        // reads it, a word at a time.
        unsafe { (*counter.cast::<Counter>()).add(run) };
    }
}
