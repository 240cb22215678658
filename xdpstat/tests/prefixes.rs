//! Prefix totals on veth: a flood of 20,000 one-packet sources that the
//! tables (planned for 1,024) cannot hold, with 6,000 packets from 250
//! sources of one network mixed in; the top prefix is that network, its
//! count within the stated bound of 6,000 and never below it, and every
//! packet is either in a prefix's exact part or in the sketch. Without a
//! flood, the prefix sums are the family totals, all exact.

mod common;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;

use common::{TestNet, Xdpstat, ipv4_frame, ipv6_frame, pair, privileged};
use serde_json::Value;

/// The flood and the attack: the first 5,000 flood frames alone (they fill
/// the tables), then one attack frame after every few flood frames, so
/// that the attack's sources come and go like the flood's and find no
/// entry free.
fn flood_with_attack(flood: &[IpAddr], attack: &[IpAddr]) -> Vec<Vec<u8>> {
    let frame = |address: &IpAddr| match address {
        IpAddr::V4(a) => ipv4_frame(*a, &[], 18),
        IpAddr::V6(a) => ipv6_frame(*a, &[], 18),
    };
    let attack_frames = attack.len() * 24;
    let mut frames = Vec::with_capacity(flood.len() + attack_frames);
    let mut sent_attack = 0;
    let (alone, mixed) = flood.split_at(5_000);
    frames.extend(alone.iter().map(frame));
    for (index, address) in mixed.iter().enumerate() {
        frames.push(frame(address));
        // Spread the 6,000 attack frames evenly over the rest.
        while sent_attack * mixed.len() < (index + 1) * attack_frames {
            frames.push(frame(&attack[sent_attack % attack.len()]));
            sent_attack += 1;
        }
    }
    frames
}

/// Sends `frames` with a pause now and then, so the veth ring never
/// overflows (a dropped frame would be one xdpstat never saw).
fn send_paced(net: &TestNet, frames: &[Vec<u8>]) {
    for chunk in frames.chunks(64) {
        for frame in chunk {
            net.send(frame, 1);
        }
        std::thread::sleep(std::time::Duration::from_micros(300));
    }
}

fn packets(value: &Value) -> u64 {
    pair(value).0
}

/// Checks the flood's report: the attack's prefix on top, within its
/// bound, every listed prefix never below what it sent and within its
/// bound above, and every packet accounted for.
fn check_flood_report(
    report: &Value,
    family: &str,
    attack_prefix: &str,
    sent: u64,
    truth: &HashMap<String, u64>,
) {
    let total = pair(&report["totals"][family]);
    assert_eq!(total.0, sent);
    let prefixes = report["prefixes"].as_array().unwrap();
    let top = &prefixes[0];
    assert_eq!(
        top["prefix"],
        attack_prefix,
        "top prefixes: {:?}",
        &prefixes[..5]
    );
    let (counted, error) = (
        top["packets"].as_u64().unwrap(),
        top["error_packets"].as_u64().unwrap(),
    );
    assert!(
        (6_000..=6_000 + error).contains(&counted),
        "{attack_prefix}: {counted} packets, bound {error}: {top}"
    );
    eprintln!(
        "{attack_prefix}: {counted} packets counted for 6,000 sent (bound +{error}, estimated: {})",
        top["estimated"]
    );
    // No read came while the frames were sent, so no entry was retired
    // for the attack to take: it was counted by the sketch.
    assert_eq!(top["estimated"], true, "{top}");
    for row in prefixes {
        let prefix = row["prefix"].as_str().unwrap();
        let sent_from = truth.get(prefix).copied().unwrap_or(0);
        let counted = row["packets"].as_u64().unwrap();
        let error = row["error_packets"].as_u64().unwrap();
        assert!(
            (sent_from..=sent_from + error).contains(&counted),
            "{prefix}: sent {sent_from}, counted {counted}, bound {error}"
        );
    }
    // Every packet is in some prefix's exact part, in the sketch, or
    // retired where no prefix was kept.
    let parts = &report["prefix_parts"];
    let (exact, sketched, unkept) = (
        pair(&parts["exact"]),
        pair(&parts["sketched"]),
        pair(&parts["unkept"]),
    );
    assert_eq!(
        (
            exact.0 + sketched.0 + unkept.0,
            exact.1 + sketched.1 + unkept.1
        ),
        total
    );
    assert_eq!(unkept, (0, 0));
    assert!(sketched.0 > 0, "the flood overflowed the tables: {parts}");
    // The exact parts are what the tables held and what they retired;
    // with the sketch, that is what is not held.
    let exact_rows: u64 = prefixes
        .iter()
        .map(|p| p["exact_packets"].as_u64().unwrap())
        .sum();
    assert_eq!(exact_rows, exact.0);
    let held: u64 = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(
        packets(&report["unattributed"]),
        sketched.0 + exact.0 - held
    );
}

fn run_flood(test: &str, flood: Vec<IpAddr>, attack: Vec<IpAddr>, family: &str, prefix: &str) {
    if !privileged(test) {
        return;
    }
    let net = TestNet::new();
    let mut xdpstat = Xdpstat::start(
        &net.watched,
        &[
            "xs0",
            "--max-sources",
            "1024",
            "--format",
            "json",
            // Longer than sending takes (about 0.2 s): no retirement
            // frees entries while the flood arrives.
            "--interval",
            "3",
        ],
    );
    let frames = flood_with_attack(&flood, &attack);
    let sent = frames.len() as u64;
    assert_eq!(sent, 26_000);
    // What each prefix sent: the flood's one packet per source, 24 per
    // attack source.
    let lens = |address: &IpAddr| match address {
        IpAddr::V4(_) => 24,
        IpAddr::V6(_) => 48,
    };
    let mut truth: HashMap<String, u64> = HashMap::new();
    for (address, packets) in flood
        .iter()
        .map(|a| (a, 1))
        .chain(attack.iter().map(|a| (a, 24)))
    {
        let prefix = IpNet::new(*address, lens(address)).unwrap().trunc();
        *truth.entry(prefix.to_string()).or_default() += packets;
    }
    send_paced(&net, &frames);
    let report = xdpstat.report_where(|r| packets(&r["totals"][family]) >= sent);
    check_flood_report(&report, family, prefix, sent, &truth);
}

#[test]
fn the_attacking_ipv4_network_tops_a_flood_the_tables_cannot_hold() {
    // 20,000 sources spread over 198.18.0.0/16 (a stride that visits every
    // /24), and 250 sources of 198.19.7.0/24 with 24 packets each.
    let flood = (0..20_000u32)
        .map(|i| {
            let spread = (i.wrapping_mul(40_503) & 0xffff) as u16;
            IpAddr::V4(Ipv4Addr::new(198, 18, (spread >> 8) as u8, spread as u8))
        })
        .collect();
    let attack = (1..=250u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 19, 7, i)))
        .collect();
    run_flood(
        "the_attacking_ipv4_network_tops_a_flood_the_tables_cannot_hold",
        flood,
        attack,
        "ipv4",
        "198.19.7.0/24",
    );
}

#[test]
fn the_attacking_ipv6_network_tops_a_flood_the_tables_cannot_hold() {
    // 20,000 sources spread over 2001:db8::/32, and 250 sources of
    // 2001:db8:bad::/48 with 24 packets each.
    let flood = (0..20_000u32)
        .map(|i| {
            let spread = i.wrapping_mul(2_654_435_761);
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                (spread >> 16) as u16,
                spread as u16,
                0,
                0,
                0,
                1,
            ))
        })
        .collect();
    let attack = (1..=250u16)
        .map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, i)))
        .collect();
    run_flood(
        "the_attacking_ipv6_network_tops_a_flood_the_tables_cannot_hold",
        flood,
        attack,
        "ipv6",
        "2001:db8:bad::/48",
    );
}

#[test]
fn without_a_flood_prefix_sums_are_the_family_totals_and_exact() {
    if !privileged("without_a_flood_prefix_sums_are_the_family_totals_and_exact") {
        return;
    }
    let net = TestNet::new();
    let mut xdpstat = Xdpstat::start(
        &net.watched,
        &[
            "xs0",
            "--format",
            "json",
            "--interval",
            "0.2",
            "--prefix-len",
            "16,56",
        ],
    );
    let mut sent = 0;
    for i in 0..40u8 {
        let v4 = Ipv4Addr::new(198, 18 + i % 2, i, 1);
        net.send(&ipv4_frame(v4, &[], 30), 3);
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, u16::from(i) << 4, 0, 0, 0, 1);
        net.send(&ipv6_frame(v6, &[], 30), 2);
        sent += 5;
    }
    let report = xdpstat
        .report_where(|r| packets(&r["totals"]["ipv4"]) + packets(&r["totals"]["ipv6"]) >= sent);
    let prefixes = report["prefixes"].as_array().unwrap();
    let by_family = |v6: bool| -> (u64, u64) {
        prefixes
            .iter()
            .filter(|p| p["prefix"].as_str().unwrap().contains(':') == v6)
            .fold((0, 0), |(packets, bytes), p| {
                assert_eq!(p["estimated"], false, "{p}");
                assert_eq!(p["error_packets"], 0);
                (
                    packets + p["packets"].as_u64().unwrap(),
                    bytes + p["bytes"].as_u64().unwrap(),
                )
            })
    };
    assert_eq!(by_family(false), pair(&report["totals"]["ipv4"]));
    assert_eq!(by_family(true), pair(&report["totals"]["ipv6"]));
    // /16 and /56: two IPv4 prefixes (198.18 and 198.19), and one IPv6
    // prefix per four /60s... here every source's /56 is its own.
    let names: Vec<&str> = prefixes
        .iter()
        .map(|p| p["prefix"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"198.18.0.0/16") && names.contains(&"198.19.0.0/16"),
        "{names:?}"
    );
    assert_eq!(names.iter().filter(|n| !n.contains(':')).count(), 2);
    assert!(names.contains(&"2001:db8:0:100::/56"), "{names:?}");
}
