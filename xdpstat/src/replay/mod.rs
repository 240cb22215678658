//! `xdpstat replay FILE...`: runs every Ethernet frame of pcap and pcapng
//! captures through the same XDP program `xdpstat` attaches, with
//! BPF_PROG_TEST_RUN, and prints the report a live run would have printed.
//! No interface is touched. Each file gets a fresh load of the program, so
//! its report is its own.

pub(crate) mod capture;
pub(crate) mod input;

use crate::kernel::attach::Hook;
use std::{
    io::{IsTerminal as _, Write},
    path::Path,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::rules::RuleSet;
use crate::{
    cli::ReplayArgs,
    counts::prefixes::PrefixLens,
    counts::report::Report,
    counts::snapshot::Snapshot,
    error::{Cause, XdpstatError, one_line},
    kernel::datapath::{Datapath, LINEAR_TEST_FRAME_MAX, Load},
    kernel::privilege::{Needs, check_capabilities, check_kernel},
    outcome::{Outcome, Partial},
    output::{Format, write_report},
    replay::capture::{CaptureError, Frame},
    replay::input::Input,
};
use crate::{kernel::datapath::capture::Settings, run::capture::ReplayCapture};

/// The shortest frame BPF_PROG_TEST_RUN runs: an Ethernet header.
const ETHERNET_HEADER: usize = 14;
/// A file that takes longer than this gets a progress bar on a terminal.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

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
    let mut datapath = Datapath::load_with(Load {
        prefix_len: lens,
        rule_rows: !rules.is_empty() || !rules.triggers.is_empty(),
        capture: capture.as_ref().map(|(settings, _)| *settings),
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
    // A rate limit keeps time by the frames' timestamps, in capture order:
    // then one worker runs every frame, each with its time. So do
    // triggers, judged each second of the capture.
    let triggers = (!rules.triggers.is_empty()).then(|| Mutex::new(Triggers::default()));
    let timed = rules.has_limits() || triggers.is_some() || copies.is_some();
    let name = path.display().to_string();
    let drain = || {
        if let Some(copies) = &copies {
            let mut copies = copies.lock().unwrap_or_else(PoisonError::into_inner);
            let (ring, sink) = &mut *copies;
            sink.drain(ring, &datapath.rule_maps(), &name);
        }
    };
    let mut replayed = Replayed::default();
    let started = Instant::now();
    let size = input.size();
    let mut progress: Option<ProgressBar> = None;
    // The reader fills batches of frames; one worker per CPU runs them, so
    // the test-run system calls of several CPUs overlap. Frames run out of
    // order across CPUs, which changes no count. At most two batches per
    // worker wait, and a batch holds at most `Batch::BYTES` and one frame
    // (at most 256 KiB), so memory stays bounded whatever the capture holds.
    let workers = if timed {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let (batches, incoming) = mpsc::sync_channel::<Batch>(2 * workers);
    let incoming = Mutex::new(incoming);
    let ((stats, outcome), run_error) = std::thread::scope(|scope| {
        let runners: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    run_batches(
                        &datapath,
                        &incoming,
                        timed,
                        triggers.as_ref(),
                        &drain,
                        &name,
                        stop,
                    )
                })
            })
            .collect();
        let mut batch = Batch::default();
        let mut sending = true;
        let outcome = capture::read(&mut input, &mut |frame: Frame<'_>, position| {
            if !sending || stop.load(Ordering::Relaxed) {
                return;
            }
            replayed.first.get_or_insert(frame.timestamp);
            replayed.last = Some(frame.timestamp);
            if frame.data.len() < ETHERNET_HEADER {
                replayed.runts += 1;
                return;
            }
            batch.push(frame.data, frame.wire_len, frame.timestamp);
            replayed.frames += 1;
            if batch.is_full() {
                // A closed channel means every runner stopped on an error.
                sending = batches.send(std::mem::take(&mut batch)).is_ok();
            }
            if replayed.frames % 65_536 == 0 {
                show_progress(&mut progress, started, size, position);
            }
        });
        if sending && !batch.is_empty() {
            let _ = batches.send(batch);
        }
        drop(batches);
        let run_error = runners
            .into_iter()
            .map(|runner| {
                runner
                    .join()
                    .unwrap_or_else(|_| Err("a replay thread panicked".into()))
            })
            .find_map(Result::err);
        (outcome, run_error)
    });
    drain();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    replayed.cut_to_snaplen = stats.cut_to_snaplen;
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
    match outcome {
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

/// Frames to run, packed into one buffer, each with its wire length and
/// capture time.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    frames: Vec<(usize, u32, u64)>,
}

impl Batch {
    const FRAMES: usize = 1024;
    /// Bytes a batch holds at most (plus one frame).
    const BYTES: usize = 1 << 20;

    fn push(&mut self, data: &[u8], wire_len: u32, time: Duration) {
        self.bytes.extend_from_slice(data);
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        self.frames.push((self.bytes.len(), wire_len, nanos));
    }

    fn is_full(&self) -> bool {
        self.frames.len() >= Self::FRAMES || self.bytes.len() >= Self::BYTES
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn frames(&self) -> impl Iterator<Item = (&[u8], u32, u64)> {
        let starts = std::iter::once(0).chain(self.frames.iter().map(|&(end, _, _)| end));
        starts
            .zip(&self.frames)
            .map(|(start, &(end, wire_len, time))| (&self.bytes[start..end], wire_len, time))
    }
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

/// One worker: runs batches until the channel closes; the first failed
/// test run ends it (and, once all have ended, the reader's sends fail).
fn run_batches(
    datapath: &Datapath,
    incoming: &Mutex<mpsc::Receiver<Batch>>,
    timed: bool,
    triggers: Option<&Mutex<Triggers>>,
    drain: &(dyn Fn() + Sync),
    name: &str,
    stop: &AtomicBool,
) -> Result<(), String> {
    loop {
        let batch = match incoming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv()
        {
            Ok(batch) => batch,
            Err(_) => return Ok(()),
        };
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        for (frame, wire_len, time) in batch.frames() {
            if let Some(triggers) = triggers {
                triggers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .before(datapath, name, time)?;
            }
            // A whole frame that is linear runs through the plain build, as
            // live traffic does; the replay build (with the wire length and
            // time as metadata, about 3 times slower a frame) is for the
            // rest, and for every frame when rate limits need the time.
            let whole = wire_len as usize == frame.len() && frame.len() <= LINEAR_TEST_FRAME_MAX;
            let run = if whole && !timed {
                datapath.test_run(frame)
            } else {
                datapath.replay_run(frame, u64::from(wire_len), time)
            };
            run.map_err(|e| one_line(&e))?;
        }
        drain();
    }
}

/// Shows (after a second, on a terminal) how far into the input the
/// replay is: of the file's size, or bytes read from a stream.
fn show_progress(
    progress: &mut Option<ProgressBar>,
    started: Instant,
    size: Option<u64>,
    position: u64,
) {
    if progress.is_none() {
        if started.elapsed() < PROGRESS_AFTER || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::with_draw_target(size, ProgressDrawTarget::stderr());
        let template = if size.is_some() {
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}"
        } else {
            "{spinner} {bytes} {bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        *progress = Some(bar);
    }
    if let Some(bar) = progress {
        bar.set_position(position);
    }
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
    let mut report = Report::between(name, &before, &after, top);
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
