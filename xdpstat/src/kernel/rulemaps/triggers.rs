//! The triggers at work: each interval's rates judged, and what they
//! decide done to the bans (new ones in one write, ends moved on in
//! place), with an event each.

use ipnet::IpNet;
use xdpstat_common::rules::{CHAINS_MAP, MAX_NODES, fields};

use super::{RuleMaps, failed};
use crate::{
    counts::report::rfc3339,
    error::{Cause, one_line},
    rules::{
        ban::{self, Ban, EventKind, Refusal},
        trigger::Decision,
    },
};

impl RuleMaps {
    /// Runs the triggers over the interval from `previous` to `current`
    /// and acts on what they decide: new bans (one write for all of
    /// them), ends moved on for bans still over their threshold (in
    /// place), dry runs' `would_ban`, refusals; each an event.
    pub fn judge_triggers(
        &mut self,
        previous: &crate::counts::snapshot::Snapshot,
        current: &crate::counts::snapshot::Snapshot,
    ) -> Result<(), Cause> {
        if self.file.triggers.is_empty() {
            return Ok(());
        }
        let seconds = current
            .taken
            .saturating_duration_since(previous.taken)
            .as_secs_f64();
        let now = current.wall;
        let triggers = self.file.triggers.clone();
        let decisions = self.watch.judge(&triggers, seconds, now, |trigger| {
            crate::counts::rates::of(trigger, previous, current)
        });
        if self.bans.list.len() < self.bans.max {
            self.full_said = false;
        }
        let before = self.bans.list.clone();
        let mut added = Vec::new();
        let mut extended = Vec::new();
        for decision in decisions {
            match decision {
                Decision::Ban {
                    trigger,
                    key,
                    detail,
                } => {
                    let t = &triggers[trigger];
                    if let Some(existing) = self.bans.list.iter().find(|b| b.prefix == key) {
                        // A ban of it is in force (by hand, or by another
                        // trigger): it stays as it is.
                        if existing.origin == t.name {
                            extended.push((key, t.ban_for));
                        }
                        continue;
                    }
                    let ban = Ban::at(self.now(), key, t.action, &t.name, &detail, Some(t.ban_for));
                    match self.bans.add(ban.clone(), &self.file) {
                        Ok(_) => added.push(ban),
                        Err(refusal @ Refusal::Allowed { .. }) => {
                            self.event(EventKind::Refused, &ban, refusal.to_string());
                        }
                        Err(refusal @ Refusal::Full { .. }) => {
                            self.refused += 1;
                            if !self.full_said {
                                self.full_said = true;
                                self.event(
                                    EventKind::Refused,
                                    &ban,
                                    format!("{refusal}; more are refused and counted (bans_refused) until there is room"),
                                );
                            }
                        }
                    }
                }
                Decision::Extend { trigger, key } => {
                    let t = &triggers[trigger];
                    if self
                        .bans
                        .list
                        .iter()
                        .any(|b| b.prefix == key && b.origin == t.name)
                    {
                        extended.push((key, t.ban_for));
                    }
                }
                Decision::WouldBan {
                    trigger,
                    key,
                    detail,
                } => {
                    let t = &triggers[trigger];
                    let ban = Ban::at(self.now(), key, t.action, &t.name, &detail, Some(t.ban_for));
                    // What enforcing would do: an allowed key is refused.
                    if let Some(by) = ban::allowed_by(&self.file, &key) {
                        self.event(
                            EventKind::Refused,
                            &ban,
                            format!("dry run: {key} is allowed by {by}: {detail}"),
                        );
                        continue;
                    }
                    self.event(
                        EventKind::WouldBan,
                        &ban,
                        format!(
                            "{} for {}: {detail}",
                            ban.describe(),
                            humantime::format_duration(t.ban_for)
                        ),
                    );
                }
            }
        }
        // Ends first, so that a write for new bans carries them too.
        let now = self.now();
        for (key, length) in &extended {
            if let Some(ban) = self.bans.list.iter_mut().find(|b| b.prefix == *key) {
                let renewed = Ban::at(now, *key, ban.action, "", "", Some(*length));
                ban.until = renewed.until;
                ban.until_ns = renewed.until_ns;
            }
        }
        if !added.is_empty() {
            self.write_or_restore(before)?;
            for ban in &added {
                let until = ban.until.map(rfc3339).unwrap_or_default();
                self.event(
                    EventKind::Ban,
                    ban,
                    format!("{} until {until}: {}", ban.describe(), ban.reason),
                );
                if let Some(until) = ban.until {
                    self.announced.insert(ban.prefix, until);
                }
            }
        } else if !extended.is_empty() {
            self.extend_in_place()?;
        }
        for (key, length) in extended {
            let Some(ban) = self.bans.list.iter().find(|b| b.prefix == key).cloned() else {
                continue;
            };
            let Some(until) = ban.until else { continue };
            let said = self.announced.get(&key).copied();
            // An event when the end moved by half a ban or more since the
            // last one said it (not one every interval).
            if said.is_none_or(|said| until.duration_since(said).is_ok_and(|d| d >= length / 2)) {
                self.announced.insert(key, until);
                self.event(
                    EventKind::Extend,
                    &ban,
                    format!("still over its threshold: until {}", rfc3339(until)),
                );
            }
        }
        let kept: std::collections::HashSet<IpNet> =
            self.bans.list.iter().map(|b| b.prefix).collect();
        self.announced.retain(|prefix, _| kept.contains(prefix));
        Ok(())
    }

    /// Writes the bans' ends onto their nodes in the slot in force and into
    /// the pinned records (each end a word the datapath reads whole).
    pub(super) fn extend_in_place(&mut self) -> Result<(), Cause> {
        let slot = self.slot()?;
        let first = (self.file.rules.len() + self.file.lists.len()) as u32;
        for (at, node) in self.nodes.iter_mut().enumerate() {
            if node.fields & fields::BAN == 0 {
                continue;
            }
            let Some(ban) = self.bans.list.get((node.rule - first) as usize) else {
                continue;
            };
            if node.until_ns == ban.until_ns {
                continue;
            }
            node.until_ns = ban.until_ns;
            self.chains
                .set(slot * MAX_NODES + at as u32, *node, 0)
                .map_err(|e| failed(CHAINS_MAP, one_line(&e)))?;
        }
        self.record_bans()
    }
}
