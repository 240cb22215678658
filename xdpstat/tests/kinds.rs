//! Traffic kinds on a real veth pair: known frames of every protocol,
//! fragments, SYNs and IPv6 extension chains, and real UDP datagrams the
//! sender's kernel fragments, counted by `xdpstat` and read back exactly
//! from its JSON report and its Prometheus exposition.

mod common;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use common::{TestNet, Xdpstat, free_port, pair, total_packets};
use serde_json::Value;
use xdpstat_lab::frames::{self, ethertype};

const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const C: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xc);
const DESTINATION: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const DESTINATION_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

/// Lays ports (and TCP's flags, with a 20-byte header) at `at`.
fn lay_ports(packet: &mut [u8], at: usize, source: u16, destination: u16, flags: u8) {
    packet[at..at + 2].copy_from_slice(&source.to_be_bytes());
    packet[at + 2..at + 4].copy_from_slice(&destination.to_be_bytes());
    if packet.len() >= at + 20 {
        packet[at + 12] = 0x50;
        packet[at + 13] = flags;
    }
}

/// An IPv4 frame from `source` carrying `protocol`, with `fragment` as its
/// flags-and-offset word.
fn v4(source: Ipv4Addr, protocol: u8, ports: (u16, u16), flags: u8, fragment: u16) -> Vec<u8> {
    let mut packet = frames::ipv4_packet(source, DESTINATION, &[], 40);
    packet[9] = protocol;
    packet[6..8].copy_from_slice(&fragment.to_be_bytes());
    lay_ports(&mut packet, 20, ports.0, ports.1, flags);
    frames::ethernet(&[], ethertype::IPV4, &packet)
}

/// The port row of a report, as (packets, bytes).
fn port(report: &Value, protocol: &str, side: &str, port: u16) -> Option<(u64, u64)> {
    report["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|row| row["protocol"] == protocol && row["side"] == side && row["port"] == port)
        .map(pair)
}

/// The Prometheus text at `url` (from inside the namespace that serves it).
fn scrape(url: &str) -> String {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build(),
    );
    let mut response = agent.get(url).call().expect("a scrape");
    response
        .body_mut()
        .read_to_string()
        .expect("the exposition")
}

#[test]
fn every_protocol_port_fragment_and_syn_is_counted_exactly() {
    let test = "every_protocol_port_fragment_and_syn_is_counted_exactly";
    if !common::privileged(test) {
        return;
    }
    let net = TestNet::new();
    net.watched.ip(&["link", "set", "lo", "up"]).unwrap();
    let listen = format!("127.0.0.1:{}", free_port(Some(&net.watched)));
    let mut xdpstat = Xdpstat::start(
        &net.watched,
        &[
            "--format",
            "json",
            "--interval",
            "0.2",
            "--metrics",
            &listen,
            "--metrics-top",
            "2",
            "xs0",
        ],
    );
    let syn = v4(A, 6, (40_000, 443), 0x02, 0);
    let ack = v4(A, 6, (40_000, 443), 0x10, 0);
    let syn_ack = v4(A, 6, (40_000, 22), 0x12, 0);
    let dns_answer = v4(B, 17, (53, 33_000), 0, 0);
    let ntp_answer = v4(B, 17, (123, 33_001), 0, 0);
    let icmp = v4(B, 1, (0x0800, 0), 0, 0);
    let gre = v4(B, 47, (0, 0), 0, 0);
    // A UDP datagram in two fragments: the first has the ports, the later
    // one (offset 3 x 8 bytes) has none.
    let first_fragment = v4(A, 17, (53, 9), 0, 0x2000);
    let later_fragment = v4(A, 17, (1, 1), 0, 3);
    // IPv6: UDP to 53 behind hop-by-hop, routing and destination options;
    // ICMPv6; a later fragment of a TCP segment.
    let chain = [(0u8, vec![0u8; 8]), (43, vec![0u8; 16]), (60, vec![0u8; 8])];
    let mut v6_dns = frames::ipv6_packet(C, DESTINATION_V6, &chain, 40);
    lay_ports(&mut v6_dns, 40 + 32, 5353, 53, 0);
    let v6_dns = frames::ethernet(&[], ethertype::IPV6, &v6_dns);
    let mut icmpv6 = frames::ipv6_packet(C, DESTINATION_V6, &[], 40);
    icmpv6[6] = 58;
    let icmpv6 = frames::ethernet(&[], ethertype::IPV6, &icmpv6);
    let mut fragment_header = vec![0u8; 8];
    fragment_header[2..4].copy_from_slice(&(100u16 << 3).to_be_bytes());
    let mut v6_later = frames::ipv6_packet(C, DESTINATION_V6, &[(44, fragment_header)], 40);
    v6_later[40] = 6;
    let v6_later = frames::ethernet(&[], ethertype::IPV6, &v6_later);

    let sent: [(&Vec<u8>, usize); 12] = [
        (&syn, 7),
        (&ack, 5),
        (&syn_ack, 3),
        (&dns_answer, 11),
        (&ntp_answer, 4),
        (&icmp, 2),
        (&gre, 1),
        (&first_fragment, 6),
        (&later_fragment, 6),
        (&v6_dns, 8),
        (&icmpv6, 3),
        (&v6_later, 2),
    ];
    for (frame, count) in sent {
        net.send(frame, count);
    }
    let frames: u64 = sent.iter().map(|(_, n)| *n as u64).sum();
    let report = xdpstat.report_where(|r| total_packets(r) >= frames);
    let len = |frame: &Vec<u8>| frame.len() as u64;
    let of = |list: &[(&Vec<u8>, u64)]| -> (u64, u64) {
        list.iter()
            .fold((0, 0), |(p, b), (frame, n)| (p + n, b + n * len(frame)))
    };
    let totals = &report["totals"];
    let protocols = &totals["protocols"];
    // The later IPv6 fragment is TCP's, with no ports.
    let tcp = of(&[(&syn, 7), (&ack, 5), (&syn_ack, 3), (&v6_later, 2)]);
    assert_eq!(pair(&protocols["tcp"]), tcp, "{report}");
    assert_eq!(
        pair(&protocols["udp"]),
        of(&[
            (&dns_answer, 11),
            (&ntp_answer, 4),
            (&first_fragment, 6),
            (&later_fragment, 6),
            (&v6_dns, 8)
        ])
    );
    assert_eq!(pair(&protocols["icmp"]), of(&[(&icmp, 2)]));
    assert_eq!(pair(&protocols["icmpv6"]), of(&[(&icmpv6, 3)]));
    assert_eq!(pair(&protocols["other"]), of(&[(&gre, 1)]));
    assert_eq!(
        pair(&totals["fragments"]),
        of(&[(&first_fragment, 6), (&later_fragment, 6), (&v6_later, 2)])
    );
    assert_eq!(pair(&totals["tcp_syn"]), of(&[(&syn, 7)]));
    // Each source's packets by protocol (ICMPv6 is `icmp`; the later
    // fragments count under the protocol they carry).
    let by_protocol = |address: String| {
        let sources = report["sources"].as_array().expect("sources");
        let row = sources
            .iter()
            .find(|s| s["address"] == address.as_str())
            .unwrap_or_else(|| panic!("{address} listed: {report}"));
        let p = &row["protocols"];
        ["tcp", "udp", "icmp", "other"].map(|name| p[name].as_u64().expect("a count"))
    };
    assert_eq!(by_protocol(A.to_string()), [7 + 5 + 3, 6 + 6, 0, 0]);
    assert_eq!(by_protocol(B.to_string()), [0, 11 + 4, 2, 1]);
    assert_eq!(by_protocol(C.to_string()), [2, 8, 3, 0]);
    // Ports: TCP destinations, UDP destinations and sources; a later
    // fragment has none.
    assert_eq!(
        port(&report, "tcp", "dst", 443),
        Some(of(&[(&syn, 7), (&ack, 5)]))
    );
    assert_eq!(port(&report, "tcp", "dst", 22), Some(of(&[(&syn_ack, 3)])));
    assert_eq!(
        port(&report, "udp", "src", 53),
        Some(of(&[(&dns_answer, 11), (&first_fragment, 6)]))
    );
    assert_eq!(port(&report, "udp", "dst", 53), Some(of(&[(&v6_dns, 8)])));
    assert_eq!(
        port(&report, "udp", "src", 123),
        Some(of(&[(&ntp_answer, 4)]))
    );
    assert_eq!(
        port(&report, "udp", "dst", 9),
        Some(of(&[(&first_fragment, 6)]))
    );
    assert_eq!(
        port(&report, "udp", "src", 1),
        None,
        "a later fragment has no ports"
    );
    let rows = report["ports"].as_array().unwrap();
    assert_eq!(rows.len(), 9, "{report}");
    let packets: Vec<u64> = rows
        .iter()
        .map(|r| r["packets"].as_u64().unwrap())
        .collect();
    assert!(
        packets.windows(2).all(|w| w[0] >= w[1]),
        "by packets: {packets:?}"
    );

    // Prometheus: protocols exact; each side's port series (two shown and
    // `other`) sum to its protocol's packets.
    let exposition = net
        .watched
        .run(|| scrape(&format!("http://{listen}/metrics")))
        .unwrap();
    let samples: HashMap<String, f64> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(series, value)| (series.to_owned(), value.parse().unwrap()))
        .collect();
    let sum = |metric: &str, needle: &str| -> f64 {
        samples
            .iter()
            .filter(|(s, _)| s.starts_with(metric) && s.contains(needle))
            .map(|(_, v)| *v)
            .sum()
    };
    let udp = of(&[
        (&dns_answer, 11),
        (&ntp_answer, 4),
        (&first_fragment, 6),
        (&later_fragment, 6),
        (&v6_dns, 8),
    ]);
    assert_eq!(
        sum("xdpstat_protocol_packets_total{", "protocol=\"udp\""),
        udp.0 as f64
    );
    assert_eq!(
        sum("xdpstat_protocol_bytes_total{", "protocol=\"tcp\""),
        tcp.1 as f64
    );
    assert_eq!(
        sum("xdpstat_port_packets_total{", "side=\"src\""),
        udp.0 as f64,
        "{exposition}"
    );
    assert_eq!(
        sum("xdpstat_port_packets_total{", "protocol=\"tcp\""),
        tcp.0 as f64,
        "the fragments' packets are in port=\"other\""
    );
    assert_eq!(
        samples.get(
            "xdpstat_port_packets_total{interface=\"xs0\",protocol=\"udp\",side=\"src\",port=\"53\"}"
        ),
        Some(&17.0),
        "{exposition}"
    );
    xdpstat.signal(nix::sys::signal::Signal::SIGINT);
    let (status, _, stderr) = xdpstat.finish();
    assert!(status.success(), "{stderr:?}");
}

#[test]
fn real_datagrams_over_the_mtu_count_as_fragments_and_only_the_first_has_ports() {
    let test = "real_datagrams_over_the_mtu_count_as_fragments_and_only_the_first_has_ports";
    if !common::privileged(test) {
        return;
    }
    let net = TestNet::new();
    net.addresses("198.18.40");
    let mut xdpstat = Xdpstat::start(
        &net.watched,
        &["--format", "json", "--interval", "0.2", "xs0"],
    );
    // 20 datagrams of 4,000 bytes: over MTU 1500, each leaves the sender's
    // kernel as three fragments (1,480 + 1,480 + 1,048 bytes of payload).
    const DATAGRAMS: u64 = 20;
    common::send_datagrams(&net, "198.18.40.2:5300", "198.18.40.1:9", DATAGRAMS, 4000);
    let report = xdpstat.report_where(|r| pair(&r["totals"]["fragments"]).0 >= 3 * DATAGRAMS);
    let totals = &report["totals"];
    // Three frames of 14 + 20 + 1480, 14 + 20 + 1480 and 14 + 20 + 1048.
    let datagram_bytes = 3 * (14 + 20) + 1480 + 1480 + 1048;
    assert_eq!(
        pair(&totals["fragments"]),
        (3 * DATAGRAMS, DATAGRAMS * datagram_bytes),
        "{report}"
    );
    assert_eq!(
        pair(&totals["protocols"]["udp"]),
        (3 * DATAGRAMS, DATAGRAMS * datagram_bytes)
    );
    // Only first fragments carry the UDP header, 1,514 bytes each.
    assert_eq!(
        port(&report, "udp", "dst", 9),
        Some((DATAGRAMS, DATAGRAMS * 1514))
    );
    assert_eq!(
        port(&report, "udp", "src", 5300),
        Some((DATAGRAMS, DATAGRAMS * 1514))
    );
    xdpstat.signal(nix::sys::signal::Signal::SIGINT);
    let (status, _, stderr) = xdpstat.finish();
    assert!(status.success(), "{stderr:?}");
}
