//! The rules as the datapath holds them, read back: what a report names
//! and what a reload carries hits over by.

use ipnet::IpNet;
use xdpstat_common::{
    Counter,
    rules::{Rule as KernelRule, action},
};

use crate::rules::{Mode, ban::Ban, label, matching::Match};

/// One rule or list in force, as the datapath has it and as the report
/// names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InForce {
    /// A rule's prefix (a list's first); `None`: every source.
    pub prefix: Option<IpNet>,
    /// Its protocol, ports and flags.
    pub matching: Match,
    /// For a list: its file as the rules file names it, and how many
    /// prefixes it put in force.
    pub list: Option<(String, usize)>,
    /// For a ban: the ban (read back from the pins: only its prefix and
    /// action are sure).
    pub ban: Option<Ban>,
    pub kernel: KernelRule,
}

impl InForce {
    /// What the report and the metrics call it: the rule's prefix (or
    /// `any`) and match, or `list FILE` and its match.
    pub fn label(&self) -> String {
        if let Some(ban) = &self.ban {
            return ban.label();
        }
        match &self.list {
            Some((name, _)) if self.matching.is_any() => format!("list {name}"),
            Some((name, _)) => format!("list {name} {}", self.matching.describe()),
            None => label(self.prefix, &self.matching),
        }
    }

    /// What a captured packet's comment names it: `rule 203.0.113.0/24
    /// drop`, `list drop.netset drop`, `ban 198.51.100.7/32 (hand)`,
    /// `ban 198.51.100.0/24 (trigger udp-flood)`.
    pub fn named(&self) -> String {
        if let Some(ban) = &self.ban {
            return match ban.origin.as_str() {
                "hand" | "" => format!("ban {} (hand)", ban.prefix),
                trigger => format!("ban {} (trigger {trigger})", ban.prefix),
            };
        }
        match &self.list {
            Some(_) => format!("{} {}", self.label(), self.action()),
            None => format!("rule {} {}", self.label(), self.action()),
        }
    }

    /// `drop`, `limit`, `allow`, `pass`.
    pub fn action(&self) -> &'static str {
        match self.kernel.action {
            action::DROP => "drop",
            action::LIMIT => "limit",
            action::ALLOW => "allow",
            _ => "pass",
        }
    }

    pub fn mode(&self) -> Mode {
        if self.kernel.enforce != 0 {
            Mode::Enforce
        } else {
            Mode::DryRun
        }
    }
}

/// A rule's hits so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleHits {
    pub rule: InForce,
    pub counter: Counter,
}
