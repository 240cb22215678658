//! `--hook tcx`: counting at tc ingress, beside whatever holds the XDP hook.
//! GRO-merged TCP counted as the segments the XDP hook saw, exactly, and a
//! real peer, xdp-filter from xdp-tools, holding the XDP hook and dropping
//! one source while xdpstat counts everything it passes.

mod common;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use common::{PATIENCE, TestNet, Xdpstat, have, in_namespace, source, total_packets};
use nix::sys::signal::Signal;
use serde_json::Value;
use xdpstat_lab::netns::Namespace;

/// The metrics address xdpstat announced on stderr.
fn metrics_address(xdpstat: &mut Xdpstat) -> SocketAddr {
    let line = xdpstat.stderr_line(|l| l.contains("metrics on http://"));
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an address in {line:?}"))
}

/// The id of the program an xdpstat serving metrics at `address` (in
/// `namespace`) reports in `xdpstat_info`.
fn program_id(namespace: &Namespace, address: SocketAddr) -> u32 {
    let body = namespace
        .run(|| {
            let agent = ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build(),
            );
            let deadline = Instant::now() + PATIENCE;
            loop {
                if let Ok(mut response) = agent.get(format!("http://{address}/metrics")).call() {
                    return response.body_mut().read_to_string().unwrap();
                }
                assert!(Instant::now() < deadline, "no metrics at {address}");
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .unwrap();
    body.lines()
        .find(|l| l.starts_with("xdpstat_info{"))
        .and_then(|l| l.split("program_id=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("a program id in {body}"))
}

/// Real TCP traffic over the veth, with xdpstat on the XDP hook (native:
/// every frame) and on tcx (after GRO) at once: the sender's packets and
/// bytes are the same in both, while the tcx program ran fewer times than
/// there were packets, so GRO did merge them.
#[test]
fn tcx_counts_gro_merged_tcp_as_the_segments_the_xdp_hook_sees() {
    let test = "tcx_counts_gro_merged_tcp_as_the_segments_the_xdp_hook_sees";
    if !common::privileged(test) || !have(test, "iperf3") || !have(test, "ethtool") {
        return;
    }
    // Run counts, for the evidence that GRO merged.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF run-time statistics");
    let net = TestNet::new();
    net.watched.ip(&["link", "set", "lo", "up"]).unwrap();
    // GRO on the watched end merges the stream's segments after XDP.
    let gro = in_namespace(&net.watched, &["ethtool", "-K", "xs0", "gro", "on"])
        .status()
        .expect("ethtool");
    assert!(gro.success(), "turning GRO on");
    let args = ["--format", "json", "--interval", "0.1"];
    let mut xdp = Xdpstat::start(
        &net.watched,
        &[&args[..], &["--mode", "native", "xs0"]].concat(),
    );
    let mut tcx = Xdpstat::start(
        &net.watched,
        &[
            &args[..],
            &["--hook", "tcx", "--metrics", "127.0.0.1:0", "xs0"],
        ]
        .concat(),
    );
    let tcx_program = program_id(&net.watched, metrics_address(&mut tcx));
    common::iperf3_8mb(&net, "198.18.201");
    // Once traffic has stopped, both have counted the same: wait for the
    // XDP count to stand still and the tcx count to reach it. Reports
    // printed during the transfer may still be queued (on a busy machine
    // two in a row can show the handshake alone): only fresh ones count.
    let mut settled = xdp.fresh_report();
    loop {
        let next = xdp.fresh_report();
        if next["totals"] == settled["totals"] {
            break;
        }
        settled = next;
    }
    let sent = source(&settled, "198.18.201.2").unwrap();
    let counted = tcx.report_where(|r| source(r, "198.18.201.2") == Some(sent));
    assert_eq!(source(&counted, "198.18.201.2"), Some(sent));
    let runs = aya::programs::loaded_programs()
        .flatten()
        .find(|program| program.id() == tcx_program)
        .map(|program| program.run_count())
        .expect("the tcx program is loaded");
    eprintln!(
        "8 MB of TCP: {} packets, {} bytes on both hooks; the tcx program ran {runs} times",
        sent.0, sent.1
    );
    assert!(
        runs < sent.0,
        "GRO merged segments: {runs} runs for {} packets",
        sent.0
    );
    for one in [xdp, tcx] {
        one.signal(Signal::SIGTERM);
        let (status, _, stderr) = one.finish();
        assert!(status.success(), "{stderr:?}");
    }
}

/// bpffs mounted on a directory of the test's own, unmounted and removed
/// at the end: where libxdp (xdp-filter) pins its program and maps.
struct Bpffs(PathBuf);

impl Bpffs {
    fn mount() -> Self {
        let dir = std::env::temp_dir().join(format!("xdpstat-bpffs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting bpffs");
        Self(dir)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `xdp-filter ARGS` in the test's network namespace and this mount
/// namespace, pinning under `bpffs`.
fn xdp_filter(net: &TestNet, bpffs: &Bpffs, args: &[&str]) {
    let output = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.watched.name()))
        .args(["timeout", "30", "xdp-filter"])
        .args(args)
        .env("LIBXDP_BPFFS", &bpffs.0)
        .output()
        .expect("xdp-filter runs");
    assert!(
        output.status.success(),
        "xdp-filter {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Unloads xdp-filter from `xs0` even when the test fails.
struct Filter<'a> {
    net: &'a TestNet,
    bpffs: &'a Bpffs,
}

impl Drop for Filter<'_> {
    fn drop(&mut self) {
        let _ = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.net.watched.name()))
            .args(["timeout", "30", "xdp-filter", "unload", "xs0"])
            .env("LIBXDP_BPFFS", &self.bpffs.0)
            .output();
    }
}

#[test]
fn beside_xdp_filter_on_the_xdp_hook_tcx_counts_everything_it_passes() {
    let test = "beside_xdp_filter_on_the_xdp_hook_tcx_counts_everything_it_passes";
    if !common::privileged(test) || !have(test, "xdp-filter") {
        return;
    }
    let net = TestNet::new();
    let bpffs = Bpffs::mount();
    xdp_filter(&net, &bpffs, &["load", "xs0", "--mode", "native"]);
    let filter = Filter {
        net: &net,
        bpffs: &bpffs,
    };
    xdp_filter(&net, &bpffs, &["ip", "198.18.0.66", "--mode", "src"]);
    assert!(net.xdp_attached(), "xdp-filter holds the XDP hook");
    // On the XDP hook, xdpstat is refused, told who holds it and what to do.
    let error = common::one_line_failure(Some(&net.watched), &[], &["--format", "json", "xs0"]);
    assert!(
        error.contains("another XDP program holds the XDP hook") && error.contains("--hook tcx"),
        "{error}"
    );
    assert!(
        error.contains("xdpfilt"),
        "names xdp-filter's program: {error}"
    );
    // On tcx, it counts what xdp-filter passes, exactly.
    let mut xdpstat = start_tcx(&net);
    // Well-formed UDP (xdp-filter aborts on a header it cannot parse).
    let udp4 = |source: [u8; 4], payload: usize| {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
            .ipv4(source, [198, 19, 0, 1], 64)
            .udp(4000, 5000)
            .write(&mut frame, &vec![0u8; payload])
            .unwrap();
        frame
    };
    let kept = udp4([198, 18, 0, 1], 100);
    let dropped = udp4([198, 18, 0, 66], 100);
    let mut six = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .ipv6(
            "2001:db8::6"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            64,
        )
        .udp(4000, 5000)
        .write(&mut six, &[0u8; 40])
        .unwrap();
    net.send(&kept, 40);
    net.send(&dropped, 25);
    net.send(&six, 15);
    let report = xdpstat.report_where(|r| total_packets(r) >= 55);
    assert_eq!(
        source(&report, "198.18.0.1"),
        Some((40, 40 * kept.len() as u64))
    );
    assert_eq!(
        source(&report, "2001:db8::6"),
        Some((15, 15 * six.len() as u64))
    );
    assert_eq!(source(&report, "198.18.0.66"), None, "dropped before tc");
    assert_eq!(total_packets(&report), 55);
    // Stopping xdpstat leaves xdp-filter in place.
    xdpstat.signal(Signal::SIGTERM);
    let (status, rest, stderr) = xdpstat.finish();
    assert!(status.success(), "{stderr:?}");
    let last: Value = serde_json::from_str(rest.last().expect("a final report")).unwrap();
    assert_eq!(total_packets(&last), 55);
    assert!(net.xdp_attached(), "xdp-filter still holds the XDP hook");
    drop(filter);
    common::eventually("xdp-filter unloading", || !net.xdp_attached());
}

/// The tcx link says when its interface is gone, as an XDP link does:
/// the final report, one line, exit 1.
#[test]
fn a_removed_interface_ends_a_tcx_run_with_its_final_report() {
    let test = "a_removed_interface_ends_a_tcx_run_with_its_final_report";
    if !common::privileged(test) {
        return;
    }
    let net = TestNet::new();
    let mut xdpstat = start_tcx(&net);
    let frame = common::ipv4_frame(std::net::Ipv4Addr::new(198, 18, 0, 9), &[], 50);
    net.send(&frame, 12);
    xdpstat.report_where(|r| total_packets(r) >= 12);
    net.watched.ip(&["link", "del", "xs0"]).unwrap();
    let (status, rest, stderr) = xdpstat.finish();
    assert_eq!(status.code(), Some(1), "{stderr:?}");
    assert!(
        stderr.iter().any(|l| l.contains("xs0 is gone")),
        "{stderr:?}"
    );
    let last: Value = serde_json::from_str(rest.last().expect("a final report")).unwrap();
    assert_eq!(
        source(&last, "198.18.0.9"),
        Some((12, 12 * frame.len() as u64))
    );
}

/// xdpstat at tc ingress of `xs0`, reporting JSON every 0.1 s.
fn start_tcx(net: &TestNet) -> Xdpstat {
    Xdpstat::start(
        &net.watched,
        &[
            "--format",
            "json",
            "--interval",
            "0.1",
            "--hook",
            "tcx",
            "xs0",
        ],
    )
}
