//! Builds Ethernet frames of the shapes the counting rules talk about: IPv4
//! and IPv6 with or without VLAN tags, ARP, and anything else by ethertype.
//! The demo sends them; the tests send them and cut them up.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Ethertypes the builders use.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86DD;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88A8;
}

/// The destination MAC of built frames: locally administered unicast, so a
/// receiving stack treats them as someone else's and drops them after XDP.
pub const DEST_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];
/// The source MAC of built frames.
pub const SOURCE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x02];

/// A VLAN tag: its TPID (0x8100 or 0x88A8) and VLAN id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    pub tpid: u16,
    pub id: u16,
}

impl VlanTag {
    /// An 802.1Q tag.
    pub const fn dot1q(id: u16) -> Self {
        Self {
            tpid: ethertype::VLAN,
            id,
        }
    }

    /// An 802.1ad (QinQ service) tag.
    pub const fn dot1ad(id: u16) -> Self {
        Self {
            tpid: ethertype::QINQ,
            id,
        }
    }
}

/// An Ethernet frame: header, `tags` in order, `ethertype`, then `payload`.
pub fn ethernet(tags: &[VlanTag], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + 4 * tags.len() + payload.len());
    frame.extend_from_slice(&DEST_MAC);
    frame.extend_from_slice(&SOURCE_MAC);
    for tag in tags {
        frame.extend_from_slice(&tag.tpid.to_be_bytes());
        frame.extend_from_slice(&(tag.id & 0x0fff).to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 packet (UDP protocol number, zero-filled payload) of `payload_len`
/// bytes after a header of 20 bytes plus `options` (a multiple of 4).
pub fn ipv4_packet(
    source: Ipv4Addr,
    destination: Ipv4Addr,
    options: &[u8],
    payload_len: usize,
) -> Vec<u8> {
    assert!(
        options.len().is_multiple_of(4) && options.len() <= 40,
        "IPv4 options come in 4-byte words, 40 bytes at most"
    );
    let header_len = 20 + options.len();
    let total_len = u16::try_from(header_len + payload_len).expect("IPv4 packet fits 64 KiB");
    let mut packet = Vec::with_capacity(usize::from(total_len));
    packet.push(0x40 | (header_len / 4) as u8);
    packet.push(0);
    packet.extend_from_slice(&total_len.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());
    packet.extend_from_slice(options);
    let checksum = internet_checksum(&packet);
    packet[10..12].copy_from_slice(&checksum.to_be_bytes());
    packet.resize(usize::from(total_len), 0);
    packet
}

/// An IPv6 packet whose header chain is `extensions` (each a next-header
/// number and its body, a multiple of 8 bytes) and then UDP with a
/// zero-filled payload of `payload_len` bytes.
pub fn ipv6_packet(
    source: Ipv6Addr,
    destination: Ipv6Addr,
    extensions: &[(u8, Vec<u8>)],
    payload_len: usize,
) -> Vec<u8> {
    let extension_len: usize = extensions.iter().map(|(_, body)| body.len()).sum();
    let payload_total =
        u16::try_from(extension_len + payload_len).expect("IPv6 payload fits 64 KiB");
    let first_next = extensions.first().map_or(17, |(next, _)| *next);
    let mut packet = Vec::with_capacity(40 + usize::from(payload_total));
    packet.extend_from_slice(&[0x60, 0, 0, 0]);
    packet.extend_from_slice(&payload_total.to_be_bytes());
    packet.push(first_next);
    packet.push(64);
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());
    for (index, (_, body)) in extensions.iter().enumerate() {
        assert!(
            body.len() >= 8 && body.len().is_multiple_of(8),
            "extension headers are 8-byte multiples"
        );
        let next = extensions.get(index + 1).map_or(17, |(next, _)| *next);
        packet.push(next);
        packet.push((body.len() / 8 - 1) as u8);
        packet.extend_from_slice(&body[2..]);
    }
    packet.resize(40 + usize::from(payload_total), 0);
    packet
}

/// Makes the IP packet in `packet` (an [`ipv4_packet`] or an
/// [`ipv6_packet`] without extension headers) carry `protocol`, and lays
/// the ports and, for TCP, a 20-byte header with `tcp_flags` at the start
/// of its payload (which must hold them).
pub fn carrying(packet: &mut [u8], protocol: u8, ports: (u16, u16), tcp_flags: u8) {
    let (protocol_at, payload_at) = if packet[0] >> 4 == 4 {
        (9, usize::from(packet[0] & 0x0f) * 4)
    } else {
        (6, 40)
    };
    packet[protocol_at] = protocol;
    let l4 = &mut packet[payload_at..];
    if protocol == 6 || protocol == 17 {
        l4[0..2].copy_from_slice(&ports.0.to_be_bytes());
        l4[2..4].copy_from_slice(&ports.1.to_be_bytes());
    }
    if protocol == 6 {
        l4[12] = 0x50;
        l4[13] = tcp_flags;
    }
}

/// IPv6 extension headers of 8 bytes for [`ipv6_packet`], one per
/// next-header number, a fragment header (44) with its offset (in 8-byte
/// units) set.
pub fn extension_chain(extensions: &[(u8, u16)]) -> Vec<(u8, Vec<u8>)> {
    extensions
        .iter()
        .map(|&(next, offset)| {
            let mut body = vec![0u8; 8];
            if next == 44 {
                body[2..4].copy_from_slice(&(offset << 3).to_be_bytes());
            }
            (next, body)
        })
        .collect()
}

/// Lays a TCP header's first 20 bytes (or a UDP header's ports) over the
/// packet from `at`: `ports` and `tcp_flags`, as far as the packet goes
/// (a short payload cuts the header short).
pub fn lay_l4(packet: &mut [u8], at: usize, ports: (u16, u16), tcp_flags: u8) {
    let mut header = [0u8; 20];
    header[0..2].copy_from_slice(&ports.0.to_be_bytes());
    header[2..4].copy_from_slice(&ports.1.to_be_bytes());
    header[12] = 0x50;
    header[13] = tcp_flags;
    for (offset, byte) in header.iter().enumerate() {
        if let Some(slot) = packet.get_mut(at + offset) {
            *slot = *byte;
        }
    }
}

/// TCP flags for [`carrying`].
pub mod tcp {
    pub const SYN: u8 = 0x02;
    pub const ACK: u8 = 0x10;
}

/// An ARP request from `sender` asking for `target`.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    arp.extend_from_slice(&SOURCE_MAC);
    arp.extend_from_slice(&sender.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target.octets());
    arp
}

/// The ones'-complement sum of RFC 1071 over `bytes`.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksums_to_zero() {
        let packet = ipv4_packet(
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 19, 0, 1),
            &[1, 1, 1, 0],
            8,
        );
        assert_eq!(internet_checksum(&packet[..24]), 0);
        assert_eq!(packet[0], 0x46);
        assert_eq!(packet.len(), 32);
    }

    #[test]
    fn tagged_frame_layout() {
        let frame = ethernet(
            &[VlanTag::dot1ad(200), VlanTag::dot1q(300)],
            ethertype::IPV6,
            &[0xaa],
        );
        assert_eq!(&frame[12..14], &[0x88, 0xa8]);
        assert_eq!(&frame[14..16], &200u16.to_be_bytes());
        assert_eq!(&frame[16..18], &[0x81, 0x00]);
        assert_eq!(&frame[20..22], &[0x86, 0xdd]);
        assert_eq!(frame.len(), 23);
    }

    #[test]
    fn ipv6_extension_chain_links_next_headers() {
        let packet = ipv6_packet(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            &[(0, vec![0; 8]), (60, vec![0; 16])],
            4,
        );
        assert_eq!(packet[6], 0, "hop-by-hop first");
        assert_eq!(packet[40], 60, "then destination options");
        assert_eq!(packet[41], 0);
        assert_eq!(packet[48], 17, "then UDP");
        assert_eq!(packet[49], 1);
        assert_eq!(packet.len(), 40 + 24 + 4);
    }
}
