//! Rules on protocol, ports and SYNs, live on veth: a drop of UDP from
//! source port 53 beside real TCP, a SYN limit under hping3's flood beside
//! real connections, a port rule and the fragments a real datagram over
//! the MTU leaves in, and IPv6 behind a chain of extension headers. Each
//! checked exactly, per source and verdict, against what arrived past XDP.

mod common;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use common::{Arrived, Scratch, TestNet, Xdpstat, eventually, in_namespace, pair, privileged};
use serde_json::Value;
use xdpstat_lab::frames::{self, ethertype};

/// xdpstat on `xs0` with the rules `text`, JSON every 0.2 s.
fn start(net: &TestNet, scratch: &Scratch, text: &str) -> Xdpstat {
    common::start_with_rules(net, &scratch.write("rules.toml", text), "0.2", &[])
}

/// An IPv4 frame from `source` carrying `protocol` with `ports` (and TCP
/// `flags`).
fn v4_frame(source: Ipv4Addr, protocol: u8, ports: (u16, u16), flags: u8) -> Vec<u8> {
    let mut packet = frames::ipv4_packet(source, Ipv4Addr::new(198, 19, 0, 1), &[], 40);
    frames::carrying(&mut packet, protocol, ports, flags);
    frames::ethernet(&[], ethertype::IPV4, &packet)
}

fn v6_frame(source: Ipv6Addr, protocol: u8, ports: (u16, u16)) -> Vec<u8> {
    let mut packet = frames::ipv6_packet(source, "2001:db8::1".parse().unwrap(), &[], 40);
    frames::carrying(&mut packet, protocol, ports, 0);
    frames::ethernet(&[], ethertype::IPV6, &packet)
}

/// Sends each frame its count of times, interleaved, paced so the veth
/// ring never overflows.
fn send(net: &TestNet, frames: &[(&[u8], u64)]) {
    let most = frames.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let mut sent = 0u64;
    for round in 0..most {
        for (frame, count) in frames {
            if round < *count {
                net.send(frame, 1);
                sent += 1;
                if sent.is_multiple_of(64) {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
        }
    }
}

/// The source's packets under each verdict (absent: 0), and its total.
fn verdicts(report: &Value, source: &str) -> (HashMap<String, u64>, u64) {
    let row = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == source)
        .unwrap_or_else(|| panic!("{source} not in {report}"));
    let verdicts = row["verdicts"]
        .as_object()
        .map(|all| {
            all.iter()
                .map(|(name, value)| (name.clone(), pair(value).0))
                .collect()
        })
        .unwrap_or_default();
    (verdicts, pair(row).0)
}

fn of(verdicts: &HashMap<String, u64>, name: &str) -> u64 {
    verdicts.get(name).copied().unwrap_or(0)
}

/// The report after the first one that satisfies `done`: by then every
/// packet the first one counted has its verdict counted too (a read can
/// fall between a packet's count and its verdict).
fn settled(xdpstat: &mut Xdpstat, done: impl Fn(&Value) -> bool) -> Value {
    xdpstat.report_where(done);
    xdpstat.fresh_report()
}

/// The packets of `source` in a report (0 when it is not there yet).
fn packets(report: &Value, source: &str) -> u64 {
    common::source(report, source).map_or(0, |(packets, _)| packets)
}

/// The rule row whose fields are `wanted`.
fn rule_hits(report: &Value, wanted: &[(&str, &str)]) -> u64 {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rule| wanted.iter().all(|(key, value)| rule[*key] == *value))
        .map(|rule| rule["packets"].as_u64().unwrap())
        .unwrap_or_else(|| panic!("no rule {wanted:?} in {report}"))
}

#[test]
fn a_drop_on_udp_source_port_53_leaves_tcp_and_other_udp_untouched() {
    let test = "a_drop_on_udp_source_port_53_leaves_tcp_and_other_udp_untouched";
    if !privileged(test) || !common::have(test, "iperf3") {
        return;
    }
    let scratch = Scratch::new(test);
    let net = TestNet::new();
    let mut xdpstat = start(
        &net,
        &scratch,
        "mode = \"enforce\"\n[[rule]]\nprotocol = \"udp\"\nsrc_port = 53\naction = \"drop\"\n",
    );
    // Real TCP first: 8 MB through every packet of a connection, which
    // completes only if no rule touches it.
    common::iperf3_8mb(&net, "198.18.41");
    let client = "198.18.41.2";
    let report = settled(&mut xdpstat, |r| packets(r, client) > 1000);
    let (tcp, total) = verdicts(&report, client);
    assert_eq!(of(&tcp, "dropped"), 0, "{tcp:?}");
    assert_eq!(of(&tcp, "passed"), total, "{tcp:?}");
    // Then made frames: answers from port 53, queries to it, TCP from
    // port 53, from two IPv4 sources and one IPv6 one.
    let arrived = Arrived::on(&net);
    let (s, t) = (Ipv4Addr::new(198, 18, 42, 7), Ipv4Addr::new(198, 18, 42, 8));
    let u: Ipv6Addr = "2001:db8:42::7".parse().unwrap();
    let answers = v4_frame(s, 17, (53, 4000), 0);
    let queries = v4_frame(s, 17, (5353, 53), 0);
    let tcp_from_53 = v4_frame(s, 6, (53, 40000), frames::tcp::ACK);
    let more_answers = v4_frame(t, 17, (53, 4001), 0);
    let v6_answers = v6_frame(u, 17, (53, 4002));
    let v6_other = v6_frame(u, 17, (54, 4002));
    send(
        &net,
        &[
            (&answers, 300),
            (&queries, 200),
            (&tcp_from_53, 100),
            (&more_answers, 150),
            (&v6_answers, 100),
            (&v6_other, 100),
        ],
    );
    let (s, t, u) = (s.to_string(), t.to_string(), u.to_string());
    let report = settled(&mut xdpstat, |r| {
        packets(r, &s) == 600 && packets(r, &t) == 150 && packets(r, &u) == 200
    });
    for (source, dropped, passed) in [(&s, 300, 300), (&t, 150, 0), (&u, 100, 100)] {
        let (verdicts, total) = verdicts(&report, source);
        assert_eq!(
            (of(&verdicts, "dropped"), of(&verdicts, "passed")),
            (dropped, passed),
            "{source}: {verdicts:?}"
        );
        assert_eq!(dropped + passed, total);
    }
    eventually("what passed arriving", || {
        arrived.of(&s.parse().unwrap()) == 300 && arrived.of(&u.parse().unwrap()) == 100
    });
    assert_eq!(arrived.of(&t.parse().unwrap()), 0);
    assert_eq!(
        rule_hits(&report, &[("protocol", "udp"), ("src_port", "53")]),
        550
    );
    assert!(
        report["rules"][0].get("prefix").is_none(),
        "a rule without a prefix has none in JSON: {}",
        report["rules"]
    );
    let (iperf, _) = verdicts(&report, client);
    assert_eq!(of(&iperf, "dropped"), 0, "{iperf:?}");
    common::stop(xdpstat);
}

#[test]
fn a_syn_limit_passes_real_connections_and_limits_a_syn_flood() {
    let test = "a_syn_limit_passes_real_connections_and_limits_a_syn_flood";
    if !privileged(test) || !common::have(test, "iperf3") || !common::have(test, "hping3") {
        return;
    }
    let scratch = Scratch::new(test);
    let net = TestNet::new();
    let mut xdpstat = start(
        &net,
        &scratch,
        "mode = \"enforce\"\n[[rule]]\nprotocol = \"tcp\"\ndst_port = 5201\ntcp_flags = \"syn\"\naction = \"limit\"\npps = 10\n",
    );
    // Real connections: a SYN each, then every other packet of theirs,
    // which the rule does not match.
    common::iperf3_8mb(&net, "198.18.43");
    // A SYN flood from one spoofed address: 400 SYNs, 100 µs apart.
    let flooder = "198.18.43.9";
    let began = Instant::now();
    let flood = in_namespace(
        &net.sender,
        &[
            "timeout",
            "30",
            "hping3",
            "-q",
            "-S",
            "-p",
            "5201",
            "-c",
            "400",
            "-i",
            "u100",
            "-a",
            flooder,
            "198.18.43.1",
        ],
    )
    .output()
    .expect("hping3");
    let span = began.elapsed().as_secs_f64();
    // hping3 exits 1 when no reply came back: the flood went out either way.
    assert!(
        flood.status.code().is_some_and(|code| code <= 1),
        "hping3: {}",
        String::from_utf8_lossy(&flood.stderr)
    );
    let report = settled(&mut xdpstat, |r| packets(r, flooder) == 400);
    let (flood, _) = verdicts(&report, flooder);
    let passed = of(&flood, "passed");
    // A burst of 10 at once, then 10 a second over the flood's span.
    let bound = 10 + (10.0 * span).ceil() as u64 + 1;
    assert!(
        (10..=bound).contains(&passed),
        "passed {passed} of 400 SYNs in {span:.2} s: between 10 and {bound}"
    );
    assert_eq!(of(&flood, "limited"), 400 - passed, "{flood:?}");
    let (client, total) = verdicts(&report, "198.18.43.2");
    assert_eq!(of(&client, "limited"), 0, "{client:?}");
    assert_eq!(of(&client, "passed"), total);
    assert!(
        rule_hits(
            &report,
            &[
                ("protocol", "tcp"),
                ("dst_port", "5201"),
                ("tcp_flags", "syn")
            ]
        ) >= 400
    );
    assert!(pair(&report["totals"]["tcp_syn"]).0 >= 400);
    common::stop(xdpstat);
}

#[test]
fn later_fragments_of_a_real_datagram_pass_a_port_rule_its_first_fragment_meets() {
    let test = "later_fragments_of_a_real_datagram_pass_a_port_rule_its_first_fragment_meets";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let net = TestNet::new();
    net.addresses("198.18.44");
    let mut xdpstat = start(
        &net,
        &scratch,
        "mode = \"enforce\"\n[[rule]]\nprefix = \"198.18.44.0/24\"\nprotocol = \"udp\"\ndst_port = 9\naction = \"drop\"\n",
    );
    // 20 datagrams of 4,000 bytes: three fragments each, only the first
    // with the UDP header and its ports.
    const DATAGRAMS: u64 = 20;
    common::send_datagrams(&net, "198.18.44.2:5300", "198.18.44.1:9", DATAGRAMS, 4000);
    let report = settled(&mut xdpstat, |r| {
        pair(&r["totals"]["fragments"]).0 >= 3 * DATAGRAMS
    });
    assert_eq!(pair(&report["totals"]["fragments"]).0, 3 * DATAGRAMS);
    let (verdicts, total) = verdicts(&report, "198.18.44.2");
    assert_eq!(total, 3 * DATAGRAMS, "{report}");
    assert_eq!(
        (of(&verdicts, "dropped"), of(&verdicts, "passed")),
        (DATAGRAMS, 2 * DATAGRAMS),
        "{verdicts:?}"
    );
    common::stop(xdpstat);
}

/// An IPv6 frame from `source` whose UDP datagram with `ports` follows
/// `extensions` (next-header numbers of 8-byte headers).
fn v6_chain(source: Ipv6Addr, extensions: &[u8], ports: (u16, u16)) -> Vec<u8> {
    let chain: Vec<(u8, Vec<u8>)> = extensions.iter().map(|&n| (n, vec![0u8; 8])).collect();
    let mut packet = frames::ipv6_packet(source, "2001:db8::1".parse().unwrap(), &chain, 40);
    let at = 40 + 8 * chain.len();
    packet[at..at + 2].copy_from_slice(&ports.0.to_be_bytes());
    packet[at + 2..at + 4].copy_from_slice(&ports.1.to_be_bytes());
    frames::ethernet(&[], ethertype::IPV6, &packet)
}

#[test]
fn ipv6_behind_a_chain_of_extension_headers_meets_its_port_rule() {
    let test = "ipv6_behind_a_chain_of_extension_headers_meets_its_port_rule";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let net = TestNet::new();
    let arrived = Arrived::on(&net);
    let mut xdpstat = start(
        &net,
        &scratch,
        "mode = \"enforce\"\n[[rule]]\nprefix = \"2001:db8:45::/48\"\nprotocol = \"udp\"\ndst_port = 53\naction = \"drop\"\n",
    );
    let (a, b): (Ipv6Addr, Ipv6Addr) = (
        "2001:db8:45::7".parse().unwrap(),
        "2001:db8:45::8".parse().unwrap(),
    );
    // Hop-by-hop, destination options, routing: the walk reaches UDP.
    let chain = [0u8, 60, 43];
    let to_53 = v6_chain(a, &chain, (4000, 53));
    let to_54 = v6_chain(a, &chain, (4000, 54));
    // Seven headers: past what the walk reads, so protocol `other`, which
    // no UDP rule matches.
    let too_long = v6_chain(b, &[0, 60, 60, 60, 60, 60, 43], (4000, 53));
    send(&net, &[(&to_53, 100), (&to_54, 100), (&too_long, 50)]);
    let (a, b) = (a.to_string(), b.to_string());
    let report = settled(&mut xdpstat, |r| {
        packets(r, &a) == 200 && packets(r, &b) == 50
    });
    let (first, _) = verdicts(&report, &a);
    assert_eq!(
        (of(&first, "dropped"), of(&first, "passed")),
        (100, 100),
        "{first:?}"
    );
    let (second, _) = verdicts(&report, &b);
    assert_eq!(
        (of(&second, "dropped"), of(&second, "passed")),
        (0, 50),
        "{second:?}"
    );
    assert_eq!(pair(&report["totals"]["protocols"]["other"]).0, 50);
    eventually("what passed arriving", || {
        arrived.of(&IpAddr::V6(a.parse().unwrap())) == 100
            && arrived.of(&IpAddr::V6(b.parse().unwrap())) == 50
    });
    common::stop(xdpstat);
}
