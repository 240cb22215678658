//! What a read remembers of each entry that holds a source: the low 32
//! bits of its packets, to tell at the next read whether it moved (idle
//! entries are retired first when a table fills up). Kept only for the
//! entries that hold a source, in index order, an entry's value at its
//! rank among them: a table planned for a million sources has 2,250,000
//! entries a family, and four bytes for each of them cost 18 MB resident
//! and a cache miss per entry read in a sparse table, where a read walks
//! this list in step with the table.

/// The entries that held a source at the last read, and their packets'
/// low 32 bits.
#[derive(Debug)]
pub(super) struct Seen {
    /// Per entry, a bit set when it held a source at the last read.
    held: Vec<u64>,
    /// Per entry held, in index order: the low 32 bits of its packets.
    packets: Vec<u32>,
    /// The read being taken in: the next `Seen`, and where the last one's
    /// ranks have got to.
    next: Option<Next>,
    /// The vectors of the read before the last, reused by the next read
    /// (fresh ones cost a page fault and a cleared page every 4 KiB).
    spare: Option<(Vec<u64>, Vec<u32>)>,
}

/// A read in progress: the entries taken in so far, in index order.
#[derive(Debug)]
struct Next {
    held: Vec<u64>,
    packets: Vec<u32>,
    ranks: Ranks,
}

/// Ranks in a held bitmap asked for in ascending order of entry: a cursor
/// that passes each held entry once, counting it, so that a read costs a
/// step per entry held and per word of the bitmap (the portable x86-64
/// target has no population count instruction; counting a word's bits
/// for every entry cost more than the whole lookup it replaced).
#[derive(Clone, Copy, Debug, Default)]
struct Ranks {
    /// The word the cursor is in (valid once `loaded`).
    word: usize,
    /// Its held entries not passed yet.
    bits: u64,
    loaded: bool,
    /// Held entries passed.
    passed: usize,
}

impl Ranks {
    /// The rank of `index` among `held`'s entries (its place in the
    /// values) if it is held. `index` must not be below the last one asked.
    fn of(&mut self, held: &[u64], index: usize) -> Option<usize> {
        let (word, bit) = (index / 64, index % 64);
        if word >= held.len() {
            return None;
        }
        if !self.loaded {
            (self.word, self.bits, self.loaded) = (0, held[0], true);
        }
        while self.word < word {
            while self.bits != 0 {
                self.bits &= self.bits - 1;
                self.passed += 1;
            }
            self.word += 1;
            self.bits = held[self.word];
        }
        // Pass the held entries below `index` in its word, one by one.
        while self.bits != 0 && (self.bits.trailing_zeros() as usize) < bit {
            self.bits &= self.bits - 1;
            self.passed += 1;
        }
        (self.bits & (1 << bit) != 0).then_some(self.passed)
    }
}

/// Calls `each` with the entries whose bit is set in `bits`, in order, a
/// word at a time.
fn each_set(bits: &[u64], mut each: impl FnMut(usize)) {
    for (word, &set) in bits.iter().enumerate() {
        let mut set = set;
        while set != 0 {
            each(word * 64 + set.trailing_zeros() as usize);
            set &= set - 1;
        }
    }
}

impl Seen {
    /// Nothing held, for a table of `len` entries.
    pub(super) fn new(len: usize) -> Self {
        Self {
            held: vec![0; len.div_ceil(64)],
            packets: Vec::new(),
            next: None,
            spare: None,
        }
    }

    /// Begins taking in a read (a read that failed part way is dropped).
    pub(super) fn begin(&mut self) {
        let (held, packets) = match self.spare.take() {
            Some((mut held, mut packets)) => {
                held.fill(0);
                packets.clear();
                (held, packets)
            }
            None => (
                vec![0; self.held.len()],
                Vec::with_capacity(self.packets.len() + self.packets.len() / 8),
            ),
        };
        self.next = Some(Next {
            held,
            packets,
            ranks: Ranks::default(),
        });
    }

    /// Takes in entry `index`, which holds a source with `low` as its
    /// packets' low 32 bits; returns what it had at the last read, if it
    /// held a source then. Entries are taken in in ascending order.
    #[inline]
    pub(super) fn take_in(&mut self, index: usize, low: u32) -> Option<u32> {
        let next = self.next.as_mut()?;
        let word = next.held.get_mut(index / 64)?;
        *word |= 1 << (index % 64);
        next.packets.push(low);
        let at = next.ranks.of(&self.held, index)?;
        self.packets.get(at).copied()
    }

    /// Ends the read: what it took in is what the next one compares with.
    pub(super) fn finish(&mut self) {
        if let Some(next) = self.next.take() {
            let held = std::mem::replace(&mut self.held, next.held);
            let packets = std::mem::replace(&mut self.packets, next.packets);
            self.spare = Some((held, packets));
        }
    }

    /// The entries in `range` that held a source at the last read.
    #[cfg(test)]
    fn held_in(&self, range: std::ops::Range<usize>) -> Vec<usize> {
        let mut held = Vec::new();
        each_set(&self.held, |index| {
            if range.contains(&index) {
                held.push(index);
            }
        });
        held
    }

    /// Calls `each` with every entry set in `marked` (a bitmap of the
    /// table's entries) that held a source at the last read, and its
    /// packets' low 32 bits then.
    pub(super) fn each_marked(&self, marked: &[u64], mut each: impl FnMut(usize, u32)) {
        let mut ranks = Ranks::default();
        each_set(marked, |index| {
            if let Some(at) = ranks.of(&self.held, index)
                && let Some(&packets) = self.packets.get(at)
            {
                each(index, packets);
            }
        });
    }

    /// Forgets the packets of `entries` (ascending): the next source such
    /// an entry holds starts from nothing seen.
    pub(super) fn zero(&mut self, entries: &[usize]) {
        let mut ranks = Ranks::default();
        for &index in entries {
            if let Some(at) = ranks.of(&self.held, index)
                && let Some(packets) = self.packets.get_mut(at)
            {
                *packets = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `entries` (index, low packets) into `seen`, returning what
    /// each had at the last read.
    fn read(seen: &mut Seen, entries: &[(usize, u32)]) -> Vec<Option<u32>> {
        seen.begin();
        let last = entries
            .iter()
            .map(|&(index, low)| seen.take_in(index, low))
            .collect();
        seen.finish();
        last
    }

    #[test]
    fn each_entry_finds_its_own_last_packets_as_entries_come_and_go() {
        let mut seen = Seen::new(300);
        assert_eq!(read(&mut seen, &[(3, 7), (64, 9), (200, 1)]), [None; 3]);
        // 64 went, 65 and 299 came; 3 and 200 moved on.
        let last = read(&mut seen, &[(3, 8), (65, 2), (200, 1), (299, 4)]);
        assert_eq!(last, [Some(7), None, Some(1), None]);
        assert_eq!(seen.held_in(0..300), [3, 65, 200, 299]);
        assert_eq!(seen.held_in(64..200), [65]);
        let mut packets = Vec::new();
        let marked = [1 << 3, 1, 0, 0, 1 << (299 - 256)];
        seen.each_marked(&marked, |index, low| packets.push((index, low)));
        assert_eq!(packets, [(3, 8), (299, 4)]);
        seen.zero(&[65, 299]);
        let last = read(&mut seen, &[(3, 8), (65, 2), (299, 4)]);
        assert_eq!(last, [Some(8), Some(0), Some(0)]);
    }

    #[test]
    fn a_read_that_failed_part_way_leaves_the_last_one() {
        let mut seen = Seen::new(128);
        read(&mut seen, &[(1, 5), (100, 6)]);
        seen.begin();
        assert_eq!(seen.take_in(1, 9), Some(5));
        // No finish: the next read compares with the last whole one.
        assert_eq!(read(&mut seen, &[(1, 9), (100, 6)]), [Some(5), Some(6)]);
        // Outside the table: nothing taken in, nothing found.
        seen.begin();
        assert_eq!(seen.take_in(128, 1), None);
    }

    proptest::proptest! {
        #[test]
        fn ranks_match_a_plain_array(
            reads in proptest::collection::vec(
                proptest::collection::btree_map(0usize..1000, 1u32..5, 0..200),
                1..5,
            ),
        ) {
            let mut seen = Seen::new(1000);
            let mut plain = vec![None; 1000];
            for read in reads {
                seen.begin();
                let mut next = vec![None; 1000];
                for (&index, &low) in &read {
                    proptest::prop_assert_eq!(seen.take_in(index, low), plain[index]);
                    next[index] = Some(low);
                }
                seen.finish();
                plain = next;
                let held: Vec<usize> = (0..1000).filter(|&i| plain[i].is_some()).collect();
                proptest::prop_assert_eq!(seen.held_in(0..1000), held);
            }
        }
    }
}
