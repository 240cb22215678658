//! The per-source counters of one snapshot, kept compact because a snapshot
//! may hold a million sources and the live loop keeps two of them.
//!
//! IPv4 and IPv6 sources live in separate tables keyed by the address as an
//! integer (4 or 16 bytes instead of a 17-byte `IpAddr` padded to 24), with
//! hashbrown's seeded hasher: the keys are attacker-chosen source addresses,
//! so an unseeded hash would let a spoofed flood pick colliding keys.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Index,
};

use hashbrown::HashMap;
use xdpstat_common::Counter;

/// Counters by source address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceTable {
    v4: HashMap<u32, Counter>,
    v6: HashMap<u128, Counter>,
}

impl SourceTable {
    /// An empty table with room for `v4` and `v6` sources without rehashing.
    pub fn with_capacity(v4: usize, v6: usize) -> Self {
        Self {
            v4: HashMap::with_capacity(v4),
            v6: HashMap::with_capacity(v6),
        }
    }

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
            IpAddr::V4(v4) => self.v4.get(&u32::from(*v4)),
            IpAddr::V6(v6) => self.v6.get(&u128::from(*v6)),
        }
    }

    pub fn contains_key(&self, address: &IpAddr) -> bool {
        self.get(address).is_some()
    }

    /// Sets `address`'s counter, replacing any earlier one.
    pub fn insert(&mut self, address: IpAddr, counter: Counter) {
        match address {
            IpAddr::V4(v4) => self.v4.insert(u32::from(v4), counter),
            IpAddr::V6(v6) => self.v6.insert(u128::from(v6), counter),
        };
    }

    /// Sets an IPv4 source's counter, the address as it is on the wire.
    pub fn insert_v4(&mut self, address: [u8; 4], counter: Counter) {
        self.v4.insert(u32::from_be_bytes(address), counter);
    }

    /// Sets an IPv6 source's counter, the address as it is on the wire.
    pub fn insert_v6(&mut self, address: [u8; 16], counter: Counter) {
        self.v6.insert(u128::from_be_bytes(address), counter);
    }

    /// Adds `counter` to `address`'s counter (starting from zero).
    pub fn add(&mut self, address: IpAddr, counter: &Counter) {
        match address {
            IpAddr::V4(v4) => self.v4.entry(u32::from(v4)).or_default().add(counter),
            IpAddr::V6(v6) => self.v6.entry(u128::from(v6)).or_default().add(counter),
        }
    }

    /// Every source and its counter, IPv4 first, in no particular order.
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

    /// The sum of every IPv4 and of every IPv6 counter.
    pub fn family_sums(&self) -> (Counter, Counter) {
        let sum = |counters: &mut dyn Iterator<Item = &Counter>| {
            counters.fold(Counter::default(), |mut sum, c| {
                sum.add(c);
                sum
            })
        };
        (sum(&mut self.v4.values()), sum(&mut self.v6.values()))
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
    fn from_iter<I: IntoIterator<Item = (IpAddr, Counter)>>(iter: I) -> Self {
        let mut table = Self::default();
        for (address, counter) in iter {
            table.insert(address, counter);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(packets: u64, bytes: u64) -> Counter {
        Counter { packets, bytes }
    }

    #[test]
    fn both_families_round_trip_through_wire_order_keys() {
        let mut table = SourceTable::default();
        table.insert_v4([198, 18, 0, 1], c(1, 60));
        table.insert_v6(
            "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
            c(2, 200),
        );
        table.add("198.18.0.1".parse().unwrap(), &c(1, 40));
        table.add("198.18.0.2".parse().unwrap(), &c(3, 30));
        assert_eq!(table[&"198.18.0.1".parse().unwrap()], c(2, 100));
        assert_eq!(table[&"2001:db8::1".parse().unwrap()], c(2, 200));
        assert_eq!(table.family_lens(), (2, 1));
        assert_eq!(table.family_sums(), (c(5, 130), c(2, 200)));
        let mut all: Vec<(IpAddr, Counter)> = table.iter().collect();
        all.sort_by_key(|(address, _)| *address);
        assert_eq!(
            all,
            vec![
                ("198.18.0.1".parse().unwrap(), c(2, 100)),
                ("198.18.0.2".parse().unwrap(), c(3, 30)),
                ("2001:db8::1".parse().unwrap(), c(2, 200)),
            ]
        );
    }
}
