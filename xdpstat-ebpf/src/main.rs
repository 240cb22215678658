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
//!    frame included (`bpf_xdp_get_buff_len`, Linux 5.18).
//! 7. Every frame gets `XDP_PASS`: counting never changes traffic.
//!
//! When a source map is full, the packet is counted in the family's
//! `Unattributed*` slot instead, so nothing is lost silently. Headers are
//! read from the frame's linear part, which always holds them for frames the
//! kernel builds (drivers and BPF_PROG_TEST_RUN put at least the first page
//! there).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::bpf_xdp_get_buff_len,
    macros::{map, xdp},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::XdpContext,
};
use xdpstat_common::{CLASS_SLOTS, ClassSlot, Counter, DEFAULT_MAX_SOURCES, Ipv4Key, Ipv6Key};

#[map(name = "SOURCES_V4")]
static SOURCES_V4: PerCpuHashMap<Ipv4Key, Counter> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_SOURCES, 0);

#[map(name = "SOURCES_V6")]
static SOURCES_V6: PerCpuHashMap<Ipv6Key, Counter> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_SOURCES, 0);

#[map(name = "CLASS_COUNTERS")]
static CLASS_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(CLASS_SLOTS, 0);

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
    Other(ClassSlot),
}

#[xdp(frags)]
pub fn xdpstat(ctx: XdpContext) -> u32 {
    // SAFETY: `ctx.ctx` is the live `xdp_md` the kernel handed us.
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    match classify(ctx.data(), ctx.data_end()) {
        Verdict::Ipv4(key) => count_source(&SOURCES_V4, &key, ClassSlot::UnattributedV4, len),
        Verdict::Ipv6(key) => count_source(&SOURCES_V6, &key, ClassSlot::UnattributedV6, len),
        Verdict::Other(slot) => count_class(slot, len),
    }
    xdp_action::XDP_PASS
}

/// Applies the counting rules to the frame in `[start, end)`.
#[inline(always)]
fn classify(start: usize, end: usize) -> Verdict {
    let Some(mut ethertype) = be16_at(start, 12, end) else {
        return Verdict::Other(ClassSlot::Malformed);
    };
    let mut offset = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        match be16_at(start, offset + 2, end) {
            Some(inner) => ethertype = inner,
            None => return Verdict::Other(ClassSlot::Malformed),
        }
        offset += VLAN_HLEN;
    }
    match ethertype {
        ETH_P_IP => match in_frame(start, offset, IPV4_HLEN, end) {
            // SAFETY: `in_frame` checked the 20 header bytes are in the frame.
            Some(ip) => unsafe {
                let version_ihl = *(ip as *const u8);
                if version_ihl >> 4 != 4 || version_ihl & 0x0f < 5 {
                    return Verdict::Other(ClassSlot::Malformed);
                }
                Verdict::Ipv4(core::ptr::read_unaligned((ip + 12) as *const Ipv4Key))
            },
            None => Verdict::Other(ClassSlot::Malformed),
        },
        ETH_P_IPV6 => match in_frame(start, offset, IPV6_HLEN, end) {
            // SAFETY: `in_frame` checked the 40 header bytes are in the frame.
            Some(ip) => unsafe {
                if *(ip as *const u8) >> 4 != 6 {
                    return Verdict::Other(ClassSlot::Malformed);
                }
                Verdict::Ipv6(core::ptr::read_unaligned((ip + 8) as *const Ipv6Key))
            },
            None => Verdict::Other(ClassSlot::Malformed),
        },
        _ => Verdict::Other(ClassSlot::NonIp),
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

/// Counts one packet under `key`, inserting the source on its first packet.
/// A failed insert is either a lost race with another CPU inserting the same
/// source (look it up again) or a full map (count it as unattributed).
#[inline(always)]
fn count_source<K>(map: &PerCpuHashMap<K, Counter>, key: &K, unattributed: ClassSlot, len: u64) {
    if let Some(counter) = map.get_ptr_mut(key) {
        // SAFETY: per-CPU slot of a live entry; XDP does not nest on a CPU.
        unsafe { bump(counter, len) };
        return;
    }
    let first = Counter {
        packets: 1,
        bytes: len,
    };
    if map.insert(key, first, BPF_NOEXIST.into()).is_ok() {
        return;
    }
    match map.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(counter) => unsafe { bump(counter, len) },
        None => count_class(unattributed, len),
    }
}

#[inline(always)]
fn count_class(slot: ClassSlot, len: u64) {
    if let Some(counter) = CLASS_COUNTERS.get_ptr_mut(slot as u32) {
        // SAFETY: per-CPU array slot; XDP does not nest on a CPU.
        unsafe { bump(counter, len) };
    }
}

#[inline(always)]
unsafe fn bump(counter: *mut Counter, len: u64) {
    unsafe {
        (*counter).packets = (*counter).packets.wrapping_add(1);
        (*counter).bytes = (*counter).bytes.wrapping_add(len);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
