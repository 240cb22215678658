//! How fast `xdpstat replay` runs a capture, against what its reader and
//! workers take to run the same frames through a program that only passes
//! (the kernel's cost of a test run is the floor), and against
//! `tshark -q -z endpoints,ip` counting the same capture.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use pcap_file::pcap::{PcapPacket, PcapWriter};
use xdpstat::{
    kernel::datapath::{Datapath, Load, Programs},
    replay::{
        self,
        batches::{self, Framed, RunFrame},
    },
    rules::{Action, RuleSet},
};
use xdpstat_common::DEFAULT_MAX_SOURCES;

use crate::{measure::median, reference::Reference, rules::ten_rules, traffic};

/// Seconds each way took, medians of the rounds.
pub struct ReplaySpeed {
    pub frames: u64,
    pub sources: u32,
    /// The same reader and workers, through a program that only passes.
    pub floor: f64,
    /// `xdpstat replay`, from loading the program to the last frame.
    pub xdpstat: f64,
    /// Of which loading the program (the verifier).
    pub load: f64,
    /// `xdpstat replay --rules` with eight rules, none a limit.
    pub xdpstat_rules: f64,
    /// `tshark -q -z endpoints,ip`; `None` when tshark is not installed.
    pub tshark: Option<f64>,
}

/// A capture the benchmark writes and removes.
struct Capture(PathBuf);

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Frames through the program that only passes.
struct ThroughFloor<'a>(&'a Xdp);

impl RunFrame for ThroughFloor<'_> {
    fn run(&self, frame: Framed<'_>) -> Result<(), String> {
        let options = TestRunOptions {
            data_in: Some(frame.frame()),
            ..TestRunOptions::default()
        };
        self.0
            .test_run(options)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// `frames` 64-byte frames from 20,000 Zipf-spread sources in a pcap file,
/// replayed each way `rounds` times.
pub fn replay_speed(frames: usize, rounds: usize) -> Result<ReplaySpeed> {
    const SOURCES: u32 = 20_000;
    let capture =
        Capture(std::env::temp_dir().join(format!("xdpstat-bench-{}.pcap", std::process::id())));
    write_capture(&capture.0, frames, SOURCES)?;
    let floor = Reference::floor()?;
    let floor_program = floor.program()?;
    let mut without_limits = ten_rules();
    without_limits
        .rules
        .retain(|rule| !matches!(rule.action, Action::Limit { .. }));
    let (mut times, mut loads) = ([(); 4].map(|()| Vec::new()), Vec::new());
    for _ in 0..rounds {
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let ran = replay::run_file(
            &capture.0,
            batches::workers(false),
            &ThroughFloor(floor_program),
            &stop,
        )?;
        times[0].push(started.elapsed().as_secs_f64());
        if let Some(error) = ran.run_error {
            bail!("the floor's replay failed: {error}");
        }
        times[1].push(xdpstat_replay(&capture.0, frames, &RuleSet::default())?);
        times[2].push(xdpstat_replay(&capture.0, frames, &without_limits)?);
        let started = Instant::now();
        drop(Datapath::load_with(Load {
            programs: Programs::Plain,
            ..Load::new(DEFAULT_MAX_SOURCES)
        })?);
        loads.push(started.elapsed().as_secs_f64());
        if which::which("tshark").is_ok() {
            times[3].push(tshark(&capture.0)?);
        }
    }
    let [floor, xdpstat, xdpstat_rules, tshark] = times;
    Ok(ReplaySpeed {
        frames: frames as u64,
        sources: SOURCES,
        floor: median(floor),
        xdpstat: median(xdpstat),
        load: median(loads),
        xdpstat_rules: median(xdpstat_rules),
        tshark: (!tshark.is_empty()).then(|| median(tshark)),
    })
}

fn write_capture(path: &Path, frames: usize, sources: u32) -> Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut writer = PcapWriter::new(file)?;
    for (n, &source) in traffic::zipf_sources(frames, sources, 3)?
        .iter()
        .enumerate()
    {
        let frame = traffic::ipv4_frame(source);
        let timestamp = Duration::from_secs(1_795_000_000) + Duration::from_micros(n as u64);
        writer.write_packet(&PcapPacket::new(timestamp, frame.len() as u32, &frame))?;
    }
    Ok(())
}

/// Seconds `xdpstat replay` took, its load included; every frame must be
/// counted.
fn xdpstat_replay(path: &Path, frames: usize, rules: &RuleSet) -> Result<f64> {
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let outcome = replay::replay_file(
        path,
        DEFAULT_MAX_SOURCES,
        Default::default(),
        rules,
        None,
        &stop,
    );
    let seconds = started.elapsed().as_secs_f64();
    let (snapshot, _, problem) = outcome?;
    if let Some(problem) = problem {
        bail!("replay stopped early: {problem}");
    }
    if snapshot.totals().ipv4.packets != frames as u64 {
        bail!(
            "replay counted {} of {frames} frames",
            snapshot.totals().ipv4.packets
        );
    }
    Ok(seconds)
}

/// Seconds `tshark -q -z endpoints,ip -r FILE` took.
fn tshark(path: &Path) -> Result<f64> {
    let started = Instant::now();
    let status = Command::new("tshark")
        .args(["-n", "-q", "-z", "endpoints,ip", "-r"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running tshark")?;
    if !status.success() {
        bail!("tshark failed: {status}");
    }
    Ok(started.elapsed().as_secs_f64())
}
