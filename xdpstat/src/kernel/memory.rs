//! One datapath's maps as the kernel holds them: each map's kind, value
//! size and entries in one table ([`layouts`]), which the loader sizes the
//! maps by, the pin check holds pinned maps against, and the memory
//! figure the loader announces and `doctor` judges is summed from, so none
//! of them can leave a map out or size one differently. The memory follows
//! how Linux charges each kind of map (`map_mem_usage`, Linux 6.4): an
//! array is its entries rounded to 8 bytes each (page-aligned, behind a
//! page of header, when memory-mappable), a per-CPU array that for every
//! possible CPU plus a pointer per entry, a trie only what it holds.

use xdpstat_common::{
    COMPACT_CONTROL_MAP, COMPACTED_MAP, CPU_STATE_MAP, Counter, CpuState, META_MAP, MIXED_V4_MAP,
    MIXED_V6_MAP, Meta, PAGES_V4_MAP, PAGES_V6_MAP, SOURCES_V4_MAP, SOURCES_V6_MAP, V4Entry,
    V6Entry,
    compact::{COMPACTED_ENTRIES, Compacted, Control},
    kinds::{PORTS, PORTS_MAP, side::SIDES, source},
    rules::{
        BANS_MAP, BUCKETS_V4_MAP, BUCKETS_V6_MAP, BanRecord, Buckets, CHAINS_MAP, MAX_BANS,
        MAX_NODES, MAX_PREFIXES, MAX_RULES, Node, ROWS_V4_MAP, ROWS_V6_MAP, RULE_BUCKETS_MAP,
        RULE_HITS_MAP, RULE_HITS_SECTION, RULES_MAP, RULES_V4_MAPS, RULES_V6_MAPS, RULESET_ENTRIES,
        RULESET_MAP, Rule, SourceRow,
    },
    sketch::{HEAVY_V4_MAP, HEAVY_V6_MAP, Heavy, SKETCH_SECTION, SKETCH_V4_MAP, SKETCH_V6_MAP},
    table_entries,
};

use xdpstat_common::capture::{CAPTURE_MAP, CAPTURE_RING_BYTES, CAPTURE_SCRATCH_MAP, Scratch};

use crate::kernel::tables::page_flags_len;

const PAGE: u64 = 4096;

/// What the memory is asked for: the options a run would use.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// `--max-sources`.
    pub max_sources: u32,
    /// Whether rules can come (`--rules` or `--persist`): then every
    /// table entry has a row beside it for its rule state.
    pub rule_rows: bool,
    /// Rules in force (each one a node in a trie).
    pub rules: u32,
    /// Possible CPUs (a per-CPU map has a copy for each).
    pub cpus: u32,
}

/// Bytes by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapBytes {
    /// The IPv4 source table and its page flags.
    pub sources_v4: u64,
    /// The IPv6 source table and its page flags.
    pub sources_v6: u64,
    /// The rows beside the table entries (rule state per source).
    pub rows: u64,
    /// Rules: their hit counters, buckets, the rules by index and the tries.
    pub rules: u64,
    /// The per-port counters (every CPU has its own).
    pub ports: u64,
    /// The prefix sketches, the per-CPU state and the record.
    pub rest: u64,
}

impl MapBytes {
    pub fn total(&self) -> u64 {
        self.sources_v4 + self.sources_v6 + self.rows + self.rules + self.ports + self.rest
    }
}

/// How the kernel stores (and charges) a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    Array,
    /// An array user space maps into its memory.
    Mmapable,
    PerCpu,
    /// A longest-prefix trie: charged by what it holds.
    Trie,
    /// A ring buffer: its bytes, mapped twice.
    Ring,
}

/// Which part of [`MapBytes`] a map's memory counts under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    SourcesV4,
    SourcesV6,
    Rows,
    Rules,
    Ports,
    Rest,
    /// A process's own, never pinned: what it reads the tables through.
    Reading,
}

/// One map as the datapath has it.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub name: &'static str,
    pub storage: Storage,
    pub value_size: usize,
    pub max_entries: u32,
    part: Part,
}

impl Layout {
    /// Whether a persisted datapath pins the map (every map but the few
    /// each loading process has its own of).
    pub fn pinned(&self) -> bool {
        self.part != Part::Reading
    }
}

/// Every map of a datapath whose tables have `entries` entries and
/// `rows` rows beside them (`entries`, or 1 when no rules can come), on a
/// host with `cpus` possible CPUs (the port counters have a section each).
pub fn layouts(entries: u32, rows: u32, cpus: u32) -> [Layout; 31] {
    let layout = |name, storage, value_size, max_entries, part| Layout {
        name,
        storage,
        value_size,
        max_entries,
        part,
    };
    let (v4, v6) = (size_of::<V4Entry>(), size_of::<V6Entry>());
    let mixed = size_of::<[u64; source::PROTOCOLS]>();
    let sketch = cpus.saturating_mul(SKETCH_SECTION);
    let rule = size_of::<Rule>();
    // A trie's value: its prefix's chain head.
    let head = size_of::<u32>();
    use {Part::*, Storage::*};
    [
        layout(SOURCES_V4_MAP, Mmapable, v4, entries, SourcesV4),
        layout(
            PAGES_V4_MAP,
            Mmapable,
            8,
            page_flags_len(entries, v4),
            SourcesV4,
        ),
        layout(SOURCES_V6_MAP, Mmapable, v6, entries, SourcesV6),
        layout(
            PAGES_V6_MAP,
            Mmapable,
            8,
            page_flags_len(entries, v6),
            SourcesV6,
        ),
        layout(MIXED_V4_MAP, Mmapable, mixed, entries, SourcesV4),
        layout(MIXED_V6_MAP, Mmapable, mixed, entries, SourcesV6),
        layout(ROWS_V4_MAP, Mmapable, size_of::<SourceRow>(), rows, Rows),
        layout(ROWS_V6_MAP, Mmapable, size_of::<SourceRow>(), rows, Rows),
        layout(BUCKETS_V4_MAP, Mmapable, size_of::<Buckets>(), rows, Rows),
        layout(BUCKETS_V6_MAP, Mmapable, size_of::<Buckets>(), rows, Rows),
        layout(RULESET_MAP, Array, 8, RULESET_ENTRIES, Rules),
        layout(RULES_V4_MAPS[0], Trie, head, MAX_PREFIXES, Rules),
        layout(RULES_V4_MAPS[1], Trie, head, MAX_PREFIXES, Rules),
        layout(RULES_V6_MAPS[0], Trie, head, MAX_PREFIXES, Rules),
        layout(RULES_V6_MAPS[1], Trie, head, MAX_PREFIXES, Rules),
        layout(
            RULE_HITS_MAP,
            Mmapable,
            size_of::<Counter>(),
            cpus.saturating_mul(RULE_HITS_SECTION),
            Rules,
        ),
        layout(RULE_BUCKETS_MAP, Array, 8, 4 * MAX_RULES, Rules),
        layout(RULES_MAP, Array, rule, 2 * MAX_RULES, Rules),
        layout(CHAINS_MAP, Array, size_of::<Node>(), 2 * MAX_NODES, Rules),
        layout(BANS_MAP, Array, size_of::<BanRecord>(), MAX_BANS, Rules),
        layout(
            PORTS_MAP,
            Mmapable,
            size_of::<Counter>(),
            cpus.saturating_mul(SIDES * PORTS),
            Ports,
        ),
        layout(CPU_STATE_MAP, PerCpu, size_of::<CpuState>(), 1, Rest),
        layout(SKETCH_V4_MAP, Mmapable, size_of::<Counter>(), sketch, Rest),
        layout(SKETCH_V6_MAP, Mmapable, size_of::<Counter>(), sketch, Rest),
        layout(HEAVY_V4_MAP, PerCpu, size_of::<Heavy>(), 1, Rest),
        layout(HEAVY_V6_MAP, PerCpu, size_of::<Heavy>(), 1, Rest),
        layout(META_MAP, Array, size_of::<Meta>(), 1, Rest),
        layout(CAPTURE_MAP, Ring, 0, CAPTURE_RING_BYTES, Rest),
        layout(CAPTURE_SCRATCH_MAP, PerCpu, size_of::<Scratch>(), 1, Rest),
        layout(
            COMPACTED_MAP,
            Mmapable,
            size_of::<Compacted>(),
            COMPACTED_ENTRIES,
            Reading,
        ),
        layout(
            COMPACT_CONTROL_MAP,
            Mmapable,
            size_of::<Control>(),
            1,
            Reading,
        ),
    ]
}

/// The name of every map a persisted datapath pins.
pub fn map_names() -> Vec<&'static str> {
    layouts(1, 1, 1)
        .into_iter()
        .filter(Layout::pinned)
        .map(|map| map.name)
        .collect()
}

fn array(value: usize, entries: u32) -> u64 {
    (value as u64).next_multiple_of(8) * u64::from(entries)
}

/// A memory-mappable array's header has a page of its own.
fn mmapable(value: usize, entries: u32) -> u64 {
    PAGE + array(value, entries).next_multiple_of(PAGE)
}

fn per_cpu(value: usize, entries: u32, cpus: u32) -> u64 {
    array(value, entries) * u64::from(cpus) + 8 * u64::from(entries)
}

/// The kernel memory of one interface's maps under `plan`.
pub fn map_bytes(plan: Plan) -> MapBytes {
    let entries = table_entries(plan.max_sources);
    let rows = if plan.rule_rows { entries } else { 1 };
    let mut bytes = MapBytes::default();
    for map in layouts(entries, rows, plan.cpus) {
        let charged = match map.storage {
            Storage::Array => array(map.value_size, map.max_entries),
            Storage::Mmapable => mmapable(map.value_size, map.max_entries),
            Storage::PerCpu => per_cpu(map.value_size, map.max_entries, plan.cpus),
            Storage::Trie => 0,
            Storage::Ring => u64::from(map.max_entries) + PAGE,
        };
        *match map.part {
            Part::SourcesV4 => &mut bytes.sources_v4,
            Part::SourcesV6 => &mut bytes.sources_v6,
            Part::Rows => &mut bytes.rows,
            Part::Rules => &mut bytes.rules,
            Part::Ports => &mut bytes.ports,
            Part::Rest | Part::Reading => &mut bytes.rest,
        } += charged;
    }
    // An LPM trie node as Linux charges it: 24 bytes of node, the
    // address (4 bytes for IPv4, 16 for IPv6: counted as IPv6, a bound),
    // the value (a 4-byte chain head). Measured: a million prefixes,
    // 700,000 IPv4 and 300,000 IPv6, charged 35.6 MB in all, under this
    // bound's 44 MB.
    let trie_node = 24 + 16 + size_of::<u32>() as u64;
    bytes.rules += u64::from(plan.rules) * trie_node;
    bytes
}

/// Possible CPUs on this host (what per-CPU maps are sized by).
pub fn possible_cpus() -> u32 {
    // Read once (the first call is at load, before any traffic): the
    // count does not change while xdpstat runs, and a read of /sys in the
    // middle of counting needs a file descriptor, which may be short then.
    static CPUS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    if let Some(&cpus) = CPUS.get() {
        return cpus;
    }
    match aya::util::nr_cpus() {
        Ok(cpus) => *CPUS.get_or_init(|| cpus as u32),
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_the_tables_only_when_rules_can_come() {
        let plan = Plan {
            max_sources: 65_536,
            rule_rows: false,
            rules: 0,
            cpus: 2,
        };
        let without = map_bytes(plan);
        let with = map_bytes(Plan {
            rule_rows: true,
            ..plan
        });
        assert_eq!(without.sources_v4, with.sources_v4);
        assert!(with.rows > 100 * without.rows);
        assert_eq!(
            with.total() - without.total(),
            with.rows - without.rows,
            "only the rows differ"
        );
    }

    #[test]
    fn per_cpu_maps_grow_with_the_cpus() {
        let plan = |cpus| Plan {
            max_sources: 1024,
            rule_rows: true,
            rules: 0,
            cpus,
        };
        assert!(map_bytes(plan(64)).rules > 5 * map_bytes(plan(2)).rules);
        // Three sides of 65,536 ports at 16 bytes for each CPU, behind a
        // page of header.
        assert_eq!(map_bytes(plan(2)).ports, 4096 + 2 * 3 * 65_536 * 16);
    }
}
