//! The measurements: each returns numbers, none judges them. The bench
//! binary prints them against the targets.

use std::{
    io,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::sys::{Stats, enable_stats};
use ratatui::{Terminal, backend::TestBackend};
use xdpstat::{
    kernel::attach::{Attached, LinkKind, ObtainedMode},
    kernel::datapath::{Datapath, Variant},
    kernel::tables::ReadMethod,
    output::{
        Format,
        tui::{
            render,
            view::{Pane, TopView},
        },
        write_report,
    },
    run::live::Watched,
};
use xdpstat_common::DEFAULT_MAX_SOURCES;
use xdpstat_lab::frames::{self, ethertype};

use crate::{
    program::{Program, RunStats},
    reference::Reference,
    traffic::{Link, WATCHED, benchmark_address, ipv4_frame},
};

/// The median of `values` (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Mean ns per run of one frame, BPF_PROG_TEST_RUN with `repeat`, median of
/// `rounds`, for each program of the hot-source comparison.
pub struct HotSource {
    pub floor: f64,
    pub seed_16: f64,
    pub seed_65536: f64,
    pub xdpstat: f64,
    pub xdpstat_frags: f64,
    pub xdpstat_ipv6: f64,
    /// The tcx build, on a socket buffer made of the frame.
    pub xdpstat_tcx: f64,
}

pub fn hot_source(repeat: u32, rounds: usize) -> Result<HotSource> {
    let frame = ipv4_frame(1);
    let v6_packet = frames::ipv6_packet("2001:db8::1".parse()?, "2001:db8::2".parse()?, &[], 10);
    let v6_frame = frames::ethernet(&[], ethertype::IPV6, &v6_packet);
    let floor = Reference::floor()?;
    let seed_16 = Reference::seed(16)?;
    let seed_65536 = Reference::seed(65_536)?;
    let xdpstat = Datapath::load(DEFAULT_MAX_SOURCES)?;
    let ns = |d: Duration| d.as_nanos() as f64;
    let mut runs: [Vec<f64>; 7] = Default::default();
    for _ in 0..rounds {
        // Interleaved, so a slow moment of the machine hits every program.
        runs[0].push(ns(floor.time_per_run(&frame, repeat)?));
        runs[1].push(ns(seed_16.time_per_run(&frame, repeat)?));
        runs[2].push(ns(seed_65536.time_per_run(&frame, repeat)?));
        runs[3].push(ns(xdpstat
            .timed_test_run(Variant::Linear, &frame, repeat)?
            .duration));
        runs[4].push(ns(xdpstat
            .timed_test_run(Variant::Frags, &frame, repeat)?
            .duration));
        runs[5].push(ns(xdpstat
            .timed_test_run(Variant::Linear, &v6_frame, repeat)?
            .duration));
        runs[6].push(ns(xdpstat.timed_tcx_test_run(&frame, repeat)?.duration));
    }
    let [
        floor,
        seed_16,
        seed_65536,
        xdpstat,
        xdpstat_frags,
        xdpstat_ipv6,
        xdpstat_tcx,
    ] = runs.map(median);
    Ok(HotSource {
        floor,
        seed_16,
        seed_65536,
        xdpstat,
        xdpstat_frags,
        xdpstat_ipv6,
        xdpstat_tcx,
    })
}

/// Mean ns per packet from the kernel's run-time statistics while `frames`
/// cross the benchmark link, median of `rounds`, for floor, seed (65,536
/// entries) and xdpstat, each on a freshly loaded copy.
pub struct OverVeth {
    pub floor: f64,
    pub seed_65536: f64,
    pub xdpstat: f64,
    /// xdpstat at tc ingress on the same traffic.
    pub xdpstat_tcx: f64,
    /// Packets each program ran on per round (all programs see the same).
    pub packets: u64,
}

pub fn over_veth(link: &Link, frames: &[Vec<u8>], rounds: usize) -> Result<OverVeth> {
    let _stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let mut per_packet: [Vec<f64>; 4] = Default::default();
    let mut packets = 0;
    for _ in 0..rounds {
        let programs = [
            Program::Reference(Reference::floor()?, None),
            Program::Reference(Reference::seed(65_536)?, None),
            Program::Xdpstat(Box::new(Datapath::load(DEFAULT_MAX_SOURCES)?)),
            Program::XdpstatTcx(Box::new(Datapath::load(DEFAULT_MAX_SOURCES)?)),
        ];
        for (index, mut program) in programs.into_iter().enumerate() {
            let (cost, runs) = cost_over_veth(link, &mut program, frames)?;
            per_packet[index].push(cost);
            packets = runs;
        }
    }
    let [floor, seed_65536, xdpstat, xdpstat_tcx] = per_packet.map(median);
    Ok(OverVeth {
        floor,
        seed_65536,
        xdpstat,
        xdpstat_tcx,
        packets,
    })
}

/// Attaches, sends `frames` once to warm up (every source inserted), then
/// again measured; returns ns per run of the measured pass and its runs.
pub(crate) fn cost_over_veth(
    link: &Link,
    program: &mut Program,
    frames: &[Vec<u8>],
) -> Result<(f64, u64)> {
    program.attach(&link.watched, WATCHED)?;
    let result = (|| {
        link.send_all(frames)?;
        let before = program.stats()?;
        link.send_all(frames)?;
        settle_stats(program, &before, frames.len() as u64)
    })();
    program.detach()?;
    result
}

/// Waits until the program has seen `expected` more runs than `before` (the
/// veth peer drains its queue in NAPI, a little after the last send), or
/// until the count stops moving.
fn settle_stats(program: &mut Program, before: &RunStats, expected: u64) -> Result<(f64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = program.stats()?;
    while last.runs - before.runs < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let now = program.stats()?;
        if now.runs == last.runs {
            break;
        }
        last = now;
    }
    Ok((last.per_run_since(before)?, last.runs - before.runs))
}

/// The spoofed-source flood over the link: cost per packet of seed and
/// xdpstat, and what xdpstat reports afterwards.
pub struct Flood {
    pub floor: f64,
    pub seed_65536: f64,
    pub xdpstat: f64,
    /// xdpstat's per-packet cost on the Zipf traffic, for comparison.
    pub packets: u64,
    /// Distinct sources in the flood.
    pub distinct: usize,
    /// IPv4 packets xdpstat's report holds, and the runs the kernel counted.
    pub reported_total: u64,
    pub runs: u64,
    /// Packets no entry held.
    pub unattributed: u64,
    /// Per big sender: packets sent (both passes), packets reported.
    pub big: Vec<(u64, u64)>,
    /// Sources the report lists.
    pub listed: usize,
    /// Entries the housekeeping retired during the flood.
    pub retired: usize,
    /// The report's top network prefix: what it reported, what was sent
    /// from it (both passes), whether part is the sketch's estimate, and
    /// the estimate's bound.
    pub top_prefix: Option<TopPrefix>,
}

/// The flood report's top prefix against the truth.
pub struct TopPrefix {
    pub prefix: String,
    pub reported: u64,
    pub sent: u64,
    pub estimated: bool,
    pub error_packets: u64,
}

pub fn flood(link: &Link, sources: &[u32], big_sent: &[u64], rounds: usize) -> Result<Flood> {
    let frames: Vec<Vec<u8>> = sources.iter().map(|&n| ipv4_frame(n)).collect();
    let distinct = {
        let mut unique: Vec<_> = sources.iter().map(|&n| benchmark_address(n)).collect();
        unique.sort_unstable();
        unique.dedup();
        unique.len()
    };
    let costs = over_veth(link, &frames, rounds)?;
    // One more xdpstat pass, with the live loop's housekeeping (a read and
    // retirement of idle entries every 200 ms) running alongside, then read
    // back: the report must hold every packet.
    let _stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let mut program = Program::Xdpstat(Box::new(Datapath::load(DEFAULT_MAX_SOURCES)?));
    program.attach(&link.watched, WATCHED)?;
    let zero = RunStats::default();
    let outcome = (|| {
        let Program::Xdpstat(datapath) = &program else {
            unreachable!("made as xdpstat above")
        };
        let done = AtomicBool::new(false);
        let retired = thread::scope(|scope| {
            let housekeeping = scope.spawn(|| {
                let mut retired = 0;
                while !done.load(Ordering::Acquire) {
                    thread::sleep(Duration::from_millis(200));
                    datapath.snapshot(WATCHED)?;
                    retired += datapath.retire_idle()?.len();
                }
                Ok::<_, anyhow::Error>(retired)
            });
            let sent = link.send_all(&frames).and_then(|()| link.send_all(&frames));
            done.store(true, Ordering::Release);
            let retired = housekeeping.join().expect("housekeeping thread");
            sent.and(retired)
        })?;
        let (_, runs) = settle_stats(&mut program, &zero, 2 * frames.len() as u64)?;
        let Program::Xdpstat(datapath) = &program else {
            unreachable!("made as xdpstat above")
        };
        let snapshot = datapath.snapshot(WATCHED)?;
        let top_prefix =
            snapshot
                .prefixes
                .ranked(Some(1))
                .into_iter()
                .next()
                .map(|(prefix, count)| {
                    let from_it = sources
                        .iter()
                        .filter(|&&n| {
                            prefix.contains(&std::net::IpAddr::from(benchmark_address(n)))
                        })
                        .count() as u64;
                    TopPrefix {
                        prefix: prefix.to_string(),
                        reported: count.total().packets,
                        sent: 2 * from_it,
                        estimated: count.estimated.packets > 0,
                        error_packets: count.error_packets,
                    }
                });
        let big = big_sent
            .iter()
            .enumerate()
            .map(|(n, sent)| {
                let address = benchmark_address(n as u32).into();
                let reported = snapshot.sources.get(&address).map_or(0, |c| c.packets);
                (2 * sent, reported)
            })
            .collect();
        Ok::<_, anyhow::Error>((runs, snapshot, big, retired, top_prefix))
    })();
    program.detach()?;
    let (runs, snapshot, big, retired, top_prefix) = outcome?;
    Ok(Flood {
        floor: costs.floor,
        seed_65536: costs.seed_65536,
        xdpstat: costs.xdpstat,
        packets: costs.packets,
        distinct,
        reported_total: snapshot.totals().ipv4.packets,
        runs,
        unattributed: snapshot.unattributed().packets,
        big,
        listed: snapshot.sources.len(),
        retired,
        top_prefix,
    })
}

/// One report interval with many sources, measured in a process of its own
/// (so its resident memory is xdpstat's, not the benchmark's).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ReportCost {
    /// Distinct sources sent, listed in the report, and packets no entry
    /// holds (new sources that found no free entry within reach).
    pub sent: usize,
    pub sources: usize,
    pub unattributed: u64,
    /// CPU time (user + system, CLOCK_THREAD_CPUTIME_ID) of one interval
    /// in which no source sent, median, memory-mapped reads, plain report.
    pub idle_ms: f64,
    /// The same after every source sent one more packet.
    pub busy_ms: f64,
    /// The same, with a JSON report of every source.
    pub json_ms: Option<f64>,
    /// A plain interval after new sources joined.
    #[serde(default)]
    pub newcomers_ms: Option<f64>,
    /// The idle interval with per-key reads, and walking the mapped tables
    /// (the read before the kernel copied the sources out).
    pub per_key_ms: Option<f64>,
    pub mapped_ms: Option<f64>,
    /// Resident memory after the memory-mapped intervals, and its peak, in KiB.
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

/// What a report-cost probe measures.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct ReportSetup {
    pub sources: u32,
    /// Rows beside the tables, as with `--rules` or `--persist`.
    pub rows: bool,
    pub json: bool,
    /// Also the idle interval with the other ways to read the tables.
    pub other_reads: bool,
    /// Each interval goes to the live view (drawn on a 160 x 50 screen
    /// in memory) instead of to a report.
    #[serde(default)]
    pub live_view: bool,
    /// Also an interval after this many new sources joined (the sources
    /// of a busy network come and go), each round.
    #[serde(default)]
    pub newcomers: u32,
    pub rounds: usize,
}

/// Sends `sources` sources one packet each: up to 131,072 IPv4 ones (the
/// benchmark range's addresses), the rest IPv6.
fn send_each(datapath: &Datapath, sources: u32) -> Result<()> {
    let v4_sources = sources.min(1 << 17);
    let mut frame = ipv4_frame(0);
    for n in 0..v4_sources {
        frame[26..30].copy_from_slice(&benchmark_address(n).octets());
        datapath.test_run(&frame)?;
    }
    send_v6(datapath, "2001:db8::", 0..sources - v4_sources)
}

/// Sends one packet from each IPv6 source `network` + `n` (its last 32
/// bits) for `n` in `numbers`.
fn send_v6(datapath: &Datapath, network: &str, numbers: std::ops::Range<u32>) -> Result<()> {
    let v6_packet = frames::ipv6_packet(network.parse()?, "2001:db8:ffff::1".parse()?, &[], 10);
    let mut frame = frames::ethernet(&[], ethertype::IPV6, &v6_packet);
    for n in numbers {
        // The source's last 32 bits, at bytes 34..38 (it is at 22..38).
        frame[34..38].copy_from_slice(&n.to_be_bytes());
        datapath.test_run(&frame)?;
    }
    Ok(())
}

/// Sends one packet from each of `count` IPv6 sources never sent from
/// before (2001:db8:1::/48, after the first `joined`).
fn send_newcomers(datapath: &Datapath, joined: u32, count: u32) -> Result<()> {
    send_v6(datapath, "2001:db8:1::", joined..joined + count)
}

pub fn report_cost(setup: ReportSetup) -> Result<ReportCost> {
    let ReportSetup {
        sources,
        rows,
        json,
        other_reads,
        live_view,
        newcomers,
        rounds,
    } = setup;
    let capacity = sources + sources / 8;
    let datapath = Datapath::load_with(xdpstat::kernel::datapath::Load {
        rule_rows: rows,
        ..xdpstat::kernel::datapath::Load::new(capacity)
    })?;
    send_each(&datapath, sources)?;
    let attached = Attached {
        interface: "bench".into(),
        mode: ObtainedMode::Native,
        link: LinkKind::BpfLink,
        multi_buffer: false,
        native_refused: None,
    };
    let mut watched = Watched::new(attached, datapath);
    // Written as a run writes to stdout: through a line buffer, to a file.
    let mut out = io::LineWriter::new(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .context("opening /dev/null")?,
    );
    let mut view = live_view.then(|| {
        let pane = Pane::new("bench", "native XDP, bpf link", Some(capacity as usize));
        TopView::new(vec![pane], Instant::now())
    });
    let mut screen = Terminal::new(TestBackend::new(160, 50))?;
    let mut interval = |watched: &mut Watched, format: Format| -> Result<(f64, usize)> {
        let before = cpu_time()?;
        let listed = match &mut view {
            Some(view) => {
                let (previous, current) = watched.advance()?;
                view.update(0, &previous, current);
                let listed = current.sources.len();
                view.refresh();
                screen.draw(|frame| render::draw(frame, view, Instant::now()))?;
                listed
            }
            None => {
                let report = watched.report(format.default_top())?;
                write_report(&mut out, format, &report)?;
                report.source_count
            }
        };
        Ok(((cpu_time()? - before).as_secs_f64() * 1e3, listed))
    };
    // The first interval has no previous read to compare with.
    let (_, seen) = interval(&mut watched, Format::Plain)?;
    if seen == 0 {
        bail!("the tables hold no source after {sources} were sent");
    }
    let unattributed = watched.source.snapshot("bench")?.unattributed().packets;
    let mut idle = Vec::with_capacity(rounds);
    let mut busy = Vec::with_capacity(rounds);
    let mut in_json = Vec::with_capacity(rounds);
    let mut with_newcomers = Vec::with_capacity(rounds);
    let mut joined = 0;
    for _ in 0..rounds {
        idle.push(interval(&mut watched, Format::Plain)?.0);
        send_each(&watched.source, sources)?;
        busy.push(interval(&mut watched, Format::Plain)?.0);
        if json {
            send_each(&watched.source, sources)?;
            in_json.push(interval(&mut watched, Format::Json)?.0);
        }
        if newcomers > 0 {
            send_newcomers(&watched.source, joined, newcomers)?;
            joined += newcomers;
            with_newcomers.push(interval(&mut watched, Format::Plain)?.0);
        }
    }
    let status = memory_status()?;
    let mut idle_by = |watched: &mut Watched, method| -> Result<Option<f64>> {
        if !other_reads {
            return Ok(None);
        }
        watched.source.set_read_method(method);
        let rounds: Vec<f64> = (0..3)
            .map(|_| interval(watched, Format::Plain).map(|(ms, _)| ms))
            .collect::<Result<_>>()?;
        Ok(Some(median(rounds)))
    };
    let mapped = idle_by(&mut watched, ReadMethod::Mapped)?;
    let per_key = idle_by(&mut watched, ReadMethod::PerKey)?;
    Ok(ReportCost {
        sent: sources as usize,
        sources: seen,
        unattributed,
        idle_ms: median(idle),
        busy_ms: median(busy),
        json_ms: json.then(|| median(in_json)),
        newcomers_ms: (newcomers > 0).then(|| median(with_newcomers)),
        per_key_ms: per_key,
        mapped_ms: mapped,
        rss_kib: status.0,
        peak_rss_kib: status.1,
    })
}

/// This thread's CPU time, user plus system, to the nanosecond
/// (`getrusage` counts in scheduler ticks of 4 ms).
fn cpu_time() -> Result<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return Err(io::Error::last_os_error()).context("clock_gettime");
    }
    Ok(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// VmRSS and VmHWM of this process, in KiB.
fn memory_status() -> Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .with_context(|| format!("{name} in /proc/self/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
