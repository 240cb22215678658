//! `--persist`: counts that outlive the process. Traffic keeps flowing
//! while xdpstat is stopped by SIGTERM and killed by SIGKILL, and the last
//! report holds every frame sent; one reader at a time; pins of another
//! layout refused with nothing changed; stale pins found and reported;
//! `status` and `detach`.
//!
//! xdpstat runs in the test's network namespace but in the host's mount
//! namespace (`nsenter --net`), so its pins stay between processes, under
//! a bpffs mounted on a directory of the test's own, removed at the end
//! even when the test fails.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use common::{
    PinRoot, TestNet, Xdpstat, eventually, ipv4_frame, ipv6_frame, pair, privileged, run_in,
    source, stop,
};
use nix::sys::signal::Signal;
use serde_json::Value;
use xdpstat_common::{META_MAP, Meta};
use xdpstat_lab::{
    frames::{self, ethertype},
    netns::{Namespace, veth_pair},
};

/// Starts a persisted xdpstat on `xs0` and waits until it has attached.
fn start_persisted(net: &TestNet, root: &PinRoot, extra: &[&str]) -> Xdpstat {
    common::start_persisted(&net.watched, "xs0", root, extra)
}

/// Starts a persisted xdpstat on `xs0` behind `prefix`.
fn spawn_persisted(net: &TestNet, root: &PinRoot, prefix: &[&str], extra: &[&str]) -> Xdpstat {
    common::spawn_persisted(&net.watched, "xs0", root, prefix, extra)
}

/// `xdpstat detach xs0`, which must succeed; returns what it printed.
fn detach(net: &TestNet, root: &PinRoot) -> String {
    let (code, stdout, stderr) = run_in(&net.watched, &["detach", "xs0", "--pin-dir", root.arg()]);
    assert_eq!(code, 0, "{stderr}");
    stdout
}

/// The id of the XDP program on `xs0`, if any.
fn xdp_program(net: &TestNet) -> Option<u64> {
    common::xdp_program(&net.watched, "xs0")
}

/// `xdpstat status --format json` for `root`: the entries of `namespace`.
fn status(root: &PinRoot, namespace: &Namespace) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_xdpstat"))
        .args(["status", "--format", "json", "--pin-dir", root.arg()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let inode = common::inode_of(namespace);
    let all: Value = serde_json::from_slice(&output.stdout).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .filter(|one| one["netns"].as_u64() == Some(inode))
        .cloned()
        .collect()
}

/// The test's frames: `(frame, source)`, where source is `None` for the
/// classes with no source.
struct Traffic {
    v4: Vec<(IpAddr, Vec<u8>)>,
    v6: Vec<(IpAddr, Vec<u8>)>,
    non_ip: Vec<u8>,
    malformed: Vec<u8>,
}

impl Traffic {
    fn new(sources: u8) -> Self {
        let v4 = (1..=sources)
            .map(|i| {
                let address = Ipv4Addr::new(198, 18, 40, i);
                (
                    address.into(),
                    ipv4_frame(address, &[], 20 + usize::from(i)),
                )
            })
            .collect();
        let v6 = (1..=sources)
            .map(|i| {
                let address = Ipv6Addr::new(0x2001, 0xdb8, 0x40, 0, 0, 0, 0, u16::from(i));
                (
                    address.into(),
                    ipv6_frame(address, &[], 10 + usize::from(i)),
                )
            })
            .collect();
        // An experimental EtherType, and an IPv4 header cut short.
        let non_ip = frames::ethernet(&[], 0x88b5, &[0u8; 46]);
        let malformed = frames::ethernet(&[], ethertype::IPV4, &[0x45, 0, 0]);
        Self {
            v4,
            v6,
            non_ip,
            malformed,
        }
    }

    fn frames_per_round(&self) -> usize {
        self.v4.len() + self.v6.len() + 2
    }

    fn send_round(&self, net: &TestNet) {
        for (_, frame) in self.v4.iter().chain(&self.v6) {
            net.send(frame, 1);
        }
        net.send(&self.non_ip, 1);
        net.send(&self.malformed, 1);
    }

    /// Asserts that `report` holds exactly `rounds` rounds of traffic.
    fn assert_exact(&self, report: &Value, rounds: u64) {
        // Each family's sources, exact; returns the family's sum.
        let family = |sources: &[(IpAddr, Vec<u8>)]| {
            let mut sum = (0, 0);
            for (address, frame) in sources {
                let expected = (rounds, rounds * frame.len() as u64);
                let counted = source(report, &address.to_string());
                assert_eq!(counted, Some(expected), "{address}");
                sum = (sum.0 + expected.0, sum.1 + expected.1);
            }
            sum
        };
        let (v4, v6) = (family(&self.v4), family(&self.v6));
        let totals = &report["totals"];
        assert_eq!(pair(&totals["ipv4"]), v4);
        assert_eq!(pair(&totals["ipv6"]), v6);
        assert_eq!(
            pair(&totals["non_ip"]),
            (rounds, rounds * self.non_ip.len() as u64)
        );
        assert_eq!(
            pair(&totals["malformed"]),
            (rounds, rounds * self.malformed.len() as u64)
        );
        assert_eq!(pair(&report["unattributed"]), (0, 0));
        assert_eq!(
            report["sources"].as_array().unwrap().len(),
            self.v4.len() + self.v6.len()
        );
    }
}

/// A class counter from a Prometheus exposition.
fn class_counter(exposition: &str, metric: &str, class: &str) -> f64 {
    let prefix = format!("{metric}{{interface=\"xs0\",class=\"{class}\"}} ");
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {metric} for {class} in:\n{exposition}"))
        .parse()
        .unwrap()
}

fn scrape(namespace: &Namespace, port: u16) -> String {
    namespace
        .run(|| {
            let mut response = ureq::get(format!("http://127.0.0.1:{port}/metrics"))
                .call()
                .expect("scrape");
            response.body_mut().read_to_string().unwrap()
        })
        .unwrap()
}

/// Changes the pinned record as `change` says.
fn edit_record(dir: &Path, change: impl FnOnce(&mut Meta)) {
    let map = MapData::from_pin(dir.join(META_MAP)).unwrap();
    let mut array: Array<MapData, Meta> = Array::try_from(Map::Array(map)).unwrap();
    let mut meta = array.get(&0, 0).unwrap();
    change(&mut meta);
    array.set(0, meta, 0).unwrap();
}

#[test]
fn counts_survive_sigterm_and_sigkill_while_traffic_flows() {
    if !privileged("counts_survive_sigterm_and_sigkill_while_traffic_flows") {
        return;
    }
    let net = TestNet::new();
    net.watched.ip(&["link", "set", "lo", "up"]).unwrap();
    let root = PinRoot::new("restarts");
    let traffic = Traffic::new(40);
    // Bounded: at most 400 rounds of 82 frames (32,800), ~5 s paced.
    const MAX_ROUNDS: usize = 400;
    let rounds = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let port = common::free_port(Some(&net.watched));
    let port_arg = format!("127.0.0.1:{port}");

    let first = start_persisted(&net, &root, &["--metrics", &port_arg]);
    let first_program = xdp_program(&net).expect("attached");
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let started = Instant::now();
            while rounds.load(Ordering::Relaxed) < MAX_ROUNDS
                && !done.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(60)
            {
                traffic.send_round(&net);
                rounds.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(12));
            }
        });
        // Waits until the sender has sent `more` rounds past now (or is done).
        let advance = |more: usize| {
            let target = rounds.load(Ordering::Relaxed) + more;
            eventually("the sender to go on", || {
                rounds.load(Ordering::Relaxed) >= target.min(MAX_ROUNDS) || sender.is_finished()
            });
        };

        let mut first = first;
        let seen = first.report_where(|r| pair(&r["totals"]["ipv4"]).0 > 0);
        let since = seen["counting_since"].as_str().unwrap().to_owned();
        advance(20);
        let before = scrape(&net.watched, port);
        first.signal(Signal::SIGTERM);
        let (status, _, stderr) = first.finish();
        assert!(status.success(), "{stderr:?}");
        assert!(
            stderr.iter().any(|l| l.contains("stays attached")),
            "{stderr:?}"
        );
        // Counting goes on with no xdpstat running. The record says an
        // older xdpstat attached the program: the next one swaps its own in.
        edit_record(&root.dir(&net.watched, "xs0"), |meta| {
            meta.version = [0; 32];
            meta.version[..9].copy_from_slice(b"0.0.1-old");
        });
        advance(30);

        let mut second = start_persisted(&net, &root, &["--metrics", &port_arg]);
        second.stderr_line(|line| {
            line.contains("picked up the counts") && line.contains("xdpstat 0.0.1-old attached")
        });
        let second_program = xdp_program(&net).expect("attached");
        assert_ne!(second_program, first_program, "the program was swapped in");
        let report = second.report_where(|_| true);
        assert_eq!(report["counting_since"], since.as_str());
        let after = scrape(&net.watched, port);
        for class in ["ipv4", "ipv6", "non_ip", "malformed"] {
            for metric in ["xdpstat_packets_total", "xdpstat_bytes_total"] {
                let (was, is) = (
                    class_counter(&before, metric, class),
                    class_counter(&after, metric, class),
                );
                assert!(is >= was, "{metric} {class} went from {was} to {is}");
            }
        }
        advance(20);
        second.signal(Signal::SIGKILL);
        let _ = second.finish();
        advance(30);

        let mut third = start_persisted(&net, &root, &[]);
        assert_ne!(xdp_program(&net), Some(second_program));
        advance(20);
        done.store(true, Ordering::Relaxed);
        sender.join().unwrap();
        let sent = rounds.load(Ordering::Relaxed) as u64;
        let expected_v4 = sent * traffic.v4.len() as u64;
        let report = third.report_where(|r| {
            pair(&r["totals"]["ipv4"]).0 >= expected_v4 && {
                let totals = &r["totals"];
                pair(&totals["ipv6"]).0 >= sent * traffic.v6.len() as u64
                    && pair(&totals["malformed"]).0 >= sent
                    && pair(&totals["non_ip"]).0 >= sent
            }
        });
        assert_eq!(report["counting_since"], since.as_str());
        traffic.assert_exact(&report, sent);
        // The protocol and port counters carry on in the pins too: every
        // IP frame is UDP from and to port 0.
        let totals = &report["totals"];
        let (v4, v6) = (pair(&totals["ipv4"]), pair(&totals["ipv6"]));
        let ip = (v4.0 + v6.0, v4.1 + v6.1);
        assert_eq!(pair(&totals["protocols"]["udp"]), ip);
        let port_zero = |side: &str| {
            report["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|row| row["protocol"] == "udp" && row["side"] == side && row["port"] == 0)
                .map(pair)
        };
        assert_eq!(port_zero("dst"), Some(ip));
        assert_eq!(port_zero("src"), Some(ip));
        eprintln!(
            "{} frames sent across a SIGTERM and a SIGKILL restart, every one counted",
            sent as usize * traffic.frames_per_round()
        );
        stop(third);
    });
    let said = detach(&net, &root);
    assert!(said.contains("detached"), "{said}");
    assert!(!root.dir(&net.watched, "xs0").exists());
    assert_eq!(xdp_program(&net), None, "detach removed the attachment");
}

#[test]
fn one_reader_status_foreign_layouts_and_stale_pins() {
    if !privileged("one_reader_status_foreign_layouts_and_stale_pins") {
        return;
    }
    let net = TestNet::new();
    let root = PinRoot::new("checks");
    let dir = root.dir(&net.watched, "xs0");

    // One reader at a time, refused with the first one's pid.
    let first = start_persisted(&net, &root, &[]);
    let (code, _, stderr) = run_in(
        &net.watched,
        &[
            "xs0",
            "--persist",
            "--pin-dir",
            root.arg(),
            "--duration",
            "1",
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "{stderr}");
    // Detaching under a reader is refused too.
    let (code, _, stderr) = run_in(&net.watched, &["detach", "xs0", "--pin-dir", root.arg()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "{stderr}");

    // Status: the persisted instance with its reader, and one that is not
    // persisted, on the sender's side.
    let other = Xdpstat::start(&net.sender, &["xs1", "--format", "json"]);
    let listed = status(&root, &net.watched);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let xs0 = &listed[0];
    assert_eq!(xs0["interface"], "xs0");
    assert_eq!(xs0["persisted"], true);
    assert_eq!(xs0["hook"], "xdp");
    assert_eq!(xs0["mode"], "native");
    assert_eq!(xs0["state"], "counting");
    assert_eq!(xs0["reader_pid"], first.pid().as_raw());
    assert_eq!(xs0["program_id"].as_u64(), xdp_program(&net));
    assert_eq!(xs0["pin_dir"], dir.to_str().unwrap());
    assert_eq!(xs0["version"], env!("CARGO_PKG_VERSION"));
    let listed = status(&root, &net.sender);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["interface"], "xs1");
    assert_eq!(listed[0]["persisted"], false);
    assert_eq!(listed[0]["reader_pid"], other.pid().as_raw());
    drop(other);

    // With no reader, still listed, and counting.
    stop(first);
    let program = xdp_program(&net).expect("still attached");
    let listed = status(&root, &net.watched);
    assert_eq!(listed[0]["reader_pid"], Value::Null);
    assert_eq!(listed[0]["state"], "counting");
    // A run without --persist is told who holds the hook.
    let (code, _, stderr) = run_in(&net.watched, &["xs0", "--duration", "1"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("xdpstat already counts here") && stderr.contains("--persist"),
        "{stderr}"
    );

    // Pins of another layout: refused in one line naming detach; nothing changed.
    edit_record(&dir, |meta| meta.layout = 99);
    let pins = || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let pins_before = pins();
    assert_eq!(
        pins_before.len(),
        xdpstat::kernel::memory::map_names().len() + 1,
        "every map and the link: {pins_before:?}"
    );
    let (code, _, stderr) = run_in(&net.watched, &["xs0", "--persist", "--pin-dir", root.arg()]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("layout 99"), "{stderr}");
    assert!(stderr.contains("xdpstat detach xs0"), "{stderr}");
    assert_eq!(xdp_program(&net), Some(program), "nothing was changed");
    assert_eq!(pins(), pins_before);

    // Detach removes it all, whatever the layout; a second detach is no error.
    let said = detach(&net, &root);
    assert!(said.contains("detached"), "{said}");
    assert!(!dir.exists());
    assert_eq!(xdp_program(&net), None);
    let said = detach(&net, &root);
    assert!(said.contains("nothing to detach"), "{said}");

    // Pins an xdpstat left while setting up (it died before its record was
    // complete): removed, said so, counting starts anew.
    let first = start_persisted(&net, &root, &[]);
    net.send(&ipv4_frame(Ipv4Addr::new(198, 18, 45, 1), &[], 30), 2);
    stop(first);
    edit_record(&dir, |meta| meta.layout = 0);
    let listed = status(&root, &net.watched);
    assert!(
        listed[0]["state"]
            .as_str()
            .unwrap()
            .starts_with("incomplete"),
        "{listed:?}"
    );
    let mut again = start_persisted(&net, &root, &[]);
    again.stderr_line(|line| line.contains("left unfinished"));
    let report = again.report_where(|_| true);
    assert_eq!(pair(&report["totals"]["ipv4"]), (0, 0));
    stop(again);

    // Stale pins: the interface they counted on is removed and another
    // takes its name.
    let first = start_persisted(&net, &root, &[]);
    stop(first);
    net.watched.ip(&["link", "del", "xs0"]).unwrap();
    let listed = status(&root, &net.watched);
    assert!(
        listed[0]["state"].as_str().unwrap().starts_with("stale"),
        "{listed:?}"
    );
    veth_pair(&net.watched, "xs0", &net.sender, "xs9").unwrap();
    let mut again = start_persisted(&net, &root, &[]);
    again.stderr_line(|line| line.contains("stale") && line.contains("counting starts anew"));
    let report = again.report_where(|_| true);
    assert_eq!(pair(&report["totals"]["ipv4"]), (0, 0));
    stop(again);
    detach(&net, &root);
}

#[test]
fn what_retired_entries_counted_survives_a_restart() {
    if !privileged("what_retired_entries_counted_survives_a_restart") {
        return;
    }
    let net = TestNet::new();
    let root = PinRoot::new("retired");
    // 16 sources planned: past 14 held, idle ones are retired down to 12.
    let mut first = start_persisted(&net, &root, &["--max-sources", "16"]);
    for i in 1..=15u8 {
        net.send(&ipv4_frame(Ipv4Addr::new(198, 18, 41, i), &[], 30), 1);
    }
    let report = first.report_where(|r| pair(&r["unattributed"]).0 > 0);
    let retired = pair(&report["unattributed"]);
    assert_eq!(pair(&report["totals"]["ipv4"]).0, 15);
    stop(first);

    let mut second = start_persisted(&net, &root, &["--max-sources", "16"]);
    let report = second.report_where(|_| true);
    assert_eq!(pair(&report["unattributed"]), retired);
    assert_eq!(pair(&report["totals"]["ipv4"]).0, 15);
    let held: u64 = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| pair(s).0)
        .sum();
    assert_eq!(held + retired.0, 15);
    stop(second);
    // Another setup than the pinned one is refused, naming the pinned one
    // and detach.
    for (extra, said) in [
        (["--max-sources", "32"], "--max-sources 16"),
        (["--hook", "tcx"], "on the xdp hook"),
        (["--prefix-len", "16,48"], "--prefix-len 24,48"),
    ] {
        let mut args = vec!["xs0", "--persist", "--pin-dir", root.arg()];
        if extra[0] != "--max-sources" {
            args.extend(["--max-sources", "16"]);
        }
        args.extend(extra);
        let (code, _, stderr) = run_in(&net.watched, &args);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(said) && stderr.contains("xdpstat detach xs0"),
            "{stderr}"
        );
    }
}

/// Marks the pinned IPv4 entry holding `address` draining, as an xdpstat
/// killed in the middle of retiring it leaves it; returns its counts.
fn leave_draining(dir: &Path, address: Ipv4Addr) -> (u64, u64) {
    use xdpstat_common::{V4Entry, entry_state};
    let map = MapData::from_pin(dir.join("SOURCES_V4")).unwrap();
    let mut table: Array<MapData, V4Entry> = Array::try_from(Map::Array(map)).unwrap();
    for index in 0..table.len() {
        let mut entry = table.get(&index, 0).unwrap();
        if entry.state == entry_state::READY && entry.address == address.octets() {
            entry.state = entry_state::DRAINING;
            table.set(index, entry, 0).unwrap();
            return (entry.counter.packets, entry.counter.bytes);
        }
    }
    panic!("no entry holds {address}");
}

#[test]
fn a_retirement_cut_short_by_a_kill_is_finished_exactly() {
    if !privileged("a_retirement_cut_short_by_a_kill_is_finished_exactly") {
        return;
    }
    let net = TestNet::new();
    let root = PinRoot::new("cut-short");
    let dir = root.dir(&net.watched, "xs0");
    let (a, b, c) = (
        Ipv4Addr::new(198, 18, 42, 1),
        Ipv4Addr::new(198, 18, 42, 2),
        Ipv4Addr::new(198, 18, 42, 3),
    );
    let mut first = start_persisted(&net, &root, &[]);
    net.send(&ipv4_frame(a, &[], 40), 3);
    net.send(&ipv4_frame(b, &[], 50), 5);
    // `c` starts a run, so `b`'s packets are settled into its entry.
    net.send(&ipv4_frame(c, &[], 60), 1);
    first.report_where(|r| pair(&r["totals"]["ipv4"]).0 == 9);
    first.signal(Signal::SIGKILL);
    let _ = first.finish();

    // Killed after draining `a`, before recording anything: `a`'s counts
    // are in no total yet; the next xdpstat moves them to unattributed.
    let drained_a = leave_draining(&dir, a);
    assert_eq!(drained_a.0, 3);
    let mut second = start_persisted(&net, &root, &[]);
    let report = second.report_where(|_| true);
    assert_eq!(pair(&report["unattributed"]), drained_a);
    assert_eq!(pair(&report["totals"]["ipv4"]).0, 9);
    assert_eq!(source(&report, &a.to_string()), None);
    second.signal(Signal::SIGKILL);
    let _ = second.finish();

    // Killed after recording `b`'s counts (the mark set), before clearing
    // its entry: they are counted once, not again.
    let drained_b = leave_draining(&dir, b);
    assert_eq!(drained_b.0, 5);
    edit_record(&dir, |meta| {
        meta.retired_v4.packets += drained_b.0;
        meta.retired_v4.bytes += drained_b.1;
        meta.retiring = 1;
    });
    let mut third = start_persisted(&net, &root, &[]);
    let report = third.report_where(|_| true);
    assert_eq!(
        pair(&report["unattributed"]),
        (drained_a.0 + drained_b.0, drained_a.1 + drained_b.1)
    );
    assert_eq!(pair(&report["totals"]["ipv4"]).0, 9);
    // The entries are free again: both sources come back with entries.
    net.send(&ipv4_frame(a, &[], 40), 1);
    net.send(&ipv4_frame(b, &[], 50), 1);
    let report = third.report_where(|r| pair(&r["totals"]["ipv4"]).0 == 11);
    assert_eq!(source(&report, &a.to_string()).map(|s| s.0), Some(1));
    assert_eq!(source(&report, &b.to_string()).map(|s| s.0), Some(1));
    stop(third);
}

#[test]
fn a_persisted_tcx_count_continues_across_a_restart() {
    if !privileged("a_persisted_tcx_count_continues_across_a_restart") {
        return;
    }
    let net = TestNet::new();
    let root = PinRoot::new("tcx");
    let source_address = Ipv6Addr::new(0x2001, 0xdb8, 0x43, 0, 0, 0, 0, 1);
    // UDP first, then ICMPv6 while no xdpstat runs, then TCP: the
    // source's packets by protocol carry over too.
    let frame = ipv6_frame(source_address, &[], 100);
    let carrying = |protocol: u8| {
        let mut frame = frame.clone();
        xdpstat_lab::frames::carrying(&mut frame[14..], protocol, (40_000, 443), 0x10);
        frame
    };
    let (icmp, tcp) = (carrying(58), carrying(6));
    let mut first = start_persisted(&net, &root, &["--hook", "tcx"]);
    net.send(&frame, 7);
    first.report_where(|r| pair(&r["totals"]["ipv6"]).0 == 7);
    stop(first);
    net.send(&icmp, 5);
    let listed = status(&root, &net.watched);
    assert_eq!(listed[0]["hook"], "tcx");
    assert_eq!(listed[0]["state"], "counting");
    let mut second = start_persisted(&net, &root, &["--hook", "tcx"]);
    net.send(&tcp, 4);
    let report = second.report_where(|r| pair(&r["totals"]["ipv6"]).0 == 16);
    assert_eq!(
        source(&report, &source_address.to_string()),
        Some((16, 16 * frame.len() as u64))
    );
    let row = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == source_address.to_string().as_str())
        .unwrap();
    assert_eq!(
        row["protocols"],
        serde_json::json!({"tcp": 4, "udp": 7, "icmp": 5, "other": 0}),
        "{report}"
    );
    stop(second);
    detach(&net, &root);
    assert!(!root.dir(&net.watched, "xs0").exists());
}

/// What the systemd unit grants is enough: root's ownership of the pins
/// but no capability beyond CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, on a
/// bpffs someone else mounted (systemd does). Without one there, the
/// mount it would need is refused in one line.
#[test]
fn the_units_capabilities_are_enough_to_persist_and_pick_up() {
    let test = "the_units_capabilities_are_enough_to_persist_and_pick_up";
    if !privileged(test) {
        return;
    }
    let net = TestNet::new();
    let root = PinRoot::new("unit-caps");
    let setpriv = [
        "setpriv",
        "--bounding-set=-all,+bpf,+perfmon,+net_admin",
        "--inh-caps=-all,+bpf,+perfmon,+net_admin",
    ];
    let restricted = || spawn_persisted(&net, &root, &setpriv, &[]);
    let (status, _, stderr) = restricted().finish();
    assert_eq!(status.code(), Some(2), "{stderr:?}");
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(stderr[0].contains("mounting bpffs"), "{stderr:?}");

    let mounted = Command::new("mount")
        .args(["-t", "bpf", "bpffs", root.arg()])
        .status()
        .unwrap();
    assert!(mounted.success());
    let frame = ipv4_frame(Ipv4Addr::new(198, 18, 44, 1), &[], 64);
    let mut first = restricted();
    first.stderr_line(|line| line.contains("attached to xs0 "));
    net.send(&frame, 6);
    first.report_where(|r| pair(&r["totals"]["ipv4"]).0 == 6);
    stop(first);
    net.send(&frame, 4);
    let mut second = restricted();
    second.stderr_line(|line| line.contains("picked up the counts"));
    let report = second.report_where(|r| pair(&r["totals"]["ipv4"]).0 == 10);
    assert_eq!(
        source(&report, "198.18.44.1"),
        Some((10, 10 * frame.len() as u64))
    );
    stop(second);
}

#[test]
fn persisted_rules_stay_in_force_across_restarts_and_go_with_the_next_run_s_rules() {
    let test = "persisted_rules_stay_in_force_across_restarts_and_go_with_the_next_run_s_rules";
    if !privileged(test) {
        return;
    }
    let root = PinRoot::new("rules");
    let scratch = common::Scratch::new(test);
    // A rule on protocol and ports (two port ranges: two steps of the
    // chain), which a restart reads back from the pinned chains to carry
    // its hits over. The frames are UDP to port 0.
    let file = scratch.write(
        "rules.toml",
        "mode = \"enforce\"\n[[rule]]\nprefix = \"198.18.50.0/24\"\nprotocol = \"udp\"\ndst_port = [\"9-12\", 0]\naction = \"drop\"\n",
    );
    let rules = ["--rules", file.to_str().unwrap()];
    let net = TestNet::new();
    let arrived = common::Arrived::on(&net);
    let dropped: IpAddr = Ipv4Addr::new(198, 18, 50, 5).into();
    let kept: IpAddr = Ipv4Addr::new(198, 18, 51, 5).into();
    let (dropped_frame, kept_frame) = (
        ipv4_frame(Ipv4Addr::new(198, 18, 50, 5), &[], 30),
        ipv4_frame(Ipv4Addr::new(198, 18, 51, 5), &[], 30),
    );
    let send = |count: usize| {
        for round in 0..count {
            net.send(&dropped_frame, 1);
            net.send(&kept_frame, 1);
            if round % 32 == 31 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
    };
    let first = start_persisted(&net, &root, &rules);
    send(500);
    stop(first);
    // No reader: the pinned program and its rules go on.
    send(500);
    // Frames while the next xdpstat starts, replaces the program and puts
    // its rules in force: none of the dropped source's gets through.
    let second = std::thread::scope(|scope| {
        let sender = scope.spawn(|| send(1_000));
        let second = start_persisted(&net, &root, &rules);
        sender.join().unwrap();
        second
    });
    let mut second = second;
    send(500);
    let report = second.report_where(|r| pair(&r["totals"]["ipv4"]).0 >= 5_000);
    let verdicts = |report: &Value, address: &IpAddr| {
        let row = report["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["address"] == address.to_string())
            .unwrap_or_else(|| panic!("{address} in {report}"))
            .clone();
        (
            pair(&row["verdicts"]["passed"]).0,
            pair(&row["verdicts"]["dropped"]).0,
        )
    };
    assert_eq!(verdicts(&report, &dropped), (0, 2_500));
    assert_eq!(verdicts(&report, &kept), (2_500, 0));
    assert_eq!(report["rules"][0]["packets"], 2_500, "hits carried over");
    assert_eq!(report["rules"][0]["dst_port"], "0,9-12");
    eventually("the kept frames arriving", || arrived.total() >= 2_500);
    assert_eq!(arrived.of(&dropped), 0, "not one dropped frame got through");
    assert_eq!(arrived.of(&kept), 2_500);
    stop(second);
    // The next run's rules replace the pinned ones: none.
    let mut third = start_persisted(&net, &root, &[]);
    send(200);
    let report = third.report_where(|r| pair(&r["totals"]["ipv4"]).0 >= 5_400);
    assert_eq!(verdicts(&report, &dropped), (200, 2_500));
    assert_eq!(report["rules"], Value::Array(Vec::new()));
    eventually("the formerly dropped frames arriving", || {
        arrived.of(&dropped) >= 200
    });
    assert_eq!(arrived.of(&dropped), 200);
    stop(third);
    detach(&net, &root);
}
