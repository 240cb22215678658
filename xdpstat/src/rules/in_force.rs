//! The rules as the datapath holds them, read back: what a report names
//! and what a reload carries hits over by.

use ipnet::IpNet;
use xdpstat_common::{
    Counter,
    rules::{Rule as KernelRule, action},
};

use crate::rules::Mode;

/// One rule or list in force, as the datapath has it and as the report
/// names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InForce {
    /// A rule's prefix (a list's first).
    pub prefix: IpNet,
    /// For a list: its file as the rules file names it, and how many
    /// prefixes it put in force.
    pub list: Option<(String, usize)>,
    pub kernel: KernelRule,
}

impl InForce {
    /// What the report and the metrics call it: the rule's prefix, or
    /// `list FILE`.
    pub fn label(&self) -> String {
        match &self.list {
            Some((name, _)) => format!("list {name}"),
            None => self.prefix.to_string(),
        }
    }

    /// `drop`, `limit`, `pass`.
    pub fn action(&self) -> &'static str {
        match self.kernel.action {
            action::DROP => "drop",
            action::LIMIT => "limit",
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
