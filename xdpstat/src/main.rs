//! The `xdpstat` binary: parse the command line, check the names and paths
//! in it, route SIGINT and SIGTERM to a stop flag (and SIGHUP, from the
//! first moment, to the rules reload), run, and print any error once, on
//! one line, exiting 2.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use clap::Parser as _;
use xdpstat::{
    cli::{Cli, Command, RulesArgs, RulesCommand},
    doctor::doctor,
    error::{XdpstatError, one_line},
    kernel::{ifname, pins},
    outcome::Outcome,
    replay::replay,
    run::demo::demo,
    run::detach::detach,
    run::reload::Hangups,
    run::rules_check::check,
    run::status::status,
    run::watch::watch,
};

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    match prepare(&mut cli).and_then(|hangups| run(&cli, hangups)) {
        Ok(Outcome::Whole) => ExitCode::SUCCESS,
        // Partial success: the readable captures were reported, every
        // interface's final counts before it went away, every check.
        Ok(Outcome::Partial(partial)) => {
            eprintln!("xdpstat: {partial}");
            ExitCode::from(1)
        }
        Err(error) => {
            match error.doctor_can_explain() {
                Some(interface) => eprintln!(
                    "xdpstat: {}; run 'xdpstat doctor {interface}' for details",
                    one_line(&error)
                ),
                None => eprintln!("xdpstat: {}", one_line(&error)),
            }
            ExitCode::from(2)
        }
    }
}

/// Refuses a name that is no interface's before it becomes part of a path
/// or a message, makes every pin root absolute and canonical, and, for the
/// commands that count, catches SIGHUP before anything else happens: one
/// that arrives during start-up is a reload once the rules are in force.
fn prepare(cli: &mut Cli) -> Result<Option<Hangups>, XdpstatError> {
    let (names, pin_dir): (&[String], Option<&mut PathBuf>) = match &mut cli.command {
        None => (&cli.interfaces, Some(&mut cli.persist.pin_dir)),
        Some(Command::Detach(args)) => (&args.interfaces, Some(&mut args.pin_dir)),
        Some(Command::Doctor(args)) => (&args.interfaces, Some(&mut args.pin_dir)),
        Some(Command::Status(args)) => (&[], Some(&mut args.pin_dir)),
        Some(Command::Ban(args)) => (
            std::slice::from_ref(&args.interface),
            Some(&mut args.pin_dir),
        ),
        Some(Command::Unban(args)) => (
            std::slice::from_ref(&args.interface),
            Some(&mut args.pin_dir),
        ),
        Some(Command::Bans(args)) => (&args.interfaces, Some(&mut args.pin_dir)),
        Some(_) => (&[], None),
    };
    for name in names {
        ifname::check(name)?;
    }
    if let Some(pin_dir) = pin_dir {
        *pin_dir = pins::pin_root(pin_dir)?;
    }
    match &cli.command {
        None | Some(Command::Demo(_)) => Ok(Some(Hangups::catch()?)),
        Some(_) => Ok(None),
    }
}

fn run(cli: &Cli, hangups: Option<Hangups>) -> Result<Outcome, XdpstatError> {
    if let Some(dir) = &cli.generate_docs {
        return xdpstat::run::generate::generate(dir).map(|()| Outcome::Whole);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| XdpstatError::Signal { signal, source: e })?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let whole = |done: Result<(), XdpstatError>| done.map(|()| Outcome::Whole);
    match &cli.command {
        Some(Command::Demo(args)) => whole(demo(args, &mut out, &stop, hangups)),
        Some(Command::Replay(args)) => replay(args, &mut out, &stop),
        Some(Command::Detach(args)) => whole(detach(args)),
        Some(Command::Status(args)) => whole(status(args, &mut out)),
        Some(Command::Doctor(args)) => doctor(args, &mut out),
        Some(Command::Rules(RulesArgs {
            command: RulesCommand::Check(args),
        })) => whole(check(args, &mut out)),
        Some(Command::Ban(args)) => whole(xdpstat::run::bans::ban(args, &mut out)),
        Some(Command::Unban(args)) => whole(xdpstat::run::bans::unban(args, &mut out)),
        Some(Command::Bans(args)) => whole(xdpstat::run::bans::list(args, &mut out)),
        None => watch(cli, &mut out, &stop, hangups),
    }
}
