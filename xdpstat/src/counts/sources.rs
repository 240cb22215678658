//! The per-source counters of one snapshot, kept compact because a snapshot
//! may hold a million sources and the live loop keeps two of them.
//!
//! Each family is a vector of (address as an integer, counter) sorted by
//! address: 24 bytes a source for IPv4, no hash table slack, lookups by
//! binary search, and two snapshots compare by walking both in order. A
//! [`SourceTableBuilder`] collects sources in any order, then sorts once
//! and sums any source met more than once (a CPU's run in progress and the
//! source's table entry, say).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Index,
};

use xdpstat_common::Counter;

/// Counters by source address, sorted by address within each family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceTable {
    v4: Vec<(u32, Counter)>,
    v6: Vec<(u128, Counter)>,
}

/// Collects sources in any order; [`SourceTableBuilder::finish`] sorts them.
#[derive(Debug, Default)]
pub struct SourceTableBuilder {
    v4: Vec<(u32, Counter)>,
    v6: Vec<(u128, Counter)>,
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
    pub fn push_v4(&mut self, address: [u8; 4], counter: Counter) {
        self.v4.push((u32::from_be_bytes(address), counter));
    }

    /// Adds an IPv6 source, the address as it is on the wire.
    pub fn push_v6(&mut self, address: [u8; 16], counter: Counter) {
        self.v6.push((u128::from_be_bytes(address), counter));
    }

    pub fn push(&mut self, address: IpAddr, counter: Counter) {
        match address {
            IpAddr::V4(v4) => self.push_v4(v4.octets(), counter),
            IpAddr::V6(v6) => self.push_v6(v6.octets(), counter),
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

fn sorted_and_merged<K: Ord + Copy>(mut sources: Vec<(K, Counter)>) -> Vec<(K, Counter)> {
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
    now: &'a [(K, Counter)],
    before: &'a [(K, Counter)],
) -> impl Iterator<Item = (K, Counter, Counter)> + 'a {
    let mut earlier = before.iter().peekable();
    now.iter().map(move |&(key, counter)| {
        while earlier.next_if(|(k, _)| *k < key).is_some() {}
        let before = earlier
            .next_if(|(k, _)| *k == key)
            .map_or(Counter::default(), |(_, c)| *c);
        (key, counter, before)
    })
}

fn find<K: Ord>(sources: &[(K, Counter)], key: &K) -> Option<usize> {
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
    pub fn insert(&mut self, address: IpAddr, counter: Counter) {
        fn set<K: Ord + Copy>(sources: &mut Vec<(K, Counter)>, key: K, counter: Counter) {
            match sources.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(at) => sources[at].1 = counter,
                Err(at) => sources.insert(at, (key, counter)),
            }
        }
        match address {
            IpAddr::V4(v4) => set(&mut self.v4, u32::from(v4), counter),
            IpAddr::V6(v6) => set(&mut self.v6, u128::from(v6), counter),
        }
    }

    /// Every source and its counter: IPv4 then IPv6, each by address.
    /// The IPv4 sources as numbers, in address order.
    pub fn v4(&self) -> &[(u32, Counter)] {
        &self.v4
    }

    /// The IPv6 sources as numbers, in address order.
    pub fn v6(&self) -> &[(u128, Counter)] {
        &self.v6
    }

    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, Counter)> + '_ {
        let v4 = self
            .v4
            .iter()
            .map(|(a, c)| (IpAddr::V4(Ipv4Addr::from(*a)), *c));
        let v6 = self
            .v6
            .iter()
            .map(|(a, c)| (IpAddr::V6(Ipv6Addr::from(*a)), *c));
        v4.chain(v6)
    }

    /// Every source with its counter here and in `earlier` (zero where
    /// `earlier` does not have it), by walking both tables in address order.
    pub fn since<'a>(
        &'a self,
        earlier: &'a SourceTable,
    ) -> impl Iterator<Item = (IpAddr, Counter, Counter)> + 'a {
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
        fn raise<K: Ord + Copy>(now: &mut [(K, Counter)], floor: &[(K, Counter)]) {
            let mut floor = floor.iter().peekable();
            for (key, counter) in now.iter_mut() {
                while floor.next_if(|(k, _)| k < key).is_some() {}
                if let Some((_, before)) = floor.next_if(|(k, _)| k == key) {
                    *counter = counter.at_least(before);
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
        fn take<K: Ord + Copy>(now: &mut Vec<(K, Counter)>, retired: &[(K, Counter)]) -> Counter {
            let mut taken = Counter::default();
            for (key, gone) in retired {
                if let Some(at) = find(now, key) {
                    let held = now[at].1;
                    let moved = held.at_most(gone);
                    taken.add(&moved);
                    now[at].1 = held.saturating_sub(&moved);
                }
            }
            now.retain(|(_, counter)| counter.packets != 0 || counter.bytes != 0);
            taken
        }
        (
            take(&mut self.v4, &retired.v4),
            take(&mut self.v6, &retired.v6),
        )
    }

    /// The sum of every IPv4 and of every IPv6 counter.
    pub fn family_sums(&self) -> (Counter, Counter) {
        fn sum<K>(sources: &[(K, Counter)]) -> Counter {
            sources.iter().fold(Counter::default(), |mut sum, (_, c)| {
                sum.add(c);
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

impl FromIterator<(IpAddr, Counter)> for SourceTable {
    /// Sums the counters of an address given twice.
    fn from_iter<I: IntoIterator<Item = (IpAddr, Counter)>>(iter: I) -> Self {
        let mut builder = SourceTableBuilder::default();
        for (address, counter) in iter {
            builder.push(address, counter);
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
