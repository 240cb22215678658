//! The datapath's rule maps seen from user space: put a rule set in force
//! (atomically, by filling the idle slot and flipping the ruleset word)
//! and read each rule's hits. (Each source's verdicts are in the rows
//! beside the table entries, read with the tables.)
//!
//! Bans live here too, beside the rule set they sit above: every change
//! to either writes both as one set (the bans indexed after the rules and
//! lists), and the bans go into the pinned `BANS` map as well, for the
//! next xdpstat of a persisted datapath.
//!
//! A rule's hits carry over a reload when the new set has a rule with the
//! same prefix and action (a list: the same file and action; its mode or
//! rate may change): the old slot's final count, read after
//! a grace period, becomes the new rule's base. Slots are cleaned right
//! after they leave force, so the idle slot is always empty.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, OwnedFd},
};

use aya::{
    Pod,
    maps::{
        Array, Map, MapData, MapError,
        lpm_trie::{Key, LpmTrie},
    },
};
use ipnet::IpNet;

use xdpstat_common::{
    Counter,
    rules::{
        BANS_MAP, BYTE_BUCKETS, BanRecord, CHAINS_MAP, COARSE_TICKS, MAX_NODES, MAX_RULES,
        MAX_WALK, Node, RULE_BUCKETS_MAP, RULE_HITS_MAP, RULE_HITS_SECTION, RULES_MAP,
        RULES_V4_MAPS, RULES_V6_MAPS, RULESET_MAP, Rule as KernelRule, action, fields, ruleset,
    },
};

mod bans;
mod in_place;
mod triggers;

use crate::{
    error::{Cause, one_line},
    kernel::{
        bpf_sys::{self, Grace},
        memory::possible_cpus,
        sections::Sections,
        tables::forget_remembered_rules,
    },
    rules::{
        Action, RuleSet,
        ban::{self, Ban, Bans, Event, EventKind, Moment},
        chain,
        in_force::{InForce, RuleHits},
        matching::Match,
        trigger::Watch,
    },
};

/// The rule maps of one datapath.
pub struct RuleMaps {
    ruleset: Array<MapData, u64>,
    v4: [LpmTrie<MapData, [u8; 4], u32>; 2],
    v6: [LpmTrie<MapData, [u8; 16], u32>; 2],
    /// Each rule's hits, a section per CPU (see `kernel::sections`).
    hits: MapData,
    buckets: Array<MapData, u64>,
    by_index: Array<MapData, KernelRule>,
    chains: Array<MapData, Node>,
    records: Array<MapData, BanRecord>,
    /// The rule set put in force last, and the bans above it.
    file: RuleSet,
    bans: Bans,
    /// How many records the pinned map holds in use.
    recorded: usize,
    /// What happened to bans since the last [`RuleMaps::take_events`].
    events: Vec<Event>,
    /// The triggers' keys over their thresholds.
    watch: Watch,
    /// Bans the bound refused, ever, and whether that was said since
    /// there last was room.
    refused: u64,
    full_said: bool,
    /// The slot in force's nodes, as written, for extending a ban's end
    /// in place; and each trigger ban's end as its last event said it.
    nodes: Vec<Node>,
    announced: HashMap<IpNet, std::time::SystemTime>,
    /// The capture's time in a replay (bans begin, end and are events by
    /// it); `None`: live, the clocks' now.
    capture_time: Option<Moment>,
    /// What each slot's rules are called in a captured packet's comment,
    /// by index (a copy made before a flip names the old slot's).
    named: [Vec<String>; 2],
    /// The source tables (IPv4, IPv6) and their length, for making their
    /// entries forget their rules when generations come round.
    tables: [OwnedFd; 2],
    entries: usize,
    /// The rules in force, by index, and the hits each carried over.
    in_force: Vec<InForce>,
    base: Vec<Counter>,
    /// Per slot, how many indices may hold counts or buckets.
    dirty: [u32; 2],
    grace: Grace,
}

fn failed(what: &str, e: impl std::fmt::Display) -> Cause {
    format!("{what}: {e}").into()
}

/// Every prefix `trie` holds with its chain's head, its address made by
/// `address`.
fn trie_heads<K: Pod>(
    trie: &LpmTrie<MapData, K, u32>,
    address: fn(K) -> IpAddr,
) -> Result<Vec<(IpNet, u32)>, Cause> {
    let mut heads = Vec::new();
    for entry in trie.iter() {
        let (key, head) = entry.map_err(|e| failed("reading the rules", one_line(&e)))?;
        let prefix = IpNet::new(address(key.data()), key.prefix_len() as u8)
            .map_err(|e| failed("a rule", e))?;
        heads.push((prefix, head));
    }
    Ok(heads)
}

/// Removes every rule from `trie`.
fn empty<K: Pod>(trie: &mut LpmTrie<MapData, K, u32>) -> Result<(), Cause> {
    let keys: Vec<Key<K>> = trie.keys().filter_map(Result::ok).collect();
    for key in keys {
        trie.remove(&key)
            .map_err(|e| failed("removing a rule", one_line(&e)))?;
    }
    Ok(())
}

/// Puts chain head `head` in `trie` under the prefix of `len` bits of
/// `address`.
fn insert<K: Pod>(
    trie: &mut LpmTrie<MapData, K, u32>,
    len: u32,
    address: K,
    head: u32,
) -> Result<(), Cause> {
    trie.insert(&Key::new(len, address), head, 0)
        .map_err(|e| failed("writing a rule", one_line(&e)))
}

/// `rule` with its clock chosen (see `Rule::coarse`): the coarse clock
/// when each of its tolerances spans [`COARSE_TICKS`] of its ticks.
fn clocked(mut rule: KernelRule) -> KernelRule {
    static TICK_NS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let tick = *TICK_NS.get_or_init(|| {
        let mut resolution = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_getres fills the timespec it is given.
        let read = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut resolution) };
        (read == 0)
            .then(|| resolution.tv_sec as u64 * 1_000_000_000 + resolution.tv_nsec as u64)
            .filter(|&tick| tick > 0)
    });
    let spans = |tolerance: u64, used: bool| {
        !used || tick.is_some_and(|tick| tolerance >= tick.saturating_mul(COARSE_TICKS))
    };
    rule.coarse = u32::from(
        rule.action == action::LIMIT
            && spans(rule.tolerance_ns, rule.interval_ns != 0)
            && spans(rule.byte_tolerance_ns, rule.byte_q16 != 0),
    );
    rule
}

/// `map`'s data, when it is an array.
fn array_data(map: Map, name: &'static str) -> Result<MapData, Cause> {
    match map {
        Map::Array(data) => Ok(data),
        _ => Err(failed(name, "not an array")),
    }
}

/// A map of the type `T` names, from `fetch`.
fn take<T>(
    fetch: &mut dyn FnMut(&'static str) -> Result<Map, Cause>,
    name: &'static str,
) -> Result<T, Cause>
where
    T: TryFrom<Map, Error = MapError>,
{
    let map = fetch(name)?;
    T::try_from(map).map_err(|e| failed(name, one_line(&e)))
}

impl RuleMaps {
    /// Takes the rule maps out of a loaded datapath. `picked_up` is true
    /// when they are pinned ones an earlier xdpstat filled: its rules are
    /// then read back, so their hits carry over to this run's rules.
    /// `tables` are the datapath's source tables, of `entries` entries.
    pub fn take(
        ebpf: &mut aya::Ebpf,
        tables: [OwnedFd; 2],
        entries: usize,
        picked_up: bool,
    ) -> Result<Self, Cause> {
        let mut fetch = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| failed(name, "not in the object file"))
        };
        Self::with_maps(&mut fetch, tables, entries, picked_up)
    }

    /// The rule maps of a persisted datapath no xdpstat runs, from its
    /// pins in `dir` (locked by the caller), with its source tables of
    /// `entries` entries: for changing its bans in place.
    pub fn from_pins(dir: &std::path::Path, entries: usize) -> Result<Self, Cause> {
        let mut fetch = |name: &'static str| {
            let data = MapData::from_pin(dir.join(name)).map_err(|e| failed(name, one_line(&e)))?;
            Map::from_map_data(data).map_err(|e| failed(name, one_line(&e)))
        };
        let table =
            |name: &'static str| bpf_sys::open_pinned(&dir.join(name)).map_err(|e| failed(name, e));
        let tables = [
            table(xdpstat_common::SOURCES_V4_MAP)?,
            table(xdpstat_common::SOURCES_V6_MAP)?,
        ];
        let mut maps = Self::with_maps(&mut fetch, tables, entries, false)?;
        // Its slots' counts are what the datapath has: carried over by
        // the next xdpstat, not here.
        let slot = maps.slot()?;
        maps.in_force = maps.read_slot(slot)?;
        maps.pick_up_bans()?;
        // The bans as their records say them (the chains know only their
        // prefixes); a ban step with no record was taken out, or ended.
        for rule in &mut maps.in_force {
            if let Some(read) = &rule.ban {
                rule.ban = maps
                    .bans
                    .list
                    .iter()
                    .find(|b| b.prefix == read.prefix)
                    .cloned()
                    .or_else(|| {
                        let mut gone = read.clone();
                        gone.until_ns = ban::TAKEN_OUT_NS;
                        Some(gone)
                    });
            }
        }
        Ok(maps)
    }

    fn with_maps(
        fetch: &mut dyn FnMut(&'static str) -> Result<Map, Cause>,
        tables: [OwnedFd; 2],
        entries: usize,
        picked_up: bool,
    ) -> Result<Self, Cause> {
        let mut maps = Self {
            ruleset: take(fetch, RULESET_MAP)?,
            v4: [
                take(fetch, RULES_V4_MAPS[0])?,
                take(fetch, RULES_V4_MAPS[1])?,
            ],
            v6: [
                take(fetch, RULES_V6_MAPS[0])?,
                take(fetch, RULES_V6_MAPS[1])?,
            ],
            hits: array_data(fetch(RULE_HITS_MAP)?, RULE_HITS_MAP)?,
            buckets: take(fetch, RULE_BUCKETS_MAP)?,
            by_index: take(fetch, RULES_MAP)?,
            chains: take(fetch, CHAINS_MAP)?,
            records: take(fetch, BANS_MAP)?,
            file: RuleSet::default(),
            bans: Bans::default(),
            recorded: 0,
            events: Vec::new(),
            watch: Watch::default(),
            refused: 0,
            full_said: false,
            nodes: Vec::new(),
            announced: HashMap::new(),
            capture_time: None,
            named: [Vec::new(), Vec::new()],
            tables,
            entries,
            in_force: Vec::new(),
            base: Vec::new(),
            dirty: if picked_up { [MAX_RULES; 2] } else { [0; 2] },
            grace: Grace::new().map_err(|e| failed("creating the grace-period map", e))?,
        };
        if picked_up {
            let slot = maps.slot()?;
            maps.in_force = maps.read_slot(slot)?;
            maps.named[slot as usize] = maps.in_force.iter().map(InForce::named).collect();
            maps.base = vec![Counter::default(); maps.in_force.len()];
            // The idle slot may hold a reload an xdpstat died in.
            maps.clean(1 - slot)?;
            maps.pick_up_bans()?;
        }
        Ok(maps)
    }

    /// How many rules are in force.
    pub fn in_force_len(&self) -> usize {
        self.in_force.len()
    }

    /// The slot in force.
    pub(super) fn slot(&self) -> Result<u32, Cause> {
        Ok((self.word()? & ruleset::SLOT) as u32)
    }

    pub(super) fn word(&self) -> Result<u64, Cause> {
        self.ruleset
            .get(&0, 0)
            .map_err(|e| failed(RULESET_MAP, one_line(&e)))
    }

    /// The rules in `slot`, by index: each prefix's own steps (those of
    /// its length) on its chain name its rules and their matches.
    pub(super) fn read_slot(&self, slot: u32) -> Result<Vec<InForce>, Cause> {
        let s = slot as usize;
        let mut heads = trie_heads(&self.v4[s], |a| Ipv4Addr::from(a).into())?;
        heads.extend(trie_heads(&self.v6[s], |a| Ipv6Addr::from(a).into())?);
        // Per index: its prefixes, and its steps.
        let mut found: std::collections::BTreeMap<u32, (Vec<IpNet>, Vec<Node>)> =
            std::collections::BTreeMap::new();
        for (prefix, head) in heads {
            let mut at = Some(head);
            for _ in 0..MAX_WALK {
                let Some(node_at) = at else { break };
                let node = self
                    .chains
                    .get(&(slot * MAX_NODES + node_at), 0)
                    .map_err(|e| failed(CHAINS_MAP, one_line(&e)))?;
                if node.prefix_len == prefix.prefix_len() {
                    let (prefixes, nodes) = found.entry(node.rule).or_default();
                    if prefixes.last() != Some(&prefix) {
                        prefixes.push(prefix);
                    }
                    nodes.push(node);
                }
                at = node.next.checked_sub(1);
            }
        }
        let mut rules = Vec::with_capacity(found.len());
        for (index, (mut prefixes, nodes)) in found {
            let kernel = self
                .by_index
                .get(&(slot * MAX_RULES + index), 0)
                .map_err(|e| failed(RULES_MAP, one_line(&e)))?;
            prefixes.sort_unstable();
            prefixes.dedup();
            let any_source = nodes.iter().any(|n| n.fields & fields::ANY_SOURCE != 0);
            let ban = nodes.iter().any(|n| n.fields & fields::BAN != 0).then(|| {
                let action = if kernel.action == xdpstat_common::rules::action::LIMIT {
                    Action::Limit {
                        pps: 0,
                        burst: 0,
                        bps: 0,
                    }
                } else {
                    Action::Drop
                };
                Ban::new(prefixes[0], action, "", "", None)
            });
            let list = (!any_source && prefixes.len() > 1)
                .then(|| ("(read back from the pins)".to_owned(), prefixes.len()));
            rules.push(InForce {
                prefix: (!any_source).then(|| prefixes[0]),
                matching: match_of(&nodes),
                list,
                ban,
                kernel,
            });
        }
        Ok(rules)
    }

    /// Empties `slot`: its tries, and the hits and buckets of the indices
    /// it used.
    fn clean(&mut self, slot: u32) -> Result<(), Cause> {
        let s = slot as usize;
        empty(&mut self.v4[s])?;
        empty(&mut self.v6[s])?;
        self.hit_sections()
            .zero((slot * MAX_RULES) as usize, self.dirty[s] as usize)
            .map_err(|e| failed(RULE_HITS_MAP, e))?;
        for index in 0..self.dirty[s] {
            let at = slot * MAX_RULES + index;
            for bucket in [at, BYTE_BUCKETS + at] {
                self.buckets
                    .set(bucket, 0, 0)
                    .map_err(|e| failed(RULE_BUCKETS_MAP, one_line(&e)))?;
            }
        }
        self.dirty[s] = 0;
        self.set_in_use(slot, 0, 0)
    }

    /// Puts `set` in force in place of the rules in force, with the bans
    /// in force above it (a ban an allow of `set` now covers goes, an
    /// event): fills the idle slot, flips the ruleset word (one write:
    /// every packet after it is judged by the new rules whole), waits for
    /// packets judged by the old ones, carries their hits over, and
    /// empties the old slot.
    pub fn put(&mut self, set: &RuleSet) -> Result<(), Cause> {
        let before = (
            std::mem::replace(&mut self.file, set.clone()),
            self.bans.list.clone(),
        );
        // Bans past a lower bound stay; new ones wait for room.
        self.bans.max = set.max_bans.unwrap_or(ban::DEFAULT_MAX_BANS);
        if self.file.triggers != before.0.triggers {
            self.watch.reset();
        }
        let allowed = self.bans.take_allowed(&self.file);
        if let Err(e) = self.write() {
            (self.file, self.bans.list) = before;
            return Err(e);
        }
        for (ban, by) in allowed {
            self.event(EventKind::Unban, &ban, format!("now allowed by {by}"));
        }
        Ok(())
    }

    /// Puts the rule set and the bans in force (see [`RuleMaps::put`]).
    pub(super) fn write(&mut self) -> Result<(), Cause> {
        let set = &self.file;
        let bans = &self.bans.list;
        if set.is_empty() && bans.is_empty() && self.in_force.is_empty() {
            self.record_bans()?;
            return Ok(());
        }
        if set.rules.len() + set.lists.len() + bans.len() > MAX_RULES as usize {
            return Err(failed(
                "the rules",
                format!(
                    "{} rules and lists and {} bans are more than the {MAX_RULES} the datapath holds",
                    set.rules.len() + set.lists.len(),
                    bans.len()
                ),
            ));
        }
        let previous = self.word()?;
        let old = (previous & ruleset::SLOT) as u32;
        let new = 1 - old;
        let generation = self.next_generation(previous)?;
        let mut word = u64::from(new) | generation << ruleset::GENERATION_SHIFT;
        let chains = chain::build(set, bans).map_err(|e| failed("the rules", e.message))?;
        // By index: the rules, then the lists.
        let mut in_force = Vec::with_capacity(set.rules.len() + set.lists.len());
        for rule in &set.rules {
            in_force.push(InForce {
                prefix: rule.prefix,
                matching: rule.matching.clone(),
                list: None,
                ban: None,
                kernel: rule.kernel(),
            });
        }
        for list in &set.lists {
            in_force.push(InForce {
                prefix: list.prefixes.first().copied(),
                matching: list.matching.clone(),
                list: Some((list.name.clone(), list.prefixes.len())),
                ban: None,
                kernel: list.kernel(),
            });
        }
        for ban in bans {
            in_force.push(InForce {
                prefix: Some(ban.prefix),
                matching: Match::default(),
                list: None,
                ban: Some(ban.clone()),
                kernel: ban.kernel(),
            });
        }
        if self.dirty[new as usize] != 0 {
            self.clean(new)?;
        }
        for (index, rule) in in_force.iter().enumerate() {
            self.by_index
                .set(new * MAX_RULES + index as u32, clocked(rule.kernel), 0)
                .map_err(|e| failed(RULES_MAP, one_line(&e)))?;
        }
        for (at, node) in chains.nodes.iter().enumerate() {
            self.chains
                .set(new * MAX_NODES + at as u32, *node, 0)
                .map_err(|e| failed(CHAINS_MAP, one_line(&e)))?;
        }
        let nodes = chains.nodes.clone();
        for &(prefix, head) in &chains.heads {
            let len = u32::from(prefix.prefix_len());
            word |= match prefix {
                IpNet::V4(prefix) => {
                    insert(
                        &mut self.v4[new as usize],
                        len,
                        prefix.addr().octets(),
                        head,
                    )?;
                    ruleset::V4
                }
                IpNet::V6(prefix) => {
                    insert(
                        &mut self.v6[new as usize],
                        len,
                        prefix.addr().octets(),
                        head,
                    )?;
                    ruleset::V6
                }
            };
        }
        self.dirty[new as usize] = in_force.len() as u32;
        self.set_in_use(new, in_force.len() as u32, chains.nodes.len() as u32)?;
        self.named[new as usize] = in_force.iter().map(InForce::named).collect();
        self.ruleset
            .set(0, word, 0)
            .map_err(|e| failed(RULESET_MAP, one_line(&e)))?;
        self.nodes = nodes;
        // In force from here on: what is left is bookkeeping, and failing
        // at it leaves the old slot to be cleaned by the next reload.
        if let Err(e) = self.record_bans() {
            eprintln!("xdpstat: bans in force; keeping them for the next xdpstat: {e}");
        }
        if let Err(e) = self.carry_over(old, in_force) {
            eprintln!("xdpstat: rules in force; cleaning up the previous rules: {e}");
        }
        Ok(())
    }

    /// The generation after the one in `word`: never 0; entries remember
    /// rules by generation, so before one comes round again, every entry
    /// forgets.
    pub(super) fn next_generation(&self, word: u64) -> Result<u64, Cause> {
        let generation = (word & ruleset::GENERATION_MASK) >> ruleset::GENERATION_SHIFT;
        if generation < 0xffff {
            return Ok(generation + 1);
        }
        for (table, v6) in self.tables.iter().zip([false, true]) {
            forget_remembered_rules(table.as_fd(), self.entries, v6)
                .map_err(|e| failed("making the entries forget their rules", e))?;
        }
        Ok(1)
    }

    /// After the flip to `in_force`: waits for packets judged by the rules
    /// in `old`, carries their hits over to the same rules in the new set,
    /// and empties `old`.
    fn carry_over(&mut self, old: u32, in_force: Vec<InForce>) -> Result<(), Cause> {
        let previous = std::mem::take(&mut self.in_force);
        let previous_base = std::mem::take(&mut self.base);
        self.in_force = in_force;
        // No packet is judged by the old slot any more once this returns.
        self.grace
            .wait()
            .map_err(|e| failed("waiting for a grace period", e))?;
        let old_hits: HashMap<(String, u32), Counter> = self
            .hits_of(old, &previous, &previous_base)?
            .into_iter()
            .map(|hits| ((hits.rule.label(), hits.rule.kernel.action), hits.counter))
            .collect();
        self.base = self
            .in_force
            .iter()
            .map(|rule| {
                let same = (rule.label(), rule.kernel.action);
                old_hits.get(&same).copied().unwrap_or_default()
            })
            .collect();
        self.clean(old)
    }

    /// Each rule of `rules` (in force in `slot`) with its hits: `base` and
    /// what its slot counted, over every CPU.
    fn hits_of(
        &self,
        slot: u32,
        rules: &[InForce],
        base: &[Counter],
    ) -> Result<Vec<RuleHits>, Cause> {
        let hits = self
            .hit_sections()
            .sums((slot * MAX_RULES) as usize, rules.len())
            .map_err(|e| failed(RULE_HITS_MAP, e))?;
        let all = rules
            .iter()
            .zip(hits)
            .enumerate()
            .map(|(index, (rule, hits))| {
                let mut counter = base.get(index).copied().unwrap_or_default();
                counter.add(&hits);
                RuleHits {
                    rule: rule.clone(),
                    counter,
                }
            })
            .collect();
        Ok(all)
    }

    /// What the rule at `at` (slot times `MAX_RULES` plus index, as a
    /// capture record has it) is called, if it is known.
    pub fn named(&self, at: u32) -> Option<&str> {
        let (slot, index) = ((at / MAX_RULES) as usize, (at % MAX_RULES) as usize);
        self.named
            .get(slot)
            .and_then(|names| names.get(index))
            .map(String::as_str)
    }

    /// The hits' sections, one per possible CPU.
    fn hit_sections(&self) -> Sections<'_> {
        Sections::new(
            self.hits.fd().as_fd(),
            RULE_HITS_SECTION as usize,
            possible_cpus() as usize,
        )
    }

    /// The rules in force with their hits.
    pub fn hits(&self) -> Result<Vec<RuleHits>, Cause> {
        self.hits_of(self.slot()?, &self.in_force, &self.base)
    }

    /// Sets the generation of the rule set in force, as if that many sets
    /// had been put in force (the tests bring the wrap near this way
    /// rather than with 65,535 reloads).
    pub fn set_generation(&mut self, generation: u16) -> Result<(), Cause> {
        let word = self.word()? & !ruleset::GENERATION_MASK
            | u64::from(generation) << ruleset::GENERATION_SHIFT;
        self.ruleset
            .set(0, word, 0)
            .map_err(|e| failed(RULESET_MAP, one_line(&e)))
    }
}

/// A rule's match, read back from its steps: their protocol and flags,
/// and the distinct port ranges of each side.
fn match_of(nodes: &[Node]) -> Match {
    let Some(first) = nodes.first() else {
        return Match::default();
    };
    let side = |field: u8, range: fn(&Node) -> [u16; 2]| {
        let mut ranges: Vec<(u16, u16)> = nodes
            .iter()
            .filter(|n| n.fields & field != 0)
            .map(|n| {
                let [low, high] = range(n);
                (low, high)
            })
            .collect();
        ranges.sort_unstable();
        ranges.dedup();
        ranges
    };
    Match {
        protocol: (first.fields & fields::PROTOCOL != 0).then_some(first.protocol),
        src_ports: side(fields::SRC_PORT, |n| n.src_port),
        dst_ports: side(fields::DST_PORT, |n| n.dst_port),
        syn: first.fields & fields::SYN != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Action, Mode, Rule};

    fn kernel(action: Action) -> KernelRule {
        Rule {
            prefix: Some("198.18.0.0/15".parse().unwrap()),
            matching: Match::default(),
            action,
            mode: Mode::Enforce,
            line: 0,
        }
        .kernel()
    }

    /// Limits whose bursts span many ticks keep time by the coarse clock;
    /// a tight one, and every other action, by the exact clock.
    #[test]
    fn only_limits_with_room_for_a_tick_take_the_coarse_clock() {
        let limit = |pps, burst, bps| clocked(kernel(Action::Limit { pps, burst, bps })).coarse;
        // A second's burst, of packets or of bytes: sixteen ticks of any
        // kernel's tick (at most 10 ms).
        assert_eq!(limit(1000, 1000, 0), 1);
        assert_eq!(limit(0, 0, 8_000_000), 1);
        assert_eq!(limit(1000, 1000, 8_000_000), 1);
        // A millisecond's burst: under sixteen ticks of any tick (at least
        // 1 ms), whatever the bytes' bucket allows.
        assert_eq!(limit(1000, 1, 0), 0);
        assert_eq!(limit(1000, 1, 8_000_000), 0);
        for action in [Action::Drop, Action::Pass, Action::Allow] {
            assert_eq!(clocked(kernel(action)).coarse, 0);
        }
    }
}
