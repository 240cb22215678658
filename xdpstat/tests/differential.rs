//! Differential testing of the counting rules: proptest generates Ethernet
//! frames of every shape the rules talk about (0 to 3 VLAN tags with both
//! TPIDs, IPv4 with and without options and with wrong versions or IHL,
//! IPv6 with extension headers and wrong versions, ARP and other
//! ethertypes, random bytes, truncation anywhere), runs them through the
//! real program with BPF_PROG_TEST_RUN, and compares every class total and
//! per-source count with what etherparse, an independent parser, says.
//!
//! Past the IP header the frames carry TCP, UDP, ICMP, ICMPv6 and other
//! protocols, IPv4 first and later fragments, IPv6 chains of extension
//! headers (fragment headers among them, longer than the program's bound)
//! and L4 headers cut short; every protocol, fragment and SYN total,
//! every port's count and every source's packets by protocol are held
//! against the traffic kind the test's own walk of the headers
//! (`kind_of`) finds.

mod common;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::OnceLock,
};

use etherparse::{
    EtherType, Ethernet2HeaderSlice, Ipv4HeaderSlice, Ipv6HeaderSlice, SingleVlanHeaderSlice,
};
use proptest::prelude::*;
use xdpstat::{
    counts::{kinds::PortKey, snapshot::Snapshot},
    kernel::datapath::Datapath,
};
use xdpstat_common::Counter;
use xdpstat_lab::frames::{self, VlanTag, ethertype};

/// How the oracle classifies a frame, in the rules' terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Source(IpAddr),
    NonIp,
    Malformed,
}

const VLAN_TPIDS: [u16; 2] = [0x8100, 0x88A8];

/// The rules, applied with etherparse's header parsers: Ethernet, up to two
/// VLAN tags, then an IPv4 or IPv6 header that etherparse accepts.
fn oracle(frame: &[u8]) -> Class {
    let Ok(ethernet) = Ethernet2HeaderSlice::from_slice(frame) else {
        return Class::Malformed;
    };
    let mut ether_type = ethernet.ether_type();
    let mut rest = &frame[ethernet.slice().len()..];
    for _ in 0..2 {
        if !VLAN_TPIDS.contains(&ether_type.0) {
            break;
        }
        match SingleVlanHeaderSlice::from_slice(rest) {
            Ok(vlan) => {
                ether_type = vlan.ether_type();
                rest = &rest[vlan.slice().len()..];
            }
            Err(_) => return Class::Malformed,
        }
    }
    match ether_type {
        EtherType::IPV4 => match Ipv4HeaderSlice::from_slice(rest) {
            Ok(header) => Class::Source(Ipv4Addr::from(header.source()).into()),
            Err(_) => Class::Malformed,
        },
        EtherType::IPV6 => match Ipv6HeaderSlice::from_slice(rest) {
            Ok(header) => Class::Source(Ipv6Addr::from(header.source()).into()),
            Err(_) => Class::Malformed,
        },
        _ => Class::NonIp,
    }
}

/// An IP packet's traffic kind, as the test's own walk of its headers
/// finds it: protocol slot (tcp, udp, icmp, icmpv6, other), fragment, SYN,
/// and the TCP or UDP ports when the header is whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Kind {
    slot: usize,
    fragment: bool,
    syn: bool,
    ports: Option<(u16, u16)>,
}

/// The IPv6 extension headers walked, at most (the program's stated bound).
const EXTENSIONS_WALKED: usize = 6;

/// The kind of the IP packet in `ip` (the IP header onwards), written apart
/// from the program: IPv4's protocol, flags and offset from etherparse's
/// header slice; IPv6's chain walked here.
fn kind_of(ip: &[u8]) -> Kind {
    let slot_of = |protocol: u8| match protocol {
        6 => 0,
        17 => 1,
        1 => 2,
        58 => 3,
        _ => 4,
    };
    let other = Kind {
        slot: 4,
        fragment: false,
        syn: false,
        ports: None,
    };
    let transport = |l4: &[u8], protocol: u8, fragment: bool, later: bool| {
        let slot = slot_of(protocol);
        let mut kind = Kind {
            slot,
            fragment,
            ..other
        };
        let whole = match slot {
            0 => 20,
            1 => 8,
            _ => return kind,
        };
        if later || l4.len() < whole {
            return kind;
        }
        kind.ports = Some((
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ));
        kind.syn = slot == 0 && l4[13] & 0x12 == 0x02;
        kind
    };
    if ip[0] >> 4 == 4 {
        let header = Ipv4HeaderSlice::from_slice(ip).expect("the class oracle accepted it");
        let offset = u16::from(header.fragments_offset());
        let later = offset != 0;
        let fragment = later || header.more_fragments();
        return transport(
            &ip[header.slice().len()..],
            header.protocol().0,
            fragment,
            later,
        );
    }
    let mut next = ip[6];
    let mut rest = &ip[40..];
    let mut fragment = false;
    // Each extension header, then what follows the last.
    for _ in 0..=EXTENSIONS_WALKED {
        match next {
            0 | 43 | 60 => {
                if rest.len() < 2 {
                    return other;
                }
                let len = (usize::from(rest[1]) + 1) * 8;
                next = rest[0];
                rest = &rest[len.min(rest.len())..];
            }
            44 => {
                if rest.len() < 4 {
                    return other;
                }
                next = rest[0];
                fragment = true;
                let offset = u16::from_be_bytes([rest[2], rest[3]]) >> 3;
                rest = &rest[8.min(rest.len())..];
                if offset != 0 {
                    return transport(rest, next, true, true);
                }
            }
            _ => return transport(rest, next, fragment, false),
        }
    }
    Kind { fragment, ..other }
}

/// What follows the IP header: a protocol, and bytes laid over the start
/// of the payload (the ports, and for TCP the flags).
#[derive(Clone, Debug)]
struct L4 {
    protocol: u8,
    source_port: u16,
    destination_port: u16,
    flags: u8,
}

/// An IPv4 fragment: more fragments, and the offset in 8-byte units.
type Fragmenting = (bool, u16);

/// What follows the Ethernet header and tags.
#[derive(Clone, Debug)]
enum Payload {
    Ipv4 {
        version: u8,
        ihl: u8,
        source: u8,
        payload: usize,
        l4: L4,
        fragmenting: Fragmenting,
    },
    Ipv6 {
        version: u8,
        source: u8,
        /// Next-header numbers, and a fragment header's offset.
        extensions: Vec<(u8, u16)>,
        payload: usize,
        l4: L4,
    },
    Arp,
    Other(u16),
    Random(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Shape {
    tags: Vec<(bool, u16)>,
    payload: Payload,
    /// Keep this fraction of the frame (1.0: all of it).
    keep: f64,
}

fn l4() -> impl Strategy<Value = L4> {
    // Ports from small pools, so ports repeat; flags that are and are not
    // a SYN.
    let protocol = prop_oneof![4 => Just(6u8), 4 => Just(17u8), 1 => Just(1u8), 1 => Just(58u8), 1 => any::<u8>()];
    let port = prop_oneof![
        Just(53u16),
        Just(443),
        Just(123),
        Just(0),
        Just(65535),
        1000u16..1004
    ];
    let flags = prop_oneof![Just(0x02u8), Just(0x12), Just(0x10), any::<u8>()];
    (protocol, port.clone(), port, flags).prop_map(
        |(protocol, source_port, destination_port, flags)| L4 {
            protocol,
            source_port,
            destination_port,
            flags,
        },
    )
}

fn payload() -> impl Strategy<Value = Payload> {
    // Versions and IHL mostly right, sometimes wrong; sources from small
    // pools, so sources repeat within and across cases.
    let version4 = prop_oneof![8 => Just(4u8), 1 => 0u8..16];
    let version6 = prop_oneof![8 => Just(6u8), 1 => 0u8..16];
    let fragmenting = prop_oneof![6 => Just((false, 0u16)), 1 => Just((true, 0)), 1 => (any::<bool>(), 1u16..8192)];
    let extension = prop_oneof![
        3 => (prop_oneof![Just(0u8), Just(43), Just(60)], Just(0u16)),
        1 => (Just(44u8), prop_oneof![Just(0u16), 1u16..8192]),
    ];
    prop_oneof![
        4 => (version4, prop_oneof![6 => Just(5u8), 3 => 5u8..16, 1 => 0u8..5], any::<u8>(), 0usize..64, l4(), fragmenting)
            .prop_map(|(version, ihl, source, payload, l4, fragmenting)| Payload::Ipv4 { version, ihl, source, payload, l4, fragmenting }),
        3 => (version6, any::<u8>(), proptest::collection::vec(extension, 0..9), 0usize..64, l4())
            .prop_map(|(version, source, extensions, payload, l4)| Payload::Ipv6 { version, source, extensions, payload, l4 }),
        1 => Just(Payload::Arp),
        1 => any::<u16>().prop_map(Payload::Other),
        1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Payload::Random),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        proptest::collection::vec((any::<bool>(), 0u16..4096), 0..4),
        payload(),
        prop_oneof![3 => Just(1.0f64), 1 => 0.0f64..1.0],
    )
        .prop_map(|(tags, payload, keep)| Shape {
            tags,
            payload,
            keep,
        })
}

fn v4(source: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 7, source % 16)
}

fn v6(source: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, u16::from(source % 16))
}

/// The frame bytes of a shape (never shorter than an Ethernet header,
/// the shortest frame BPF_PROG_TEST_RUN runs).
fn build(shape: &Shape) -> Vec<u8> {
    let tags: Vec<VlanTag> = shape
        .tags
        .iter()
        .map(|&(qinq, id)| {
            if qinq {
                VlanTag::dot1ad(id)
            } else {
                VlanTag::dot1q(id)
            }
        })
        .collect();
    let (ethertype, body) = match &shape.payload {
        Payload::Ipv4 {
            version,
            ihl,
            source,
            payload,
            l4,
            fragmenting: (more, offset),
        } => {
            let options = vec![1u8; usize::from(ihl.saturating_sub(5)) * 4];
            let mut packet = frames::ipv4_packet(
                v4(*source),
                Ipv4Addr::new(198, 19, 0, 1),
                &options,
                *payload,
            );
            packet[0] = (version << 4) | (ihl & 0x0f);
            packet[9] = l4.protocol;
            let fragment_word = (u16::from(*more) << 13) | offset;
            packet[6..8].copy_from_slice(&fragment_word.to_be_bytes());
            lay_l4(&mut packet, 20 + options.len(), l4);
            (ethertype::IPV4, packet)
        }
        Payload::Ipv6 {
            version,
            source,
            extensions,
            payload,
            l4,
        } => {
            let chain = frames::extension_chain(extensions);
            let mut packet = frames::ipv6_packet(
                v6(*source),
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
                &chain,
                *payload,
            );
            packet[0] = (version << 4) | (packet[0] & 0x0f);
            // The last header's next header: the protocol.
            let last_next = if chain.is_empty() {
                6
            } else {
                40 + 8 * (chain.len() - 1)
            };
            packet[last_next] = l4.protocol;
            lay_l4(&mut packet, 40 + 8 * chain.len(), l4);
            (ethertype::IPV6, packet)
        }
        Payload::Arp => (ethertype::ARP, frames::arp_request(v4(1), v4(2))),
        Payload::Other(ethertype) => (*ethertype, vec![0u8; 46]),
        Payload::Random(bytes) => (0x0800, bytes.clone()),
    };
    let mut frame = frames::ethernet(&tags, ethertype, &body);
    let keep = ((frame.len() as f64 * shape.keep) as usize).max(14);
    frame.truncate(keep);
    frame
}

/// Lays `l4`'s ports and flags over the packet's bytes from `at`, as far
/// as the packet goes (a short payload cuts the header short).
fn lay_l4(packet: &mut [u8], at: usize, l4: &L4) {
    frames::lay_l4(packet, at, (l4.source_port, l4.destination_port), l4.flags);
}

/// One program load for every case; the cases compare counter deltas.
fn datapath() -> &'static Datapath {
    static DATAPATH: OnceLock<Datapath> = OnceLock::new();
    DATAPATH.get_or_init(|| Datapath::load(1 << 16).expect("the program loads"))
}

fn delta(after: &Counter, before: &Counter) -> Counter {
    Counter {
        packets: after.packets - before.packets,
        bytes: after.bytes - before.bytes,
    }
}

fn class_totals(snapshot: &Snapshot) -> [Counter; 4] {
    let totals = snapshot.totals();
    [totals.ipv4, totals.ipv6, totals.non_ip, totals.malformed]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_program_counts_what_etherparse_parses(shapes in proptest::collection::vec(shape(), 1..40)) {
        if !common::privileged("the_program_counts_what_etherparse_parses") {
            return Ok(());
        }
        let datapath = datapath();
        let before = datapath.snapshot("test").unwrap();
        let mut classes = [Counter::default(); 4];
        let mut sources: HashMap<IpAddr, Counter> = HashMap::new();
        // Per source: tcp, udp, icmp (either family), other.
        let mut protocols: HashMap<IpAddr, [u64; 4]> = HashMap::new();
        let mut kinds = [Counter::default(); 7];
        let mut ports: HashMap<PortKey, Counter> = HashMap::new();
        for shape in &shapes {
            let frame = build(shape);
            let len = frame.len() as u64;
            let one = Counter { packets: 1, bytes: len };
            match oracle(&frame) {
                Class::Source(address) => {
                    classes[usize::from(address.is_ipv6())].add(&one);
                    sources.entry(address).or_default().add(&one);
                    let kind = kind_of(ip_of(&frame));
                    kinds[kind.slot].add(&one);
                    let protocol = [0, 1, 2, 2, 3][kind.slot];
                    protocols.entry(address).or_default()[protocol] += 1;
                    if kind.fragment {
                        kinds[5].add(&one);
                    }
                    if kind.syn {
                        kinds[6].add(&one);
                    }
                    if let Some((source, destination)) = kind.ports {
                        let sides: &[(u32, u16)] = if kind.slot == 0 {
                            &[(0, destination)]
                        } else {
                            &[(1, destination), (2, source)]
                        };
                        for &(side, port) in sides {
                            ports.entry(PortKey { side, port }).or_default().add(&one);
                        }
                    }
                }
                Class::NonIp => classes[2].add(&one),
                Class::Malformed => classes[3].add(&one),
            }
            prop_assert_eq!(datapath.test_run(&frame).unwrap(), 2, "XDP_PASS");
        }
        let after = datapath.snapshot("test").unwrap();
        let (now, then) = (class_totals(&after), class_totals(&before));
        for (class, name) in ["ipv4", "ipv6", "non_ip", "malformed"].into_iter().enumerate() {
            prop_assert_eq!(delta(&now[class], &then[class]), classes[class], "{}: {:?}", name, shapes);
        }
        for (address, expected) in &sources {
            let by_protocol = |snapshot: &Snapshot| {
                snapshot.sources.tally(address).unwrap_or_default().protocols.0
            };
            let (now, then) = (by_protocol(&after), by_protocol(&before));
            let after = after.sources.get(address).unwrap_or_default();
            let before = before.sources.get(address).unwrap_or_default();
            prop_assert_eq!(delta(&after, &before), *expected, "{}", address);
            let sent: [u64; 4] = std::array::from_fn(|i| now[i] - then[i]);
            prop_assert_eq!(sent, protocols[address], "{} by protocol: {:?}", address, shapes);
        }
        for (address, counter, earlier) in after.sources.since(&before.sources) {
            if counter != earlier {
                prop_assert!(sources.contains_key(&address), "{} counted, not sent", address);
            }
        }
        prop_assert_eq!(after.unattributed(), before.unattributed(), "a big table holds them all");
        for (slot, expected) in kinds.iter().enumerate() {
            prop_assert_eq!(
                delta(&after.kinds.slots[slot], &before.kinds.slots[slot]),
                *expected,
                "kind slot {}: {:?}", slot, shapes
            );
        }
        for (key, expected) in &ports {
            prop_assert_eq!(
                delta(&after.kinds.ports.get(key), &before.kinds.ports.get(key)),
                *expected,
                "{:?}: {:?}", key, shapes
            );
        }
        for (key, counter) in after.kinds.ports.iter() {
            if *counter != before.kinds.ports.get(key) {
                prop_assert!(ports.contains_key(key), "{:?} counted, not sent: {:?}", key, shapes);
            }
        }
    }
}

/// The IP header onwards of a frame the class oracle took for IP.
fn ip_of(frame: &[u8]) -> &[u8] {
    let mut at = 12;
    for _ in 0..2 {
        let ethertype = u16::from_be_bytes([frame[at], frame[at + 1]]);
        if !VLAN_TPIDS.contains(&ethertype) {
            break;
        }
        at += 4;
    }
    &frame[at + 2..]
}

#[test]
fn the_oracle_agrees_with_the_rules_on_hand_made_frames() {
    let ipv4 = |tags: &[VlanTag]| {
        frames::ethernet(
            tags,
            ethertype::IPV4,
            &frames::ipv4_packet(v4(1), v4(2), &[], 8),
        )
    };
    assert_eq!(oracle(&ipv4(&[])), Class::Source(v4(1).into()));
    assert_eq!(
        oracle(&ipv4(&[VlanTag::dot1ad(1), VlanTag::dot1q(2)])),
        Class::Source(v4(1).into())
    );
    let three = ipv4(&[VlanTag::dot1ad(1), VlanTag::dot1q(2), VlanTag::dot1q(3)]);
    assert_eq!(oracle(&three), Class::NonIp, "a third tag");
    assert_eq!(
        oracle(&ipv4(&[])[..20]),
        Class::Malformed,
        "cut inside IPv4"
    );
    assert_eq!(
        oracle(&ipv4(&[VlanTag::dot1q(1)])[..16]),
        Class::Malformed,
        "cut inside a tag"
    );
    let arp = frames::ethernet(&[], ethertype::ARP, &frames::arp_request(v4(1), v4(2)));
    assert_eq!(oracle(&arp), Class::NonIp);
}
