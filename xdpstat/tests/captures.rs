//! `xdpstat replay` against captures it did not write and inputs that
//! fight back: files written by tcpdump, dumpcap and editcap (checked
//! against what tcpdump itself reads from them), pipes, standard input and
//! named pipes with no writer, a file truncated while it is read, records
//! longer than the snap length or than the kernel runs, obsolete blocks,
//! odd options and impossible timestamps, and the memory a replay holds;
//! and real kernel traffic captured by tcpdump, whose protocols, fragments,
//! SYNs and ports the replay must count as tshark reads them, and judge
//! by protocol and port rules as tshark's reading says.

mod common;

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{
    PATIENCE, Scratch, TestNet, have, ipv4_frame, ipv6_frame, pair, reports, source,
    stderr_of as stderr, total_packets,
};
use xdpstat_lab::frames::VlanTag;

fn replay_command(args: &[&str]) -> Command {
    let words: Vec<&str> = std::iter::once("replay")
        .chain(args.iter().copied())
        .collect();
    common::xdpstat_command(None, &[], &words)
}

fn replay(args: &[&str]) -> Output {
    replay_command(args).output().expect("xdpstat runs")
}

/// How many frames tcpdump reads from `file` so far (0 if none yet).
fn frames_in(file: &Path) -> usize {
    Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(file)
        .stderr(Stdio::null())
        .output()
        .map_or(0, |o| String::from_utf8_lossy(&o.stdout).lines().count())
}

/// What tcpdump reads from `file`: per frame, its timestamp (seconds since
/// the epoch, as printed), its length on the wire and its source address.
fn tcpdump_reads(file: &Path) -> Vec<(f64, u64, String)> {
    let output = Command::new("tcpdump")
        .args(["-nn", "-tt", "-e", "-r"])
        .arg(file)
        .output()
        .expect("tcpdump runs");
    assert!(
        output.status.success(),
        "tcpdump -r {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            // A time tcpdump cannot print reads "[Error converting time]".
            let time: f64 = line
                .split(' ')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(f64::INFINITY);
            let length = line
                .split("length ")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a length in {line:?}"));
            // "MAC > MAC, ..., length N: [vlan ..., ]198.18.7.0.0 > ...":
            // the word before the second " > ", less the port after its
            // last dot.
            let address = line
                .split(" > ")
                .nth(1)
                .and_then(|before| before.split(' ').next_back())
                .and_then(|with_port| with_port.rsplit_once('.'))
                .map_or(String::new(), |(address, _)| address.to_owned());
            (time, length, address)
        })
        .collect()
}

/// The frames the tools capture: 10 senders, both families, tags.
fn sent() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for n in 0..30u8 {
        frames.push(ipv4_frame(
            Ipv4Addr::new(198, 18, 7, n % 6),
            &[],
            20 + usize::from(n) * 7,
        ));
        if n % 3 == 0 {
            frames.push(ipv6_frame(
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 7, u16::from(n % 4)),
                &[VlanTag::dot1q(9)],
                40,
            ));
        }
    }
    frames
}

/// Starts `program ARGS` capturing on the watched end of `net`, and waits
/// until it says it is capturing.
fn start_capture(net: &TestNet, program: &str, args: &[&str]) -> std::process::Child {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            net.watched.name(),
            "timeout",
            "60",
            program,
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("capture tool");
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + PATIENCE;
    let mut line = String::new();
    loop {
        line.clear();
        let read = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(read > 0, "{program} ended before capturing");
        if line.contains("listening on") || line.contains("Capturing on") {
            break;
        }
        assert!(Instant::now() < deadline, "{program} did not start");
    }
    // Drain the rest so the tool never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    child
}

#[test]
fn captures_written_by_tcpdump_dumpcap_and_editcap_replay_as_tcpdump_reads_them() {
    let test = "captures_written_by_tcpdump_dumpcap_and_editcap_replay_as_tcpdump_reads_them";
    if !common::privileged(test) || !have(test, "tcpdump") || !have(test, "dumpcap") {
        return;
    }
    let scratch = Scratch::new("tools");
    let net = TestNet::new();
    let frames = sent();
    let count = frames.len().to_string();
    let file = |name: &str| scratch.path(name).display().to_string();
    let captures = [
        (
            "tcpdump",
            vec!["-i", "xs0", "-n", "-U", "-c", &count, "-w"],
            file("tcpdump-us.pcap"),
        ),
        (
            "tcpdump",
            vec![
                "-i",
                "xs0",
                "-n",
                "-U",
                "--time-stamp-precision=nano",
                "-c",
                &count,
                "-w",
            ],
            file("tcpdump-ns.pcap"),
        ),
        (
            "tcpdump",
            vec!["-i", "xs0", "-n", "-U", "-s", "70", "-c", &count, "-w"],
            file("tcpdump-snap70.pcap"),
        ),
        (
            "dumpcap",
            vec!["-i", "xs0", "-q", "-c", &count, "-w"],
            file("dumpcap.pcapng"),
        ),
        (
            "dumpcap",
            vec!["-i", "xs0", "-q", "-P", "-s", "80", "-c", &count, "-w"],
            file("dumpcap-snap80.pcap"),
        ),
    ];
    let mut tools = Vec::new();
    for (program, args, path) in &captures {
        let mut args = args.clone();
        args.push(path);
        tools.push(start_capture(&net, program, &args));
    }
    // A tool may say it captures a moment before it does: send the frames
    // until every file holds them all (the files are then compared with
    // what tcpdump reads from them, whatever they hold).
    let deadline = Instant::now() + PATIENCE;
    for round in 0.. {
        for frame in &frames {
            net.send(frame, 1);
        }
        let complete = captures
            .iter()
            .all(|(_, _, path)| frames_in(Path::new(path)) >= frames.len());
        if complete || Instant::now() >= deadline || round > 100 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for mut tool in tools {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(tool.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        common::wait_with_timeout(&mut tool);
    }
    let mut files: Vec<PathBuf> = captures.iter().map(|(_, _, path)| path.into()).collect();
    if have(test, "editcap") {
        // editcap rewrites: pcap to pcapng (microseconds), pcapng to a
        // nanosecond pcap, and a cut to 60 bytes.
        for (from, to, args) in [
            ("tcpdump-us.pcap", "editcap.pcapng", vec!["-F", "pcapng"]),
            ("dumpcap.pcapng", "editcap-ns.pcap", vec!["-F", "nsecpcap"]),
            (
                "tcpdump-ns.pcap",
                "editcap-snap60.pcapng",
                vec!["-F", "pcapng", "-s", "60"],
            ),
        ] {
            let status = Command::new("editcap")
                .args(&args)
                .arg(scratch.path(from))
                .arg(scratch.path(to))
                .status()
                .expect("editcap runs");
            assert!(status.success(), "editcap {args:?}");
            files.push(scratch.path(to));
        }
    }
    for path in &files {
        let read = tcpdump_reads(path);
        let output = replay(&["--format", "json", &path.display().to_string()]);
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            stderr(&output)
        );
        let report = &reports(&output)[0];
        // Every frame, counted at its length on the wire, as tcpdump reads it.
        assert!(read.len() >= frames.len(), "{}", path.display());
        assert_eq!(
            total_packets(report),
            read.len() as u64,
            "{}",
            path.display()
        );
        let bytes: u64 = ["ipv4", "ipv6", "non_ip", "malformed"]
            .iter()
            .map(|class| pair(&report["totals"][class]).1)
            .sum();
        assert_eq!(
            bytes,
            read.iter().map(|(_, len, _)| len).sum::<u64>(),
            "{}",
            path.display()
        );
        // Each source's packets and bytes, as tcpdump reads them.
        let mut by_source: std::collections::BTreeMap<String, (u64, u64)> =
            std::collections::BTreeMap::new();
        for (_, length, address) in &read {
            let entry = by_source.entry(address.clone()).or_default();
            entry.0 += 1;
            entry.1 += length;
        }
        // (tcpdump prints no address for a frame cut inside its IP header,
        // or one it cannot decode to the end; the totals above hold them.)
        by_source.remove("");
        assert!(by_source.len() >= 6, "{}: {by_source:?}", path.display());
        for (address, counts) in &by_source {
            assert_eq!(
                source(report, address),
                Some(*counts),
                "{}: {address}",
                path.display()
            );
        }
        // The report's time is the last frame's, to the second.
        let last = read.last().unwrap().0;
        let time = humantime::parse_rfc3339(report["time"].as_str().unwrap()).unwrap();
        let seconds = time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(seconds, last.floor() as u64, "{}", path.display());
        // Rates are over the span tcpdump reads, first to last frame.
        let span = last - read[0].0;
        let pps = report["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["pps"].as_f64().unwrap())
            .sum::<f64>();
        let ip_packets = pair(&report["totals"]["ipv4"]).0 + pair(&report["totals"]["ipv6"]).0;
        assert!(
            (pps * span - ip_packets as f64).abs() < 0.01 * ip_packets as f64 + 1e-6,
            "{}: {pps} pps over {span} s",
            path.display()
        );
    }
}

/// A little-endian pcap with `snaplen` of records (captured bytes, wire
/// length), timestamps a second apart.
fn pcap_le(snaplen: u32, records: &[(&[u8], u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for word in [0xA1B2_C3D4u32, 0x0004_0002, 0, 0, snaplen, 1] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    // The version word above is two u16s: 2, 4.
    out[4..8].copy_from_slice(&[2, 0, 4, 0]);
    for (n, (data, wire)) in records.iter().enumerate() {
        for word in [1_795_000_000 + n as u32, 0, data.len() as u32, *wire] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(data);
    }
    out
}

#[test]
fn records_longer_than_the_snap_length_are_cut_and_counted_as_libpcap_does() {
    let test = "records_longer_than_the_snap_length_are_cut_and_counted_as_libpcap_does";
    if !common::privileged(test) || !have(test, "tcpdump") {
        return;
    }
    let scratch = Scratch::new("snap");
    let frame = ipv4_frame(Ipv4Addr::new(198, 18, 8, 1), &[], 200);
    let len = frame.len() as u32;
    // Snap length 96, but the records hold the whole frame.
    let path = scratch.path("over-snap.pcap");
    std::fs::write(
        &path,
        pcap_le(96, &[(&frame, len), (&frame, len), (&frame[..60], len)]),
    )
    .unwrap();
    assert_eq!(tcpdump_reads(&path).len(), 3, "tcpdump reads the file");
    let output = replay(&["--format", "json", &path.display().to_string()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("2 records were longer than the snap length and were cut to it"),
        "{}",
        stderr(&output)
    );
    let report = &reports(&output)[0];
    assert_eq!(source(report, "198.18.8.1"), Some((3, 3 * u64::from(len))));
}

/// An IPv4 frame whose header carries `options` bytes of options (NOPs).
fn ipv4_with_options(source: Ipv4Addr, options: usize) -> Vec<u8> {
    let mut frame = ipv4_frame(source, &[], 40);
    let header = 20 + options;
    let at = 14;
    frame[at] = 0x40 | (header / 4) as u8;
    frame.splice(at + 20..at + 20, std::iter::repeat_n(1u8, options));
    let total = (frame.len() - at) as u16;
    frame[at + 2..at + 4].copy_from_slice(&total.to_be_bytes());
    frame
}

#[test]
fn a_header_the_snap_length_cut_after_the_source_counts_as_live_counted_it() {
    let test = "a_header_the_snap_length_cut_after_the_source_counts_as_live_counted_it";
    if !common::privileged(test) || !have(test, "tcpdump") {
        return;
    }
    let scratch = Scratch::new("cut-headers");
    // IPv6 cut at 38 bytes (tcpdump -s 38: the source is in, the
    // destination is not); IPv4 with 40 bytes of options cut at 68 (the
    // source is in, the options are not); IPv4 cut at 24 (no source).
    let v6 = ipv6_frame(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xc, 1), &[], 60);
    let v4 = ipv4_with_options(Ipv4Addr::new(198, 18, 12, 1), 40);
    let no_source = ipv4_frame(Ipv4Addr::new(198, 18, 12, 2), &[], 40);
    let path = scratch.path("cut.pcap");
    std::fs::write(
        &path,
        pcap_le(
            68,
            &[
                (&v6[..38], v6.len() as u32),
                (&v4[..68], v4.len() as u32),
                (&no_source[..24], no_source.len() as u32),
            ],
        ),
    )
    .unwrap();
    let read = tcpdump_reads(&path);
    assert_eq!(read.len(), 3, "tcpdump reads the file: {read:?}");
    let output = replay(&["--format", "json", &path.display().to_string()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = &reports(&output)[0];
    assert_eq!(
        source(report, "2001:db8::c:1"),
        Some((1, v6.len() as u64)),
        "{report}"
    );
    assert_eq!(
        source(report, "198.18.12.1"),
        Some((1, v4.len() as u64)),
        "{report}"
    );
    assert_eq!(source(report, "198.18.12.2"), None);
    assert_eq!(report["totals"]["malformed"]["packets"], 1, "{report}");
    assert_eq!(report["totals"]["ipv4"]["packets"], 1);
    assert_eq!(report["totals"]["ipv6"]["packets"], 1);

    // The same through a real capture cut at 38 bytes, live beside it.
    let net = TestNet::new();
    let cut = scratch.path("tcpdump-s38.pcap");
    let mut tool = start_capture(
        &net,
        "tcpdump",
        &[
            "-i",
            "xs0",
            "-n",
            "-U",
            "-s",
            "38",
            "-c",
            "5",
            "-w",
            cut.to_str().unwrap(),
            // Only the test's frames, whatever else the link might carry.
            "ip6",
        ],
    );
    let deadline = Instant::now() + PATIENCE;
    while frames_in(&cut) < 5 && Instant::now() < deadline {
        net.send(&v6, 1);
        std::thread::sleep(Duration::from_millis(20));
    }
    common::wait_with_timeout(&mut tool);
    let output = replay(&["--format", "json", cut.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = &reports(&output)[0];
    assert_eq!(
        source(report, "2001:db8::c:1"),
        Some((5, 5 * v6.len() as u64)),
        "{report}"
    );
    assert_eq!(report["totals"]["malformed"]["packets"], 0, "{report}");
}

#[test]
fn frames_longer_than_the_kernel_runs_count_their_whole_length() {
    let test = "frames_longer_than_the_kernel_runs_count_their_whole_length";
    if !common::privileged(test) {
        return;
    }
    let scratch = Scratch::new("long");
    // A GRO-sized frame, a BIG TCP one, and a 64 KB one cut to 96 bytes.
    // (Their IP length fields say less, as BIG TCP's do.)
    let mut big = ipv4_frame(Ipv4Addr::new(198, 18, 9, 1), &[], 1000);
    big.resize(100_000, 0xab);
    let mut bigger = ipv6_frame(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 9, 2), &[], 1000);
    bigger.resize(200_000, 0xcd);
    let snapped = ipv4_frame(Ipv4Addr::new(198, 18, 9, 3), &[], 64);
    let path = scratch.path("long.pcap");
    std::fs::write(
        &path,
        pcap_le(
            262_144,
            &[
                (&big, big.len() as u32),
                (&bigger, bigger.len() as u32),
                (&snapped[..96.min(snapped.len())], 65_535),
            ],
        ),
    )
    .unwrap();
    assert_eq!(big.len(), 100_000);
    assert_eq!(bigger.len(), 200_000);
    let output = replay(&["--format", "json", &path.display().to_string()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = &reports(&output)[0];
    assert_eq!(source(report, "198.18.9.1"), Some((1, 100_000)));
    assert_eq!(source(report, "2001:db8::9:2"), Some((1, 200_000)));
    assert_eq!(source(report, "198.18.9.3"), Some((1, 65_535)));
    assert_eq!(total_packets(report), 3);
}

/// A pcapng block: type, total length, body padded to 4 bytes, length.
fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let padded = body.len().div_ceil(4) * 4;
    let total = (12 + padded) as u32;
    let mut out = Vec::new();
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(body);
    out.resize(8 + padded, 0);
    out.extend_from_slice(&total.to_le_bytes());
    out
}

/// Options: (code, value) each padded to 4 bytes, then the end marker.
fn options(list: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (code, value) in list {
        out.extend_from_slice(&code.to_le_bytes());
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().div_ceil(4) * 4, 0);
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

#[test]
fn obsolete_blocks_odd_options_and_impossible_timestamps_never_panic() {
    let test = "obsolete_blocks_odd_options_and_impossible_timestamps_never_panic";
    if !common::privileged(test) || !have(test, "tcpdump") {
        return;
    }
    let scratch = Scratch::new("odd");
    let frame = ipv4_frame(Ipv4Addr::new(198, 18, 10, 1), &[], 30);
    let mut file = Vec::new();
    // Section header: byte-order magic, version 1.0, unknown length, with
    // an application name and an unknown option of odd length.
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    shb.extend(options(&[(4, b"odd-writer"), (0x7777, b"abc")]));
    file.extend(block(0x0A0D_0D0A, &shb));
    // Interface 0: Ethernet, microseconds said outright, an odd option.
    let mut idb = Vec::new();
    idb.extend_from_slice(&1u16.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&0u32.to_le_bytes());
    idb.extend(options(&[(9, &[6]), (0x7778, b"x")]));
    file.extend(block(1, &idb));
    // An enhanced packet with an odd, unknown option.
    let ticks: u64 = 1_795_000_000_000_000;
    let mut epb = Vec::new();
    for word in [
        0u32,
        (ticks >> 32) as u32,
        ticks as u32,
        frame.len() as u32,
        frame.len() as u32,
    ] {
        epb.extend_from_slice(&word.to_le_bytes());
    }
    epb.extend_from_slice(&frame);
    epb.resize(epb.len().div_ceil(4) * 4, 0);
    epb.extend(options(&[(0x7779, b"12345")]));
    file.extend(block(6, &epb));
    // An obsolete Packet Block with every timestamp bit set.
    let mut opb = Vec::new();
    opb.extend_from_slice(&0u16.to_le_bytes());
    opb.extend_from_slice(&0u16.to_le_bytes());
    for word in [u32::MAX, u32::MAX, frame.len() as u32, frame.len() as u32] {
        opb.extend_from_slice(&word.to_le_bytes());
    }
    opb.extend_from_slice(&frame);
    file.extend(block(2, &opb));
    let path = scratch.path("odd.pcapng");
    std::fs::write(&path, &file).unwrap();
    let read = tcpdump_reads(&path);
    assert_eq!(read.len(), 2, "tcpdump reads both packets");
    let output = replay(&["--format", "json", &path.display().to_string()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"));
    let report = &reports(&output)[0];
    assert_eq!(
        source(report, "198.18.10.1"),
        Some((2, 2 * frame.len() as u64))
    );
    assert_eq!(
        report["time"], "9999-12-31T23:59:59Z",
        "the last frame's time, capped"
    );
    // The first frame's time in microseconds, as tcpdump reads it.
    assert_eq!(read[0].0, 1_795_000_000.0);
}

#[test]
fn pipes_standard_input_and_named_pipes_replay_and_a_silent_pipe_can_be_interrupted() {
    let test = "pipes_standard_input_and_named_pipes_replay_and_a_silent_pipe_can_be_interrupted";
    if !common::privileged(test) {
        return;
    }
    let scratch = Scratch::new("pipes");
    let frame = ipv4_frame(Ipv4Addr::new(198, 18, 11, 1), &[], 40);
    let records: Vec<(&[u8], u32)> = (0..500).map(|_| (&frame[..], frame.len() as u32)).collect();
    let file = scratch.path("file.pcap");
    std::fs::write(&file, pcap_le(65_535, &records)).unwrap();
    let expected = Some((500, 500 * frame.len() as u64));
    // cat file | xdpstat replay -
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat '{}' | '{}' replay --format json -",
            file.display(),
            env!("CARGO_BIN_EXE_xdpstat")
        ))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(source(&reports(&output)[0], "198.18.11.1"), expected);
    // xdpstat replay /dev/stdin < file
    let output = replay_command(&["--format", "json", "/dev/stdin"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(source(&reports(&output)[0], "198.18.11.1"), expected);
    // A named pipe whose writer comes later.
    let fifo = scratch.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let fifo_name = fifo.display().to_string();
    let reader = replay_command(&["--format", "json", &fifo_name])
        .spawn()
        .unwrap();
    std::fs::write(&fifo, std::fs::read(&file).unwrap()).unwrap();
    let output = reader.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(source(&reports(&output)[0], "198.18.11.1"), expected);
    // A named pipe nobody writes: Ctrl-C ends the replay at once.
    let mut waiting = replay_command(&["--format", "json", &fifo_name])
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(waiting.id() as i32);
    common::eventually("xdpstat opening the pipe", || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == fifo))
            })
            .unwrap_or(false)
    });
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = common::wait_with_timeout(&mut waiting);
    assert!(
        status.code().is_some(),
        "ended by its own hand, not the signal: {status}"
    );
}

#[test]
fn a_capture_truncated_while_it_is_replayed_ends_with_a_message_not_a_signal() {
    let test = "a_capture_truncated_while_it_is_replayed_ends_with_a_message_not_a_signal";
    if !common::privileged(test) {
        return;
    }
    let scratch = Scratch::new("shrink");
    let frame = ipv4_frame(Ipv4Addr::new(198, 18, 12, 1), &[], 1200);
    let records: Vec<(&[u8], u32)> = (0..100_000)
        .map(|_| (&frame[..], frame.len() as u32))
        .collect();
    let path = scratch.path("shrinking.pcap");
    std::fs::write(&path, pcap_le(65_535, &records)).unwrap();
    let mut child = replay_command(&["--format", "json", &path.display().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it has read into the file, cut the file to a few records.
    let pid = child.id();
    let position = || -> Option<u64> {
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
            if std::fs::read_link(fd.path()).ok()? == path {
                let info = std::fs::read_to_string(format!(
                    "/proc/{pid}/fdinfo/{}",
                    fd.file_name().to_string_lossy()
                ))
                .ok()?;
                return info
                    .lines()
                    .find_map(|l| l.strip_prefix("pos:"))
                    .and_then(|v| v.trim().parse().ok());
            }
        }
        None
    };
    common::eventually("xdpstat reading the file", || {
        position().is_some_and(|p| p > 0)
    });
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(24 + 5 * (16 + frame.len() as u64) + 7)
        .unwrap();
    let status = common::wait_with_timeout(&mut child);
    let output = child.wait_with_output().unwrap();
    assert!(
        status.code().is_some(),
        "ended by its own hand, not a signal: {status}; {}",
        stderr(&output)
    );
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    // Either it had read past the cut (a whole report) or it says where
    // the file ended; in both cases one report of what it read.
    assert_eq!(reports(&output).len(), 1);
}

#[test]
fn a_replay_of_large_frames_holds_bounded_memory() {
    let test = "a_replay_of_large_frames_holds_bounded_memory";
    if !common::privileged(test) {
        return;
    }
    let scratch = Scratch::new("memory");
    let frame = ipv4_frame(Ipv4Addr::new(198, 18, 13, 1), &[], 60_000);
    let records: Vec<(&[u8], u32)> = (0..2_000)
        .map(|_| (&frame[..], frame.len() as u32))
        .collect();
    let path = scratch.path("large.pcap");
    std::fs::write(&path, pcap_le(262_144, &records)).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    let mut child = replay_command(&["--format", "json", &path.display().to_string()])
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak_kib = 0u64;
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
            {
                peak_kib = kib;
            }
        }
        assert!(Instant::now() < deadline, "the replay did not end");
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    eprintln!("replaying {size} bytes of 60 KB frames: peak resident memory {peak_kib} KiB");
    assert!(peak_kib > 0, "memory was read while it ran");
    assert!(
        peak_kib < 64 * 1024,
        "peak resident memory {peak_kib} KiB for a {size}-byte capture"
    );
}

/// What tshark says of each IP frame of a capture, fragments not
/// reassembled: (bytes on the wire, protocol slot, fragment, SYN, TCP
/// destination port, UDP ports, source address).
type TsharkFrame = (
    u64,
    usize,
    bool,
    bool,
    Option<u16>,
    Option<(u16, u16)>,
    String,
);

fn tshark_frames(file: &Path) -> Vec<TsharkFrame> {
    let output = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args(["-o", "ip.defragment:FALSE", "-T", "fields"])
        // Fields apart by `|`, a field's values (a quoted header's) by `,`.
        .args(["-E", "separator=|", "-E", "aggregator=,"])
        .args(["-e", "frame.len", "-e", "ip.proto", "-e", "ipv6.nxt"])
        .args(["-e", "ip.flags.mf", "-e", "ip.frag_offset"])
        .args([
            "-e",
            "tcp.dstport",
            "-e",
            "tcp.flags.syn",
            "-e",
            "tcp.flags.ack",
        ])
        .args(["-e", "udp.srcport", "-e", "udp.dstport"])
        .args(["-e", "ip.src", "-e", "ipv6.src"])
        .output()
        .expect("tshark runs");
    assert!(output.status.success(), "tshark: {}", stderr(&output));
    let number = |field: &str| field.split(',').next().and_then(|n| n.parse::<u64>().ok());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            let protocol = number(f[1]).or(number(f[2]))?;
            let slot = match protocol {
                6 => 0,
                17 => 1,
                1 => 2,
                58 => 3,
                _ => 4,
            };
            // The first value of a field is the outer header's (tshark
            // also dissects the packet an ICMP error quotes).
            let flag = |field: &str| matches!(field.split(',').next(), Some("1" | "True"));
            let fragment = flag(f[3]) || number(f[4]).is_some_and(|offset| offset > 0);
            let tcp_port = number(f[5]).filter(|_| slot == 0).map(|p| p as u16);
            let syn = tcp_port.is_some() && flag(f[6]) && !flag(f[7]);
            let udp = number(f[8])
                .zip(number(f[9]))
                .filter(|_| slot == 1)
                .map(|(s, d)| (s as u16, d as u16));
            let first = |field: &str| field.split(',').next().unwrap_or("").to_owned();
            let source = Some(first(f[10]))
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| first(f[11]));
            Some((number(f[0])?, slot, fragment, syn, tcp_port, udp, source))
        })
        .collect()
}

#[test]
fn kernel_traffic_captured_by_tcpdump_replays_to_the_protocols_and_ports_tshark_reads() {
    let test = "kernel_traffic_captured_by_tcpdump_replays_to_the_protocols_and_ports_tshark_reads";
    if !common::privileged(test)
        || !have(test, "tcpdump")
        || !have(test, "tshark")
        || !have(test, "iperf3")
    {
        return;
    }
    let scratch = Scratch::new("kinds");
    let net = TestNet::new();
    let file = scratch.path("kernel-traffic.pcap");
    let file_arg = file.display().to_string();
    let mut tcpdump = start_capture(&net, "tcpdump", &["-i", "xs0", "-n", "-U", "-w", &file_arg]);
    // Real TCP (connections, handshakes, segments) and UDP datagrams over
    // the MTU that the sender's kernel fragments, to a closed port: the
    // receiver answers ICMP port unreachable. (tcpdump captures both
    // directions; the replay and tshark read the same file.)
    common::iperf3_8mb(&net, "198.18.60");
    net.sender
        .run(|| {
            let socket = std::net::UdpSocket::bind("198.18.60.2:5300").expect("bind");
            for _ in 0..5 {
                socket.send_to(&[9u8; 4000], "198.18.60.1:9").expect("send");
            }
        })
        .unwrap();
    // A last frame of an ethertype nothing else sends marks the end of the
    // traffic: once tcpdump has written it, it has written everything.
    let marker = xdpstat_lab::frames::ethernet(&[], 0x88b5, &[0u8; 46]);
    let deadline = Instant::now() + PATIENCE;
    loop {
        net.send(&marker, 1);
        let seen = Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&file)
            .arg("ether proto 0x88b5")
            .output()
            .is_ok_and(|o| !o.stdout.is_empty());
        if seen {
            break;
        }
        assert!(Instant::now() < deadline, "tcpdump never wrote the marker");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();

    let output = replay(&["--format", "json", &file_arg]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = reports(&output).remove(0);
    let frames = tshark_frames(&file);
    assert!(frames.len() > 100, "{} IP frames", frames.len());
    let sum = |keep: &dyn Fn(&TsharkFrame) -> bool| -> (u64, u64) {
        frames
            .iter()
            .filter(|f| keep(f))
            .fold((0, 0), |(p, b), f| (p + 1, b + f.0))
    };
    let totals = &report["totals"];
    for (slot, name) in ["tcp", "udp", "icmp", "icmpv6", "other"].iter().enumerate() {
        assert_eq!(
            pair(&totals["protocols"][name]),
            sum(&|f| f.1 == slot),
            "{name}"
        );
    }
    assert_eq!(pair(&totals["fragments"]), sum(&|f| f.2));
    assert_eq!(
        pair(&totals["fragments"]).0,
        15,
        "five datagrams, three fragments each"
    );
    assert_eq!(pair(&totals["tcp_syn"]), sum(&|f| f.3));
    assert!(pair(&totals["tcp_syn"]).0 >= 2, "iperf3's two connections");
    assert!(
        pair(&totals["protocols"]["icmp"]).0 >= 1,
        "port unreachable"
    );
    assert!(
        pair(&totals["protocols"]["icmp"]).0 >= 1,
        "port unreachable"
    );
    // Every port tshark sees, with its packets and bytes.
    let mut expected: std::collections::BTreeMap<(String, String, u16), (u64, u64)> =
        std::collections::BTreeMap::new();
    for f in &frames {
        let mut add = |protocol: &str, side: &str, port: u16| {
            let row = expected
                .entry((protocol.into(), side.into(), port))
                .or_default();
            row.0 += 1;
            row.1 += f.0;
        };
        if let Some(port) = f.4 {
            add("tcp", "dst", port);
        }
        if let Some((source, destination)) = f.5 {
            add("udp", "dst", destination);
            add("udp", "src", source);
        }
    }
    let got: std::collections::BTreeMap<(String, String, u16), (u64, u64)> = report["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                (
                    row["protocol"].as_str().unwrap().to_owned(),
                    row["side"].as_str().unwrap().to_owned(),
                    row["port"].as_u64().unwrap() as u16,
                ),
                pair(row),
            )
        })
        .collect();
    assert_eq!(got, expected);
    // Each source's packets by protocol: tcp, udp, icmp (either family),
    // other.
    let mut by_source: std::collections::BTreeMap<String, [u64; 4]> = Default::default();
    for f in &frames {
        by_source.entry(f.6.clone()).or_default()[[0, 1, 2, 2, 3][f.1]] += 1;
    }
    let got: std::collections::BTreeMap<String, [u64; 4]> = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let p = &row["protocols"];
            let counts = ["tcp", "udp", "icmp", "other"].map(|name| p[name].as_u64().unwrap());
            (row["address"].as_str().unwrap().to_owned(), counts)
        })
        .collect();
    assert_eq!(got, by_source, "sources by protocol");

    // The same capture under rules on what the traffic is: SYNs, UDP to
    // port 9 (only first fragments carry the port) and ICMP dropped, each
    // rule's hits what tshark reads of its kind.
    let rules = scratch.write(
        "rules.toml",
        "mode = \"enforce\"\n[[rule]]\nprotocol = \"tcp\"\ntcp_flags = \"syn\"\naction = \"drop\"\n[[rule]]\nprotocol = \"udp\"\ndst_port = 9\naction = \"drop\"\n[[rule]]\nprotocol = \"icmp\"\naction = \"drop\"\n",
    );
    let output = replay(&[
        "--format",
        "json",
        "--rules",
        rules.to_str().unwrap(),
        &file_arg,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let ruled = reports(&output).remove(0);
    let syns = sum(&|f| f.3);
    let to_port_9 = sum(&|f| f.5.is_some_and(|(_, d)| d == 9));
    let icmp = sum(&|f| f.1 == 2);
    assert_eq!(to_port_9.0, 5, "five first fragments");
    let hits = |protocol: &str| -> (u64, u64) {
        let row = ruled["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rule| rule["protocol"] == protocol)
            .unwrap_or_else(|| panic!("no {protocol} rule in {ruled}"));
        pair(row)
    };
    assert_eq!(hits("tcp"), syns);
    assert_eq!(hits("udp"), to_port_9);
    assert_eq!(hits("icmp"), icmp);
    let dropped = pair(&ruled["totals"]["verdicts"]["dropped"]);
    assert_eq!(
        dropped,
        (syns.0 + to_port_9.0 + icmp.0, syns.1 + to_port_9.1 + icmp.1)
    );
    let ip = sum(&|_| true);
    let passed = pair(&ruled["totals"]["verdicts"]["passed"]);
    let others = pair(&ruled["totals"]["non_ip"]).0 + pair(&ruled["totals"]["malformed"]).0;
    assert_eq!(passed.0, ip.0 - dropped.0 + others);
}
