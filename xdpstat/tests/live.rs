//! The real binary on a real veth pair: known frames sent from one private
//! namespace, counted by `xdpstat` attached in the other, exact counts read
//! from its JSON output; then every way it can stop, and every error a user
//! can meet. Each test makes its own namespaces, so they run in parallel.

mod common;

use xdpstat::kernel::memory::{Plan, map_bytes, possible_cpus};

use std::net::{Ipv4Addr, Ipv6Addr};

use common::{
    TestNet, Xdpstat, ipv4_frame, ipv6_frame, one_line_failure, pair, run_to_end, source,
    total_packets,
};
use nix::sys::signal::Signal;
use serde_json::Value;
use xdpstat_lab::frames::{self, VlanTag, ethertype};

const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);
const C: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xc);

/// The known traffic: per class and source, with the expected counts.
struct Traffic {
    a: Vec<u8>,
    b: Vec<u8>,
    c: Vec<u8>,
    arp: Vec<u8>,
    malformed: Vec<u8>,
}

impl Traffic {
    fn new() -> Self {
        let mut malformed = ipv4_frame(A, &[], 10);
        malformed[14] = 0x65;
        Self {
            a: ipv4_frame(A, &[], 100),
            b: ipv4_frame(B, &[VlanTag::dot1q(100)], 500),
            c: ipv6_frame(C, &[VlanTag::dot1ad(200), VlanTag::dot1q(300)], 60),
            arp: frames::ethernet(&[], ethertype::ARP, &frames::arp_request(A, B)),
            malformed,
        }
    }

    fn send(&self, net: &TestNet) {
        net.send(&self.a, 50);
        net.send(&self.b, 30);
        net.send(&self.c, 20);
        net.send(&self.arp, 4);
        net.send(&self.malformed, 3);
    }

    const FRAMES: u64 = 50 + 30 + 20 + 4 + 3;

    fn assert_counted(&self, report: &Value) {
        let len = |f: &Vec<u8>| f.len() as u64;
        assert_eq!(source(report, "198.18.0.1"), Some((50, 50 * len(&self.a))));
        assert_eq!(
            source(report, "198.18.200.2"),
            Some((30, 30 * len(&self.b)))
        );
        assert_eq!(source(report, "2001:db8::c"), Some((20, 20 * len(&self.c))));
        assert_eq!(report["sources"].as_array().unwrap().len(), 3, "{report}");
        let totals = &report["totals"];
        assert_eq!(
            pair(&totals["ipv4"]),
            (80, 50 * len(&self.a) + 30 * len(&self.b))
        );
        assert_eq!(pair(&totals["ipv6"]), (20, 20 * len(&self.c)));
        assert_eq!(pair(&totals["non_ip"]), (4, 4 * len(&self.arp)));
        assert_eq!(pair(&totals["malformed"]), (3, 3 * len(&self.malformed)));
        assert_eq!(pair(&report["unattributed"]), (0, 0));
        assert_eq!(report["interface"], "xs0");
    }
}

/// Sends the known traffic, waits until all of it is counted, stops xdpstat
/// with `signal`, and checks the final report and the clean detach.
fn count_and_stop(test: &str, mode: &str, signal: Signal) {
    if !common::privileged(test) {
        return;
    }
    let net = TestNet::new();
    let started = std::time::SystemTime::now();
    let (option, expected_mode) = match mode {
        "generic" => ("--mode", "generic XDP, bpf link"),
        "tcx" => ("--hook", "tcx ingress, bpf link"),
        _ => ("--mode", "native XDP, bpf link"),
    };
    let mut xdpstat = Xdpstat::start(
        &net.watched,
        &["--format", "json", "--interval", "0.2", option, mode, "xs0"],
    );
    assert!(
        xdpstat
            .stderr_seen
            .iter()
            .any(|l| l.contains(expected_mode)),
        "{:?}",
        xdpstat.stderr_seen
    );
    // tcx leaves the XDP hook free for another program.
    assert_eq!(net.xdp_attached(), mode != "tcx");
    let traffic = Traffic::new();
    traffic.send(&net);
    xdpstat.report_where(|r| total_packets(r) >= Traffic::FRAMES);
    xdpstat.signal(signal);
    let (status, rest, stderr) = xdpstat.finish();
    assert!(status.success(), "exit status {status}, stderr {stderr:?}");
    let last: Value = serde_json::from_str(rest.last().expect("a final report")).unwrap();
    traffic.assert_counted(&last);
    // Counting began at the attach, after this test started (to the second).
    let since = humantime::parse_rfc3339(last["counting_since"].as_str().unwrap()).unwrap();
    let started_second = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(
            started
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
    assert!(
        since >= started_second && since <= std::time::SystemTime::now(),
        "{last}"
    );
    assert!(!net.xdp_attached(), "the program must be gone after exit");
}

#[test]
fn native_mode_counts_known_frames_exactly_and_ctrl_c_detaches() {
    count_and_stop(
        "native_mode_counts_known_frames_exactly",
        "auto",
        Signal::SIGINT,
    );
}

#[test]
fn generic_mode_counts_known_frames_exactly_and_sigterm_detaches() {
    count_and_stop(
        "generic_mode_counts_known_frames_exactly",
        "generic",
        Signal::SIGTERM,
    );
}

/// The kernel's receive counters of `link` in `namespace`: packets, bytes.
fn kernel_rx(namespace: &xdpstat_lab::netns::Namespace, link: &str) -> (u64, u64) {
    let text = namespace
        .ip_output(&["-json", "-statistics", "link", "show", "dev", link])
        .unwrap();
    let links: Value = serde_json::from_str(&text).expect("ip -json output");
    let rx = &links[0]["stats64"]["rx"];
    (
        rx["packets"].as_u64().unwrap(),
        rx["bytes"].as_u64().unwrap(),
    )
}

/// Real TCP traffic (iperf3, 8 MB) over the test veth in `mode`; once it
/// has ended and xdpstat counted every frame the kernel received, returns
/// the iperf3 client's packets and bytes as xdpstat counted them.
fn iperf3_counts(test: &str, mode: &str) -> Option<(u64, u64)> {
    if !common::privileged(test) {
        return None;
    }
    if !common::have(test, "iperf3") {
        return None;
    }
    let net = TestNet::new();
    let mut xdpstat = Xdpstat::start(
        &net.watched,
        &[
            "--format",
            "json",
            "--interval",
            "0.1",
            "--mode",
            mode,
            "xs0",
        ],
    );
    common::iperf3_8mb(&net, "198.18.200");
    // The last segments may still be on their way when iperf3 is done:
    // wait until xdpstat has counted every frame the kernel received.
    let report = xdpstat.report_where(|r| total_packets(r) == kernel_rx(&net.watched, "xs0").0);
    let (packets, bytes) = kernel_rx(&net.watched, "xs0");
    assert_eq!(
        total_packets(&report),
        packets,
        "every frame the kernel received"
    );
    let _ = bytes;
    xdpstat.signal(Signal::SIGINT);
    let (status, _, stderr) = xdpstat.finish();
    assert!(status.success(), "{stderr:?}");
    Some(source(&report, "198.18.200.2").expect("the iperf3 client is a source"))
}

/// Generic XDP runs after GRO: a batch of TCP segments merged into one
/// buffer is one packet to it, far longer than the MTU. Native XDP sees
/// each frame. The report header and the guide say so.
#[test]
fn generic_mode_counts_a_gro_batch_as_one_packet_and_native_mode_every_frame() {
    let test = "generic_mode_counts_a_gro_batch_as_one_packet_and_native_mode_every_frame";
    let Some((native_packets, native_bytes)) = iperf3_counts(test, "native") else {
        return;
    };
    let Some((generic_packets, generic_bytes)) = iperf3_counts(test, "generic") else {
        return;
    };
    eprintln!(
        "8 MB of TCP: native {native_packets} packets, {native_bytes} bytes; generic {generic_packets} packets, {generic_bytes} bytes"
    );
    // Every native frame fits the 1500-byte MTU plus its Ethernet header.
    assert!(
        native_bytes <= native_packets * 1514,
        "native: {native_bytes} / {native_packets}"
    );
    // Generic XDP counted merged batches: more bytes per packet than any frame.
    assert!(
        generic_bytes > generic_packets * 1514,
        "generic: {generic_bytes} / {generic_packets}"
    );
    assert!(generic_packets < native_packets);
}

/// At tc ingress the stack has taken the outer VLAN tag off into the
/// socket buffer; the tcx build counts its 4 bytes all the same, so the
/// same frames give the same report as on the XDP hook.
#[test]
fn tcx_counts_known_frames_exactly_as_the_xdp_hook_does_and_sigterm_detaches() {
    count_and_stop(
        "tcx_counts_known_frames_exactly_as_the_xdp_hook_does_and_sigterm_detaches",
        "tcx",
        Signal::SIGTERM,
    );
}

#[test]
fn sigkill_leaves_nothing_attached() {
    if !common::privileged("sigkill_leaves_nothing_attached") {
        return;
    }
    let net = TestNet::new();
    let xdpstat = Xdpstat::start(&net.watched, &["xs0"]);
    assert!(net.xdp_attached());
    xdpstat.signal(Signal::SIGKILL);
    let (status, _, _) = xdpstat.finish();
    assert!(!status.success());
    // The kernel releases a BPF link when its last descriptor closes.
    common::eventually("detaching after SIGKILL", || !net.xdp_attached());
}

#[test]
fn a_full_table_reports_what_it_cannot_hold_as_unattributed() {
    if !common::privileged("a_full_table_reports_what_it_cannot_hold_as_unattributed") {
        return;
    }
    let net = TestNet::new();
    // Planned for 2 sources: the smallest table (32 entries), and the loop
    // retires idle entries as soon as more than 2 are in use.
    let mut xdpstat = Xdpstat::start(
        &net.watched,
        &[
            "--format",
            "json",
            "--interval",
            "0.2",
            "--max-sources",
            "2",
            "xs0",
        ],
    );
    let frames: Vec<Vec<u8>> = (1..=40)
        .map(|last| ipv4_frame(Ipv4Addr::new(198, 18, 1, last), &[], 20))
        .collect();
    // (40 one-packet sources: more than the 32 entries can hold at once.)
    let len = frames[0].len() as u64;
    for frame in &frames {
        net.send(frame, 1);
    }
    let report = xdpstat.report_where(|r| total_packets(r) >= 40);
    assert_eq!(
        pair(&report["totals"]["ipv4"]),
        (40, 40 * len),
        "every packet"
    );
    let sources = report["sources"].as_array().unwrap();
    assert!(
        sources.len() <= 32 + 2,
        "32 entries and a run per CPU: {sources:?}"
    );
    let held: u64 = sources.iter().map(|s| s["packets"].as_u64().unwrap()).sum();
    assert_eq!(
        pair(&report["unattributed"]),
        (40 - held, (40 - held) * len)
    );
    assert!(held <= 34, "40 sources cannot all have entries");
}

#[test]
fn a_jumbo_mtu_gets_the_multi_buffer_program_and_every_byte() {
    if !common::privileged("a_jumbo_mtu_gets_the_multi_buffer_program_and_every_byte") {
        return;
    }
    let net = TestNet::new();
    net.watched
        .ip(&["link", "set", "xs0", "mtu", "9000"])
        .unwrap();
    net.sender
        .ip(&["link", "set", "xs1", "mtu", "9000"])
        .unwrap();
    let mut xdpstat = Xdpstat::start(
        &net.watched,
        &[
            "--format",
            "json",
            "--interval",
            "0.2",
            "--mode",
            "native",
            "xs0",
        ],
    );
    assert!(
        xdpstat
            .stderr_seen
            .iter()
            .any(|l| l.contains("multi-buffer")),
        "veth refuses a program without frags support at MTU 9000: {:?}",
        xdpstat.stderr_seen
    );
    let jumbo = ipv4_frame(A, &[], 8000);
    let small = ipv4_frame(B, &[], 20);
    net.send(&jumbo, 7);
    net.send(&small, 3);
    let report = xdpstat.report_where(|r| total_packets(r) >= 10);
    assert_eq!(
        source(&report, "198.18.0.1"),
        Some((7, 7 * jumbo.len() as u64))
    );
    assert_eq!(
        source(&report, "198.18.200.2"),
        Some((3, 3 * small.len() as u64))
    );
}

#[test]
fn a_standard_mtu_gets_the_plain_program() {
    if !common::privileged("a_standard_mtu_gets_the_plain_program") {
        return;
    }
    let net = TestNet::new();
    let xdpstat = Xdpstat::start(&net.watched, &["--mode", "native", "xs0"]);
    let attached = xdpstat
        .stderr_seen
        .iter()
        .find(|l| l.contains("attached to xs0"))
        .expect("announced");
    assert!(!attached.contains("multi-buffer"), "{attached}");
}

/// The test link, a second pair (`xs2` watched, `xs3` sending through the
/// returned socket), and xdpstat reporting JSON on both watched ends.
fn two_watched_links() -> (TestNet, xdpstat_lab::packet_socket::PacketSocket, Xdpstat) {
    let net = TestNet::new();
    xdpstat_lab::netns::veth_pair(&net.watched, "xs2", &net.sender, "xs3").unwrap();
    let second = net
        .sender
        .run(|| xdpstat_lab::packet_socket::PacketSocket::bind("xs3"))
        .unwrap()
        .unwrap();
    let xdpstat = Xdpstat::start(
        &net.watched,
        &["--format", "json", "--interval", "0.2", "xs0", "xs2"],
    );
    (net, second, xdpstat)
}

#[test]
fn several_interfaces_get_a_report_each() {
    if !common::privileged("several_interfaces_get_a_report_each") {
        return;
    }
    let (net, second, mut xdpstat) = two_watched_links();
    let a = ipv4_frame(A, &[], 10);
    let c = ipv6_frame(C, &[], 10);
    net.send(&a, 7);
    for _ in 0..9 {
        second.send(&c).unwrap();
    }
    let first = xdpstat.report_where(|r| r["interface"] == "xs0" && total_packets(r) >= 7);
    assert_eq!(source(&first, "198.18.0.1"), Some((7, 7 * a.len() as u64)));
    assert_eq!(total_packets(&first), 7);
    let other = xdpstat.report_where(|r| r["interface"] == "xs2" && total_packets(r) >= 9);
    assert_eq!(source(&other, "2001:db8::c"), Some((9, 9 * c.len() as u64)));
    assert_eq!(total_packets(&other), 9);
}

/// Interfaces removed while xdpstat watches them: each one's final counts
/// are reported and it is named on stderr; the others are still watched;
/// with none left, xdpstat exits 1. Every line of output is a JSON report.
#[test]
fn removed_interfaces_get_a_final_report_and_the_last_one_ends_the_run() {
    if !common::privileged("removed_interfaces_get_a_final_report_and_the_last_one_ends_the_run") {
        return;
    }
    let (net, second, mut xdpstat) = two_watched_links();
    let a = ipv4_frame(A, &[], 10);
    let c = ipv6_frame(C, &[], 10);
    for _ in 0..9 {
        second.send(&c).unwrap();
    }
    xdpstat.report_where(|r| r["interface"] == "xs2" && total_packets(r) >= 9);
    drop(second);
    net.watched.ip(&["link", "del", "xs2"]).unwrap();
    xdpstat.stderr_line(|l| l.contains("xs2 is gone"));
    // xs0 is still counted.
    net.send(&a, 7);
    let first = xdpstat.report_where(|r| r["interface"] == "xs0" && total_packets(r) >= 7);
    assert_eq!(total_packets(&first), 7);
    net.send(&a, 5);
    xdpstat.report_where(|r| r["interface"] == "xs0" && total_packets(r) >= 12);
    net.watched.ip(&["link", "del", "xs0"]).unwrap();
    let (status, rest, stderr) = xdpstat.finish();
    assert_eq!(status.code(), Some(1), "{stderr:?}");
    let reports: Vec<Value> = rest
        .iter()
        .map(|line| serde_json::from_str(line).expect("every line a JSON report"))
        .collect();
    assert!(
        reports.iter().all(|r| r["interface"] == "xs0"),
        "no report of xs2 after it was gone: {rest:?}"
    );
    let last = reports.last().expect("a final report of xs0");
    assert_eq!(source(last, "198.18.0.1"), Some((12, 12 * a.len() as u64)));
    let said = |what: &str| stderr.iter().filter(|l| l.contains(what)).count();
    assert_eq!(
        said("xs2 is gone (the interface was removed)"),
        1,
        "{stderr:?}"
    );
    assert_eq!(
        said("xs0 is gone (the interface was removed)"),
        1,
        "{stderr:?}"
    );
    assert_eq!(said("every watched interface is gone"), 1, "{stderr:?}");
}

#[test]
fn duration_ends_the_run_with_a_final_plain_report() {
    if !common::privileged("duration_ends_the_run") {
        return;
    }
    let net = TestNet::new();
    net.send(&ipv4_frame(A, &[], 10), 1); // before attach: not counted
    let (status, stdout, stderr) = run_to_end(
        Some(&net.watched),
        &[],
        &["--duration", "0.5", "--interval", "0.2", "xs0"],
    );
    assert!(status.success(), "{stderr}");
    // Reports at 0.2 s and 0.4 s (a busy machine may skip a late one) and
    // the final one at 0.5 s.
    let headers = stdout.lines().filter(|l| l.starts_with("xs0 (")).count();
    assert!(
        (1..=3).contains(&headers),
        "at most two interval reports and the final one:\n{stdout}"
    );
    assert!(
        stdout.lines().next().unwrap().contains("XDP, bpf link"),
        "first line says the mode: {stdout}"
    );
    assert!(
        stdout.contains("  ipv4                       0               0"),
        "{stdout}"
    );
    assert!(!net.xdp_attached());
}

#[test]
fn a_closed_pipe_ends_the_run_cleanly() {
    if !common::privileged("a_closed_pipe_ends_the_run_cleanly") {
        return;
    }
    let net = TestNet::new();
    let mut child = common::xdpstat_command(
        Some(&net.watched),
        &[],
        &["--format", "json", "--interval", "0.1", "xs0"],
    )
    .spawn()
    .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert!(first.starts_with('{'), "{first}");
    drop(stdout); // what `xdpstat ... | head -1` does
    let status = common::wait_with_timeout(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    let memory = map_bytes(Plan {
        max_sources: 65_536,
        rule_rows: false,
        rules: 0,
        cpus: possible_cpus(),
    })
    .total() as f64
        / f64::from(1 << 20);
    assert_eq!(
        stderr.trim(),
        format!(
            "xdpstat: attached to xs0 (native XDP, bpf link), up to 65536 sources per address family, {memory:.1} MiB of kernel memory; Ctrl-C to stop"
        ),
        "only the attach line"
    );
    assert!(!net.xdp_attached());
}

#[test]
fn unknown_interface_is_named() {
    if !common::privileged("unknown_interface_is_named") {
        return;
    }
    let net = TestNet::new();
    let (status, _, stderr) = run_to_end(Some(&net.watched), &[], &["xs0", "nope0"]);
    assert_eq!(status.code(), Some(2));
    // One line: xs0 was attached and detached again without ever being
    // said to count, since the run never began.
    assert_eq!(
        stderr.trim(),
        "xdpstat: no such network interface: nope0 (`ip link show` lists them)"
    );
    assert!(
        !net.xdp_attached(),
        "xs0 is detached again when a later interface fails"
    );
}

#[test]
fn a_second_program_on_the_interface_is_named() {
    if !common::privileged("a_second_program_on_the_interface_is_named") {
        return;
    }
    let net = TestNet::new();
    let _first = Xdpstat::start(&net.watched, &["xs0"]);
    // xdpstat's own program is named as such, with where to turn.
    let stderr = one_line_failure(Some(&net.watched), &[], &["xs0"]);
    assert!(
        stderr.contains("xs0: xdpstat already counts here (program id")
            && stderr.contains("name xdpstat)")
            && stderr.contains("`xdpstat status`")
            && stderr.contains("`xdpstat detach xs0`"),
        "{stderr}"
    );
}

#[test]
fn a_refused_mode_suggests_the_others() {
    if !common::privileged("a_refused_mode_suggests_the_others") {
        return;
    }
    let net = TestNet::new();
    let stderr = one_line_failure(Some(&net.watched), &[], &["--mode", "offload", "xs0"]);
    // The suggestion, then the kernel's answer (aya's error and its cause).
    assert!(
        stderr.starts_with(
            "xdpstat: xs0: the kernel refused offload mode (try --mode native or --mode generic): "
        ),
        "{stderr}"
    );
    assert!(stderr.contains("os error"), "{stderr}");
    assert!(
        stderr
            .trim_end()
            .ends_with("; run 'xdpstat doctor xs0' for details"),
        "{stderr}"
    );
    assert!(!net.xdp_attached());
}

#[test]
fn without_privileges_the_missing_capabilities_are_named() {
    if !common::privileged("without_privileges_the_missing_capabilities_are_named") {
        return;
    }
    let nobody = common::NOBODY;
    assert_eq!(
        one_line_failure(None, &nobody, &["lo"]),
        "xdpstat: missing capabilities: CAP_BPF (loading the XDP program), CAP_PERFMON (the verifier's packet pointer checks), CAP_NET_ADMIN (attaching to an interface); run xdpstat as root (sudo) or grant them with `setcap cap_bpf,cap_perfmon,cap_net_admin+ep <path to xdpstat>`"
    );
}

/// What the guide promises is enough: an unprivileged user with CAP_BPF,
/// CAP_PERFMON and CAP_NET_ADMIN (what the systemd unit grants) attaches
/// with a BPF link (found among its own descriptors: listing the host's
/// links would need CAP_SYS_ADMIN), counts exactly, and notices a removed
/// interface.
#[test]
fn with_cap_bpf_cap_perfmon_and_cap_net_admin_alone_it_counts_and_notices_removal() {
    let test = "with_cap_bpf_cap_perfmon_and_cap_net_admin_alone_it_counts_and_notices_removal";
    if !common::privileged(test) {
        return;
    }
    let net = TestNet::new();
    let caps = "+bpf,+perfmon,+net_admin";
    let (inheritable, ambient) = (
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
    );
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &inheritable,
        &ambient,
    ];
    let mut xdpstat = Xdpstat::from_command(common::xdpstat_command(
        Some(&net.watched),
        &nobody,
        &["--format", "json", "--interval", "0.2", "xs0"],
    ));
    let attached = xdpstat.stderr_line(|l| l.contains("attached to xs0"));
    assert!(attached.contains("(native XDP, bpf link)"), "{attached}");
    let traffic = Traffic::new();
    traffic.send(&net);
    let report = xdpstat.report_where(|r| total_packets(r) >= Traffic::FRAMES);
    traffic.assert_counted(&report);
    net.watched.ip(&["link", "del", "xs0"]).unwrap();
    let (status, _, stderr) = xdpstat.finish();
    assert_eq!(status.code(), Some(1), "{stderr:?}");
    assert!(
        stderr.iter().any(|l| l.contains("xs0 is gone")),
        "{stderr:?}"
    );
    assert!(!stderr.iter().any(|l| l.contains("warning")), "{stderr:?}");
}

#[test]
fn bad_arguments_fail_before_touching_anything() {
    for args in [
        &["--interval", "0", "lo"][..],
        &["--max-sources", "0", "lo"],
        &["lo", "lo"],
        &[],
    ] {
        let (status, _, stderr) = run_to_end(None, &[], args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn the_demo_counts_everything_it_sends_and_cleans_up() {
    if !common::privileged("the_demo_counts_everything_it_sends_and_cleans_up") {
        return;
    }
    let (status, stdout, stderr) = run_to_end(
        None,
        &[],
        &["demo", "--duration", "1.5", "--format", "json"],
    );
    assert!(status.success(), "{stderr}");
    let sent = common::demo_sent(&stderr);
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(sent > 0);
    assert_eq!(
        total_packets(&last),
        sent,
        "the final report holds every frame sent"
    );
    assert!(pair(&last["totals"]["ipv4"]).0 > 0 && pair(&last["totals"]["ipv6"]).0 > 0);
    assert!(pair(&last["totals"]["non_ip"]).0 > 0 && pair(&last["totals"]["malformed"]).0 > 0);
    // Every IP packet under exactly one protocol, and each source's kind
    // of traffic where it belongs: the SYN flood from 198.18.7.1, ICMP
    // from 198.18.3.3, ICMPv6 from 2001:db8:1::5.
    let totals = &last["totals"];
    let protocols = &totals["protocols"];
    let ip = pair(&totals["ipv4"]).0 + pair(&totals["ipv6"]).0;
    let by_protocol: u64 = ["tcp", "udp", "icmp", "icmpv6", "other"]
        .iter()
        .map(|p| pair(&protocols[*p]).0)
        .sum();
    assert_eq!(by_protocol, ip, "{last}");
    assert_eq!(pair(&protocols["other"]).0, 0);
    assert_eq!(
        pair(&totals["tcp_syn"]),
        source(&last, "198.18.7.1").unwrap()
    );
    assert_eq!(
        pair(&protocols["icmp"]),
        source(&last, "198.18.3.3").unwrap()
    );
    assert_eq!(
        pair(&protocols["icmpv6"]),
        source(&last, "2001:db8:1::5").unwrap()
    );
    let namespaces: Vec<&str> = stderr
        .lines()
        .next()
        .unwrap()
        .split("(namespace ")
        .skip(1)
        .map(|rest| rest.split(')').next().unwrap())
        .collect();
    assert_eq!(
        namespaces.len(),
        2,
        "the demo names its namespaces: {stderr}"
    );
    for namespace in namespaces {
        assert!(namespace.starts_with("xdpstat-demo-"), "{namespace}");
        let path = std::path::Path::new("/run/netns").join(namespace);
        assert!(!path.exists(), "namespace {namespace} is removed");
    }
}

#[test]
fn an_interrupted_demo_still_cleans_up() {
    if !common::privileged("an_interrupted_demo_still_cleans_up") {
        return;
    }
    let command = common::xdpstat_command(
        None,
        &[],
        &["demo", "--format", "json", "--interval", "0.2"],
    );
    let mut demo = Xdpstat::from_command(command);
    let pid = demo.pid();
    demo.report_where(|r| r["interface"] == "demo0");
    demo.signal(Signal::SIGINT);
    let (status, rest, stderr) = demo.finish();
    assert!(status.success(), "exit {status}: {stderr:?}");
    let last: Value = serde_json::from_str(rest.last().expect("a final report")).unwrap();
    assert_eq!(last["interface"], "demo0");
    let prefix = format!("xdpstat-demo-{pid}-");
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
