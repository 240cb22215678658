//! The real XDP program under BPF_PROG_TEST_RUN: every counting rule, every
//! truncation point, exact counters, a full source map and multi-buffer
//! frames. Each test loads its own copy of the program, so they run in
//! parallel without sharing counters.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xdpstat::{
    counts::snapshot::Snapshot,
    counts::sources::{SourceProtocols, SourceTable, Tally},
    kernel::datapath::Datapath,
    kernel::tables::ReadMethod,
};
use xdpstat_common::{Counter, MAX_PROBES, kinds::source};
use xdpstat_lab::frames::{self, VlanTag, ethertype};

const XDP_PASS: u32 = 2;

fn load(test: &str, max_sources: u32) -> Option<Datapath> {
    if !common::privileged(test) {
        return None;
    }
    Some(Datapath::load(max_sources).expect("the embedded program loads"))
}

fn run(datapath: &Datapath, frame: &[u8]) {
    let action = datapath.test_run(frame).expect("BPF_PROG_TEST_RUN runs");
    assert_eq!(action, XDP_PASS, "every frame is passed on");
}

fn snapshot(datapath: &Datapath) -> Snapshot {
    datapath.snapshot("test").expect("maps read")
}

fn c(packets: u64, bytes: u64) -> Counter {
    Counter { packets, bytes }
}

fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, last)
}

fn v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)
}

/// The `n`th address of 198.19.0.0/16, for tests of many sources.
fn nth_source(n: u32) -> Ipv4Addr {
    let [_, _, hi, lo] = n.to_be_bytes();
    Ipv4Addr::new(198, 19, hi, lo)
}

/// A frame from [`nth_source`], the same size for every `n`.
fn nth_frame(n: u32) -> Vec<u8> {
    ipv4_frame(nth_source(n), &[], &[], 10)
}

fn ipv4_frame(source: Ipv4Addr, tags: &[VlanTag], options: &[u8], payload: usize) -> Vec<u8> {
    let packet = frames::ipv4_packet(source, Ipv4Addr::new(198, 19, 0, 1), options, payload);
    frames::ethernet(tags, ethertype::IPV4, &packet)
}

fn ipv6_frame(
    source: Ipv6Addr,
    tags: &[VlanTag],
    extensions: &[(u8, Vec<u8>)],
    payload: usize,
) -> Vec<u8> {
    let packet = frames::ipv6_packet(source, v6(0xffff), extensions, payload);
    frames::ethernet(tags, ethertype::IPV6, &packet)
}

/// Class totals in the report's order: ipv4, ipv6, non_ip, malformed.
fn classes(snapshot: &Snapshot) -> [Counter; 4] {
    let totals = snapshot.totals();
    [totals.ipv4, totals.ipv6, totals.non_ip, totals.malformed]
}

#[test]
fn ipv4_and_ipv6_sources_are_counted_exactly() {
    let Some(datapath) = load("ipv4_and_ipv6_sources_are_counted_exactly", 1024) else {
        return;
    };
    let a = ipv4_frame(v4(1), &[], &[], 18);
    let b = ipv4_frame(v4(2), &[], &[], 1000);
    let d = ipv6_frame(v6(1), &[], &[], 10);
    for _ in 0..5 {
        run(&datapath, &a);
    }
    for _ in 0..3 {
        run(&datapath, &b);
    }
    for _ in 0..7 {
        run(&datapath, &d);
    }
    let snapshot = snapshot(&datapath);
    assert_eq!(a.len(), 52);
    assert_eq!(snapshot.sources.counter(&IpAddr::V4(v4(1))), c(5, 5 * 52));
    assert_eq!(
        snapshot.sources.counter(&IpAddr::V4(v4(2))),
        c(3, 3 * b.len() as u64)
    );
    assert_eq!(
        snapshot.sources.counter(&IpAddr::V6(v6(1))),
        c(7, 7 * d.len() as u64)
    );
    assert_eq!(snapshot.sources.len(), 3);
    assert_eq!(
        classes(&snapshot),
        [
            c(8, 5 * 52 + 3 * b.len() as u64),
            c(7, 7 * d.len() as u64),
            c(0, 0),
            c(0, 0)
        ]
    );
    assert_eq!(snapshot.unattributed(), c(0, 0));
}

#[test]
fn vlan_tags_are_skipped_up_to_two_with_either_tpid() {
    let Some(datapath) = load("vlan_tags_are_skipped_up_to_two_with_either_tpid", 1024) else {
        return;
    };
    let tag_sets: [&[VlanTag]; 5] = [
        &[VlanTag::dot1q(10)],
        &[VlanTag::dot1ad(10)],
        &[VlanTag::dot1ad(20), VlanTag::dot1q(30)],
        &[VlanTag::dot1q(20), VlanTag::dot1q(30)],
        &[VlanTag::dot1ad(20), VlanTag::dot1ad(30)],
    ];
    let mut bytes4 = 0;
    let mut bytes6 = 0;
    for tags in tag_sets {
        let frame = ipv4_frame(v4(7), tags, &[], 30);
        bytes4 += frame.len() as u64;
        run(&datapath, &frame);
        let frame = ipv6_frame(v6(7), tags, &[], 30);
        bytes6 += frame.len() as u64;
        run(&datapath, &frame);
    }
    // A third tag is not looked through: the frame is non_ip.
    let three = [VlanTag::dot1ad(1), VlanTag::dot1q(2), VlanTag::dot1q(3)];
    let third = ipv4_frame(v4(8), &three, &[], 30);
    run(&datapath, &third);
    let snapshot = snapshot(&datapath);
    assert_eq!(snapshot.sources.counter(&IpAddr::V4(v4(7))), c(5, bytes4));
    assert_eq!(snapshot.sources.counter(&IpAddr::V6(v6(7))), c(5, bytes6));
    assert!(!snapshot.sources.contains_key(&IpAddr::V4(v4(8))));
    assert_eq!(
        classes(&snapshot),
        [
            c(5, bytes4),
            c(5, bytes6),
            c(1, third.len() as u64),
            c(0, 0)
        ]
    );
}

#[test]
fn ipv4_options_and_ipv6_extension_headers_still_count_under_the_source() {
    let Some(datapath) = load("ipv4_options_and_ipv6_extension_headers", 1024) else {
        return;
    };
    let mut expected4 = c(0, 0);
    for words in 0..=10 {
        let options = vec![1u8; words * 4]; // NOP options, IHL 5..15
        let frame = ipv4_frame(v4(3), &[], &options, 0);
        expected4.add(&c(1, frame.len() as u64));
        run(&datapath, &frame);
    }
    let hop_by_hop = (0u8, vec![0u8; 8]);
    let routing = (43u8, vec![0u8; 24]);
    let fragment = (44u8, vec![0u8; 8]);
    let destination = (60u8, vec![0u8; 16]);
    let chain = [hop_by_hop, routing, fragment, destination];
    let frame = ipv6_frame(v6(3), &[VlanTag::dot1q(5)], &chain, 8);
    run(&datapath, &frame);
    let snapshot = snapshot(&datapath);
    assert_eq!(snapshot.sources.counter(&IpAddr::V4(v4(3))), expected4);
    assert_eq!(
        snapshot.sources.counter(&IpAddr::V6(v6(3))),
        c(1, frame.len() as u64)
    );
    assert_eq!(classes(&snapshot)[3], c(0, 0));
}

#[test]
fn bad_ip_headers_are_malformed() {
    let Some(datapath) = load("bad_ip_headers_are_malformed", 1024) else {
        return;
    };
    let mut bad = Vec::new();
    // IPv4 ethertype: wrong versions, and IHL below 5.
    for version_ihl in [0x45u8 & 0x0f | 0x60, 0x05, 0xf5, 0x44, 0x40] {
        let mut frame = ipv4_frame(v4(4), &[], &[], 8);
        frame[14] = version_ihl;
        bad.push(frame);
    }
    // IPv6 ethertype: version 4 and version 0, also behind two tags.
    for (version, tags) in [
        (0x45u8, &[][..]),
        (0x00, &[VlanTag::dot1ad(1), VlanTag::dot1q(2)][..]),
    ] {
        let mut frame = ipv6_frame(v6(4), tags, &[], 8);
        frame[14 + 4 * tags.len()] = version;
        bad.push(frame);
    }
    let mut bytes = 0;
    for frame in &bad {
        bytes += frame.len() as u64;
        run(&datapath, frame);
    }
    let snapshot = snapshot(&datapath);
    assert!(
        snapshot.sources.is_empty(),
        "no source from a malformed header: {:?}",
        snapshot.sources
    );
    assert_eq!(
        classes(&snapshot),
        [c(0, 0), c(0, 0), c(0, 0), c(bad.len() as u64, bytes)]
    );
}

#[test]
fn arp_and_other_ethertypes_are_non_ip() {
    let Some(datapath) = load("arp_and_other_ethertypes_are_non_ip", 1024) else {
        return;
    };
    let arp = frames::ethernet(&[], ethertype::ARP, &frames::arp_request(v4(1), v4(2)));
    let lldp = frames::ethernet(&[], 0x88cc, &[0u8; 30]);
    let tagged_arp = frames::ethernet(
        &[VlanTag::dot1q(9)],
        ethertype::ARP,
        &frames::arp_request(v4(1), v4(2)),
    );
    let bare = frames::ethernet(&[], 0x0000, &[]);
    for frame in [&arp, &lldp, &tagged_arp, &bare] {
        run(&datapath, frame);
    }
    let bytes = (arp.len() + lldp.len() + tagged_arp.len() + bare.len()) as u64;
    let snapshot = snapshot(&datapath);
    assert_eq!(classes(&snapshot), [c(0, 0), c(0, 0), c(4, bytes), c(0, 0)]);
}

/// Cuts a frame at every length from the smallest the kernel accepts (14,
/// a whole Ethernet header) to its end and checks each cut's class.
#[test]
fn every_truncation_point_is_classified() {
    let Some(datapath) = load("every_truncation_point_is_classified", 1024) else {
        return;
    };
    let two = [VlanTag::dot1ad(1), VlanTag::dot1q(2)];
    let three = [VlanTag::dot1ad(1), VlanTag::dot1q(2), VlanTag::dot1q(3)];
    // (frame, tags, IP header length or None for a non-IP frame).
    let cases: Vec<(Vec<u8>, usize, Option<usize>)> = vec![
        (ipv4_frame(v4(9), &[], &[], 0), 0, Some(20)),
        (ipv4_frame(v4(9), &[VlanTag::dot1q(1)], &[], 0), 1, Some(20)),
        (ipv4_frame(v4(9), &two, &[], 0), 2, Some(20)),
        (ipv6_frame(v6(9), &[], &[], 0), 0, Some(40)),
        (
            ipv6_frame(v6(9), &[VlanTag::dot1ad(1)], &[], 0),
            1,
            Some(40),
        ),
        (ipv6_frame(v6(9), &two, &[], 0), 2, Some(40)),
        (
            frames::ethernet(&two, ethertype::ARP, &frames::arp_request(v4(1), v4(2))),
            2,
            None,
        ),
        (ipv4_frame(v4(9), &three, &[], 0), 2, None),
    ];
    let mut expected = [c(0, 0); 4];
    for (frame, tags, ip_header) in &cases {
        let headers_end = 14 + 4 * tags;
        for length in 14..=frame.len() {
            let cut = &frame[..length];
            let class = match ip_header {
                _ if length < headers_end => 3,
                Some(header) if length < headers_end + header => 3,
                Some(20) => 0,
                Some(_) => 1,
                None => 2,
            };
            expected[class].add(&c(1, length as u64));
            run(&datapath, cut);
        }
    }
    let snapshot = snapshot(&datapath);
    assert_eq!(classes(&snapshot), expected);
    assert_eq!(
        snapshot.sources.len(),
        2,
        "only whole headers give a source"
    );
}

#[test]
fn frames_shorter_than_an_ethernet_header_never_reach_the_program() {
    let Some(datapath) = load("frames_shorter_than_an_ethernet_header", 1024) else {
        return;
    };
    // BPF_PROG_TEST_RUN refuses them (EINVAL), as drivers never deliver
    // them; the program still classifies them malformed if they come.
    for length in [0usize, 1, 13] {
        assert!(
            datapath.test_run(&vec![0u8; length]).is_err(),
            "length {length}"
        );
    }
    assert_eq!(classes(&snapshot(&datapath)), [c(0, 0); 4]);
}

#[test]
fn sources_beyond_the_tables_reach_are_unattributed() {
    // Two planned sources make the smallest table: MAX_PROBES entries, all
    // within every source's reach.
    let Some(datapath) = load("sources_beyond_the_tables_reach_are_unattributed", 2) else {
        return;
    };
    common::pin_to_one_cpu();
    let entries = MAX_PROBES as u8;
    let frame4 = |last| ipv4_frame(v4(last), &[], &[], 10);
    let frame6 = |last| ipv6_frame(v6(last), &[], &[], 10);
    let len4 = frame4(0).len() as u64;
    let len6 = frame6(0).len() as u64;
    // Each source claims an entry when its first packet arrives: the first
    // `entries` sources fill the table, the next four find no entry and
    // are unattributed from their first packet (the last one's is the run
    // in progress).
    let last_source = entries + 4;
    for last in 1..=last_source {
        run(&datapath, &frame4(last));
    }
    for last in 1..=3u16 {
        run(&datapath, &frame6(last));
    }
    let snapshot = snapshot(&datapath);
    for last in 1..=entries {
        assert_eq!(
            snapshot.sources.counter(&IpAddr::V4(v4(last))),
            c(1, len4),
            "{last}"
        );
    }
    for last in entries + 1..=last_source {
        assert!(
            !snapshot.sources.contains_key(&IpAddr::V4(v4(last))),
            "{last}"
        );
    }
    for last in 1..=3 {
        assert_eq!(
            snapshot.sources.counter(&IpAddr::V6(v6(last))),
            c(1, len6),
            "the IPv6 table is its own"
        );
    }
    assert_eq!(snapshot.sources.len(), usize::from(entries) + 3);
    assert_eq!(snapshot.slots.unattributed_v4, c(4, 4 * len4));
    assert_eq!(snapshot.slots.unattributed_v6, c(0, 0));
    let total = u64::from(last_source);
    assert_eq!(
        classes(&snapshot)[0],
        c(total, total * len4),
        "every IPv4 packet"
    );
    assert_eq!(classes(&snapshot)[1], c(3, 3 * len6), "every IPv6 packet");
}

/// A frame from `source` (either family) carrying `protocol`.
fn carrying(source: IpAddr, protocol: u8) -> Vec<u8> {
    let (mut frame, ip_at) = match source {
        IpAddr::V4(v4) => (ipv4_frame(v4, &[], &[], 40), 14),
        IpAddr::V6(v6) => (ipv6_frame(v6, &[], &[], 40), 14),
    };
    frames::carrying(&mut frame[ip_at..], protocol, (1024, 443), frames::tcp::SYN);
    frame
}

#[test]
fn each_source_counts_its_packets_by_protocol() {
    let Some(datapath) = load("each_source_counts_its_packets_by_protocol", 1024) else {
        return;
    };
    // One CPU: a run is one source's packets of one protocol, so these
    // patterns end runs on the protocol alone, and on the source.
    common::pin_to_one_cpu();
    let (a, b) = (IpAddr::V4(v4(1)), IpAddr::V6(v6(1)));
    // TCP, UDP, ICMP (ICMPv6 for IPv6), and GRE (other).
    let icmp = |source: IpAddr| if source.is_ipv4() { 1 } else { 58 };
    let mut sent = std::collections::HashMap::<IpAddr, SourceProtocols>::new();
    let pattern: [(IpAddr, u8, u64); 9] = [
        (a, 6, 3),
        (a, 17, 1),
        (a, 6, 2),
        (b, 17, 4),
        (a, 1, 1),
        (b, 58, 2),
        (b, 47, 3),
        (a, 47, 1),
        (b, 6, 1),
    ];
    for (round, &(source, protocol, count)) in pattern.iter().cycle().take(27).enumerate() {
        let protocol = if protocol == 1 {
            icmp(source)
        } else {
            protocol
        };
        let frame = carrying(source, protocol);
        for _ in 0..count {
            run(&datapath, &frame);
        }
        let row = sent.entry(source).or_default();
        match protocol {
            6 => row.0[source::TCP] += count,
            17 => row.0[source::UDP] += count,
            1 | 58 => row.0[source::ICMP] += count,
            _ => row.0[source::OTHER] += count,
        }
        // Mid-way, a read finds the run in progress under its protocol.
        if round == 13 {
            let snapshot = snapshot(&datapath);
            for (source, expected) in &sent {
                let tally = snapshot.sources.tally(source).expect("source held");
                assert_eq!(tally.protocols, *expected, "{source} mid-way");
            }
        }
    }
    let snapshot = snapshot(&datapath);
    for (source, expected) in &sent {
        let tally = snapshot.sources.tally(source).expect("source held");
        assert_eq!(tally.protocols, *expected, "{source}");
        let all = expected.total();
        assert_eq!(
            tally.counter.packets, all,
            "{source}: every packet under one protocol"
        );
    }
    assert_eq!(sent[&a].dominant(), "tcp");
    assert_eq!(sent[&b].dominant(), "udp");
}

#[test]
fn a_retired_entry_takes_a_new_source_with_none_of_the_old_ones_protocols() {
    // 32 entries, planned for 8 sources: 31 sources fill it; retiring
    // leaves 6, and new sources must take the retired entries.
    let test = "a_retired_entry_takes_a_new_source_with_none_of_the_old_ones_protocols";
    let Some(datapath) = load(test, 8) else {
        return;
    };
    common::pin_to_one_cpu();
    let sender = |n: u16| IpAddr::V4(Ipv4Addr::new(198, 18, (n >> 8) as u8, n as u8));
    // Old sources: TCP twice, then UDP (counted beside the entry).
    for n in 1..=31 {
        for protocol in [6, 6, 17] {
            run(&datapath, &carrying(sender(n), protocol));
        }
    }
    let first = snapshot(&datapath);
    assert_eq!(first.sources.len(), 31);
    for n in 1..=31 {
        let tally = first.sources.tally(&sender(n)).expect("held");
        assert_eq!(tally.protocols.0[source::TCP], 2, "{}", sender(n));
        assert_eq!(tally.protocols.0[source::UDP], 1, "{}", sender(n));
    }
    assert!(
        datapath.retire_idle().unwrap().is_empty(),
        "nothing idle yet"
    );
    snapshot(&datapath);
    let retired = datapath.retire_idle().unwrap();
    assert_eq!(retired.len(), 25, "down to 6");
    for (address, _) in retired.iter() {
        let tally = retired.tally(&address).unwrap();
        // TCP twice, UDP once.
        let expected = SourceProtocols([2, 1, 0, 0]);
        assert_eq!(tally.protocols, expected, "{address} retired whole");
    }
    // New sources: ICMP, then UDP, which goes beside the entry they took.
    for n in 100..125 {
        for protocol in [1, 17] {
            run(&datapath, &carrying(sender(n), protocol));
        }
    }
    let after = snapshot(&datapath);
    assert_eq!(
        after.unattributed().packets,
        25 * 3,
        "the retired packets, and no new one: every new source found an entry"
    );
    for n in 100..125 {
        let tally = after.sources.tally(&sender(n)).expect("held");
        // UDP and ICMP once each.
        let expected = SourceProtocols([0, 1, 1, 0]);
        assert_eq!(tally.protocols, expected, "{}", sender(n));
    }
}

#[test]
fn retiring_idle_entries_makes_room_and_loses_no_packet() {
    // Planned for 8 sources: above 7 in use, idle entries are retired down
    // to 6, fewest packets first.
    let Some(datapath) = load("retiring_idle_entries_makes_room_and_loses_no_packet", 8) else {
        return;
    };
    common::pin_to_one_cpu();
    let frame = |last| ipv4_frame(v4(last), &[], &[], 10);
    let len = frame(0).len() as u64;
    // Source k sends 10 - k packets; source 10's packet is the run, which
    // holds an entry too.
    for last in 1..=10u8 {
        for _ in 0..(10 - last).max(1) {
            run(&datapath, &frame(last));
        }
    }
    let first = snapshot(&datapath);
    assert_eq!(first.sources.len(), 10);
    assert!(
        datapath.retire_idle().unwrap().is_empty(),
        "nothing is idle yet"
    );
    let second = snapshot(&datapath);
    assert_eq!(second.sources, first.sources);
    let retired = datapath.retire_idle().unwrap();
    // 10 in use, down to 6: the four with fewest packets, but never the
    // entry the CPU's run will settle into (source 10).
    let expected: SourceTable = (6..=9u8)
        .map(|last| {
            let packets = u64::from(10 - last);
            let tally = Tally {
                counter: c(packets, packets * len),
                protocols: SourceProtocols::of(source::UDP, packets),
            };
            (IpAddr::V4(v4(last)), tally)
        })
        .collect();
    assert_eq!(retired, expected);
    let third = snapshot(&datapath);
    for last in 6..=9 {
        assert!(
            !third.sources.contains_key(&IpAddr::V4(v4(last))),
            "{last} retired"
        );
    }
    for last in 1..=5 {
        let packets = u64::from(10 - last);
        assert_eq!(
            third.sources.counter(&IpAddr::V4(v4(last))),
            c(packets, packets * len)
        );
    }
    assert_eq!(third.sources.counter(&IpAddr::V4(v4(10))), c(1, len));
    assert_eq!(
        third.slots.unattributed_v4,
        c(4 + 3 + 2 + 1, 10 * len),
        "their packets"
    );
    let total = 9 + 8 + 7 + 6 + 5 + 4 + 3 + 2 + 1 + 1;
    assert_eq!(classes(&third)[0], c(total, total * len));
    // Retired entries take new sources.
    run(&datapath, &frame(11));
    let fourth = snapshot(&datapath);
    assert_eq!(fourth.sources.counter(&IpAddr::V4(v4(10))), c(1, len));
    assert_eq!(fourth.sources.counter(&IpAddr::V4(v4(11))), c(1, len));
    assert_eq!(fourth.slots.unattributed_v4, c(10, 10 * len));
    assert_eq!(classes(&fourth)[0], c(total + 1, (total + 1) * len));
}

#[test]
fn a_source_whose_packets_sit_in_a_cpus_run_is_busy_not_idle() {
    let Some(datapath) = load(
        "a_source_whose_packets_sit_in_a_cpus_run_is_busy_not_idle",
        8,
    ) else {
        return;
    };
    common::pin_to_one_cpu();
    let frame = |last| ipv4_frame(v4(last), &[], &[], 10);
    let len = frame(0).len() as u64;
    // Source 1 settles 5 packets into its entry, then eight one-packet
    // sources fill the table, then source 1 sends on and on: every packet
    // of that run stays in the CPU's state, its entry's counter stands still.
    for _ in 0..5 {
        run(&datapath, &frame(1));
    }
    for last in 2..=9 {
        run(&datapath, &frame(last));
    }
    let mut sent = 5;
    for _ in 0..2 {
        for _ in 0..100 {
            run(&datapath, &frame(1));
            sent += 1;
        }
        snapshot(&datapath);
    }
    let retired = datapath.retire_idle().unwrap();
    assert!(
        !retired.contains_key(&IpAddr::V4(v4(1))),
        "the busy source was retired: {retired:?}"
    );
    assert_eq!(retired.len(), 9 - 6, "one-packet sources make room");
    let after = snapshot(&datapath);
    assert_eq!(
        after.sources.counter(&IpAddr::V4(v4(1))),
        c(sent, sent * len)
    );
}

#[test]
fn a_big_sender_arriving_after_a_spoofed_flood_gets_a_retired_entry() {
    const PLANNED: u32 = 64;
    let Some(datapath) = load(
        "a_big_sender_arriving_after_a_spoofed_flood_gets_a_retired_entry",
        PLANNED,
    ) else {
        return;
    };
    common::pin_to_one_cpu();
    let big = ipv4_frame(v4(1), &[], &[], 10);
    let len = big.len() as u64;
    // The flood takes the table before the big sender starts.
    for n in 0..1_000 {
        run(&datapath, &nth_frame(n));
    }
    snapshot(&datapath);
    let full = snapshot(&datapath);
    assert!(
        full.sources.len() > PLANNED as usize,
        "{}",
        full.sources.len()
    );
    let retired = datapath.retire_idle().unwrap().len();
    assert_eq!(retired, full.sources.len() - 48, "down to 3/4 of 64");
    let mut big_sent = 0;
    for n in 1_000..20_000u32 {
        run(&datapath, &nth_frame(n));
        if n % 4 == 3 {
            run(&datapath, &big);
            big_sent += 1;
        }
        if n % 5_000 == 0 {
            // The live loop's housekeeping, now and then.
            snapshot(&datapath);
            datapath.retire_idle().unwrap();
        }
    }
    let snapshot = snapshot(&datapath);
    assert_eq!(
        snapshot.sources.get(&IpAddr::V4(v4(1))),
        Some(c(big_sent, big_sent * len)),
        "the big sender got an entry at once and kept every packet"
    );
    let total = 20_000 + big_sent;
    assert_eq!(classes(&snapshot)[0], c(total, total * len));
}

#[test]
fn multi_buffer_frames_count_every_byte() {
    let Some(datapath) = load("multi_buffer_frames_count_every_byte", 1024) else {
        return;
    };
    // Larger than a page: BPF_PROG_TEST_RUN builds it from fragments.
    let jumbo = ipv4_frame(v4(5), &[], &[], 9000 - 34);
    assert_eq!(jumbo.len(), 9000);
    run(&datapath, &jumbo);
    let snapshot = snapshot(&datapath);
    assert_eq!(snapshot.sources.counter(&IpAddr::V4(v4(5))), c(1, 9000));
}

#[test]
fn dropping_the_datapath_unloads_the_program() {
    let Some(datapath) = load("dropping_the_datapath_unloads_the_program", 16) else {
        return;
    };
    let id = datapath.program_id().expect("a loaded program has an id");
    let loaded = |id| {
        aya::programs::loaded_programs()
            .flatten()
            .any(|program| program.id() == id)
    };
    assert!(loaded(id));
    drop(datapath);
    // The kernel frees the program once its last descriptor closes; that
    // happens in an RCU callback, so give it a moment.
    common::eventually(
        &format!("unloading program {id} (else a descriptor leaked)"),
        || !loaded(id),
    );
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("cpu index");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin the thread");
}

/// [`load`], for a test that runs the program on two CPUs at once (`None`,
/// the test skipped, on a machine with one).
fn load_on_two_cpus(test: &str, max_sources: u32) -> Option<Datapath> {
    let datapath = load(test, max_sources)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        common::skip(test, &format!("needs 2 CPUs, has {cpus}"));
        return None;
    }
    Some(datapath)
}

/// Two CPUs settling runs into the same entries at once must not lose an
/// increment. Both alternate between two sources, so every packet ends a
/// run and is added to a shared entry while the other CPU adds to it too,
/// as NAPI polls on two receive queues do.
#[test]
fn concurrent_counting_on_two_cpus_loses_nothing() {
    let Some(datapath) = load_on_two_cpus("concurrent_counting_on_two_cpus_loses_nothing", 16)
    else {
        return;
    };
    const ROUNDS: u64 = 50_000;
    let frames = [
        ipv4_frame(v4(6), &[], &[], 10),
        ipv4_frame(v4(7), &[], &[], 30),
    ];
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        for cpu in 0..2 {
            let (datapath, frames, start) = (&datapath, &frames, &start);
            scope.spawn(move || {
                pin_to(cpu);
                start.wait();
                for _ in 0..ROUNDS {
                    for frame in frames {
                        run(datapath, frame);
                    }
                }
            });
        }
    });
    let each = 2 * ROUNDS;
    let snapshot = snapshot(&datapath);
    for (last, frame) in [6, 7].into_iter().zip(&frames) {
        assert_eq!(
            snapshot.sources.counter(&IpAddr::V4(v4(last))),
            c(each, each * frame.len() as u64),
            "198.18.0.{last}"
        );
    }
    assert_eq!(snapshot.unattributed(), c(0, 0));
}

/// User space retiring entries while another CPU claims them for new
/// sources must lose no packet: a cleared entry is released only after
/// its counters are zero, so a claim never has its first adds wiped.
#[test]
fn retiring_while_another_cpu_claims_entries_loses_nothing() {
    let Some(datapath) = load_on_two_cpus(
        "retiring_while_another_cpu_claims_entries_loses_nothing",
        64,
    ) else {
        return;
    };
    // Until the housekeeping has retired 100 entries (however slow its
    // reads are), at most 2,000,000 frames.
    const MAX_FRAMES: u32 = 2_000_000;
    const WANTED: usize = 100;
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
    let done = AtomicBool::new(false);
    let sent = AtomicU32::new(0);
    let retired_so_far = AtomicUsize::new(0);
    let len = ipv4_frame(v4(1), &[], &[], 10).len() as u64;
    std::thread::scope(|scope| {
        let (datapath, done, sent, retired_so_far) = (&datapath, &done, &sent, &retired_so_far);
        scope.spawn(move || {
            pin_to(1);
            // New sources all the time, and a few that come back.
            let mut n = 0;
            while n < MAX_FRAMES && retired_so_far.load(Ordering::Acquire) < WANTED {
                let source = if n % 3 == 0 { n % 97 } else { n % 60_000 };
                run(datapath, &nth_frame(source));
                n += 1;
            }
            sent.store(n, Ordering::Release);
            done.store(true, Ordering::Release);
        });
        scope.spawn(move || {
            pin_to(0);
            while !done.load(Ordering::Acquire) {
                datapath.snapshot("test").expect("maps read");
                let retired = datapath.retire_idle().expect("retire").len();
                retired_so_far.fetch_add(retired, Ordering::AcqRel);
            }
        });
    });
    let retired = retired_so_far.load(Ordering::Acquire);
    assert!(
        retired >= WANTED,
        "the race was run: {retired} entries retired"
    );
    let total = u64::from(sent.load(Ordering::Acquire));
    assert_eq!(classes(&snapshot(&datapath))[0], c(total, total * len));
}

/// A read has the kernel copy out the entries that hold a source while
/// another CPU claims new ones: reads racing a CPU that claims new sources
/// all the time must, in the end, find every source with every packet, as
/// a walk of the mapped table does.
#[test]
fn reads_racing_new_sources_find_every_one_in_the_end() {
    const SOURCES: u32 = 16_000;
    const ROUNDS: u64 = 3;
    let Some(datapath) = load_on_two_cpus(
        "reads_racing_new_sources_find_every_one_in_the_end",
        2 * SOURCES,
    ) else {
        return;
    };
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let len = nth_frame(0).len() as u64;
    let (done, reads) = (AtomicBool::new(false), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        let (datapath, done, reads) = (&datapath, &done, &reads);
        scope.spawn(move || {
            pin_to(1);
            for _ in 0..ROUNDS {
                for n in 0..SOURCES {
                    run(datapath, &nth_frame(n));
                }
            }
            done.store(true, Ordering::Release);
        });
        scope.spawn(move || {
            pin_to(0);
            while !done.load(Ordering::Acquire) {
                datapath.snapshot("test").expect("maps read");
                reads.fetch_add(1, Ordering::AcqRel);
            }
        });
    });
    assert!(reads.load(Ordering::Acquire) > 1, "reads raced the claims");
    assert_eq!(datapath.read_method(), ReadMethod::Copied);
    let copied = snapshot(&datapath);
    datapath.set_read_method(ReadMethod::Mapped);
    let mapped = snapshot(&datapath);
    assert_eq!(copied.sources, mapped.sources);
    assert_eq!(copied.sources.len(), SOURCES as usize);
    for n in 0..SOURCES {
        let source = IpAddr::V4(nth_source(n));
        assert_eq!(
            copied.sources.counter(&source),
            c(ROUNDS, ROUNDS * len),
            "{source}"
        );
    }
    assert_eq!(copied.unattributed(), c(0, 0));
}

#[test]
fn two_cpus_adding_the_same_new_sources_at_once_count_each_packet_once() {
    const SOURCES: u32 = 5_000;
    const ROUNDS: u32 = 4;
    // Tables for four times as many: no new source may miss an entry here.
    let Some(datapath) = load_on_two_cpus(
        "two_cpus_adding_the_same_new_sources_at_once_count_each_packet_once",
        4 * SOURCES,
    ) else {
        return;
    };
    // Both CPUs walk the same sources in the same order, so they race to
    // claim the same new entries; each packet runs alone, so every one
    // settles through the table.
    let frames: Vec<Vec<u8>> = (0..SOURCES).map(nth_frame).collect();
    let len = frames[0].len() as u64;
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        for cpu in 0..2 {
            let (datapath, frames, start) = (&datapath, &frames, &start);
            scope.spawn(move || {
                pin_to(cpu);
                start.wait();
                for _ in 0..ROUNDS {
                    for frame in frames {
                        run(datapath, frame);
                    }
                }
            });
        }
    });
    let snapshot = snapshot(&datapath);
    let each = u64::from(2 * ROUNDS);
    for n in 0..SOURCES {
        let address = IpAddr::V4(nth_source(n));
        assert_eq!(
            snapshot.sources.counter(&address),
            c(each, each * len),
            "{address}"
        );
    }
    assert_eq!(snapshot.sources.len(), SOURCES as usize);
    assert_eq!(snapshot.unattributed(), c(0, 0));
}

#[test]
fn copied_mapped_and_per_key_reads_find_the_same_sources() {
    let Some(datapath) = load("copied_mapped_and_per_key_reads_find_the_same_sources", 256) else {
        return;
    };
    for n in 0..40u8 {
        for _ in 0..=n {
            run(&datapath, &ipv4_frame(v4(n), &[], &[], 10));
        }
        run(&datapath, &ipv6_frame(v6(u16::from(n)), &[], &[], 10));
    }
    assert_eq!(datapath.read_method(), ReadMethod::Copied);
    let copied = snapshot(&datapath);
    datapath.set_read_method(ReadMethod::Mapped);
    let mapped = snapshot(&datapath);
    datapath.set_read_method(ReadMethod::PerKey);
    let per_key = snapshot(&datapath);
    assert_eq!(mapped.sources, copied.sources);
    assert_eq!(per_key.sources, mapped.sources);
    assert_eq!(per_key.slots, mapped.slots);
    // New sources, on pages read before and not: the next read of copies
    // finds them all, as a walk of the mapped table does.
    for n in 40..120u8 {
        run(&datapath, &ipv4_frame(v4(n), &[], &[], 10));
        run(&datapath, &ipv6_frame(v6(u16::from(n) << 8), &[], &[], 10));
    }
    datapath.set_read_method(ReadMethod::Copied);
    let copied_later = snapshot(&datapath);
    datapath.set_read_method(ReadMethod::Mapped);
    let mapped_later = snapshot(&datapath);
    assert_eq!(copied_later.sources, mapped_later.sources);
    assert_eq!(copied_later.sources.family_lens(), (120, 120));
    assert_eq!(mapped.sources.family_lens(), (40, 40));
    for n in 0..40u8 {
        assert_eq!(
            mapped.sources.counter(&IpAddr::V4(v4(n))).packets,
            u64::from(n) + 1
        );
    }
}

/// A call of the copying program looks at up to four times the entries its
/// copies hold: in a table fuller than a quarter, the copies fill up part
/// way through a call, and the next call goes on from the entry where they
/// stopped. 36,000 sources in 80,000 entries fill them in every call; the
/// read finds each source with its exact packets, as a walk of the mapped
/// table does.
#[test]
fn a_read_whose_copies_fill_up_goes_on_where_they_stopped() {
    const SOURCES: u32 = 36_000;
    let Some(datapath) = load(
        "a_read_whose_copies_fill_up_goes_on_where_they_stopped",
        40_000,
    ) else {
        return;
    };
    let len = nth_frame(0).len() as u64;
    let packets = |n: u32| u64::from(n % 3 + 1);
    for n in 0..SOURCES {
        for _ in 0..packets(n) {
            run(&datapath, &nth_frame(n));
        }
    }
    assert_eq!(datapath.read_method(), ReadMethod::Copied);
    let copied = snapshot(&datapath);
    assert_eq!(copied.sources.len(), SOURCES as usize);
    let sent: u64 = (0..SOURCES).map(packets).sum();
    assert_eq!(copied.sources.family_sums().0, c(sent, sent * len));
    for n in 0..SOURCES {
        let source = IpAddr::V4(nth_source(n));
        assert_eq!(
            copied.sources.counter(&source),
            c(packets(n), packets(n) * len),
            "{source}"
        );
    }
    datapath.set_read_method(ReadMethod::Mapped);
    assert_eq!(snapshot(&datapath).sources, copied.sources);
}

/// Signals at bad moments: a terminal being resized sends SIGWINCH, and
/// BPF_PROG_TEST_RUN gives up with EINTR when a signal arrives between two
/// of its runs. Reads bombarded with a signal every 200 µs, through a
/// handler that does not restart system calls, each find every source with
/// every packet: an interrupted copy goes on from where it stopped.
#[test]
fn reads_interrupted_by_signals_find_every_source() {
    const SOURCES: u32 = 60_000;
    const READS: usize = 12;
    let Some(datapath) = load(
        "reads_interrupted_by_signals_find_every_source",
        4 * SOURCES,
    ) else {
        return;
    };
    use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    static CAUGHT: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn caught(_: libc::c_int) {
        CAUGHT.fetch_add(1, Ordering::Relaxed);
    }
    for n in 0..SOURCES {
        run(&datapath, &nth_frame(n));
    }
    let len = nth_frame(0).len() as u64;
    // No SA_RESTART: an interrupted system call returns EINTR.
    let action = SigAction::new(
        SigHandler::Handler(caught),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only adds to an atomic, which is signal-safe.
    unsafe { signal::sigaction(Signal::SIGUSR2, &action) }.expect("a handler for SIGUSR2");
    // SAFETY: pthread_self has no preconditions.
    let reader = unsafe { libc::pthread_self() };
    let done = AtomicBool::new(false);
    let reads: Vec<Snapshot> = std::thread::scope(|scope| {
        let done = &done;
        scope.spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while !done.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
                // SAFETY: `reader` is the scope's own thread, alive until the
                // scope ends, which waits for this loop.
                let sent = unsafe { libc::pthread_kill(reader, libc::SIGUSR2) };
                assert_eq!(sent, 0, "signal the reader");
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        });
        // Stops the signals when the reads end, or fail.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _stop = Stop(done);
        (0..READS)
            .map(|_| {
                datapath
                    .snapshot("test")
                    .expect("a read interrupted by signals")
            })
            .collect()
    });
    assert!(
        CAUGHT.load(Ordering::Relaxed) > READS,
        "the reads were interrupted: {} signals caught",
        CAUGHT.load(Ordering::Relaxed)
    );
    for read in &reads {
        assert_eq!(read.sources.len(), SOURCES as usize);
        assert_eq!(
            read.sources.family_sums().0,
            c(u64::from(SOURCES), u64::from(SOURCES) * len)
        );
        assert_eq!(read.unattributed(), c(0, 0));
    }
    for n in (0..SOURCES).step_by(997) {
        let source = IpAddr::V4(nth_source(n));
        assert_eq!(
            reads[READS - 1].sources.counter(&source),
            c(1, len),
            "{source}"
        );
    }
}
