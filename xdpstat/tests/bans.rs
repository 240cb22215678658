//! Bans on veth, checked against what arrived: `xdpstat ban` on a running
//! xdpstat drops its source from the moment it returns, `unban` lets it
//! through again, an allowed source cannot be banned, a ban ends on time
//! by itself, and every change is an event in the reports. Every frame
//! sent is under exactly one verdict, and what arrived past XDP is
//! exactly `passed`.

mod common;

use std::{
    cell::RefCell,
    io::{Read as _, Write as _},
    net::TcpStream,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use common::{
    Arrived, PATIENCE, PinRoot, Scratch, TestNet, Xdpstat, eventually, free_port, ipv4_frame,
    one_line_failure, pair, privileged, run_in, start_persisted, start_with_rules, stop,
};
use serde_json::Value;

fn v4(c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, c, d))
}

/// Sends `count` frames from each of `sources`, paced for the veth ring.
fn send(net: &TestNet, sources: &[IpAddr], count: u64) {
    for round in 0..count {
        for source in sources {
            let IpAddr::V4(a) = source else {
                unreachable!()
            };
            net.send(&ipv4_frame(*a, &[], 40), 1);
        }
        if round % 32 == 31 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

fn verdict(report: &Value, source: &IpAddr, name: &str) -> u64 {
    let row = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == source.to_string())
        .unwrap_or_else(|| panic!("{source} not in {report}"));
    pair(&row["verdicts"][name]).0
}

/// Reads reports until one has counted `total` IPv4 frames, keeping every
/// event seen on the way in `events`.
fn settle(xdpstat: &mut Xdpstat, total: u64, events: &RefCell<Vec<Value>>) -> Value {
    xdpstat.report_where(|r| {
        events
            .borrow_mut()
            .extend(r["events"].as_array().unwrap().iter().cloned());
        pair(&r["totals"]["ipv4"]).0 >= total
    })
}

/// The metrics xdpstat serves on `port` in the watched namespace.
fn scrape(net: &TestNet, port: u16) -> String {
    net.watched
        .run(|| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            text
        })
        .unwrap()
}

const RULES: &str = r#"mode = "enforce"
[[rule]]
prefix = "198.18.1.0/24"
action = "allow"

[[rule]]
prefix = "198.18.9.0/24"
action = "drop"
"#;

#[test]
fn a_hand_ban_drops_its_source_from_the_moment_it_returns_until_unban() {
    let test = "a_hand_ban_drops_its_source_from_the_moment_it_returns_until_unban";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let file = scratch.write("rules.toml", RULES);
    let net = TestNet::new();
    let arrived = Arrived::on(&net);
    net.watched.ip(&["link", "set", "lo", "up"]).unwrap();
    let port = free_port(Some(&net.watched));
    let metrics = format!("127.0.0.1:{port}");
    let mut xdpstat = start_with_rules(&net, &file, "0.2", &["--metrics", &metrics]);
    let events = RefCell::new(Vec::new());
    let (banned, other, allowed) = (v4(5, 1), v4(5, 2), v4(1, 7));
    let all = [banned, other, allowed];
    send(&net, &all, 100);
    settle(&mut xdpstat, 300, &events);

    let (code, stdout, stderr) = run_in(
        &net.watched,
        &["ban", "xs0", "198.18.5.1", "--reason", "test flood"],
    );
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
    assert_eq!(stdout, "xs0: banned: drop 198.18.5.1/32");
    // An allowed source is never banned: refused, one line, exit 2.
    let refused = one_line_failure(
        None,
        &[
            "nsenter",
            &format!("--net=/run/netns/{}", net.watched.name()),
        ],
        &["ban", "xs0", "198.18.1.7"],
    );
    assert!(
        refused.contains("ban refused") && refused.contains("allow"),
        "{refused}"
    );
    // From the moment `ban` returned, none of its frames gets through.
    send(&net, &all, 100);
    let report = settle(&mut xdpstat, 600, &events);
    assert_eq!(verdict(&report, &banned, "dropped"), 100);
    assert_eq!(verdict(&report, &banned, "passed"), 100);
    assert_eq!(verdict(&report, &other, "passed"), 200);
    assert_eq!(verdict(&report, &allowed, "passed"), 200);
    let bans = report["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0]["prefix"], "198.18.5.1/32");
    assert_eq!(bans[0]["action"], "drop");
    assert_eq!(bans[0]["origin"], "hand");
    assert_eq!(bans[0]["reason"], "test flood");
    assert_eq!(bans[0]["packets"], 100);
    assert!(bans[0]["until"].is_string(), "an hour by default");
    let exposition = scrape(&net, port);
    assert!(
        exposition.contains("xdpstat_bans{interface=\"xs0\"} 1\n"),
        "{exposition}"
    );
    for (event, count) in [("ban", 1), ("refused", 1), ("unban", 0)] {
        let line =
            format!("xdpstat_ban_events_total{{interface=\"xs0\",event=\"{event}\"}} {count}\n");
        assert!(exposition.contains(&line), "{line} in {exposition}");
    }
    // The bans in force, as `xdpstat bans` lists them.
    let (code, stdout, _) = run_in(&net.watched, &["bans", "xs0", "--format", "json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed[0]["interface"], "xs0");
    assert_eq!(listed[0]["bans"][0]["prefix"], "198.18.5.1/32");
    assert_eq!(listed[0]["bans"][0]["packets"], 100);

    let (code, stdout, _) = run_in(&net.watched, &["unban", "xs0", "198.18.5.1/32"]);
    assert_eq!((code, stdout.as_str()), (0, "xs0: unbanned 198.18.5.1/32"));
    send(&net, &all, 100);
    let report = settle(&mut xdpstat, 900, &events);
    assert_eq!(verdict(&report, &banned, "dropped"), 100);
    assert_eq!(verdict(&report, &banned, "passed"), 200);
    assert!(report["bans"].as_array().unwrap().is_empty());
    eventually("every frame let through arriving", || {
        arrived.total() >= 800
    });
    assert_eq!(arrived.total(), 800);
    assert_eq!(arrived.of(&banned), 200);
    // Each change is one event, in order (a report may come before the
    // last event is read: wait for it).
    let report = xdpstat.report_where(|r| {
        events
            .borrow_mut()
            .extend(r["events"].as_array().unwrap().iter().cloned());
        events.borrow().len() >= 3
    });
    let events = events.into_inner();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ban", "refused", "unban"], "{events:?} {report}");
    assert_eq!(events[0]["prefix"], "198.18.5.1/32");
    assert_eq!(events[1]["prefix"], "198.18.1.7/32");
    assert!(events[0]["detail"].as_str().unwrap().contains("test flood"));
    // Taking out what is not banned is an error.
    let (code, _, stderr) = run_in(&net.watched, &["unban", "xs0", "198.18.5.1"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no ban of 198.18.5.1/32"), "{stderr}");
}

#[test]
fn a_ban_ends_on_time_by_itself() {
    let test = "a_ban_ends_on_time_by_itself";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let file = scratch.write("rules.toml", RULES);
    let net = TestNet::new();
    let mut xdpstat = start_with_rules(&net, &file, "0.2", &[]);
    let events = RefCell::new(Vec::new());
    let source = v4(6, 1);
    let began = Instant::now();
    let (code, stdout, stderr) = run_in(
        &net.watched,
        &["ban", "xs0", "198.18.6.0/24", "--for", "2s"],
    );
    assert_eq!(code, 0, "{stdout} {stderr}");
    send(&net, &[source], 50);
    let report = settle(&mut xdpstat, 50, &events);
    assert_eq!(
        verdict(&report, &source, "dropped"),
        50,
        "sent within the ban's 2 s"
    );
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "the machine was too slow to tell"
    );
    // Past its end, the kernel no longer applies it, and the next read
    // takes it out with an event.
    let report = xdpstat.report_where(|r| {
        events
            .borrow_mut()
            .extend(r["events"].as_array().unwrap().iter().cloned());
        r["bans"].as_array().unwrap().is_empty()
    });
    assert!(began.elapsed() >= Duration::from_secs(2), "{report}");
    assert!(began.elapsed() < Duration::from_secs(2) + PATIENCE);
    send(&net, &[source], 50);
    let report = settle(&mut xdpstat, 100, &events);
    assert_eq!(verdict(&report, &source, "dropped"), 50);
    assert_eq!(verdict(&report, &source, "passed"), 50);
    let kinds: Vec<String> = events
        .borrow()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["ban", "expire"]);
}

#[test]
fn ban_refuses_bad_input_and_an_interface_nothing_counts_on() {
    let test = "ban_refuses_bad_input_and_an_interface_nothing_counts_on";
    if !privileged(test) {
        return;
    }
    let net = TestNet::new();
    let enter = format!("--net=/run/netns/{}", net.watched.name());
    let fail = |args: &[&str]| one_line_failure(None, &["nsenter", &enter], args);
    let line = fail(&["ban", "xs0", "198.18.0.1"]);
    assert!(line.contains("no xdpstat is counting"), "{line}");
    let line = fail(&["ban", "xs9", "198.18.0.1"]);
    assert!(line.contains("no such network interface"), "{line}");
    for bad in ["not-a-prefix", "198.18.0.0/40", "198.18.0.1/"] {
        let line = fail(&["ban", "xs0", bad]);
        assert!(line.contains("is not an address or a prefix"), "{line}");
    }
    for bad in ["soon", "10", "-1s", "200years"] {
        let line = fail(&["ban", "xs0", "198.18.0.1", &format!("--for={bad}")]);
        assert!(line.contains("--for"), "{line}");
    }
    let line = fail(&["ban", "../../etc", "198.18.0.1"]);
    assert!(line.contains("../../etc"), "{line}");
    // Without CAP_NET_ADMIN: the capability named.
    let line = one_line_failure(
        None,
        &[
            "nsenter",
            &enter,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &["ban", "xs0", "198.18.0.1"],
    );
    assert!(line.contains("CAP_NET_ADMIN"), "{line}");
}

#[test]
fn a_persisted_ban_acts_with_no_process_and_comes_back_with_the_next_one() {
    let test = "a_persisted_ban_acts_with_no_process_and_comes_back_with_the_next_one";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let file = scratch.write("rules.toml", RULES);
    let net = TestNet::new();
    let root = PinRoot::new(test);
    let arrived = Arrived::on(&net);
    let rules = ["--rules", file.to_str().unwrap()];
    let mut first = start_persisted(&net.watched, "xs0", &root, &rules);
    let events = RefCell::new(Vec::new());
    let (banned, short, other) = (v4(7, 1), v4(7, 2), v4(7, 3));
    let (code, _, stderr) = run_in(
        &net.watched,
        &["ban", "xs0", "198.18.7.1", "--for", "0", "--reason", "kept"],
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run_in(&net.watched, &["ban", "xs0", "198.18.7.2", "--for", "3s"]);
    assert_eq!(code, 0, "{stderr}");
    let ended_by = Instant::now() + Duration::from_secs(3);
    send(&net, &[banned, other], 40);
    settle(&mut first, 80, &events);
    stop(first);
    // No xdpstat runs: the pinned program goes on dropping the banned
    // source, and the 3 s ban ends by itself.
    send(&net, &[banned, other], 30);
    eventually("the other source's frames arriving", || {
        arrived.of(&other) >= 70
    });
    while Instant::now() < ended_by + Duration::from_millis(100) {
        std::thread::sleep(Duration::from_millis(50));
    }
    send(&net, &[short], 20);
    eventually("the ended ban's frames arriving", || {
        arrived.of(&short) >= 20
    });
    let mut second = start_persisted(&net.watched, "xs0", &root, &rules);
    send(&net, &[banned], 10);
    let report = settle(&mut second, 80 + 60 + 20 + 10, &events);
    assert_eq!(verdict(&report, &banned, "dropped"), 80);
    assert_eq!(verdict(&report, &other, "passed"), 70);
    assert_eq!(verdict(&report, &short, "passed"), 20);
    let bans = report["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 1, "the ended ban is gone: {bans:?}");
    assert_eq!(bans[0]["prefix"], "198.18.7.1/32");
    assert_eq!(bans[0]["reason"], "kept");
    assert!(bans[0]["until"].is_null());
    assert_eq!(bans[0]["packets"], 80, "its hits carried over");
    assert_eq!(arrived.of(&banned), 0);
    let kinds: Vec<(String, String)> = events
        .borrow()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["prefix"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("expire".into(), "198.18.7.2/32".into())),
        "{kinds:?}"
    );
    stop(second);
}

#[test]
fn a_ban_acts_on_a_run_without_rules_and_says_whose_drops_it_cannot_name() {
    let test = "a_ban_acts_on_a_run_without_rules_and_says_whose_drops_it_cannot_name";
    if !privileged(test) {
        return;
    }
    let net = TestNet::new();
    let arrived = Arrived::on(&net);
    let mut xdpstat = Xdpstat::start(
        &net.watched,
        &["xs0", "--format", "json", "--interval", "0.2"],
    );
    let (code, _, stderr) = run_in(&net.watched, &["ban", "xs0", "2001:db8::/32"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run_in(
        &net.watched,
        &["ban", "xs0", "198.18.4.0/24", "--limit", "5"],
    );
    assert_eq!(code, 0, "{stderr}");
    let v6: IpAddr = "2001:db8::9".parse().unwrap();
    let IpAddr::V6(a) = v6 else { unreachable!() };
    net.send(&common::ipv6_frame(a, &[], 40), 30);
    let began = Instant::now();
    send(&net, &[v4(4, 1), v4(4, 2), v4(3, 1)], 20);
    let took = began.elapsed().as_secs_f64();
    let report =
        xdpstat.report_where(|r| pair(&r["totals"]["ipv6"]).0 + pair(&r["totals"]["ipv4"]).0 >= 90);
    let totals = &report["totals"]["verdicts"];
    assert_eq!(pair(&totals["dropped"]).0, 30);
    let limited = pair(&totals["limited"]).0;
    // The /24's two sources share the ban's bucket: at most its burst
    // (5) and its rate over the time the frames took passed.
    let most = 5 + (5.0 * took).ceil() as u64 + 1;
    assert!(
        limited <= 40 && 40 - limited <= most,
        "{limited} of 40 in {took} s"
    );
    assert_eq!(pair(&totals["passed"]).0, 90 - 30 - limited);
    // No verdict rows without rules: what bans did is unattributed, said.
    assert_eq!(pair(&report["unattributed_verdicts"]["dropped"]).0, 30);
    assert_eq!(pair(&report["unattributed_verdicts"]["limited"]).0, limited);
    eventually("the passed frames arriving", || {
        arrived.total() >= 90 - 30 - limited
    });
    assert_eq!(arrived.total(), 90 - 30 - limited);
    assert_eq!(arrived.of(&v4(3, 1)), 20);
}

/// Reports read until `done`, with every report kept.
fn reports_until(xdpstat: &mut Xdpstat, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let seen = RefCell::new(Vec::new());
    xdpstat.report_where(|r| {
        seen.borrow_mut().push(r.clone());
        done(&seen.borrow())
    });
    seen.into_inner()
}

fn events_of(reports: &[Value]) -> Vec<Value> {
    reports
        .iter()
        .flat_map(|r| r["events"].as_array().unwrap().clone())
        .collect()
}

fn source_pps(report: &Value, source: &IpAddr) -> f64 {
    report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == source.to_string())
        .map_or(0.0, |s| s["pps"].as_f64().unwrap())
}

const TRIGGERS: &str = r#"mode = "MODE"
[[rule]]
prefix = "198.18.1.0/24"
action = "allow"

[[trigger]]
name = "flood"
pps = 300
for = "600ms"
ban_for = "1s"
action = "drop"
"#;

/// Sends from `flood` and `allowed` four frames each a millisecond and
/// from `slow` one every 40, for `rounds` rounds: what each sent. Four,
/// so that a sender slowed by a busy machine to a fraction of its pace
/// stays well over the triggers' 300 packets a second: a source that dips
/// under it for `for` is a new episode (a second ban, a second refusal).
fn flood(net: &TestNet, flood: IpAddr, allowed: IpAddr, slow: IpAddr, rounds: u64) -> [u64; 3] {
    let frame = |source: IpAddr| {
        let IpAddr::V4(a) = source else {
            unreachable!()
        };
        ipv4_frame(a, &[], 40)
    };
    let (f, a, s) = (frame(flood), frame(allowed), frame(slow));
    let mut sent = [0; 3];
    for round in 0..rounds {
        net.send(&f, 4);
        net.send(&a, 4);
        sent[0] += 4;
        sent[1] += 4;
        if round % 40 == 0 {
            net.send(&s, 1);
            sent[2] += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sent
}

#[test]
fn a_trigger_bans_a_source_over_its_threshold_in_time_and_never_the_others() {
    let test = "a_trigger_bans_a_source_over_its_threshold_in_time_and_never_the_others";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let file = scratch.write("rules.toml", TRIGGERS.replace("MODE", "enforce"));
    let net = TestNet::new();
    let arrived = Arrived::on(&net);
    let mut xdpstat = start_with_rules(&net, &file, "0.2", &[]);
    let (attacker, allowed, slow) = (v4(5, 1), v4(1, 5), v4(5, 2));
    let sent = flood(&net, attacker, allowed, slow, 2500);
    let total: u64 = sent.iter().sum();
    let reports = reports_until(&mut xdpstat, |seen| {
        let last = seen.last().unwrap();
        pair(&last["totals"]["ipv4"]).0 >= total
            && events_of(seen).iter().any(|e| e["event"] == "expire")
    });
    let events = events_of(&reports);
    let of = |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["event"] == kind).collect() };
    let bans = of("ban");
    assert_eq!(bans.len(), 1, "{events:?}");
    assert_eq!(bans[0]["prefix"], "198.18.5.1/32");
    assert_eq!(bans[0]["origin"], "flood");
    let refused = of("refused");
    assert_eq!(refused.len(), 1, "the allowed source, once: {events:?}");
    assert_eq!(refused[0]["prefix"], "198.18.1.5/32");
    assert_eq!(of("expire").len(), 1);
    assert!(
        events.iter().all(|e| e["prefix"] != "198.18.5.2/32"),
        "the slow source is never banned"
    );
    // In time: from the first report with the source over the threshold
    // to the one with its ban, at most `for` (3 intervals) and two more.
    let first_over = reports
        .iter()
        .position(|r| source_pps(r, &attacker) > 300.0)
        .unwrap();
    let banned_in = reports
        .iter()
        .position(|r| {
            r["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["event"] == "ban")
        })
        .unwrap();
    assert!(
        banned_in >= first_over && banned_in - first_over <= 3 + 2,
        "over in report {first_over}, banned in {banned_in}"
    );
    // Every frame under one verdict; what passed arrived.
    let last = reports.last().unwrap();
    for (source, count) in [attacker, allowed, slow].iter().zip(sent) {
        let verdicts: u64 = ["passed", "dropped"]
            .iter()
            .map(|v| verdict(last, source, v))
            .sum();
        assert_eq!(verdicts, count, "{source}");
    }
    assert!(verdict(last, &attacker, "dropped") > 0);
    assert_eq!(verdict(last, &allowed, "passed"), sent[1]);
    assert_eq!(verdict(last, &slow, "passed"), sent[2]);
    eventually("the passed frames arriving", || {
        arrived.total() >= total - verdict(last, &attacker, "dropped")
    });
    assert_eq!(arrived.of(&attacker), verdict(last, &attacker, "passed"));
    // The ban ended: the source passes again.
    send(&net, &[attacker], 20);
    let report = settle(&mut xdpstat, total + 20, &RefCell::new(Vec::new()));
    assert_eq!(
        verdict(&report, &attacker, "passed"),
        verdict(last, &attacker, "passed") + 20
    );
    assert!(report["bans"].as_array().unwrap().is_empty());
}

#[test]
fn a_dry_run_trigger_says_would_ban_and_drops_nothing() {
    let test = "a_dry_run_trigger_says_would_ban_and_drops_nothing";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let file = scratch.write("rules.toml", TRIGGERS.replace("MODE", "dry-run"));
    let net = TestNet::new();
    let mut xdpstat = start_with_rules(&net, &file, "0.2", &[]);
    let (attacker, allowed, slow) = (v4(5, 1), v4(1, 5), v4(5, 2));
    let sent = flood(&net, attacker, allowed, slow, 1500);
    let total: u64 = sent.iter().sum();
    let reports = reports_until(&mut xdpstat, |seen| {
        pair(&seen.last().unwrap()["totals"]["ipv4"]).0 >= total
            && events_of(seen).iter().any(|e| e["event"] == "would_ban")
    });
    let events = events_of(&reports);
    let said: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["prefix"].as_str().unwrap()))
        .collect();
    assert!(said.contains(&("would_ban", "198.18.5.1/32")), "{events:?}");
    assert!(said.contains(&("refused", "198.18.1.5/32")), "{events:?}");
    assert_eq!(said.len(), 2, "{events:?}");
    let last = reports.last().unwrap();
    assert_eq!(pair(&last["totals"]["verdicts"]["dropped"]).0, 0);
    assert!(last["bans"].as_array().unwrap().is_empty());
}

#[test]
fn max_bans_bounds_a_spoofed_flood_and_a_prefix_trigger_catches_it_whole() {
    let test = "max_bans_bounds_a_spoofed_flood_and_a_prefix_trigger_catches_it_whole";
    if !privileged(test) {
        return;
    }
    let rules = r#"mode = "enforce"
max_bans = 1000

[[trigger]]
name = "each"
pps = 1
ban_for = "10m"
action = "drop"
"#;
    let by_network = r#"mode = "enforce"

[[trigger]]
name = "network"
per = "prefix"
pps = 5000
ban_for = "10m"
action = "drop"
"#;
    let scratch = Scratch::new(test);
    let sources: Vec<Ipv4Addr> = (0..20_000u32)
        .map(|n| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + n))
        .collect();
    let frames: Vec<Vec<u8>> = sources.iter().map(|a| ipv4_frame(*a, &[], 40)).collect();
    for (name, text, extra) in [
        ("each.toml", rules, &["--interval", "0.5"][..]),
        (
            "network.toml",
            by_network,
            &["--interval", "0.5", "--prefix-len", "16,48"][..],
        ),
    ] {
        let file = scratch.write(name, text);
        let net = TestNet::new();
        let args = [
            &["xs0", "--format", "json", "--rules", file.to_str().unwrap()][..],
            extra,
        ]
        .concat();
        let mut xdpstat = Xdpstat::start(&net.watched, &args);
        // Every source, three times, paced for the veth ring.
        for _ in 0..3 {
            for (n, frame) in frames.iter().enumerate() {
                net.send(frame, 1);
                if n % 64 == 63 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        let reports = reports_until(&mut xdpstat, |seen| {
            let last = seen.last().unwrap();
            pair(&last["totals"]["ipv4"]).0 >= 60_000
                && !last["bans"].as_array().unwrap().is_empty()
        });
        let last = reports.last().unwrap();
        let events = events_of(&reports);
        let bans = last["bans"].as_array().unwrap();
        if name == "each.toml" {
            assert_eq!(bans.len(), 1000);
            let refused = last["bans_refused"].as_u64().unwrap();
            assert!(refused >= 19_000, "{refused}");
            let said: Vec<&Value> = events.iter().filter(|e| e["event"] == "refused").collect();
            assert_eq!(said.len(), 1, "one event for the bound: {said:?}");
            assert!(said[0]["detail"].as_str().unwrap().contains("max_bans"));
        } else {
            assert_eq!(bans.len(), 1, "{bans:?}");
            assert_eq!(bans[0]["prefix"], "198.18.0.0/16");
            assert_eq!(last["bans_refused"], 0);
        }
        let all: u64 = ["passed", "dropped"]
            .iter()
            .map(|v| pair(&last["totals"]["verdicts"][*v]).0)
            .sum();
        assert_eq!(all, pair(&last["totals"]["ipv4"]).0);
    }
}

/// Writes an executable script `name` holding `body` into `scratch`.
fn script(scratch: &Scratch, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = scratch.write(name, format!("#!/bin/sh\n{body}\n"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn on_event_gets_each_event_as_json_and_a_hanging_one_stalls_nothing() {
    let test = "on_event_gets_each_event_as_json_and_a_hanging_one_stalls_nothing";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let out = scratch.path("events.jsonl");
    script(&scratch, "notify.sh", &format!("cat >> {}", out.display()));
    script(&scratch, "hang.sh", "sleep 60");
    let file = scratch.write(
        "rules.toml",
        "mode = \"enforce\"\non_event = \"notify.sh\"\n",
    );
    let net = TestNet::new();
    let xdpstat = start_with_rules(&net, &file, "0.2", &[]);
    for args in [
        &["ban", "xs0", "198.18.5.1", "--reason", "one"][..],
        &["ban", "xs0", "198.18.5.0/24", "--limit", "10"][..],
        &["unban", "xs0", "198.18.5.1"][..],
    ] {
        let (code, _, stderr) = run_in(&net.watched, args);
        assert_eq!(code, 0, "{stderr}");
    }
    eventually("the program receiving three events", || {
        std::fs::read_to_string(&out).is_ok_and(|text| text.lines().count() >= 3)
    });
    let text = std::fs::read_to_string(&out).unwrap();
    let mut events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Up to four run at once: they may finish in any order.
    events.sort_by_key(|e| {
        (
            e["event"].as_str().unwrap().to_owned(),
            e["prefix"].as_str().unwrap().to_owned(),
        )
    });
    let said: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            assert_eq!(e["interface"], "xs0");
            assert_eq!(e["origin"], "hand");
            (
                e["event"].as_str().unwrap(),
                e["prefix"].as_str().unwrap(),
                e["detail"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(said.len(), 3, "{said:?}");
    assert_eq!((said[0].0, said[0].1), ("ban", "198.18.5.0/24"));
    assert_eq!((said[1].0, said[1].1), ("ban", "198.18.5.1/32"));
    assert!(said[1].2.ends_with(": one"), "{said:?}");
    assert_eq!((said[2].0, said[2].1), ("unban", "198.18.5.1/32"));
    stop(xdpstat);

    // A program that hangs: six events, four of them stuck at once; the
    // reports go on, and each is killed after 10 s, said on stderr.
    let file = scratch.write("hang.toml", "mode = \"enforce\"\non_event = \"hang.sh\"\n");
    let net = TestNet::new();
    let mut xdpstat = start_with_rules(&net, &file, "0.2", &[]);
    let began = Instant::now();
    for n in 1..=6u8 {
        let prefix = format!("198.18.6.{n}");
        let (code, _, stderr) = run_in(&net.watched, &["ban", "xs0", &prefix]);
        assert_eq!(code, 0, "{stderr}");
    }
    send(&net, &[v4(6, 1), v4(6, 9)], 10);
    let report = xdpstat.report_where(|r| pair(&r["totals"]["ipv4"]).0 >= 20);
    assert_eq!(report["bans"].as_array().unwrap().len(), 6);
    assert_eq!(verdict(&report, &v4(6, 1), "dropped"), 10);
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "counting and reports went on while the programs hung"
    );
    let killed = xdpstat.stderr_line(|l| l.contains("on_event") && l.contains("killed after 10 s"));
    assert!(killed.contains("hang.sh"), "{killed}");
}

#[test]
fn a_rules_file_with_a_bad_trigger_or_on_event_is_refused_on_one_line() {
    let test = "a_rules_file_with_a_bad_trigger_or_on_event_is_refused_on_one_line";
    let scratch = Scratch::new(test);
    script(&scratch, "ok.sh", "true");
    scratch.write("plain.txt", "not a program");
    for (text, wanted) in [
        ("on_event = \"missing.sh\"\n", "missing.sh"),
        ("on_event = \"plain.txt\"\n", "not an executable file"),
        (
            "on_event = \"ok.sh\"\n[[trigger]]\nname = \"x\"\naction = \"drop\"\n",
            "no threshold",
        ),
        (
            "[[trigger]]\nname = \"x\"\npps = 10\nfor = \"a while\"\naction = \"drop\"\n",
            "for = \"a while\"",
        ),
        (
            "[[trigger]]\nname = \"x\"\npps = 10\naction = \"drop\"\nbogus = 1\n",
            "unknown field",
        ),
        (
            "[[trigger]]\nname = \"x\"\npps = 10\naction = \"drop\"\n[[trigger]]\nname = \"x\"\npps = 10\naction = \"drop\"\n",
            "named \"x\"",
        ),
        ("max_bans = 0\n", "max_bans = 0"),
        ("max_bans = 20000\n", "max_bans = 20000"),
    ] {
        let file = scratch.write("bad.toml", text);
        let line = one_line_failure(None, &[], &["rules", "check", file.to_str().unwrap()]);
        assert!(line.contains(wanted), "{text}: {line}");
    }
    let file = scratch.write("good.toml", "on_event = \"ok.sh\"\n");
    let (status, stdout, stderr) =
        common::run_to_end(None, &[], &["rules", "check", file.to_str().unwrap()]);
    assert!(status.success(), "{stdout} {stderr}");
}

#[test]
fn with_no_process_a_ban_goes_into_the_pins_and_acts_before_it_returns() {
    let test = "with_no_process_a_ban_goes_into_the_pins_and_acts_before_it_returns";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let file = scratch.write("rules.toml", RULES);
    let net = TestNet::new();
    let root = PinRoot::new(test);
    let arrived = Arrived::on(&net);
    let rules = ["--rules", file.to_str().unwrap()];
    stop(start_persisted(&net.watched, "xs0", &root, &rules));
    let pins = ["--pin-dir", root.arg()];
    let run = |args: &[&str]| run_in(&net.watched, &[args, &pins[..]].concat());
    let (one, two, allowed, dropped, far) = (v4(7, 1), v4(7, 2), v4(1, 5), v4(9, 1), v4(20, 1));
    let arrive = |source: &IpAddr, count: u64| {
        eventually(&format!("{count} frames of {source} arriving"), || {
            arrived.of(source) >= count
        });
        assert_eq!(arrived.of(source), count, "{source}");
    };

    let (code, stdout, stderr) = run(&["ban", "xs0", "198.18.7.1", "--reason", "offline"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("in its pins"), "{stdout}");
    send(&net, &[one, two], 30);
    arrive(&two, 30);
    assert_eq!(arrived.of(&one), 0, "banned from the moment `ban` returned");
    let (code, _, stderr) = run(&["ban", "xs0", "198.18.1.9"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("allow"), "{stderr}");

    // A wider ban, for 2 s: it ends by itself, no process running.
    let (code, _, stderr) = run(&["ban", "xs0", "198.18.7.0/24", "--for", "2s"]);
    assert_eq!(code, 0, "{stderr}");
    let ends = Instant::now() + Duration::from_secs(2);
    send(&net, &[two], 20);
    let (code, stdout, _) = run(&["bans", "xs0", "--format", "json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let bans = listed[0]["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 2, "{bans:?}");
    assert_eq!(bans[0]["prefix"], "198.18.7.1/32");
    assert_eq!(bans[0]["reason"], "offline");
    assert_eq!(bans[0]["packets"], 30);
    while Instant::now() < ends + Duration::from_millis(50) {
        std::thread::sleep(Duration::from_millis(20));
    }
    send(&net, &[two], 20);
    arrive(&two, 50);

    // A /16 around rules: the allow inside it still passes, the drop
    // inside it still drops, and the rest is banned; then taken out.
    let (code, _, stderr) = run(&["ban", "xs0", "198.18.0.0/16"]);
    assert_eq!(code, 0, "{stderr}");
    send(&net, &[allowed, dropped, far], 10);
    arrive(&allowed, 10);
    for (code_args, source) in [
        (["unban", "xs0", "198.18.0.0/16"], far),
        (["unban", "xs0", "198.18.7.1"], one),
    ] {
        let (code, stdout, stderr) = run(&code_args);
        assert_eq!(code, 0, "{stdout} {stderr}");
        send(&net, &[source], 10);
        arrive(&source, 10);
    }
    assert_eq!(arrived.of(&dropped), 0, "the drop rule inside the /16");
    let (code, stdout, _) = run(&["bans", "xs0", "--format", "json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert!(listed[0]["bans"].as_array().unwrap().is_empty(), "{listed}");

    // The next xdpstat counts on from the pins: every frame under one
    // verdict.
    let mut next = start_persisted(&net.watched, "xs0", &root, &rules);
    let report = next.report_where(|r| pair(&r["totals"]["ipv4"]).0 >= 60 + 40 + 10 + 10 + 10 + 10);
    assert_eq!(verdict(&report, &one, "dropped"), 30);
    assert_eq!(verdict(&report, &one, "passed"), 10);
    assert_eq!(verdict(&report, &two, "dropped"), 20);
    assert_eq!(verdict(&report, &two, "passed"), 50);
    assert_eq!(verdict(&report, &allowed, "passed"), 10);
    assert_eq!(verdict(&report, &dropped, "dropped"), 10);
    assert_eq!(verdict(&report, &far, "dropped"), 10);
    assert_eq!(verdict(&report, &far, "passed"), 10);
    assert!(report["bans"].as_array().unwrap().is_empty());
    stop(next);
}

#[test]
fn a_reload_keeps_the_bans_and_takes_out_one_it_now_allows() {
    let test = "a_reload_keeps_the_bans_and_takes_out_one_it_now_allows";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let file = scratch.write("rules.toml", RULES);
    let net = TestNet::new();
    let arrived = Arrived::on(&net);
    let mut xdpstat = start_with_rules(&net, &file, "0.2", &[]);
    let events = RefCell::new(Vec::new());
    for prefix in ["198.18.5.1", "198.18.6.1"] {
        let (code, _, stderr) = run_in(&net.watched, &["ban", "xs0", prefix]);
        assert_eq!(code, 0, "{stderr}");
    }
    // The new file allows 198.18.6.0/24: that ban goes; the other stays.
    scratch.write(
        "rules.toml",
        format!("{RULES}\n[[rule]]\nprefix = \"198.18.6.0/24\"\naction = \"allow\"\n"),
    );
    xdpstat.signal(nix::sys::signal::Signal::SIGHUP);
    xdpstat.stderr_line(|line| line.contains("rules reloaded from"));
    let (kept, allowed) = (v4(5, 1), v4(6, 1));
    send(&net, &[kept, allowed], 25);
    let report = settle(&mut xdpstat, 50, &events);
    assert_eq!(verdict(&report, &kept, "dropped"), 25);
    assert_eq!(verdict(&report, &allowed, "passed"), 25);
    let bans = report["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0]["prefix"], "198.18.5.1/32");
    eventually("the allowed frames arriving", || arrived.of(&allowed) >= 25);
    assert_eq!(arrived.of(&kept), 0);
    let events = events.into_inner();
    let unban = events
        .iter()
        .find(|e| e["event"] == "unban")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(unban["prefix"], "198.18.6.1/32");
    assert!(unban["detail"].as_str().unwrap().contains("now allowed"));
}
