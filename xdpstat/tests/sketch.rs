//! The prefix sketch's code (the very functions the XDP program runs,
//! from `xdpstat_common::sketch`) against exact counting in user space, on
//! generated streams spread over CPUs: an estimate is never below the
//! truth, never above what a plain Count-Min sketch of the same cells
//! would say (conservative update only ever adds less), and a prefix with
//! more than half of a CPU's packets holds a slot of that CPU's
//! heavy-hitter table.

use std::collections::HashMap;

use proptest::prelude::*;
use xdpstat_common::{
    Counter,
    sketch::{Heavy, PrefixKey, SKETCH_ROWS, SKETCH_WIDTH, conservative_add, offer, sketch_cell},
};

const CPUS: usize = 3;

/// One CPU's sketch and heavy-hitter table, as the per-CPU maps hold them.
struct Cpu {
    cells: Vec<Counter>,
    heavy: Heavy,
}

impl Cpu {
    fn new() -> Self {
        Self {
            cells: vec![Counter::default(); SKETCH_ROWS * SKETCH_WIDTH as usize],
            heavy: Heavy::default(),
        }
    }

    /// What the datapath does for a run no entry took.
    fn add(&mut self, key: &PrefixKey, run: &Counter, seed: u64) {
        let at: Vec<usize> = (0..SKETCH_ROWS)
            .map(|row| sketch_cell(key, row, seed) as usize)
            .collect();
        let mut cells = Vec::with_capacity(SKETCH_ROWS);
        // Distinct rows are distinct cells: split the vector by them.
        let mut rest: &mut [Counter] = &mut self.cells;
        let mut taken = 0;
        for &index in &at {
            let (_, tail) = rest.split_at_mut(index - taken);
            let (cell, after) = tail.split_at_mut(1);
            cells.push(&mut cell[0]);
            rest = after;
            taken = index + 1;
        }
        let cells: [&mut Counter; SKETCH_ROWS] = cells.try_into().unwrap();
        let estimate = conservative_add(cells, run);
        offer(&mut self.heavy, key, &estimate, seed);
    }
}

fn key_of(prefix: u16) -> PrefixKey {
    [u64::from(prefix).wrapping_mul(0x0100_0000_01b3), 0]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn estimates_bound_the_truth_and_heavy_prefixes_are_found(
        seed in any::<u64>(),
        // (CPU, prefix among 300, packets of the run)
        stream in prop::collection::vec((0..CPUS, 0u16..300, 1u64..50), 1..3_000),
    ) {
        let mut cpus: Vec<Cpu> = (0..CPUS).map(|_| Cpu::new()).collect();
        let mut truth: HashMap<u16, u64> = HashMap::new();
        let mut per_cpu: Vec<HashMap<u16, u64>> = vec![HashMap::new(); CPUS];
        for &(cpu, prefix, packets) in &stream {
            let run = Counter { packets, bytes: packets * 64 };
            cpus[cpu].add(&key_of(prefix), &run, seed);
            *truth.entry(prefix).or_default() += packets;
            *per_cpu[cpu].entry(prefix).or_default() += packets;
        }
        for (&prefix, &count) in &truth {
            let key = key_of(prefix);
            let mut estimate = u64::MAX;
            let mut plain = u64::MAX;
            for row in 0..SKETCH_ROWS {
                let index = sketch_cell(&key, row, seed) as usize;
                let cell: u64 = cpus.iter().map(|cpu| cpu.cells[index].packets).sum();
                estimate = estimate.min(cell);
                // A plain Count-Min cell: every run of every prefix there.
                let all: u64 = truth
                    .iter()
                    .filter(|(other, _)| sketch_cell(&key_of(**other), row, seed) as usize == index)
                    .map(|(_, n)| n)
                    .sum();
                plain = plain.min(all);
            }
            prop_assert!(estimate >= count, "{prefix}: {estimate} < {count}");
            prop_assert!(estimate <= plain, "{prefix}: {estimate} > plain {plain}");
        }
        for (cpu, counts) in per_cpu.iter().enumerate() {
            let total: u64 = counts.values().sum();
            for (&prefix, &count) in counts {
                if count * 2 > total {
                    let key = key_of(prefix);
                    prop_assert!(
                        cpus[cpu].heavy.slots.iter().any(|s| s.estimate.packets > 0 && s.key == key),
                        "CPU {cpu}: {prefix} has {count} of {total} packets and no slot"
                    );
                }
            }
        }
    }
}
