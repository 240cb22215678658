//! `cargo bench`: measures xdpstat's datapath and reports against the floor
//! and the seed design in one run and prints the table BENCHMARKS.md
//! explains. Needs root (it loads programs and makes namespaces), like the
//! tests. `XDPSTAT_BENCH_SCALE=0.1` runs a smaller, quicker version.

use std::{
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use xdpstat::kernel::{
    datapath::{Datapath, Load, capture},
    privilege::{Needs, check_capabilities},
};
use xdpstat_bench::{
    growth::{self, PerPacket},
    measure::{self, Flood, HotSource, OverVeth, ReportCost, ReportSetup},
    replay::{self, ReplaySpeed},
    rules::{self, BesideXdpFilter, RulesRow},
    traffic::{self, Link},
};
use xdpstat_common::DEFAULT_MAX_SOURCES;

/// The child-process mode that measures report cost and memory.
const PROBE: &str = "--report-cost-probe";

const ZIPF_SOURCES: u32 = 20_000;
const ROUNDS: usize = 5;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xdpstat bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == PROBE) {
        return probe(args.get(at + 1).context("probe setup")?);
    }
    check_capabilities(Needs::AttachAndNamespaces)
        .map_err(|e| anyhow::anyhow!("the benchmarks need root: {e}"))?;
    let scale: f64 = std::env::var("XDPSTAT_BENCH_SCALE")
        .ok()
        .map(|s| s.parse())
        .transpose()
        .context("XDPSTAT_BENCH_SCALE")?
        .unwrap_or(1.0);
    let scaled = |n: f64| (n * scale).max(1.0) as usize;
    // XDPSTAT_BENCH_ONLY=hot,zipf,flood,replay,rules,reads,report,verifier,growth picks sections (all by default).
    let only = std::env::var("XDPSTAT_BENCH_ONLY").unwrap_or_default();
    let wanted = |section: &str| only.is_empty() || only.split(',').any(|s| s == section);
    let started = Instant::now();
    header();

    if wanted("hot") {
        let repeat = scaled(5_000_000.0) as u32;
        let hot = measure::hot_source(repeat, ROUNDS)?;
        print_hot(&hot, repeat);
    }
    if wanted("zipf") || wanted("flood") {
        let link = Link::new()?;
        let zipf_packets = scaled(200_000.0);
        let sources = traffic::zipf_sources(zipf_packets, ZIPF_SOURCES, 7)?;
        let frames: Vec<Vec<u8>> = sources.iter().map(|&n| traffic::ipv4_frame(n)).collect();
        let zipf = measure::over_veth(&link, &frames, ROUNDS)?;
        if wanted("zipf") {
            print_zipf(&zipf, zipf_packets);
        }
        if wanted("flood") {
            let (flood_sources, big_sent) = traffic::flood_sources(scaled(300_000.0), 3, 0.05, 11);
            let flood = measure::flood(&link, &flood_sources, &big_sent, 3)?;
            print_flood(&flood, &zipf);
        }
        if wanted("flood") || wanted("rules") {
            let (flood_sources, _) = traffic::flood_sources(scaled(300_000.0), 3, 0.05, 11);
            let under = rules::flood_under_rules(&link, &flood_sources, 3)?;
            print_flood_under_rules(&under);
        }
    }
    if wanted("replay") {
        let speed = replay::replay_speed(scaled(2_000_000.0), 3)?;
        print_replay(&speed);
    }
    if wanted("rules") {
        let link = Link::new()?;
        let zipf_packets = scaled(200_000.0);
        let sources = traffic::zipf_sources(zipf_packets, ZIPF_SOURCES, 7)?;
        let frames: Vec<Vec<u8>> = sources.iter().map(|&n| traffic::ipv4_frame(n)).collect();
        let repeat = scaled(1_000_000.0) as u32;
        let rows = rules::rules_cost(&link, &frames, repeat, ROUNDS)?;
        print_rules(&rows, repeat, zipf_packets);
        if which::which("xdp-filter").is_ok() {
            for filtered in [rules::Filtered::Addresses, rules::Filtered::SourcePort] {
                let beside =
                    rules::beside_xdp_filter(&link, &sources, scaled(1_000.0), filtered, ROUNDS)?;
                print_beside_xdp_filter(&beside);
            }
        } else {
            println!("8. Beside xdp-filter: skipped, xdp-filter is not installed\n");
        }
        // Full size at every scale: it takes well under a second.
        let read = rules::file_read(32_768, 1_000_000, ROUNDS)?;
        print_file_read(&read);
        let capture = rules::capture_cost(scaled(1_000_000.0) as u32, ROUNDS)?;
        print_capture_cost(&capture);
    }
    if wanted("rules") || wanted("reads") {
        let costs = rules::read_costs(ROUNDS)?;
        print_read_costs(&costs);
    }
    if wanted("verifier") {
        let capturing = Datapath::load_with(Load {
            capture: Some(capture::Settings {
                verdicts: 0b11111,
                snaplen: 1024,
                rate: Some(1000),
            }),
            ..Load::new(DEFAULT_MAX_SOURCES)
        })?;
        print_verifier(&Datapath::load(DEFAULT_MAX_SOURCES)?, &capturing);
    }
    if wanted("report") {
        let million = scaled(1_000_000.0) as u32;
        let setup = ReportSetup {
            sources: million,
            rows: false,
            json: true,
            other_reads: true,
            live_view: false,
            newcomers: 0,
            rounds: ROUNDS,
        };
        let plain = report_cost_in_child(setup)?;
        let ruled = report_cost_in_child(ReportSetup {
            rows: true,
            json: false,
            other_reads: false,
            ..setup
        })?;
        let live = report_cost_in_child(ReportSetup {
            json: false,
            other_reads: false,
            live_view: true,
            ..setup
        })?;
        let joining = report_cost_in_child(ReportSetup {
            json: false,
            other_reads: false,
            newcomers: NEWCOMERS,
            ..setup
        })?;
        print_report_cost(&plain, &ruled, &live, &joining);
    }
    if wanted("growth") {
        let mut rows = Vec::new();
        for sources in [1_000, 10_000, 100_000, 1_000_000] {
            let sources = scaled(f64::from(sources)) as u32;
            let per_packet = growth::per_packet_at(sources, 3)?;
            let read = report_cost_in_child(ReportSetup {
                sources,
                rows: false,
                json: false,
                other_reads: false,
                live_view: false,
                newcomers: 0,
                rounds: ROUNDS,
            })?;
            rows.push((sources, per_packet, read));
        }
        print_growth(&rows);
    }
    println!(
        "\nAll measurements took {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs the report-cost measurement in a fresh process, so the resident
/// memory it states is that of xdpstat's loop alone.
fn report_cost_in_child(setup: ReportSetup) -> Result<ReportCost> {
    let output = Command::new(std::env::current_exe()?)
        .args([PROBE, &serde_json::to_string(&setup)?])
        .output()
        .context("starting the report-cost probe")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "report-cost probe failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let line = stdout.lines().last().context("probe printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("probe output {line:?}"))
}

fn probe(setup: &str) -> Result<()> {
    let setup: ReportSetup = serde_json::from_str(setup).context("probe setup")?;
    let cost = measure::report_cost(setup)?;
    println!("{}", serde_json::to_string(&cost)?);
    Ok(())
}

fn header() {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "xdpstat benchmarks: Linux {}, {cpus} CPUs, {}\n",
        kernel.trim(),
        humantime_now()
    );
}

fn humantime_now() -> String {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("unix time {secs}")
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT MET" }
}

fn print_hot(hot: &HotSource, repeat: u32) {
    println!(
        "1. Hot source: one 64-byte IPv4 frame, BPF_PROG_TEST_RUN x {repeat}, median of {ROUNDS} (ns per packet)"
    );
    let over = |ns: f64| ns - hot.floor;
    println!("   {:<34} {:>9} {:>9}", "program", "ns/pkt", "overhead");
    println!(
        "   {:<34} {:>9.1} {:>9}",
        "floor (XDP_PASS only)", hot.floor, "-"
    );
    for (name, ns) in [
        ("seed, 16 entries", hot.seed_16),
        ("seed, 65,536 entries", hot.seed_65536),
        ("xdpstat", hot.xdpstat),
        ("xdpstat, multi-buffer build", hot.xdpstat_frags),
        ("xdpstat, IPv6 frame", hot.xdpstat_ipv6),
        ("xdpstat, --hook tcx", hot.xdpstat_tcx),
    ] {
        println!("   {name:<34} {ns:>9.1} {:>9.1}", over(ns));
    }
    let seed = over(hot.seed_16).min(over(hot.seed_65536));
    let ratio = over(hot.xdpstat) / seed;
    println!(
        "   xdpstat overhead / seed overhead = {ratio:.2} (target <= 0.50: {})\n",
        verdict(ratio <= 0.5)
    );
}

fn print_zipf(zipf: &OverVeth, packets: usize) {
    println!(
        "2. Many sources over veth: {packets} frames from {ZIPF_SOURCES} Zipf-spread sources per pass, \
         kernel run-time stats, median of {ROUNDS} (ns per packet)"
    );
    println!("   {:<34} {:>9} {:>9}", "program", "ns/pkt", "overhead");
    println!(
        "   {:<34} {:>9.1} {:>9}",
        "floor (XDP_PASS only)", zipf.floor, "-"
    );
    println!(
        "   {:<34} {:>9.1} {:>9.1}",
        "seed, 65,536 entries",
        zipf.seed_65536,
        zipf.seed_65536 - zipf.floor
    );
    println!(
        "   {:<34} {:>9.1} {:>9.1}",
        "xdpstat",
        zipf.xdpstat,
        zipf.xdpstat - zipf.floor
    );
    println!(
        "   {:<34} {:>9.1} {:>9.1}",
        "xdpstat, --hook tcx",
        zipf.xdpstat_tcx,
        zipf.xdpstat_tcx - zipf.floor
    );
    let ratio = (zipf.xdpstat - zipf.floor) / (zipf.seed_65536 - zipf.floor);
    println!(
        "   xdpstat overhead / seed overhead = {ratio:.2} (target <= 1.00: {}); {} runs per pass\n",
        verdict(ratio <= 1.0),
        zipf.packets
    );
}

fn print_flood(flood: &Flood, zipf: &OverVeth) {
    println!(
        "5. Spoofed-source flood over veth: {} distinct sources, 3 of them sending 5% each; \
         tables planned for 65,536 sources (131,072 entries)",
        flood.distinct
    );
    println!("   {:<34} {:>9} {:>9}", "program", "ns/pkt", "overhead");
    println!(
        "   {:<34} {:>9.1} {:>9}",
        "floor (XDP_PASS only)", flood.floor, "-"
    );
    println!(
        "   {:<34} {:>9.1} {:>9.1}",
        "seed, 65,536 entries",
        flood.seed_65536,
        flood.seed_65536 - flood.floor
    );
    println!(
        "   {:<34} {:>9.1} {:>9.1}",
        "xdpstat",
        flood.xdpstat,
        flood.xdpstat - flood.floor
    );
    println!(
        "   xdpstat under flood / on Zipf traffic = {:.2} (overhead {:.1} vs {:.1} ns)",
        (flood.xdpstat - flood.floor) / (zipf.xdpstat - zipf.floor),
        flood.xdpstat - flood.floor,
        zipf.xdpstat - zipf.floor
    );
    let exact = flood.reported_total == flood.runs;
    println!(
        "   report after two passes with housekeeping every 200 ms ({} idle entries retired):",
        flood.retired
    );
    println!(
        "   {} IPv4 packets for {} program runs ({}), {} unattributed, {} sources listed",
        flood.reported_total,
        flood.runs,
        if exact { "exact" } else { "NOT EXACT" },
        flood.unattributed,
        flood.listed
    );
    for (n, (sent, reported)) in flood.big.iter().enumerate() {
        println!(
            "   big sender {}: sent {sent}, reported {reported} ({})",
            traffic::benchmark_address(n as u32),
            if reported == sent {
                "visible, every packet"
            } else if *reported > 0 {
                "visible"
            } else {
                "NOT VISIBLE"
            }
        );
    }
    if let Some(top) = &flood.top_prefix {
        let within = top.reported >= top.sent && top.reported <= top.sent + top.error_packets;
        println!(
            "   top prefix {}: sent {}, reported {} ({}, bound +{}: {})",
            top.prefix,
            top.sent,
            top.reported,
            if top.estimated {
                "partly estimated"
            } else {
                "exact"
            },
            top.error_packets,
            if within { "within" } else { "NOT WITHIN" }
        );
    }
    println!();
}

fn print_replay(speed: &ReplaySpeed) {
    let rate = |seconds: f64| speed.frames as f64 / seconds / 1e6;
    println!(
        "6. Replay: {} 64-byte frames from {} Zipf-spread sources in a pcap file, through\n   \
         BPF_PROG_TEST_RUN on every CPU, median of 3 (seconds, from start to the last frame)",
        speed.frames, speed.sources
    );
    println!(
        "   {:<44}{:>8.2} s {:>6.2} M frames/s",
        "the same reader and workers, XDP_PASS only",
        speed.floor,
        rate(speed.floor)
    );
    let ratio = speed.xdpstat / speed.floor;
    println!(
        "   {:<44}{:>8.2} s {:>6.2} M frames/s  {ratio:.2} x the floor (target <= 1.30: {})",
        "xdpstat replay",
        speed.xdpstat,
        rate(speed.xdpstat),
        verdict(ratio <= 1.3)
    );
    let ratio = speed.xdpstat_rules / speed.floor;
    println!(
        "   {:<44}{:>8.2} s {:>6.2} M frames/s  {ratio:.2} x the floor (target <= 1.30: {})",
        "xdpstat replay --rules (8 rules, no limit)",
        speed.xdpstat_rules,
        rate(speed.xdpstat_rules),
        verdict(ratio <= 1.3)
    );
    println!(
        "   {:<44}{:>8.2} s  (in each xdpstat replay above)",
        "of which loading the program", speed.load
    );
    match speed.tshark {
        Some(tshark) => {
            let faster = tshark / speed.xdpstat;
            let faster_rules = tshark / speed.xdpstat_rules;
            println!(
                "   {:<44}{:>8.2} s {:>6.2} M frames/s  xdpstat {faster:.1} x faster, {faster_rules:.1} x with\n   \
                 {:<44}{:>8} {:>19}  rules (target >= 3: {})\n",
                "tshark -q -z endpoints,ip",
                tshark,
                rate(tshark),
                "",
                "",
                "",
                verdict(faster >= 3.0 && faster_rules >= 3.0)
            );
        }
        None => println!("   tshark: skipped, tshark is not installed\n"),
    }
}

fn print_flood_under_rules(under: &rules::FloodUnderRules) {
    let over = under.with - under.without;
    println!(
        "5b. The spoofed flood of section 5 ({} distinct sources, tables for 65,536) under\n    \
         10,000 IPv4 + 10,000 IPv6 prefixes (1,000 of them /32s inside the flood's range),\n    \
         over veth, ns per packet, median of 3\n   \
         {:<44}{:>8.1}\n   {:<44}{:>8.1}  ({over:+.1}; target <= +50: {})\n",
        under.distinct,
        "no rules",
        under.without,
        "20,000 prefixes",
        under.with,
        verdict(over <= 50.0)
    );
}

fn print_rules(rows: &[RulesRow], repeat: u32, packets: usize) {
    println!(
        "7. Rules: ns per packet with no rules, 10 rules, 10 rules on protocols and ports (the\n   \
         traffic meets its rule on its chain's first or second step), 7 of those it walks whole\n   \
         and none matches, 10,000 bans of addresses the traffic is not from (alone and beside the\n   \
         10 rules), --capture of drops and limits (none to copy), 10,000 IPv4 + 10,000 IPv6 prefixes, and a list of 1,000,000 (dry run:\n   \
         the traffic is the same). Hot: one source, BPF_PROG_TEST_RUN x {repeat};\n   \
         Zipf: {packets} frames over veth (run-time statistics), median of {ROUNDS} rounds."
    );
    println!(
        "   {:<28}{:>9}{:>10}{:>10}",
        "rule set", "prefixes", "hot", "Zipf"
    );
    for row in rows {
        println!(
            "   {:<28}{:>9}{:>10.1}{:>10.1}",
            row.name, row.rules, row.hot, row.zipf
        );
    }
    if let (Some(none), Some(limit)) = (
        rows.iter().find(|r| r.name == "no rules"),
        rows.iter().find(|r| r.name == "a limit on all traffic"),
    ) {
        let over = limit.zipf - none.zipf;
        println!(
            "   a limit on all traffic over no rules: {:+.1} ns hot, {over:+.1} ns Zipf (target <= +100: {})",
            limit.hot - none.hot,
            verdict(over <= 100.0)
        );
    }
    if let (Some(none), Some(bans)) = (
        rows.iter().find(|r| r.name == "no rules"),
        rows.iter().find(|r| r.name == "10,000 bans"),
    ) {
        println!(
            "   10,000 bans over no rules: {:+.1} ns hot, {:+.1} ns Zipf",
            bans.hot - none.hot,
            bans.zipf - none.zipf
        );
    }
    for (without, with) in [
        ("no rules", "no rules, --capture"),
        ("10 rules", "10 rules, --capture"),
    ] {
        if let (Some(a), Some(b)) = (
            rows.iter().find(|r| r.name == without),
            rows.iter().find(|r| r.name == with),
        ) {
            println!(
                "   --capture beside {without}, nothing to copy: {:+.1} ns hot, {:+.1} ns Zipf",
                b.hot - a.hot,
                b.zipf - a.zipf
            );
        }
    }
    if let [none, .., most] = rows {
        println!(
            "   lookup in the largest set: {:+.1} ns hot, {:+.1} ns Zipf, over no rules\n",
            most.hot - none.hot,
            most.zipf - none.zipf
        );
    }
}

fn print_beside_xdp_filter(beside: &BesideXdpFilter) {
    let how = match beside.filtered {
        rules::Filtered::Addresses => "by address (xdp-filter ip --mode src; a /32 rule each)",
        rules::Filtered::SourcePort => {
            "by their source port 53 (xdp-filter port 53 --mode src; one rule, protocol udp, src_port 53)"
        }
    };
    println!(
        "8. Beside xdp-filter (xdp-tools): each drops the frames of the same {} source addresses,\n   \
         {how},\n   \
         from {} Zipf UDP frames over veth ({} from those addresses), native XDP,\n   \
         ns per packet, median of {ROUNDS} rounds.",
        beside.addresses, beside.packets, beside.from_dropped
    );
    println!("   {:<28}{:>10.1}", "xdp-filter", beside.xdp_filter);
    println!(
        "   {:<28}{:>10.1}   (counts every packet; dropped {} of {} sent from those addresses)\n",
        "xdpstat --rules (enforce)",
        beside.xdpstat,
        beside.xdpstat_dropped,
        2 * ROUNDS as u64 * beside.from_dropped
    );
}

fn print_file_read(read: &rules::FileRead) {
    println!(
        "9. Reading a rules file (--rules, SIGHUP, rules check): {} rules after {} comment lines,\n   \
         {:.1} MB, median of {ROUNDS} reads.",
        read.rules,
        read.lines,
        read.bytes as f64 / 1e6
    );
    println!("   {:<28}{:>10.3} s\n", "read and checked", read.seconds);
}

fn print_read_costs(costs: &rules::ReadCosts) {
    println!(
        "10. Reading counters kept per CPU (a section per CPU, mapped): median of {ROUNDS} reads\n   \
         {:<44}{:>8.2} ms (target <= 3: {})\n   {:<44}{:>8.2} ms (both sketches in it; target <= 2 a\n   \
         {:<44}{:>8}    family: {})\n",
        format!("every rule's hits, {} rules", costs.rules),
        costs.hits_ms,
        verdict(costs.hits_ms <= 3.0),
        format!("a whole snapshot, {} senders a family", costs.flood_sources),
        costs.sketch_snapshot_ms,
        "",
        "",
        verdict(costs.sketch_snapshot_ms <= 4.0)
    );
}

fn print_capture_cost(cost: &rules::CaptureCost) {
    let total = cost.written + cost.skipped;
    println!(
        "12. --capture under a drop flood: one source's frames, all dropped by a rule, BPF_PROG_TEST_RUN\n    \
         x {} ({ROUNDS} rounds), copies of drops with no budget while a thread drains the ring into a\n    \
         pcapng writer (to nowhere); median ns per packet\n   \
         {:<44}{:>8.1}\n   {:<44}{:>8.1}  ({:+.1} a copy)\n   \
         {:<44}{:>8}  ({:.0}% of {total}; the rest found the ring full: capture_skipped)\n   \
         {:<44}{:>8.0}  records a second\n",
        cost.repeat,
        "dropped, no capture",
        cost.without,
        "dropped, copied",
        cost.with,
        cost.with - cost.without,
        "written by the writer",
        cost.written,
        if total > 0 {
            cost.written as f64 * 100.0 / total as f64
        } else {
            0.0
        },
        "what the ring and writer sustained",
        cost.written as f64 / cost.seconds.max(1e-9),
    );
}

/// Sources that join between two reads in section 3/4's last process.
const NEWCOMERS: u32 = 1_000;

fn print_report_cost(
    plain: &ReportCost,
    ruled: &ReportCost,
    live: &ReportCost,
    joining: &ReportCost,
) {
    println!(
        "3./4. One report interval with {} sources ({} listed, {} packets unattributed),\n   \
         in a process of its own; CPU per interval (ms), median of {ROUNDS}: with no source\n   \
         sending since the last read, and after each sent one more packet",
        plain.sent, plain.sources, plain.unattributed
    );
    println!("   {:<44}{:>9}{:>9}", "", "idle", "all sent");
    println!(
        "   {:<44}{:>9.1}{:>9.1}  (target <= 50 ms: {})",
        "plain report, top 20 (the default)",
        plain.idle_ms,
        plain.busy_ms,
        verdict(plain.idle_ms.max(plain.busy_ms) <= 50.0)
    );
    if let Some(json) = plain.json_ms {
        println!(
            "   {:<44}{:>9}{:>9.1}",
            "JSON report of every source", "", json
        );
    }
    println!(
        "   {:<44}{:>9.1}{:>9.1}",
        "plain, with rule rows (--rules, --persist)", ruled.idle_ms, ruled.busy_ms
    );
    if let Some(mapped) = plain.mapped_ms {
        println!(
            "   {:<44}{:>9.1}{:>9}  (the read before the kernel copied sources out)",
            "plain, walking the mapped tables", mapped, ""
        );
    }
    if let Some(per_key) = plain.per_key_ms {
        let ratio = per_key / plain.idle_ms;
        println!(
            "   {:<44}{:>9.1}{:>9}  {ratio:.0} x xdpstat's read (target >= 5: {})",
            "plain, per-key reads (as most tools read)",
            per_key,
            "",
            verdict(ratio >= 5.0)
        );
    }
    if let Some(joined) = joining.newcomers_ms {
        println!(
            "   {:<44}{:>9.1}{:>9.1}{:>9.1}  (the last: after {NEWCOMERS} new sources joined)",
            "plain, where sources come and go", joining.idle_ms, joining.busy_ms, joined
        );
    }
    println!(
        "   {:<44}{:>9.1}{:>9.1}",
        "live view (--format tui), drawn 160 x 50", live.idle_ms, live.busy_ms
    );
    for (what, cost) in [("", plain), (", rule rows", ruled), (", live view", live)] {
        println!(
            "   resident memory{what:<29}{:>9.1} MB, peak {:.1} MB (target < 100 MB: {})",
            cost.rss_kib as f64 / 1024.0,
            cost.peak_rss_kib as f64 / 1024.0,
            verdict((cost.peak_rss_kib as f64 / 1024.0) < 100.0)
        );
    }
    println!();
}

/// Section 13: how cost grows with the number of sources.
fn print_growth(rows: &[(u32, PerPacket, ReportCost)]) {
    println!(
        "13. How cost grows with sources: ns per packet of a pass of at least {} frames spread\n    \
         evenly over the sources, after a pass that put them in the tables (BPF_PROG_TEST_RUN,\n    \
         kernel run-time statistics, median of 3; IPv4 sources come from 198.18.0.0/15, so\n    \
         past 131,072 there are only IPv6 ones, which the seed cannot count); tables for\n    \
         1.125 x the sources. CPU per report interval (ms; plain, top 20, in a process of its\n    \
         own, IPv4 sources first, then IPv6), idle and after every source sent a packet; peak\n    \
         resident memory",
        growth::PER_PACKET_FRAMES
    );
    println!(
        "    {:>9}{:>8}{:>9}{:>11}{:>11}{:>11}{:>11}{:>8}",
        "sources", "floor", "seed v4", "xdpstat v4", "xdpstat v6", "read idle", "read sent", "MB"
    );
    let or_dash = |value: Option<f64>, width: usize| match value {
        Some(value) => format!("{value:>width$.1}"),
        None => format!("{:>width$}", "-"),
    };
    for (sources, per_packet, read) in rows {
        println!(
            "    {:>9}{:>8.1}{}{}{:>11.1}{:>11.2}{:>11.2}{:>8.1}",
            sources,
            per_packet.floor,
            or_dash(per_packet.seed, 9),
            or_dash(per_packet.xdpstat_v4, 11),
            per_packet.xdpstat_v6,
            read.idle_ms,
            read.busy_ms,
            read.peak_rss_kib as f64 / 1024.0
        );
    }
    println!();
}

/// Section 11: what the verifier processed to load each program, against
/// the kernel's limit: the room the datapath has left to grow.
fn print_verifier(datapath: &Datapath, capturing: &Datapath) {
    const LIMIT: u32 = 1_000_000;
    println!(
        "11. Verifier: instructions processed to load each program (the kernel refuses past {LIMIT}),\n    \
         without --capture and with it (every verdict, 1024 bytes)"
    );
    let with = capturing.verified_instructions();
    for ((name, count), (_, captured)) in datapath.verified_instructions().into_iter().zip(with) {
        let show = |count: Option<u32>| match count {
            Some(count) => format!(
                "{count:>10} ({:>2.0}%)",
                f64::from(count) * 100.0 / f64::from(LIMIT)
            ),
            None => "   unknown".to_owned(),
        };
        println!("   {name:<26}{}  {}", show(count), show(captured));
    }
    println!();
}
