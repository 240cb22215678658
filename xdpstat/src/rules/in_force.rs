//! The rules as the datapath holds them, read back: what a report names
//! and what a reload carries hits over by.

use ipnet::IpNet;
use xdpstat_common::{
    Counter,
    rules::{Rule as KernelRule, action},
};

use crate::rules::Mode;

/// One rule in force, as the datapath has it and as the report names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InForce {
    pub prefix: IpNet,
    pub kernel: KernelRule,
}

impl InForce {
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
