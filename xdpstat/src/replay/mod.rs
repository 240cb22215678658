//! `xdpstat replay FILE...`: runs every Ethernet frame of pcap and pcapng
//! captures through the same XDP program `xdpstat` attaches, with
//! BPF_PROG_TEST_RUN, and prints the report a live run would have printed.
//! No interface is touched. Each file gets a fresh load of the program, so
//! its report is its own.

pub mod batches;
pub(crate) mod capture;
pub(crate) mod input;

use crate::kernel::attach::Hook;
use std::{
    io::Write,
    path::Path,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::rules::RuleSet;
use crate::{
    cli::ReplayArgs,
    counts::prefixes::PrefixLens,
    counts::report::Report,
    counts::snapshot::Snapshot,
    error::{Cause, XdpstatError, one_line},
    kernel::datapath::{Datapath, LINEAR_TEST_FRAME_MAX, Load, Programs, Runs, capture::Ring},
    kernel::privilege::{Needs, check_capabilities, check_kernel},
    outcome::{Outcome, Partial},
    output::{Format, write_report},
    replay::batches::{Framed, Ran, RunFrame, run_frames},
    replay::capture::CaptureError,
    replay::input::Input,
};
use crate::{kernel::datapath::capture::Settings, run::capture::ReplayCapture};

/// What one file's replay ran.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Frames run through the program.
    pub frames: u64,
    /// Frames too short for BPF_PROG_TEST_RUN (under 14 bytes), not run.
    pub runts: u64,
    /// Records longer than their snap length, cut to it (as libpcap does).
    pub cut_to_snaplen: u64,
    /// First and last frame timestamps.
    pub first: Option<Duration>,
    pub last: Option<Duration>,
}

/// Replays every file and prints a report for each; a file that cannot be
/// read whole is named on stderr (with what was read of it reported), and
/// the result says so after the others have run.
pub fn replay(
    args: &ReplayArgs,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> Result<Outcome, XdpstatError> {
    check_kernel(Hook::Xdp)?;
    check_capabilities(Needs::Attach)?;
    let format = match args.format {
        Some(Format::Json) => Format::Json,
        Some(Format::Tui) => {
            return Err(XdpstatError::Usage(
                "replay prints reports: --format plain or --format json".into(),
            ));
        }
        _ => Format::Plain,
    };
    let top = args.top.or(format.default_top());
    let rules = match &args.rules {
        Some(path) => crate::rules::file::load(path)?,
        None => RuleSet::default(),
    };
    // The capture file is checked and opened before any frame runs.
    let settings = args.capture.settings(false)?;
    let mut capture = match (&args.capture.capture, &settings) {
        (Some(path), Some(settings)) => {
            if args.rules.is_none() && settings.verdicts & !1 != 0 {
                return Err(XdpstatError::Usage(format!(
                    "--capture {}: it copies the frames rules act on; give --rules FILE, or --capture-verdicts passed",
                    path.display()
                )));
            }
            let file = crate::run::capture::open(path)?;
            Some(crate::run::capture::ReplayCapture::new(
                file, path, settings,
            )?)
        }
        _ => None,
    };
    let mut failed = 0;
    for file in &args.files {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let name = file.display().to_string();
        let capturing = settings.zip(capture.as_mut());
        match replay_file(
            file,
            args.max_sources,
            args.prefix_len,
            &rules,
            capturing,
            stop,
        ) {
            Ok((report_at, replayed, problem)) => {
                if replayed.cut_to_snaplen > 0 {
                    eprintln!(
                        "xdpstat: {name}: {} records were longer than the snap length and were cut to it, as libpcap does",
                        replayed.cut_to_snaplen
                    );
                }
                if replayed.runts > 0 {
                    eprintln!(
                        "xdpstat: {name}: {} frames shorter than an Ethernet header were not run \
                         (the kernel does not run them; a driver drops them before XDP)",
                        replayed.runts
                    );
                }
                if let Some(problem) = &problem {
                    eprintln!(
                        "xdpstat: {name}: {problem}; the report holds the {} frames before it",
                        replayed.frames
                    );
                    failed += 1;
                }
                let mut report = report_for(&name, report_at, &replayed, top);
                report.capture_stopped = capture.as_ref().and_then(|c| c.stopped());
                match write_report(out, format, &report) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        return Ok(Outcome::Whole);
                    }
                    other => other.map_err(XdpstatError::Output)?,
                }
            }
            Err(error) => {
                eprintln!("xdpstat: {}", one_line(&error));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Ok(Outcome::Partial(Partial::SomeCapturesFailed {
            failed,
            files: args.files.len(),
        }));
    }
    Ok(Outcome::Whole)
}

/// Replays one file (or standard input, `-`): the snapshot after it, what
/// ran, and the problem that ended it early, if one did.
pub fn replay_file(
    path: &Path,
    max_sources: u32,
    lens: PrefixLens,
    rules: &RuleSet,
    capture: Option<(Settings, &mut ReplayCapture)>,
    stop: &AtomicBool,
) -> Result<(Snapshot, Replayed, Option<CaptureError>), XdpstatError> {
    let failed = |source: Cause| XdpstatError::Capture {
        file: path.display().to_string(),
        source,
    };
    let mut input = Input::open(path, stop).map_err(|e| failed(e.into()))?;
    // A rate limit keeps time by the frames' timestamps, in capture order:
    // then one worker runs every frame through the replay build, each with
    // its time. So do triggers, judged each second of the capture, and
    // captured copies.
    let timed = rules.has_limits() || !rules.triggers.is_empty() || capture.is_some();
    let mut datapath = Datapath::load_with(Load {
        prefix_len: lens,
        rule_rows: !rules.is_empty() || !rules.triggers.is_empty(),
        capture: capture.as_ref().map(|(settings, _)| *settings),
        programs: if timed {
            Programs::Replay
        } else {
            Programs::WhenNeeded
        },
        ..Load::new(max_sources)
    })?;
    // The copies are written by the one worker after each batch (the
    // ring holds a batch's), so none is skipped.
    let copies = match capture {
        Some((_, sink)) => {
            let ring = datapath
                .capture_ring()
                .map_err(|source| XdpstatError::Map {
                    map: "CAPTURE",
                    source,
                })?;
            Some(Mutex::new((ring, sink)))
        }
        None => None,
    };
    datapath.put_rules(rules, &path.display().to_string())?;
    let triggers = (!rules.triggers.is_empty()).then(|| Mutex::new(Triggers::default()));
    let name = path.display().to_string();
    let (ran, load_error) = if timed {
        let runner = ThroughXdpstat {
            runs: datapath.loaded_runs(),
            timed: Some(Timed {
                datapath: &datapath,
                triggers: triggers.as_ref(),
                copies: copies.as_ref(),
                name: &name,
            }),
        };
        let ran = run_frames(&mut input, batches::workers(true), &runner, stop);
        runner.after_batch();
        (ran, None)
    } else {
        let runner = ThroughXdpstat {
            runs: datapath.runs(),
            timed: None,
        };
        let ran = std::thread::scope(|scope| {
            // The plain build is verified while the reader begins (and the
            // replay build beside it, once the reader meets a frame that
            // needs it).
            scope.spawn(|| runner.runs.load_plain());
            run_frames(&mut input, batches::workers(false), &runner, stop)
        });
        (ran, runner.runs.load_error())
    };
    if let Some(error) = load_error {
        return Err(XdpstatError::Load {
            source: error.into(),
        });
    }
    let Ran {
        replayed,
        read,
        run_error,
    } = ran;
    if let Some(error) = run_error {
        return Err(failed(format!("BPF_PROG_TEST_RUN failed: {error}").into()));
    }
    let snapshot = match triggers {
        None => datapath.snapshot(&name)?,
        Some(triggers) => {
            let mut triggers = triggers
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner);
            // The end: the last frame's time (bans ended by then go).
            if let Some(last) = replayed.last {
                let last = u64::try_from(last.as_nanos()).unwrap_or(u64::MAX);
                set_capture_time(&datapath, last);
            }
            let mut snapshot = datapath.snapshot(&name)?;
            triggers.events.append(&mut snapshot.verdicts.events);
            snapshot.verdicts.events = triggers.events;
            snapshot
        }
    };
    match read {
        Ok(()) | Err(CaptureError::Stopped { .. }) => Ok((snapshot, replayed, None)),
        // Nothing could be read at all: say so as an error.
        Err(
            error @ (CaptureError::LinkType { .. }
            | CaptureError::NotACapture(_)
            | CaptureError::Empty),
        ) if replayed.frames == 0 => Err(failed(error.into())),
        Err(error) => Ok((snapshot, replayed, Some(error))),
    }
}

/// Reads the capture at `path` (or standard input, `-`) and runs its frames
/// through `runner` with the reader and workers a replay has: the benchmark
/// measures xdpstat's replay against the same with another program.
pub fn run_file(
    path: &Path,
    workers: usize,
    runner: &dyn RunFrame,
    stop: &AtomicBool,
) -> Result<Ran, XdpstatError> {
    let mut input = Input::open(path, stop).map_err(|e| XdpstatError::Capture {
        file: path.display().to_string(),
        source: e.into(),
    })?;
    Ok(run_frames(&mut input, workers, runner, stop))
}

/// Frames through xdpstat's program: each whole, linear frame through the
/// plain build, as live traffic runs; the rest through the replay build
/// with their wire length and time, and so every frame when the frames'
/// times matter.
struct ThroughXdpstat<'a> {
    runs: Runs<'a>,
    timed: Option<Timed<'a>>,
}

/// What a replay whose frames keep their time does around each: triggers
/// are judged before it, and captured copies written after each batch.
struct Timed<'a> {
    datapath: &'a Datapath,
    triggers: Option<&'a Mutex<Triggers>>,
    copies: Option<&'a Mutex<(Ring, &'a mut ReplayCapture)>>,
    name: &'a str,
}

impl RunFrame for ThroughXdpstat<'_> {
    fn ahead(&self, frame: Framed<'_>) {
        // The replay build is verified as soon as a frame will need it (an
        // error is the worker's to report).
        if self.timed.is_none() && !whole(frame) {
            let _ = self.runs.load_replay();
        }
    }

    fn run(&self, frame: Framed<'_>) -> Result<(), String> {
        let Some(timed) = &self.timed else {
            let run = if whole(frame) {
                self.runs.plain(frame.frame())
            } else {
                self.runs.replay(frame.with_metadata())
            };
            return run.map(drop).map_err(|e| one_line(&e));
        };
        if let Some(triggers) = timed.triggers {
            triggers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .before(timed.datapath, timed.name, frame.time_ns())?;
        }
        self.runs
            .replay(frame.with_metadata())
            .map(drop)
            .map_err(|e| one_line(&e))
    }

    fn after_batch(&self) {
        if let Some(Timed {
            datapath,
            copies: Some(copies),
            name,
            ..
        }) = &self.timed
        {
            let mut copies = copies.lock().unwrap_or_else(PoisonError::into_inner);
            let (ring, sink) = &mut *copies;
            sink.drain(ring, &datapath.rule_maps(), name);
        }
    }
}

/// Whether a frame runs through the plain build, as live traffic runs: it
/// is whole (not cut by a snap length) and linear under BPF_PROG_TEST_RUN.
fn whole(frame: Framed<'_>) -> bool {
    frame.wire_len() == frame.frame().len() as u64 && frame.frame().len() <= LINEAR_TEST_FRAME_MAX
}

/// A replay's triggers: judged at each second of the capture, from the
/// first frame on, over what the frames before that second sent; the
/// events, in order, for the report.
#[derive(Default)]
struct Triggers {
    /// The next second to judge at, in capture nanoseconds; 0: not begun.
    next_ns: u64,
    previous: Option<Snapshot>,
    base: Option<Instant>,
    first_ns: u64,
    events: Vec<crate::rules::ban::Event>,
}

/// How often a replay judges its triggers, in capture time.
const TRIGGER_TICK_NS: u64 = 1_000_000_000;

impl Triggers {
    /// Before the frame at `time_ns`: judges every tick that came.
    fn before(&mut self, datapath: &Datapath, name: &str, time_ns: u64) -> Result<(), String> {
        let base = *self.base.get_or_insert_with(Instant::now);
        if self.next_ns == 0 {
            self.first_ns = time_ns;
            self.next_ns = time_ns.saturating_add(TRIGGER_TICK_NS);
            let mut start = Snapshot::empty();
            start.taken = base;
            self.previous = Some(start);
            return Ok(());
        }
        if time_ns < self.next_ns {
            return Ok(());
        }
        let at = self.next_ns;
        set_capture_time(datapath, at);
        let mut current = datapath.snapshot(name).map_err(|e| one_line(&e))?;
        current.wall = UNIX_EPOCH + Duration::from_nanos(at);
        current.taken = base + Duration::from_nanos(at - self.first_ns);
        self.events.append(&mut current.verdicts.events);
        let previous = self.previous.take().unwrap_or_else(Snapshot::empty);
        {
            let maps = datapath.rule_maps();
            let mut maps = maps.lock().unwrap_or_else(PoisonError::into_inner);
            maps.judge_triggers(&previous, &current)
                .map_err(|e| one_line(e.as_ref()))?;
            self.events.append(&mut maps.take_events());
        }
        self.previous = Some(current);
        // A gap in the capture is one long interval, not many empty ones.
        while self.next_ns <= time_ns {
            self.next_ns = self.next_ns.saturating_add(TRIGGER_TICK_NS);
        }
        Ok(())
    }
}

/// Tells the rule maps the capture's time, `ns` since the epoch.
fn set_capture_time(datapath: &Datapath, ns: u64) {
    datapath
        .rule_maps()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .set_capture_time(crate::rules::ban::Moment {
            wall: UNIX_EPOCH + Duration::from_nanos(ns),
            datapath_ns: ns,
        });
}

/// The live report's schema for a capture: the interface is the file, no
/// interval (`interval_s` is null), rates are averages over the capture's
/// span (first to last frame), and the time is the last frame's.
fn report_for(name: &str, after: Snapshot, replayed: &Replayed, top: Option<usize>) -> Report {
    let span = match (replayed.first, replayed.last) {
        (Some(first), Some(last)) => last.saturating_sub(first),
        _ => Duration::ZERO,
    };
    let mut before = Snapshot::empty();
    before.taken = after.taken.checked_sub(span).unwrap_or(after.taken);
    let mut after = after;
    after.wall = replayed
        .last
        .map_or_else(SystemTime::now, |last| UNIX_EPOCH + last);
    let mut report = Report::between(name, &Arc::new(before), &Arc::new(after), top);
    report.interval_s = None;
    if let Some(first) = replayed.first {
        report = report.counting_since(UNIX_EPOCH + first);
    }
    report.attachment = Some(format!(
        "replayed through BPF_PROG_TEST_RUN: {} frames",
        replayed.frames
    ));
    report
}
