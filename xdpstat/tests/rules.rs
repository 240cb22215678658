//! Rules on veth, checked against what arrived: a packet socket on the
//! watched end counts, per source, the frames that got past XDP, and they
//! must be exactly xdpstat's `passed`; per source, every frame sent is
//! under exactly one verdict. Also: a rate limit against its bound, a
//! reload under traffic (and a failed one), bad files refused before
//! anything is attached, and `rules check` without privilege.

mod common;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use common::{
    Arrived, Scratch, TestNet, Xdpstat, eventually, eventually_or, ipv4_frame, ipv6_frame,
    one_line_failure, pair, privileged, run_to_end, start_with_rules,
};
use nix::sys::signal::Signal;
use serde_json::Value;
use xdpstat_lab::frames;

const VERDICTS: [&str; 5] = ["passed", "dropped", "limited", "would_drop", "would_limit"];

fn frame(source: IpAddr) -> Vec<u8> {
    match source {
        IpAddr::V4(a) => ipv4_frame(a, &[], 40),
        IpAddr::V6(a) => ipv6_frame(a, &[], 40),
    }
}

/// Sends `count` frames from each source, interleaved, paced so the veth
/// ring never overflows.
fn send_each(net: &TestNet, sources: &[(IpAddr, u64)]) -> u64 {
    let mut sent = 0;
    let most = sources.iter().map(|(_, n)| *n).max().unwrap_or(0);
    for round in 0..most {
        for (source, count) in sources {
            if round < *count {
                net.send(&frame(*source), 1);
                sent += 1;
                if sent % 64 == 0 {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
        }
    }
    sent
}

/// Packets under each verdict `value` has (`unattributed_verdicts` has
/// no `passed`).
fn verdicts_of(value: &Value) -> HashMap<&'static str, u64> {
    VERDICTS
        .iter()
        .filter(|&&name| value.get(name).is_some())
        .map(|&name| (name, pair(&value[name]).0))
        .collect()
}

/// The source's row in a report.
fn row<'a>(report: &'a Value, source: &IpAddr) -> &'a Value {
    report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == source.to_string())
        .unwrap_or_else(|| panic!("{source} not in {report}"))
}

/// Waits until xdpstat counted `sent` IP frames and the listener got as
/// many as xdpstat let through; then checks, per source, that what
/// arrived is `passed` plus what a dry run only would have dropped or
/// limited, and that the verdicts add up to what was sent.
fn settle_and_check(xdpstat: &mut Xdpstat, arrived: &Arrived, sent: &[(IpAddr, u64)]) -> Value {
    let total: u64 = sent.iter().map(|(_, n)| n).sum();
    xdpstat.report_where(|r| pair(&r["totals"]["ipv4"]).0 + pair(&r["totals"]["ipv6"]).0 >= total);
    // The read after: the one that saw every frame counted may have read
    // the rows (each source's verdicts) before the last frames' verdicts
    // went into them, and the CPUs' runs (their packets) after, which
    // shows those frames as passed for that one read. Every frame is in
    // by now, so the next read has them whole.
    let report = xdpstat.report_where(|_| true);
    let through = |verdicts: &HashMap<&str, u64>| {
        verdicts["passed"] + verdicts["would_drop"] + verdicts["would_limit"]
    };
    let let_through: u64 = sent
        .iter()
        .map(|(source, _)| through(&verdicts_of(&row(&report, source)["verdicts"])))
        .sum();
    let per_source = || {
        sent.iter()
            .map(|(source, _)| {
                let verdicts = verdicts_of(&row(&report, source)["verdicts"]);
                format!("{source}: {verdicts:?}, arrived {}", arrived.of(source))
            })
            .collect::<Vec<_>>()
    };
    eventually_or(
        "the frames let through arriving",
        || arrived.total() >= let_through,
        || {
            format!(
                "{} of {let_through} arrived; {:?}",
                arrived.total(),
                per_source()
            )
        },
    );
    assert_eq!(
        arrived.total(),
        let_through,
        "arrived past XDP vs let through"
    );
    for (source, count) in sent {
        let verdicts = verdicts_of(&row(&report, source)["verdicts"]);
        assert_eq!(
            verdicts.values().sum::<u64>(),
            *count,
            "{source}: every frame under one verdict: {verdicts:?}"
        );
        assert_eq!(
            arrived.of(source),
            through(&verdicts),
            "{source}: arrived vs let through: {verdicts:?}"
        );
    }
    let totals = verdicts_of(&report["totals"]["verdicts"]);
    let others = pair(&report["totals"]["non_ip"]).0 + pair(&report["totals"]["malformed"]).0;
    assert_eq!(totals.values().sum::<u64>(), total + others, "{totals:?}");
    report
}

fn v4(c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, c, d))
}

fn v6(group: u16, last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, group, 0, 0, 0, 0, last))
}

const RULES: &str = r#"
[[rule]]
prefix = "198.18.8.0/24"
action = "drop"

[[rule]]
prefix = "198.18.8.7/32"
action = "pass"

[[rule]]
prefix = "2001:db8:bad::/48"
action = "drop"
"#;

fn hits(report: &Value, prefix: &str) -> u64 {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["prefix"] == prefix)
        .map(|r| r["packets"].as_u64().unwrap())
        .unwrap_or_else(|| panic!("no rule {prefix} in {}", report["rules"]))
}

/// The traffic of the drop and pass tests: dropped, excepted, unmatched.
fn mixed() -> Vec<(IpAddr, u64)> {
    vec![
        (v4(8, 1), 300),
        (v4(8, 2), 200),
        (v4(8, 7), 250),
        (v4(9, 1), 150),
        (v6(0xbad, 1), 220),
        (v6(0xbad, 2), 80),
        (v6(0x600d, 1), 120),
    ]
}

fn run_mixed(test: &str, mode: &str) -> Value {
    let scratch = Scratch::new(test);
    let file = scratch.write("rules.toml", format!("mode = \"{mode}\"\n{RULES}"));
    let net = TestNet::new();
    let arrived = Arrived::on(&net);
    let mut xdpstat = start_with_rules(&net, &file, "0.5", &[]);
    let traffic = mixed();
    send_each(&net, &traffic);
    // Non-IP frames always pass, whatever the rules.
    let arp = frames::arp_request(Ipv4Addr::new(198, 18, 8, 1), Ipv4Addr::new(198, 18, 0, 1));
    net.send(&arp, 5);
    let report = settle_and_check(&mut xdpstat, &arrived, &traffic);
    assert_eq!(pair(&report["totals"]["non_ip"]).0, 5);
    assert_eq!(hits(&report, "198.18.8.0/24"), 500);
    assert_eq!(hits(&report, "198.18.8.7/32"), 250);
    assert_eq!(hits(&report, "2001:db8:bad::/48"), 300);
    report
}

#[test]
fn enforced_drop_rules_drop_exactly_their_sources_and_an_exception_passes() {
    let test = "enforced_drop_rules_drop_exactly_their_sources_and_an_exception_passes";
    if !privileged(test) {
        return;
    }
    let report = run_mixed(test, "enforce");
    let totals = verdicts_of(&report["totals"]["verdicts"]);
    assert_eq!(totals["dropped"], 300 + 200 + 220 + 80);
    assert_eq!(totals["would_drop"], 0);
    assert_eq!(totals["passed"], 250 + 150 + 120 + 5);
    assert_eq!(
        verdicts_of(&row(&report, &v4(8, 7))["verdicts"])["passed"],
        250
    );
}

#[test]
fn an_allow_passes_what_a_longer_drop_and_a_limit_would_stop() {
    let test = "an_allow_passes_what_a_longer_drop_and_a_limit_would_stop";
    if !privileged(test) {
        return;
    }
    // The /16 is allowed; inside it a /24 is dropped and every source is
    // limited to 10 packets a second (burst 10): none of it applies to the
    // /16. Outside it, the drop and the limit do. The IPv6 /48 is allowed
    // under a longer drop too.
    let rules = r#"mode = "enforce"
[[rule]]
prefix = "198.18.0.0/16"
action = "allow"

[[rule]]
prefix = "198.18.8.0/24"
action = "drop"

[[rule]]
prefix = "198.19.8.0/24"
action = "drop"

[[rule]]
prefix = "198.18.0.0/15"
action = "limit"
pps = 10

[[rule]]
prefix = "2001:db8:a11::/48"
action = "allow"

[[rule]]
prefix = "2001:db8:a11:7::/64"
action = "drop"
"#;
    let scratch = Scratch::new(test);
    let file = scratch.write("rules.toml", rules);
    let net = TestNet::new();
    let arrived = Arrived::on(&net);
    let mut xdpstat = start_with_rules(&net, &file, "0.5", &[]);
    let other = |c: u8, d: u8| IpAddr::V4(Ipv4Addr::new(198, 19, c, d));
    let allowed_v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xa11, 7, 0, 0, 0, 1));
    let traffic = vec![
        (v4(8, 1), 300),
        (v4(9, 1), 200),
        (other(8, 1), 100),
        (other(9, 1), 200),
        (allowed_v6, 150),
    ];
    send_each(&net, &traffic);
    let report = settle_and_check(&mut xdpstat, &arrived, &traffic);
    for source in [v4(8, 1), v4(9, 1), allowed_v6] {
        let verdicts = verdicts_of(&row(&report, &source)["verdicts"]);
        let sent = traffic.iter().find(|(s, _)| *s == source).unwrap().1;
        assert_eq!(verdicts["passed"], sent, "{source} allowed: {verdicts:?}");
    }
    assert_eq!(
        verdicts_of(&row(&report, &other(8, 1))["verdicts"])["dropped"],
        100
    );
    let limited = verdicts_of(&row(&report, &other(9, 1))["verdicts"]);
    assert!(
        limited["limited"] > 0,
        "outside the allow, the limit acts: {limited:?}"
    );
    assert_eq!(
        hits(&report, "198.18.0.0/16"),
        500,
        "every allowed packet is the allow's"
    );
    assert_eq!(hits(&report, "2001:db8:a11::/48"), 150);
    assert_eq!(hits(&report, "198.18.8.0/24"), 0);
    let allow = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["prefix"] == "198.18.0.0/16")
        .unwrap();
    assert_eq!(allow["action"], "allow");
}

#[test]
fn a_dry_run_passes_everything_and_counts_what_it_would_drop() {
    let test = "a_dry_run_passes_everything_and_counts_what_it_would_drop";
    if !privileged(test) {
        return;
    }
    let report = run_mixed(test, "dry-run");
    let totals = verdicts_of(&report["totals"]["verdicts"]);
    assert_eq!(totals["dropped"], 0);
    assert_eq!(totals["would_drop"], 300 + 200 + 220 + 80);
    assert_eq!(
        verdicts_of(&row(&report, &v6(0xbad, 2))["verdicts"])["would_drop"],
        80
    );
}

#[test]
fn a_limit_in_bits_per_second_passes_a_second_of_bytes_and_its_rate_and_no_more() {
    let test = "a_limit_in_bits_per_second_passes_a_second_of_bytes_and_its_rate_and_no_more";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    // 80,000 bits a second: 10,000 bytes a second, and a second's worth
    // at once.
    let file = scratch.write("rules.toml", "mode = \"enforce\"\n[[rule]]\nprefix = \"198.18.5.0/24\"\naction = \"limit\"\nbps = 80_000\n");
    let net = TestNet::new();
    let arrived = Arrived::on(&net);
    let mut xdpstat = start_with_rules(&net, &file, "0.2", &[]);
    let limited = v4(5, 5);
    let free = v4(6, 6);
    let len = frame(limited).len() as u64;
    let began = Instant::now();
    let traffic = [(limited, 3_000), (free, 300)];
    send_each(&net, &traffic);
    let report = settle_and_check(&mut xdpstat, &arrived, &traffic);
    let span = began.elapsed().as_secs_f64();
    let verdicts = verdicts_of(&row(&report, &limited)["verdicts"]);
    // The full bucket passes 10,000 bytes' worth at once; the rate adds
    // 10,000 bytes a second of the span.
    let (burst, bound) = (
        10_000 / len,
        (10_000 + (10_000.0 * span).ceil() as u64) / len + 1,
    );
    assert!(
        verdicts["passed"] >= burst && verdicts["passed"] <= bound,
        "passed {} of 3,000 {len}-byte frames in {span:.3} s: between {burst} and {bound}",
        verdicts["passed"]
    );
    assert_eq!(verdicts["limited"], 3_000 - verdicts["passed"]);
    assert_eq!(verdicts_of(&row(&report, &free)["verdicts"])["passed"], 300);
}

#[test]
fn a_limit_passes_its_burst_and_its_rate_and_no_more() {
    let test = "a_limit_passes_its_burst_and_its_rate_and_no_more";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let file = scratch.write("rules.toml", "mode = \"enforce\"\n[[rule]]\nprefix = \"198.18.5.0/24\"\naction = \"limit\"\npps = 1000\nburst = 1000\n");
    let net = TestNet::new();
    let arrived = Arrived::on(&net);
    let mut xdpstat = start_with_rules(&net, &file, "0.2", &[]);
    let limited = v4(5, 5);
    let free = v4(6, 6);
    let began = Instant::now();
    // 5,000 frames within a second, and 500 from a source no rule matches.
    let traffic = [(limited, 5_000), (free, 500)];
    send_each(&net, &traffic);
    let report = settle_and_check(&mut xdpstat, &arrived, &traffic);
    // Every frame was judged between `began` and this report.
    let span = began.elapsed().as_secs_f64();
    let verdicts = verdicts_of(&row(&report, &limited)["verdicts"]);
    let bound = 1_000 + (1_000.0 * span).ceil() as u64;
    assert!(
        verdicts["passed"] >= 1_000 && verdicts["passed"] <= bound,
        "passed {} of 5,000 in {span:.3} s, bound {bound}",
        verdicts["passed"]
    );
    assert_eq!(verdicts["limited"], 5_000 - verdicts["passed"]);
    assert_eq!(verdicts_of(&row(&report, &free)["verdicts"])["passed"], 500);
}

#[test]
fn sighup_swaps_rules_under_traffic_and_a_bad_file_keeps_them() {
    let test = "sighup_swaps_rules_under_traffic_and_a_bad_file_keeps_them";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let rules = |mode: &str| {
        format!("mode = \"{mode}\"\n[[rule]]\nprefix = \"198.18.8.0/24\"\naction = \"drop\"\n")
    };
    let file = scratch.write("rules.toml", rules("dry-run"));
    let net = TestNet::new();
    let arrived = Arrived::on(&net);
    let mut xdpstat = start_with_rules(&net, &file, "0.2", &[]);
    let ruled = v4(8, 8);
    let other = v4(9, 9);
    // Traffic in three phases; reloads happen between and during them.
    let phase = [(ruled, 2_000), (other, 500)];
    send_each(&net, &phase);
    scratch.write("rules.toml", rules("enforce"));
    xdpstat.signal(Signal::SIGHUP);
    // Sent while the reload happens: each frame under one verdict or the other.
    send_each(&net, &phase);
    xdpstat.stderr_line(|line| line.contains("rules reloaded from"));
    std::fs::write(
        &file,
        "mode = \"enforce\"\n[[rule]]\nprefix = \"198.18.8.1/24\"\naction = \"drop\"\n",
    )
    .unwrap();
    xdpstat.signal(Signal::SIGHUP);
    let refused = xdpstat.stderr_line(|line| line.contains("reload refused"));
    assert!(
        refused.contains("rules.toml:3: 198.18.8.1/24 has host bits set"),
        "{refused}"
    );
    send_each(&net, &phase);
    let sent = [(ruled, 6_000), (other, 1_500)];
    let report = settle_and_check(&mut xdpstat, &arrived, &sent);
    let verdicts = verdicts_of(&row(&report, &ruled)["verdicts"]);
    // The first phase only would have been dropped, the last one was.
    assert!(verdicts["would_drop"] >= 2_000, "{verdicts:?}");
    assert!(verdicts["dropped"] >= 2_000, "{verdicts:?}");
    assert_eq!(verdicts["passed"], 0);
    assert_eq!(verdicts["would_drop"] + verdicts["dropped"], 6_000);
    // The rule is the same before and after: its hits carried over.
    assert_eq!(hits(&report, "198.18.8.0/24"), 6_000);
}

#[test]
fn bad_rules_files_are_refused_before_anything_is_attached() {
    let test = "bad_rules_files_are_refused_before_anything_is_attached";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let net = TestNet::new();
    for (text, expected) in [
        (
            "[[rule]]\nprefix = \"198.51.100.1/24\"\naction = \"drop\"\n",
            ":2: 198.51.100.1/24 has host bits set",
        ),
        (
            "[[rule]]\nprefix = \"198.51.100.0/24\"\naction = \"limit\"\npps = 0\n",
            ":4: pps = 0",
        ),
        (
            "mode = \"enforce\"\n[[rule]]\nprefix = \"::/0\"\naction = \"drop\"\n",
            ":3: ::/0 matches every IPv6 source",
        ),
        ("<html>", ":1: "),
    ] {
        let file = scratch.write("bad.toml", text);
        let line = one_line_failure(
            Some(&net.watched),
            &[],
            &["xs0", "--rules", file.to_str().unwrap(), "--duration", "1"],
        );
        assert!(line.contains(expected), "{line}");
        assert!(!net.xdp_attached(), "nothing attached after {line}");
    }
}

#[test]
fn rules_check_needs_no_privilege_and_says_what_each_rule_does() {
    let scratch = Scratch::new("rules_check_needs_no_privilege_and_says_what_each_rule_does");
    let file = scratch.write("rules.toml", format!("mode = \"enforce\"\n{RULES}"));
    let path = file.to_str().unwrap();
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ];
    let as_nobody = nix::unistd::geteuid().is_root() && common::have("rules_check", "setpriv");
    let prefix: &[&str] = if as_nobody { &nobody } else { &[] };
    // The file must be readable by whoever runs the check.
    let _ = std::fs::set_permissions(
        scratch.0.as_path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    );
    let _ = std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let (status, stdout, stderr) = run_to_end(None, prefix, &["rules", "check", path]);
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains("3 rules, mode enforce (3 enforced, 0 dry run)"),
        "{stdout}"
    );
    assert!(stdout.contains("198.18.8.7/32"), "{stdout}");
    assert!(stdout.contains("drops every packet: dropped"), "{stdout}");
    scratch.write(
        "rules.toml",
        "[[rule]]\nprefix = \"198.18.8.0/24\"\naction = \"drop\"\n[[rule]]\nprefix = \"198.18.8.0/24\"\naction = \"pass\"\n",
    );
    let line = one_line_failure(None, prefix, &["rules", "check", path]);
    assert!(
        line.contains("rules.toml:5: 198.18.8.0/24 appears twice"),
        "{line}"
    );
    // The protocol and port rules of an attack, and what check says of
    // each.
    scratch.write(
        "rules.toml",
        "mode = \"enforce\"\n[[rule]]\nprotocol = \"udp\"\nsrc_port = [53, 123, 389, 1900, 11211]\naction = \"drop\"\n\n[[rule]]\nprotocol = \"tcp\"\ndst_port = 443\ntcp_flags = \"syn\"\naction = \"limit\"\npps = 50\n\n[[rule]]\nprefix = \"203.0.113.0/24\"\naction = \"drop\"\n\n[[rule]]\nprefix = \"203.0.113.0/24\"\nprotocol = \"tcp\"\ndst_port = 443\naction = \"pass\"\n",
    );
    let (status, stdout, stderr) = run_to_end(None, prefix, &["rules", "check", path]);
    assert!(status.success(), "{stderr}");
    for expected in [
        "line 2    any udp src port 53,123,389,1900,11211 drop",
        "line 7    any tcp dst port 443 syn limit 50 pps, burst 50",
        "drops every matching packet: dropped",
        "line 14   203.0.113.0/24           drop",
        "line 18   203.0.113.0/24 tcp dst port 443 pass",
        "the longest prefix that matches it whole",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in\n{stdout}");
    }
    scratch.write(
        "rules.toml",
        "[[rule]]\nprotocol = \"udp\"\ndst_port = \"2000-1000\"\naction = \"drop\"\n",
    );
    let line = one_line_failure(None, prefix, &["rules", "check", path]);
    assert!(
        line.contains("rules.toml:3: dst_port: range \"2000-1000\" is reversed"),
        "{line}"
    );
}

#[test]
fn at_tc_ingress_a_drop_rule_keeps_datagrams_from_their_socket() {
    let test = "at_tc_ingress_a_drop_rule_keeps_datagrams_from_their_socket";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let rules = |mode: &str| {
        format!("mode = \"{mode}\"\n[[rule]]\nprefix = \"198.18.98.2/32\"\naction = \"drop\"\n")
    };
    let file = scratch.write("rules.toml", rules("enforce"));
    let net = TestNet::new();
    net.addresses("198.18.98");
    let receiver = net
        .watched
        .run(|| std::net::UdpSocket::bind("198.18.98.1:5000"))
        .unwrap()
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let sender = net
        .sender
        .run(|| std::net::UdpSocket::bind("198.18.98.2:0"))
        .unwrap()
        .unwrap();
    let mut xdpstat = start_with_rules(&net, &file, "0.2", &["--hook", "tcx"]);
    let send = |count: usize| {
        for n in 0..count {
            sender.send_to(&[7u8; 32], "198.18.98.1:5000").unwrap();
            if n % 32 == 31 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    };
    let received = |wanted: usize| {
        let mut buffer = [0u8; 64];
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(2);
        while got < wanted.max(1) && Instant::now() < deadline {
            if receiver.recv(&mut buffer).is_ok() {
                got += 1;
            }
        }
        got
    };
    let client: IpAddr = Ipv4Addr::new(198, 18, 98, 2).into();
    let dropped_of = |report: &Value| pair(&row(report, &client)["verdicts"]["dropped"]).0;
    send(200);
    let report = xdpstat.report_where(|r| {
        r["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["address"] == "198.18.98.2" && pair(&s["verdicts"]["dropped"]).0 >= 200)
    });
    assert_eq!(dropped_of(&report), 200);
    assert_eq!(received(0), 0, "a dropped datagram reached its socket");
    scratch.write("rules.toml", rules("dry-run"));
    xdpstat.signal(Signal::SIGHUP);
    xdpstat.stderr_line(|line| line.contains("rules reloaded from"));
    send(100);
    assert_eq!(received(100), 100, "a dry run lets every datagram through");
    let report =
        xdpstat.report_where(|r| {
            r["sources"].as_array().unwrap().iter().any(|s| {
                s["address"] == "198.18.98.2" && pair(&s["verdicts"]["would_drop"]).0 >= 100
            })
        });
    assert_eq!(dropped_of(&report), 200);
    assert_eq!(
        pair(&row(&report, &client)["verdicts"]["would_drop"]).0,
        100
    );
}

/// More sources than the tables hold: every packet still gets its verdict
/// and is counted under it; what no entry holds is in
/// `unattributed_verdicts`, and a limit keeps entry-less sources to one
/// shared bucket.
#[test]
fn sources_beyond_the_tables_are_judged_and_counted_all_the_same() {
    let test = "sources_beyond_the_tables_are_judged_and_counted_all_the_same";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let file = scratch.write(
        "rules.toml",
        "mode = \"enforce\"\n[[rule]]\nprefix = \"198.18.60.0/24\"\naction = \"drop\"\n\
         [[rule]]\nprefix = \"198.18.61.0/24\"\naction = \"limit\"\npps = 100\nburst = 50\n",
    );
    let net = TestNet::new();
    let arrived = Arrived::on(&net);
    // 8 sources planned (32 entries); no housekeeping while it is sent.
    let mut xdpstat = start_with_rules(&net, &file, "3", &["--max-sources", "8"]);
    let dropped: Vec<(IpAddr, u64)> = (1..=200).map(|n| (v4(60, n), 5)).collect();
    let limited: Vec<(IpAddr, u64)> = (1..=200).map(|n| (v4(61, n), 5)).collect();
    let began = Instant::now();
    send_each(&net, &dropped);
    send_each(&net, &limited);
    let report = xdpstat.report_where(|r| pair(&r["totals"]["ipv4"]).0 >= 2_000);
    let span = began.elapsed().as_secs_f64();
    let totals = verdicts_of(&report["totals"]["verdicts"]);
    assert_eq!(totals["dropped"], 1_000);
    assert_eq!(totals["passed"] + totals["limited"], 1_000);
    let unattributed = verdicts_of(&report["unattributed_verdicts"]);
    let held = |name: &str| -> u64 {
        report["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| pair(&s["verdicts"][name]).0)
            .sum()
    };
    assert!(unattributed["dropped"] > 0, "the tables were full");
    assert_eq!(held("dropped") + unattributed["dropped"], 1_000);
    assert_eq!(held("limited") + unattributed["limited"], totals["limited"]);
    // The held limited sources pass their 5 each (burst 50); the rest
    // share one bucket: at most its burst plus its rate over the span.
    let shared = pair(&report["limit_shared_bucket"]).0;
    assert!(shared > 0, "entry-less sources used the shared bucket");
    let shared_passed = shared - unattributed["limited"];
    let bound = 50 + (100.0 * span).ceil() as u64;
    assert!(
        shared_passed <= bound,
        "{shared_passed} passed the shared bucket in {span:.3} s, bound {bound}"
    );
    eventually("the passed frames arriving", || {
        arrived.total() >= totals["passed"]
    });
    assert_eq!(arrived.total(), totals["passed"]);
    assert!(dropped.iter().all(|(source, _)| arrived.of(source) == 0));
}

#[test]
fn the_demo_takes_rules_and_every_frame_it_sends_gets_a_verdict() {
    let test = "the_demo_takes_rules_and_every_frame_it_sends_gets_a_verdict";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    // Drop the demo's IPv4 cast but one sender; its IPv6 cast only would be.
    let file = scratch.write(
        "rules.toml",
        "mode = \"enforce\"\n[[rule]]\nprefix = \"198.18.0.0/15\"\naction = \"drop\"\n\
         [[rule]]\nprefix = \"198.18.0.10/32\"\naction = \"pass\"\n\
         [[rule]]\nprefix = \"2001:db8::/32\"\naction = \"drop\"\nmode = \"dry-run\"\n",
    );
    let (status, stdout, stderr) = run_to_end(
        None,
        &[],
        &[
            "demo",
            "--duration",
            "1.5",
            "--format",
            "json",
            "--rules",
            file.to_str().unwrap(),
        ],
    );
    assert!(status.success(), "{stderr}");
    let sent = common::demo_sent(&stderr);
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let totals = verdicts_of(&last["totals"]["verdicts"]);
    assert_eq!(totals.values().sum::<u64>(), sent, "{totals:?}");
    let ipv4 = pair(&last["totals"]["ipv4"]).0;
    let ipv6 = pair(&last["totals"]["ipv6"]).0;
    let excepted = pair(&row(&last, &v4(0, 10))["verdicts"]["passed"]).0;
    assert!(excepted > 0);
    assert_eq!(totals["dropped"], ipv4 - excepted);
    assert_eq!(totals["would_drop"], ipv6);
}

#[test]
fn a_netset_of_a_hundred_thousand_prefixes_drops_exactly_its_sources() {
    let test = "a_netset_of_a_hundred_thousand_prefixes_drops_exactly_its_sources";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    // 100,000 lines: the addresses from 198.18.0.0 to 198.19.134.159, in
    // FireHOL's netset form with comments; and an ipset save with a /24
    // and an IPv6 /48.
    let mut netset = String::from("#\n# a blocklist of 100,000 addresses\n#\n");
    for n in 0..100_000u32 {
        netset.push_str(&format!("{}\n", Ipv4Addr::from(0xc612_0000 + n)));
    }
    scratch.write("drop.netset", &netset);
    scratch.write(
        "more.ipset",
        "create more hash:net family inet6\nadd more 2001:db8:bad::/48\ncreate more4 hash:net\nadd more4 198.19.240.0/24\n",
    );
    let file = scratch.write(
        "rules.toml",
        "mode = \"enforce\"\n\n[[list]]\nfile = \"drop.netset\"\naction = \"drop\"\n\n[[list]]\nfile = \"more.ipset\"\naction = \"limit\"\npps = 1\nburst = 5\n\n[[rule]]\nprefix = \"198.19.200.0/24\"\naction = \"drop\"\n",
    );
    let (status, stdout, stderr) =
        run_to_end(None, &[], &["rules", "check", file.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains("list drop.netset (100000 prefixes: 100000 IPv4, 0 IPv6) drop"),
        "{stdout}"
    );
    let net = TestNet::new();
    let arrived = Arrived::on(&net);
    let mut xdpstat = start_with_rules(&net, &file, "0.5", &[]);
    let at = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let traffic = vec![
        (at(198, 18, 3, 2), 40),
        (at(198, 18, 150, 100), 20),
        (at(198, 19, 134, 159), 10),
        (at(198, 19, 134, 160), 25),
        (at(198, 19, 200, 1), 12),
        (at(198, 19, 240, 1), 30),
        (v6(0xbad, 1), 20),
        (v6(0x600d, 1), 10),
    ];
    send_each(&net, &traffic);
    let report = settle_and_check(&mut xdpstat, &arrived, &traffic);
    let verdict =
        |source: IpAddr, name: &str| verdicts_of(&row(&report, &source)["verdicts"])[name];
    assert_eq!(verdict(at(198, 18, 3, 2), "dropped"), 40);
    assert_eq!(verdict(at(198, 18, 150, 100), "dropped"), 20);
    assert_eq!(
        verdict(at(198, 19, 134, 159), "dropped"),
        10,
        "the list's last line"
    );
    assert_eq!(
        verdict(at(198, 19, 134, 160), "passed"),
        25,
        "past the list's end"
    );
    assert_eq!(
        verdict(at(198, 19, 200, 1), "dropped"),
        12,
        "the rule beside the lists"
    );
    assert_eq!(
        verdict(at(198, 19, 240, 1), "limited"),
        25,
        "a burst of 5 passes"
    );
    assert_eq!(verdict(v6(0xbad, 1), "limited"), 15);
    assert_eq!(verdict(v6(0x600d, 1), "passed"), 10);
    // A list is one row of the report, with its hits.
    let list_row = |name: &str| {
        report["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["list"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no list {name} in {}", report["rules"]))
    };
    let drop_list = list_row("drop.netset");
    assert_eq!(drop_list["prefixes"], 100_000);
    assert_eq!(drop_list["packets"], 40 + 20 + 10);
    assert_eq!(drop_list["action"], "drop");
    assert_eq!(list_row("more.ipset")["packets"], 50);
    assert_eq!(hits(&report, "198.19.200.0/24"), 12);
    assert_eq!(
        report["rules"].as_array().unwrap().len(),
        3,
        "{}",
        report["rules"]
    );
    xdpstat.signal(Signal::SIGINT);
    let (status, _, stderr) = xdpstat.finish();
    assert!(status.success(), "{stderr:?}");
}
