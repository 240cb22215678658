//! The order a read's rows sorted into, kept for the next read: the tables
//! are walked in the same order every read and hold the same sources from
//! one read to the next but for the few that come and go, so a read that
//! knows where each row went last time writes each row straight to its
//! place in address order as it is read, with no sort and no second pass
//! over a million rows. A row's place is found by its table entry, so a
//! source that comes or goes (an entry claimed, or retired) misplaces no
//! other: the few rows that find no place, or a place out of order, are
//! sorted apart and merged in.

use super::{Key, Row, buffers};

/// How the rows read from the tables sorted at the last read, per family.
#[derive(Debug, Default)]
pub struct SortOrder {
    pub(super) v4: FamilyOrder,
    pub(super) v6: FamilyOrder,
}

/// One family's [`SortOrder`].
#[derive(Debug, Default)]
pub(super) struct FamilyOrder {
    /// Where each row went, in the order the tables were read (empty:
    /// none known).
    pub(super) to: Placement,
    /// The entries the rows of `to` were read from, in that order: one bit
    /// an entry.
    pub(super) held: Bits,
    /// Rows read from the tables at the last read.
    pub(super) rows: usize,
}

/// A set of numbers, one bit each: the table entries a read took rows
/// from (a table of 2.25 million entries takes 281 KB), the rows a mend
/// sorts apart.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Bits(Vec<u64>);

impl Bits {
    /// An empty set with room for `0..len`.
    fn with_room(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    /// How many numbers the set holds.
    fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }

    fn contains(&self, at: usize) -> bool {
        self.0
            .get(at / 64)
            .is_some_and(|word| word & (1 << (at % 64)) != 0)
    }

    fn remove(&mut self, at: usize) {
        if let Some(word) = self.0.get_mut(at / 64) {
            *word &= !(1 << (at % 64));
        }
    }

    /// Adds `at`; true when it was not in the set.
    pub(super) fn insert(&mut self, at: usize) -> bool {
        let word = at / 64;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let was = self.0[word];
        self.0[word] |= 1 << (at % 64);
        self.0[word] != was
    }

    /// The first number of the set at or after `from`.
    fn next_from(&self, from: usize) -> Option<usize> {
        let mut word = from / 64;
        let mut bits = self.0.get(word)? & (!0u64 << (from % 64));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            bits = *self.0.get(word)?;
        }
    }
}

/// For each row in the order the tables were read, its position in
/// address order: each of `0..len` exactly once. [`sort_learning`] checks
/// it; a placing's `finish` and [`mend`] make one from another, a
/// position for each row they place, close up or merge (and the kept-
/// order proptest and the mending tests hold the rows they place in
/// order); tests make them with `inverse_of`, which checks too.
#[derive(Debug, Default)]
pub(super) struct Placement(Vec<u32>);

impl Placement {
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The placement that puts the row at `from[j]` at `j`; `None` when
    /// `from` is not a permutation of its positions.
    #[cfg(test)]
    pub(super) fn inverse_of(from: &[u32]) -> Option<Placement> {
        let mut to = vec![u32::MAX; from.len()];
        for (at, &source) in from.iter().enumerate() {
            let slot = to.get_mut(source as usize)?;
            if *slot != u32::MAX {
                return None;
            }
            *slot = at as u32;
        }
        Some(Placement(to))
    }
}

/// Rows ahead whose places are fetched for writing: a row goes to a
/// random place in tens of megabytes, a cache miss each, and without
/// asking ahead each write waited for its line in turn.
const AHEAD: usize = 32;

/// Asks for the cache lines of `place` (its first and last byte: a
/// 24-byte IPv4 row spans two lines a quarter of the time) to be written
/// soon.
fn prefetch_for_write<T>(place: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing, writes nothing and
    // faults on no address, and SSE is part of x86_64. Both addresses are
    // inside `place`.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
        let first = (place as *const T).cast::<i8>();
        _mm_prefetch::<_MM_HINT_ET0>(first);
        _mm_prefetch::<_MM_HINT_ET0>(first.add(size_of::<T>() - 1));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = place;
}

/// One family's rows being placed while the tables are read.
#[derive(Debug)]
pub(super) struct Placing<K: Key> {
    to: Placement,
    /// The entries `to` was read from, and the next of them not yet read
    /// again (`None`: past the last), which is the `next`th: the row of
    /// that entry goes to `to[next]`.
    held: Bits,
    entry: Option<usize>,
    next: usize,
    /// Rows placed so far.
    placed: usize,
    /// Positions no row was written to: their entries held no source
    /// when read again, in read order.
    holes: Vec<u32>,
    /// Once a row finds no place or an entry held at the last read holds
    /// none: each row's position so far (before that, the row read `j`th
    /// went to `to[j]`), or [`UNPLACED`] (then it is in `overflow`).
    slots: Option<Vec<u32>>,
    /// Rows that found no place, in table order.
    overflow: Vec<Row<K>>,
    /// The entries held at the last read that hold no source now, and
    /// those that hold one now and did not then: what changes `held` into
    /// the entries of this read.
    gone: Vec<usize>,
    came: Vec<usize>,
}

/// A row read from an entry that held no source at the last read.
const UNPLACED: u32 = u32::MAX;

/// How the rows of a family were placed.
#[derive(Debug)]
pub(super) enum Placed {
    /// Every position written once, nothing left over: in address order
    /// if no source changed entries since the last read. The placement is
    /// the one they were placed by, and the entries the last read's.
    Whole(Placement, Bits),
    /// Some entries held no source at the last read, or hold none now:
    /// the rows placed close up, those that found no place follow them
    /// (from `kept` on), the placement says where each row read is, and
    /// `held` which entries they were read from.
    Partly {
        slots: Placement,
        kept: usize,
        held: Bits,
    },
    /// No order was known: in table order.
    Unplaced,
}

impl<K: Key> Placing<K> {
    /// Places rows by `to`, read from the entries `held` (`None` when `to`
    /// is empty: no order known); the rows they go into must have room
    /// for `to.len()` of them.
    pub(super) fn by(to: Placement, held: Bits) -> Option<Self> {
        (!to.is_empty()).then(|| Placing {
            entry: held.next_from(0),
            to,
            held,
            next: 0,
            placed: 0,
            holes: Vec::new(),
            slots: None,
            overflow: Vec::new(),
            gone: Vec::new(),
            came: Vec::new(),
        })
    }

    /// The rows read so far had the places `to` gave them, in turn, up to
    /// now: from here on each row's place is kept.
    fn diverge(&mut self) -> &mut Vec<u32> {
        let (to, placed) = (&self.to, self.placed);
        self.slots.get_or_insert_with(|| {
            let mut slots = buffers::mapped(to.len());
            slots.extend_from_slice(&to.0[..placed]);
            slots
        })
    }

    /// Where the row of entry `index` went at the last read, if its entry
    /// held a source then. Bits come in ascending order; one that does
    /// not has no place. Bits held then and passed over now hold no
    /// source: their places are holes.
    #[inline(always)]
    fn place_of(&mut self, index: usize) -> Option<usize> {
        if self.entry != Some(index) {
            self.pass_to(index)?;
        }
        let at = self.to.0.get(self.next).copied();
        self.next += 1;
        self.entry = self.held.next_from(index + 1);
        at.map(|at| at as usize)
    }

    /// Passes over the entries held at the last read that come before
    /// `index` (their places are holes); `None` when `index` is not the
    /// next of them.
    #[cold]
    fn pass_to(&mut self, index: usize) -> Option<()> {
        while let Some(entry) = self.entry.filter(|&entry| entry < index) {
            if let Some(&hole) = self.to.0.get(self.next) {
                self.holes.push(hole);
            }
            self.gone.push(entry);
            self.diverge();
            self.next += 1;
            self.entry = self.held.next_from(entry + 1);
        }
        (self.entry == Some(index)).then_some(())
    }

    /// Writes the row read from entry `index` to its place (a row from no
    /// entry has none).
    #[inline(always)]
    pub(super) fn put(&mut self, rows: &mut Vec<Row<K>>, index: Option<usize>, row: Row<K>) {
        match index.and_then(|index| self.place_of(index)) {
            Some(at) => {
                // In bounds: the rows have room for `to.len()`, and
                // nothing is pushed while placing (an index past the room
                // would panic, never write out of bounds). Each position
                // once: `to` is a permutation, and each of its places is
                // taken once, in turn.
                let spare = rows.spare_capacity_mut();
                if let Some(&ahead) = self.to.0.get(self.next + AHEAD) {
                    prefetch_for_write(&spare[ahead as usize]);
                }
                spare[at].write(row);
                self.placed += 1;
                if let Some(slots) = &mut self.slots {
                    slots.push(at as u32);
                }
            }
            None => {
                self.diverge().push(UNPLACED);
                self.overflow.push(row);
                if let Some(index) = index {
                    self.came.push(index);
                }
            }
        }
    }

    /// Ends placing: `rows` holds every row placed (and those that found
    /// no place, after them).
    pub(super) fn finish(mut self, rows: &mut Vec<Row<K>>) -> Placed {
        let len = self.to.len();
        // The places of the entries held at the last read and not read
        // again, past the last read now, are holes too.
        if self.next < len {
            self.diverge();
            self.holes.extend_from_slice(&self.to.0[self.next..]);
            while let Some(entry) = self.entry {
                self.gone.push(entry);
                self.entry = self.held.next_from(entry + 1);
            }
        }
        let Some(mut slots) = self.slots else {
            // SAFETY: every position below `len` was written once: each
            // place of `to` (a permutation of `0..len`) was taken in turn.
            unsafe { rows.set_len(len) };
            return Placed::Whole(self.to, self.held);
        };
        let mut held = self.held;
        for &entry in &self.gone {
            held.remove(entry);
        }
        for &entry in &self.came {
            held.insert(entry);
        }
        // The positions written close up, in position order; each goes
        // down by the holes below it.
        let mut holes = self.holes;
        holes.sort_unstable();
        let spare = rows.spare_capacity_mut();
        let mut kept = 0;
        let mut below = holes.iter().peekable();
        for at in 0..len {
            if below.next_if(|&&hole| hole as usize == at).is_some() {
                continue;
            }
            // SAFETY: `put` wrote a row at every position that is not a
            // hole, and `kept <= at`, so nothing not yet moved is
            // overwritten.
            let row = unsafe { spare[at].assume_init_read() };
            spare[kept].write(row);
            kept += 1;
        }
        // SAFETY: the first `kept` positions were each written just above.
        unsafe { rows.set_len(kept) };
        let mut next = kept;
        for slot in &mut slots {
            *slot = if *slot == UNPLACED {
                next += 1;
                (next - 1) as u32
            } else {
                *slot - holes.partition_point(|&hole| hole < *slot) as u32
            };
        }
        rows.extend_from_slice(&self.overflow);
        Placed::Partly {
            slots: Placement(slots),
            kept,
            held,
        }
    }
}

/// Sorts `rows` by key and returns the placement that sorted them (`None`
/// past `u32::MAX` rows). Each row carries its position through the sort
/// in its bytes word, the bytes kept aside meanwhile: 8 bytes a row beside
/// the rows, where sorting (key, position) pairs took 24 for an IPv6
/// source (21 MB for a million, the peak of a read that learned the
/// order).
pub(super) fn sort_learning<K: Key>(rows: &mut [Row<K>]) -> Option<Placement> {
    let mut bytes: Vec<u64> = buffers::with_capacity(rows.len());
    bytes.extend(
        rows.iter_mut()
            .enumerate()
            .map(|(at, row)| std::mem::replace(&mut row.bytes, at as u64)),
    );
    rows.sort_unstable_by_key(|row| row.key);
    // Every row gets its bytes back. The placement is kept when every
    // position came back once, as the sort moves rows and never copies
    // them; it is checked all the same, since placing trusts it, and a
    // position past u32::MAX has no place in it.
    let mut to: Vec<u32> = vec![u32::MAX; rows.len()];
    let mut whole = true;
    for (place, row) in rows.iter_mut().enumerate() {
        let at = row.bytes as usize;
        row.bytes = bytes[at];
        match (to.get_mut(at), u32::try_from(place)) {
            (Some(slot), Ok(place)) if *slot == u32::MAX => *slot = place,
            _ => whole = false,
        }
    }
    whole.then_some(Placement(to))
}

/// How rows placed by the last read's order turned out.
enum Landed {
    /// In order, each key once.
    Distinct,
    /// In order, some key more than once (a source two entries hold).
    Sorted,
    Unsorted,
}

/// Whether `rows` are sorted by key, and whether any key is there twice,
/// in one pass.
fn landed<K: Key>(rows: &[Row<K>]) -> Landed {
    let mut distinct = true;
    for pair in rows.windows(2) {
        match pair[0].key.cmp(&pair[1].key) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => distinct = false,
            std::cmp::Ordering::Greater => return Landed::Unsorted,
        }
    }
    if distinct {
        Landed::Distinct
    } else {
        Landed::Sorted
    }
}

/// Sorts `rows`, read from the tables (from the entries `held`) and
/// `placed` as they were, by key, and keeps in `order` where they went
/// when that is cheap to know: when the last order placed all but a few
/// of them (those few are sorted apart and merged in), or when no order
/// is known and this is the first read, or as many rows were read as the
/// last time (the sources have settled). Otherwise (a flood brings new sources every read) the
/// rows are sorted in place and no order is kept, which costs no more
/// than a plain sort. Returns whether the rows are known to hold each key
/// once (true only when the last read's order placed every one of them,
/// which is checked in the same pass that checks their order), so that
/// the caller need not look for a source read twice.
pub(super) fn sort_from_tables<K: Key>(
    rows: &mut Vec<Row<K>>,
    placed: Placed,
    held: Bits,
    order: &mut FamilyOrder,
) -> bool {
    // The first read learns the order (no read before it is held beside
    // it then, so its sort's 12 bytes a row cost least), and so does a
    // read as long as the last when no order is known.
    let first = order.rows == 0;
    let settled = order.rows == rows.len();
    order.rows = rows.len();
    let (slots, kept, held) = match placed {
        Placed::Whole(to, held) => {
            let landed = landed(rows);
            if !matches!(landed, Landed::Unsorted) {
                order.to = to;
                order.held = held;
                return matches!(landed, Landed::Distinct);
            }
            // A source claimed an entry another held at the last read.
            let kept = rows.len();
            (to, kept, held)
        }
        Placed::Partly { slots, kept, held } => (slots, kept, held),
        Placed::Unplaced => {
            if first || settled {
                if let Some(to) = sort_learning(rows) {
                    order.to = to;
                    order.held = held;
                }
            } else {
                rows.sort_unstable_by_key(|row| row.key);
            }
            return false;
        }
    };
    match mend(rows, slots, kept) {
        Some(to) => {
            order.to = to;
            order.held = held;
        }
        None => rows.sort_unstable_by_key(|row| row.key),
    }
    false
}

/// Which rows to sort apart, one bit each, so that the rest are in order:
/// the rows from `kept` on, and both rows of every pair out of order among
/// those left (a row whose source is not the one its place had, and the
/// row beside it). A row taken out makes its neighbours adjacent, so that
/// pair is looked at in turn. `None` when more than an eighth of the rows
/// (and more than 64) would go.
fn apart<K: Key>(rows: &[Row<K>], kept: usize) -> Option<Bits> {
    let len = rows.len();
    let limit = (len / 8).max(64);
    let mut apart = Bits::with_room(len);
    for at in kept..len {
        apart.insert(at);
    }
    for at in 1..kept {
        if rows[at - 1].key > rows[at].key {
            apart.insert(at - 1);
            apart.insert(at);
        }
    }
    let mut count = apart.len();
    // Each run of rows taken out: the rows either side of it are now
    // adjacent.
    loop {
        let mut again = false;
        let mut at = 0;
        while let Some(start) = apart.next_from(at).filter(|&start| start < kept) {
            at = start;
            while at < len && apart.contains(at) {
                at += 1;
            }
            if start > 0 && at < kept && rows[start - 1].key > rows[at].key {
                count += usize::from(apart.insert(start - 1)) + usize::from(apart.insert(at));
                again = true;
            }
        }
        if count > limit {
            return None;
        }
        if !again {
            return Some(apart);
        }
    }
}

/// Puts in order `rows` whose first `kept` were placed by the last read's
/// order (all but a few in order) and the rest found no place: the rows
/// out of order, and the rest, are sorted apart and merged in. Returns
/// `slots` (each row read's position before) changed to where each row
/// went; `None`, with `rows` as they were, when more than an eighth of
/// them (and more than 64) would be sorted apart: then a sort of all of
/// them costs little more.
fn mend<K: Key>(rows: &mut Vec<Row<K>>, mut slots: Placement, kept: usize) -> Option<Placement> {
    let len = rows.len();
    let apart = apart(rows, kept)?;
    let is_apart = |at: usize| apart.contains(at);
    let mut side: Vec<(Row<K>, u32)> = (0..len)
        .filter(|&at| is_apart(at))
        .map(|at| (rows[at], at as u32))
        .collect();
    side.sort_unstable_by_key(|(row, at)| (row.key, *at));
    // Where each row goes: the rows in order and those apart merged, a
    // row in order first among equal keys (as `merge_into` puts them).
    let mut went: Vec<u32> = buffers::mapped(len);
    went.resize(len, 0);
    let (mut next, mut from, mut place) = (0, 0, 0u32);
    loop {
        while next < kept && is_apart(next) {
            next += 1;
        }
        match (next < kept, side.get(from)) {
            (true, Some((row, at))) if row.key < rows[next].key => {
                went[*at as usize] = place;
                from += 1;
            }
            (true, _) => {
                went[next] = place;
                next += 1;
            }
            (false, Some((_, at))) => {
                went[*at as usize] = place;
                from += 1;
            }
            (false, None) => break,
        }
        place += 1;
    }
    // The rows in order close up, and the rest merge in from the back.
    let mut to = 0;
    for at in 0..kept {
        if !is_apart(at) {
            rows[to] = rows[at];
            to += 1;
        }
    }
    rows.truncate(to);
    super::merge_into(rows, side.into_iter().map(|(row, _)| row).collect());
    for slot in &mut slots.0 {
        *slot = went[*slot as usize];
    }
    Some(slots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdpstat_common::Counter;

    fn row(key: u32) -> Row<u32> {
        Row::new(
            key,
            Counter {
                packets: u64::from(key),
                bytes: 0,
            },
            0,
        )
    }

    fn keys(rows: &[Row<u32>]) -> Vec<u32> {
        rows.iter().map(|row| row.key).collect()
    }

    /// Places `read` by the placement that sorts `[30, 10, 20]`.
    fn place(read: &[u32]) -> (Vec<Row<u32>>, Placed) {
        let to = Placement::inverse_of(&[1, 2, 0]).expect("a permutation");
        let mut rows = Vec::with_capacity(to.len());
        let mut placing = Placing::by(to, entries(&[0, 1, 2])).expect("an order");
        for (entry, &key) in read.iter().enumerate() {
            placing.put(&mut rows, Some(entry), row(key));
        }
        let placed = placing.finish(&mut rows);
        (rows, placed)
    }

    #[test]
    fn rows_go_where_the_last_read_put_them_and_fewer_or_more_close_up() {
        let (rows, placed) = place(&[30, 10, 20]);
        assert_eq!(keys(&rows), [10, 20, 30]);
        assert!(matches!(placed, Placed::Whole(..)));
        // Two rows: the third position was never written, and is left out.
        let (rows, placed) = place(&[31, 11]);
        assert_eq!(keys(&rows), [11, 31]);
        assert!(matches!(placed, Placed::Partly { .. }));
        let (rows, placed) = place(&[]);
        assert!(rows.is_empty());
        assert!(matches!(placed, Placed::Partly { .. }));
        // Four: the one past the count follows the placed ones.
        let (rows, placed) = place(&[30, 10, 20, 5]);
        assert_eq!(keys(&rows), [10, 20, 30, 5]);
        assert!(matches!(placed, Placed::Partly { .. }));
    }

    fn entries(indices: &[usize]) -> Bits {
        let mut entries = Bits::default();
        for &index in indices {
            entries.insert(index);
        }
        entries
    }

    /// A read of `read` (entry, key) through `order`, as a table read
    /// goes: placed, then sorted; the keys in order, and whether the
    /// placement was kept.
    fn read_through(order: &mut FamilyOrder, read: &[(usize, u32)]) -> (Vec<u32>, bool) {
        let to = std::mem::take(&mut order.to);
        let held = std::mem::take(&mut order.held);
        let mut rows = Vec::with_capacity(read.len().max(to.len()));
        let mut now = Bits::default();
        let placed = match Placing::by(to, held) {
            Some(mut placing) => {
                for &(entry, key) in read {
                    now.insert(entry);
                    placing.put(&mut rows, Some(entry), row(key));
                }
                placing.finish(&mut rows)
            }
            None => {
                for &(entry, key) in read {
                    now.insert(entry);
                    rows.push(row(key));
                }
                Placed::Unplaced
            }
        };
        let whole = matches!(placed, Placed::Whole(..));
        sort_from_tables(&mut rows, placed, now, order);
        (keys(&rows), whole)
    }

    #[test]
    fn sources_that_come_and_go_misplace_no_other() {
        // 64 entries of 200, a source each.
        let first: Vec<(usize, u32)> = (0..64).map(|n| (n * 3, (n as u32 * 37) % 101)).collect();
        let mut order = FamilyOrder::default();
        let sorted = |read: &[(usize, u32)]| {
            let mut keys: Vec<u32> = read.iter().map(|&(_, key)| key).collect();
            keys.sort_unstable();
            keys
        };
        // The first read learns the order; the next lands whole.
        assert_eq!(read_through(&mut order, &first), (sorted(&first), false));
        assert_eq!(read_through(&mut order, &first), (sorted(&first), true));
        // Entry 30 retired; entries 1 and 199 claimed; entry 60 holds
        // another source: every row sorted, the others where they were.
        let mut churned: Vec<(usize, u32)> = first
            .iter()
            .filter(|&&(entry, _)| entry != 30)
            .map(|&(entry, key)| (entry, if entry == 60 { 1_000 } else { key }))
            .collect();
        churned.push((1, 500));
        churned.push((199, 0));
        churned.sort_unstable();
        assert_eq!(
            read_through(&mut order, &churned),
            (sorted(&churned), false)
        );
        assert!(!order.to.is_empty(), "the order is kept");
        // The next read of the same sources lands whole, in order.
        assert_eq!(read_through(&mut order, &churned), (sorted(&churned), true));
    }

    proptest::proptest! {
        /// A few sources come, go or change entries between reads: each
        /// read is in order, the order is kept through them, and a read
        /// of the same sources again lands whole.
        #[test]
        fn a_few_changes_keep_the_order(
            first in proptest::collection::btree_map(0usize..400, 0u32..5_000, 1..200),
            changes in proptest::collection::vec((0usize..420, proptest::option::of(0u32..5_000)), 0..12),
        ) {
            let sorted = |read: &[(usize, u32)]| {
                let mut keys: Vec<u32> = read.iter().map(|&(_, key)| key).collect();
                keys.sort_unstable();
                keys
            };
            let first: Vec<(usize, u32)> = first.into_iter().collect();
            let mut order = FamilyOrder::default();
            read_through(&mut order, &first);
            read_through(&mut order, &first);
            // An entry emptied (None) or holding another source.
            let mut now: std::collections::BTreeMap<usize, u32> = first.iter().copied().collect();
            for (entry, key) in changes {
                match key {
                    Some(key) => now.insert(entry, key),
                    None => now.remove(&entry),
                };
            }
            let now: Vec<(usize, u32)> = now.into_iter().collect();
            proptest::prop_assert_eq!(read_through(&mut order, &now).0, sorted(&now));
            let (keys, whole) = read_through(&mut order, &now);
            proptest::prop_assert_eq!(keys, sorted(&now));
            proptest::prop_assert!(whole || now.is_empty(), "the order was kept");
        }
    }

    #[test]
    fn sources_that_mostly_changed_are_sorted_whole() {
        let first: Vec<(usize, u32)> = (0..1_000).map(|n| (n, n as u32 * 2)).collect();
        let mut order = FamilyOrder::default();
        read_through(&mut order, &first);
        read_through(&mut order, &first);
        // Every entry holds another source: sorted, no order kept.
        let other: Vec<(usize, u32)> = (0..1_000).map(|n| (n, 5_000 - n as u32 * 3)).collect();
        let (keys, whole) = read_through(&mut order, &other);
        assert!(whole, "every position was written");
        assert!(keys.windows(2).all(|pair| pair[0] <= pair[1]));
        assert!(order.to.is_empty());
    }

    #[test]
    fn entries_find_the_next_from_anywhere() {
        let set = entries(&[0, 1, 63, 64, 65, 127, 128, 300]);
        let naive = |from: usize| {
            [0, 1, 63, 64, 65, 127, 128, 300]
                .into_iter()
                .find(|&e| e >= from)
        };
        for from in 0..400 {
            assert_eq!(set.next_from(from), naive(from), "from {from}");
        }
        assert_eq!(Bits::default().next_from(0), None);
    }

    #[test]
    fn only_a_permutation_makes_a_placement() {
        assert!(Placement::inverse_of(&[2, 0, 1]).is_some());
        assert!(Placement::inverse_of(&[0, 0, 1]).is_none());
        assert!(Placement::inverse_of(&[0, 3, 1]).is_none());
    }
}
