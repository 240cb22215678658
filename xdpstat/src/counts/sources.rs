//! The per-source counters of one snapshot, kept compact because a snapshot
//! may hold a million sources and the live loop keeps two of them.
//!
//! Each family is a vector of (address as an integer, counter, packets
//! per protocol) sorted by address: 56 bytes a source for IPv4, no hash
//! table slack, lookups by binary search, and two snapshots compare by
//! walking both in order. A
//! [`SourceTableBuilder`] collects sources in any order, then sorts once
//! and sums any source met more than once (a CPU's run in progress and the
//! source's table entry, say).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Index,
};

use xdpstat_common::{Counter, kinds::SourceKinds};

/// One source's row: its address as a number, its counter, and its
/// packets per protocol (`kinds::SourceKinds`).
type Held<K> = (K, Counter, SourceKinds);

/// Counters by source address, sorted by address within each family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceTable {
    v4: Vec<Held<u32>>,
    v6: Vec<Held<u128>>,
}

/// Collects sources in any order; [`SourceTableBuilder::finish`] sorts them.
#[derive(Debug, Default)]
pub struct SourceTableBuilder {
    v4: Vec<Held<u32>>,
    v6: Vec<Held<u128>>,
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
    pub fn push_v4(&mut self, address: [u8; 4], counter: Counter, kinds: SourceKinds) {
        self.v4.push((u32::from_be_bytes(address), counter, kinds));
    }

    /// Adds an IPv6 source, the address as it is on the wire.
    pub fn push_v6(&mut self, address: [u8; 16], counter: Counter, kinds: SourceKinds) {
        self.v6.push((u128::from_be_bytes(address), counter, kinds));
    }

    /// Adds a source with its packets per protocol.
    pub fn push_with(&mut self, address: IpAddr, counter: Counter, kinds: SourceKinds) {
        match address {
            IpAddr::V4(v4) => self.push_v4(v4.octets(), counter, kinds),
            IpAddr::V6(v6) => self.push_v6(v6.octets(), counter, kinds),
        }
    }

    /// Adds a source whose protocols are not known (all `other`).
    pub fn push(&mut self, address: IpAddr, counter: Counter) {
        self.push_with(address, counter, unknown_kinds(&counter));
    }

    /// Sorts by address and sums the counters of a source met twice.
    pub fn finish(self) -> SourceTable {
        SourceTable {
            v4: sorted_and_merged(self.v4),
            v6: sorted_and_merged(self.v6),
        }
    }
}

/// The protocols of packets whose protocol is not known: all `other`.
pub fn unknown_kinds(counter: &Counter) -> SourceKinds {
    [0, 0, 0, counter.packets]
}

fn add_kinds(sum: &mut SourceKinds, add: &SourceKinds) {
    for (sum, add) in sum.iter_mut().zip(add) {
        *sum = sum.wrapping_add(*add);
    }
}

fn sorted_and_merged<K: Ord + Copy>(mut sources: Vec<Held<K>>) -> Vec<Held<K>> {
    sources.sort_unstable_by_key(|(key, _, _)| *key);
    sources.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1.add(&later.1);
            add_kinds(&mut kept.2, &later.2);
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
    now: &'a [Held<K>],
    before: &'a [Held<K>],
) -> impl Iterator<Item = (K, Counter, Counter)> + 'a {
    let mut earlier = before.iter().peekable();
    now.iter().map(move |&(key, counter, _)| {
        while earlier.next_if(|(k, _, _)| *k < key).is_some() {}
        let before = earlier
            .next_if(|(k, _, _)| *k == key)
            .map_or(Counter::default(), |(_, c, _)| *c);
        (key, counter, before)
    })
}

fn find<K: Ord>(sources: &[Held<K>], key: &K) -> Option<usize> {
    sources.binary_search_by(|(k, _, _)| k.cmp(key)).ok()
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

    /// A source's packets per protocol (`kinds::SourceKinds`).
    pub fn kinds_of(&self, address: &IpAddr) -> Option<SourceKinds> {
        match address {
            IpAddr::V4(v4) => find(&self.v4, &u32::from(*v4)).map(|at| self.v4[at].2),
            IpAddr::V6(v6) => find(&self.v6, &u128::from(*v6)).map(|at| self.v6[at].2),
        }
    }

    pub fn contains_key(&self, address: &IpAddr) -> bool {
        self.get(address).is_some()
    }

    /// Sets `address`'s counter, replacing any earlier one (a sorted insert:
    /// for a few sources at a time, builders are for many).
    pub fn insert(&mut self, address: IpAddr, counter: Counter) {
        fn set<K: Ord + Copy>(sources: &mut Vec<Held<K>>, key: K, counter: Counter) {
            let held = (key, counter, unknown_kinds(&counter));
            match sources.binary_search_by(|(k, _, _)| k.cmp(&key)) {
                Ok(at) => sources[at] = held,
                Err(at) => sources.insert(at, held),
            }
        }
        match address {
            IpAddr::V4(v4) => set(&mut self.v4, u32::from(v4), counter),
            IpAddr::V6(v6) => set(&mut self.v6, u128::from(v6), counter),
        }
    }

    /// The IPv4 sources as numbers with their counters, in address order.
    pub fn v4(&self) -> impl Iterator<Item = (u32, &Counter)> + '_ {
        self.v4.iter().map(|(a, c, _)| (*a, c))
    }

    /// The IPv6 sources as numbers with their counters, in address order.
    pub fn v6(&self) -> impl Iterator<Item = (u128, &Counter)> + '_ {
        self.v6.iter().map(|(a, c, _)| (*a, c))
    }

    /// Every source and its counter: IPv4 then IPv6, each by address.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, Counter)> + '_ {
        let v4 = self
            .v4
            .iter()
            .map(|(a, c, _)| (IpAddr::V4(Ipv4Addr::from(*a)), *c));
        let v6 = self
            .v6
            .iter()
            .map(|(a, c, _)| (IpAddr::V6(Ipv6Addr::from(*a)), *c));
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

    /// [`SourceTable::since`] with each source's packets per protocol.
    pub fn since_with_kinds<'a>(
        &'a self,
        earlier: &'a SourceTable,
    ) -> impl Iterator<Item = (IpAddr, Counter, Counter, SourceKinds)> + 'a {
        let v4 = merge(&self.v4, &earlier.v4)
            .zip(&self.v4)
            .map(|((a, now, before), held)| (IpAddr::V4(Ipv4Addr::from(a)), now, before, held.2));
        let v6 = merge(&self.v6, &earlier.v6)
            .zip(&self.v6)
            .map(|((a, now, before), held)| (IpAddr::V6(Ipv6Addr::from(a)), now, before, held.2));
        v4.chain(v6)
    }

    /// Raises every source that `floor` also holds to at least its counts
    /// there: a read that races the datapath settling a run misses that run
    /// for one read, and a count must not seem to go backwards for it.
    pub fn raise_to(&mut self, floor: &SourceTable) {
        fn raise<K: Ord + Copy>(now: &mut [Held<K>], floor: &[Held<K>]) {
            let mut floor = floor.iter().peekable();
            for (key, counter, kinds) in now.iter_mut() {
                while floor.next_if(|(k, _, _)| k < key).is_some() {}
                if let Some((_, before, before_kinds)) = floor.next_if(|(k, _, _)| k == key) {
                    *counter = counter.at_least(before);
                    for (now, before) in kinds.iter_mut().zip(before_kinds) {
                        *now = (*now).max(*before);
                    }
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
        fn take<K: Ord + Copy>(now: &mut Vec<Held<K>>, retired: &[Held<K>]) -> Counter {
            let mut taken = Counter::default();
            for (key, gone, gone_kinds) in retired {
                if let Some(at) = find(now, key) {
                    let held = now[at].1;
                    let moved = held.at_most(gone);
                    taken.add(&moved);
                    now[at].1 = held.saturating_sub(&moved);
                    for (kind, gone) in now[at].2.iter_mut().zip(gone_kinds) {
                        *kind = kind.saturating_sub(*gone);
                    }
                }
            }
            now.retain(|(_, counter, _)| counter.packets != 0 || counter.bytes != 0);
            taken
        }
        (
            take(&mut self.v4, &retired.v4),
            take(&mut self.v6, &retired.v6),
        )
    }

    /// The sum of every IPv4 and of every IPv6 counter.
    pub fn family_sums(&self) -> (Counter, Counter) {
        fn sum<K>(sources: &[Held<K>]) -> Counter {
            sources
                .iter()
                .fold(Counter::default(), |mut sum, (_, c, _)| {
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
        builder.push_v4([198, 18, 0, 2], c(3, 30), [3, 0, 0, 0]);
        builder.push_v4([198, 18, 0, 1], c(1, 60), [0, 1, 0, 0]);
        builder.push_v6(
            "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
            c(2, 200),
            [0, 0, 2, 0],
        );
        builder.push_with("198.18.0.1".parse().unwrap(), c(1, 40), [1, 0, 0, 0]);
        let mut table = builder.finish();
        assert_eq!(
            table.kinds_of(&"198.18.0.1".parse().unwrap()),
            Some([1, 1, 0, 0]),
            "protocols of a source met twice are summed too"
        );
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
