//! `xdpstat replay`: captures of every format and byte order the project
//! writes itself, FCS handling, link types it refuses, bad input of every
//! kind, the committed corpus against its expected reports, and the same
//! frames sent live over veth and replayed giving the same report.

mod common;

use std::{
    borrow::Cow,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use common::{
    Scratch, TestNet, Xdpstat, ipv4_frame, ipv6_frame, pair, reports, source, stderr_of as stderr,
    total_packets,
};
use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock,
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            simple_packet::SimplePacketBlock,
        },
    },
};
use serde_json::Value;
use xdpstat_lab::frames::{self, VlanTag, ethertype};

fn a() -> Vec<u8> {
    ipv4_frame(Ipv4Addr::new(198, 18, 0, 1), &[], 100)
}
fn b() -> Vec<u8> {
    ipv4_frame(Ipv4Addr::new(198, 18, 200, 2), &[VlanTag::dot1q(7)], 30)
}
fn c() -> Vec<u8> {
    ipv6_frame(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xc), &[], 60)
}
fn arp() -> Vec<u8> {
    frames::ethernet(
        &[],
        ethertype::ARP,
        &frames::arp_request(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)),
    )
}

/// The frames every format test writes: 3 x a, 2 x b, 1 x c, 1 ARP.
fn traffic() -> Vec<Vec<u8>> {
    vec![a(), b(), a(), c(), arp(), b(), a()]
}

fn pcap(
    frames: &[Vec<u8>],
    endianness: Endianness,
    resolution: TsResolution,
    link: u32,
) -> Vec<u8> {
    let header = PcapHeader {
        endianness,
        ts_resolution: resolution,
        datalink: DataLink::from(link),
        snaplen: 65_535,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (n, frame) in frames.iter().enumerate() {
        let timestamp = Duration::from_secs(1_795_000_000) + Duration::from_millis(n as u64 * 250);
        writer
            .write_packet(&PcapPacket::new(timestamp, frame.len() as u32, frame))
            .unwrap();
    }
    writer.into_writer()
}

fn interface(fcs_bits: Option<u8>) -> InterfaceDescriptionBlock<'static> {
    InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        // pcap-file writes enhanced-packet timestamps in nanoseconds, which
        // the interface must say (the pcapng default is microseconds).
        options: std::iter::once(InterfaceDescriptionOption::IfTsResol(9))
            .chain(fcs_bits.map(InterfaceDescriptionOption::IfFcsLen))
            .collect(),
    }
}

/// pcapng with two interfaces; frames alternate between an enhanced packet
/// block on interface 1 and a simple packet block (interface 0), with an
/// unknown block in the middle.
fn pcapng(frames: &[Vec<u8>], endianness: Endianness) -> Vec<u8> {
    let mut writer = PcapNgWriter::with_endianness(Vec::new(), endianness).unwrap();
    writer.write_pcapng_block(interface(None)).unwrap();
    writer.write_pcapng_block(interface(None)).unwrap();
    for (n, frame) in frames.iter().enumerate() {
        if n % 2 == 0 {
            writer
                .write_pcapng_block(EnhancedPacketBlock {
                    interface_id: 1,
                    timestamp: Duration::from_secs(1_795_000_000 + n as u64),
                    original_len: frame.len() as u32,
                    data: Cow::Borrowed(frame),
                    options: vec![],
                })
                .unwrap();
        } else {
            writer
                .write_pcapng_block(SimplePacketBlock {
                    original_len: frame.len() as u32,
                    data: Cow::Borrowed(frame),
                })
                .unwrap();
        }
        if n == 2 {
            // Block type 0x00000BAD, 16 bytes: type, length, 4 bytes, length.
            let word = |v: u32| match endianness {
                Endianness::Big => v.to_be_bytes(),
                Endianness::Little => v.to_le_bytes(),
            };
            let out = writer.get_mut();
            for v in [0xBAD, 16, 0x1234_5678, 16] {
                out.extend_from_slice(&word(v));
            }
        }
    }
    writer.get_mut().clone()
}

fn replay(args: &[&str], files: &[&Path]) -> Output {
    let words: Vec<&str> = std::iter::once("replay")
        .chain(args.iter().copied())
        .collect();
    let mut command = common::xdpstat_command(None, &[], &words);
    command.args(files);
    command.output().expect("xdpstat runs")
}

/// The report of `traffic()`, whatever the format.
fn assert_traffic(report: &Value) {
    let len = |f: Vec<u8>| f.len() as u64;
    assert_eq!(source(report, "198.18.0.1"), Some((3, 3 * len(a()))));
    assert_eq!(source(report, "198.18.200.2"), Some((2, 2 * len(b()))));
    assert_eq!(source(report, "2001:db8::c"), Some((1, len(c()))));
    assert_eq!(pair(&report["totals"]["non_ip"]), (1, len(arp())));
    assert_eq!(pair(&report["totals"]["malformed"]), (0, 0));
    assert_eq!(pair(&report["unattributed"]), (0, 0));
    assert_eq!(report["interval_s"], Value::Null);
}

#[test]
fn every_pcap_variant_and_pcapng_byte_order_replays_exactly() {
    if !common::privileged("every_pcap_variant_and_pcapng_byte_order_replays_exactly") {
        return;
    }
    let scratch = Scratch::new("formats");
    let mut files = Vec::new();
    for (name, bytes) in [
        (
            "be-us.pcap",
            pcap(&traffic(), Endianness::Big, TsResolution::MicroSecond, 1),
        ),
        (
            "le-us.pcap",
            pcap(&traffic(), Endianness::Little, TsResolution::MicroSecond, 1),
        ),
        (
            "be-ns.pcap",
            pcap(&traffic(), Endianness::Big, TsResolution::NanoSecond, 1),
        ),
        (
            "le-ns.pcap",
            pcap(&traffic(), Endianness::Little, TsResolution::NanoSecond, 1),
        ),
        ("be.pcapng", pcapng(&traffic(), Endianness::Big)),
        ("le.pcapng", pcapng(&traffic(), Endianness::Little)),
    ] {
        let path = scratch.path(name);
        std::fs::write(&path, bytes).unwrap();
        files.push(path);
    }
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let output = replay(&["--format", "json"], &paths);
    assert!(output.status.success(), "{}", stderr(&output));
    let reports = reports(&output);
    assert_eq!(reports.len(), files.len());
    for (report, file) in reports.iter().zip(&files) {
        assert_eq!(report["interface"], file.display().to_string());
        assert_traffic(report);
    }
    // pcap timestamps 250 ms apart: 6 gaps, rates over 1.5 s.
    assert_eq!(source(&reports[0], "198.18.0.1").unwrap().0, 3);
    let pps = reports[0]["sources"][0]["pps"].as_f64().unwrap();
    assert!((pps - 2.0).abs() < 1e-9, "3 packets over 1.5 s: {pps}");
}

#[test]
fn the_fcs_is_stripped_where_the_capture_says_it_is_there() {
    if !common::privileged("the_fcs_is_stripped_where_the_capture_says_it_is_there") {
        return;
    }
    let scratch = Scratch::new("fcs");
    let with_fcs: Vec<Vec<u8>> = traffic()
        .into_iter()
        .map(|mut frame| {
            frame.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
            frame
        })
        .collect();
    // pcap: bit 26 says the FCS length is known, bits 28-31 give it in
    // 16-bit words.
    let fcs_word = 1 | 0x0400_0000 | (2 << 28);
    let pcap_path = scratch.path("fcs.pcap");
    std::fs::write(
        &pcap_path,
        pcap(
            &with_fcs,
            Endianness::Little,
            TsResolution::MicroSecond,
            fcs_word,
        ),
    )
    .unwrap();
    // pcapng: if_fcslen 32 (bits) on both interfaces.
    let mut writer = PcapNgWriter::new(Vec::new()).unwrap();
    writer.write_pcapng_block(interface(Some(32))).unwrap();
    writer.write_pcapng_block(interface(Some(32))).unwrap();
    for frame in &with_fcs {
        writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 1,
                timestamp: Duration::from_secs(1_795_000_000),
                original_len: frame.len() as u32,
                data: Cow::Borrowed(frame),
                options: vec![],
            })
            .unwrap();
    }
    let pcapng_path = scratch.path("fcs.pcapng");
    std::fs::write(&pcapng_path, writer.get_mut()).unwrap();
    let output = replay(&["--format", "json"], &[&pcap_path, &pcapng_path]);
    assert!(output.status.success(), "{}", stderr(&output));
    for report in reports(&output) {
        assert_traffic(&report);
    }
}

#[test]
fn other_link_types_are_refused_by_name_and_the_rest_still_run() {
    if !common::privileged("other_link_types_are_refused_by_name_and_the_rest_still_run") {
        return;
    }
    let scratch = Scratch::new("links");
    let raw_ip = scratch.path("raw-ip.pcap");
    std::fs::write(
        &raw_ip,
        pcap(
            &traffic(),
            Endianness::Little,
            TsResolution::MicroSecond,
            101,
        ),
    )
    .unwrap();
    let good = scratch.path("good.pcap");
    std::fs::write(
        &good,
        pcap(&traffic(), Endianness::Little, TsResolution::MicroSecond, 1),
    )
    .unwrap();
    let output = replay(&["--format", "json"], &[&raw_ip, &good]);
    assert_eq!(output.status.code(), Some(1), "some captures were refused");
    let reports = reports(&output);
    assert_eq!(reports.len(), 1);
    assert_traffic(&reports[0]);
    let errors = stderr(&output);
    assert!(
        errors.contains("raw-ip.pcap") && errors.contains("link type 101"),
        "{errors}"
    );
    assert!(errors.contains("1 of 2 captures"), "{errors}");
}

#[test]
fn bad_input_gets_one_clear_line_and_a_non_zero_exit() {
    if !common::privileged("bad_input_gets_one_clear_line_and_a_non_zero_exit") {
        return;
    }
    let scratch = Scratch::new("bad");
    let good = pcap(&traffic(), Endianness::Little, TsResolution::MicroSecond, 1);
    let write = |name: &str, bytes: &[u8]| {
        let path = scratch.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let empty = write("empty.pcap", &[]);
    let magic = write("magic.pcap", b"this is not a capture at all");
    let short_header = write("short.pcap", &good[..10]);
    // The first record claims 300,000 bytes, more than any capture holds.
    let mut long = good.clone();
    long[24 + 8..24 + 12].copy_from_slice(&300_000u32.to_le_bytes());
    let long = write("long.pcap", &long);
    // Cut in the middle of the fourth record.
    let record = |n: usize| 16 + traffic()[n].len();
    let cut_at = 24 + record(0) + record(1) + record(2) + 20;
    let cut = write("cut.pcap", &good[..cut_at]);
    let missing = scratch.path("missing.pcap");
    let directory = scratch.0.clone();
    for (file, wanted) in [
        (&empty, "empty file"),
        (&magic, "not a pcap or pcapng capture"),
        (&short_header, "ends inside a record"),
        (&long, "at byte 24: a record longer than 262144 bytes"),
        (&missing, "cannot open"),
        (&directory, "is a directory"),
    ] {
        let output = replay(&["--format", "json"], &[file]);
        let errors = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{}: {errors}",
            file.display()
        );
        assert!(errors.contains(wanted), "{}: {errors}", file.display());
        assert!(!errors.contains("panicked"), "{errors}");
    }
    // The live view is no format for a replay.
    let output = replay(&["--format", "tui"], &[&good_path(&scratch, &good)]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--format plain or --format json"));
    // A cut file: the three whole records are reported, the offset named.
    let output = replay(&["--format", "json"], &[&cut]);
    assert_eq!(output.status.code(), Some(1));
    let errors = stderr(&output);
    let offset = 24 + record(0) + record(1) + record(2);
    assert!(
        errors.contains(&format!("at byte {offset}: the file ends inside a record")),
        "{errors}"
    );
    assert!(
        errors.contains("the report holds the 3 frames before it"),
        "{errors}"
    );
    let reports = reports(&output);
    assert_eq!(total_packets(&reports[0]), 3);
}

fn good_path(scratch: &Scratch, bytes: &[u8]) -> PathBuf {
    let path = scratch.path("good.pcap");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn the_committed_corpus_replays_to_its_expected_reports() {
    if !common::privileged("the_committed_corpus_replays_to_its_expected_reports") {
        return;
    }
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut captures: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|e| e == "pcap" || e == "pcapng")
        })
        .collect();
    captures.sort();
    assert!(captures.len() >= 3, "the corpus is there");
    for capture in captures {
        let output = replay(&["--format", "json"], &[&capture]);
        assert!(
            output.status.success(),
            "{}: {}",
            capture.display(),
            stderr(&output)
        );
        let mut report = reports(&output).remove(0);
        // The file name is where the test runs it from; the rest must match.
        report["interface"] = Value::String(capture.file_name().unwrap().to_string_lossy().into());
        let expected_path = capture.with_extension("expected.json");
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap()).unwrap();
        assert_eq!(
            report,
            expected,
            "{} against {}",
            capture.display(),
            expected_path.display()
        );
    }
}

#[test]
fn frames_sent_live_and_the_same_frames_replayed_give_the_same_report() {
    if !common::privileged("frames_sent_live_and_the_same_frames_replayed_give_the_same_report") {
        return;
    }
    let mut sent = Vec::new();
    for round in 0..20u8 {
        sent.push(ipv4_frame(
            Ipv4Addr::new(198, 18, 1, round % 7),
            &[],
            40 + usize::from(round),
        ));
        sent.push(ipv6_frame(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, u16::from(round % 3)),
            &[VlanTag::dot1ad(5), VlanTag::dot1q(6)],
            20,
        ));
        if round % 5 == 0 {
            sent.push(arp());
            let mut bad = a();
            bad[14] = 0x44; // IHL 4
            sent.push(bad);
        }
    }
    let net = TestNet::new();
    let mut live = Xdpstat::start(
        &net.watched,
        &["--format", "json", "--interval", "0.2", "xs0"],
    );
    for frame in &sent {
        net.send(frame, 1);
    }
    let live_report = live.report_where(|r| total_packets(r) >= sent.len() as u64);
    drop(live);
    let scratch = Scratch::new("live");
    let file = scratch.path("live.pcap");
    std::fs::write(
        &file,
        pcap(&sent, Endianness::Little, TsResolution::NanoSecond, 1),
    )
    .unwrap();
    let output = replay(&["--format", "json"], &[&file]);
    assert!(output.status.success(), "{}", stderr(&output));
    let replayed = reports(&output).remove(0);
    assert_eq!(replayed["totals"], live_report["totals"]);
    assert_eq!(replayed["unattributed"], live_report["unattributed"]);
    let counts = |report: &Value| -> Vec<(String, u64, u64)> {
        let mut rows: Vec<(String, u64, u64)> = report["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["address"].as_str().unwrap().to_owned(),
                    s["packets"].as_u64().unwrap(),
                    s["bytes"].as_u64().unwrap(),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(counts(&replayed), counts(&live_report));
    assert_eq!(counts(&replayed).len(), 7 + 3);
}

/// Writes the corpus under tests/corpus and its expected reports (from
/// xdpstat itself, to be read and checked by hand before committing):
/// `XDPSTAT_WRITE_CORPUS=1 cargo test --test replay write_the_corpus -- --ignored`.
#[test]
#[ignore = "writes the corpus; run it by name with --ignored and XDPSTAT_WRITE_CORPUS=1"]
fn write_the_corpus() {
    assert!(
        std::env::var_os("XDPSTAT_WRITE_CORPUS").is_some(),
        "set XDPSTAT_WRITE_CORPUS=1 to overwrite tests/corpus"
    );
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let mut mixed = traffic();
    let mut malformed = a();
    malformed[14] = 0x65;
    mixed.push(malformed);
    mixed.push(frames::ethernet(
        &[VlanTag::dot1ad(1), VlanTag::dot1q(2)],
        ethertype::IPV4,
        &frames::ipv4_packet(
            Ipv4Addr::new(198, 19, 0, 9),
            Ipv4Addr::new(198, 19, 0, 1),
            &[1, 1, 1, 0],
            12,
        ),
    ));
    mixed.push(frames::ethernet(
        &[],
        ethertype::IPV6,
        &frames::ipv6_packet(
            Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 7),
            Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 1),
            &[(0, vec![0; 8]), (60, vec![0; 16])],
            8,
        ),
    ));
    mixed.push(mixed[0][..20].to_vec());
    let cut_to_snaplen = {
        let header = PcapHeader {
            snaplen: 96,
            endianness: Endianness::Big,
            ts_resolution: TsResolution::NanoSecond,
            ..PcapHeader::default()
        };
        let mut writer = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (n, size) in [1400usize, 60, 9000].into_iter().enumerate() {
            let frame = ipv4_frame(Ipv4Addr::new(198, 18, 9, n as u8), &[], size);
            let kept = frame.len().min(96);
            writer
                .write_packet(&PcapPacket::new(
                    Duration::from_secs(1_795_000_000 + n as u64),
                    frame.len() as u32,
                    &frame[..kept],
                ))
                .unwrap();
        }
        writer.into_writer()
    };
    for (name, bytes) in [
        (
            "mixed-le-us.pcap",
            pcap(&mixed, Endianness::Little, TsResolution::MicroSecond, 1),
        ),
        ("mixed-be.pcapng", pcapng(&mixed, Endianness::Big)),
        ("fcs-be-ns.pcap", {
            let with_fcs: Vec<Vec<u8>> = mixed
                .iter()
                .map(|f| [f.as_slice(), &[1, 2, 3, 4]].concat())
                .collect();
            pcap(
                &with_fcs,
                Endianness::Big,
                TsResolution::NanoSecond,
                1 | 0x0400_0000 | (2 << 28),
            )
        }),
        ("snaplen-96.pcap", cut_to_snaplen),
    ] {
        let path = corpus.join(name);
        std::fs::write(&path, bytes).unwrap();
        let output = replay(&["--format", "json"], &[&path]);
        assert!(output.status.success(), "{}", stderr(&output));
        let mut report = reports(&output).remove(0);
        report["interface"] = Value::String(name.into());
        std::fs::write(
            path.with_extension("expected.json"),
            serde_json::to_string_pretty(&report).unwrap() + "\n",
        )
        .unwrap();
    }
}

/// The replay build is verified only once a frame needs it: here whole
/// frames fill many batches first (run through the plain build on every
/// worker), then frames cut by the snap length and jumbo frames come, in
/// more than one batch, so the reader and the workers may all want the
/// replay build at once. Every frame is counted exactly, at its length on
/// the wire.
#[test]
fn frames_that_need_the_replay_build_late_in_a_capture_count_exactly() {
    if !common::privileged("frames_that_need_the_replay_build_late_in_a_capture_count_exactly") {
        return;
    }
    let scratch = Scratch::new("late-replay-build");
    let whole = ipv4_frame(Ipv4Addr::new(198, 18, 0, 1), &[], 100);
    let cut_source = Ipv4Addr::new(198, 18, 0, 2);
    let long = ipv4_frame(cut_source, &[], 1400);
    let jumbo = ipv6_frame(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9), &[], 8000);
    let mut writer = PcapWriter::new(Vec::new()).unwrap();
    let mut at = Duration::from_secs(1_795_000_000);
    let mut write = |frame: &[u8], captured: usize| {
        at += Duration::from_micros(1);
        writer
            .write_packet(&PcapPacket::new(at, frame.len() as u32, &frame[..captured]))
            .unwrap();
    };
    const WHOLE: u64 = 20_000;
    const CUT: u64 = 3_000;
    const JUMBO: u64 = 500;
    for _ in 0..WHOLE {
        write(&whole, whole.len());
    }
    for n in 0..CUT {
        write(&long, 96);
        if n < JUMBO {
            write(&jumbo, jumbo.len());
        }
    }
    let path = scratch.write("late.pcap", writer.into_writer());
    let output = replay(&["--format", "json"], &[&path]);
    assert!(output.status.success(), "{}", stderr(&output));
    let reports = reports(&output);
    let report = &reports[0];
    let len = |frame: &Vec<u8>| frame.len() as u64;
    assert_eq!(
        source(report, "198.18.0.1"),
        Some((WHOLE, WHOLE * len(&whole)))
    );
    assert_eq!(source(report, "198.18.0.2"), Some((CUT, CUT * len(&long))));
    assert_eq!(
        source(report, "2001:db8::9"),
        Some((JUMBO, JUMBO * len(&jumbo)))
    );
    assert_eq!(total_packets(report), WHOLE + CUT + JUMBO);
    assert_eq!(pair(&report["unattributed"]), (0, 0));
}
