//! How much kernel memory one interface's maps take: the one formula the
//! loader announces and `doctor` judges against the memory available, so
//! neither can leave a map out. It follows how Linux charges each kind of
//! map (`map_mem_usage`, Linux 6.4): an array is its entries rounded to 8
//! bytes each (page-aligned, behind a page of header, when memory-mappable), a per-CPU array that
//! for every possible CPU plus a pointer per entry, a trie only what it
//! holds.

use xdpstat_common::{
    Counter, CpuState, Meta, V4Entry, V6Entry,
    rules::{MAX_RULES, Rule, SourceRow},
    sketch::{Heavy, SKETCH_ROWS, SKETCH_WIDTH},
    table_entries,
};

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
    /// The prefix sketches, the per-CPU state and the record.
    pub rest: u64,
}

impl MapBytes {
    pub fn total(&self) -> u64 {
        self.sources_v4 + self.sources_v6 + self.rows + self.rules + self.rest
    }
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
    let table =
        |entry: usize| mmapable(entry, entries) + mmapable(8, page_flags_len(entries, entry));
    let rows = if plan.rule_rows { entries } else { 1 };
    let sketch = SKETCH_ROWS as u32 * SKETCH_WIDTH;
    // An LPM trie node: the kernel's node header (about 40 bytes with
    // its allocation), the key's prefix length and address, the value.
    let trie_node = 40 + 4 + 16 + size_of::<Rule>() as u64;
    MapBytes {
        sources_v4: table(size_of::<V4Entry>()),
        sources_v6: table(size_of::<V6Entry>()),
        rows: 2 * mmapable(size_of::<SourceRow>(), rows),
        rules: per_cpu(size_of::<Counter>(), 2 * MAX_RULES, plan.cpus)
            + array(8, 2 * MAX_RULES)
            + array(size_of::<Rule>(), 2 * MAX_RULES)
            + array(8, 1)
            + u64::from(plan.rules) * trie_node,
        rest: 2 * per_cpu(size_of::<Counter>(), sketch, plan.cpus)
            + 2 * per_cpu(size_of::<Heavy>(), 1, plan.cpus)
            + per_cpu(size_of::<CpuState>(), 1, plan.cpus)
            + array(size_of::<Meta>(), 1),
    }
}

/// Possible CPUs on this host (what per-CPU maps are sized by).
pub fn possible_cpus() -> u32 {
    aya::util::nr_cpus().map_or(1, |n| n as u32)
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
        assert!(map_bytes(plan(64)).rules > 10 * map_bytes(plan(2)).rules);
    }
}
