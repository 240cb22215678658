//! The order a read's rows sorted into, kept for the next read: the tables
//! are walked in the same order every read and hold the same sources from
//! one read to the next but for the few that come and go, so a read that
//! knows where each row went last time writes each row straight to its
//! place in address order as it is read, with no sort and no second pass
//! over a million rows.

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
    /// Rows read from the tables at the last read.
    pub(super) rows: usize,
}

/// For each row in the order the tables were read, its position in
/// address order: each of `0..len` exactly once, which [`sort_learning`],
/// its one maker, checks (tests make them with `inverse_of`, which checks
/// too).
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
    /// Rows placed so far: the next one goes to `to[placed]`.
    placed: usize,
    /// Rows past the last read's count, in table order.
    overflow: Vec<Row<K>>,
}

/// How the rows of a family were placed.
#[derive(Debug)]
pub(super) enum Placed {
    /// Every position written once, nothing left over: in address order
    /// if no source changed entries since the last read.
    Whole(Placement),
    /// The rows were not the last read's (fewer, or more): placed as far
    /// as they went, to be sorted.
    Partly,
    /// No order was known: in table order.
    Unplaced,
}

impl<K: Key> Placing<K> {
    /// Places rows by `to` (`None` when it is empty: no order known); the
    /// rows they go into must have room for `to.len()` of them.
    pub(super) fn by(to: Placement) -> Option<Self> {
        (!to.is_empty()).then(|| Placing {
            to,
            placed: 0,
            overflow: Vec::new(),
        })
    }

    /// Writes the next row read from the tables to its place.
    pub(super) fn put(&mut self, rows: &mut Vec<Row<K>>, row: Row<K>) {
        match self.to.0.get(self.placed) {
            Some(&at) => {
                // In bounds: the rows have room for `to.len()`, and
                // nothing is pushed while placing (an index past the room
                // would panic, never write out of bounds).
                let spare = rows.spare_capacity_mut();
                if let Some(&ahead) = self.to.0.get(self.placed + AHEAD) {
                    prefetch_for_write(&spare[ahead as usize]);
                }
                spare[at as usize].write(row);
                self.placed += 1;
            }
            None => self.overflow.push(row),
        }
    }

    /// Ends placing: `rows` holds every row placed (and any past the
    /// count, after them).
    pub(super) fn finish(self, rows: &mut Vec<Row<K>>) -> Placed {
        let len = self.to.len();
        if self.placed == len {
            // SAFETY: `to` is a permutation of `0..len` (`Placement`'s
            // invariant) and `put` wrote a row at each of its values.
            unsafe { rows.set_len(len) };
            if self.overflow.is_empty() {
                return Placed::Whole(self.to);
            }
            rows.extend_from_slice(&self.overflow);
            return Placed::Partly;
        }
        // Fewer rows than last time: the positions written are
        // `to[..placed]`; they close up, in position order.
        let mut written = vec![0u64; len.div_ceil(64)];
        for &at in &self.to.0[..self.placed] {
            written[at as usize / 64] |= 1 << (at % 64);
        }
        let spare = rows.spare_capacity_mut();
        let mut kept = 0;
        for at in 0..len {
            if written[at / 64] & (1 << (at % 64)) != 0 {
                // SAFETY: `put` wrote a row at `at` (it is in `to[..placed]`).
                let row = unsafe { spare[at].assume_init_read() };
                spare[kept].write(row);
                kept += 1;
            }
        }
        // SAFETY: the first `kept` positions were each written just above.
        unsafe { rows.set_len(kept) };
        Placed::Partly
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

/// Sorts `rows`, read from the tables and `placed` as they were, by key,
/// and keeps in `order` where they went when that is cheap to know: when
/// the last order sorted these rows, or when as many rows were read as
/// the last time (the sources have settled) and none is known. Otherwise
/// (a flood brings new sources every read) the rows are sorted in place
/// and no order is kept, which costs no more than a plain sort. Returns
/// whether the rows are known to hold each key once (true only when the
/// last read's order placed them, which is checked in the same pass that
/// checks their order), so that the caller need not look for a source
/// read twice.
pub(super) fn sort_from_tables<K: Key>(
    rows: &mut [Row<K>],
    placed: Placed,
    order: &mut FamilyOrder,
) -> bool {
    let settled = order.rows == rows.len();
    order.rows = rows.len();
    match placed {
        Placed::Whole(to) => {
            let landed = landed(rows);
            if matches!(landed, Landed::Unsorted) {
                // Sources changed entries since the last read.
                rows.sort_unstable_by_key(|row| row.key);
                return false;
            }
            order.to = to;
            return matches!(landed, Landed::Distinct);
        }
        // Other rows than last time: sorted whole.
        Placed::Partly => {
            rows.sort_unstable_by_key(|row| row.key);
            return false;
        }
        Placed::Unplaced => {}
    }
    if settled {
        if let Some(to) = sort_learning(rows) {
            order.to = to;
        }
        return false;
    }
    rows.sort_unstable_by_key(|row| row.key);
    false
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
        let mut placing = Placing::by(to).expect("an order");
        for &key in read {
            placing.put(&mut rows, row(key));
        }
        let placed = placing.finish(&mut rows);
        (rows, placed)
    }

    #[test]
    fn rows_go_where_the_last_read_put_them_and_fewer_or_more_close_up() {
        let (rows, placed) = place(&[30, 10, 20]);
        assert_eq!(keys(&rows), [10, 20, 30]);
        assert!(matches!(placed, Placed::Whole(_)));
        // Two rows: the third position was never written, and is left out.
        let (rows, placed) = place(&[31, 11]);
        assert_eq!(keys(&rows), [11, 31]);
        assert!(matches!(placed, Placed::Partly));
        let (rows, placed) = place(&[]);
        assert!(rows.is_empty());
        assert!(matches!(placed, Placed::Partly));
        // Four: the one past the count follows the placed ones.
        let (rows, placed) = place(&[30, 10, 20, 5]);
        assert_eq!(keys(&rows), [10, 20, 30, 5]);
        assert!(matches!(placed, Placed::Partly));
    }

    #[test]
    fn only_a_permutation_makes_a_placement() {
        assert!(Placement::inverse_of(&[2, 0, 1]).is_some());
        assert!(Placement::inverse_of(&[0, 0, 1]).is_none());
        assert!(Placement::inverse_of(&[0, 3, 1]).is_none());
    }
}
