//! Every map and global the program shares with user space. Their names
//! are `xdpstat_common`'s constants (an attribute cannot name a constant,
//! so a test of the loader holds the object file's names against them);
//! their layouts are `xdpstat_common`'s types.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, LpmTrie, PerCpuArray, RingBuf},
};
use xdpstat_common::{
    Counter, CpuState, DEFAULT_MAX_SOURCES, Ipv4Key, Ipv6Key, Meta, V4Entry, V6Entry,
    capture::{CAPTURE_RING_BYTES, Scratch},
    compact::{COMPACTED_ENTRIES, Compacted, Control},
    kinds::{PORTS as PORTS_PER_SIDE, side::SIDES, source},
    rules::{
        BanRecord, Buckets, MAX_BANS, MAX_NODES, MAX_PREFIXES, MAX_RULES, Node, RULE_HITS_SECTION,
        RULESET_ENTRIES, Rule, SourceRow,
    },
    sketch::{Heavy, SKETCH_SECTION},
    table_entries,
};

/// Entries in each table; the loader sets it and sizes the tables to match.
#[unsafe(no_mangle)]
pub static TABLE_ENTRIES: u32 = table_entries(DEFAULT_MAX_SOURCES);

/// The table hash's secret seed; the loader sets a random one.
#[unsafe(no_mangle)]
pub static HASH_SEED: u64 = 0;

/// `--capture`: the verdicts copied (bit `1 << n` for verdict `n` of
/// `capture::verdict`; 0: no capture, one branch a packet), the bytes
/// copied of each, and each CPU's budget (a copy every `INTERVAL` ns with
/// room for `TOLERANCE` ns' worth at once; 0: none). The loader sets them.
#[unsafe(no_mangle)]
pub static CAPTURE_VERDICTS: u32 = 0;
#[unsafe(no_mangle)]
pub static CAPTURE_SNAPLEN: u32 = 256;
#[unsafe(no_mangle)]
pub static CAPTURE_INTERVAL_NS: u64 = 0;
#[unsafe(no_mangle)]
pub static CAPTURE_TOLERANCE_NS: u64 = 0;

/// Prefix masks as on the wire; the loader sets them from `--prefix-len`.
#[unsafe(no_mangle)]
pub static PREFIX_V4_MASK: u32 = u32::MAX;
#[unsafe(no_mangle)]
pub static PREFIX_V6_MASK: [u64; 2] = [u64::MAX, u64::MAX];

/// The source tables (see `table`), one per family.
#[map(name = "SOURCES_V4")]
pub static SOURCES_V4: Array<V4Entry> =
    Array::with_max_entries(table_entries(DEFAULT_MAX_SOURCES), BPF_F_MMAPABLE);
#[map(name = "SOURCES_V6")]
pub static SOURCES_V6: Array<V6Entry> =
    Array::with_max_entries(table_entries(DEFAULT_MAX_SOURCES), BPF_F_MMAPABLE);

/// One flag per 4 KiB page of a table, set when an entry there is claimed,
/// so user space skips pages no entry ever used.
#[map(name = "PAGES_V4")]
pub static PAGES_V4: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "PAGES_V6")]
pub static PAGES_V6: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Beside each table, entry for entry: a source's packets of each
/// protocol but its first (see `V4Entry::protocol`).
#[map(name = "MIXED_V4")]
pub static MIXED_V4: Array<[u64; source::PROTOCOLS]> =
    Array::with_max_entries(table_entries(DEFAULT_MAX_SOURCES), BPF_F_MMAPABLE);
#[map(name = "MIXED_V6")]
pub static MIXED_V6: Array<[u64; source::PROTOCOLS]> =
    Array::with_max_entries(table_entries(DEFAULT_MAX_SOURCES), BPF_F_MMAPABLE);

/// Never read here: user space writes what this datapath is, and keeps
/// what must outlive it when it is persisted.
#[map(name = "XDPSTAT_META")]
pub static XDPSTAT_META: Array<Meta> = Array::with_max_entries(1, 0);

/// The prefix sketches and their heavy-hitter tables (see
/// `xdpstat_common::sketch`): only runs no table entry took touch them.
/// A section per CPU (the loader sizes them for the host's possible CPUs).
#[map(name = "SKETCH_V4")]
pub static SKETCH_V4: Array<Counter> = Array::with_max_entries(SKETCH_SECTION, BPF_F_MMAPABLE);
#[map(name = "SKETCH_V6")]
pub static SKETCH_V6: Array<Counter> = Array::with_max_entries(SKETCH_SECTION, BPF_F_MMAPABLE);
#[map(name = "HEAVY_V4")]
pub static HEAVY_V4: PerCpuArray<Heavy> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "HEAVY_V6")]
pub static HEAVY_V6: PerCpuArray<Heavy> = PerCpuArray::with_max_entries(1, 0);

/// Each CPU's runs and class counters (see `CpuState`).
#[map(name = "CPU_STATE")]
pub static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

/// Packets and bytes per port and side, a section per CPU (see `kinds`);
/// the loader sizes it for the host's possible CPUs.
#[map(name = "PORTS")]
pub static PORTS: Array<Counter> = Array::with_max_entries(SIDES * PORTS_PER_SIDE, BPF_F_MMAPABLE);

/// Which rule slot is in force, and which families have rules there.
#[map(name = "RULESET")]
pub static RULESET: Array<u64> = Array::with_max_entries(RULESET_ENTRIES, 0);
/// The rules of slot 0 and slot 1, per family, by longest prefix.
#[map(name = "RULES_V4_0")]
pub static RULES_V4_0: LpmTrie<Ipv4Key, u32> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
#[map(name = "RULES_V4_1")]
pub static RULES_V4_1: LpmTrie<Ipv4Key, u32> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
#[map(name = "RULES_V6_0")]
pub static RULES_V6_0: LpmTrie<Ipv6Key, u32> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
#[map(name = "RULES_V6_1")]
pub static RULES_V6_1: LpmTrie<Ipv6Key, u32> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
/// Both slots' chains (see `xdpstat_common::rules`).
#[map(name = "CHAINS")]
pub static CHAINS: Array<Node> = Array::with_max_entries(2 * MAX_NODES, 0);
/// What each rule matched, a section per CPU, at `slot * MAX_RULES +
/// index` in it (the loader sizes it for the host's possible CPUs).
#[map(name = "RULE_HITS")]
pub static RULE_HITS: Array<Counter> = Array::with_max_entries(RULE_HITS_SECTION, BPF_F_MMAPABLE);
/// The buckets a limit's entry-less sources share: packets at the rule's
/// place, bytes `BYTE_BUCKETS` further on.
#[map(name = "RULE_BUCKETS")]
pub static RULE_BUCKETS: Array<u64> = Array::with_max_entries(4 * MAX_RULES, 0);
/// The rules by index, at the rule's place.
/// The copies `--capture` makes (see `xdpstat_common::capture`), and
/// each CPU's room to put one together.
#[map(name = "CAPTURE")]
pub static CAPTURE: RingBuf = RingBuf::with_byte_size(CAPTURE_RING_BYTES, 0);
#[map(name = "CAPTURE_SCRATCH")]
pub static CAPTURE_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Never read here: the bans in force as user space keeps them (their
/// ends are on their chains' nodes), pinned so that they outlive it.
#[map(name = "BANS")]
pub static BANS: Array<BanRecord> = Array::with_max_entries(MAX_BANS, 0);
#[map(name = "RULES")]
pub static RULES: Array<Rule> = Array::with_max_entries(2 * MAX_RULES, 0);
/// One row per table entry, at the entry's index; the loader sizes them as
/// the tables (or to one row when no rules can come).
#[map(name = "ROWS_V4")]
pub static ROWS_V4: Array<SourceRow> =
    Array::with_max_entries(table_entries(DEFAULT_MAX_SOURCES), BPF_F_MMAPABLE);
#[map(name = "ROWS_V6")]
pub static ROWS_V6: Array<SourceRow> =
    Array::with_max_entries(table_entries(DEFAULT_MAX_SOURCES), BPF_F_MMAPABLE);
/// The buckets of each entry's source, at the entry's index, sized as the
/// rows.
#[map(name = "BUCKETS_V4")]
pub static BUCKETS_V4: Array<Buckets> =
    Array::with_max_entries(table_entries(DEFAULT_MAX_SOURCES), BPF_F_MMAPABLE);
#[map(name = "BUCKETS_V6")]
pub static BUCKETS_V6: Array<Buckets> =
    Array::with_max_entries(table_entries(DEFAULT_MAX_SOURCES), BPF_F_MMAPABLE);

/// Reads a global the loader wrote before loading, as the kernel has it.
#[inline(always)]
pub fn loaded<T: Copy>(global: &T) -> T {
    // SAFETY: a reference to a live global; volatile keeps the compiler
    // from folding in the value it was compiled with.
    unsafe { core::ptr::read_volatile(global) }
}

/// Where `compact` copies the entries of a table that hold a source, and
/// what it is asked to do (see `xdpstat_common::compact`). Each loading
/// process has its own: they are never pinned.
#[map(name = "COMPACTED")]
pub static COMPACTED: Array<Compacted> = Array::with_max_entries(COMPACTED_ENTRIES, BPF_F_MMAPABLE);
#[map(name = "COMPACT_CONTROL")]
pub static COMPACT_CONTROL: Array<Control> = Array::with_max_entries(1, BPF_F_MMAPABLE);
