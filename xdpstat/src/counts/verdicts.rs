//! Every packet's fate under the rules: what one read holds of the
//! verdicts (totals, per ruled source, per rule) and how the report shows
//! them. Only verdicts other than `passed` are counted in the kernel;
//! `passed` is everything else, so the five always add up to the frames
//! counted.

use std::{collections::HashMap, net::IpAddr};

use serde::Serialize;
use xdpstat_common::{Counter, rules::verdict};

use xdpstat_common::rules::Acted;

use crate::rules::in_force::RuleHits;

/// The verdicts of one read.
#[derive(Clone, Debug, Default)]
pub struct VerdictRead {
    /// Every packet under each verdict but `passed`, summed over CPUs.
    pub acted: Acted,
    /// Packets a limit rule judged by its shared bucket (their source had
    /// no table entry, so no row of its own).
    pub shared_bucket: Counter,
    /// Per source a drop or limit rule acted on (or would have), from the
    /// row beside its table entry.
    pub ruled: HashMap<IpAddr, Acted>,
    /// The rules in force and their hits (the bans among them).
    pub rules: Vec<RuleHits>,
    /// What happened to bans since the read before.
    pub events: Vec<crate::rules::ban::Event>,
    /// Bans `max_bans` refused since the datapath was loaded.
    pub bans_refused: u64,
}

/// Packets and bytes under each verdict, as the report has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verdicts {
    pub passed: Counter,
    pub dropped: Counter,
    pub limited: Counter,
    pub would_drop: Counter,
    pub would_limit: Counter,
}

impl Verdicts {
    /// The verdicts of `total` packets of which `acted` were not passed.
    pub fn of(total: &Counter, acted: &Acted) -> Self {
        let mut not_passed = Counter::default();
        for counter in acted {
            not_passed.add(counter);
        }
        Self {
            passed: total.saturating_sub(&not_passed),
            dropped: acted[verdict::DROPPED],
            limited: acted[verdict::LIMITED],
            would_drop: acted[verdict::WOULD_DROP],
            would_limit: acted[verdict::WOULD_LIMIT],
        }
    }

    /// Whether a rule dropped or limited any of it, or would have.
    pub fn acted(&self) -> bool {
        [
            self.dropped,
            self.limited,
            self.would_drop,
            self.would_limit,
        ]
        .iter()
        .any(|c| c.packets > 0)
    }

    /// A short column for a source: `-` when all passed, else the counts
    /// of each other verdict (`dropped 120`, `limited 30 would_drop 2`).
    pub fn column(&self) -> String {
        let parts: Vec<String> = [
            ("dropped", self.dropped),
            ("limited", self.limited),
            ("would_drop", self.would_drop),
            ("would_limit", self.would_limit),
        ]
        .iter()
        .filter(|(_, c)| c.packets > 0)
        .map(|(name, c)| format!("{name} {}", c.packets))
        .collect();
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(" ")
        }
    }

    /// One line of totals: `passed 9000  dropped 1000  limited 0 ...`.
    pub fn line(&self) -> String {
        format!(
            "passed {}  dropped {}  limited {}  would_drop {}  would_limit {}",
            self.passed.packets,
            self.dropped.packets,
            self.limited.packets,
            self.would_drop.packets,
            self.would_limit.packets
        )
    }

    /// `(name, counter)` for each verdict, in the report's order.
    pub fn named(&self) -> [(&'static str, Counter); 5] {
        [
            ("passed", self.passed),
            ("dropped", self.dropped),
            ("limited", self.limited),
            ("would_drop", self.would_drop),
            ("would_limit", self.would_limit),
        ]
    }
}

impl VerdictRead {
    /// What the sources' rows do not hold of the acted totals: verdicts of
    /// sources no table entry held, or whose entry was retired.
    pub fn unattributed(&self) -> Acted {
        let mut rest = self.acted;
        for acted in self.ruled.values() {
            for (total, part) in rest.iter_mut().zip(acted) {
                *total = total.saturating_sub(part);
            }
        }
        rest
    }

    /// `source`'s verdicts, of the `total` it sent.
    pub fn of_source(&self, source: &IpAddr, total: &Counter) -> Verdicts {
        Verdicts::of(total, self.ruled.get(source).unwrap_or(&Acted::default()))
    }
}

/// Verdicts other than `passed` that no source holds, as the report has
/// them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Unattributed {
    pub dropped: Counter,
    pub limited: Counter,
    pub would_drop: Counter,
    pub would_limit: Counter,
}

impl From<Acted> for Unattributed {
    fn from(acted: Acted) -> Self {
        Self {
            dropped: acted[verdict::DROPPED],
            limited: acted[verdict::LIMITED],
            would_drop: acted[verdict::WOULD_DROP],
            would_limit: acted[verdict::WOULD_LIMIT],
        }
    }
}

/// One rule's line in a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRow {
    /// A rule's prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A list's file (as the rules file names it), and how many prefixes
    /// it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefixes: Option<usize>,
    /// What it asks of a packet beyond its source, as the rules file
    /// wrote it (`tcp`, `53,123`, `1024-65535`, `syn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<&'static str>,
    /// What the plain report calls it.
    #[serde(skip)]
    pub label: String,
    pub action: &'static str,
    pub mode: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

impl RuleRow {
    /// What the plain report calls it: the prefix (or `any`) and what it
    /// matches, or `list FILE`.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl From<&RuleHits> for RuleRow {
    fn from(hits: &RuleHits) -> Self {
        let (prefix, list, prefixes) = match &hits.rule.list {
            Some((name, count)) => (None, Some(name.clone()), Some(*count)),
            None => (hits.rule.prefix.map(|p| p.to_string()), None, None),
        };
        let matching = &hits.rule.matching;
        let ports = |ranges: &[(u16, u16)]| {
            (!ranges.is_empty()).then(|| crate::rules::matching::ports_text(ranges))
        };
        Self {
            prefix,
            list,
            prefixes,
            protocol: matching.protocol.map(|p| {
                crate::rules::matching::named(p).map_or_else(|| p.to_string(), str::to_owned)
            }),
            src_port: ports(&matching.src_ports),
            dst_port: ports(&matching.dst_ports),
            tcp_flags: matching.syn.then_some("syn"),
            label: hits.rule.label(),
            action: hits.rule.action(),
            mode: hits.rule.mode().name(),
            packets: hits.counter.packets,
            bytes: hits.counter.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(packets: u64, bytes: u64) -> Counter {
        Counter { packets, bytes }
    }

    #[test]
    fn passed_is_what_no_other_verdict_took() {
        let acted = [c(10, 1000), c(5, 500), c(0, 0), c(1, 100)];
        let v = Verdicts::of(&c(100, 10_000), &acted);
        assert_eq!(v.passed, c(84, 8400));
        assert_eq!(v.column(), "dropped 10 limited 5 would_limit 1");
        assert!(v.acted());
        let none = Verdicts::of(&c(3, 300), &Acted::default());
        assert_eq!(none.passed, c(3, 300));
        assert_eq!(none.column(), "-");
        assert!(!none.acted());
    }

    #[test]
    fn what_no_row_holds_is_unattributed() {
        let mut read = VerdictRead {
            acted: [c(10, 1000), c(0, 0), c(4, 40), c(0, 0)],
            ..VerdictRead::default()
        };
        read.ruled.insert(
            "198.18.0.1".parse().unwrap(),
            [c(7, 700), c(0, 0), c(4, 40), c(0, 0)],
        );
        assert_eq!(read.unattributed(), [c(3, 300), c(0, 0), c(0, 0), c(0, 0)]);
    }
}
