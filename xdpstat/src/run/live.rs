//! The live loop shared by `xdpstat IFACE...` and `xdpstat demo`: read every
//! watched interface each interval, print its report, and on a stop request,
//! a closed pipe or the end of `--duration`, print one last report and return
//! so the caller can detach.

use std::{
    io::{self, Write},
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use crate::rules::RuleSet;
use crate::{
    cli::AttachArgs,
    counts::report::Report,
    counts::snapshot::Snapshot,
    counts::sources::SourceTable,
    error::{XdpstatError, one_line},
    kernel::attach::{Attached, Hook},
    kernel::datapath::{Datapath, Load},
    output::{Format, notify::Notifier, write_report},
};

/// How often the loop looks at the stop flag while it waits.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Where an interface's counters come from: the kernel's maps in a real
/// run, a scripted fake in the loop's tests.
pub trait CounterSource {
    /// Reads the counters; `interface` labels errors.
    fn snapshot(&self, interface: &str) -> Result<Snapshot, XdpstatError>;

    /// Housekeeping after a read (the datapath retires idle table entries
    /// when a table is nearly full); returns the sources retired, with the
    /// counts that moved from them to `unattributed`.
    fn after_read(&self) -> Result<SourceTable, XdpstatError> {
        Ok(SourceTable::default())
    }

    /// Sources per family the tables are planned for, if known.
    fn capacity(&self) -> Option<usize> {
        None
    }

    /// Whether the interface is gone (removed from the system): its
    /// counters will not move again.
    fn interface_gone(&self) -> bool {
        false
    }

    /// Runs the rules' triggers over the interval from `previous` to
    /// `current`, and returns what happened to bans since the read, and
    /// the program the rules run for each event.
    fn judge_triggers(
        &self,
        _interface: &str,
        _previous: &Snapshot,
        _current: &Snapshot,
    ) -> (Vec<crate::rules::ban::Event>, Option<std::path::PathBuf>) {
        (Vec::new(), None)
    }
}

impl CounterSource for Datapath {
    fn snapshot(&self, interface: &str) -> Result<Snapshot, XdpstatError> {
        Datapath::snapshot(self, interface)
    }

    fn after_read(&self) -> Result<SourceTable, XdpstatError> {
        self.retire_idle()
    }

    fn capacity(&self) -> Option<usize> {
        Some(self.max_sources() as usize)
    }

    fn interface_gone(&self) -> bool {
        Datapath::interface_gone(self)
    }

    fn judge_triggers(
        &self,
        interface: &str,
        previous: &Snapshot,
        current: &Snapshot,
    ) -> (Vec<crate::rules::ban::Event>, Option<std::path::PathBuf>) {
        let maps = self.rule_maps();
        let mut maps = maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = maps.judge_triggers(previous, current) {
            eprintln!("xdpstat: {interface}: the triggers' bans: {e}");
        }
        (maps.take_events(), maps.on_event())
    }
}

/// Told of every read: the previous snapshot, this one, and how long
/// the read took.
pub type Observer = Box<dyn FnMut(&Snapshot, &Snapshot, Duration) + Send>;

/// One interface being counted.
pub struct Watched<S = Datapath> {
    pub attached: Attached,
    pub source: S,
    /// The interface was removed: the last read held its final counts.
    pub gone: bool,
    /// Whether stderr has been told it is gone.
    gone_said: bool,
    /// The last read, shared with the report of every source made from it
    /// (which keeps the reads rather than a copy of each source's row).
    previous: Arc<Snapshot>,
    /// Sources retired after the last read, to take out of it.
    retired: SourceTable,
    /// When counting began: the attach.
    counting_since: SystemTime,
    observer: Option<Observer>,
    /// Ban events read before the first report, for it.
    events: Vec<crate::rules::ban::Event>,
    /// Runs `on_event` for each event, once there is one.
    notifier: Option<Notifier>,
    /// Why `--capture` stopped, once it did.
    pub capture_stopped: Option<crate::run::capture::Stopped>,
}

impl Watched<Datapath> {
    /// Loads a fresh copy of the program and attaches it to `interface`,
    /// as `args` say (the XDP hook in a mode, or tc ingress), with `rules` in
    /// force from the first packet; with `persist`, the
    /// state is pinned under that root (and picked up from there when an
    /// earlier xdpstat left it), and counting began when it was first
    /// pinned.
    pub fn attach(
        interface: &str,
        args: &AttachArgs,
        persist: Option<&Path>,
        rules: &RuleSet,
    ) -> Result<Self, XdpstatError> {
        if let Some(root) = persist {
            let persisted = crate::kernel::persist::attach(interface, &args.setup(), root, rules)?;
            let mut watched = Self::new(persisted.attached, persisted.datapath);
            watched.counting_since = persisted.since;
            if persisted.resumed {
                // Rates start from now; the counts from when they began.
                // What happened to bans meanwhile goes in the first report.
                let mut base = watched.source.snapshot(interface)?;
                watched.events = std::mem::take(&mut base.verdicts.events);
                watched.previous = Arc::new(base);
            }
            return Ok(watched);
        }
        let mut datapath = Datapath::load_with(Load {
            prefix_len: args.prefix_len,
            rule_rows: args.rules.is_some(),
            capture: args.capture.settings(true)?,
            ..Load::new(args.max_sources)
        })?;
        // In force before the first packet.
        datapath.put_rules(rules, interface)?;
        let attached = match args.hook {
            Hook::Xdp => datapath.attach(interface, args.mode)?,
            Hook::Tcx => datapath.attach_tcx(interface)?,
        };
        let since = SystemTime::now();
        datapath.write_record(&attached, since, false)?;
        let mut watched = Self::new(attached, datapath);
        watched.counting_since = since;
        Ok(watched)
    }
}

impl<S: CounterSource> Watched<S> {
    /// Watches `source`, attached as `attached` (the demo attaches inside a
    /// namespace, the tests not at all). Rates start from now.
    pub fn new(attached: Attached, source: S) -> Self {
        Self {
            attached,
            source,
            gone: false,
            gone_said: false,
            previous: Arc::new(Snapshot::empty()),
            retired: SourceTable::default(),
            counting_since: SystemTime::now(),
            observer: None,
            events: Vec::new(),
            notifier: None,
            capture_stopped: None,
        }
    }

    /// Says once on stderr that the interface is gone, after the report of
    /// its final counts (`reported` is false when that read failed).
    pub fn say_if_gone(&mut self, reported: bool) {
        if !self.gone || self.gone_said {
            return;
        }
        self.gone_said = true;
        let what = if reported {
            "the report above holds its final counts"
        } else {
            "its final counts could not be read"
        };
        eprintln!(
            "xdpstat: {} is gone (the interface was removed); {what}",
            self.attached.interface
        );
    }

    /// Has `observer` told of every read from now on (the metrics exporter),
    /// starting with what was counted before this process began reading
    /// (a persisted interface's counts so far), as if read just now.
    pub fn observe(&mut self, mut observer: Observer) {
        observer(&Snapshot::empty(), &self.previous, Duration::ZERO);
        self.observer = Some(observer);
    }

    /// When counting began.
    pub fn counting_since(&self) -> SystemTime {
        self.counting_since
    }

    /// One interval's work: reads the counters, computes the report against
    /// the last read, and keeps this read for the next one.
    pub fn report(&mut self, top: Option<usize>) -> Result<Report, XdpstatError> {
        let interface = self.attached.interface.clone();
        let attachment = self.attached.to_string();
        let counting_since = self.counting_since;
        let (previous, current) = self.advance()?;
        let mut report =
            Report::between(&interface, &previous, current, top).counting_since(counting_since);
        report.attachment = Some(attachment);
        if let Some(stopped) = &self.capture_stopped {
            report.capture_stopped = stopped
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
        }
        Ok(report)
    }

    /// Reads the counters and keeps the read for the next interval; returns
    /// the previous read and this one. Housekeeping failures are printed
    /// and counting goes on.
    ///
    /// This is the one place where reads become honest counters for every
    /// consumer (reports, the live view, metrics): the sources retired
    /// since the last read are moved to `unattributed` in it, and this read
    /// never goes below it ([`Snapshot::keep_monotonic`]).
    pub fn advance(&mut self) -> Result<(Arc<Snapshot>, &Arc<Snapshot>), XdpstatError> {
        // Asked before the read, so that a read after the interface went
        // holds its final counts.
        self.gone = self.source.interface_gone();
        let started = Instant::now();
        let mut current = self.source.snapshot(&self.attached.interface)?;
        let took = started.elapsed();
        if !self.events.is_empty() {
            let later = std::mem::take(&mut current.verdicts.events);
            current.verdicts.events = std::mem::take(&mut self.events);
            current.verdicts.events.extend(later);
        }
        if !self.retired.is_empty() {
            // The reports made from it are gone by now (each is written
            // before the next read), so this changes it in place; one
            // still kept would be copied first.
            Arc::make_mut(&mut self.previous).retire(&std::mem::take(&mut self.retired));
        }
        current.keep_monotonic(&self.previous);
        let (events, program) =
            self.source
                .judge_triggers(&self.attached.interface, &self.previous, &current);
        current.verdicts.events.extend(events);
        if let Some(program) = program {
            let notifier = self.notifier.get_or_insert_with(Notifier::start);
            for event in &current.verdicts.events {
                notifier.send(&program, &self.attached.interface, &event.into());
            }
        }
        if let Some(observer) = &mut self.observer {
            observer(&self.previous, &current, took);
        }
        let previous = std::mem::replace(&mut self.previous, Arc::new(current));
        match self.source.after_read() {
            Ok(retired) => self.retired = retired,
            Err(error) => eprintln!("xdpstat: {}", one_line(&error)),
        }
        Ok((previous, &self.previous))
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
    /// Every watched interface was removed.
    AllGone,
}

/// Runs until `stop` says so, `duration` passes, or stdout closes.
pub fn run<S: CounterSource>(
    watched: &mut [Watched<S>],
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
        for one in watched.iter_mut().filter(|one| !one.gone) {
            let reported = match one.report(options.top) {
                Ok(report) => match write_report(out, options.format, &report) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                        return Ok(Ended::PipeClosed);
                    }
                    Err(e) => return Err(XdpstatError::Output(e)),
                },
                // A failed read skips this interface's report; counting goes on.
                Err(error) => {
                    eprintln!("xdpstat: {}", one_line(&error));
                    false
                }
            };
            one.say_if_gone(reported);
        }
        if let Some(ended) = ended {
            return Ok(ended);
        }
        if watched.iter().all(|one| one.gone) {
            return Ok(Ended::AllGone);
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

#[cfg(test)]
mod tests {
    use std::{
        cell::Cell,
        net::{IpAddr, Ipv4Addr},
        rc::Rc,
    };

    use xdpstat_common::Counter;

    use super::*;
    use crate::kernel::attach::{LinkKind, ObtainedMode};

    /// Serves one scripted read per call: the packets of one source so far,
    /// or `None` for a failed read. Counts the reads it served.
    struct Scripted {
        reads: Vec<Option<u64>>,
        served: Rc<Cell<usize>>,
        /// After read `n` (1-based), the source's entry is retired with
        /// these packets.
        retirements: Vec<(usize, u64)>,
    }

    fn source() -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))
    }

    impl CounterSource for Scripted {
        fn snapshot(&self, interface: &str) -> Result<Snapshot, XdpstatError> {
            let index = self.served.get();
            self.served.set(index + 1);
            let packets = self.reads.get(index).copied().flatten();
            let packets = packets.ok_or_else(|| XdpstatError::MapRead {
                interface: interface.to_owned(),
                map: "SOURCES_V4",
                source: "scripted failure".into(),
            })?;
            let mut snapshot = Snapshot::empty();
            let counter = Counter {
                packets,
                bytes: packets * 100,
            };
            snapshot.sources.insert(source(), counter);
            // As the kernel does: what retired entries held is unattributed.
            for &(after, packets) in &self.retirements {
                if after <= index {
                    snapshot.slots.unattributed_v4.add(&Counter {
                        packets,
                        bytes: packets * 100,
                    });
                }
            }
            Ok(snapshot)
        }

        fn after_read(&self) -> Result<SourceTable, XdpstatError> {
            let read = self.served.get();
            Ok(self
                .retirements
                .iter()
                .filter(|(after, _)| *after == read)
                .map(|&(_, packets)| {
                    let counter = Counter {
                        packets,
                        bytes: packets * 100,
                    };
                    (source(), counter)
                })
                .collect())
        }
    }

    /// One fake interface with scripted reads, and its read counter.
    fn scripted(reads: Vec<Option<u64>>) -> (Vec<Watched<Scripted>>, Rc<Cell<usize>>) {
        let served = Rc::new(Cell::new(0));
        let attached = Attached {
            interface: "fake0".into(),
            mode: ObtainedMode::Native,
            link: LinkKind::BpfLink,
            multi_buffer: false,
            native_refused: None,
        };
        let source = Scripted {
            reads,
            served: Rc::clone(&served),
            retirements: Vec::new(),
        };
        (vec![Watched::new(attached, source)], served)
    }

    fn options(duration: Option<Duration>) -> LiveOptions {
        LiveOptions {
            interval: Duration::from_millis(2),
            duration,
            format: Format::Json,
            top: None,
        }
    }

    fn packets_per_report(out: &[u8]) -> Vec<u64> {
        String::from_utf8_lossy(out)
            .lines()
            .map(|line| {
                let report: serde_json::Value = serde_json::from_str(line).unwrap();
                report["sources"][0]["packets"].as_u64().unwrap()
            })
            .collect()
    }

    #[test]
    fn a_read_racing_a_settle_is_no_change_and_a_retired_source_starts_again() {
        // Read 3 misses 4 packets still being settled; after read 5 the
        // source's entry is retired with 30 packets; it comes back with 3.
        let (mut watched, _) = scripted(vec![
            Some(10),
            Some(20),
            Some(16),
            Some(24),
            Some(30),
            Some(3),
        ]);
        watched[0].source.retirements = vec![(5, 30)];
        let mut rows = Vec::new();
        let mut unattributed = Vec::new();
        for _ in 0..6 {
            let (previous, current) = watched[0].advance().unwrap();
            let delta = current
                .sources
                .counter(&source())
                .since(&previous.sources.get(&source()).unwrap_or_default());
            rows.push((current.sources.counter(&source()).packets, delta.packets));
            unattributed.push(current.unattributed().packets);
        }
        assert_eq!(
            rows,
            [(10, 10), (20, 10), (20, 0), (24, 4), (30, 6), (3, 3)],
            "no read goes backwards, no interval counts a lifetime"
        );
        assert_eq!(unattributed, [0, 0, 0, 0, 0, 30]);
        assert_eq!(watched[0].previous.totals().ipv4.packets, 33);
    }

    #[test]
    fn reports_of_every_source_kept_past_later_reads_keep_their_counts() {
        // Each report shares the reads it was made from; after read 5 the
        // source's entry is retired with 30 packets, which read 6's
        // interval takes out of read 5 while report 5 still holds it.
        let (mut watched, _) = scripted(vec![
            Some(10),
            Some(20),
            Some(30),
            Some(30),
            Some(30),
            Some(3),
        ]);
        watched[0].source.retirements = vec![(5, 30)];
        let reports: Vec<Report> = (0..6).map(|_| watched[0].report(None).unwrap()).collect();
        // Rows are made from the reads now, after every read was taken.
        let rows: Vec<(u64, u64)> = reports
            .iter()
            .map(|report| {
                let row = report.sources.iter().next().expect("the source's row");
                (row.packets, report.unattributed.packets)
            })
            .collect();
        assert_eq!(rows, [(10, 0), (20, 0), (30, 0), (30, 0), (30, 0), (3, 30)]);
    }

    #[test]
    fn a_stop_request_gets_one_last_report() {
        let (mut watched, served) = scripted(vec![Some(1), Some(2), Some(3), Some(4)]);
        let mut out = Vec::new();
        let ended = run(&mut watched, options(None), &mut out, &|| served.get() >= 3).unwrap();
        assert_eq!(ended, Ended::Stopped);
        assert_eq!(
            packets_per_report(&out),
            [1, 2, 3, 4],
            "three reports, then the last one"
        );
    }

    #[test]
    fn a_failed_read_skips_that_report_and_counting_goes_on() {
        let (mut watched, served) = scripted(vec![Some(1), None, Some(5), Some(6)]);
        let mut out = Vec::new();
        run(&mut watched, options(None), &mut out, &|| served.get() >= 3).unwrap();
        assert_eq!(packets_per_report(&out), [1, 5, 6]);
    }

    #[test]
    fn the_duration_ends_the_run_with_a_final_report() {
        let (mut watched, served) = scripted(vec![Some(7); 100_000]);
        let mut out = Vec::new();
        let ended = run(
            &mut watched,
            options(Some(Duration::from_millis(30))),
            &mut out,
            &|| false,
        )
        .unwrap();
        assert_eq!(ended, Ended::DurationElapsed);
        assert_eq!(packets_per_report(&out).len(), served.get());
        assert!(served.get() >= 1);
    }

    /// A reader that went away, as `xdpstat ... | head -1` leaves it.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A disk that filled up.
    struct FullDisk;

    impl Write for FullDisk {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_ends_the_run_quietly() {
        let (mut watched, served) = scripted(vec![Some(1); 10]);
        let ended = run(&mut watched, options(None), &mut ClosedPipe, &|| false).unwrap();
        assert_eq!(ended, Ended::PipeClosed);
        assert_eq!(served.get(), 1);
    }

    #[test]
    fn other_write_errors_are_errors() {
        let (mut watched, _) = scripted(vec![Some(1); 10]);
        let error = run(&mut watched, options(None), &mut FullDisk, &|| false).unwrap_err();
        assert!(matches!(error, XdpstatError::Output(_)), "{error}");
    }
}
