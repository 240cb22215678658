//! The xdpstat XDP program: classifies every received frame and counts its
//! packets and bytes per source address, then passes it on untouched.
//!
//! This crate is the one place that decides the counting rules (the parser
//! is `parse`):
//!
//! 1. Ethernet header (14 bytes), then up to two VLAN tags (TPID 0x8100 or
//!    0x88A8, 4 bytes each).
//! 2. Ethertype 0x0800 with version 4, IHL >= 5 and the whole header (IHL x 4
//!    bytes, options included) in the frame: class `ipv4`, counted under the
//!    IPv4 source address.
//! 3. Ethertype 0x86DD with at least 40 bytes of IPv6 header and version 6:
//!    class `ipv6`, counted under the IPv6 source address.
//! 4. Ethertype 0x0800 or 0x86DD failing those checks, or a frame that ends
//!    inside the Ethernet header or a VLAN tag: class `malformed`.
//! 5. Everything else, including a third VLAN tag: class `non_ip`.
//! 6. Bytes are the whole frame's length, all fragments of a multi-buffer
//!    frame included.
//!
//! In a replay, a frame a capture cut short (its snap length) is judged
//! against its length on the wire: rules 2 and 3 ask the whole header of
//! the wire, and only the bytes through the source address of the capture,
//! so a header cut after the source counts as the IP packet it was live.
//! 7. Counting never changes traffic: a frame is dropped only by a rule
//!    (`--rules`) in force, and only an IPv4 or IPv6 one; everything else
//!    gets `XDP_PASS` (`TCX_NEXT` at tc).
//!
//! Rules (see `xdpstat_common::rules`): after counting, an IP packet's
//! source is looked up in the rule set in force (an LPM trie per family,
//! skipped when the family has no rules); the longest match names a chain
//! of rules, and the first whose protocol, ports and flags match the
//! packet decides whether it passes, is dropped, or is limited by its
//! source's bucket.
//! Every verdict but `passed` is counted per packet in the CPU state, per
//! rule in `RULE_HITS`, and per source in the row beside its table entry.
//!
//! Four programs share this code. `xdpstat` measures a frame as
//! `data_end - data`: the kernel only attaches a program without multi-buffer
//! support where every frame it sees is linear, so that is the whole frame.
//! `xdpstat_frags` is for interfaces that refuse it (a jumbo MTU) and asks
//! `bpf_xdp_get_buff_len` (Linux 5.18), a helper call that costs about 5 ns.
//! `xdpstat_replay` is never attached: `xdpstat replay` runs captured
//! frames through it and hands it each frame's length on the wire as XDP
//! metadata, since a capture may hold only part of a frame. `xdpstat_tcx`
//! counts at tc ingress instead (`--hook tcx`), beside another XDP program.
//!
//! Where the counts go (`table`, and `CpuState`): a packet from the same
//! source as the CPU's previous one only bumps the current run's counter in
//! the CPU's state slot; a packet from another source begins a new run,
//! which finds or claims its source's entry in its family's *table* and
//! keeps the entry's index, and then settles the finished run into the
//! entry it kept. A table is an open-addressing hash table in a
//! memory-mapped array: finding a source costs one probe (one cache line)
//! in the common case, where a BPF hash map costs a bucket and an element,
//! and user space reads a million sources by walking memory. Entries are
//! shared by all CPUs and updated with atomic adds. A run that found no
//! entry within reach counts in the CPU's `unattributed_*` instead (and in
//! the prefix `sketch`), so nothing is lost silently, and a source is in a
//! read exactly when an entry holds it. Headers are read from the frame's
//! linear part, which always holds them for frames the kernel builds
//! (drivers and BPF_PROG_TEST_RUN put at least the first page there).
//!
//! Traffic kinds (`parse`, `kinds`): every IP packet is also counted
//! under its protocol (IPv6's found through up to six extension headers),
//! as a fragment or a TCP SYN, and under its TCP destination port or its
//! UDP destination and source ports, in this CPU's own memory.
//!
//! A fifth program, `xdpstat_compact`, is never attached and counts
//! nothing: user space runs it to have a table's sources copied out for a
//! read (`compact`).
//!
//! The modules: `maps` (everything shared with user space), `parse`,
//! `kinds`, `table`, `rules`, `sketch`, `compact`, `atomics`, `packet`; this
//! file holds the entry points and the per-packet path the four counting
//! ones share, [`count`].
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod atomics;
mod capture;
mod compact;
mod kinds;
mod maps;
mod packet;
mod parse;
mod rules;
mod sketch;
mod table;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_ns, bpf_xdp_get_buff_len},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use xdpstat_common::{
    REPLAY_METADATA, V4Entry, V6Entry,
    kinds::source as source_protocols,
    rules::{source_protocol, transport_word},
};

use crate::{
    atomics::bump,
    maps::CPU_STATE,
    packet::{Clock, Packet, unlinked},
    parse::{Class, Transport, VLAN_HLEN, classify, segment_headers},
    table::{Entry, track},
};

#[xdp]
pub fn xdpstat(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let len = end - start;
    // The same length is the frame's bytes and its wire length, which the
    // parser checks against every header; unlinked, those checks do not
    // split the rules' paths for the verifier (217,007 instructions
    // processed to load, 167,265 unlinked).
    xdp_verdict(count(
        start,
        end,
        len,
        1,
        unlinked(len as u64),
        Clock::Kernel,
    ))
}

#[xdp(frags)]
pub fn xdpstat_frags(ctx: XdpContext) -> u32 {
    // SAFETY: `ctx.ctx` is the live `xdp_md` the kernel handed us.
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    let (start, end) = (ctx.data(), ctx.data_end());
    xdp_verdict(count(start, end, end - start, 1, len, Clock::Kernel))
}

#[xdp(frags)]
pub fn xdpstat_replay(ctx: XdpContext) -> u32 {
    let (meta, start, end) = (ctx.metadata(), ctx.data(), ctx.data_end());
    let (len, clock) = if meta + REPLAY_METADATA <= start {
        // SAFETY: the check above keeps the reads inside the metadata,
        // which `xdpstat replay` fills with the frame's length on the wire
        // and its capture time.
        unsafe {
            (
                core::ptr::read_unaligned(meta as *const u64),
                Clock::Given(core::ptr::read_unaligned((meta + 8) as *const u64)),
            )
        }
    } else {
        // No metadata: the kernel's clock, read now. Still a given time,
        // so that the verifier walks the rules once for this program, not
        // once per kind of clock.
        // SAFETY: `ctx.ctx` is the live `xdp_md` the kernel handed us; the
        // clock helper takes no arguments.
        unsafe {
            (
                bpf_xdp_get_buff_len(ctx.ctx),
                Clock::Given(bpf_ktime_get_ns()),
            )
        }
    };
    // A frame the capture cut short is longer on the wire than here.
    let wire_len = (len as usize).max(end - start);
    xdp_verdict(count(start, end, wire_len, 1, len, clock))
}

/// Never attached: user space runs it to read a table (see `compact`). A
/// classifier, because BPF_PROG_TEST_RUN repeats an XDP program only after
/// patching the kernel's XDP dispatcher, which interrupts every CPU.
#[classifier]
pub fn xdpstat_compact(_ctx: TcContext) -> i32 {
    compact::run();
    0
}

#[inline(always)]
fn xdp_verdict(drop: bool) -> u32 {
    if drop {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// `--hook tcx`: the same rules at tc ingress, through a tcx link (Linux
/// 6.6), for interfaces whose XDP hook another program holds. What differs
/// from XDP: tc sees only what XDP passed, after GRO, and after the stack
/// took the outer VLAN tag off into the socket buffer. So a merged buffer
/// counts its `gso_segs` packets and the bytes they had on the wire (the
/// merged length plus the headers every segment but the first carried), and
/// a tag the stack took off counts its 4 bytes on every segment.
#[classifier]
pub fn xdpstat_tcx(ctx: TcContext) -> i32 {
    // SAFETY: the live `__sk_buff` the kernel handed us; plain field reads.
    let (len, segments, vlan_present) = unsafe {
        let skb = &*ctx.skb.skb;
        (u64::from(skb.len), skb.gso_segs, skb.vlan_present != 0)
    };
    // Headers are read from the linear part; a buffer whose headers are
    // not all there yet (rare at ingress) has them pulled in first.
    if ((ctx.data_end() - ctx.data()) as u64) < HEADERS_PULLED.min(len) {
        let _ = ctx.pull_data(HEADERS_PULLED.min(len) as u32);
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let segments = u64::from(segments.max(1));
    let mut bytes = len;
    if segments > 1 {
        bytes += (segments - 1) * segment_headers(start, end);
    }
    if vlan_present {
        bytes += segments * VLAN_HLEN as u64;
    }
    if count(start, end, end - start, segments, bytes, Clock::Kernel) {
        TC_ACT_SHOT
    } else {
        TCX_NEXT
    }
}

/// tcx: let the next program (or the stack) decide.
const TCX_NEXT: i32 = -1;
/// tc: drop the buffer.
const TC_ACT_SHOT: i32 = 2;
/// Bytes of headers a tcx program makes sure are in the linear part.
const HEADERS_PULLED: u64 = 128;

/// Counts the frame in `[start, end)` (`wire_len` bytes on the wire) as
/// `packets` packets of `len` bytes in all (one packet but for a
/// GRO-merged buffer at tcx), then judges it by the rules in force; true
/// when a rule drops it.
#[inline(always)]
fn count(start: usize, end: usize, wire_len: usize, packets: u64, len: u64, clock: Clock) -> bool {
    let Some(state) = CPU_STATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot of a live per-CPU array; XDP does not nest
    // on a CPU, so nothing else touches it while this program runs.
    let state = unsafe { &mut *state };
    let packet = Packet {
        packets,
        len,
        clock,
    };
    // With no capture asked for, one branch (on a constant).
    let capturing = capture::capturing();
    if capturing {
        capture::remember(state, start, end, wire_len, packet);
    }
    let drop = match classify(start, end, wire_len) {
        Class::Ipv4(source, transport) => {
            carrying(state, &transport, packet);
            count_ip::<V4Entry>(state, source, packet)
        }
        Class::Ipv6(source, transport) => {
            carrying(state, &transport, packet);
            count_ip::<V6Entry>(state, source, packet)
        }
        Class::NonIp => {
            bump(&mut state.non_ip, packets, len);
            if capturing {
                capture::not_judged(state);
            }
            false
        }
        Class::Malformed => {
            bump(&mut state.malformed, packets, len);
            if capturing {
                capture::not_judged(state);
            }
            false
        }
    };
    if capturing {
        capture::capture(state);
    }
    drop
}

/// An IP packet from `source`: counted in its family's table under its
/// protocol (through the CPU's run), then judged by the family's rules;
/// true when a rule drops it.
#[inline(always)]
fn count_ip<E: Entry>(
    state: &mut xdpstat_common::CpuState,
    source: E::Address,
    packet: Packet,
) -> bool {
    let family = E::family();
    // SAFETY: a field of this CPU's live slot, read back (see `carrying`).
    let protocol = source_protocol(unsafe { core::ptr::read_volatile(&state.transport) });
    let run = E::run(state);
    let entry = track::<E>(&family, run, source, protocol, packet.packets, packet.len);
    rules::judge(&family, &source, entry, state, packet)
}

/// An IP packet's transport: counted by kind, and left in the CPU's
/// state as the one word the table (its source's protocol) and the rules
/// read. Read back from there, it is one unknown value to the verifier,
/// not every shape of packet the parser tells apart (which would take it
/// past its limit).
#[inline(always)]
fn carrying(state: &mut xdpstat_common::CpuState, transport: &Transport, packet: Packet) {
    kinds::count(state, transport, packet.packets, packet.len);
    let source = source_protocols::of_slot(transport.slot);
    let word = transport_word(transport.protocol, transport.ports, transport.syn, source);
    // SAFETY: a field of this CPU's live slot.
    unsafe { core::ptr::write_volatile(&mut state.transport, word) };
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
