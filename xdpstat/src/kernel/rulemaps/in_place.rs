//! Bans changed on a persisted datapath that no xdpstat runs: there is
//! no rules file to build the chains from again, so the slot in force is
//! edited where it is. A ban of a prefix gets a rule index and nodes past
//! the slot's last (the counts in the ruleset map's second and third
//! words); the prefix's chain, and the chain of every prefix inside it
//! the tries hold, become a copy of their leading allows, the ban's step,
//! and the rest of the old chain (shared, untouched); each trie entry is
//! one write, and a new generation makes the sources' entries look their
//! chains up again. A ban taken out has its steps' end set in the past, so
//! every walk goes past them. The next xdpstat writes the slot anew from
//! its rules file and the bans the pinned records hold.

use aya::{
    Pod,
    maps::{
        MapData,
        lpm_trie::{Key, LpmTrie},
    },
};
use ipnet::IpNet;
use xdpstat_common::rules::{
    BYTE_BUCKETS, CHAINS_MAP, MAX_NODES, MAX_RULES, MAX_WALK, Node, RULE_BUCKETS_MAP, RULES_MAP,
    RULESET_MAP, action, fields, ruleset,
};

use super::{RuleMaps, failed, insert};
use crate::{
    error::{Cause, one_line},
    rules::ban::{Added, Ban, EventKind, Refusal, TAKEN_OUT_NS},
};

/// A node's fields that make it match only some packets.
const NARROWING: u8 = fields::PROTOCOL | fields::SRC_PORT | fields::DST_PORT | fields::SYN;

impl RuleMaps {
    /// How many rules and nodes `slot` uses.
    pub(super) fn in_use(&self, slot: u32) -> Result<(u32, u32), Cause> {
        let word = self
            .ruleset
            .get(&(1 + slot), 0)
            .map_err(|e| failed(RULESET_MAP, one_line(&e)))?;
        Ok(((word >> 32) as u32, word as u32))
    }

    pub(super) fn set_in_use(&mut self, slot: u32, rules: u32, nodes: u32) -> Result<(), Cause> {
        self.ruleset
            .set(1 + slot, u64::from(rules) << 32 | u64::from(nodes), 0)
            .map_err(|e| failed(RULESET_MAP, one_line(&e)))
    }

    /// Puts `ban` in force in the slot in force, in place of a ban of the
    /// same prefix; refused when an allow that matches every packet comes
    /// first on its chain, or the bans are at their bound.
    pub fn ban_in_place(&mut self, ban: Ban) -> Result<Result<Added, Refusal>, Cause> {
        let replaced = self.bans.list.iter().any(|b| b.prefix == ban.prefix);
        if !replaced && self.bans.list.len() >= self.bans.max {
            return Ok(Err(Refusal::Full { max: self.bans.max }));
        }
        let slot = self.slot()?;
        let (rules, nodes) = self.in_use(slot)?;
        if rules >= MAX_RULES {
            return Err(failed(
                "the ban",
                format!(
                    "the rules in force use all {MAX_RULES} rule places; start xdpstat on the interface, which writes them anew"
                ),
            ));
        }
        let step = Node {
            rule: rules,
            prefix_len: ban.prefix.prefix_len(),
            fields: fields::BAN | fields::SHARED_BUCKET,
            until_ns: ban.until_ns,
            ..Node::default()
        };
        // Every chain to change, worked out before anything is written.
        let mut keys = vec![ban.prefix];
        keys.extend(self.keys_within(slot, &ban.prefix)?);
        let mut free = nodes;
        let mut written: Vec<(u32, Node)> = Vec::new();
        let mut heads: Vec<(IpNet, u32)> = Vec::with_capacity(keys.len());
        for (at, key) in keys.iter().enumerate() {
            let head = self.head_of(slot, key)?;
            let chain = self.walk(slot, head)?;
            let allows = self.leading_allows(slot, &chain)?;
            if at == 0
                && let Some(node) = allows.iter().find(|n| n.fields & NARROWING == 0)
            {
                let by = self.in_force.get(node.rule as usize).map_or_else(
                    || "an allow".to_owned(),
                    |rule| format!("the allow {}", rule.label()),
                );
                return Ok(Err(Refusal::Allowed {
                    prefix: ban.prefix,
                    by,
                }));
            }
            if chain.len() + 1 > MAX_WALK as usize {
                return Err(failed(
                    "the ban",
                    format!(
                        "{key}'s chain would be longer than the {MAX_WALK} steps the datapath walks"
                    ),
                ));
            }
            // The rest of the old chain, after its allows: kept as it is.
            let mut next = chain.get(allows.len()).map_or(0, |(index, _)| index + 1);
            for node in std::iter::once(step).chain(allows.iter().rev().copied()) {
                if free >= MAX_NODES {
                    return Err(failed(
                        "the ban",
                        format!(
                            "the rules in force use all {MAX_NODES} steps; start xdpstat on the interface, which writes them anew"
                        ),
                    ));
                }
                written.push((free, Node { next, ..node }));
                next = free + 1;
                free += 1;
            }
            heads.push((*key, next - 1));
        }
        // A replaced ban ends now, before its successor starts.
        if replaced {
            self.unban_in_place(&ban.prefix, "hand")?;
        }
        let at = slot * MAX_RULES + rules;
        self.by_index
            .set(at, super::clocked(ban.kernel()), 0)
            .map_err(|e| failed(RULES_MAP, one_line(&e)))?;
        for bucket in [at, BYTE_BUCKETS + at] {
            self.buckets
                .set(bucket, 0, 0)
                .map_err(|e| failed(RULE_BUCKETS_MAP, one_line(&e)))?;
        }
        for (index, node) in &written {
            self.chains
                .set(slot * MAX_NODES + index, *node, 0)
                .map_err(|e| failed(CHAINS_MAP, one_line(&e)))?;
        }
        self.set_in_use(slot, rules + 1, free)?;
        for (key, head) in heads {
            self.set_head(slot, &key, head)?;
        }
        self.new_generation(Some(&ban.prefix))?;
        self.in_force
            .resize_with(rules as usize, || super::InForce {
                prefix: None,
                matching: Default::default(),
                list: None,
                ban: None,
                kernel: Default::default(),
            });
        self.in_force.push(super::InForce {
            prefix: Some(ban.prefix),
            matching: Default::default(),
            list: None,
            ban: Some(ban.clone()),
            kernel: ban.kernel(),
        });
        self.bans.list.retain(|b| b.prefix != ban.prefix);
        self.bans.list.push(ban.clone());
        self.record_bans()?;
        self.event(
            EventKind::Ban,
            &ban,
            format!("{} (no xdpstat running)", ban.describe()),
        );
        Ok(Ok(if replaced {
            Added::Replaced
        } else {
            Added::New
        }))
    }

    /// Takes the ban of exactly `prefix` out of force in the slot in
    /// force: its steps end now. `None` when there is no such ban.
    pub fn unban_in_place(&mut self, prefix: &IpNet, by: &str) -> Result<Option<Ban>, Cause> {
        let prefix = prefix.trunc();
        let Some(at) = self.bans.list.iter().position(|b| b.prefix == prefix) else {
            return Ok(None);
        };
        let slot = self.slot()?;
        let head = self.head_of(slot, &prefix)?;
        let ban_rules: Vec<u32> = self
            .walk(slot, head)?
            .iter()
            .filter(|(_, n)| n.fields & fields::BAN != 0 && n.prefix_len == prefix.prefix_len())
            .map(|(_, n)| n.rule)
            .collect();
        let (_, nodes) = self.in_use(slot)?;
        for index in 0..nodes {
            let mut node = self
                .chains
                .get(&(slot * MAX_NODES + index), 0)
                .map_err(|e| failed(CHAINS_MAP, one_line(&e)))?;
            if node.fields & fields::BAN != 0
                && ban_rules.contains(&node.rule)
                && node.until_ns != TAKEN_OUT_NS
            {
                // In the past on every clock: the walk goes past it.
                node.until_ns = TAKEN_OUT_NS;
                self.chains
                    .set(slot * MAX_NODES + index, node, 0)
                    .map_err(|e| failed(CHAINS_MAP, one_line(&e)))?;
            }
        }
        let ban = self.bans.list.remove(at);
        self.record_bans()?;
        self.event(
            EventKind::Unban,
            &ban,
            format!("by {by} (no xdpstat running)"),
        );
        Ok(Some(ban))
    }

    /// The head of the chain the datapath finds for a source in `key`:
    /// the longest prefix the slot's trie holds around it.
    fn head_of(&self, slot: u32, key: &IpNet) -> Result<Option<u32>, Cause> {
        let s = slot as usize;
        let len = u32::from(key.prefix_len());
        let found = match key {
            IpNet::V4(p) => self.v4[s].get(&Key::new(len, p.addr().octets()), 0),
            IpNet::V6(p) => self.v6[s].get(&Key::new(len, p.addr().octets()), 0),
        };
        match found {
            Ok(head) => Ok(Some(head)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(failed("reading the rules", one_line(&e))),
        }
    }

    fn set_head(&mut self, slot: u32, key: &IpNet, head: u32) -> Result<(), Cause> {
        let s = slot as usize;
        let len = u32::from(key.prefix_len());
        match key {
            IpNet::V4(p) => insert(&mut self.v4[s], len, p.addr().octets(), head),
            IpNet::V6(p) => insert(&mut self.v6[s], len, p.addr().octets(), head),
        }
    }

    /// The nodes of the chain at `head`, with their indices.
    fn walk(&self, slot: u32, head: Option<u32>) -> Result<Vec<(u32, Node)>, Cause> {
        let mut chain = Vec::new();
        let mut at = head;
        while let Some(index) = at {
            if chain.len() >= MAX_WALK as usize {
                break;
            }
            let node = self
                .chains
                .get(&(slot * MAX_NODES + index), 0)
                .map_err(|e| failed(CHAINS_MAP, one_line(&e)))?;
            chain.push((index, node));
            at = node.next.checked_sub(1);
        }
        Ok(chain)
    }

    /// The allows a chain begins with (they decide before a ban).
    fn leading_allows(&self, slot: u32, chain: &[(u32, Node)]) -> Result<Vec<Node>, Cause> {
        let mut allows = Vec::new();
        for (_, node) in chain {
            let rule = self
                .by_index
                .get(&(slot * MAX_RULES + node.rule), 0)
                .map_err(|e| failed(RULES_MAP, one_line(&e)))?;
            if rule.action != action::ALLOW {
                break;
            }
            allows.push(*node);
        }
        Ok(allows)
    }

    /// The prefixes the slot's trie holds strictly inside `prefix` (none
    /// for an address: nothing is inside it).
    fn keys_within(&self, slot: u32, prefix: &IpNet) -> Result<Vec<IpNet>, Cause> {
        if prefix.prefix_len() == prefix.max_prefix_len() {
            return Ok(Vec::new());
        }
        fn inside<K: Pod>(
            trie: &LpmTrie<MapData, K, u32>,
            prefix: &IpNet,
            net: fn(K, u8) -> Option<IpNet>,
        ) -> Result<Vec<IpNet>, Cause> {
            let mut found = Vec::new();
            for key in trie.keys() {
                let key = key.map_err(|e| failed("reading the rules", one_line(&e)))?;
                if let Some(net) = net(key.data(), key.prefix_len() as u8)
                    && net != *prefix
                    && prefix.contains(&net)
                {
                    found.push(net);
                }
            }
            Ok(found)
        }
        let s = slot as usize;
        match prefix {
            IpNet::V4(_) => inside(&self.v4[s], prefix, |a, len| {
                IpNet::new(std::net::Ipv4Addr::from(a).into(), len).ok()
            }),
            IpNet::V6(_) => inside(&self.v6[s], prefix, |a, len| {
                IpNet::new(std::net::Ipv6Addr::from(a).into(), len).ok()
            }),
        }
    }

    /// A new generation of the slot in force (the same slot), with the
    /// family of `added` marked as having rules.
    fn new_generation(&mut self, added: Option<&IpNet>) -> Result<(), Cause> {
        let word = self.word()?;
        let generation = self.next_generation(word)?;
        let mut next = word & !ruleset::GENERATION_MASK | generation << ruleset::GENERATION_SHIFT;
        match added {
            Some(IpNet::V4(_)) => next |= ruleset::V4,
            Some(IpNet::V6(_)) => next |= ruleset::V6,
            None => {}
        }
        self.ruleset
            .set(0, next, 0)
            .map_err(|e| failed(RULESET_MAP, one_line(&e)))
    }
}
