//! `xdpstat IFACE...`: attach to the named interfaces, report until stopped,
//! detach. Also the pieces the demo shares: start-up checks and detaching.

use std::{
    io::{IsTerminal as _, Write},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{
    cli::{AttachArgs, Cli, MetricsArgs, ReportArgs},
    error::XdpstatError,
    kernel::attach::{AttachMode, Hook},
    kernel::memory::{Plan, map_bytes, possible_cpus},
    kernel::privilege::{Needs, check_capabilities, check_kernel},
    outcome::{Outcome, Partial},
    output::metrics::server::MetricsServer,
    output::metrics::{InterfaceInfo, Metrics, Published},
    output::{Format, write_report},
    rules::RuleSet,
    run::capture,
    run::live::{self, Ended, LiveOptions, Watched},
    run::reload::{Hangups, Notices, on_sighup},
    run::terminal,
};

/// Watches the interfaces `cli` names until `stop` is set, `--duration`
/// passes or stdout closes.
pub fn watch(
    cli: &Cli,
    out: &mut dyn Write,
    stop: &AtomicBool,
    hangups: Option<Hangups>,
) -> Result<Outcome, XdpstatError> {
    let Cli {
        interfaces,
        report,
        attach,
        metrics,
        persist,
        ..
    } = cli;
    for (index, interface) in interfaces.iter().enumerate() {
        if interfaces[..index].contains(interface) {
            return Err(XdpstatError::DuplicateInterface {
                interface: interface.clone(),
            });
        }
    }
    check_attach_args(attach)?;
    // A bad rules file is refused before anything is attached.
    let rules = load_rules(attach)?;
    check_capabilities(Needs::Attach)?;
    // So is a capture file that cannot be written.
    let capture_file = capture::prepare(attach)?;
    let server = serve_metrics(metrics)?;
    let mut watched = Vec::with_capacity(interfaces.len());
    for interface in interfaces {
        // On error, `watched` drops and detaches what was already attached.
        let one = Watched::attach(
            interface,
            attach,
            persist.persist.then_some(persist.pin_dir.as_path()),
            &rules,
        )?;
        watched.push(one);
    }
    let capture = match capture_file {
        Some((file, path, settings)) => {
            let sources = watched
                .iter_mut()
                .map(capture::source)
                .collect::<Result<Vec<_>, _>>()?;
            let capture = capture::Capture::start(file, &path, &settings, sources)?;
            for one in &mut watched {
                one.capture_stopped = Some(capture.stopped());
            }
            Some(capture)
        }
        None => None,
    };
    let targets: Vec<_> = watched
        .iter()
        .map(|one| (one.attached.interface.clone(), one.source.rule_maps()))
        .collect();
    let notices = Notices::default();
    crate::run::control::serve(&targets, &notices);
    on_sighup(hangups, attach.rules.clone(), targets, notices.clone())?;
    // Said once everything a user may reach for is up: `xdpstat ban`
    // answered, SIGHUP reloading.
    for one in &watched {
        announce(one, attach.mode, attach.rules.is_some().then_some(&rules));
    }
    if let Some((_, published)) = &server {
        feed_metrics(&mut watched, published, metrics.metrics_top);
    }
    let result = show(
        &mut watched,
        report,
        out,
        &|| stop.load(Ordering::Relaxed),
        &notices,
    );
    drop(server);
    if let Some(capture) = capture {
        capture.finish();
    }
    let detached = detach_all(&mut watched);
    if result? == Ended::AllGone {
        return Ok(Outcome::Partial(Partial::AllInterfacesGone));
    }
    detached.map(|()| Outcome::Whole)
}

/// The rules `--rules` names, checked (none: an empty set).
pub fn load_rules(attach: &AttachArgs) -> Result<RuleSet, XdpstatError> {
    match &attach.rules {
        Some(path) => Ok(crate::rules::file::load(path)?),
        None => Ok(RuleSet::default()),
    }
}

/// Checks the kernel for what the hook needs, and that `--mode` (an XDP
/// hook's) is not given with `--hook tcx`.
pub fn check_attach_args(attach: &AttachArgs) -> Result<(), XdpstatError> {
    if attach.hook == Hook::Tcx && attach.mode != AttachMode::Auto {
        return Err(XdpstatError::Usage(
            "--mode chooses how to attach to the XDP hook; --hook tcx counts at tc ingress and takes no --mode".into(),
        ));
    }
    check_kernel(attach.hook)
}

/// With `--metrics`, binds the metrics address and starts serving (an
/// empty exposition until [`feed_metrics`]); done before attaching, so a
/// bad address fails with nothing attached.
pub fn serve_metrics(
    args: &MetricsArgs,
) -> Result<Option<(MetricsServer, Published)>, XdpstatError> {
    let Some(address) = args.metrics else {
        return Ok(None);
    };
    let published = Published::default();
    let server = MetricsServer::start(address, Arc::clone(&published))?;
    eprintln!("xdpstat: metrics on http://{}/metrics", server.address());
    if !address.ip().is_loopback() {
        eprintln!(
            "xdpstat: warning: metrics on {address} can be reached from other hosts and name the sources of your traffic; bind to 127.0.0.1 unless that is what you want"
        );
    }
    Ok(Some((server, published)))
}

/// Has every read of `watched` feed an exporter publishing to `published`.
pub fn feed_metrics(watched: &mut [Watched], published: &Published, top: usize) {
    let interfaces = watched
        .iter()
        .map(|one| InterfaceInfo {
            name: one.attached.interface.clone(),
            mode: one.attached.mode.to_string(),
            link: one.attached.link.name().to_owned(),
            program_id: one.source.program_id(),
            capacity: Some(one.source.max_sources() as usize),
        })
        .collect();
    let metrics = Arc::new(Mutex::new(Metrics::publishing_to(
        Arc::clone(published),
        interfaces,
        top,
    )));
    for (index, one) in watched.iter_mut().enumerate() {
        let metrics = Arc::clone(&metrics);
        one.observe(Box::new(move |previous, current, took| {
            metrics
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .update(index, previous, current, took);
        }));
    }
}

/// Reports until `stop` says so, `--duration` passes or stdout closes: as
/// a stream of reports, or in the full-screen view followed by a final
/// plain report once the terminal is given back.
pub fn show(
    watched: &mut [Watched],
    report: &ReportArgs,
    out: &mut dyn Write,
    stop: &dyn Fn() -> bool,
    notices: &Notices,
) -> Result<Ended, XdpstatError> {
    let options = live_options(report, std::io::stdout().is_terminal());
    if options.format != Format::Tui {
        return live::run(watched, options, out, stop);
    }
    let ended = terminal::run(watched, options, stop, notices)?;
    let top = report.top.or(Format::Plain.default_top());
    for one in watched.iter_mut() {
        let last = one.report(top)?;
        match write_report(out, Format::Plain, &last) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            other => other.map_err(XdpstatError::Output)?,
        }
        one.say_if_gone(true);
    }
    Ok(ended)
}

/// The loop's options from the command line.
pub fn live_options(report: &ReportArgs, stdout_is_terminal: bool) -> LiveOptions {
    let format = Format::resolve(report.format, stdout_is_terminal);
    LiveOptions {
        interval: report.interval,
        duration: report.duration,
        format,
        top: report.top.or(format.default_top()),
    }
}

/// Tells the user on stderr where xdpstat is attached (and how much kernel
/// memory its maps and the `rules` in force take), and warns when the
/// attachment could outlive the process.
pub fn announce(watched: &Watched, asked: AttachMode, rules: Option<&RuleSet>) {
    let memory = map_bytes(Plan {
        max_sources: watched.source.max_sources(),
        rule_rows: rules.is_some() || watched.source.pin_dir().is_some(),
        rules: rules.map_or(0, |set| set.prefixes().count() as u32),
        cpus: possible_cpus(),
    })
    .total();
    eprintln!(
        "xdpstat: attached to {} ({}), up to {} sources per address family, {:.1} MiB of kernel memory; Ctrl-C to stop",
        watched.attached.interface,
        watched.attached,
        watched.source.max_sources(),
        memory as f64 / f64::from(1 << 20)
    );
    if let Some(dir) = watched.source.pin_dir() {
        eprintln!(
            "xdpstat: {}: persisted in {}, counting since {}; it keeps counting after xdpstat exits (`xdpstat detach {}` ends that)",
            watched.attached.interface,
            dir.display(),
            crate::counts::report::rfc3339(watched.counting_since()),
            watched.attached.interface
        );
        return;
    }
    for warning in watched.attached.warnings(asked) {
        eprintln!("xdpstat: warning: {warning}");
    }
}

/// Detaches every interface; reports the first failure after trying all.
pub fn detach_all(watched: &mut [Watched]) -> Result<(), XdpstatError> {
    let mut first_error = None;
    for one in watched.iter_mut() {
        if one.source.pin_dir().is_some() && !one.gone {
            eprintln!(
                "xdpstat: {} stays attached and counting (persisted); `xdpstat {} --persist` picks the counts up again",
                one.attached.interface, one.attached.interface
            );
        }
        if let Err(error) = one.source.detach() {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}
