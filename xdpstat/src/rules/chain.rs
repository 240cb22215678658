//! How a rule set becomes what the datapath walks: for every prefix in
//! the set, the chain of nodes that may decide for a packet from a source
//! under it, in the order they decide (see `xdpstat_common::rules`).
//!
//! Which rule decides, among those whose every field matches: an allow
//! before any other, then a ban that has not ended, then the longest prefix (a rule without one sits at
//! its family's `/0`), then the one naming more of protocol, ports and
//! flags, then the one earlier in the file. So a prefix's chain is the
//! allows around it (its own, then each enclosing prefix's, in that
//! order), then the bans around it (its own, then each enclosing
//! prefix's; a ban never cuts the chain, since it ends and the walk then
//! goes past it), then its own other rules in that order, then its parent's
//! chain of other rules (the longest prefix around it with rules), cut
//! after the first rule that matches every packet. Nodes are shared: a node is
//! its rule, its ports and the rest of its chain, so the million
//! prefixes of a list whose parent is the same share one.

use std::collections::HashMap;

use ipnet::IpNet;
use xdpstat_common::rules::{MAX_NODES, MAX_WALK, Node, fields};

use crate::rules::{Action, RuleSet, ban::Ban, matching::Match};

/// The chains of a rule set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chains {
    pub nodes: Vec<Node>,
    /// Every prefix the tries hold, with its chain's head.
    pub heads: Vec<(IpNet, u32)>,
}

/// Why a rule set cannot be walked: a chain too long, or too many nodes;
/// the prefix and the index of its first rule (to name the line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainError {
    pub prefix: IpNet,
    pub index: u32,
    pub message: String,
}

/// One rule or list as the chains see it.
struct Member<'a> {
    index: u32,
    matching: &'a Match,
    line: usize,
    limit: bool,
    allow: bool,
    /// A ban's end (0: none) when the member is a ban.
    ban: Option<u64>,
    any_source: bool,
}

/// A prefix as a sortable key: family, address, length (a prefix sorts
/// before every prefix inside it).
fn key(prefix: &IpNet) -> (bool, u128, u8) {
    match prefix {
        IpNet::V4(p) => (false, u128::from(u32::from(p.addr())), p.prefix_len()),
        IpNet::V6(p) => (true, u128::from(p.addr()), p.prefix_len()),
    }
}

/// Builds the chains of `set` with `bans` in force (indexed after the
/// set's rules and lists).
pub fn build(set: &RuleSet, bans: &[Ban]) -> Result<Chains, ChainError> {
    let rules = set.rules.len() as u32;
    let any = Match::default();
    let mut members: Vec<Member<'_>> =
        Vec::with_capacity(set.rules.len() + set.lists.len() + bans.len());
    for (index, rule) in set.rules.iter().enumerate() {
        members.push(Member {
            index: index as u32,
            matching: &rule.matching,
            line: rule.line,
            limit: matches!(rule.action, Action::Limit { .. }),
            allow: rule.action == Action::Allow,
            ban: None,
            any_source: rule.prefix.is_none(),
        });
    }
    for (at, list) in set.lists.iter().enumerate() {
        members.push(Member {
            index: rules + at as u32,
            matching: &list.matching,
            line: list.line,
            limit: matches!(list.action, Action::Limit { .. }),
            allow: list.action == Action::Allow,
            ban: None,
            any_source: false,
        });
    }
    let banned = members.len() as u32;
    for (at, ban) in bans.iter().enumerate() {
        members.push(Member {
            index: banned + at as u32,
            matching: &any,
            line: 0,
            limit: matches!(ban.action, Action::Limit { .. }),
            allow: false,
            ban: Some(ban.until_ns),
            any_source: false,
        });
    }
    // Every (prefix, member), grouped by prefix, each group in deciding
    // order.
    let mut placed: Vec<(IpNet, u32)> = set
        .prefixes()
        .chain(
            bans.iter()
                .enumerate()
                .map(|(at, ban)| (ban.prefix, banned + at as u32)),
        )
        .collect();
    let order = |member: u32| {
        let m = &members[member as usize];
        (std::cmp::Reverse(m.matching.specificity()), m.line, m.index)
    };
    placed.sort_unstable_by(|a, b| {
        key(&a.0)
            .cmp(&key(&b.0))
            .then_with(|| order(a.1).cmp(&order(b.1)))
    });
    let mut groups: Vec<Group> = Vec::new();
    let mut stack: Vec<u32> = Vec::new();
    let mut start = 0;
    while start < placed.len() {
        let prefix = placed[start].0;
        let end = start + placed[start..].partition_point(|(p, _)| *p == prefix);
        while let Some(&top) = stack.last() {
            if placed[groups[top as usize].start as usize]
                .0
                .contains(&prefix)
            {
                break;
            }
            stack.pop();
        }
        groups.push(Group {
            start: start as u32,
            end: end as u32,
            parent: stack.last().copied().unwrap_or(NO_PARENT),
        });
        stack.push(groups.len() as u32 - 1);
        start = end;
    }
    let mut builder = Builder {
        members: &members,
        placed: &placed,
        groups: &groups,
        memo: vec![[UNBUILT; 2]; groups.len()],
        nodes: Vec::new(),
        interned: HashMap::new(),
    };
    let mut heads = Vec::with_capacity(groups.len());
    for (at, group) in groups.iter().enumerate() {
        if let Some((head, _)) = builder.head(at)? {
            heads.push((placed[group.start as usize].0, head));
        }
    }
    Ok(Chains {
        nodes: builder.nodes,
        heads,
    })
}

/// A prefix with rules: its members' places in the sorted list (the
/// prefix is theirs), and the group of the longest prefix around it (12
/// bytes, as a million-prefix list makes a million of them).
struct Group {
    start: u32,
    end: u32,
    parent: u32,
}

const NO_PARENT: u32 = u32::MAX;

/// A memo not yet worked out, and an empty chain; else head << 32 | length.
const UNBUILT: u64 = u64::MAX;
const EMPTY: u64 = u64::MAX - 1;

struct Builder<'a> {
    members: &'a [Member<'a>],
    placed: &'a [(IpNet, u32)],
    groups: &'a [Group],
    /// Per group and whether a limit came before: its chain's head and
    /// length, packed (see [`UNBUILT`]).
    memo: Vec<[u64; 2]>,
    nodes: Vec<Node>,
    interned: HashMap<Node, u32>,
}

impl Builder<'_> {
    /// The chain the trie names for group `at`: the allows around it, in
    /// deciding order, in front of its chain of other rules (none after an
    /// allow that matches every packet); its head and length, or `None`
    /// when empty.
    fn head(&mut self, at: usize) -> Result<Option<(u32, u32)>, ChainError> {
        let mut allows: Vec<(IpNet, u32)> = Vec::new();
        let mut bans: Vec<(IpNet, u32)> = Vec::new();
        let mut every = false;
        let mut group = at as u32;
        'up: while group != NO_PARENT {
            let g = &self.groups[group as usize];
            for &(prefix, m) in &self.placed[g.start as usize..g.end as usize] {
                let member = &self.members[m as usize];
                if member.ban.is_some() {
                    bans.push((prefix, m));
                }
                if member.allow {
                    allows.push((prefix, m));
                    if member.matching.is_any() {
                        every = true;
                        break 'up;
                    }
                }
            }
            group = g.parent;
        }
        let rules = if every { None } else { self.chain(at, false)? };
        if allows.is_empty() && bans.is_empty() {
            return Ok(rules);
        }
        if every {
            bans.clear();
        }
        let (mut next, mut length) = rules.map_or((0, 0), |(head, len)| (head + 1, len));
        for &(prefix, m) in allows.iter().chain(&bans).rev() {
            let steps;
            (next, steps) = self.steps(m, false, prefix, next)?;
            length += steps;
        }
        let first = self.groups[at].start as usize;
        self.walkable(self.placed[first], length)?;
        Ok((next > 0).then(|| (next - 1, length)))
    }

    /// An error when a chain of `length` steps for the prefix of
    /// `(prefix, member)` is too long to walk.
    fn walkable(&self, (prefix, index): (IpNet, u32), length: u32) -> Result<(), ChainError> {
        if length > MAX_WALK {
            return Err(ChainError {
                prefix,
                index,
                message: format!(
                    "a packet from {} may have to be held against {length} rule steps, more than the {MAX_WALK} the datapath walks (each port range of a rule is a step; a rule with neither prefix nor ports is on every chain)",
                    prefix
                ),
            });
        }
        Ok(())
    }

    /// The chain of group `at`'s rules other than allows, when a limit
    /// came before it on the way (`limited`): its head and length, or
    /// `None` when empty.
    fn chain(&mut self, at: usize, limited: bool) -> Result<Option<(u32, u32)>, ChainError> {
        let unpack = |memo: u64| (memo != EMPTY).then_some(((memo >> 32) as u32, memo as u32));
        let memo = self.memo[at][usize::from(limited)];
        if memo != UNBUILT {
            return Ok(unpack(memo));
        }
        let group = &self.groups[at];
        let placed = &self.placed[group.start as usize..group.end as usize];
        let prefix = placed[0].0;
        // The allows and bans are in front of every chain (`head`), not
        // in it.
        let members = self.members;
        let heading = |m: u32| members[m as usize].allow || members[m as usize].ban.is_some();
        let others: Vec<(IpNet, u32)>;
        let all = if placed.iter().any(|&(_, m)| heading(m)) {
            others = placed
                .iter()
                .copied()
                .filter(|&(_, m)| !heading(m))
                .collect();
            &others[..]
        } else {
            placed
        };
        // Own members up to the first that matches every packet.
        let cut = all
            .iter()
            .position(|&(_, m)| self.members[m as usize].matching.is_any());
        let own = &all[..cut.map_or(all.len(), |c| c + 1)];
        let first_limit = own
            .iter()
            .position(|&(_, m)| self.members[m as usize].limit);
        let tail = match (cut, group.parent) {
            (None, parent) if parent != NO_PARENT => {
                self.chain(parent as usize, limited || first_limit.is_some())?
            }
            _ => None,
        };
        let (mut next, mut length) = tail.map_or((0, 0), |(head, len)| (head + 1, len));
        for (position, &(_, m)) in own.iter().enumerate().rev() {
            let member = &self.members[m as usize];
            // A limit after the chain's first takes from its rule's
            // shared buckets.
            let shared = member.limit && (limited || first_limit.is_some_and(|f| f < position));
            let steps;
            (next, steps) = self.steps(m, shared, prefix, next)?;
            length += steps;
        }
        self.walkable(placed[0], length)?;
        let chain = (next > 0).then(|| (next - 1, length));
        self.memo[at][usize::from(limited)] =
            chain.map_or(EMPTY, |(head, len)| u64::from(head) << 32 | u64::from(len));
        Ok(chain)
    }

    /// Puts member `m`'s steps (one per source and destination port range)
    /// in front of the chain whose head is `next` (plus one; 0: empty):
    /// the new head (plus one) and how many steps were added.
    fn steps(
        &mut self,
        m: u32,
        shared: bool,
        prefix: IpNet,
        mut next: u32,
    ) -> Result<(u32, u32), ChainError> {
        let member = &self.members[m as usize];
        let (index, matching) = (member.index, member.matching);
        let mut base = Node {
            rule: index,
            prefix_len: prefix.prefix_len(),
            ..Node::default()
        };
        if let Some(protocol) = matching.protocol {
            base.protocol = protocol;
            base.fields |= fields::PROTOCOL;
        }
        if let Some(until) = member.ban {
            // A ban's limit is its own bucket, shared by the sources
            // under its prefix (one source, for a ban of an address).
            base.until_ns = until;
            base.fields |= fields::BAN | fields::SHARED_BUCKET;
        }
        for (set, field) in [
            (matching.syn, fields::SYN),
            (shared, fields::SHARED_BUCKET),
            (member.any_source, fields::ANY_SOURCE),
        ] {
            if set {
                base.fields |= field;
            }
        }
        let any = [(0u16, u16::MAX)];
        let (src, src_field) = ranges(&matching.src_ports, &any, fields::SRC_PORT);
        let (dst, dst_field) = ranges(&matching.dst_ports, &any, fields::DST_PORT);
        let mut added = 0;
        for &s in src.iter().rev() {
            for &d in dst.iter().rev() {
                let node = Node {
                    next,
                    src_port: [s.0, s.1],
                    dst_port: [d.0, d.1],
                    fields: base.fields | src_field | dst_field,
                    ..base
                };
                next = self.intern(node, prefix, index)? + 1;
                added += 1;
            }
        }
        Ok((next, added))
    }

    /// The index of `node`, added if no node like it is there yet.
    fn intern(&mut self, node: Node, prefix: IpNet, index: u32) -> Result<u32, ChainError> {
        if let Some(&at) = self.interned.get(&node) {
            return Ok(at);
        }
        if self.nodes.len() >= MAX_NODES as usize {
            return Err(ChainError {
                prefix,
                index,
                message: format!(
                    "more than {MAX_NODES} rule steps in the set (each port range of a rule under each prefix around it is one)"
                ),
            });
        }
        let at = self.nodes.len() as u32;
        self.nodes.push(node);
        self.interned.insert(node, at);
        Ok(at)
    }
}

/// A side's ranges and its field bit, or the whole range and no bit.
fn ranges<'a>(
    ranges: &'a [(u16, u16)],
    any: &'a [(u16, u16)],
    field: u8,
) -> (&'a [(u16, u16)], u8) {
    if ranges.is_empty() {
        (any, 0)
    } else {
        (ranges, field)
    }
}
