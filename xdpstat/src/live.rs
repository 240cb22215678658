//! The live loop shared by `xdpstat IFACE...` and `xdpstat demo`: read every
//! watched interface each interval, print its report, and on a stop request,
//! a closed pipe or the end of `--duration`, print one last report and return
//! so the caller can detach.

use std::{
    io::{self, Write},
    time::{Duration, Instant},
};

use crate::{
    attach::{AttachMode, Attached},
    datapath::Datapath,
    error::{XdpstatError, one_line},
    output::{Format, write_report},
    report::Report,
    snapshot::Snapshot,
};

/// How often the loop looks at the stop flag while it waits.
const STOP_POLL: Duration = Duration::from_millis(20);

/// One interface being counted.
pub struct Watched {
    pub attached: Attached,
    pub datapath: Datapath,
    previous: Snapshot,
}

impl Watched {
    /// Loads a fresh copy of the program and attaches it to `interface`.
    pub fn attach(
        interface: &str,
        mode: AttachMode,
        max_sources: u32,
    ) -> Result<Self, XdpstatError> {
        let mut datapath = Datapath::load(max_sources)?;
        let attached = datapath.attach(interface, mode)?;
        Ok(Self {
            attached,
            datapath,
            previous: Snapshot::empty(),
        })
    }

    /// Wraps an already attached datapath (the demo attaches inside a namespace).
    pub fn from_parts(attached: Attached, datapath: Datapath) -> Self {
        Self {
            attached,
            datapath,
            previous: Snapshot::empty(),
        }
    }

    fn report(&mut self, top: Option<usize>) -> Result<Report, XdpstatError> {
        let current = self.datapath.snapshot(&self.attached.interface)?;
        let mut report = Report::between(&self.attached.interface, &self.previous, &current, top);
        report.attachment = Some(self.attached.to_string());
        self.previous = current;
        Ok(report)
    }
}

/// What the loop prints and for how long.
#[derive(Clone, Copy, Debug)]
pub struct LiveOptions {
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub format: Format,
    pub top: Option<usize>,
}

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// SIGINT, SIGTERM, or the caller's own reason (the demo's traffic ended).
    Stopped,
    /// `--duration` passed.
    DurationElapsed,
    /// Whoever read stdout went away.
    PipeClosed,
}

/// Runs until `stop` says so, `duration` passes, or stdout closes.
pub fn run(
    watched: &mut [Watched],
    options: LiveOptions,
    out: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> Result<Ended, XdpstatError> {
    let start = Instant::now();
    let deadline = options.duration.map(|d| start + d);
    let mut next = start + options.interval;
    loop {
        let wake = deadline.map_or(next, |d| d.min(next));
        let ended = wait_until(wake, stop, deadline);
        for one in watched.iter_mut() {
            match one.report(options.top) {
                Ok(report) => match write_report(out, options.format, &report) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                        return Ok(Ended::PipeClosed);
                    }
                    Err(e) => return Err(XdpstatError::Output(e)),
                },
                // A failed read skips this interface's report; counting goes on.
                Err(error) => eprintln!("xdpstat: {}", one_line(&error)),
            }
        }
        if let Some(ended) = ended {
            return Ok(ended);
        }
        next += options.interval;
        let now = Instant::now();
        if next <= now {
            // Reports took longer than an interval: skip the missed ticks.
            next = now + options.interval;
        }
    }
}

/// Sleeps until `wake`; returns why the loop must end, if it must.
fn wait_until(wake: Instant, stop: &dyn Fn() -> bool, deadline: Option<Instant>) -> Option<Ended> {
    loop {
        if stop() {
            return Some(Ended::Stopped);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Some(Ended::DurationElapsed);
        }
        if now >= wake {
            return None;
        }
        std::thread::sleep(STOP_POLL.min(wake - now));
    }
}
