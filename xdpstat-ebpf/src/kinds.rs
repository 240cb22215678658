//! Counting traffic by kind: each IP packet under its protocol (and as a
//! fragment or a TCP SYN), and under its TCP destination port, or its UDP
//! destination and source ports. All in this CPU's memory (its slot of
//! the CPU state, its section of the port counters), with plain adds:
//! exact, and no cache line shared with another CPU.

use aya_ebpf::helpers::bpf_get_smp_processor_id;
use xdpstat_common::{
    Counter, CpuState,
    kinds::{
        PORTS,
        side::{self, SIDES},
        slot,
    },
};

use crate::{atomics::bump, maps::PORTS as PORT_COUNTS, parse::Transport};

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
        port(side::TCP_DST, destination, packets, len);
    } else {
        port(side::UDP_DST, destination, packets, len);
        port(side::UDP_SRC, source, packets, len);
    }
}

/// Adds to one port's counter in this CPU's section.
#[inline(always)]
fn port(side: u32, port: u16, packets: u64, len: u64) {
    // SAFETY: a helper with no arguments (the verifier inlines it).
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let index = cpu * (SIDES * PORTS) + side * PORTS + u32::from(port);
    if let Some(counter) = PORT_COUNTS.get_ptr_mut(index) {
        // SAFETY: a live array value in this CPU's section, which only
        // this CPU writes; XDP does not nest on a CPU. User space only
        // reads it, a word at a time.
        bump(unsafe { &mut *counter.cast::<Counter>() }, packets, len);
    }
}
