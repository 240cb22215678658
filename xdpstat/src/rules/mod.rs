//! Rules: what xdpstat does to the traffic it counts, beyond counting it.
//! A rule set is read from a TOML file ([`file`]), checked before anything
//! is attached, written into the datapath's rule maps
//! (`kernel::rulemaps`), and replaced whole on SIGHUP.
//!
//! The longest matching prefix decides; a source no rule matches passes,
//! and so does every frame that is not IPv4 or IPv6 (non-IP, malformed):
//! rules are about sources, and those have none.

pub mod file;
pub(crate) mod in_force;

use ipnet::IpNet;
use serde::Serialize;
use xdpstat_common::rules::{self as kernel, action, bucket};

/// Whether a rule acts or only counts what it would do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    DryRun,
    Enforce,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::Enforce => "enforce",
        }
    }
}

/// What a rule does to the packets it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
    /// At most `pps` packets a second from each source in the prefix, with
    /// room for `burst` at once.
    Limit {
        pps: u64,
        burst: u64,
    },
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Limit { .. } => "limit",
        }
    }
}

/// One checked rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub prefix: IpNet,
    pub action: Action,
    /// The file's mode unless the rule names its own.
    pub mode: Mode,
    /// Where the rule begins in its file.
    pub line: usize,
}

impl Rule {
    /// The rule as the datapath holds it, at `index` in its set.
    pub fn kernel(&self, index: u32) -> kernel::Rule {
        let (code, (interval_ns, tolerance_ns)) = match self.action {
            Action::Pass => (action::PASS, (0, 0)),
            Action::Drop => (action::DROP, (0, 0)),
            Action::Limit { pps, burst } => (action::LIMIT, bucket(pps, burst)),
        };
        kernel::Rule {
            index,
            action: code,
            enforce: u32::from(self.mode == Mode::Enforce),
            _pad: 0,
            interval_ns,
            tolerance_ns,
        }
    }

    /// What the rule does, in a few words (`drop`, `limit 1000 pps, burst 200`).
    pub fn describe(&self) -> String {
        match self.action {
            Action::Limit { pps, burst } => format!("limit {pps} pps, burst {burst}"),
            other => other.name().to_owned(),
        }
    }
}

/// A checked rules file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// The file's mode (each rule has its own copy, overridden or not).
    pub mode: Mode,
    /// In file order; a rule's index is its position.
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// Whether any rule limits a rate (and so needs each packet's time).
    pub fn has_limits(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| matches!(rule.action, Action::Limit { .. }))
    }
}
