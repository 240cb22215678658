//! Reading a frame's headers: the counting rules' classes (see the crate's
//! documentation), and the header bytes a merged buffer's segments carry.
//! Every read is bounds-checked against the frame's end, as the verifier
//! demands.

use xdpstat_common::{
    Ipv4Key, Ipv6Key,
    kinds::{MAX_EXTENSION_HEADERS, slot, slot_of},
    rules::UNKNOWN_PROTOCOL,
};

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

/// IPv6 extension headers the walk steps over (the others, ESP and AH
/// among them, end it: what follows is protocol `other`).
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DESTINATION_OPTIONS: u8 = 60;
/// TCP's flags byte: SYN, and ACK.
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// Bytes of the TCP header through its flags, and of the UDP header.
const TCP_THROUGH_FLAGS: usize = 14;
const UDP_HLEN: usize = 8;
/// Bytes of a fixed TCP header (a shorter one on the wire is cut short).
const TCP_HLEN: usize = 20;

/// What the parser decided about one frame: its class, and the source and
/// transport of an IP one.
pub enum Class {
    Ipv4(Ipv4Key, Transport),
    Ipv6(Ipv6Key, Transport),
    NonIp,
    Malformed,
}

/// What an IP packet carries: its protocol slot (`kinds::slot`), whether
/// it is a fragment or a TCP SYN, and its ports when its TCP or UDP header
/// is there whole (not in a later fragment, not cut short).
#[derive(Clone, Copy)]
pub struct Transport {
    pub slot: usize,
    /// The protocol number, or `UNKNOWN_PROTOCOL`.
    pub protocol: u16,
    pub fragment: bool,
    pub syn: bool,
    /// Source and destination port, as numbers.
    pub ports: Option<(u16, u16)>,
}

impl Transport {
    const OTHER: Transport = Transport {
        slot: slot::OTHER,
        protocol: UNKNOWN_PROTOCOL,
        fragment: false,
        syn: false,
        ports: None,
    };
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
                let source = core::ptr::read_unaligned((ip + 12) as *const Ipv4Key);
                // Flags and fragment offset: more fragments, then 13 bits.
                let fragmenting = u16::from_be(core::ptr::read_unaligned((ip + 6) as *const u16));
                let protocol = *((ip + 9) as *const u8);
                let later = fragmenting & 0x1fff != 0;
                let transport = transport(
                    start,
                    end,
                    wire_len,
                    offset + header_len,
                    protocol,
                    later || fragmenting & 0x2000 != 0,
                    later,
                );
                Class::Ipv4(source, transport)
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
                let source = core::ptr::read_unaligned((ip + 8) as *const Ipv6Key);
                let next = *((ip + 6) as *const u8);
                let transport = ipv6_transport(start, end, wire_len, offset + IPV6_HLEN, next);
                Class::Ipv6(source, transport)
            },
            None => Class::Malformed,
        },
        _ => Class::NonIp,
    }
}

/// Walks an IPv6 packet's extension headers (at most
/// [`MAX_EXTENSION_HEADERS`]) from the first, `next`, at `offset`, to
/// what the packet carries. A header that is not in the frame, a chain
/// longer than the bound, or ESP/AH makes the packet protocol `other`; a
/// fragment header marks it a fragment, and a later fragment's protocol is
/// its next header, with no ports.
#[inline(always)]
fn ipv6_transport(start: usize, end: usize, wire_len: usize, offset: usize, next: u8) -> Transport {
    let (mut next, mut at) = (next, offset);
    let (mut fragment, mut later) = (false, false);
    let mut walked = false;
    // One step per extension header, and one more to read what follows
    // the last.
    for _ in 0..=MAX_EXTENSION_HEADERS {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DESTINATION_OPTIONS => {
                let Some(header) = in_frame(start, at, 2, end) else {
                    return Transport::OTHER;
                };
                // SAFETY: `in_frame` checked both bytes are in the frame.
                let (following, units) =
                    unsafe { (*(header as *const u8), *((header + 1) as *const u8)) };
                next = following;
                at += (usize::from(units) + 1) * 8;
            }
            IPV6_FRAGMENT => {
                let Some(header) = in_frame(start, at, 4, end) else {
                    return Transport::OTHER;
                };
                // SAFETY: `in_frame` checked the four bytes are in the frame.
                let (following, fragment_offset) = unsafe {
                    (
                        *(header as *const u8),
                        u16::from_be(core::ptr::read_unaligned((header + 2) as *const u16)),
                    )
                };
                next = following;
                at += 8;
                fragment = true;
                if fragment_offset >> 3 != 0 {
                    later = true;
                    walked = true;
                    break;
                }
            }
            _ => {
                walked = true;
                break;
            }
        }
    }
    if !walked {
        return Transport {
            fragment,
            ..Transport::OTHER
        };
    }
    transport(start, end, wire_len, at, next, fragment, later)
}

/// The transport of a packet whose `protocol` header begins at `offset`:
/// ports (and TCP's flags) when the header is whole on the wire and its
/// first bytes are in the frame, and the packet is not a `later` fragment.
#[inline(always)]
fn transport(
    start: usize,
    end: usize,
    wire_len: usize,
    offset: usize,
    protocol: u8,
    fragment: bool,
    later: bool,
) -> Transport {
    let slot = slot_of(protocol);
    let mut transport = Transport {
        slot,
        protocol: u16::from(protocol),
        fragment,
        syn: false,
        ports: None,
    };
    if later {
        return transport;
    }
    let (whole, read) = match slot {
        slot::TCP => (TCP_HLEN, TCP_THROUGH_FLAGS),
        slot::UDP => (UDP_HLEN, 4),
        _ => return transport,
    };
    if offset + whole > wire_len {
        return transport;
    }
    let Some(header) = in_frame(start, offset, read, end) else {
        return transport;
    };
    // SAFETY: `in_frame` checked the ports (and for TCP the flags) are in
    // the frame.
    unsafe {
        let source = u16::from_be(core::ptr::read_unaligned(header as *const u16));
        let destination = u16::from_be(core::ptr::read_unaligned((header + 2) as *const u16));
        transport.ports = Some((source, destination));
        if slot == slot::TCP {
            let flags = *((header + 13) as *const u8);
            transport.syn = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        }
    }
    transport
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
