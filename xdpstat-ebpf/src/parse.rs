//! Reading a frame's headers: the counting rules' classes (see the crate's
//! documentation), and the header bytes a merged buffer's segments carry.
//! Every read is bounds-checked against the frame's end, as the verifier
//! demands.

use xdpstat_common::{Ipv4Key, Ipv6Key};

const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
/// An IPv4 header up to the end of its source address.
const IPV4_THROUGH_SOURCE: usize = 16;
/// An IPv6 header up to the end of its source address.
const IPV6_THROUGH_SOURCE: usize = 24;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// What the parser decided about one frame: its class, and the source of
/// an IP one.
pub enum Class {
    Ipv4(Ipv4Key),
    Ipv6(Ipv6Key),
    NonIp,
    Malformed,
}

/// Applies the counting rules to the frame in `[start, end)`, whose
/// length on the wire is `wire_len`: `end - start` for a live frame, more
/// for a replayed one a capture cut short (its snap length). An IP header
/// is judged whole against the wire, and its source read from what is
/// there: a capture cut inside the header but after the source address is
/// the IP packet live counting saw, not a malformed one.
#[inline(always)]
pub fn classify(start: usize, end: usize, wire_len: usize) -> Class {
    let Some((ethertype, offset)) = past_vlan_tags(start, end) else {
        return Class::Malformed;
    };
    match ethertype {
        ETH_P_IP => match in_frame(start, offset, IPV4_THROUGH_SOURCE, end) {
            // SAFETY: `in_frame` checked the header's first 16 bytes (up to
            // and with the source address) are in the frame.
            Some(ip) => unsafe {
                let version_ihl = *(ip as *const u8);
                let header_len = usize::from(version_ihl & 0x0f) * 4;
                if version_ihl >> 4 != 4 || header_len < IPV4_HLEN || offset + header_len > wire_len
                {
                    return Class::Malformed;
                }
                Class::Ipv4(core::ptr::read_unaligned((ip + 12) as *const Ipv4Key))
            },
            None => Class::Malformed,
        },
        ETH_P_IPV6 => match in_frame(start, offset, IPV6_THROUGH_SOURCE, end) {
            // SAFETY: `in_frame` checked the header's first 24 bytes (up to
            // and with the source address) are in the frame.
            Some(ip) => unsafe {
                if *(ip as *const u8) >> 4 != 6 || offset + IPV6_HLEN > wire_len {
                    return Class::Malformed;
                }
                Class::Ipv6(core::ptr::read_unaligned((ip + 8) as *const Ipv6Key))
            },
            None => Class::Malformed,
        },
        _ => Class::NonIp,
    }
}

/// The bytes of headers each segment of a merged TCP or UDP buffer
/// carries: Ethernet and tags, IP, and TCP (its data offset) or UDP.
#[inline(always)]
pub fn segment_headers(start: usize, end: usize) -> u64 {
    let Some((ethertype, offset)) = past_vlan_tags(start, end) else {
        return 0;
    };
    let (protocol, transport) = match ethertype {
        ETH_P_IP => {
            let Some(ip) = in_frame(start, offset, IPV4_HLEN, end) else {
                return 0;
            };
            // SAFETY: `in_frame` checked the 20 header bytes are in the frame.
            let (version_ihl, protocol) = unsafe { (*(ip as *const u8), *((ip + 9) as *const u8)) };
            (protocol, offset + usize::from(version_ihl & 0x0f) * 4)
        }
        ETH_P_IPV6 => {
            let Some(ip) = in_frame(start, offset, IPV6_HLEN, end) else {
                return 0;
            };
            // SAFETY: as above, 40 bytes.
            (unsafe { *((ip + 6) as *const u8) }, offset + IPV6_HLEN)
        }
        _ => return 0,
    };
    let transport_len = match protocol {
        IPPROTO_TCP => match in_frame(start, transport, 20, end) {
            // SAFETY: `in_frame` checked the 20 TCP header bytes.
            Some(tcp) => usize::from(unsafe { *((tcp + 12) as *const u8) } >> 4) * 4,
            None => return 0,
        },
        IPPROTO_UDP => 8,
        _ => 0,
    };
    (transport + transport_len) as u64
}

/// The ethertype after the Ethernet header and up to two VLAN tags, and
/// where what it announces begins; `None` when the frame ends inside the
/// Ethernet header or a tag.
#[inline(always)]
fn past_vlan_tags(start: usize, end: usize) -> Option<(u16, usize)> {
    let mut ethertype = be16_at(start, 12, end)?;
    let mut offset = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = be16_at(start, offset + 2, end)?;
        offset += VLAN_HLEN;
    }
    Some((ethertype, offset))
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
