//! `on_event`: a program of the operator's run for each ban event, the
//! event as one JSON object on its standard input (as FastNetMon's notify
//! script is). At most [`AT_ONCE`] run at a time, each killed after
//! [`PATIENCE`]; events wait in a bounded queue, so a slow or hanging
//! program delays neither counting nor the other events, and one that
//! fails is said on stderr. Events beyond the queue are counted and said.

use std::{
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant},
};

use crate::counts::report::EventRow;

/// Programs running at once, at most.
pub const AT_ONCE: usize = 4;
/// How long one may run before it is killed.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// Events waiting for a program, at most.
const QUEUE: usize = 10_000;

/// One event for the program.
struct Job {
    program: PathBuf,
    json: String,
}

/// Hands events to the program's runners.
pub struct Notifier {
    queue: SyncSender<Job>,
    dropped: Arc<AtomicU64>,
}

impl Notifier {
    /// Starts the runners (threads that live as long as the process).
    pub fn start() -> Self {
        let (queue, jobs) = sync_channel::<Job>(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        for n in 0..AT_ONCE {
            let jobs = Arc::clone(&jobs);
            let _ = std::thread::Builder::new()
                .name(format!("on-event-{n}"))
                .spawn(move || run_jobs(&jobs));
        }
        Self {
            queue,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues `event` of `interface` for `program`; never waits.
    pub fn send(&self, program: &std::path::Path, interface: &str, event: &EventRow) {
        let json = serde_json::json!({
            "interface": interface,
            "time": event.time,
            "event": event.event,
            "prefix": event.prefix,
            "origin": event.origin,
            "detail": event.detail,
        })
        .to_string();
        let job = Job {
            program: program.to_owned(),
            json,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.queue.try_send(job)
        {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped == 1 || dropped.is_power_of_two() {
                eprintln!(
                    "xdpstat: on_event: {dropped} event(s) not given to {} ({QUEUE} already wait for it)",
                    program.display()
                );
            }
        }
    }
}

/// A runner: takes the next job, runs it, and so on.
fn run_jobs(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let jobs = jobs.lock().unwrap_or_else(PoisonError::into_inner);
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        if let Err(why) = run(&job) {
            eprintln!("xdpstat: on_event {}: {why}", job.program.display());
        }
    }
}

/// Runs the program with the event on its stdin, waiting at most
/// [`PATIENCE`]; an error says what went wrong.
fn run(job: &Job) -> Result<(), String> {
    // A group of its own, so that what it starts is killed with it.
    let mut child = Command::new(&job.program)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that exits without reading is its own business.
        let _ = stdin.write_all(job.json.as_bytes());
        let _ = stdin.write_all(b"\n");
    }
    let began = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("it failed ({status})")),
            Ok(None) if began.elapsed() >= PATIENCE => {
                // SAFETY: signalling the process group the child leads.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("killed after {} s", PATIENCE.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
    }
}
