//! `xdpstat replay --rules`: what a rule set would have done to captured
//! traffic. The committed corpus under drop, pass and limit rules, with
//! exact verdicts, and a capture whose timestamps alone decide a rate
//! limit, checked against a token bucket written here.

mod common;

use std::{net::Ipv4Addr, path::Path, time::Duration};

use common::{Scratch, ipv4_frame, pair, privileged};
use serde_json::Value;

fn replay_json(rules: &Path, capture: &Path) -> Value {
    let output = common::xdpstat_command(
        None,
        &[],
        &[
            "replay",
            "--format",
            "json",
            "--rules",
            rules.to_str().unwrap(),
            capture.to_str().unwrap(),
        ],
    )
    .output()
    .expect("xdpstat runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON report")
}

fn verdict(report: &Value, name: &str) -> (u64, u64) {
    pair(&report["totals"]["verdicts"][name])
}

fn source_verdict(report: &Value, address: &str, name: &str) -> u64 {
    let row = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == address)
        .unwrap_or_else(|| panic!("{address} not in {report}"));
    pair(&row["verdicts"][name]).0
}

#[test]
fn the_corpus_under_drop_pass_and_limit_rules_gives_exact_verdicts() {
    let test = "the_corpus_under_drop_pass_and_limit_rules_gives_exact_verdicts";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let rules = scratch.write(
        "rules.toml",
        r#"mode = "enforce"
[[rule]]
prefix = "198.18.0.0/15"
action = "drop"
[[rule]]
prefix = "198.18.0.1/32"
action = "pass"
[[rule]]
prefix = "2001:db8::/32"
action = "limit"
pps = 10
burst = 2
mode = "dry-run"
"#,
    );
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/mixed-be.pcapng");
    let report = replay_json(&rules, &corpus);
    // 198.18.200.2 (2 frames, 136 bytes) and 198.19.0.9 (1, 58) are in the
    // dropped /15; 198.18.0.1 (3 frames) is its exception; the two IPv6
    // frames fit the limit's burst; non-IP and malformed frames pass.
    assert_eq!(verdict(&report, "dropped"), (3, 194));
    assert_eq!(verdict(&report, "passed"), (8, 798));
    assert_eq!(verdict(&report, "would_limit"), (0, 0));
    assert_eq!(source_verdict(&report, "198.18.200.2", "dropped"), 2);
    assert_eq!(source_verdict(&report, "198.18.0.1", "passed"), 3);
    let hits: Vec<(String, u64, u64)> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["prefix"].as_str().unwrap().to_owned(),
                r["packets"].as_u64().unwrap(),
                r["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hits,
        [
            ("198.18.0.0/15".to_owned(), 3, 194),
            ("198.18.0.1/32".to_owned(), 3, 402),
            ("2001:db8::/32".to_owned(), 2, 200),
        ]
    );
    assert_eq!(report["rules"][2]["mode"], "dry-run");
}

/// A token bucket of `burst` packets refilled at `pps`, in nanoseconds of
/// credit: which of the frames at `times` it lets through.
fn bucket_passes(times: &[u64], pps: u64, burst: u64) -> u64 {
    let cost = 1_000_000_000u64.div_ceil(pps);
    let full = burst * cost;
    let (mut credit, mut last, mut passed) = (full, times[0], 0);
    for &time in times {
        credit = (credit + (time - last)).min(full);
        last = time;
        if credit >= cost {
            credit -= cost;
            passed += 1;
        }
    }
    passed
}

#[test]
fn a_replayed_limit_keeps_time_by_the_capture_not_the_clock() {
    let test = "a_replayed_limit_keeps_time_by_the_capture_not_the_clock";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    // 400 frames from one source over 2 s of capture time, in bursts: 50
    // frames 1 ms apart, then 200 ms of quiet. Replayed in milliseconds,
    // so only the timestamps can spread them.
    let start = 1_790_000_000_000_000_000u64;
    let mut times = Vec::new();
    for burst in 0..8u64 {
        for frame in 0..50u64 {
            times.push(start + burst * 250_000_000 + frame * 1_000_000);
        }
    }
    let frame = ipv4_frame(Ipv4Addr::new(198, 18, 3, 3), &[], 40);
    let pcap = common::pcap_of(times.iter().map(|&time| (time, frame.clone())));
    let capture = scratch.path("bursts.pcap");
    std::fs::write(&capture, pcap).unwrap();
    let expected = bucket_passes(&times, 40, 10);
    assert!(
        expected > 10 && expected < 400,
        "the limit bites: {expected}"
    );
    for (mode, acted) in [("enforce", "limited"), ("dry-run", "would_limit")] {
        let rules = scratch.write(
            "rules.toml",
            format!(
                "mode = \"{mode}\"\n[[rule]]\nprefix = \"198.18.3.0/24\"\naction = \"limit\"\npps = 40\nburst = 10\n"
            ),
        );
        let report = replay_json(&rules, &capture);
        assert_eq!(
            source_verdict(&report, "198.18.3.3", "passed"),
            expected,
            "{mode}"
        );
        assert_eq!(
            source_verdict(&report, "198.18.3.3", acted),
            400 - expected,
            "{mode}"
        );
    }
}

#[test]
fn a_trigger_in_a_replay_bans_and_unbans_at_the_capture_s_times() {
    let test = "a_trigger_in_a_replay_bans_and_unbans_at_the_capture_s_times";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let rules = scratch.write(
        "rules.toml",
        r#"mode = "enforce"
[[trigger]]
name = "flood"
pps = 500
ban_for = "2s"
action = "drop"
"#,
    );
    // 198.18.3.3 floods at 1,000 frames a second for 3 s from `start`,
    // then sends 10 more at 6 s; 198.18.4.4 sends 5 a second for 10 s.
    let start = 1_796_000_000_000_000_000u64;
    let second = 1_000_000_000u64;
    let (flood, calm) = (Ipv4Addr::new(198, 18, 3, 3), Ipv4Addr::new(198, 18, 4, 4));
    let mut frames: Vec<(u64, Ipv4Addr)> = (0..3000)
        .map(|i| (start + i * 1_000_000, flood))
        .chain((0..10).map(|i| (start + 6 * second + i * 1_000_000, flood)))
        .chain((0..50).map(|i| (start + i * 200_000_000 + 100_000, calm)))
        .collect();
    frames.sort();
    let pcap = common::pcap_of(
        frames
            .iter()
            .map(|&(time, source)| (time, ipv4_frame(source, &[], 40))),
    );
    let capture = scratch.path("flood.pcap");
    std::fs::write(&capture, pcap).unwrap();
    let report = replay_json(&rules, &capture);
    // Judged at 1 s (1,000 frames in the second before: over), banned
    // from then until 2 s after the flood was last over: its frames from
    // 1 s to 3 s are dropped, the ones at 6 s pass.
    assert_eq!(source_verdict(&report, "198.18.3.3", "dropped"), 2000);
    assert_eq!(source_verdict(&report, "198.18.3.3", "passed"), 1010);
    assert_eq!(source_verdict(&report, "198.18.4.4", "passed"), 50);
    let events: Vec<(String, String, String)> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["prefix"].as_str().unwrap().to_owned(),
                e["time"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let at = |s: u64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_nanos(start + s * second),
        )
        .to_string()
    };
    let kinds: Vec<&str> = events.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(kinds, ["ban", "extend", "extend", "expire"], "{events:?}");
    assert!(events.iter().all(|(_, p, _)| p == "198.18.3.3/32"));
    // Begun at 1 s, last over at 3 s, ended at 5 s, in capture time.
    assert_eq!(events[0].2, at(1));
    assert_eq!(events[3].2, at(5));
    assert!(report["bans"].as_array().unwrap().is_empty());
}
