//! `--capture`: the packets rules act on, written as pcapng and read back
//! by the tools everyone has (tshark, tcpdump). Live on veth: exactly the
//! dropped and limited frames, byte for byte up to the snap length, with
//! their wire lengths, interface and comments; over the budget, captured
//! plus skipped is what was acted on; a SIGKILL leaves a file tcpdump
//! reads whole. Replay: the frames the rules act on, with their capture
//! times. Bad input: one line, nothing attached.

mod common;

use std::{net::Ipv4Addr, path::Path, process::Command, time::Duration};

use common::{
    Scratch, TestNet, eventually, have, ipv4_frame, one_line_failure, pair, privileged,
    start_with_rules,
};
use nix::sys::signal::Signal;
use serde_json::Value;

const RULES: &str = r#"mode = "enforce"
[[rule]]
prefix = "198.18.8.0/24"
action = "drop"

[[rule]]
prefix = "198.18.9.0/24"
action = "limit"
pps = 5
"#;

/// Each packet of a capture as tshark reads it: comment, source, wire
/// length, captured length, interface name, and its bytes in hex.
fn tshark(file: &Path) -> Vec<Vec<String>> {
    let output = Command::new("tshark")
        .args(["-r", file.to_str().unwrap(), "-T", "fields"])
        .args(["-e", "frame.comment", "-e", "ip.src", "-e", "frame.len"])
        .args(["-e", "frame.cap_len", "-e", "frame.interface_name"])
        .args(["-e", "frame.time_epoch"])
        .output()
        .expect("tshark runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

/// How many packets tcpdump reads from `file`, and whether it read it
/// without complaint.
fn tcpdump_count(file: &Path) -> (usize, bool, String) {
    let output = Command::new("tcpdump")
        .args(["-n", "-r", file.to_str().unwrap()])
        .output()
        .expect("tcpdump runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (
        String::from_utf8_lossy(&output.stdout).lines().count(),
        output.status.success(),
        stderr,
    )
}

fn send(net: &TestNet, source: Ipv4Addr, payload: usize, count: u64) {
    let frame = ipv4_frame(source, &[], payload);
    for n in 0..count {
        net.send(&frame, 1);
        if n % 32 == 31 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

fn verdict(report: &Value, name: &str) -> u64 {
    pair(&report["totals"]["verdicts"][name]).0
}

#[test]
fn the_capture_holds_exactly_the_dropped_and_limited_frames_read_by_tshark_and_tcpdump() {
    let test =
        "the_capture_holds_exactly_the_dropped_and_limited_frames_read_by_tshark_and_tcpdump";
    if !privileged(test) || !have(test, "tshark") || !have(test, "tcpdump") {
        return;
    }
    let scratch = Scratch::new(test);
    let file = scratch.write("rules.toml", RULES);
    let capture = scratch.path("dropped.pcapng");
    let net = TestNet::new();
    let mut xdpstat = start_with_rules(
        &net,
        &file,
        "0.2",
        &[
            "--capture",
            capture.to_str().unwrap(),
            "--capture-snaplen",
            "96",
        ],
    );
    let (dropped, limited, passed) = (
        Ipv4Addr::new(198, 18, 8, 1),
        Ipv4Addr::new(198, 18, 9, 1),
        Ipv4Addr::new(198, 18, 7, 1),
    );
    // A long frame (cut to 96 bytes) and short ones.
    send(&net, dropped, 400, 30);
    send(&net, limited, 40, 40);
    send(&net, passed, 40, 20);
    let report = xdpstat.report_where(|r| pair(&r["totals"]["ipv4"]).0 >= 90);
    let (drops, limits) = (verdict(&report, "dropped"), verdict(&report, "limited"));
    assert_eq!(drops, 30);
    assert!(limits > 0 && limits < 40, "{limits}");
    assert_eq!(pair(&report["capture_skipped"]).0, 0, "under the budget");
    eventually("the copies written", || {
        tshark(&capture).len() as u64 >= drops + limits
    });
    let packets = tshark(&capture);
    assert_eq!(packets.len() as u64, drops + limits, "{packets:?}");
    let of = |comment: &str| {
        packets
            .iter()
            .filter(|p| p[0] == comment)
            .collect::<Vec<_>>()
    };
    let dropped_rows = of("dropped by rule 198.18.8.0/24 drop");
    assert_eq!(dropped_rows.len(), 30, "{packets:?}");
    for row in &dropped_rows {
        assert_eq!(row[1], "198.18.8.1");
        // 14 + 20 + 400 on the wire, 96 captured.
        assert_eq!((row[2].as_str(), row[3].as_str()), ("434", "96"));
        assert_eq!(row[4], "xs0");
    }
    let limited_rows = of("limited by rule 198.18.9.0/24 limit");
    assert_eq!(limited_rows.len() as u64, limits);
    assert!(
        limited_rows
            .iter()
            .all(|r| r[1] == "198.18.9.1" && r[2] == "74" && r[3] == "74")
    );
    assert!(
        packets.iter().all(|p| p[1] != "198.18.7.1"),
        "nothing passed is copied"
    );
    // Byte for byte: the first captured frame is the frame sent, cut.
    let sent = ipv4_frame(dropped, &[], 400);
    let mut reader =
        pcap_file::pcapng::PcapNgReader::new(std::fs::File::open(&capture).unwrap()).unwrap();
    let mut first = None;
    while let Some(block) = reader.next_block() {
        if let pcap_file::pcapng::Block::EnhancedPacket(epb) = block.unwrap() {
            first = Some(epb.data.to_vec());
            break;
        }
    }
    assert_eq!(first.unwrap(), sent[..96].to_vec());
    let (count, ok, stderr) = tcpdump_count(&capture);
    assert!(ok, "{stderr}");
    assert_eq!(count as u64, drops + limits);
    // The times are the wall clock's (within the test's span).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let time: f64 = packets[0][5].parse().unwrap();
    assert!((now - time).abs() < 120.0, "{time} vs {now}");
}

#[test]
fn over_the_budget_captured_and_skipped_add_up_and_a_kill_leaves_a_readable_file() {
    let test = "over_the_budget_captured_and_skipped_add_up_and_a_kill_leaves_a_readable_file";
    if !privileged(test) || !have(test, "tcpdump") {
        return;
    }
    let scratch = Scratch::new(test);
    let file = scratch.write("rules.toml", RULES);
    let capture = scratch.path("budget.pcapng");
    let net = TestNet::new();
    let mut xdpstat = start_with_rules(
        &net,
        &file,
        "0.2",
        &[
            "--capture",
            capture.to_str().unwrap(),
            "--capture-rate",
            "10",
        ],
    );
    send(&net, Ipv4Addr::new(198, 18, 8, 1), 40, 300);
    let report = xdpstat.report_where(|r| verdict(r, "dropped") >= 300);
    let skipped = pair(&report["capture_skipped"]).0;
    assert!(skipped > 0, "the budget bites: {report}");
    eventually("the copies written", || {
        tcpdump_count(&capture).0 as u64 + skipped >= 300
    });
    let (count, ok, stderr) = tcpdump_count(&capture);
    assert!(ok, "{stderr}");
    assert_eq!(count as u64 + skipped, 300, "captured + skipped = dropped");
    // Killed while capturing: every block written before is whole.
    send(&net, Ipv4Addr::new(198, 18, 8, 2), 40, 50);
    xdpstat.signal(Signal::SIGKILL);
    let _ = xdpstat.finish();
    let (after, ok, stderr) = tcpdump_count(&capture);
    assert!(ok, "tcpdump reads the file after a SIGKILL: {stderr}");
    assert!(after >= count, "{after} {count}");
}

#[test]
fn capture_refuses_bad_input_with_one_line_and_attaches_nothing() {
    let test = "capture_refuses_bad_input_with_one_line_and_attaches_nothing";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let rules = scratch.write("rules.toml", RULES);
    let rules = rules.to_str().unwrap();
    let existing = scratch.write("existing.pcapng", "mine");
    let net = TestNet::new();
    let dir = scratch.path("");
    for (args, wanted) in [
        (vec!["--rules", rules, "--capture", "-"], "standard output"),
        (
            vec!["--rules", rules, "--capture", dir.to_str().unwrap()],
            "a directory",
        ),
        (
            vec!["--rules", rules, "--capture", existing.to_str().unwrap()],
            "exists",
        ),
        (
            vec!["--rules", rules, "--capture", "/nonexistent/dir/x.pcapng"],
            "No such file",
        ),
        (
            vec![
                "--rules",
                rules,
                "--capture",
                scratch.path("a.pcapng").to_str().unwrap(),
                "--capture-verdicts",
                "dropped,eaten",
            ],
            "\"eaten\" is not a verdict",
        ),
        (
            vec!["--capture", scratch.path("b.pcapng").to_str().unwrap()],
            "give --rules",
        ),
    ] {
        let line = one_line_failure(Some(&net.watched), &[], &[&["xs0"][..], &args].concat());
        assert!(line.contains(wanted), "{args:?}: {line}");
        assert!(!net.xdp_attached(), "nothing attached: {args:?}");
    }
    assert_eq!(
        std::fs::read_to_string(&existing).unwrap(),
        "mine",
        "not overwritten"
    );
}

#[test]
fn a_replay_captures_the_frames_the_rules_act_on_with_their_capture_times() {
    let test = "a_replay_captures_the_frames_the_rules_act_on_with_their_capture_times";
    if !privileged(test) || !have(test, "tcpdump") {
        return;
    }
    let scratch = Scratch::new(test);
    let rules = scratch.write("rules.toml", RULES);
    let start = 1_796_000_000_000_000_000u64;
    // Every third frame from the dropped /24, the rest from a passed
    // source; lengths vary.
    let frames: Vec<(u64, Vec<u8>, bool)> = (0..300u64)
        .map(|n| {
            let dropped = n % 3 == 0;
            let source = if dropped {
                Ipv4Addr::new(198, 18, 8, (n % 200) as u8 + 1)
            } else {
                Ipv4Addr::new(198, 18, 7, 1)
            };
            (
                start + n * 1_234_567,
                ipv4_frame(source, &[], 20 + n as usize),
                dropped,
            )
        })
        .collect();
    let pcap = common::pcap_of(frames.iter().map(|(time, frame, _)| (*time, frame.clone())));
    let input = scratch.path("attack.pcap");
    std::fs::write(&input, pcap).unwrap();
    let capture = scratch.path("dropped.pcapng");
    let output = common::xdpstat_command(
        None,
        &[],
        &[
            "replay",
            "--format",
            "json",
            "--rules",
            rules.to_str().unwrap(),
            "--capture",
            capture.to_str().unwrap(),
            input.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(verdict(&report, "dropped"), 100);
    let mut reader =
        pcap_file::pcapng::PcapNgReader::new(std::fs::File::open(&capture).unwrap()).unwrap();
    let mut got = Vec::new();
    while let Some(block) = reader.next_block() {
        if let pcap_file::pcapng::Block::EnhancedPacket(epb) = block.unwrap() {
            got.push((
                epb.timestamp.as_nanos() as u64,
                epb.original_len as usize,
                epb.data.to_vec(),
            ));
        }
    }
    let wanted: Vec<(u64, usize, Vec<u8>)> = frames
        .iter()
        .filter(|(_, _, dropped)| *dropped)
        .map(|(time, frame, _)| (*time, frame.len(), frame[..frame.len().min(256)].to_vec()))
        .collect();
    assert_eq!(got.len(), 100);
    assert_eq!(
        got, wanted,
        "in capture order, with their times, cut to 256 bytes"
    );
    let (count, ok, stderr) = tcpdump_count(&capture);
    assert!(ok && count == 100, "{count} {stderr}");
}

#[test]
fn passed_packets_are_captured_when_asked_and_frames_with_no_source_never() {
    let test = "passed_packets_are_captured_when_asked_and_frames_with_no_source_never";
    if !privileged(test) || !have(test, "tshark") {
        return;
    }
    let scratch = Scratch::new(test);
    let capture = scratch.path("passed.pcapng");
    let net = TestNet::new();
    let mut xdpstat = common::Xdpstat::start(
        &net.watched,
        &[
            "xs0",
            "--format",
            "json",
            "--interval",
            "0.2",
            "--capture",
            capture.to_str().unwrap(),
            "--capture-verdicts",
            "passed",
        ],
    );
    send(&net, Ipv4Addr::new(198, 18, 7, 7), 40, 12);
    let arp = xdpstat_lab::frames::arp_request(
        Ipv4Addr::new(198, 18, 7, 7),
        Ipv4Addr::new(198, 18, 0, 1),
    );
    net.send(&arp, 5);
    xdpstat.report_where(|r| {
        pair(&r["totals"]["ipv4"]).0 >= 12 && pair(&r["totals"]["non_ip"]).0 >= 5
    });
    eventually("the copies written", || tshark(&capture).len() >= 12);
    let packets = tshark(&capture);
    assert_eq!(packets.len(), 12, "{packets:?}");
    assert!(
        packets
            .iter()
            .all(|p| p[0] == "passed" && p[1] == "198.18.7.7"),
        "{packets:?}"
    );
}

#[test]
fn a_full_disk_stops_the_capture_with_one_line_and_counting_goes_on() {
    let test = "a_full_disk_stops_the_capture_with_one_line_and_counting_goes_on";
    if !privileged(test) {
        return;
    }
    let scratch = Scratch::new(test);
    let rules = scratch.write("rules.toml", RULES);
    // A file system of 64 KiB of the test's own.
    let small = scratch.path("small");
    std::fs::create_dir_all(&small).unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64k",
            "tmpfs",
            small.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(mounted.success());
    let _unmount = Unmount(small.clone());
    let capture = small.join("full.pcapng");
    let net = TestNet::new();
    let mut xdpstat = start_with_rules(
        &net,
        &rules,
        "0.2",
        &[
            "--capture",
            capture.to_str().unwrap(),
            "--capture-snaplen",
            "1024",
            "--capture-rate",
            "100000",
        ],
    );
    send(&net, Ipv4Addr::new(198, 18, 8, 1), 1400, 400);
    let report = xdpstat
        .report_where(|r| verdict(r, "dropped") >= 400 && r.get("capture_stopped").is_some());
    assert!(
        report["capture_stopped"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{report}"
    );
    let line = xdpstat.stderr_line(|l| l.contains("--capture stopped"));
    assert!(line.contains("counting goes on"), "{line}");
    // Counting goes on.
    send(&net, Ipv4Addr::new(198, 18, 8, 1), 40, 10);
    xdpstat.report_where(|r| verdict(r, "dropped") >= 410);
    let said = xdpstat
        .stderr_seen
        .iter()
        .filter(|l| l.contains("--capture stopped"))
        .count();
    assert_eq!(said, 1, "said once");
}

#[test]
fn a_named_pipe_takes_the_capture() {
    let test = "a_named_pipe_takes_the_capture";
    if !privileged(test) || !have(test, "tcpdump") {
        return;
    }
    let scratch = Scratch::new(test);
    let rules = scratch.write("rules.toml", RULES);
    let pipe = scratch.path("capture.pipe");
    nix::unistd::mkfifo(&pipe, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let copy = scratch.path("copy.pcapng");
    let mut reader = Command::new("sh")
        .arg("-c")
        .arg(format!("cat {} > {}", pipe.display(), copy.display()))
        .spawn()
        .unwrap();
    let net = TestNet::new();
    let xdpstat = start_with_rules(&net, &rules, "0.2", &["--capture", pipe.to_str().unwrap()]);
    send(&net, Ipv4Addr::new(198, 18, 8, 3), 40, 25);
    common::stop(xdpstat);
    let status = common::wait_with_timeout(&mut reader);
    assert!(status.success());
    let (count, ok, stderr) = tcpdump_count(&copy);
    assert!(ok, "{stderr}");
    assert_eq!(count, 25);
}

#[test]
fn the_demo_captures_what_its_rules_drop() {
    let test = "the_demo_captures_what_its_rules_drop";
    if !privileged(test) || !have(test, "tshark") {
        return;
    }
    let scratch = Scratch::new(test);
    // The demo's SYN flood comes from 198.18.7.1.
    let rules = scratch.write(
        "rules.toml",
        "mode = \"enforce\"\n[[rule]]\nprefix = \"198.18.7.1/32\"\naction = \"drop\"\n",
    );
    let capture = scratch.path("demo.pcapng");
    let (status, stdout, stderr) = common::run_to_end(
        None,
        &[],
        &[
            "demo",
            "--duration",
            "1.5",
            "--format",
            "json",
            "--rules",
            rules.to_str().unwrap(),
            "--capture",
            capture.to_str().unwrap(),
            "--capture-rate",
            "1000000",
        ],
    );
    assert!(status.success(), "{stderr}");
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let dropped = verdict(&last, "dropped");
    assert!(dropped > 0, "{last}");
    let packets = tshark(&capture);
    let skipped = pair(&last["capture_skipped"]).0;
    assert_eq!(
        packets.len() as u64 + skipped,
        dropped,
        "captured + skipped = dropped"
    );
    assert!(
        packets
            .iter()
            .all(|p| p[0] == "dropped by rule 198.18.7.1/32 drop"
                && p[1] == "198.18.7.1"
                && p[4] == "demo0"),
        "{:?}",
        &packets[..packets.len().min(3)]
    );
}
