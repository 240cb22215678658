//! The source tables and the runs that feed them (see `CpuState`): a
//! packet from the same source, of the same protocol, as the CPU's
//! previous one only bumps the current run's counter; any other packet
//! begins a new run, which finds or claims its source's entry in its
//! family's table and keeps the entry's index, and then settles the
//! finished run into the entry it kept. A table is an open-addressing hash table in a
//! memory-mapped array, shared by every CPU: entries are reached through
//! raw pointers, since other CPUs write them too, and counted into with
//! atomic adds.

use aya_ebpf::maps::{Array, LpmTrie};
use xdpstat_common::{
    Counter, CpuState, Ipv4Key, Ipv6Key, MAX_PROBES, NO_ENTRY, TABLE_PAGE, V4Entry, V6Entry,
    entry_state, home,
    kinds::source,
    mix, page_flag,
    rules::{Buckets, SourceRow, ruleset},
};

use crate::{
    atomics::{atomic_add, atomic_add_word, bump, compare_exchange_u32, start_run},
    maps::{
        BUCKETS_V4, BUCKETS_V6, HASH_SEED, HEAVY_V4, HEAVY_V6, MIXED_V4, MIXED_V6, PAGES_V4,
        PAGES_V6, PREFIX_V4_MASK, PREFIX_V6_MASK, ROWS_V4, ROWS_V6, RULES_V4_0, RULES_V4_1,
        RULES_V6_0, RULES_V6_1, SKETCH_V4, SKETCH_V6, SOURCES_V4, SOURCES_V6, TABLE_ENTRIES,
        loaded,
    },
    sketch,
};

/// One family's table and rule maps.
pub struct Family<E: Entry> {
    pub table: &'static Array<E>,
    pub pages: &'static Array<u64>,
    /// Packets of the protocols other than each source's first.
    pub mixed: &'static Array<[u64; source::PROTOCOLS]>,
    pub rows: &'static Array<SourceRow>,
    /// The buckets of each entry's source under its first limit.
    pub buckets: &'static Array<Buckets>,
    pub tries: [&'static LpmTrie<E::Address, u32>; 2],
    /// Its bit in the ruleset word.
    pub bit: u64,
    /// Address bits, the trie key's length for a lookup.
    pub bits: u32,
}

/// One family's part of a CPU's state (only this CPU writes it).
pub struct Run<'a, A> {
    counter: &'a mut Counter,
    source: &'a mut A,
    entry: &'a mut u32,
    protocol: &'a mut u16,
    unattributed: &'a mut Counter,
}

/// An entry of a source table, over its address type. An entry is shared
/// by every CPU, so it is only ever reached through a raw pointer into
/// its table, and its fields through pointers to them.
pub trait Entry: 'static {
    type Address: Copy;
    fn same(a: &Self::Address, b: &Self::Address) -> bool;
    fn hash(address: &Self::Address, seed: u64) -> u64;
    /// Whether the entry at `entry` holds `address`.
    ///
    /// # Safety
    /// `entry` points into a live table.
    unsafe fn holds(entry: *mut Self, address: &Self::Address) -> bool;
    /// Writes `address` into the entry at `entry`.
    ///
    /// # Safety
    /// `entry` points into a live table, at an entry this CPU claimed.
    unsafe fn set_address(entry: *mut Self, address: &Self::Address);
    /// Its state word.
    ///
    /// # Safety
    /// `entry` points into a live table.
    unsafe fn state(entry: *mut Self) -> *mut u32;
    /// Its counters.
    ///
    /// # Safety
    /// `entry` points into a live table.
    unsafe fn counter(entry: *mut Self) -> *mut Counter;
    /// The protocol of its source's first packet.
    ///
    /// # Safety
    /// `entry` points into a live table.
    unsafe fn protocol(entry: *mut Self) -> *mut u8;
    /// Its flag: packets of other protocols were counted.
    ///
    /// # Safety
    /// `entry` points into a live table.
    unsafe fn mixed(entry: *mut Self) -> *mut u8;
    /// The remembered rule (see `xdpstat_common::rules::cached`).
    ///
    /// # Safety
    /// `entry` points into a live table.
    unsafe fn rule(entry: *mut Self) -> *mut u32;
    /// Counts a run no entry took in the family's prefix sketch.
    fn sketch(address: &Self::Address, run: &Counter);
    /// The family's table and rule maps.
    fn family() -> Family<Self>
    where
        Self: Sized;
    /// The family's part of a CPU's state.
    fn run(state: &mut CpuState) -> Run<'_, Self::Address>;
    /// [`entry_for`] from `start`, through the family's own function.
    fn entry_from(address: &Self::Address, protocol: u16, start: u32) -> u32;
}

/// The index of `address`'s entry: its home entry when that holds it (as
/// it does for most sources), else what [`entry_for`] finds or claims.
///
/// The probe and the claim are a function of their own, per family, that
/// takes and returns plain numbers: the kernel's verifier checks a global
/// function once, on its own, and its callers only past the call, with any
/// index it may return. Inlined, the verifier walked the rest of the
/// program from every way out of the probe loop, which took half of each
/// build's load time. The home entry is tried inline so that most new runs
/// pay no call.
#[inline(always)]
fn entry_of<E: Entry>(family: &Family<E>, address: &E::Address, protocol: u16) -> u32 {
    let start = home_of::<E>(address);
    if counting(family.table, start, address).is_some() {
        return start;
    }
    E::entry_from(address, protocol, start)
}

/// The home entry of `address`: where its probe starts.
#[inline(always)]
fn home_of<E: Entry>(address: &E::Address) -> u32 {
    home(E::hash(address, loaded(&HASH_SEED)), loaded(&TABLE_ENTRIES))
}

/// [`entry_for`] for IPv4 (see [`entry_of`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn xdpstat_entry_v4(address: u32, protocol: u32, start: u32) -> u32 {
    let family = V4Entry::family();
    entry_for::<V4Entry>(&family, &address.to_ne_bytes(), protocol as u16, start)
}

/// [`entry_for`] for IPv6, the address as its two 8-byte words (see
/// [`entry_of`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn xdpstat_entry_v6(high: u64, low: u64, protocol: u32, start: u32) -> u32 {
    let mut address = [0u8; 16];
    address[..8].copy_from_slice(&high.to_ne_bytes());
    address[8..].copy_from_slice(&low.to_ne_bytes());
    let family = V6Entry::family();
    entry_for::<V6Entry>(&family, &address, protocol as u16, start)
}

/// The accessors both entry types share, field for field: pointers to an
/// entry's fields (no reference is made: other CPUs write the entry), and
/// the address written by the CPU that claimed it.
macro_rules! entry_fields {
    () => {
        #[inline(always)]
        unsafe fn set_address(entry: *mut Self, address: &Self::Address) {
            // SAFETY: the caller's live entry, claimed by this CPU.
            unsafe { (*entry).address = *address };
        }
        #[inline(always)]
        unsafe fn state(entry: *mut Self) -> *mut u32 {
            // SAFETY: the caller's live entry; no reference is made.
            unsafe { &raw mut (*entry).state }
        }
        #[inline(always)]
        unsafe fn counter(entry: *mut Self) -> *mut Counter {
            // SAFETY: as above.
            unsafe { &raw mut (*entry).counter }
        }
        #[inline(always)]
        unsafe fn protocol(entry: *mut Self) -> *mut u8 {
            // SAFETY: as above.
            unsafe { &raw mut (*entry).protocol }
        }
        #[inline(always)]
        unsafe fn mixed(entry: *mut Self) -> *mut u8 {
            // SAFETY: as above.
            unsafe { &raw mut (*entry).mixed }
        }
        #[inline(always)]
        unsafe fn rule(entry: *mut Self) -> *mut u32 {
            // SAFETY: as above.
            unsafe { &raw mut (*entry).rule }
        }
    };
}

impl Entry for V4Entry {
    type Address = Ipv4Key;
    #[inline(always)]
    fn family() -> Family<Self> {
        Family {
            table: &SOURCES_V4,
            pages: &PAGES_V4,
            mixed: &MIXED_V4,
            rows: &ROWS_V4,
            buckets: &BUCKETS_V4,
            tries: [&RULES_V4_0, &RULES_V4_1],
            bit: ruleset::V4,
            bits: 32,
        }
    }
    #[inline(always)]
    fn entry_from(address: &Ipv4Key, protocol: u16, start: u32) -> u32 {
        xdpstat_entry_v4(u32::from_ne_bytes(*address), u32::from(protocol), start)
    }
    #[inline(always)]
    fn run(state: &mut CpuState) -> Run<'_, Ipv4Key> {
        Run {
            counter: &mut state.run_v4,
            source: &mut state.run_v4_source,
            entry: &mut state.run_v4_entry,
            protocol: &mut state.run_v4_protocol,
            unattributed: &mut state.unattributed_v4,
        }
    }
    #[inline(always)]
    fn same(a: &Ipv4Key, b: &Ipv4Key) -> bool {
        a == b
    }
    #[inline(always)]
    fn hash(address: &Ipv4Key, seed: u64) -> u64 {
        mix(u64::from(u32::from_ne_bytes(*address)), seed)
    }
    #[inline(always)]
    unsafe fn holds(entry: *mut Self, address: &Ipv4Key) -> bool {
        // SAFETY: the caller's live entry; an address is written only
        // while its entry is claimed, before it is READY.
        unsafe { core::ptr::read(&raw const (*entry).address) == *address }
    }
    #[inline(always)]
    fn sketch(address: &Ipv4Key, run: &Counter) {
        let mask = loaded(&PREFIX_V4_MASK);
        let key = [u64::from(u32::from_ne_bytes(*address) & mask), 0];
        sketch::add(&SKETCH_V4, &HEAVY_V4, &key, run);
    }
    entry_fields!();
}

impl Entry for V6Entry {
    type Address = Ipv6Key;
    #[inline(always)]
    fn family() -> Family<Self> {
        Family {
            table: &SOURCES_V6,
            pages: &PAGES_V6,
            mixed: &MIXED_V6,
            rows: &ROWS_V6,
            buckets: &BUCKETS_V6,
            tries: [&RULES_V6_0, &RULES_V6_1],
            bit: ruleset::V6,
            bits: 128,
        }
    }
    #[inline(always)]
    fn entry_from(address: &Ipv6Key, protocol: u16, start: u32) -> u32 {
        let (high, low) = words(address);
        xdpstat_entry_v6(high, low, u32::from(protocol), start)
    }
    #[inline(always)]
    fn run(state: &mut CpuState) -> Run<'_, Ipv6Key> {
        Run {
            counter: &mut state.run_v6,
            source: &mut state.run_v6_source,
            entry: &mut state.run_v6_entry,
            protocol: &mut state.run_v6_protocol,
            unattributed: &mut state.unattributed_v6,
        }
    }
    #[inline(always)]
    fn same(a: &Ipv6Key, b: &Ipv6Key) -> bool {
        words(a) == words(b)
    }
    #[inline(always)]
    fn hash(address: &Ipv6Key, seed: u64) -> u64 {
        let (a, b) = words(address);
        mix(a ^ mix(b, seed), seed)
    }
    #[inline(always)]
    unsafe fn holds(entry: *mut Self, address: &Ipv6Key) -> bool {
        // SAFETY: the caller's live entry; an address is written only
        // while its entry is claimed, before it is READY. Two word loads.
        let stored = unsafe { words_at((&raw const (*entry).address).cast()) };
        stored == words(address)
    }
    #[inline(always)]
    fn sketch(address: &Ipv6Key, run: &Counter) {
        let mask = loaded(&PREFIX_V6_MASK);
        let (a, b) = words(address);
        sketch::add(&SKETCH_V6, &HEAVY_V6, &[a & mask[0], b & mask[1]], run);
    }
    entry_fields!();
}

/// An IPv6 address as two 8-byte words (a byte-wise compare would be 16
/// loads and branches).
#[inline(always)]
fn words(address: &Ipv6Key) -> (u64, u64) {
    // SAFETY: a reference to 16 bytes.
    unsafe { words_at(address.as_ptr()) }
}

/// The two 8-byte words of the 16 bytes at `at`.
///
/// # Safety
/// `at` points to 16 readable bytes.
#[inline(always)]
unsafe fn words_at(at: *const u8) -> (u64, u64) {
    // SAFETY: both reads are within the caller's 16 bytes.
    unsafe {
        (
            core::ptr::read_unaligned(at as *const u64),
            core::ptr::read_unaligned(at.add(8) as *const u64),
        )
    }
}

/// Counts a packet from `source` of source protocol `protocol` (see
/// `kinds::source`): into the CPU's run when it continues it (same
/// source, same protocol), else as a new run, which first finds or claims
/// its source's entry; then the finished run settles into the entry it
/// kept (or, with none, into `unattributed`). The new run is written before the old one
/// settles: a reader racing this misses the old run for one read rather
/// than counting it twice (user space keeps counts from going backwards).
/// Returns the index of the entry the packet's run settles into
/// ([`NO_ENTRY`]: none).
#[inline(always)]
pub fn track<E: Entry>(
    family: &Family<E>,
    run: Run<'_, E::Address>,
    source: E::Address,
    protocol: u16,
    packets: u64,
    len: u64,
) -> u32 {
    if run.counter.packets != 0 && *run.protocol == protocol && E::same(run.source, &source) {
        bump(run.counter, packets, len);
        return *run.entry;
    }
    let (finished, finished_source, finished_entry, finished_protocol) =
        (*run.counter, *run.source, *run.entry, *run.protocol);
    let entry = entry_of::<E>(family, &source, protocol);
    // No run, then the new source, entry and protocol, then the new run's
    // count: a reader copying the slot meanwhile never sees the old count
    // under the new source (see `CpuState`). Volatile keeps the stores in
    // order.
    start_run(run.counter, 0, 0);
    // SAFETY: plain stores to this CPU's live slot.
    unsafe {
        core::ptr::write_volatile(run.source, source);
        core::ptr::write_volatile(run.entry, entry);
        core::ptr::write_volatile(run.protocol, protocol);
    }
    start_run(run.counter, packets, len);
    if finished.packets != 0
        && !settle::<E>(
            family,
            finished_entry,
            &finished_source,
            &finished,
            finished_protocol,
        )
    {
        run.unattributed.add(&finished);
        E::sketch(&finished_source, &finished);
    }
    entry
}

/// The entry at `index` when it is READY and counts `address`: the one
/// test of whether an entry may be counted into (or its row used). User
/// space retires an entry by marking it draining and waiting a grace
/// period before it clears the entry and its row, so an entry this finds
/// is not cleared under the packet that found it.
#[inline(always)]
pub fn counting<E: Entry>(table: &Array<E>, index: u32, address: &E::Address) -> Option<*mut E> {
    if index == NO_ENTRY {
        return None;
    }
    let entry = table.get_ptr_mut(index)?;
    // SAFETY: a live table entry; its state word is read whole.
    let ready = unsafe { core::ptr::read_volatile(E::state(entry)) } == entry_state::READY;
    // SAFETY: as above.
    (ready && unsafe { E::holds(entry, address) }).then_some(entry)
}

/// Adds a finished run to the entry it kept; false when it has none.
/// When user space retired that entry while the run went on (the entry is
/// no longer counting the run's source), the run finds or claims another.
#[inline(always)]
fn settle<E: Entry>(
    family: &Family<E>,
    index: u32,
    address: &E::Address,
    run: &Counter,
    protocol: u16,
) -> bool {
    if index == NO_ENTRY {
        return false;
    }
    let (entry, index) = match counting(family.table, index, address) {
        Some(entry) => (entry, index),
        None => {
            let index = E::entry_from(address, protocol, home_of::<E>(address));
            match counting(family.table, index, address) {
                Some(entry) => (entry, index),
                None => return false,
            }
        }
    };
    // SAFETY: a live entry counting this source, at `index`.
    unsafe { add::<E>(family, entry, index, run, protocol) };
    true
}

/// Adds `run`, of source protocol `protocol`, to `entry` (at `index`),
/// which counts the run's source.
///
/// # Safety
/// `entry` points to a live table entry, at `index`.
#[inline(always)]
unsafe fn add<E: Entry>(
    family: &Family<E>,
    entry: *mut E,
    index: u32,
    run: &Counter,
    protocol: u16,
) {
    // SAFETY: the caller's live entry; the adds are atomic because every
    // CPU counting the source adds to it. User space marks an entry
    // draining and then waits for a grace period before it reads the
    // final counts, so an add that saw READY lands before that read.
    // A run of another protocol than the source's first is also added to
    // the entry's row of the mixed array, and the entry marked, before
    // the counters: user space reads the counters first, so what it
    // makes of the first protocol (the rest) is never read ahead.
    unsafe {
        let first = core::ptr::read_volatile(E::protocol(entry));
        let kind = usize::from(protocol);
        if u16::from(first) != protocol
            && kind < source::PROTOCOLS
            && let Some(row) = family.mixed.get_ptr_mut(index)
        {
            atomic_add_word(row.cast::<u64>().add(kind), run.packets);
            core::ptr::write_volatile(E::mixed(entry), 1);
        }
        atomic_add(E::counter(entry), run);
    }
}

/// The page of the table that entry `index` is on.
#[inline(always)]
pub fn page_of<E>(index: u32) -> u32 {
    (index as usize * size_of::<E>() / TABLE_PAGE) as u32
}

/// Sets byte `flag` of `page`'s flag word (see `page_flag`), unless set.
#[inline(always)]
pub fn set_page_flag(pages: &Array<u64>, page: u32, flag: usize) {
    if let Some(word) = pages.get_ptr_mut(page) {
        // SAFETY: a byte of a live array value; any CPU may set it to 1,
        // and a byte store leaves the word's other bytes as they are.
        unsafe {
            let byte = word.cast::<u8>().add(flag);
            if core::ptr::read_volatile(byte) == 0 {
                core::ptr::write_volatile(byte, 1);
            }
        }
    }
}

/// The index of `address`'s entry, probing from `start` (its home entry),
/// claiming a free one for a new source; [`NO_ENTRY`] when none within
/// reach is free.
#[inline(always)]
fn entry_for<E: Entry>(family: &Family<E>, address: &E::Address, protocol: u16, start: u32) -> u32 {
    let (table, pages) = (family.table, family.pages);
    let entries = loaded(&TABLE_ENTRIES);
    // A second pass only after losing a claim race to another CPU, which
    // was most likely adding the same source. An entry another CPU is still
    // filling in is passed by, so two CPUs meeting a new source at the same
    // instant may give it two entries; user space adds them up.
    for _ in 0..2 {
        match probe(table, address, start, entries) {
            Probe::Found(index) => return index,
            Probe::Free(entry, index, was) => {
                // SAFETY: a live table entry. The compare-and-exchange is
                // fully ordered (BPF atomics with a fetch are), so the
                // zeroed counters user space stored before it released a
                // retired entry are visible before this CPU adds to them.
                if unsafe { compare_exchange_u32(E::state(entry), was, entry_state::CLAIMED) } {
                    // SAFETY: the entry is this CPU's until it is READY
                    // (user space cleared its mixed flag and row).
                    unsafe {
                        E::set_address(entry, address);
                        core::ptr::write_volatile(E::protocol(entry), protocol as u8);
                        core::ptr::write_volatile(E::state(entry), entry_state::READY);
                    }
                    set_page_flag(pages, page_of::<E>(index), page_flag::USED);
                    return index;
                }
            }
            Probe::Full => return NO_ENTRY,
        }
    }
    NO_ENTRY
}

/// What a probe found.
enum Probe<E> {
    /// The index of the source's entry.
    Found(u32),
    /// No entry for the source; the first reusable one, its index and the
    /// state it had.
    Free(*mut E, u32, u32),
    /// No entry for the source and none free within reach.
    Full,
}

/// Looks for `address` from `start`, at most [`MAX_PROBES`] entries, up to
/// the first never-used entry.
#[inline(always)]
fn probe<E: Entry>(table: &Array<E>, address: &E::Address, start: u32, entries: u32) -> Probe<E> {
    let mut free: Option<(*mut E, u32, u32)> = None;
    for step in 0..MAX_PROBES {
        let mut index = start + step;
        if index >= entries {
            index -= entries;
        }
        let Some(entry) = table.get_ptr_mut(index) else {
            break;
        };
        // SAFETY: a live table entry; its state word is read whole.
        let state = unsafe { core::ptr::read_volatile(E::state(entry)) };
        match state {
            // SAFETY: as above (this is `counting`'s test, on the state
            // word this probe has read already).
            entry_state::READY if unsafe { E::holds(entry, address) } => {
                return Probe::Found(index);
            }
            entry_state::EMPTY | entry_state::RETIRED if free.is_none() => {
                free = Some((entry, index, state));
            }
            _ => {}
        }
        if state == entry_state::EMPTY {
            break;
        }
    }
    match free {
        Some((entry, index, state)) => Probe::Free(entry, index, state),
        None => Probe::Full,
    }
}
