//! Rules: what xdpstat does to the traffic it counts, beyond counting it.
//! A rule set is read from a TOML file ([`file`]), checked before anything
//! is attached, written into the datapath's rule maps
//! (`kernel::rulemaps`), and replaced whole on SIGHUP.
//!
//! Among the rules whose every field matches a packet, the longest prefix
//! decides (a rule without one counts as length 0), then the one naming
//! more of protocol, ports and flags, then the one earlier in the file
//! ([`chain`]). A packet no rule matches passes, and so does every frame
//! that is not IPv4 or IPv6 (non-IP, malformed): rules are about sources,
//! and those have none.

pub mod ban;
pub mod chain;
pub mod file;
pub(crate) mod in_force;
pub mod list;
pub mod matching;
pub mod trigger;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use matching::{Families, Match};
use serde::Serialize;
use xdpstat_common::rules::{self as kernel, action, bucket, byte_bucket};

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
    /// Passes whatever any other rule says: the chains hold it before
    /// every rule that could drop or limit.
    Allow,
    Drop,
    /// At most `pps` packets a second from each source in the prefix, with
    /// room for `burst` at once (no packet rate: `pps` 0), and at most
    /// `bps` bits a second, with room for a second's worth (none: 0).
    Limit {
        pps: u64,
        burst: u64,
        bps: u64,
    },
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Allow => "allow",
            Action::Drop => "drop",
            Action::Limit { .. } => "limit",
        }
    }
}

/// One checked rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `None`: every source (of the families its protocol allows).
    pub prefix: Option<IpNet>,
    /// Its protocol, ports and flags.
    pub matching: Match,
    pub action: Action,
    /// The file's mode unless the rule names its own.
    pub mode: Mode,
    /// Where the rule begins in its file.
    pub line: usize,
}

impl Rule {
    /// The rule as the datapath holds it.
    pub fn kernel(&self) -> kernel::Rule {
        kernel_rule(self.action, self.mode)
    }

    /// What the rule does, in a few words (`drop`, `limit 1000 pps, burst 200`).
    pub fn describe(&self) -> String {
        describe(self.action)
    }

    /// Which sources and packets it is about: `198.51.100.0/24`,
    /// `any udp src port 53`, `203.0.113.0/24 tcp dst port 443`.
    pub fn label(&self) -> String {
        label(self.prefix, &self.matching)
    }

    /// The prefixes it sits at: its own, or its families' `/0`.
    pub fn prefixes(&self) -> Vec<IpNet> {
        match self.prefix {
            Some(prefix) => vec![prefix],
            None => {
                let v4 = IpNet::V4(Ipv4Net::default());
                let v6 = IpNet::V6(Ipv6Net::default());
                match self.matching.families() {
                    Families::Both => vec![v4, v6],
                    Families::V4 => vec![v4],
                    Families::V6 => vec![v6],
                }
            }
        }
    }
}

/// `PREFIX MATCH`, `any MATCH`, or the prefix alone.
pub fn label(prefix: Option<IpNet>, matching: &Match) -> String {
    let source = prefix.map_or_else(|| "any".to_owned(), |p| p.to_string());
    if matching.is_any() {
        source
    } else {
        format!("{source} {}", matching.describe())
    }
}

/// One checked `[[list]]`: a file of prefixes, all with one action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List {
    /// The file as the rules file names it (relative to the rules file's
    /// directory when not absolute), and as it was opened.
    pub name: String,
    pub path: std::path::PathBuf,
    /// The protocol, ports and flags every prefix of it asks for.
    pub matching: Match,
    pub action: Action,
    pub mode: Mode,
    /// Where the `[[list]]` begins in the rules file.
    pub line: usize,
    /// Its prefixes, each once, none that a rule or an earlier list has.
    pub prefixes: Vec<IpNet>,
}

impl List {
    /// The list as the datapath holds it (one rule for all its prefixes).
    pub fn kernel(&self) -> kernel::Rule {
        kernel_rule(self.action, self.mode)
    }

    /// What the list does, in a few words.
    pub fn describe(&self) -> String {
        describe(self.action)
    }
}

/// A checked rules file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// The file's mode (each rule has its own copy, overridden or not).
    pub mode: Mode,
    /// In file order; a rule's index is its position.
    pub rules: Vec<Rule>,
    /// In file order, after the rules: a list's index is the number of
    /// rules plus its position.
    pub lists: Vec<List>,
    /// What bans sources by itself, in file order.
    pub triggers: Vec<trigger::Trigger>,
    /// At most this many bans in force at once (`None`: the default).
    pub max_bans: Option<usize>,
    /// The program run for each ban event (`output::notify`).
    pub on_event: Option<std::path::PathBuf>,
}

impl RuleSet {
    /// Whether any rule or list limits a rate (and so needs each packet's
    /// time).
    pub fn has_limits(&self) -> bool {
        let limit = |action: &Action| matches!(action, Action::Limit { .. });
        self.rules.iter().any(|rule| limit(&rule.action))
            || self.lists.iter().any(|list| limit(&list.action))
    }

    /// `3 rules`, `1 rule and 2 lists of 1000003 prefixes`.
    pub fn summary(&self) -> String {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let rules = plural(self.rules.len(), "rule");
        if self.lists.is_empty() {
            return rules;
        }
        let listed: usize = self.lists.iter().map(|list| list.prefixes.len()).sum();
        format!(
            "{rules} and {} of {listed} prefixes",
            plural(self.lists.len(), "list")
        )
    }

    /// Whether the set has no rule or list in it (triggers put nothing
    /// in the datapath).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.lists.is_empty()
    }

    /// Every prefix of the set with the index it goes by: each rule's
    /// (a rule without one at its families' `/0`), then each list's.
    pub fn prefixes(&self) -> impl Iterator<Item = (IpNet, u32)> + '_ {
        let rules = self.rules.len() as u32;
        let by_rule = self.rules.iter().enumerate().flat_map(|(index, rule)| {
            rule.prefixes()
                .into_iter()
                .map(move |prefix| (prefix, index as u32))
        });
        let by_list = self.lists.iter().enumerate().flat_map(move |(at, list)| {
            list.prefixes
                .iter()
                .map(move |prefix| (*prefix, rules + at as u32))
        });
        by_rule.chain(by_list)
    }
}

/// What `action` in `mode` is to the datapath.
fn kernel_rule(action: Action, mode: Mode) -> kernel::Rule {
    let (code, (interval_ns, tolerance_ns), (byte_q16, byte_tolerance_ns)) = match action {
        Action::Pass => (action::PASS, (0, 0), (0, 0)),
        Action::Allow => (action::ALLOW, (0, 0), (0, 0)),
        Action::Drop => (action::DROP, (0, 0), (0, 0)),
        Action::Limit { pps, burst, bps } => (
            action::LIMIT,
            if pps == 0 { (0, 0) } else { bucket(pps, burst) },
            if bps == 0 { (0, 0) } else { byte_bucket(bps) },
        ),
    };
    kernel::Rule {
        action: code,
        enforce: u32::from(mode == Mode::Enforce),
        interval_ns,
        tolerance_ns,
        byte_q16,
        byte_tolerance_ns,
        // The loader knows the clock's tick (see `Rule::coarse`).
        coarse: 0,
        _pad: 0,
    }
}

/// `drop`, `pass`, `limit 1000 pps, burst 200`, `limit 50000000 bps`.
fn describe(action: Action) -> String {
    match action {
        Action::Limit { pps, burst, bps } => {
            let mut parts = Vec::new();
            if pps > 0 {
                parts.push(format!("{pps} pps, burst {burst}"));
            }
            if bps > 0 {
                parts.push(format!("{bps} bps"));
            }
            format!("limit {}", parts.join(" and "))
        }
        other => other.name().to_owned(),
    }
}
