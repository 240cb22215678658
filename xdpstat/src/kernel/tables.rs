//! The datapath's source tables seen from user space: read them into a
//! [`SourceTableBuilder`], and retire idle entries when a table fills up so that
//! new senders find room.
//!
//! A table is an open-addressing hash table in a memory-mappable BPF
//! array. A read has the kernel copy the entries that hold a source into a
//! small array that stays mapped (`compacted`), and walks those; without
//! that program it maps the table 2 MiB at a time and walks it. Either
//! way, pages no entry ever used are skipped.
//! Retiring is exact: the entry is marked draining (probes pass it by), a
//! grace period ensures no program still adds to it, then it is cleared for
//! reuse; its final counts, read then, are reported as unattributed.

use std::{
    collections::HashMap,
    marker::PhantomData,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Range,
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    sync::atomic::Ordering,
};

use aya::{
    Pod,
    maps::{Array, Map, MapData},
    programs::SchedClassifier,
};
use xdpstat_common::{
    Counter, TABLE_PAGE, V4Entry, V6Entry,
    compact::{self, Compacted},
    entry_state,
    kinds::source,
    mix, page_flag,
    rules::{Buckets, SourceRow},
};

use ipnet::IpNet;
use seen::Seen;

use crate::{
    counts::prefixes::{PrefixLens, Prefixes},
    counts::sources::{SortOrder, SourceProtocols, SourceTable, SourceTableBuilder, Tally},
    error::{XdpstatError, one_line},
    kernel::bpf_sys::Grace,
    kernel::compacted::Copies,
    kernel::mapped::MappedArray,
    kernel::meta::Record,
};

mod seen;

/// Any constant: it only has to scatter positions.
const TIE_SALT: u64 = 0x7ab1_e5ee_d000_0001;

/// How the tables are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMethod {
    /// The kernel copies the entries that hold a source out of the tables
    /// (`compacted`), where the program that does it is loaded.
    Copied,
    /// Walk the memory-mapped tables, 2 MiB at a time.
    Mapped,
    /// One BPF_MAP_LOOKUP_ELEM system call per table entry, the way most
    /// tools read BPF maps; kept for the benchmarks.
    PerKey,
}

/// One read of both tables.
pub struct SourcesRead {
    pub sources: SourceTableBuilder,
    /// The sources a rule acted on (or would have), with their verdicts
    /// but `passed`, from the rows beside their entries.
    pub ruled: Vec<(IpAddr, Acted)>,
    /// Everything the retired IPv4 and IPv6 entries ever counted.
    pub retired_v4: Counter,
    pub retired_v6: Counter,
}

/// An entry type of a table, read and written one 8-byte word at a time
/// (see `mapped.rs`): the first word holds the state (bytes 0 to 3) and
/// the remembered rule (bytes 4 to 7), in both families.
trait TableEntry: Pod {
    /// Offsets of the words that hold the address.
    const ADDRESS_WORDS: &'static [usize];
    /// Offset of the packet counter; the byte counter follows it.
    const PACKETS: usize;
    /// Offset of the first protocol's byte; the mixed flag follows it, in
    /// the same word.
    const PROTOCOL: usize;
    /// The address from its words, in memory order.
    fn address(words: &[u64]) -> IpAddr;
    /// An entry read whole (by a system call, for the per-key read).
    fn decode(&self) -> EntryRead;
}

/// Offset of the word with the state and the remembered rule.
const STATE_WORD: usize = 0;
/// The remembered rule's bits in that word as the host loads it.
const RULE_BITS: u64 = u64::from_ne_bytes([0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);

/// The state in a loaded first word.
fn state_of(word: u64) -> u32 {
    let bytes = word.to_ne_bytes();
    u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// The first word for `state`, with no rule remembered.
fn state_word(state: u32) -> u64 {
    let [a, b, c, d] = state.to_ne_bytes();
    u64::from_ne_bytes([a, b, c, d, 0, 0, 0, 0])
}

impl TableEntry for V4Entry {
    const ADDRESS_WORDS: &'static [usize] = &[8];
    const PACKETS: usize = core::mem::offset_of!(V4Entry, counter);
    const PROTOCOL: usize = core::mem::offset_of!(V4Entry, protocol);
    fn address(words: &[u64]) -> IpAddr {
        let bytes = words[0].to_ne_bytes();
        Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()
    }
    fn decode(&self) -> EntryRead {
        EntryRead {
            state: self.state,
            address: Ipv4Addr::from(self.address).into(),
            counter: self.counter,
            protocol: self.protocol,
            mixed: self.mixed != 0,
        }
    }
}

impl TableEntry for V6Entry {
    const ADDRESS_WORDS: &'static [usize] = &[8, 16];
    const PACKETS: usize = core::mem::offset_of!(V6Entry, counter);
    const PROTOCOL: usize = core::mem::offset_of!(V6Entry, protocol);
    fn address(words: &[u64]) -> IpAddr {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&words[0].to_ne_bytes());
        bytes[8..].copy_from_slice(&words[1].to_ne_bytes());
        Ipv6Addr::from(bytes).into()
    }
    fn decode(&self) -> EntryRead {
        EntryRead {
            state: self.state,
            address: Ipv6Addr::from(self.address).into(),
            counter: self.counter,
            protocol: self.protocol,
            mixed: self.mixed != 0,
        }
    }
}

/// What one read of an entry found.
struct EntryRead {
    state: u32,
    address: IpAddr,
    counter: Counter,
    /// The protocol of the source's first packet.
    protocol: u8,
    /// Whether packets of other protocols were counted (in its row of
    /// the mixed array).
    mixed: bool,
}

impl EntryRead {
    /// Its counts, with its row of the mixed array (`None`: not read, or
    /// not mixed): the first protocol has the packets the others do not.
    fn tally(&self, row: Option<Mixed>) -> Tally {
        let mut packets = row.unwrap_or_default();
        let first = usize::from(self.protocol).min(source::OTHER);
        packets[first] = 0;
        let others = packets.iter().fold(0u64, |sum, &n| sum.saturating_add(n));
        packets[first] = self.counter.packets.saturating_sub(others);
        Tally {
            counter: self.counter,
            protocols: SourceProtocols(packets),
        }
    }
}

/// Reads entry `at` of `window`. The state is loaded first, with acquire
/// ordering: the datapath writes an entry's address before it marks the
/// entry READY (x86 keeps stores in order; on arm64 the datapath's plain
/// stores carry no release, which BPF only has from Linux 6.15, so a read
/// racing a claim by nanoseconds may see the entry with no packets yet).
/// Counters are loaded after the address; an add racing the read shows up
/// in the next one. The mixed flag (and then the entry's row of the mixed
/// array) is loaded after the counters, with acquire ordering, and the
/// datapath writes them before it adds to the counters: so the other
/// protocols of a read hold at least what its counter does of them, and
/// the first protocol's share, the rest, is never read ahead of the truth.
fn load_entry<E: TableEntry>(window: &MappedArray<E>, at: usize) -> EntryRead {
    let state = state_of(window.load(at, STATE_WORD, Ordering::Acquire));
    load_fields::<E, E>(window, at, state)
}

/// Copy `at` of a table's entries the kernel copied (see `compacted`): the
/// entry's index, and the entry, READY when it was copied. The words are
/// where the entry has them; the kernel read the counters before the word
/// with the mixed flag, as [`load_entry`] does.
fn load_copy<E: TableEntry>(copies: &MappedArray<Compacted>, at: usize) -> (usize, EntryRead) {
    let index = copies.load(at, 0, Ordering::Relaxed) as usize;
    (
        index,
        load_fields::<E, Compacted>(copies, at, entry_state::READY),
    )
}

/// An entry's fields, in the words of value `at` of `array` where an entry
/// of type `E` has them (the entry itself, or the kernel's copy of it),
/// loaded in the order [`load_entry`] says.
fn load_fields<E: TableEntry, T>(array: &MappedArray<T>, at: usize, state: u32) -> EntryRead {
    let mut words = [0u64; 2];
    for (word, &offset) in words.iter_mut().zip(E::ADDRESS_WORDS) {
        *word = array.load(at, offset, Ordering::Relaxed);
    }
    let counter = Counter {
        packets: array.load(at, E::PACKETS, Ordering::Relaxed),
        bytes: array.load(at, E::PACKETS + 8, Ordering::Relaxed),
    };
    let word = array
        .load(at, E::PROTOCOL & !7, Ordering::Acquire)
        .to_ne_bytes();
    EntryRead {
        state,
        address: E::address(&words[..E::ADDRESS_WORDS.len()]),
        counter,
        protocol: word[E::PROTOCOL % 8],
        mixed: word[E::PROTOCOL % 8 + 1] != 0,
    }
}

/// Row `at` of a window of the mixed array.
fn load_mixed(window: &MappedArray<Mixed>, at: usize) -> Mixed {
    std::array::from_fn(|i| window.load(at, 8 * i, Ordering::Relaxed))
}

/// A row of the mixed array.
type Mixed = [u64; source::PROTOCOLS];

pub use xdpstat_common::rules::Acted;

/// Words in a [`SourceRow`], and the offset of its acted counters (after
/// the two buckets).
const ROW_WORDS: usize = size_of::<SourceRow>() / 8;
const ROW_ACTED: usize = core::mem::offset_of!(SourceRow, acted);

/// The verdicts in row `at` of `window`.
fn load_acted(window: &MappedArray<SourceRow>, at: usize) -> Acted {
    let mut acted = Acted::default();
    for (index, counter) in acted.iter_mut().enumerate() {
        let offset = ROW_ACTED + index * size_of::<Counter>();
        counter.packets = window.load(at, offset, Ordering::Relaxed);
        counter.bytes = window.load(at, offset + 8, Ordering::Relaxed);
    }
    acted
}

/// Gaps between the pages a table used that the kernel walks over rather
/// than making another call (see [`Table::used_ranges`]): it passes an
/// empty entry by in about 5 ns, and a call costs a few microseconds.
const GAP_WALKED: usize = 512;

/// The windows of the arrays beside a table that a read mapped last (the
/// mixed rows, the rules' rows), each with its first entry.
#[derive(Default)]
struct Beside {
    mixed: Option<(usize, MappedArray<Mixed>)>,
    rows: Option<(usize, MappedArray<SourceRow>)>,
}

impl Beside {
    /// The window from entry `first` on, mapped by `map` unless `slot`
    /// holds it already.
    fn window<T>(
        slot: &mut Option<(usize, MappedArray<T>)>,
        first: usize,
        map: impl FnOnce() -> std::io::Result<MappedArray<T>>,
    ) -> Result<&MappedArray<T>, String> {
        if slot.as_ref().is_none_or(|(at, _)| *at != first) {
            *slot = Some((first, map().map_err(|e| format!("mapping: {e}"))?));
        }
        Ok(&slot.as_ref().expect("mapped above").1)
    }
}

/// Bytes of a table mapped at a time. A table is read (and retired
/// entries written) one window at a time, each unmapped before the next:
/// a mapped page counts as xdpstat's resident memory, and a table for a
/// million sources is tens of megabytes.
const WINDOW_BYTES: usize = 2 << 20;

/// One family's table and what xdpstat remembers about it.
struct Table<E> {
    fd: OwnedFd,
    len: usize,
    /// The rows beside the entries (see `xdpstat_common::rules`), when the
    /// datapath has a row per entry.
    rows: Option<OwnedFd>,
    /// The buckets beside the entries, when there are rows.
    buckets: Option<OwnedFd>,
    /// The mixed array beside the entries (`None`: the protocols of a
    /// source are not wanted, as by `xdpstat status`).
    mixed: Option<OwnedFd>,
    /// The page flags, small enough to stay mapped.
    pages: MappedArray<u64>,
    /// The entries that held a source at the last read, and their packets
    /// then.
    seen: Seen,
    /// Per entry, a bit set when its packets did not move between the
    /// last two reads (idle). Only an entry a read took in is set, and a
    /// read begins by clearing the bits (see [`Table::clear_idle`]).
    idle: Vec<u64>,
    /// Entries counting a source at the last read.
    in_use: usize,
    _entries: PhantomData<E>,
}

impl<E: TableEntry> Table<E> {
    fn open(fds: &TableFds<'_>, len: usize) -> std::io::Result<Self> {
        let (entries, pages) = (fds.entries, fds.pages);
        Ok(Self {
            fd: entries.try_clone_to_owned()?,
            len,
            rows: match fds.rows {
                Some(rows) => Some(rows.try_clone_to_owned()?),
                None => None,
            },
            buckets: match fds.buckets {
                Some(buckets) => Some(buckets.try_clone_to_owned()?),
                None => None,
            },
            mixed: match fds.mixed {
                Some(mixed) => Some(mixed.try_clone_to_owned()?),
                None => None,
            },
            pages: MappedArray::map(pages, pages_for::<E>(len))?,
            seen: Seen::new(len),
            idle: vec![0; len.div_ceil(64)],
            in_use: 0,
            _entries: PhantomData,
        })
    }

    const PER_PAGE: usize = TABLE_PAGE / size_of::<E>();
    const PER_WINDOW: usize = WINDOW_BYTES / size_of::<E>();

    /// The entries `[first, first + PER_WINDOW)` (or to the end), mapped.
    fn window(&self, first: usize) -> std::io::Result<MappedArray<E>> {
        self.window_of(self.fd.as_fd(), first)
    }

    /// The same window of an array beside the table (the table, its rows).
    fn window_of<T>(&self, array: BorrowedFd<'_>, first: usize) -> std::io::Result<MappedArray<T>> {
        MappedArray::map_range(array, first, Self::PER_WINDOW.min(self.len - first))
    }

    fn set_idle(&mut self, index: usize, idle: bool) {
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        if idle {
            self.idle[word] |= bit;
        } else {
            self.idle[word] &= !bit;
        }
    }

    /// Clears every idle bit before a read sets those of its entries: a
    /// word at a time, and only the words that have one set, so that a
    /// read of a sparse table leaves the bits' other pages alone. (Clearing
    /// the bit of each entry that stopped holding a source, found between
    /// the entries a read takes in, cost 2.7 ms of a million-source read.)
    fn clear_idle(&mut self) {
        for word in &mut self.idle {
            if *word != 0 {
                *word = 0;
            }
        }
    }

    /// Begins a read: nothing in use, nothing idle, nothing seen yet.
    fn begin_read(&mut self) {
        self.in_use = 0;
        self.clear_idle();
        self.seen.begin();
    }

    /// Adds every entry that holds a source to `sources`.
    fn read(
        &mut self,
        sources: &mut SourceTableBuilder,
        ruled: &mut Vec<(IpAddr, Acted)>,
        per_key: Option<&Array<&MapData, E>>,
    ) -> Result<(), String> {
        self.begin_read();
        for first in (0..self.len).step_by(Self::PER_WINDOW) {
            let last = (first + Self::PER_WINDOW).min(self.len);
            let flags = &self.pages;
            let used = |page: usize| per_key.is_some() || flags.get(page) != 0;
            let pages = first / Self::PER_PAGE..last.div_ceil(Self::PER_PAGE);
            let used_pages: Vec<usize> = pages.filter(|&page| used(page)).collect();
            if used_pages.is_empty() {
                // Never used: nothing to read, nothing remembered.
                continue;
            }
            let window = match per_key {
                Some(_) => None,
                None => Some(self.window(first).map_err(|e| format!("mapping: {e}"))?),
            };
            let mut beside = Beside::default();
            for page in used_pages {
                // Rows only where a rule counted a verdict (a per-key read,
                // kept for comparison, reads them all).
                let flag = self.pages.get(page).to_ne_bytes();
                let page_rows =
                    self.rows.is_some() && (per_key.is_some() || flag[page_flag::ROWS] != 0);
                let entries = page * Self::PER_PAGE..((page + 1) * Self::PER_PAGE).min(last);
                for index in entries {
                    let entry = match (per_key, &window) {
                        (Some(array), _) => {
                            E::decode(&array.get(&(index as u32), 0).map_err(|e| one_line(&e))?)
                        }
                        (None, Some(window)) => {
                            // Most entries of a table hold no source: only
                            // their state word is loaded.
                            let word = window.load(index - first, STATE_WORD, Ordering::Acquire);
                            if state_of(word) != entry_state::READY {
                                continue;
                            }
                            load_entry(window, index - first)
                        }
                        (None, None) => unreachable!("mapped above"),
                    };
                    self.take_in(index, &entry, page_rows, &mut beside, sources, ruled)?;
                }
            }
        }
        self.seen.finish();
        Ok(())
    }

    /// Entries that may hold a source, as ranges: the pages the table ever
    /// used, with gaps of fewer than [`GAP_WALKED`] entries walked over.
    fn used_ranges(&self) -> Vec<Range<usize>> {
        let mut ranges: Vec<Range<usize>> = Vec::new();
        for page in 0..pages_for::<E>(self.len) {
            if self.pages.get(page) == 0 {
                continue;
            }
            let entries = page * Self::PER_PAGE..((page + 1) * Self::PER_PAGE).min(self.len);
            match ranges.last_mut() {
                Some(last) if entries.start - last.end < GAP_WALKED => last.end = entries.end,
                _ => ranges.push(entries),
            }
        }
        ranges
    }

    /// Adds every entry that holds a source to `sources`, from the copies
    /// the kernel makes of them (`compacted`).
    fn read_copies(
        &mut self,
        compaction: &Compaction<'_>,
        family: u64,
        sources: &mut SourceTableBuilder,
        ruled: &mut Vec<(IpAddr, Acted)>,
    ) -> Result<(), String> {
        self.begin_read();
        // Entries before this one were taken in or passed over.
        let mut done = 0;
        let mut beside = Beside::default();
        for range in self.used_ranges() {
            compaction
                .copies
                .each_ready(compaction.program, family, range, |copies, at| {
                    let (index, entry) = load_copy::<E>(copies, at);
                    if index < done || index >= self.len {
                        return Err(format!("a copy of entry {index} out of order"));
                    }
                    done = index + 1;
                    // Rows only where a rule counted a verdict.
                    let flag = self.pages.get(index / Self::PER_PAGE).to_ne_bytes();
                    let rows = flag[page_flag::ROWS] != 0;
                    self.take_in(index, &entry, rows, &mut beside, sources, ruled)
                })?;
        }
        self.seen.finish();
        Ok(())
    }

    /// Takes in entry `index` as a read found it, with its row of the mixed
    /// array when it is mixed, and, when `rows` asks for them, the
    /// verdicts in its row (both through `beside`, whose windows each read
    /// maps once an entry needs them). Inlined into the read's loop, so
    /// that `entry` stays in registers: passed through the stack, its
    /// protocol and mixed bytes, stored one by one, were loaded as one word
    /// that waited on both stores (6 ms of a million-source read).
    #[inline(always)]
    fn take_in(
        &mut self,
        index: usize,
        entry: &EntryRead,
        rows: bool,
        beside: &mut Beside,
        sources: &mut SourceTableBuilder,
        ruled: &mut Vec<(IpAddr, Acted)>,
    ) -> Result<(), String> {
        let first = index / Self::PER_WINDOW * Self::PER_WINDOW;
        let at = index - first;
        let row = match (&self.mixed, entry.mixed) {
            (Some(fd), true) => {
                let window = Beside::window(&mut beside.mixed, first, || {
                    self.window_of(fd.as_fd(), first)
                })?;
                Some(load_mixed(window, at))
            }
            _ => None,
        };
        self.account(index, entry, row, sources);
        if let Some(fd) = &self.rows
            && rows
            && entry.state == entry_state::READY
        {
            let window = Beside::window(&mut beside.rows, first, || {
                self.window_of(fd.as_fd(), first)
            })?;
            let acted = load_acted(window, at);
            if acted.iter().any(|c| c.packets != 0) {
                ruled.push((entry.address, acted));
            }
        }
        Ok(())
    }

    /// Takes in one entry. An entry that holds a source is in the read even
    /// with no packets yet: its source's first run is still on a CPU.
    /// Inlined with [`Table::take_in`].
    #[inline(always)]
    fn account(
        &mut self,
        index: usize,
        entry: &EntryRead,
        row: Option<Mixed>,
        sources: &mut SourceTableBuilder,
    ) {
        if entry.state != entry_state::READY {
            return;
        }
        self.in_use += 1;
        match row {
            Some(_) => sources.push_entry(index, entry.address, entry.tally(row)),
            // The common case: one protocol, no row to add up.
            None => {
                sources.push_entry_one_protocol(index, entry.address, entry.counter, entry.protocol)
            }
        }
        let low = entry.counter.packets as u32;
        // An entry with no packets has its first run in progress: busy.
        let unchanged = low != 0 && self.seen.take_in(index, low) == Some(low);
        if unchanged {
            self.set_idle(index, true);
        }
    }

    /// Entries a CPU's run will settle into are busy, whatever their
    /// counters say: a source whose packets all sit in one CPU's run sends.
    fn mark_busy(&mut self, entries: &[u32]) {
        for &index in entries {
            if (index as usize) < self.len {
                self.set_idle(index as usize, false);
            }
        }
    }

    /// The `wanted` idle entries with the fewest packets, by position. Ties
    /// (a flood leaves thousands of one-packet entries) are broken by a hash
    /// of the position, so freed entries spread over the whole table and
    /// every source's probe window finds some.
    fn idle(&self, wanted: usize) -> Vec<usize> {
        if wanted == 0 {
            return Vec::new();
        }
        // An idle entry held a source at the last read: it has packets seen.
        let mut idle: Vec<(u32, u64, usize)> = Vec::new();
        self.seen.each_marked(&self.idle, |index, packets| {
            idle.push((packets, mix(index as u64, TIE_SALT), index));
        });
        if idle.len() > wanted {
            idle.select_nth_unstable(wanted);
            idle.truncate(wanted);
        }
        let mut victims: Vec<usize> = idle.into_iter().map(|(_, _, index)| index).collect();
        victims.sort_unstable();
        victims
    }

    /// Applies `write` to each victim (sorted) through windows of the table.
    fn write_each(
        &self,
        victims: &[usize],
        write: impl FnMut(&MappedArray<E>, usize),
    ) -> std::io::Result<()> {
        Self::each_in_windows(victims, |first| self.window(first), write)
    }

    /// Applies `write` to each victim (sorted) in the windows of an array
    /// beside the table (the table itself, or its rows) that `open` maps.
    fn each_in_windows<T>(
        victims: &[usize],
        open: impl Fn(usize) -> std::io::Result<MappedArray<T>>,
        mut write: impl FnMut(&MappedArray<T>, usize),
    ) -> std::io::Result<()> {
        let mut rest = victims;
        while let Some(&index) = rest.first() {
            let first = index / Self::PER_WINDOW * Self::PER_WINDOW;
            let window = open(first)?;
            let inside = rest
                .iter()
                .take_while(|&&i| i < first + Self::PER_WINDOW)
                .count();
            for &index in &rest[..inside] {
                write(&window, index - first);
            }
            rest = &rest[inside..];
        }
        Ok(())
    }

    /// Marks the victims draining: from now on a probe passes them by and
    /// a run that kept one of them looks for another entry.
    fn drain(&self, victims: &[usize]) -> std::io::Result<()> {
        self.write_each(victims, |window, at| {
            // The rule remembered beside the state goes too: nothing
            // looks at a draining entry's rule.
            window.store(
                at,
                STATE_WORD,
                state_word(entry_state::DRAINING),
                Ordering::Relaxed,
            )
        })
    }

    /// After a grace period: each victim's source and final counts (no
    /// program adds to a drained entry once the grace period has passed,
    /// `Grace::wait`).
    /// Also the victims that were mixed, whose rows [`Table::clear`]
    /// clears.
    fn finals(&self, victims: &[usize]) -> std::io::Result<(Finals, Vec<usize>)> {
        let mut entries = Vec::with_capacity(victims.len());
        self.write_each(victims, |window, at| entries.push(load_entry(window, at)))?;
        let (mixed, at): (Vec<usize>, Vec<usize>) = (victims.iter().zip(&entries))
            .enumerate()
            .filter(|(_, (_, entry))| entry.mixed)
            .map(|(at, (&index, _))| (index, at))
            .unzip();
        // The rows of the mixed ones.
        let mut rows = vec![None; victims.len()];
        if let Some(fd) = &self.mixed {
            let mut at = at.into_iter();
            let open = |first| self.window_of(fd.as_fd(), first);
            Self::each_in_windows(&mixed, open, |window: &MappedArray<Mixed>, i| {
                if let Some(slot) = at.next() {
                    rows[slot] = Some(load_mixed(window, i));
                }
            })?;
        }
        let finals = entries
            .iter()
            .zip(rows)
            .map(|(entry, row)| (entry.address, entry.tally(row)))
            .collect();
        Ok((finals, mixed))
    }

    /// Clears the victims for reuse.
    ///
    /// What orders what: the counters and the address are zeroed first and
    /// the state word is released last (a release store): a CPU can only
    /// claim the entry by a compare-and-exchange on the state word that
    /// sees RETIRED, and BPF atomics that fetch are fully ordered, so its
    /// adds land on the zeroed counters, never under a zeroing store still
    /// in flight. On x86 stores stay in program order anyway; on arm64 the
    /// release store is what keeps the zeroing ahead of the state.
    fn clear(&mut self, victims: &[usize], mixed_victims: &[usize]) -> std::io::Result<()> {
        // Their rows and buckets first: a source that claims the entry
        // next starts with no verdicts and full buckets.
        if let Some(rows) = &self.rows {
            let open = |first| self.window_of(rows.as_fd(), first);
            Self::each_in_windows(victims, open, |rows: &MappedArray<SourceRow>, at| {
                for word in 0..ROW_WORDS {
                    rows.store(at, word * 8, 0, Ordering::Relaxed);
                }
            })?;
        }
        if let Some(buckets) = &self.buckets {
            let open = |first| self.window_of(buckets.as_fd(), first);
            Self::each_in_windows(victims, open, |buckets: &MappedArray<Buckets>, at| {
                for word in 0..size_of::<Buckets>() / 8 {
                    buckets.store(at, word * 8, 0, Ordering::Relaxed);
                }
            })?;
        }
        // And the rows of the mixed ones in the mixed array (no other row
        // was ever written): the next source starts with none.
        if let Some(mixed) = &self.mixed {
            let open = |first| self.window_of(mixed.as_fd(), first);
            Self::each_in_windows(mixed_victims, open, |rows: &MappedArray<Mixed>, at| {
                for protocol in 0..source::PROTOCOLS {
                    rows.store(at, protocol * 8, 0, Ordering::Relaxed);
                }
            })?;
        }
        self.write_each(victims, |window, at| {
            window.store(at, E::PACKETS, 0, Ordering::Relaxed);
            window.store(at, E::PACKETS + 8, 0, Ordering::Relaxed);
            // The address, and the first protocol and mixed flag.
            for &offset in E::ADDRESS_WORDS {
                window.store(at, offset, 0, Ordering::Relaxed);
            }
            window.store(at, E::PROTOCOL & !7, 0, Ordering::Relaxed);
            // The state last, with no rule remembered.
            let retired = state_word(entry_state::RETIRED);
            window.store(at, STATE_WORD, retired, Ordering::Release);
        })?;
        self.seen.zero(victims);
        for &index in victims {
            self.set_idle(index, false);
        }
        self.in_use -= victims.len().min(self.in_use);
        Ok(())
    }

    /// Entries left draining: a retirement that an xdpstat died in.
    fn draining(&self) -> std::io::Result<Vec<usize>> {
        let mut draining = Vec::new();
        for first in (0..self.len).step_by(Self::PER_WINDOW) {
            let last = (first + Self::PER_WINDOW).min(self.len);
            let pages = first / Self::PER_PAGE..last.div_ceil(Self::PER_PAGE);
            if !pages.clone().any(|page| self.pages.get(page) != 0) {
                continue;
            }
            let window = self.window(first)?;
            for index in first..last {
                let word = window.load(index - first, STATE_WORD, Ordering::Acquire);
                if state_of(word) == entry_state::DRAINING {
                    draining.push(index);
                }
            }
        }
        Ok(draining)
    }
}

/// Retired sources with their final counts.
type Finals = Vec<(IpAddr, Tally)>;

/// The sum of some final counts.
fn sum(finals: &[(IpAddr, Tally)]) -> Counter {
    let mut total = Counter::default();
    for (_, tally) in finals {
        total.add(&tally.counter);
    }
    total
}

fn pages_for<E>(entries: usize) -> usize {
    (entries * size_of::<E>()).div_ceil(TABLE_PAGE).max(1)
}

/// The array maps a per-key read goes through, and the program and array
/// a read of copies goes through (`None`: not loaded, the tables are
/// mapped instead).
pub struct TableMaps<'a> {
    pub v4: &'a Map,
    pub v6: &'a Map,
    pub compaction: Option<Compaction<'a>>,
}

/// The program that copies a table's sources out, and where it does.
pub struct Compaction<'a> {
    pub program: &'a SchedClassifier,
    pub copies: &'a Copies,
}

/// Both families' tables.
pub struct Tables {
    v4: Table<V4Entry>,
    v6: Table<V6Entry>,
    max_sources: usize,
    method: ReadMethod,
    grace: Grace,
    /// The datapath's record, which keeps what retired entries counted
    /// (pinned with the tables when persisted).
    record: Record,
    /// What retired entries counted, per prefix, while this process read
    /// them; and what they counted that no prefix here holds.
    lens: PrefixLens,
    retired_prefixes: HashMap<IpNet, Counter>,
    retired_unkept: Counter,
    /// The order the last read's sources sorted into.
    order: SortOrder,
}

/// The most prefixes retired counts are kept for (a spoofed IPv6 flood
/// could otherwise make them grow without end); past it, retired counts
/// are `unkept`.
const RETIRED_PREFIXES_MAX: usize = 1 << 18;

/// The descriptors of one family's table, page flags and rows.
pub struct TableFds<'a> {
    pub entries: BorrowedFd<'a>,
    pub pages: BorrowedFd<'a>,
    /// `None` when the datapath has no row per entry (no rules can come).
    pub rows: Option<BorrowedFd<'a>>,
    /// The buckets beside the entries, when there are rows.
    pub buckets: Option<BorrowedFd<'a>>,
    /// `None` when the protocols of the sources are not wanted.
    pub mixed: Option<BorrowedFd<'a>>,
}

impl Tables {
    /// Maps the tables of a datapath with `len` entries per table, planned
    /// for `max_sources` sources each.
    pub fn open(
        v4: TableFds<'_>,
        v6: TableFds<'_>,
        len: usize,
        max_sources: usize,
        record: Record,
        lens: PrefixLens,
    ) -> Result<Self, XdpstatError> {
        let failed = |what: &str, e: std::io::Error| XdpstatError::Map {
            map: "source tables",
            source: format!("{what}: {e}").into(),
        };
        Ok(Self {
            v4: Table::open(&v4, len).map_err(|e| failed("mapping IPv4", e))?,
            v6: Table::open(&v6, len).map_err(|e| failed("mapping IPv6", e))?,
            max_sources,
            method: ReadMethod::Copied,
            grace: Grace::new().map_err(|e| failed("creating the grace-period map", e))?,
            retired_unkept: {
                // Retired before this process: no prefix is known for it.
                let mut before = record.get().retired_v4;
                before.add(&record.get().retired_v6);
                before
            },
            record,
            lens,
            retired_prefixes: HashMap::new(),
            order: SortOrder::default(),
        })
    }

    /// The order the last read's sources sorted into, for this read's.
    pub fn sort_order(&mut self) -> &mut SortOrder {
        &mut self.order
    }

    /// Adds what retired entries counted, per prefix, to `prefixes`.
    pub fn add_retired_prefixes(&self, prefixes: &mut Prefixes) {
        for (prefix, counter) in &self.retired_prefixes {
            prefixes.add_exact(*prefix, counter);
        }
        prefixes.unkept = self.retired_unkept;
    }

    /// Entries per table.
    pub fn entries(&self) -> usize {
        self.v4.len
    }

    pub fn record_mut(&mut self) -> &mut Record {
        &mut self.record
    }

    pub fn set_method(&mut self, method: ReadMethod) {
        self.method = method;
    }

    pub fn method(&self) -> ReadMethod {
        self.method
    }

    /// Reads both tables. `interface` labels errors.
    pub fn read(
        &mut self,
        maps: &TableMaps<'_>,
        interface: &str,
    ) -> Result<SourcesRead, XdpstatError> {
        // Sized by the last read, so the vectors rarely grow.
        let (len4, len6) = (self.v4.in_use, self.v6.in_use);
        let mut sources =
            SourceTableBuilder::reading(&mut self.order, len4 + len4 / 16, len6 + len6 / 16);
        let mut ruled = Vec::new();
        let failed = |map: &'static str, e: &dyn std::fmt::Display| XdpstatError::MapRead {
            interface: interface.to_owned(),
            map,
            source: e.to_string().into(),
        };
        let method = match (&self.method, &maps.compaction) {
            (ReadMethod::Copied, None) => ReadMethod::Mapped,
            (method, _) => *method,
        };
        match method {
            ReadMethod::Copied => {
                let compaction = maps.compaction.as_ref().expect("checked above");
                self.v4
                    .read_copies(compaction, compact::V4, &mut sources, &mut ruled)
                    .map_err(|e| failed("SOURCES_V4", &e))?;
                self.v6
                    .read_copies(compaction, compact::V6, &mut sources, &mut ruled)
                    .map_err(|e| failed("SOURCES_V6", &e))?;
            }
            ReadMethod::Mapped => {
                self.v4
                    .read(&mut sources, &mut ruled, None)
                    .map_err(|e| failed("SOURCES_V4", &e))?;
                self.v6
                    .read(&mut sources, &mut ruled, None)
                    .map_err(|e| failed("SOURCES_V6", &e))?;
            }
            ReadMethod::PerKey => {
                let v4: Array<&MapData, V4Entry> =
                    Array::try_from(maps.v4).map_err(|e| failed("SOURCES_V4", &one_line(&e)))?;
                let v6: Array<&MapData, V6Entry> =
                    Array::try_from(maps.v6).map_err(|e| failed("SOURCES_V6", &one_line(&e)))?;
                self.v4
                    .read(&mut sources, &mut ruled, Some(&v4))
                    .map_err(|e| failed("SOURCES_V4", &e))?;
                self.v6
                    .read(&mut sources, &mut ruled, Some(&v6))
                    .map_err(|e| failed("SOURCES_V6", &e))?;
            }
        }
        sources.tables_read();
        let record = self.record.get();
        Ok(SourcesRead {
            sources,
            ruled,
            retired_v4: record.retired_v4,
            retired_v6: record.retired_v6,
        })
    }

    /// Marks the entries the CPUs' runs will settle into as busy (read
    /// after the tables, with the CPU states).
    pub fn mark_busy(&mut self, v4: &[u32], v6: &[u32]) {
        self.v4.mark_busy(v4);
        self.v6.mark_busy(v6);
    }

    /// When a table holds more than seven eighths of `max_sources` after
    /// the last read, retires its idle entries (no packet between the last
    /// two reads, and no CPU's run about to settle into them), fewest
    /// packets first, down to three quarters. Returns the retired sources
    /// with their final counts (a source two entries held, summed).
    pub fn retire_idle(&mut self) -> Result<SourceTable, XdpstatError> {
        let high = self.max_sources - self.max_sources / 8;
        let low = self.max_sources * 3 / 4;
        let wanted = |in_use: usize| if in_use > high { in_use - low } else { 0 };
        let v4 = self.v4.idle(wanted(self.v4.in_use));
        let v6 = self.v6.idle(wanted(self.v6.in_use));
        if v4.is_empty() && v6.is_empty() {
            return Ok(SourceTable::default());
        }
        let failed = |what: &str, e: std::io::Error| XdpstatError::Map {
            map: "source tables",
            source: format!("retiring idle entries: {what}: {e}").into(),
        };
        self.v4.drain(&v4).map_err(|e| failed("marking", e))?;
        self.v6.drain(&v6).map_err(|e| failed("marking", e))?;
        self.retire_drained(&v4, &v6, true)
    }

    /// After a grace period, moves the drained entries' final counts to
    /// the record's retired totals and clears the entries, in an order that
    /// a process killed at any point leaves exact: the record gets the new
    /// totals and a `retiring` mark in one write before any entry is
    /// cleared, and loses the mark after the last. Entries found draining
    /// later were counted if the mark is set, and not if it is clear
    /// ([`Tables::finish_retiring`]). `add` is false when they were.
    fn retire_drained(
        &mut self,
        v4: &[usize],
        v6: &[usize],
        add: bool,
    ) -> Result<SourceTable, XdpstatError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| XdpstatError::Map {
            map: "source tables",
            source: format!("retiring idle entries: {what}: {e}").into(),
        };
        // From here on no program can still be adding to a drained entry.
        self.grace
            .wait()
            .map_err(|e| failed("waiting for a grace period", &e))?;
        let (mut finals, mixed_v4) = self.v4.finals(v4).map_err(|e| failed("reading", &e))?;
        let (finals_v6, mixed_v6) = self.v6.finals(v6).map_err(|e| failed("reading", &e))?;
        let (sum_v4, sum_v6) = (sum(&finals), sum(&finals_v6));
        finals.extend(finals_v6);
        for (address, tally) in &finals {
            let counter = &tally.counter;
            let prefix = self.lens.of(*address);
            if self.retired_prefixes.len() < RETIRED_PREFIXES_MAX
                || self.retired_prefixes.contains_key(&prefix)
            {
                self.retired_prefixes
                    .entry(prefix)
                    .or_default()
                    .add(counter);
            } else {
                self.retired_unkept.add(counter);
            }
        }
        self.record
            .update(|meta| {
                if add {
                    meta.retired_v4.add(&sum_v4);
                    meta.retired_v6.add(&sum_v6);
                }
                meta.retiring = 1;
            })
            .map_err(|e| failed("recording", &one_line(&e)))?;
        let cleared = self.v4.clear(v4, &mixed_v4);
        cleared.map_err(|e| failed("clearing", &e))?;
        let cleared = self.v6.clear(v6, &mixed_v6);
        cleared.map_err(|e| failed("clearing", &e))?;
        self.record
            .update(|meta| meta.retiring = 0)
            .map_err(|e| failed("recording", &one_line(&e)))?;
        Ok(finals.into_iter().collect())
    }

    /// Finishes a retirement that a persisted xdpstat was killed in: its
    /// entries are still draining (no program adds to them or claims them).
    /// Their counts are in the retired totals if the record's mark says so;
    /// otherwise they are added now.
    pub fn finish_retiring(&mut self) -> Result<(), XdpstatError> {
        let failed = |e: std::io::Error| XdpstatError::Map {
            map: "source tables",
            source: format!("finishing a retirement: {e}").into(),
        };
        let v4 = self.v4.draining().map_err(failed)?;
        let v6 = self.v6.draining().map_err(failed)?;
        let counted = self.record.get().retiring != 0;
        if v4.is_empty() && v6.is_empty() {
            if counted {
                self.record
                    .update(|meta| meta.retiring = 0)
                    .map_err(|e| failed(std::io::Error::other(one_line(&e))))?;
            }
            return Ok(());
        }
        self.retire_drained(&v4, &v6, !counted).map(drop)
    }
}

/// Makes each of the `len` entries of the table behind `entries` (an IPv6
/// one if `v6`) forget the rule it remembers (before a rule set's
/// generation number comes round again). The rule's bits are cleared by
/// an atomic AND, so a CPU storing the word's other half meanwhile loses
/// nothing.
pub fn forget_remembered_rules(
    entries: BorrowedFd<'_>,
    len: usize,
    v6: bool,
) -> std::io::Result<()> {
    fn forget<E: TableEntry>(entries: BorrowedFd<'_>, len: usize) -> std::io::Result<()> {
        let per_window = WINDOW_BYTES / size_of::<E>();
        for first in (0..len).step_by(per_window) {
            let count = per_window.min(len - first);
            let window = MappedArray::<E>::map_range(entries, first, count)?;
            for at in 0..count {
                window.clear_bits(at, STATE_WORD, RULE_BITS);
            }
        }
        Ok(())
    }
    if v6 {
        forget::<V6Entry>(entries, len)
    } else {
        forget::<V4Entry>(entries, len)
    }
}

/// How many sources a datapath's tables hold, read through descriptors of
/// its maps (another process's datapath, for `xdpstat status`).
pub fn sources_held(
    v4: TableFds<'_>,
    v6: TableFds<'_>,
    len: usize,
) -> std::io::Result<(usize, usize)> {
    let mut table_v4 = Table::<V4Entry>::open(&v4, len)?;
    let mut table_v6 = Table::<V6Entry>::open(&v6, len)?;
    let mut scratch = SourceTableBuilder::with_capacity(0, 0);
    let mut ruled = Vec::new();
    table_v4
        .read(&mut scratch, &mut ruled, None)
        .map_err(std::io::Error::other)?;
    table_v6
        .read(&mut scratch, &mut ruled, None)
        .map_err(std::io::Error::other)?;
    Ok((table_v4.in_use, table_v6.in_use))
}

/// Length of the page-flag array of a table of `entries` entries of
/// `entry_size` bytes: one flag per 4 KiB page.
pub fn page_flags_len(entries: u32, entry_size: usize) -> u32 {
    u32::try_from((entries as usize * entry_size).div_ceil(TABLE_PAGE)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry's words as a host of either byte order loads them from the
    /// same memory image: `load` is what `u64::from_ne_bytes` is there.
    fn words_of(image: &[u8], load: fn([u8; 8]) -> u64) -> Vec<u64> {
        image
            .chunks_exact(8)
            .map(|chunk| load(chunk.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn entry_addresses_decode_alike_on_hosts_of_either_byte_order() {
        // The datapath stores the address as on the wire, at byte 8.
        let mut v4 = [0u8; 32];
        v4[8..12].copy_from_slice(&[198, 18, 0, 1]);
        let mut v6 = [0u8; 64];
        v6[8..24].copy_from_slice(&"2001:db8::c".parse::<Ipv6Addr>().unwrap().octets());
        // Decoding turns each loaded word back into its bytes in memory
        // order: to_le_bytes on a little-endian host, to_be_bytes on a
        // big-endian one.
        type Host = (fn([u8; 8]) -> u64, fn(u64) -> [u8; 8]);
        let hosts: [Host; 2] = [
            (u64::from_le_bytes, u64::to_le_bytes),
            (u64::from_be_bytes, u64::to_be_bytes),
        ];
        for (load, store) in hosts {
            let words = words_of(&v4, load);
            let bytes = store(words[1]);
            assert_eq!(
                Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]),
                Ipv4Addr::new(198, 18, 0, 1)
            );
            let words = words_of(&v6, load);
            let mut address = [0u8; 16];
            address[..8].copy_from_slice(&store(words[1]));
            address[8..].copy_from_slice(&store(words[2]));
            assert_eq!(
                Ipv6Addr::from(address),
                "2001:db8::c".parse::<Ipv6Addr>().unwrap()
            );
        }
        // And this host's own decoding, through the real functions.
        let native = words_of(&v4, u64::from_ne_bytes);
        assert_eq!(
            V4Entry::address(&native[1..2]),
            IpAddr::from([198, 18, 0, 1])
        );
        let native = words_of(&v6, u64::from_ne_bytes);
        assert_eq!(
            V6Entry::address(&native[1..3]),
            "2001:db8::c".parse::<IpAddr>().unwrap()
        );
    }
}
