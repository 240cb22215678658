//! The reader and the workers of a replay: frames read from a capture into
//! batches by one thread, run by one worker per CPU, so the test-run system
//! calls of several CPUs overlap. What a worker does with a frame is the
//! caller's ([`RunFrame`]): xdpstat's program, or, for the benchmark, a
//! program that only passes, to measure what reading and the kernel's
//! per-run cost alone take.

use std::{
    io::IsTerminal as _,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use xdpstat_common::{REPLAY_METADATA, read_replay_metadata, replay_metadata};

use super::{
    Replayed,
    capture::{self, CaptureError, Frame},
    input::Input,
};

/// The shortest frame BPF_PROG_TEST_RUN runs: an Ethernet header.
const ETHERNET_HEADER: usize = 14;
/// A file that takes longer than this gets a progress bar on a terminal.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// What a worker does with each frame of a replay.
pub trait RunFrame: Sync {
    /// Runs one frame.
    fn run(&self, frame: Framed<'_>) -> Result<(), String>;

    /// Told, on the reader's thread, of each frame as it is read, before a
    /// worker runs it.
    fn ahead(&self, _frame: Framed<'_>) {}

    /// After each batch a worker ran.
    fn after_batch(&self) {}
}

/// A frame as a batch holds it: its bytes (at most the snap length) right
/// after the [`REPLAY_METADATA`] bytes the replay build reads (its length on
/// the wire and its capture time), so it runs with no copy of its own.
#[derive(Clone, Copy, Debug)]
pub struct Framed<'a> {
    with_metadata: &'a [u8],
}

impl<'a> Framed<'a> {
    /// Its length on the wire (never less than its bytes) and its capture
    /// time in nanoseconds since the epoch, from its metadata.
    fn metadata(&self) -> (u64, u64) {
        self.with_metadata
            .first_chunk()
            .map_or((0, 0), read_replay_metadata)
    }

    /// Its length on the wire (never less than its bytes).
    pub fn wire_len(&self) -> u64 {
        self.metadata().0
    }

    /// Its capture time, in nanoseconds since the epoch.
    pub fn time_ns(&self) -> u64 {
        self.metadata().1
    }

    /// The frame's bytes.
    pub fn frame(&self) -> &'a [u8] {
        &self.with_metadata[REPLAY_METADATA..]
    }

    /// The frame's bytes after its metadata: the replay build's input.
    pub fn with_metadata(&self) -> &'a [u8] {
        self.with_metadata
    }
}

/// What reading and running a capture did.
pub struct Ran {
    pub replayed: Replayed,
    /// How reading ended: the capture's end, or the problem that ended it.
    pub read: Result<(), CaptureError>,
    /// The first frame that could not be run, which ended the replay.
    pub run_error: Option<String>,
}

/// The workers a replay runs on: one per CPU, or one when frames must run
/// in capture order (rate limits, triggers and captures keep the frames'
/// time).
pub fn workers(in_order: bool) -> usize {
    if in_order {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Reads `input` to its end (or until `stop`) and runs every frame on
/// `workers` threads. Frames run out of order across workers, which
/// changes no count. At most two batches per worker wait, and a batch holds
/// at most [`Batch::BYTES`] and one frame (at most 256 KiB), so memory
/// stays bounded whatever the capture holds.
pub fn run_frames(
    input: &mut Input<'_>,
    workers: usize,
    runner: &dyn RunFrame,
    stop: &AtomicBool,
) -> Ran {
    let mut replayed = Replayed::default();
    let started = Instant::now();
    let size = input.size();
    let mut progress: Option<ProgressBar> = None;
    let (batches, incoming) = mpsc::sync_channel::<Batch>(2 * workers);
    let incoming = Mutex::new(incoming);
    let ((stats, read), run_error) = std::thread::scope(|scope| {
        let runners: Vec<_> = (0..workers.max(1))
            .map(|_| scope.spawn(|| run_batches(runner, &incoming, stop)))
            .collect();
        let mut batch = Batch::default();
        let mut sending = true;
        let read = capture::read(input, &mut |frame: Frame<'_>, position| {
            if !sending || stop.load(Ordering::Relaxed) {
                return;
            }
            replayed.first.get_or_insert(frame.timestamp);
            replayed.last = Some(frame.timestamp);
            if frame.data.len() < ETHERNET_HEADER {
                replayed.runts += 1;
                return;
            }
            runner.ahead(batch.push(frame.data, frame.wire_len, frame.timestamp));
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
        (read, run_error)
    });
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    replayed.cut_to_snaplen = stats.cut_to_snaplen;
    Ran {
        replayed,
        read,
        run_error,
    }
}

/// One worker: runs batches until the channel closes; the first failed
/// run ends it (and, once all have ended, the reader's sends fail).
fn run_batches(
    runner: &dyn RunFrame,
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
            runner.run(frame)?;
        }
        runner.after_batch();
    }
}

/// Frames to run, packed into one buffer, each after its metadata (its
/// wire length and capture time, as the replay build reads them).
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    /// Where each frame ends in `bytes`.
    ends: Vec<usize>,
}

impl Batch {
    const FRAMES: usize = 1024;
    /// Bytes a batch holds at most (plus one frame).
    const BYTES: usize = 1 << 20;

    /// Adds a frame; the frame as the batch holds it.
    /// Adds a frame (whose wire length the reader never gives below its
    /// bytes); the frame as the batch holds it.
    fn push(&mut self, data: &[u8], wire_len: u32, time: Duration) -> Framed<'_> {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        let start = self.bytes.len();
        self.bytes
            .extend_from_slice(&replay_metadata(u64::from(wire_len), nanos));
        self.bytes.extend_from_slice(data);
        self.ends.push(self.bytes.len());
        Framed {
            with_metadata: &self.bytes[start..],
        }
    }

    fn is_full(&self) -> bool {
        self.ends.len() >= Self::FRAMES || self.bytes.len() >= Self::BYTES
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn frames(&self) -> impl Iterator<Item = Framed<'_>> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| Framed {
            with_metadata: &self.bytes[start..end],
        })
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
