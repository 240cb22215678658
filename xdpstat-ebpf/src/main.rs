//! The xdpstat XDP program: classifies every received frame and counts its
//! packets and bytes per source address, then passes it on untouched.
//!
//! This file is the one place that decides the counting rules:
//!
//! 1. Ethernet header (14 bytes), then up to two VLAN tags (TPID 0x8100 or
//!    0x88A8, 4 bytes each).
//! 2. Ethertype 0x0800 with at least 20 bytes of IPv4 header, version 4 and
//!    IHL >= 5: class `ipv4`, counted under the IPv4 source address.
//! 3. Ethertype 0x86DD with at least 40 bytes of IPv6 header and version 6:
//!    class `ipv6`, counted under the IPv6 source address.
//! 4. Ethertype 0x0800 or 0x86DD failing those checks, or a frame that ends
//!    inside the Ethernet header or a VLAN tag: class `malformed`.
//! 5. Everything else, including a third VLAN tag: class `non_ip`.
//! 6. Bytes are the whole frame's length, all fragments of a multi-buffer
//!    frame included.
//! 7. Every frame gets `XDP_PASS`: counting never changes traffic.
//!
//! Two programs share this code. `xdpstat` measures a frame as
//! `data_end - data`: the kernel only attaches a program without multi-buffer
//! support where every frame it sees is linear, so that is the whole frame.
//! `xdpstat_frags` is for interfaces that refuse it (a jumbo MTU) and asks
//! `bpf_xdp_get_buff_len` (Linux 5.18), a helper call that costs about 5 ns.
//!
//! Where the counts go (see `CpuState`): a packet from the same source as
//! the CPU's previous one only bumps the current run's counter in the CPU's
//! state slot; a packet from another source first settles the run into the
//! source's *slot*. An index hash maps each address to its slot; slots hold
//! the address and one counter per CPU in memory-mapped arrays, which user
//! space reads with plain loads. New sources take a slot user space retired
//! (the free queue) or the next never used. A run no slot can take (all in
//! use) still counts in `settled_*`, so user space reports it as
//! unattributed: nothing is lost silently. Headers are read
//! from the frame's linear part, which always holds them for frames the
//! kernel builds (drivers and BPF_PROG_TEST_RUN put at least the first page
//! there).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST, xdp_action},
    helpers::{bpf_get_smp_processor_id, bpf_xdp_get_buff_len},
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray, Queue},
    programs::XdpContext,
};
use xdpstat_common::{
    Counter, CpuState, DEFAULT_MAX_SOURCES, FAMILY_V4, FAMILY_V6, Ipv4Key, Ipv6Key, SlotSource,
};

/// Number of slots; the loader sets it (and sizes the slot maps to match).
#[unsafe(no_mangle)]
static SLOTS: u32 = DEFAULT_MAX_SOURCES;

#[map(name = "INDEX_V4")]
static INDEX_V4: HashMap<Ipv4Key, u32> = HashMap::with_max_entries(DEFAULT_MAX_SOURCES, 0);

#[map(name = "INDEX_V6")]
static INDEX_V6: HashMap<Ipv6Key, u32> = HashMap::with_max_entries(DEFAULT_MAX_SOURCES, 0);

#[map(name = "SLOT_SOURCES")]
static SLOT_SOURCES: Array<SlotSource> =
    Array::with_max_entries(DEFAULT_MAX_SOURCES, BPF_F_MMAPABLE);

/// `SLOTS` counters per possible CPU; the loader sets the real size.
#[map(name = "SLOT_COUNTERS")]
static SLOT_COUNTERS: Array<Counter> = Array::with_max_entries(DEFAULT_MAX_SOURCES, BPF_F_MMAPABLE);

#[map(name = "FREE_SLOTS")]
static FREE_SLOTS: Queue<u32> = Queue::with_max_entries(DEFAULT_MAX_SOURCES, 0);

#[map(name = "NEXT_SLOT")]
static NEXT_SLOT: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "CPU_STATE")]
static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

/// What the parser decided about one frame.
enum Verdict {
    Ipv4(Ipv4Key),
    Ipv6(Ipv6Key),
    NonIp,
    Malformed,
}

#[xdp]
pub fn xdpstat(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    count(start, end, (end - start) as u64)
}

#[xdp(frags)]
pub fn xdpstat_frags(ctx: XdpContext) -> u32 {
    // SAFETY: `ctx.ctx` is the live `xdp_md` the kernel handed us.
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    count(ctx.data(), ctx.data_end(), len)
}

/// Counts the frame in `[start, end)`, `len` bytes long in all.
#[inline(always)]
fn count(start: usize, end: usize, len: u64) -> u32 {
    let Some(state) = CPU_STATE.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: this CPU's slot of a live array; XDP does not nest on a CPU, so
    // nothing else touches it while this program runs.
    let state = unsafe { &mut *state };
    match classify(start, end) {
        Verdict::Ipv4(source) => {
            if state.run_v4.packets != 0 && state.run_v4_source == source {
                bump(&mut state.run_v4, len);
            } else {
                if state.run_v4.packets != 0 {
                    let run = state.run_v4;
                    add(&mut state.settled_v4, &run);
                    let mut slot_source = SlotSource {
                        family: FAMILY_V4,
                        ..SlotSource::default()
                    };
                    slot_source.address[..4].copy_from_slice(&state.run_v4_source);
                    settle(&INDEX_V4, &state.run_v4_source, &slot_source, &run);
                }
                state.run_v4_source = source;
                state.run_v4 = Counter {
                    packets: 1,
                    bytes: len,
                };
            }
        }
        Verdict::Ipv6(source) => {
            if state.run_v6.packets != 0 && same_v6(&state.run_v6_source, &source) {
                bump(&mut state.run_v6, len);
            } else {
                if state.run_v6.packets != 0 {
                    let run = state.run_v6;
                    add(&mut state.settled_v6, &run);
                    let slot_source = SlotSource {
                        address: state.run_v6_source,
                        family: FAMILY_V6,
                        _pad: 0,
                    };
                    settle(&INDEX_V6, &state.run_v6_source, &slot_source, &run);
                }
                state.run_v6_source = source;
                state.run_v6 = Counter {
                    packets: 1,
                    bytes: len,
                };
            }
        }
        Verdict::NonIp => bump(&mut state.non_ip, len),
        Verdict::Malformed => bump(&mut state.malformed, len),
    }
    xdp_action::XDP_PASS
}

/// Compares two IPv6 addresses as two 8-byte words (a byte-wise compare
/// would be 16 loads and branches).
#[inline(always)]
fn same_v6(a: &Ipv6Key, b: &Ipv6Key) -> bool {
    let words = |key: &Ipv6Key| -> (u64, u64) {
        // SAFETY: both reads are within the 16-byte key.
        unsafe {
            (
                core::ptr::read_unaligned(key.as_ptr() as *const u64),
                core::ptr::read_unaligned(key.as_ptr().add(8) as *const u64),
            )
        }
    };
    words(a) == words(b)
}

/// Applies the counting rules to the frame in `[start, end)`.
#[inline(always)]
fn classify(start: usize, end: usize) -> Verdict {
    let Some(mut ethertype) = be16_at(start, 12, end) else {
        return Verdict::Malformed;
    };
    let mut offset = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        match be16_at(start, offset + 2, end) {
            Some(inner) => ethertype = inner,
            None => return Verdict::Malformed,
        }
        offset += VLAN_HLEN;
    }
    match ethertype {
        ETH_P_IP => match in_frame(start, offset, IPV4_HLEN, end) {
            // SAFETY: `in_frame` checked the 20 header bytes are in the frame.
            Some(ip) => unsafe {
                let version_ihl = *(ip as *const u8);
                if version_ihl >> 4 != 4 || version_ihl & 0x0f < 5 {
                    return Verdict::Malformed;
                }
                Verdict::Ipv4(core::ptr::read_unaligned((ip + 12) as *const Ipv4Key))
            },
            None => Verdict::Malformed,
        },
        ETH_P_IPV6 => match in_frame(start, offset, IPV6_HLEN, end) {
            // SAFETY: `in_frame` checked the 40 header bytes are in the frame.
            Some(ip) => unsafe {
                if *(ip as *const u8) >> 4 != 6 {
                    return Verdict::Malformed;
                }
                Verdict::Ipv6(core::ptr::read_unaligned((ip + 8) as *const Ipv6Key))
            },
            None => Verdict::Malformed,
        },
        _ => Verdict::NonIp,
    }
}

/// Address of the `len` bytes at `offset` when all of them lie before `end`.
#[inline(always)]
fn in_frame(start: usize, offset: usize, len: usize, end: usize) -> Option<usize> {
    let at = start + offset;
    if at + len > end { None } else { Some(at) }
}

/// The big-endian u16 at `offset`, when the frame holds it.
#[inline(always)]
fn be16_at(start: usize, offset: usize, end: usize) -> Option<u16> {
    let at = in_frame(start, offset, 2, end)?;
    // SAFETY: `in_frame` checked both bytes are in the frame.
    Some(u16::from_be(unsafe {
        core::ptr::read_unaligned(at as *const u16)
    }))
}

/// Settles a finished run into its source's slot, giving the source a slot
/// if it has none. No slot to give (all in use) or a lost race for the
/// index entry that finds no winner either leaves the run in `settled`
/// only, which user space reports as unattributed.
#[inline(always)]
fn settle<K>(index: &HashMap<K, u32>, source: &K, slot_source: &SlotSource, run: &Counter) {
    if let Some(slot) = index.get_ptr(source) {
        // SAFETY: a live entry's value.
        count_in_slot(unsafe { *slot }, run);
        return;
    }
    let Some(slot) = new_slot() else {
        return;
    };
    if let Some(record) = SLOT_SOURCES.get_ptr_mut(slot) {
        // SAFETY: a slot nobody else holds: fresh from the bump counter, or
        // popped from the free queue, which hands each slot out once.
        unsafe { *record = *slot_source };
    }
    if index.insert(source, slot, BPF_NOEXIST.into()).is_ok() {
        count_in_slot(slot, run);
        return;
    }
    // Another CPU gave this source a slot first: use that one, return ours.
    let _ = FREE_SLOTS.push(slot, 0);
    if let Some(slot) = index.get_ptr(source) {
        // SAFETY: as above.
        count_in_slot(unsafe { *slot }, run);
    }
}

/// A slot for a new source: a retired one, or the next never used.
#[inline(always)]
fn new_slot() -> Option<u32> {
    if let Ok(Some(slot)) = FREE_SLOTS.pop() {
        return Some(slot);
    }
    // SAFETY: `SLOTS` is a constant the loader wrote before loading.
    let slots = u64::from(unsafe { core::ptr::read_volatile(&SLOTS) });
    let next = NEXT_SLOT.get_ptr_mut(0)?;
    // SAFETY: a live array value shared by all CPUs. A plain read first
    // keeps a flood from hammering the shared line with atomic adds once
    // every slot is handed out.
    if unsafe { core::ptr::read_volatile(next) } >= slots {
        return None;
    }
    let mut slot: u64 = 1;
    // SAFETY: an atomic fetch-and-add on the live value (the BPF target has
    // no AtomicU64::fetch_add, the instruction exists since Linux 5.12).
    unsafe {
        core::arch::asm!(
            "{slot} = atomic_fetch_add((u64 *)({next} + 0), {slot})",
            slot = inout(reg) slot,
            next = in(reg) next,
        );
    }
    (slot < slots).then_some(slot as u32)
}

/// Adds a run to this CPU's counter of `slot`.
#[inline(always)]
fn count_in_slot(slot: u32, run: &Counter) {
    // SAFETY: `SLOTS` is a constant the loader wrote before loading.
    let slots = unsafe { core::ptr::read_volatile(&SLOTS) };
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if let Some(counter) = SLOT_COUNTERS.get_ptr_mut(cpu * slots + slot) {
        // SAFETY: only this CPU writes its counters; XDP does not nest on a CPU.
        unsafe { add(&mut *counter, run) };
    }
}

#[inline(always)]
fn bump(counter: &mut Counter, len: u64) {
    counter.packets = counter.packets.wrapping_add(1);
    counter.bytes = counter.bytes.wrapping_add(len);
}

#[inline(always)]
fn add(counter: &mut Counter, other: &Counter) {
    counter.packets = counter.packets.wrapping_add(other.packets);
    counter.bytes = counter.bytes.wrapping_add(other.bytes);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
