//! The `xdpstat` binary: parse the command line, route SIGINT and SIGTERM to
//! a stop flag, run, and print any error once, on one line, exiting 2.

use std::{
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use clap::Parser as _;
use xdpstat::{
    cli::{Cli, Command, RulesArgs, RulesCommand},
    doctor::doctor,
    error::{XdpstatError, one_line},
    replay::replay,
    run::demo::demo,
    run::detach::detach,
    run::status::status,
    run::watch::watch,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        // Partial success: the readable captures were reported, or every
        // interface's final counts before it went away.
        Err(
            error @ (XdpstatError::SomeCapturesFailed { .. }
            | XdpstatError::AllInterfacesGone
            | XdpstatError::ChecksFailed { .. }),
        ) => {
            eprintln!("xdpstat: {}", one_line(&error));
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

fn run(cli: &Cli) -> Result<(), XdpstatError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| XdpstatError::Signal { signal, source: e })?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match &cli.command {
        Some(Command::Demo(args)) => demo(args, &mut out, &stop),
        Some(Command::Replay(args)) => replay(args, &mut out, &stop),
        Some(Command::Detach(args)) => detach(args),
        Some(Command::Status(args)) => status(args, &mut out),
        Some(Command::Doctor(args)) => doctor(args, &mut out),
        Some(Command::Rules(RulesArgs {
            command: RulesCommand::Check(args),
        })) => xdpstat::rules::check(args, &mut out),
        None => watch(
            &cli.interfaces,
            &cli.report,
            &cli.attach,
            &cli.metrics,
            &cli.persist,
            &mut out,
            &stop,
        ),
    }
}
