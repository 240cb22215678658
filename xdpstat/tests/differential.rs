//! Differential testing of the counting rules: proptest generates Ethernet
//! frames of every shape the rules talk about (0 to 3 VLAN tags with both
//! TPIDs, IPv4 with and without options and with wrong versions or IHL,
//! IPv6 with extension headers and wrong versions, ARP and other
//! ethertypes, random bytes, truncation anywhere), runs them through the
//! real program with BPF_PROG_TEST_RUN, and compares every class total and
//! per-source count with what etherparse, an independent parser, says.

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
use xdpstat::{counts::snapshot::Snapshot, kernel::datapath::Datapath};
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

/// What follows the Ethernet header and tags.
#[derive(Clone, Debug)]
enum Payload {
    Ipv4 {
        version: u8,
        ihl: u8,
        source: u8,
        payload: usize,
    },
    Ipv6 {
        version: u8,
        source: u8,
        extensions: Vec<u8>,
        payload: usize,
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

fn payload() -> impl Strategy<Value = Payload> {
    // Versions and IHL mostly right, sometimes wrong; sources from small
    // pools, so sources repeat within and across cases.
    let version4 = prop_oneof![8 => Just(4u8), 1 => 0u8..16];
    let version6 = prop_oneof![8 => Just(6u8), 1 => 0u8..16];
    prop_oneof![
        4 => (version4, prop_oneof![6 => Just(5u8), 3 => 5u8..16, 1 => 0u8..5], any::<u8>(), 0usize..64)
            .prop_map(|(version, ihl, source, payload)| Payload::Ipv4 { version, ihl, source, payload }),
        3 => (version6, any::<u8>(), proptest::collection::vec(prop_oneof![Just(0u8), Just(43), Just(60)], 0..3), 0usize..64)
            .prop_map(|(version, source, extensions, payload)| Payload::Ipv6 { version, source, extensions, payload }),
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
        } => {
            let options = vec![1u8; usize::from(ihl.saturating_sub(5)) * 4];
            let mut packet = frames::ipv4_packet(
                v4(*source),
                Ipv4Addr::new(198, 19, 0, 1),
                &options,
                *payload,
            );
            packet[0] = (version << 4) | (ihl & 0x0f);
            (ethertype::IPV4, packet)
        }
        Payload::Ipv6 {
            version,
            source,
            extensions,
            payload,
        } => {
            let chain: Vec<(u8, Vec<u8>)> = extensions
                .iter()
                .map(|&next| (next, vec![0u8; 8]))
                .collect();
            let mut packet = frames::ipv6_packet(
                v6(*source),
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
                &chain,
                *payload,
            );
            packet[0] = (version << 4) | (packet[0] & 0x0f);
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
        for shape in &shapes {
            let frame = build(shape);
            let len = frame.len() as u64;
            let one = Counter { packets: 1, bytes: len };
            match oracle(&frame) {
                Class::Source(address) => {
                    classes[usize::from(address.is_ipv6())].add(&one);
                    sources.entry(address).or_default().add(&one);
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
            let after = after.sources.get(address).copied().unwrap_or_default();
            let before = before.sources.get(address).copied().unwrap_or_default();
            prop_assert_eq!(delta(&after, &before), *expected, "{}", address);
        }
        for (address, counter, earlier) in after.sources.since(&before.sources) {
            if counter != earlier {
                prop_assert!(sources.contains_key(&address), "{} counted, not sent", address);
            }
        }
        prop_assert_eq!(after.unattributed(), before.unattributed(), "a big table holds them all");
    }
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
