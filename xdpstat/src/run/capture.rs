//! `--capture FILE`: the file checked and opened before anything is
//! attached, and the copies the datapaths make written into it as pcapng
//! (`output::pcapng`), each with a comment naming its verdict and the
//! rule, list or ban behind it. Live, a thread of its own drains every
//! interface's ring, so counting never waits for the disk; a write that
//! fails (a full disk) stops the capture with one line on stderr, and the
//! reports say so while counting goes on.

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::FileTypeExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    error::XdpstatError,
    kernel::{
        datapath::capture::{NO_RULE, Record, Ring, Settings, verdict},
        rulemaps::RuleMaps,
    },
    output::pcapng::PcapngWriter,
    rules::ban::monotonic_ns,
};

/// Opens `path` for `--capture`: a new file (one that exists is not
/// overwritten: xdpstat overwrites nothing but its own files), or a named
/// pipe. `-` is refused: the reports go to standard output.
pub fn open(path: &Path) -> Result<File, XdpstatError> {
    let refused = |why: String| XdpstatError::Usage(format!("--capture {}: {why}", path.display()));
    if path.as_os_str() == "-" {
        return Err(refused(
            "the reports go to standard output; name a file or a named pipe".into(),
        ));
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| refused(e.to_string())),
        Ok(meta) if meta.is_dir() => Err(refused("a directory".into())),
        Ok(_) => Err(refused(
            "exists; xdpstat writes a new file (remove it, or name another)".into(),
        )),
        Err(_) => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| refused(e.to_string())),
    }
}

/// Before anything is attached: with `--capture`, what the program is to
/// copy and the file, opened. Refused: a file that cannot be written, an
/// unknown verdict, and copying what rules act on with no rules file.
pub fn prepare(
    attach: &crate::cli::AttachArgs,
) -> Result<Option<(File, PathBuf, Settings)>, XdpstatError> {
    let (Some(path), Some(settings)) = (&attach.capture.capture, attach.capture.settings(true)?)
    else {
        return Ok(None);
    };
    if attach.rules.is_none() && settings.verdicts & !(1 << verdict::PASSED) != 0 {
        return Err(XdpstatError::Usage(format!(
            "--capture {}: it copies what rules and bans act on; give --rules FILE (an empty file will do for bans alone), or --capture-verdicts passed",
            path.display()
        )));
    }
    let file = open(path)?;
    Ok(Some((file, path.clone(), settings)))
}

/// The copies of a watched interface.
pub fn source(one: &mut crate::run::live::Watched) -> Result<Source, XdpstatError> {
    let ring = one
        .source
        .capture_ring()
        .map_err(|source| XdpstatError::Map {
            map: "CAPTURE",
            source,
        })?;
    Ok(Source {
        interface: one.attached.interface.clone(),
        ring,
        maps: one.source.rule_maps(),
    })
}

/// One interface's copies: where they come from and what names their
/// rules.
pub struct Source {
    pub interface: String,
    pub ring: Ring,
    pub maps: Arc<Mutex<RuleMaps>>,
}

/// What a captured packet's comment says: `dropped by rule
/// 203.0.113.0/24 drop`, `limited by ban 198.51.100.7/32 (trigger
/// udp-flood)`, `passed`.
pub fn comment(record: &Record, maps: &RuleMaps) -> String {
    let name = verdict::NAMES
        .get(record.header.verdict as usize)
        .copied()
        .unwrap_or("judged");
    if record.header.rule == NO_RULE {
        return name.to_owned();
    }
    match maps.named(record.header.rule) {
        Some(rule) => format!("{name} by {rule}"),
        None => format!("{name} by a rule no longer in force"),
    }
}

/// Why a capture file stopped being written, once it did: shared with
/// whoever reports.
pub type Stopped = Arc<Mutex<Option<String>>>;

/// The capture file and what happened to it.
struct Sink {
    writer: Option<PcapngWriter<File>>,
    path: PathBuf,
    stopped: Stopped,
}

impl Sink {
    /// Starts the pcapng file `file` (at `path`).
    fn start(file: File, path: &Path, settings: &Settings) -> Result<Self, XdpstatError> {
        let writer = PcapngWriter::new(file, settings.snaplen)
            .map_err(|e| XdpstatError::Usage(format!("--capture {}: {e}", path.display())))?;
        Ok(Self {
            writer: Some(writer),
            path: path.to_owned(),
            stopped: Stopped::default(),
        })
    }

    /// Writes one record, its time `time` since the epoch; the first
    /// failure stops the capture and is said once.
    fn write(&mut self, interface: &str, record: &Record, time: Duration, comment: &str) {
        let Some(writer) = &mut self.writer else {
            return;
        };
        if let Err(e) = writer.packet(
            interface,
            time,
            record.header.wire_len,
            &record.bytes,
            comment,
        ) {
            let why = format!("writing {}: {e}", self.path.display());
            eprintln!("xdpstat: --capture stopped, counting goes on: {why}");
            *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
            self.writer = None;
        }
    }
}

/// A live capture: the thread writing it.
pub struct Capture {
    stopped: Stopped,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts writing `file` (at `path`, `settings.snaplen` bytes a
    /// packet) from `sources`: a thread drains their rings every 100 ms, or
    /// as soon as records wait.
    pub fn start(
        file: File,
        path: &Path,
        settings: &Settings,
        mut sources: Vec<Source>,
    ) -> Result<Self, XdpstatError> {
        let sink = Sink::start(file, path, settings)?;
        let stopped = Arc::clone(&sink.stopped);
        let sink = Arc::new(Mutex::new(sink));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sink, stop) = (Arc::clone(&sink), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("capture".into())
                .spawn(move || {
                    loop {
                        let last = stop.load(Ordering::Relaxed);
                        wait_for_records(&sources);
                        let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
                        for source in &mut sources {
                            drain_live(source, &mut sink);
                        }
                        if last {
                            return;
                        }
                    }
                })
                .map_err(|e| XdpstatError::Usage(format!("--capture: {e}")))?
        };
        Ok(Self {
            stopped,
            stop,
            thread: Some(thread),
        })
    }

    /// Why the file stopped being written, once it did.
    pub fn stopped(&self) -> Stopped {
        Arc::clone(&self.stopped)
    }

    /// Writes what is left in the rings and ends the thread.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits up to 100 ms for any ring to have records.
fn wait_for_records(sources: &[Source]) {
    let mut fds: Vec<libc::pollfd> = sources
        .iter()
        .map(|s| libc::pollfd {
            fd: s.ring.fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: valid pollfds, their count, a bounded wait.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
}

/// Writes one live ring's records: their times are the kernel's
/// monotonic clock, made wall-clock times here.
fn drain_live(source: &mut Source, sink: &mut Sink) {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let offset = wall.saturating_sub(monotonic_ns());
    let maps = source.maps.lock().unwrap_or_else(PoisonError::into_inner);
    let interface = source.interface.clone();
    source.ring.drain(&mut |record| {
        let time = Duration::from_nanos(record.header.time_ns.saturating_add(offset));
        sink.write(&interface, &record, time, &comment(&record, &maps));
    });
}

/// A replay's capture: written in the replaying thread after each batch
/// (nothing is skipped: the ring holds a batch's copies), with the
/// capture's own times.
pub struct ReplayCapture {
    sink: Sink,
}

impl ReplayCapture {
    pub fn new(file: File, path: &Path, settings: &Settings) -> Result<Self, XdpstatError> {
        Ok(Self {
            sink: Sink::start(file, path, settings)?,
        })
    }

    /// Writes every record waiting in `ring`, named by `maps`, as frames
    /// of `name`.
    pub fn drain(&mut self, ring: &mut Ring, maps: &Mutex<RuleMaps>, name: &str) {
        let maps = maps.lock().unwrap_or_else(PoisonError::into_inner);
        let sink = &mut self.sink;
        ring.drain(&mut |record| {
            let time = Duration::from_nanos(record.header.time_ns);
            sink.write(name, &record, time, &comment(&record, &maps));
        });
    }

    pub fn stopped(&self) -> Option<String> {
        self.sink
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_names_make_a_mask_and_others_are_refused() {
        use crate::kernel::datapath::capture::{DEFAULT_VERDICTS, verdict_mask};
        assert_eq!(verdict_mask(DEFAULT_VERDICTS).unwrap(), 0b11110);
        assert_eq!(verdict_mask("passed").unwrap(), 1);
        assert_eq!(verdict_mask(" dropped , passed").unwrap(), 0b11);
        for bad in ["", "drop", "dropped,", "DROPPED"] {
            assert!(verdict_mask(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_capture_file_is_new_or_a_pipe_never_one_that_exists() {
        let dir = std::env::temp_dir().join(format!("xdpstat-capture-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let new = dir.join("new.pcapng");
        assert!(open(&new).is_ok());
        assert!(open(&new).is_err(), "it exists now");
        assert!(open(&dir).is_err(), "a directory");
        assert!(open(Path::new("-")).is_err());
        assert!(open(&dir.join("missing/x.pcapng")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
