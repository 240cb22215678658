//! Traffic by kind, as user space holds it: packets and bytes per protocol
//! (and fragments and TCP SYNs), and per port on each side, summed over
//! the CPUs from one read. What a report, the metrics and the live view
//! show of *what* the traffic is, beside *who* sends it.

use std::cmp::Reverse;

use serde::Serialize;
use xdpstat_common::{
    Counter, CpuState,
    kinds::{PORTS, side, slot},
};

/// One interface's traffic by kind at one read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kinds {
    /// Indexed by `kinds::slot`.
    pub slots: [Counter; slot::KINDS],
    pub ports: Ports,
}

impl Kinds {
    /// Adds one CPU's kind counters.
    pub fn add_cpu(&mut self, state: &CpuState) {
        for (total, part) in self.slots.iter_mut().zip(&state.kinds) {
            total.add(part);
        }
    }

    /// The protocols, by name.
    pub fn protocols(&self) -> Protocols {
        let s = &self.slots;
        Protocols {
            tcp: s[slot::TCP],
            udp: s[slot::UDP],
            icmp: s[slot::ICMP],
            icmpv6: s[slot::ICMPV6],
            other: s[slot::OTHER],
        }
    }

    /// Every count at least what `previous` had (per-CPU counters only
    /// grow; this keeps a read that met a CPU going offline from showing
    /// a decrease).
    pub fn keep_monotonic(&mut self, previous: &Kinds) {
        for (now, before) in self.slots.iter_mut().zip(&previous.slots) {
            *now = now.at_least(before);
        }
        self.ports.keep_monotonic(&previous.ports);
    }
}

/// Packets and bytes per protocol: every IP packet under exactly one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Protocols {
    pub tcp: Counter,
    pub udp: Counter,
    pub icmp: Counter,
    pub icmpv6: Counter,
    pub other: Counter,
}

/// A port on one side: TCP destination, UDP destination or UDP source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    /// One of `kinds::side`.
    pub side: u32,
    pub port: u16,
}

impl PortKey {
    /// The key at `index` of the kernel's port counters.
    pub fn at(index: u32) -> Self {
        Self {
            side: index / PORTS,
            port: (index % PORTS) as u16,
        }
    }

    /// `tcp` or `udp`.
    pub fn protocol(&self) -> &'static str {
        if self.side == side::TCP_DST {
            "tcp"
        } else {
            "udp"
        }
    }

    /// `dst` or `src`.
    pub fn side_name(&self) -> &'static str {
        if self.side == side::UDP_SRC {
            "src"
        } else {
            "dst"
        }
    }
}

/// The ports that saw packets, with their counts, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ports {
    counts: Vec<(PortKey, Counter)>,
}

impl Ports {
    /// From the kernel's counters summed over CPUs, one per index.
    pub fn from_sums(sums: &[Counter]) -> Self {
        Self {
            counts: sums
                .iter()
                .enumerate()
                .filter(|(_, counter)| counter.packets != 0)
                .map(|(index, counter)| (PortKey::at(index as u32), *counter))
                .collect(),
        }
    }

    /// What `key` counted (nothing when it saw no packet).
    pub fn get(&self, key: &PortKey) -> Counter {
        self.counts
            .binary_search_by(|(k, _)| k.cmp(key))
            .map_or_else(|_| Counter::default(), |at| self.counts[at].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(PortKey, Counter)> {
        self.counts.iter()
    }

    /// How many ports saw packets.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The ports by packets descending (then bytes descending, then side
    /// and port ascending, so that ties print in one order), cut to `top`;
    /// `side` keeps one side only.
    pub fn ranked(&self, top: Option<usize>, side: Option<u32>) -> Vec<(PortKey, Counter)> {
        let mut rows: Vec<(PortKey, Counter)> = self
            .counts
            .iter()
            .filter(|(k, _)| side.is_none_or(|side| k.side == side))
            .copied()
            .collect();
        rows.sort_unstable_by_key(|(key, c)| (Reverse(c.packets), Reverse(c.bytes), *key));
        rows.truncate(top.unwrap_or(usize::MAX));
        rows
    }

    /// Every count at least what `previous` had.
    pub fn keep_monotonic(&mut self, previous: &Ports) {
        let (now, before) = (&self.counts, &previous.counts);
        let mut merged = Vec::with_capacity(now.len().max(before.len()));
        let (mut i, mut j) = (0, 0);
        while i < now.len() || j < before.len() {
            match (now.get(i), before.get(j)) {
                (Some(a), Some(b)) if a.0 == b.0 => {
                    merged.push((a.0, a.1.at_least(&b.1)));
                    i += 1;
                    j += 1;
                }
                (Some(a), Some(b)) if a.0 > b.0 => {
                    merged.push(*b);
                    j += 1;
                }
                (Some(a), _) => {
                    merged.push(*a);
                    i += 1;
                }
                (None, Some(b)) => {
                    merged.push(*b);
                    j += 1;
                }
                (None, None) => break,
            }
        }
        self.counts = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(packets: u64) -> Counter {
        Counter {
            packets,
            bytes: packets * 100,
        }
    }

    #[test]
    fn ports_are_read_by_index_and_ranked_with_ties_in_one_order() {
        let mut sums = vec![Counter::default(); 3 * PORTS as usize];
        sums[443] = c(5);
        sums[PORTS as usize + 53] = c(9);
        sums[2 * PORTS as usize + 53] = c(5);
        let ports = Ports::from_sums(&sums);
        assert_eq!(ports.len(), 3);
        let ranked = ports.ranked(None, None);
        let keys: Vec<(&str, &str, u16)> = ranked
            .iter()
            .map(|(k, _)| (k.protocol(), k.side_name(), k.port))
            .collect();
        assert_eq!(
            keys,
            [("udp", "dst", 53), ("tcp", "dst", 443), ("udp", "src", 53)]
        );
        assert_eq!(ports.ranked(Some(1), Some(side::UDP_SRC))[0].1, c(5));
        assert_eq!(
            ports.ranked(None, Some(side::UDP_DST)),
            [(
                PortKey {
                    side: side::UDP_DST,
                    port: 53
                },
                c(9)
            )]
        );
        assert_eq!(
            ports.get(&PortKey {
                side: side::TCP_DST,
                port: 443
            }),
            c(5)
        );
        assert_eq!(
            ports.get(&PortKey {
                side: side::TCP_DST,
                port: 80
            }),
            Counter::default()
        );
    }

    #[test]
    fn a_port_never_goes_backwards_or_away() {
        let key = |port| PortKey {
            side: side::TCP_DST,
            port,
        };
        let before = Ports {
            counts: vec![(key(22), c(5)), (key(80), c(3))],
        };
        let mut now = Ports {
            counts: vec![(key(80), c(2)), (key(443), c(1))],
        };
        now.keep_monotonic(&before);
        assert_eq!(
            now.counts,
            vec![(key(22), c(5)), (key(80), c(3)), (key(443), c(1))]
        );
    }
}
