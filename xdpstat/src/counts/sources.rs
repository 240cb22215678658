//! The per-source counters of one snapshot, kept compact because a snapshot
//! may hold a million sources and the live loop keeps two of them.
//!
//! Each family is a vector of rows (address as an integer, counter, and
//! the protocol of its packets) sorted by address: 24 bytes a source for
//! IPv4 and 32 for IPv6, no hash table slack, lookups by binary search, and two snapshots
//! compare by walking both in order. The packets by protocol of the few
//! sources that send more than one are in a map apart. A
//! [`SourceTableBuilder`] collects sources in any order, then sorts once
//! and sums any source met more than once (a CPU's run in progress and the
//! source's table entry, say).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;

use super::buffers;

mod order;

pub use order::SortOrder;
use order::{Bits, Placed, Placing};

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
}

/// A source's packets under each protocol, indexed by `kinds::source`
/// (ICMP of either family is `icmp`); they add up to its packets. Reports
/// show them by name: `{"tcp": N, "udp": N, "icmp": N, "other": N}`.
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

    /// Adds another's (the same source's other counts, or the same address
    /// on another interface).
    pub fn add(&mut self, other: &SourceProtocols) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine = mine.wrapping_add(*theirs);
        }
    }

    fn zip(&self, other: &SourceProtocols, f: impl Fn(u64, u64) -> u64) -> SourceProtocols {
        SourceProtocols(std::array::from_fn(|i| f(self.0[i], other.0[i])))
    }

    /// The protocol with the most packets and how many it has (`None`
    /// with no packets; a tie goes to the first of tcp, udp, icmp, other).
    fn most(&self) -> Option<(&'static str, u64)> {
        let mut best: Option<(usize, u64)> = None;
        for (index, count) in self.0.into_iter().enumerate() {
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
        let all = self.0.iter().fold(0u64, |sum, &n| sum.saturating_add(n));
        if most == all {
            name.into()
        } else {
            let share = u128::from(most) * 100 / u128::from(all);
            format!("{name} {share}%")
        }
    }
}

impl Serialize for SourceProtocols {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut named = serializer.serialize_struct("SourceProtocols", source::PROTOCOLS)?;
        for (name, count) in SOURCE_PROTOCOL_NAMES.iter().zip(self.0) {
            named.serialize_field(name, &count)?;
        }
        named.end()
    }
}

/// A row's protocol when its source sent more than one: its packets by
/// protocol are in the table's `mixed`.
const MIXED: u8 = 7;

/// The bits of a row's first word that hold its packets; the three above
/// them hold its protocol. A source's packets are kept up to 2^61 - 1
/// (2.3 x 10^18: 73 years of a billion packets a second, where the
/// kernel's own counter wraps at 2^64), and a count past that stays there.
const PACKET_BITS: u32 = 61;
const MOST_PACKETS: u64 = (1 << PACKET_BITS) - 1;

/// One source: its address as a number, its packets with the protocol all
/// of them had (or [`MIXED`]) in the bits above, and its bytes. 24 bytes
/// for IPv4 and 32 for IPv6, half a cache line: a read writes a million
/// rows to scattered places and passes over them several times, so their
/// size is most of its cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row<K: Key> {
    key: K,
    packed: u64,
    bytes: u64,
    _align: [K::Align; 0],
}

impl<K: Key> Row<K> {
    fn new(key: K, counter: Counter, protocol: u8) -> Self {
        Row {
            key,
            packed: (u64::from(protocol) << PACKET_BITS) | counter.packets.min(MOST_PACKETS),
            bytes: counter.bytes,
            _align: [],
        }
    }

    fn protocol(&self) -> u8 {
        (self.packed >> PACKET_BITS) as u8
    }

    fn packets(&self) -> u64 {
        self.packed & MOST_PACKETS
    }

    fn counter(&self) -> Counter {
        Counter {
            packets: self.packets(),
            bytes: self.bytes,
        }
    }

    fn set_counter(&mut self, counter: Counter) {
        self.packed = (self.packed & !MOST_PACKETS) | counter.packets.min(MOST_PACKETS);
        self.bytes = counter.bytes;
    }

    fn set_protocol(&mut self, protocol: u8) {
        self.packed = (self.packed & MOST_PACKETS) | (u64::from(protocol) << PACKET_BITS);
    }
}

/// An address family's key: the address as a number.
trait Key: Ord + Copy {
    /// What a row of this family is aligned to.
    type Align: Copy + std::fmt::Debug + PartialEq + Eq;
    fn address(self) -> IpAddr;
}

impl Key for u32 {
    type Align = ();
    fn address(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }
}

/// An IPv6 address as two words, high first: ordered as the address, and
/// 8-byte aligned, so a row is 32 bytes (a `u128` key would make it 48).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct V6Key(u64, u64);

/// Aligns a 32-byte row to 32 bytes, so that it never straddles two cache
/// lines (as an empty array of it, it takes no room).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(align(32))]
struct Align32;

impl Key for V6Key {
    type Align = Align32;
    fn address(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(joined(self)))
    }
}

fn split(address: u128) -> V6Key {
    V6Key((address >> 64) as u64, address as u64)
}

fn joined(V6Key(high, low): V6Key) -> u128 {
    (u128::from(high) << 64) | u128::from(low)
}

/// The one protocol of a source's packets, or [`MIXED`].
fn single(protocols: &SourceProtocols) -> u8 {
    let mut sent = protocols.0.iter().enumerate().filter(|(_, n)| **n != 0);
    match (sent.next(), sent.next()) {
        (None, _) => source::OTHER as u8,
        (Some((protocol, _)), None) => protocol as u8,
        (Some(_), Some(_)) => MIXED,
    }
}

/// Counts by source address, sorted by address within each family; the
/// packets by protocol of the few sources that sent more than one apart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceTable {
    v4: Vec<Row<u32>>,
    v6: Vec<Row<V6Key>>,
    mixed: HashMap<IpAddr, SourceProtocols>,
}

/// Collects sources in any order; [`SourceTableBuilder::finish`] sorts them.
#[derive(Debug, Default)]
pub struct SourceTableBuilder {
    v4: Vec<Row<u32>>,
    v6: Vec<Row<V6Key>>,
    /// The packets by protocol of what was pushed as mixed, summed by
    /// source.
    mixed: HashMap<IpAddr, SourceProtocols>,
    /// Rows of each family pushed from the tables, before the rest (see
    /// [`SourceTableBuilder::tables_read`]).
    from_tables: [usize; 2],
    /// While the tables are read, where each family's rows go (see
    /// [`SortOrder`]); then how they went.
    placing: (Option<Placing<u32>>, Option<Placing<V6Key>>),
    placed: Option<(Placed, Placed)>,
    /// The entries of each family's table the rows were read from, when
    /// no order places them (a placing keeps track of which changed).
    held: [Bits; 2],
}

impl SourceTableBuilder {
    /// Room for `v4` and `v6` sources without reallocating.
    pub fn with_capacity(v4: usize, v6: usize) -> Self {
        Self {
            v4: buffers::with_capacity(v4),
            v6: buffers::with_capacity(v6),
            mixed: HashMap::new(),
            from_tables: [0; 2],
            placing: (None, None),
            placed: None,
            held: Default::default(),
        }
    }

    /// As [`SourceTableBuilder::with_capacity`], for a read of the tables
    /// that puts each row where `order` says it went last time; give the
    /// same order to [`SourceTableBuilder::finish_in`].
    pub fn reading(order: &mut SortOrder, v4: usize, v6: usize) -> Self {
        let v4_to = std::mem::take(&mut order.v4.to);
        let v6_to = std::mem::take(&mut order.v6.to);
        // Room for every row the placements put.
        let mut builder = Self::with_capacity(v4.max(v4_to.len()), v6.max(v6_to.len()));
        builder.placing = (
            Placing::by(v4_to, std::mem::take(&mut order.v4.held)),
            Placing::by(v6_to, std::mem::take(&mut order.v6.held)),
        );
        builder
    }

    /// Says that the rows pushed so far were read from the tables, in
    /// table order, and those after it (the CPUs' runs) are not.
    pub fn tables_read(&mut self) {
        let (v4, v6) = std::mem::take(&mut self.placing);
        let v4 = v4.map_or(Placed::Unplaced, |placing| placing.finish(&mut self.v4));
        let v6 = v6.map_or(Placed::Unplaced, |placing| placing.finish(&mut self.v6));
        self.placed = Some((v4, v6));
        self.from_tables = [self.v4.len(), self.v6.len()];
    }

    /// The row for `tally` of the source `key`.
    fn row<K: Key>(&mut self, key: K, tally: Tally) -> Row<K> {
        let protocol = single(&tally.protocols);
        if protocol == MIXED {
            self.mixed
                .entry(key.address())
                .or_default()
                .add(&tally.protocols);
        }
        Row::new(key, tally.counter, protocol)
    }

    /// Adds an IPv4 row, read from table entry `entry`.
    #[inline(always)]
    fn add_v4(&mut self, entry: Option<usize>, row: Row<u32>) {
        push_row(
            &mut self.v4,
            &mut self.placing.0,
            &mut self.held[0],
            entry,
            row,
        );
    }

    /// Adds an IPv6 row, read from table entry `entry`.
    #[inline(always)]
    fn add_v6(&mut self, entry: Option<usize>, row: Row<V6Key>) {
        push_row(
            &mut self.v6,
            &mut self.placing.1,
            &mut self.held[1],
            entry,
            row,
        );
    }

    /// Adds a source.
    pub fn push(&mut self, address: IpAddr, tally: impl Into<Tally>) {
        self.push_from(None, address, tally);
    }

    /// Adds the source a table's entry `index` holds (entries of a
    /// family in ascending order, before [`SourceTableBuilder::tables_read`]).
    pub fn push_entry(&mut self, index: usize, address: IpAddr, tally: impl Into<Tally>) {
        self.push_from(Some(index), address, tally);
    }

    fn push_from(&mut self, entry: Option<usize>, address: IpAddr, tally: impl Into<Tally>) {
        let tally = tally.into();
        match address {
            IpAddr::V4(v4) => {
                let row = self.row(u32::from(v4), tally);
                self.add_v4(entry, row);
            }
            IpAddr::V6(v6) => {
                let row = self.row(split(u128::from(v6)), tally);
                self.add_v6(entry, row);
            }
        }
    }

    /// Adds a source all of whose packets had source protocol
    /// `protocol` (one of `kinds::source`).
    pub fn push_one_protocol(&mut self, address: IpAddr, counter: Counter, protocol: u8) {
        self.push_one_protocol_from(None, address, counter, protocol);
    }

    /// As [`SourceTableBuilder::push_one_protocol`], for the source a
    /// table's entry `index` holds (see [`SourceTableBuilder::push_entry`]).
    pub fn push_entry_one_protocol(
        &mut self,
        index: usize,
        address: IpAddr,
        counter: Counter,
        protocol: u8,
    ) {
        self.push_one_protocol_from(Some(index), address, counter, protocol);
    }

    #[inline(always)]
    fn push_one_protocol_from(
        &mut self,
        entry: Option<usize>,
        address: IpAddr,
        counter: Counter,
        protocol: u8,
    ) {
        let protocol = protocol.min(source::OTHER as u8);
        match address {
            IpAddr::V4(v4) => {
                let row = Row::new(u32::from(v4), counter, protocol);
                self.add_v4(entry, row);
            }
            IpAddr::V6(v6) => {
                let row = Row::new(split(u128::from(v6)), counter, protocol);
                self.add_v6(entry, row);
            }
        }
    }

    /// Sorts by address and sums the counts of a source met twice.
    pub fn finish(self) -> SourceTable {
        self.finish_in(&mut SortOrder::default())
    }

    /// As [`SourceTableBuilder::finish`], trying the rows from the tables
    /// in `order` first, and keeping the order they sort into there.
    pub fn finish_in(mut self, order: &mut SortOrder) -> SourceTable {
        if self.placing.0.is_some() || self.placing.1.is_some() {
            self.tables_read();
        }
        let [v4_tables, v6_tables] = self.from_tables;
        let (v4_placed, v6_placed) = self
            .placed
            .take()
            .unwrap_or((Placed::Unplaced, Placed::Unplaced));
        let [v4_held, v6_held] = std::mem::take(&mut self.held);
        let v4 = sorted_and_merged(
            self.v4,
            (v4_tables, v4_placed, v4_held),
            &mut order.v4,
            &mut self.mixed,
        );
        let v6 = sorted_and_merged(
            self.v6,
            (v6_tables, v6_placed, v6_held),
            &mut order.v6,
            &mut self.mixed,
        );
        SourceTable {
            v4,
            v6,
            mixed: self.mixed,
        }
    }
}

/// Adds a row to a family's rows, read from table entry `entry` (noted
/// in `held`): to its place while the tables are read with an order
/// known, at the end otherwise.
#[inline(always)]
fn push_row<K: Key>(
    rows: &mut Vec<Row<K>>,
    placing: &mut Option<Placing<K>>,
    held: &mut Bits,
    entry: Option<usize>,
    row: Row<K>,
) {
    match placing {
        // The placing knows which entries changed.
        Some(placing) => placing.put(rows, entry, row),
        None => {
            if let Some(index) = entry {
                held.insert(index);
            }
            rows.push(row);
        }
    }
}

/// Merges `rest` (sorted by key) into `sorted` (sorted by key) in place,
/// from the back: the few rows the CPUs' runs add go where they belong
/// without another vector the size of the table.
fn merge_into<K: Key>(sorted: &mut Vec<Row<K>>, mut rest: Vec<Row<K>>) {
    if rest.is_empty() {
        return;
    }
    let mut from = sorted.len();
    sorted.extend_from_slice(&rest);
    let mut to = sorted.len();
    while let Some(last) = rest.last().copied() {
        if from > 0 && sorted[from - 1].key > last.key {
            sorted[to - 1] = sorted[from - 1];
            from -= 1;
        } else {
            sorted[to - 1] = last;
            rest.pop();
        }
        to -= 1;
    }
}

/// `rows` sorted by key, each key's rows summed into one. The first
/// `from_tables` rows were read from the tables, in table order (see
/// [`SortOrder`]), from the entries `held`, and `placed` as they were.
/// `mixed` holds what was pushed as mixed, and gets the packets by
/// protocol of every source whose rows had different protocols.
fn sorted_and_merged<K: Key>(
    mut rows: Vec<Row<K>>,
    (from_tables, placed, held): (usize, Placed, Bits),
    order: &mut order::FamilyOrder,
    mixed: &mut HashMap<IpAddr, SourceProtocols>,
) -> Vec<Row<K>> {
    let mut rest = rows.split_off(from_tables.min(rows.len()));
    rest.sort_unstable_by_key(|row| row.key);
    let distinct = order::sort_from_tables(&mut rows, placed, held, order);
    // A run of a source an entry holds adds to the entry's row where it
    // is; only the others are inserted, which moves every row after them.
    rest.retain(|run| match find(&rows, &run.key) {
        Some(at) => {
            absorb(&mut rows[at], run, mixed);
            false
        }
        None => true,
    });
    if distinct && rest.is_empty() {
        // Each source once already: no pass over the rows to find one
        // twice.
        return rows;
    }
    merge_into(&mut rows, rest);
    rows.dedup_by(|later, kept| {
        if later.key != kept.key {
            return false;
        }
        absorb(kept, later, mixed);
        true
    });
    rows
}

/// Adds `later`'s counts to `kept`, a row of the same source. Rows of
/// different protocols make the source mixed: a row pushed as mixed is in
/// `mixed` already, and a single row adds its packets there now.
fn absorb<K: Key>(kept: &mut Row<K>, later: &Row<K>, mixed: &mut HashMap<IpAddr, SourceProtocols>) {
    if later.protocol() != kept.protocol() || kept.protocol() == MIXED {
        let protocols = mixed.entry(kept.key.address()).or_default();
        for row in [&*kept, later] {
            if row.protocol() != MIXED {
                protocols.add(&SourceProtocols::of(
                    usize::from(row.protocol()),
                    row.packets(),
                ));
            }
        }
        kept.set_protocol(MIXED);
    }
    let mut counter = kept.counter();
    counter.add(&later.counter());
    kept.set_counter(counter);
}

fn find<K: Key>(rows: &[Row<K>], key: &K) -> Option<usize> {
    rows.binary_search_by(|row| row.key.cmp(key)).ok()
}

/// A row's counts, with its packets by protocol from `mixed` if it is
/// mixed.
fn tally_of<K: Key>(row: &Row<K>, mixed: &HashMap<IpAddr, SourceProtocols>) -> Tally {
    let protocols = if row.protocol() == MIXED {
        mixed.get(&row.key.address()).copied().unwrap_or_default()
    } else {
        SourceProtocols::of(usize::from(row.protocol()), row.packets())
    };
    Tally {
        counter: row.counter(),
        protocols,
    }
}

/// Sets `row` to `tally`, keeping `mixed` in step.
fn set_row<K: Key>(row: &mut Row<K>, tally: &Tally, mixed: &mut HashMap<IpAddr, SourceProtocols>) {
    row.set_counter(tally.counter);
    row.set_protocol(single(&tally.protocols));
    if row.protocol() == MIXED {
        mixed.insert(row.key.address(), tally.protocols);
    } else {
        mixed.remove(&row.key.address());
    }
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

    pub fn get(&self, address: &IpAddr) -> Option<Counter> {
        match address {
            IpAddr::V4(v4) => find(&self.v4, &u32::from(*v4)).map(|at| self.v4[at].counter()),
            IpAddr::V6(v6) => {
                find(&self.v6, &split(u128::from(*v6))).map(|at| self.v6[at].counter())
            }
        }
    }

    /// `address`'s counter; panics when the table does not hold it.
    pub fn counter(&self, address: &IpAddr) -> Counter {
        self.get(address)
            .unwrap_or_else(|| panic!("no source {address} in the table"))
    }

    /// A source's counts with its packets by protocol.
    pub fn tally(&self, address: &IpAddr) -> Option<Tally> {
        match address {
            IpAddr::V4(v4) => {
                find(&self.v4, &u32::from(*v4)).map(|at| tally_of(&self.v4[at], &self.mixed))
            }
            IpAddr::V6(v6) => find(&self.v6, &split(u128::from(*v6)))
                .map(|at| tally_of(&self.v6[at], &self.mixed)),
        }
    }

    pub fn contains_key(&self, address: &IpAddr) -> bool {
        self.get(address).is_some()
    }

    /// Sets `address`'s counts, replacing any earlier ones (a sorted
    /// insert: for a few sources at a time, builders are for many).
    pub fn insert(&mut self, address: IpAddr, tally: impl Into<Tally>) {
        fn set<K: Key>(
            rows: &mut Vec<Row<K>>,
            mixed: &mut HashMap<IpAddr, SourceProtocols>,
            key: K,
            tally: &Tally,
        ) {
            let at = match rows.binary_search_by(|row| row.key.cmp(&key)) {
                Ok(at) => at,
                Err(at) => {
                    let row = Row::new(key, Counter::default(), source::OTHER as u8);
                    rows.insert(at, row);
                    at
                }
            };
            set_row(&mut rows[at], tally, mixed);
        }
        let tally = tally.into();
        match address {
            IpAddr::V4(v4) => set(&mut self.v4, &mut self.mixed, u32::from(v4), &tally),
            IpAddr::V6(v6) => set(&mut self.v6, &mut self.mixed, split(u128::from(v6)), &tally),
        }
    }

    /// The IPv4 sources as numbers with their counters, in address order.
    pub fn v4(&self) -> impl Iterator<Item = (u32, Counter)> + '_ {
        self.v4.iter().map(|row| (row.key, row.counter()))
    }

    /// The IPv6 sources as numbers with their counters, in address order.
    pub fn v6(&self) -> impl Iterator<Item = (u128, Counter)> + '_ {
        self.v6.iter().map(|row| (joined(row.key), row.counter()))
    }

    /// Every source and its counter: IPv4 then IPv6, each by address.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, Counter)> + '_ {
        let v4 = self.v4.iter().map(|row| (row.key.address(), row.counter()));
        let v6 = self.v6.iter().map(|row| (row.key.address(), row.counter()));
        v4.chain(v6)
    }

    /// Every source with its counter here and in `earlier` (zero where
    /// `earlier` does not have it), by walking both tables in address order.
    pub fn since<'a>(
        &'a self,
        earlier: &'a SourceTable,
    ) -> impl Iterator<Item = (IpAddr, Counter, Counter)> + 'a {
        let v4 = merge(&self.v4, &earlier.v4)
            .map(|(now, before)| (now.key.address(), now.counter(), before.map(Row::counter)));
        let v6 = merge(&self.v6, &earlier.v6)
            .map(|(now, before)| (now.key.address(), now.counter(), before.map(Row::counter)));
        v4.chain(v6)
            .map(|(address, now, before)| (address, now, before.unwrap_or_default()))
    }

    /// The source at `place` and its counts: places number the IPv4
    /// sources first, then the IPv6 ones, each family in address order (so
    /// places are in the order addresses compare). `place` is below
    /// [`SourceTable::len`].
    pub fn at(&self, place: usize) -> (IpAddr, Tally) {
        match place.checked_sub(self.v4.len()) {
            None => {
                let row = &self.v4[place];
                (row.key.address(), tally_of(row, &self.mixed))
            }
            Some(v6) => {
                let row = &self.v6[v6];
                (row.key.address(), tally_of(row, &self.mixed))
            }
        }
    }

    /// The counter at `place` (see [`SourceTable::at`]).
    pub fn counter_at(&self, place: usize) -> Counter {
        match place.checked_sub(self.v4.len()) {
            None => self.v4[place].counter(),
            Some(v6) => self.v6[v6].counter(),
        }
    }

    /// Every source's place here, its counter, and the place of the same
    /// source in `earlier` if it has it, by walking both in address order.
    pub fn places_since<'a>(
        &'a self,
        earlier: &'a SourceTable,
    ) -> impl Iterator<Item = (usize, Counter, Option<usize>)> + 'a {
        let (here, there) = (self.v4.len(), earlier.v4.len());
        let v4 = merge_places(&self.v4, &earlier.v4)
            .map(|(at, before)| (at, self.v4[at].counter(), before));
        let v6 = merge_places(&self.v6, &earlier.v6)
            .map(move |(at, before)| (here + at, self.v6[at].counter(), before.map(|b| there + b)));
        v4.chain(v6)
    }

    /// As [`SourceTable::since`], with each source's packets by protocol.
    pub fn tallies_since<'a>(
        &'a self,
        earlier: &'a SourceTable,
    ) -> impl Iterator<Item = (IpAddr, Tally, Tally)> + 'a {
        let v4 = tallies(&self.v4, &earlier.v4, &self.mixed, &earlier.mixed);
        let v6 = tallies(&self.v6, &earlier.v6, &self.mixed, &earlier.mixed);
        v4.chain(v6)
    }

    /// Raises every source that `floor` also holds to at least its counts
    /// there: a read that races the datapath settling a run misses that run
    /// for one read, and a count must not seem to go backwards for it.
    pub fn raise_to(&mut self, floor: &SourceTable) {
        fn raise<K: Key>(
            now: &mut [Row<K>],
            mixed: &mut HashMap<IpAddr, SourceProtocols>,
            floor: &[Row<K>],
            floor_mixed: &HashMap<IpAddr, SourceProtocols>,
        ) {
            let mut floor = floor.iter().peekable();
            for row in now.iter_mut() {
                while floor.next_if(|f| f.key < row.key).is_some() {}
                let Some(before) = floor.next_if(|f| f.key == row.key) else {
                    continue;
                };
                if row.protocol() == before.protocol() && row.protocol() != MIXED {
                    // The common case: one protocol, before and now. Written
                    // only when it rises, which is rare: writing every row
                    // back would cost a million rows' memory traffic again.
                    if before.packets() > row.packets() || before.bytes > row.bytes {
                        row.set_counter(row.counter().at_least(&before.counter()));
                    }
                } else {
                    let raised = tally_of(row, mixed).at_least(&tally_of(before, floor_mixed));
                    set_row(row, &raised, mixed);
                }
            }
        }
        raise(&mut self.v4, &mut self.mixed, &floor.v4, &floor.mixed);
        raise(&mut self.v6, &mut self.mixed, &floor.v6, &floor.mixed);
    }

    /// Takes the counts of retired sources out (a source left with nothing
    /// is removed); returns what was taken per family, no more than each
    /// source held here.
    pub fn retire(&mut self, retired: &SourceTable) -> (Counter, Counter) {
        fn take<K: Key>(
            now: &mut Vec<Row<K>>,
            mixed: &mut HashMap<IpAddr, SourceProtocols>,
            retired: &[Row<K>],
            retired_mixed: &HashMap<IpAddr, SourceProtocols>,
        ) -> Counter {
            let mut taken = Counter::default();
            for gone in retired {
                if let Some(at) = find(now, &gone.key) {
                    let held = tally_of(&now[at], mixed);
                    let moved = held.at_most(&tally_of(gone, retired_mixed));
                    taken.add(&moved.counter);
                    set_row(&mut now[at], &held.saturating_sub(&moved), mixed);
                }
            }
            now.retain(|row| {
                let kept = row.packets() != 0 || row.bytes != 0;
                if !kept {
                    mixed.remove(&row.key.address());
                }
                kept
            });
            taken
        }
        (
            take(&mut self.v4, &mut self.mixed, &retired.v4, &retired.mixed),
            take(&mut self.v6, &mut self.mixed, &retired.v6, &retired.mixed),
        )
    }

    /// The sum of every IPv4 and of every IPv6 counter.
    pub fn family_sums(&self) -> (Counter, Counter) {
        fn sum<K: Key>(rows: &[Row<K>]) -> Counter {
            rows.iter().fold(Counter::default(), |mut sum, row| {
                sum.add(&row.counter());
                sum
            })
        }
        (sum(&self.v4), sum(&self.v6))
    }
}

/// Each source of `now` with its counts there and in `before` (zero where
/// `before` does not have it).
fn tallies<'a, K: Key>(
    now: &'a [Row<K>],
    before: &'a [Row<K>],
    now_mixed: &'a HashMap<IpAddr, SourceProtocols>,
    before_mixed: &'a HashMap<IpAddr, SourceProtocols>,
) -> impl Iterator<Item = (IpAddr, Tally, Tally)> + 'a {
    merge(now, before).map(move |(row, earlier)| {
        let earlier = earlier.map_or_else(Tally::default, |r| tally_of(r, before_mixed));
        (row.key.address(), tally_of(row, now_mixed), earlier)
    })
}

/// The index of each row of `now`, with the index of the row of the same
/// key in `before` (both sorted by key, each key once).
fn merge_places<'a, K: Key>(
    now: &'a [Row<K>],
    before: &'a [Row<K>],
) -> impl Iterator<Item = (usize, Option<usize>)> + 'a {
    let mut earlier = 0;
    now.iter().enumerate().map(move |(at, row)| {
        while before.get(earlier).is_some_and(|r| r.key < row.key) {
            earlier += 1;
        }
        let same = before.get(earlier).is_some_and(|r| r.key == row.key);
        (at, same.then_some(earlier))
    })
}

/// Each row of `now` with the row of the same key in `before` (both
/// sorted by key).
fn merge<'a, K: Key>(
    now: &'a [Row<K>],
    before: &'a [Row<K>],
) -> impl Iterator<Item = (&'a Row<K>, Option<&'a Row<K>>)> + 'a {
    merge_places(now, before).map(|(at, earlier)| (&now[at], earlier.map(|b| &before[b])))
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

    #[test]
    fn rows_are_a_half_or_less_of_a_cache_line() {
        assert_eq!(size_of::<Row<u32>>(), 24);
        assert_eq!(size_of::<Row<V6Key>>(), 32);
        assert_eq!(align_of::<Row<V6Key>>(), 32);
    }

    #[test]
    fn a_row_keeps_its_protocol_apart_from_its_packets() {
        let mut row = Row::new(
            1u32,
            Counter {
                packets: 5,
                bytes: 9,
            },
            MIXED,
        );
        assert_eq!(
            (row.protocol(), row.counter()),
            (
                MIXED,
                Counter {
                    packets: 5,
                    bytes: 9
                }
            )
        );
        row.set_counter(Counter {
            packets: MOST_PACKETS,
            bytes: u64::MAX,
        });
        assert_eq!(row.protocol(), MIXED);
        assert_eq!(
            row.counter(),
            Counter {
                packets: MOST_PACKETS,
                bytes: u64::MAX
            }
        );
        // Past the bound, a count stays at it and never reaches the
        // protocol's bits.
        row.set_counter(Counter {
            packets: u64::MAX,
            bytes: 1,
        });
        assert_eq!((row.protocol(), row.packets()), (MIXED, MOST_PACKETS));
        row.set_protocol(2);
        assert_eq!((row.protocol(), row.packets()), (2, MOST_PACKETS));
    }

    fn c(packets: u64, bytes: u64) -> Counter {
        Counter { packets, bytes }
    }

    /// One read: table rows (entry, address, packets; the entries of a
    /// family ascending), then runs in progress.
    fn read(
        table: &[(usize, IpAddr, u64)],
        runs: &[(IpAddr, u64)],
        order: Option<&mut SortOrder>,
    ) -> SourceTable {
        let (len, mut order) = (table.len(), order);
        let mut builder = match order.as_deref_mut() {
            Some(order) => SourceTableBuilder::reading(order, len, len),
            None => SourceTableBuilder::with_capacity(len, len),
        };
        for &(entry, address, packets) in table {
            builder.push_entry_one_protocol(entry, address, c(packets, packets * 60), 1);
        }
        // Without an order, as a plain builder: every row sorted and
        // summed alike, the oracle the kept order is checked against.
        if order.is_some() {
            builder.tables_read();
        }
        // Runs of other protocols than the entries' too (1, and 0 or 2),
        // so that sources become mixed as their rows are summed.
        for &(address, packets) in runs {
            builder.push_one_protocol(address, c(packets, packets * 60), (packets % 3) as u8);
        }
        match order {
            Some(order) => builder.finish_in(order),
            None => builder.finish(),
        }
    }

    proptest::proptest! {
        /// Reads sorted through the order kept from the reads before them
        /// are the reads sorted afresh, whatever changed between them:
        /// sources come and go, move between entries, or stay.
        #[test]
        fn a_kept_order_sorts_as_a_fresh_sort_does(
            reads in proptest::collection::vec(
                (
                    proptest::collection::vec(
                        (0usize..90, 0u8..40, 1u64..5, proptest::bool::ANY),
                        0..60,
                    ),
                    proptest::collection::vec((0u8..40, 1u64..5), 0..3),
                ),
                1..6,
            ),
            repeat in 0usize..3,
        ) {
            let address = |n: u8, v6: bool| -> IpAddr {
                if v6 {
                    format!("2001:db8::{n:x}").parse().unwrap()
                } else {
                    format!("198.18.0.{n}").parse().unwrap()
                }
            };
            let mut order = SortOrder::default();
            for (table, runs) in &reads {
                // Bits in table order, each holding one source.
                let mut table: Vec<(usize, IpAddr, u64)> = table
                    .iter()
                    .map(|&(entry, n, p, v6)| (entry, address(n, v6), p))
                    .collect();
                table.sort_by_key(|&(entry, address, _)| (entry, address.is_ipv6()));
                table.dedup_by_key(|&mut (entry, address, _)| (entry, address.is_ipv6()));
                let runs: Vec<(IpAddr, u64)> =
                    runs.iter().map(|&(n, p)| (address(n, n % 2 == 0), p)).collect();
                // The same read again (the settled case) as often as asked.
                for _ in 0..=repeat {
                    let kept = read(&table, &runs, Some(&mut order));
                    proptest::prop_assert_eq!(kept, read(&table, &runs, None));
                }
            }
        }
    }

    #[test]
    fn a_sort_that_learns_the_order_keeps_every_row_whole() {
        let rows = |keys: &[u32]| -> Vec<Row<u32>> {
            keys.iter()
                .map(|&key| Row::new(key, c(u64::from(key), u64::from(key) * 7), 0))
                .collect()
        };
        let mut sorted = rows(&[30, 10, 20, 40]);
        let to = order::sort_learning(&mut sorted).expect("fewer than 2^32 rows");
        assert_eq!(sorted, rows(&[10, 20, 30, 40]));
        // The placement puts the rows, read in the same order again, in
        // address order.
        let mut placed = Vec::with_capacity(to.len());
        let mut held = Bits::default();
        for entry in 0..4 {
            held.insert(entry);
        }
        let mut placing = order::Placing::by(to, held).expect("an order");
        for (entry, row) in rows(&[31, 11, 21, 41]).into_iter().enumerate() {
            placing.put(&mut placed, Some(entry), row);
        }
        assert!(matches!(
            placing.finish(&mut placed),
            order::Placed::Whole(..)
        ));
        assert_eq!(placed, rows(&[11, 21, 31, 41]));
        for bad in [&[0, 0, 1, 2][..], &[0, 1, 2, 4]] {
            assert!(order::Placement::inverse_of(bad).is_none());
        }
    }

    #[test]
    fn sources_met_twice_are_summed_and_families_kept_apart() {
        let mut builder = SourceTableBuilder::with_capacity(4, 1);
        builder.push("198.18.0.2".parse().unwrap(), c(3, 30));
        builder.push("198.18.0.1".parse().unwrap(), c(1, 60));
        builder.push("2001:db8::1".parse().unwrap(), c(2, 200));
        builder.push("198.18.0.1".parse().unwrap(), c(1, 40));
        let mut table = builder.finish();
        assert_eq!(table.counter(&"198.18.0.1".parse().unwrap()), c(2, 100));
        assert_eq!(table.counter(&"2001:db8::1".parse().unwrap()), c(2, 200));
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
        assert_eq!(now.counter(&"198.18.0.1".parse().unwrap()), c(10, 1000));
        assert_eq!(now.counter(&"198.18.0.2".parse().unwrap()), c(8, 800));
        assert_eq!(now.counter(&"198.18.0.3".parse().unwrap()), c(1, 100));
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
        assert_eq!(now.counter(&"198.18.0.2".parse().unwrap()), c(5, 500));
        assert!(!now.contains_key(&"198.18.0.1".parse().unwrap()));
        assert!(!now.contains_key(&"2001:db8::1".parse().unwrap()));
        assert_eq!(now.len(), 2);
    }

    fn t(protocols: [u64; 4], bytes: u64) -> Tally {
        Tally {
            counter: c(protocols.iter().sum(), bytes),
            protocols: SourceProtocols(protocols),
        }
    }

    #[test]
    fn sources_of_several_protocols_keep_them_through_merges_raises_and_retirement() {
        let (a, b, d): (IpAddr, IpAddr, IpAddr) = (
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        );
        // a: an entry of TCP and a run of UDP; b: TCP twice; d: an entry
        // of UDP and ICMP, and a run of TCP.
        let mut builder = SourceTableBuilder::default();
        builder.push(a, t([5, 0, 0, 0], 500));
        builder.push(b, t([2, 0, 0, 0], 200));
        builder.push(d, t([0, 3, 4, 0], 700));
        builder.push(a, t([0, 1, 0, 0], 100));
        builder.push(b, t([1, 0, 0, 0], 100));
        builder.push(d, t([2, 0, 0, 0], 200));
        let table = builder.finish();
        assert_eq!(table.tally(&a), Some(t([5, 1, 0, 0], 600)));
        assert_eq!(table.tally(&b), Some(t([3, 0, 0, 0], 300)));
        assert_eq!(table.tally(&d), Some(t([2, 3, 4, 0], 900)));
        assert_eq!(table.mixed.len(), 2, "b sends one protocol");
        // A read that missed a run of a: raised to the last one.
        let mut later: SourceTable = [(a, t([5, 0, 0, 0], 500)), (b, t([4, 0, 0, 0], 400))]
            .into_iter()
            .collect();
        later.raise_to(&table);
        assert_eq!(later.tally(&a), Some(t([5, 1, 0, 0], 600)));
        assert_eq!(later.tally(&b), Some(t([4, 0, 0, 0], 400)));
        // d's entry retired: what it held goes, the run's TCP stays.
        let mut now = table.clone();
        let retired: SourceTable = [(d, t([0, 3, 4, 0], 700))].into_iter().collect();
        now.retire(&retired);
        assert_eq!(now.tally(&d), Some(t([2, 0, 0, 0], 200)));
        assert!(!now.mixed.contains_key(&d), "one protocol again");
        let pairs: Vec<(IpAddr, Tally, Tally)> = now.tallies_since(&table).collect();
        assert_eq!(pairs[0], (a, t([5, 1, 0, 0], 600), t([5, 1, 0, 0], 600)));
        assert_eq!(pairs[2], (d, t([2, 0, 0, 0], 200), t([2, 3, 4, 0], 900)));
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
