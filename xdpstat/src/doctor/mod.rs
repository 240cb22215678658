//! `xdpstat doctor [IFACE...]`: finds, before the user tries, why attaching
//! would fail or end in generic mode, and says what to do about it. Every
//! check only reads (netlink, ethtool, /proc, /sys, bpf(2) queries): no
//! program is loaded or attached, nothing on the host changes.

mod host;
mod interface;

use std::io::Write;

use serde::Serialize;

use crate::{
    cli::{DoctorArgs, StatusFormat},
    error::XdpstatError,
    kernel::memory::{self, Plan},
    outcome::{Outcome, Partial},
};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One check's finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The interface checked, or `None` for the host.
    pub interface: Option<String>,
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do, for a warning or a failure.
    pub fix: Option<String>,
}

impl Check {
    fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            interface: None,
            check,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Warn,
            fix: Some(fix.into()),
            ..Self::ok(check, detail)
        }
    }

    fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Fail,
            fix: Some(fix.into()),
            ..Self::ok(check, detail)
        }
    }

    fn on(mut self, interface: &str) -> Self {
        self.interface = Some(interface.to_owned());
        self
    }
}

/// What `doctor` prints as JSON.
#[derive(Serialize)]
struct Checks<'a> {
    checks: &'a [Check],
}

/// Runs the host's checks and each interface's; `Partial(ChecksFailed)` when
/// one failed (exit 1), after printing them all.
pub fn doctor(args: &DoctorArgs, out: &mut dyn Write) -> Result<Outcome, XdpstatError> {
    let mut checks = host::checks(&args.pin_dir);
    let plan = Plan {
        max_sources: args.max_sources,
        rule_rows: args.rules.is_some() || args.persist,
        rules: args.rules.as_deref().map_or(0, rules_in),
        cpus: memory::possible_cpus(),
    };
    for interface in &args.interfaces {
        checks.extend(interface::checks(interface, plan, &args.pin_dir));
    }
    let written = match args.format {
        StatusFormat::Json => serde_json::to_writer(&mut *out, &Checks { checks: &checks })
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
        StatusFormat::Plain => write_plain(out, &checks),
    };
    written.map_err(XdpstatError::Output)?;
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        return Ok(Outcome::Partial(Partial::ChecksFailed { failed }));
    }
    Ok(Outcome::Whole)
}

/// How many prefixes the rules and lists of the file at `path` put in
/// force (none when it cannot be read: the run itself says why).
fn rules_in(path: &std::path::Path) -> u32 {
    crate::rules::file::load(path).map_or(0, |set| set.prefixes().count() as u32)
}

fn write_plain(out: &mut dyn Write, checks: &[Check]) -> std::io::Result<()> {
    for check in checks {
        let status = match check.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        let scope = check.interface.as_deref().unwrap_or("host");
        write!(
            out,
            "{status} {scope:<15} {:<14} {}",
            check.check, check.detail
        )?;
        if let Some(fix) = &check.fix {
            write!(out, " -> {fix}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
