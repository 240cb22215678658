//! The per-source counters of one snapshot, kept compact because a snapshot
//! may hold a million sources and the live loop keeps two of them.
//!
//! Each family is a vector of (address as an integer, [`Tally`]) sorted by
//! address: 56 bytes a source for IPv4, no hash table slack, lookups by
//! binary search, and two snapshots compare by walking both in order. A
//! [`SourceTableBuilder`] collects sources in any order, then sorts once
//! and sums any source met more than once (a CPU's run in progress and the
//! source's table entry, say).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Index,
};

use serde::Serialize;
use xdpstat_common::{
    Counter,
    kinds::{SOURCE_PROTOCOL_NAMES, source},
};

/// One source's counts: packets and bytes, and its packets by protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub counter: Counter,
    pub protocols: SourceProtocols,
}

impl From<Counter> for Tally {
    /// A count with nothing known of its protocols (all of it `other`).
    fn from(counter: Counter) -> Self {
        Tally {
            counter,
            protocols: SourceProtocols::of(source::OTHER, counter.packets),
        }
    }
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.counter.add(&other.counter);
        self.protocols.add(&other.protocols);
    }

    fn at_least(&self, other: &Tally) -> Tally {
        Tally {
            counter: self.counter.at_least(&other.counter),
            protocols: self.protocols.zip(&other.protocols, u64::max),
        }
    }

    fn at_most(&self, other: &Tally) -> Tally {
        Tally {
            counter: self.counter.at_most(&other.counter),
            protocols: self.protocols.zip(&other.protocols, u64::min),
        }
    }

    /// This tally less `other`, each count floored at zero.
    pub fn saturating_sub(&self, other: &Tally) -> Tally {
        Tally {
            counter: self.counter.saturating_sub(&other.counter),
            protocols: self.protocols.zip(&other.protocols, u64::saturating_sub),
        }
    }

    /// Its packets by protocol.
    pub fn protocol_packets(&self) -> ProtocolPackets {
        self.protocols.named()
    }
}

/// A source's packets under each protocol, indexed by `kinds::source`;
/// they add up to its packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceProtocols(pub [u64; source::PROTOCOLS]);

impl SourceProtocols {
    /// `packets` packets of source protocol `protocol`.
    pub fn of(protocol: usize, packets: u64) -> Self {
        let mut counts = [0; source::PROTOCOLS];
        if let Some(slot) = counts.get_mut(protocol) {
            *slot = packets;
        }
        SourceProtocols(counts)
    }

    /// Their sum: the source's packets.
    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |sum, &n| sum.wrapping_add(n))
    }

    fn add(&mut self, other: &SourceProtocols) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine = mine.wrapping_add(*theirs);
        }
    }

    fn zip(&self, other: &SourceProtocols, f: impl Fn(u64, u64) -> u64) -> SourceProtocols {
        SourceProtocols(std::array::from_fn(|i| f(self.0[i], other.0[i])))
    }

    /// By name.
    pub fn named(&self) -> ProtocolPackets {
        let [tcp, udp, icmp, other] = self.0;
        ProtocolPackets {
            tcp,
            udp,
            icmp,
            other,
        }
    }
}

/// A source's packets by protocol, as reports show them: every packet of
/// the source under exactly one (ICMP of either family is `icmp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProtocolPackets {
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
    pub other: u64,
}

impl ProtocolPackets {
    fn counts(&self) -> [u64; 4] {
        [self.tcp, self.udp, self.icmp, self.other]
    }

    /// The protocol with the most packets and how many it has (`None`
    /// with no packets; a tie goes to the first of tcp, udp, icmp, other).
    fn most(&self) -> Option<(&'static str, u64)> {
        let mut best: Option<(usize, u64)> = None;
        for (index, count) in self.counts().into_iter().enumerate() {
            if count > 0 && best.is_none_or(|(_, most)| count > most) {
                best = Some((index, count));
            }
        }
        best.map(|(index, count)| (SOURCE_PROTOCOL_NAMES[index], count))
    }

    /// The protocol with the most packets (`-` with none).
    pub fn dominant(&self) -> &'static str {
        self.most().map_or("-", |(name, _)| name)
    }

    /// The dominant protocol with its share when others have packets too:
    /// `tcp`, `udp 97%`, `-` with no packets. A share is rounded down, so
    /// a mix never shows as 100%.
    pub fn summary(&self) -> String {
        let Some((name, most)) = self.most() else {
            return "-".into();
        };
        let all = self
            .counts()
            .iter()
            .fold(0u64, |sum, &n| sum.saturating_add(n));
        if most == all {
            name.into()
        } else {
            let share = u128::from(most) * 100 / u128::from(all);
            format!("{name} {share}%")
        }
    }

    /// Adds another source's packets by protocol (the same address on
    /// another interface).
    pub fn add(&mut self, other: &ProtocolPackets) {
        self.tcp = self.tcp.saturating_add(other.tcp);
        self.udp = self.udp.saturating_add(other.udp);
        self.icmp = self.icmp.saturating_add(other.icmp);
        self.other = self.other.saturating_add(other.other);
    }
}

/// Counts by source address, sorted by address within each family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceTable {
    v4: Vec<(u32, Tally)>,
    v6: Vec<(u128, Tally)>,
}

/// Collects sources in any order; [`SourceTableBuilder::finish`] sorts them.
#[derive(Debug, Default)]
pub struct SourceTableBuilder {
    v4: Vec<(u32, Tally)>,
    v6: Vec<(u128, Tally)>,
}

impl SourceTableBuilder {
    /// Room for `v4` and `v6` sources without reallocating.
    pub fn with_capacity(v4: usize, v6: usize) -> Self {
        Self {
            v4: Vec::with_capacity(v4),
            v6: Vec::with_capacity(v6),
        }
    }

    /// Adds an IPv4 source, the address as it is on the wire.
    pub fn push_v4(&mut self, address: [u8; 4], tally: impl Into<Tally>) {
        self.v4.push((u32::from_be_bytes(address), tally.into()));
    }

    /// Adds an IPv6 source, the address as it is on the wire.
    pub fn push_v6(&mut self, address: [u8; 16], tally: impl Into<Tally>) {
        self.v6.push((u128::from_be_bytes(address), tally.into()));
    }

    pub fn push(&mut self, address: IpAddr, tally: impl Into<Tally>) {
        match address {
            IpAddr::V4(v4) => self.push_v4(v4.octets(), tally),
            IpAddr::V6(v6) => self.push_v6(v6.octets(), tally),
        }
    }

    /// Sorts by address and sums the counters of a source met twice.
    pub fn finish(self) -> SourceTable {
        SourceTable {
            v4: sorted_and_merged(self.v4),
            v6: sorted_and_merged(self.v6),
        }
    }
}

fn sorted_and_merged<K: Ord + Copy>(mut sources: Vec<(K, Tally)>) -> Vec<(K, Tally)> {
    sources.sort_unstable_by_key(|(key, _)| *key);
    sources.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1.add(&later.1);
            true
        } else {
            false
        }
    });
    sources
}

/// Each key of `now` with its counter in `now` and in `before` (both
/// sorted by key).
fn merge<'a, K: Ord + Copy>(
    now: &'a [(K, Tally)],
    before: &'a [(K, Tally)],
) -> impl Iterator<Item = (K, Tally, Tally)> + 'a {
    let mut earlier = before.iter().peekable();
    now.iter().map(move |&(key, tally)| {
        while earlier.next_if(|(k, _)| *k < key).is_some() {}
        let before = earlier
            .next_if(|(k, _)| *k == key)
            .map_or(Tally::default(), |(_, t)| *t);
        (key, tally, before)
    })
}

fn find<K: Ord>(sources: &[(K, Tally)], key: &K) -> Option<usize> {
    sources.binary_search_by(|(k, _)| k.cmp(key)).ok()
}

impl SourceTable {
    /// How many IPv4 and IPv6 sources the table holds.
    pub fn family_lens(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, address: &IpAddr) -> Option<&Counter> {
        self.tally(address).map(|tally| &tally.counter)
    }

    /// A source's counts with its packets by protocol.
    pub fn tally(&self, address: &IpAddr) -> Option<&Tally> {
        match address {
            IpAddr::V4(v4) => find(&self.v4, &u32::from(*v4)).map(|at| &self.v4[at].1),
            IpAddr::V6(v6) => find(&self.v6, &u128::from(*v6)).map(|at| &self.v6[at].1),
        }
    }

    pub fn contains_key(&self, address: &IpAddr) -> bool {
        self.get(address).is_some()
    }

    /// Sets `address`'s counter, replacing any earlier one (a sorted insert:
    /// for a few sources at a time, builders are for many).
    pub fn insert(&mut self, address: IpAddr, tally: impl Into<Tally>) {
        fn set<K: Ord + Copy>(sources: &mut Vec<(K, Tally)>, key: K, tally: Tally) {
            match sources.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(at) => sources[at].1 = tally,
                Err(at) => sources.insert(at, (key, tally)),
            }
        }
        let tally = tally.into();
        match address {
            IpAddr::V4(v4) => set(&mut self.v4, u32::from(v4), tally),
            IpAddr::V6(v6) => set(&mut self.v6, u128::from(v6), tally),
        }
    }

    /// The IPv4 sources as numbers with their counters, in address order.
    pub fn v4(&self) -> impl Iterator<Item = (u32, &Counter)> + '_ {
        self.v4.iter().map(|(a, t)| (*a, &t.counter))
    }

    /// The IPv6 sources as numbers with their counters, in address order.
    pub fn v6(&self) -> impl Iterator<Item = (u128, &Counter)> + '_ {
        self.v6.iter().map(|(a, t)| (*a, &t.counter))
    }

    /// Every source and its counter: IPv4 then IPv6, each by address.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, Counter)> + '_ {
        let v4 = self
            .v4
            .iter()
            .map(|(a, t)| (IpAddr::V4(Ipv4Addr::from(*a)), t.counter));
        let v6 = self
            .v6
            .iter()
            .map(|(a, t)| (IpAddr::V6(Ipv6Addr::from(*a)), t.counter));
        v4.chain(v6)
    }

    /// Every source with its counter here and in `earlier` (zero where
    /// `earlier` does not have it), by walking both tables in address order.
    pub fn since<'a>(
        &'a self,
        earlier: &'a SourceTable,
    ) -> impl Iterator<Item = (IpAddr, Counter, Counter)> + 'a {
        self.tallies_since(earlier)
            .map(|(address, now, before)| (address, now.counter, before.counter))
    }

    /// As [`SourceTable::since`], with each source's packets by protocol.
    pub fn tallies_since<'a>(
        &'a self,
        earlier: &'a SourceTable,
    ) -> impl Iterator<Item = (IpAddr, Tally, Tally)> + 'a {
        let v4 = merge(&self.v4, &earlier.v4)
            .map(|(a, now, before)| (IpAddr::V4(Ipv4Addr::from(a)), now, before));
        let v6 = merge(&self.v6, &earlier.v6)
            .map(|(a, now, before)| (IpAddr::V6(Ipv6Addr::from(a)), now, before));
        v4.chain(v6)
    }

    /// Raises every source that `floor` also holds to at least its counts
    /// there: a read that races the datapath settling a run misses that run
    /// for one read, and a count must not seem to go backwards for it.
    pub fn raise_to(&mut self, floor: &SourceTable) {
        fn raise<K: Ord + Copy>(now: &mut [(K, Tally)], floor: &[(K, Tally)]) {
            let mut floor = floor.iter().peekable();
            for (key, tally) in now.iter_mut() {
                while floor.next_if(|(k, _)| k < key).is_some() {}
                if let Some((_, before)) = floor.next_if(|(k, _)| k == key) {
                    *tally = tally.at_least(before);
                }
            }
        }
        raise(&mut self.v4, &floor.v4);
        raise(&mut self.v6, &floor.v6);
    }

    /// Takes the counts of retired sources out (a source left with nothing
    /// is removed); returns what was taken per family, no more than each
    /// source held here.
    pub fn retire(&mut self, retired: &SourceTable) -> (Counter, Counter) {
        fn take<K: Ord + Copy>(now: &mut Vec<(K, Tally)>, retired: &[(K, Tally)]) -> Counter {
            let mut taken = Counter::default();
            for (key, gone) in retired {
                if let Some(at) = find(now, key) {
                    let held = now[at].1;
                    let moved = held.at_most(gone);
                    taken.add(&moved.counter);
                    now[at].1 = held.saturating_sub(&moved);
                }
            }
            now.retain(|(_, t)| t.counter.packets != 0 || t.counter.bytes != 0);
            taken
        }
        (
            take(&mut self.v4, &retired.v4),
            take(&mut self.v6, &retired.v6),
        )
    }

    /// The sum of every IPv4 and of every IPv6 counter.
    pub fn family_sums(&self) -> (Counter, Counter) {
        fn sum<K>(sources: &[(K, Tally)]) -> Counter {
            sources.iter().fold(Counter::default(), |mut sum, (_, t)| {
                sum.add(&t.counter);
                sum
            })
        }
        (sum(&self.v4), sum(&self.v6))
    }
}

impl Index<&IpAddr> for SourceTable {
    type Output = Counter;

    fn index(&self, address: &IpAddr) -> &Counter {
        self.get(address)
            .unwrap_or_else(|| panic!("no source {address} in the table"))
    }
}

impl<T: Into<Tally>> FromIterator<(IpAddr, T)> for SourceTable {
    /// Sums the counts of an address given twice.
    fn from_iter<I: IntoIterator<Item = (IpAddr, T)>>(iter: I) -> Self {
        let mut builder = SourceTableBuilder::default();
        for (address, tally) in iter {
            builder.push(address, tally);
        }
        builder.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(packets: u64, bytes: u64) -> Counter {
        Counter { packets, bytes }
    }

    #[test]
    fn sources_met_twice_are_summed_and_families_kept_apart() {
        let mut builder = SourceTableBuilder::with_capacity(4, 1);
        builder.push_v4([198, 18, 0, 2], c(3, 30));
        builder.push_v4([198, 18, 0, 1], c(1, 60));
        builder.push_v6(
            "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
            c(2, 200),
        );
        builder.push("198.18.0.1".parse().unwrap(), c(1, 40));
        let mut table = builder.finish();
        assert_eq!(table[&"198.18.0.1".parse().unwrap()], c(2, 100));
        assert_eq!(table[&"2001:db8::1".parse().unwrap()], c(2, 200));
        assert_eq!(table.family_lens(), (2, 1));
        assert_eq!(table.family_sums(), (c(5, 130), c(2, 200)));
        table.insert("198.18.0.0".parse().unwrap(), c(9, 9));
        table.insert("198.18.0.2".parse().unwrap(), c(4, 40));
        let all: Vec<(IpAddr, Counter)> = table.iter().collect();
        assert_eq!(
            all,
            vec![
                ("198.18.0.0".parse().unwrap(), c(9, 9)),
                ("198.18.0.1".parse().unwrap(), c(2, 100)),
                ("198.18.0.2".parse().unwrap(), c(4, 40)),
                ("2001:db8::1".parse().unwrap(), c(2, 200)),
            ]
        );
        assert!(!table.contains_key(&"198.18.0.3".parse().unwrap()));
    }

    #[test]
    fn raising_keeps_counts_from_going_backwards_and_retiring_moves_them_out() {
        let before: SourceTable = [
            ("198.18.0.1".parse().unwrap(), c(10, 1000)),
            ("198.18.0.2".parse().unwrap(), c(5, 500)),
            ("2001:db8::1".parse().unwrap(), c(7, 700)),
        ]
        .into_iter()
        .collect();
        let mut now: SourceTable = [
            // A read racing a settle: 4 packets of 198.18.0.1 not seen.
            ("198.18.0.1".parse().unwrap(), c(6, 600)),
            ("198.18.0.2".parse().unwrap(), c(8, 800)),
            ("198.18.0.3".parse().unwrap(), c(1, 100)),
            ("2001:db8::1".parse().unwrap(), c(7, 700)),
        ]
        .into_iter()
        .collect();
        now.raise_to(&before);
        assert_eq!(now[&"198.18.0.1".parse().unwrap()], c(10, 1000));
        assert_eq!(now[&"198.18.0.2".parse().unwrap()], c(8, 800));
        assert_eq!(now[&"198.18.0.3".parse().unwrap()], c(1, 100));
        let retired: SourceTable = [
            // One of two entries of .2, all of the IPv6 source, and more
            // than .1 held at the read (packets after it, before retiring).
            ("198.18.0.2".parse().unwrap(), c(3, 300)),
            ("2001:db8::1".parse().unwrap(), c(7, 700)),
            ("198.18.0.1".parse().unwrap(), c(12, 1200)),
        ]
        .into_iter()
        .collect();
        let (v4, v6) = now.retire(&retired);
        assert_eq!(v4, c(13, 1300), "no more than each source held");
        assert_eq!(v6, c(7, 700));
        assert_eq!(now[&"198.18.0.2".parse().unwrap()], c(5, 500));
        assert!(!now.contains_key(&"198.18.0.1".parse().unwrap()));
        assert!(!now.contains_key(&"2001:db8::1".parse().unwrap()));
        assert_eq!(now.len(), 2);
    }

    #[test]
    fn since_pairs_every_source_with_its_earlier_counter() {
        let earlier: SourceTable = [
            ("198.18.0.1".parse().unwrap(), c(1, 10)),
            ("198.18.0.3".parse().unwrap(), c(3, 30)),
            ("198.18.0.9".parse().unwrap(), c(9, 90)),
            ("2001:db8::1".parse().unwrap(), c(5, 50)),
        ]
        .into_iter()
        .collect();
        let now: SourceTable = [
            ("198.18.0.2".parse().unwrap(), c(2, 20)),
            ("198.18.0.3".parse().unwrap(), c(4, 40)),
            ("2001:db8::1".parse().unwrap(), c(6, 60)),
            ("2001:db8::2".parse().unwrap(), c(1, 1)),
        ]
        .into_iter()
        .collect();
        let pairs: Vec<(IpAddr, Counter, Counter)> = now.since(&earlier).collect();
        assert_eq!(
            pairs,
            vec![
                ("198.18.0.2".parse().unwrap(), c(2, 20), c(0, 0)),
                ("198.18.0.3".parse().unwrap(), c(4, 40), c(3, 30)),
                ("2001:db8::1".parse().unwrap(), c(6, 60), c(5, 50)),
                ("2001:db8::2".parse().unwrap(), c(1, 1), c(0, 0)),
            ]
        );
    }
}
