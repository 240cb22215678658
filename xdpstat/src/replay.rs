//! `xdpstat replay FILE...`: runs every Ethernet frame of pcap and pcapng
//! captures through the same XDP program `xdpstat` attaches, with
//! BPF_PROG_TEST_RUN, and prints the report a live run would have printed.
//! No interface is touched. Each file gets a fresh load of the program, so
//! its report is its own.

use std::{
    fs::File,
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

use crate::{
    capture::{self, CaptureError, Frame},
    cli::ReplayArgs,
    datapath::Datapath,
    error::{XdpstatError, one_line},
    output::{Format, write_report},
    privilege::{Needs, check_capabilities, check_kernel},
    report::Report,
    snapshot::Snapshot,
};

/// The shortest frame BPF_PROG_TEST_RUN runs: an Ethernet header.
const ETHERNET_HEADER: usize = 14;
/// Frames are padded to their wire length up to this (a jumbo frame).
const LONGEST_FRAME: usize = 16 * 1024;
/// A file that takes longer than this gets a progress bar on a terminal.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// What one file's replay ran.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Frames run through the program.
    pub frames: u64,
    /// Frames too short for BPF_PROG_TEST_RUN (under 14 bytes), not run.
    pub runts: u64,
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
) -> Result<(), XdpstatError> {
    check_kernel()?;
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
    let mut failed = 0;
    for file in &args.files {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let name = file.display().to_string();
        match replay_file(file, args.max_sources, stop) {
            Ok((report_at, replayed, problem)) => {
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
                let report = report_for(&name, report_at, &replayed, top);
                match write_report(out, format, &report) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
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
        return Err(XdpstatError::SomeCapturesFailed {
            failed,
            files: args.files.len(),
        });
    }
    Ok(())
}

/// Replays one file: the snapshot after it, what ran, and the problem that
/// ended it early, if one did.
pub fn replay_file(
    path: &Path,
    max_sources: u32,
    stop: &AtomicBool,
) -> Result<(Snapshot, Replayed, Option<CaptureError>), XdpstatError> {
    let failed = |reason: String| XdpstatError::Capture {
        file: path.display().to_string(),
        reason,
    };
    let file = File::open(path).map_err(|e| failed(format!("cannot open: {e}")))?;
    let metadata = file.metadata().map_err(|e| failed(e.to_string()))?;
    if metadata.is_dir() {
        return Err(failed("is a directory, not a capture".into()));
    }
    if metadata.len() == 0 {
        return Err(failed(CaptureError::Empty.to_string()));
    }
    // SAFETY: a read-only private mapping; a file another process truncates
    // while xdpstat reads it can still fault, as with any mapped reader.
    let bytes =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| failed(format!("cannot map: {e}")))?;
    capture::format_of(&bytes).map_err(|e| failed(e.to_string()))?;
    let datapath = Datapath::load(max_sources)?;
    let mut replayed = Replayed::default();
    let started = Instant::now();
    let mut progress: Option<ProgressBar> = None;
    // The reader fills batches of frames; one worker per CPU runs them, so
    // the test-run system calls of several CPUs overlap. Frames run out of
    // order across CPUs, which changes no count.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (batches, incoming) = mpsc::sync_channel::<Batch>(2 * workers);
    let incoming = Mutex::new(incoming);
    let (outcome, run_error) = std::thread::scope(|scope| {
        let runners: Vec<_> = (0..workers)
            .map(|_| scope.spawn(|| run_batches(&datapath, &incoming, stop)))
            .collect();
        let mut batch = Batch::default();
        let mut sending = true;
        let outcome = capture::read(&bytes, |frame: Frame<'_>| {
            if !sending || stop.load(Ordering::Relaxed) {
                return;
            }
            replayed.first.get_or_insert(frame.timestamp);
            replayed.last = Some(frame.timestamp);
            if frame.data.len() < ETHERNET_HEADER {
                replayed.runts += 1;
                return;
            }
            // A capture cut to a snap length still counts the wire length,
            // as the live program would: the missing tail is zeros.
            let wire = (frame.wire_len as usize)
                .clamp(frame.data.len(), LONGEST_FRAME.max(frame.data.len()));
            batch.push(&frame.data, wire);
            replayed.frames += 1;
            if batch.is_full() {
                // A closed channel means every runner stopped on an error.
                sending = batches.send(std::mem::take(&mut batch)).is_ok();
            }
            if replayed.frames % 65_536 == 0 {
                show_progress(&mut progress, started, &bytes, frame.data.as_ptr());
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
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Some(error) = run_error {
        return Err(failed(format!("BPF_PROG_TEST_RUN failed: {error}")));
    }
    let snapshot = datapath.snapshot(&path.display().to_string())?;
    match outcome {
        Ok(()) => Ok((snapshot, replayed, None)),
        // Nothing could be read at all: say so as an error.
        Err(error @ (CaptureError::LinkType { .. } | CaptureError::NotACapture(_)))
            if replayed.frames == 0 =>
        {
            Err(failed(error.to_string()))
        }
        Err(error) => Ok((snapshot, replayed, Some(error))),
    }
}

/// Frames to run, packed into one buffer.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    const FRAMES: usize = 1024;

    /// Adds `data` zero-padded to `len` bytes.
    fn push(&mut self, data: &[u8], len: usize) {
        self.bytes.extend_from_slice(data);
        self.bytes.resize(self.bytes.len() + len - data.len(), 0);
        self.ends.push(self.bytes.len());
    }

    fn is_full(&self) -> bool {
        self.ends.len() >= Self::FRAMES
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn frames(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.bytes[start..end])
    }
}

/// One worker: runs batches until the channel closes; the first failed
/// test run ends it (and, once all have ended, the reader's sends fail).
fn run_batches(
    datapath: &Datapath,
    incoming: &Mutex<mpsc::Receiver<Batch>>,
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
        for frame in batch.frames() {
            datapath.test_run(frame).map_err(|e| one_line(&e))?;
        }
    }
}

/// Shows (after a second, on a terminal) how far into the file the replay is.
fn show_progress(
    progress: &mut Option<ProgressBar>,
    started: Instant,
    bytes: &[u8],
    at: *const u8,
) {
    let done = (at as usize).saturating_sub(bytes.as_ptr() as usize) as u64;
    if progress.is_none() {
        if started.elapsed() < PROGRESS_AFTER || !std::io::stderr().is_terminal() {
            return;
        }
        let bar =
            ProgressBar::with_draw_target(Some(bytes.len() as u64), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
        {
            bar.set_style(style);
        }
        *progress = Some(bar);
    }
    if let Some(bar) = progress {
        bar.set_position(done);
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
    report.attachment = Some(format!(
        "replayed through BPF_PROG_TEST_RUN: {} frames",
        replayed.frames
    ));
    report
}
