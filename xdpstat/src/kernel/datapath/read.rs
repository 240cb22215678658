//! Reading the counts back: the tables, the CPU slots, the rows and the
//! sketches into a snapshot, and retiring idle entries.

use std::sync::atomic::Ordering;

use super::*;
use crate::kernel::tables::Compaction;

impl Datapath {
    /// The program that copies the tables' sources out for a read, and
    /// where it copies them (`None` when it is not loaded).
    fn compaction(&self) -> Option<Compaction<'_>> {
        let program: &SchedClassifier = self.ebpf.program(COMPACT_PROGRAM_NAME)?.try_into().ok()?;
        program.fd().ok()?;
        Some(Compaction {
            program,
            copies: &self.maps.copies,
        })
    }

    /// Reads every counter into a snapshot. `interface` only labels errors.
    ///
    /// The tables are read before the CPU states, and the program starts a
    /// new run before it settles the old one: a run settled in between is
    /// missing from this snapshot (and in the next one), not counted twice.
    pub fn snapshot(&self, interface: &str) -> Result<Snapshot, XdpstatError> {
        let taken = Instant::now();
        let wall = SystemTime::now();
        let maps = TableMaps {
            v4: &self.maps.sources[0],
            v6: &self.maps.sources[1],
            compaction: self.compaction(),
        };
        // One hold of the tables for the whole read: what is busy is
        // marked against the same read the idle marks came from.
        let mut tables = self.lock_tables();
        let SourcesRead {
            mut sources,
            ruled,
            retired_v4,
            retired_v6,
        } = tables.read(&maps, interface)?;
        let mut port_sums = self.port_sums();
        let states = self
            .maps
            .cpu_state
            .get(&0, 0)
            .map_err(|e| XdpstatError::MapRead {
                interface: interface.to_owned(),
                map: CPU_STATE_MAP,
                source: e.into(),
            })?;
        let folded = fold_cpu_states(&states, retired_v4, retired_v6, &mut sources);
        tables.mark_busy(&folded.busy.v4, &folded.busy.v6);
        let sources = sources.finish_in(tables.sort_order());
        let mut prefixes = Prefixes::default();
        prefixes.add_held(&self.lens, &sources);
        tables.add_retired_prefixes(&mut prefixes);
        drop(tables);
        // Runs in progress that no entry took go into the sketch when they
        // settle: counted with its part now (their prefix's estimate grows
        // by exactly the run when it settles), so that no count moves from
        // the exact part to the estimate between reads, which would count
        // it twice once each part is kept from going backwards.
        for counter in &folded.sketched {
            prefixes.sketched.add(counter);
        }
        for (address, counter) in &folded.unheld {
            prefixes.sketched.add(counter);
            prefixes.add_estimate(self.lens.of(*address), counter, 0);
        }
        self.add_estimates(&mut prefixes, &folded.sketched, interface)?;
        // The CPUs' verdict totals were read after the rows (`ruled`, with
        // the tables), so no row holds more than the totals say.
        let (rules, events, bans_refused) = {
            let mut maps = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
            // Ended bans no longer act (their steps end in the kernel);
            // here they leave the set, and say so.
            if let Err(e) = maps.expire() {
                eprintln!("xdpstat: {interface}: taking out ended bans: {e}");
            }
            let rules = maps.hits().map_err(|source| XdpstatError::MapRead {
                interface: interface.to_owned(),
                map: "rules",
                source,
            })?;
            (rules, maps.take_events(), maps.bans_refused())
        };
        let verdicts = VerdictRead {
            acted: folded.acted,
            shared_bucket: folded.shared_bucket,
            ruled: by_source(ruled),
            rules,
            events,
            bans_refused,
        };
        let mut kinds = folded.kinds;
        add_port_runs(&states, &mut port_sums);
        kinds.ports = Ports::from_sums(&port_sums);
        Ok(Snapshot {
            taken,
            wall,
            sources,
            slots: folded.slots,
            prefixes,
            verdicts,
            kinds,
        })
    }

    /// Adds the sketches' estimates, for every prefix the read already has
    /// and for the prefixes the CPUs' heavy-hitter tables name: a
    /// prefix's estimate is, row by row, its cell summed over the CPUs, and
    /// the smallest of the rows. Never below what the sketch holds for it,
    /// so no listed prefix is ever counted short. The sketches are only
    /// read when something went into them (a table overflowed).
    pub(super) fn add_estimates(
        &self,
        prefixes: &mut Prefixes,
        sketched: &[Counter; 2],
        interface: &str,
    ) -> Result<(), XdpstatError> {
        let failed = |map: &'static str, e: aya::maps::MapError| XdpstatError::MapRead {
            interface: interface.to_owned(),
            map,
            source: e.into(),
        };
        for (v6, (sketch_map, heavy_map)) in [
            (false, (SKETCH_V4_MAP, HEAVY_V4_MAP)),
            (true, (SKETCH_V6_MAP, HEAVY_V6_MAP)),
        ] {
            let counted = sketched[usize::from(v6)];
            if counted.packets == 0 {
                continue;
            }
            let family = usize::from(v6);
            let (heavy, sketch) = (&self.maps.heavy[family], &self.maps.sketch[family]);
            let mut keys: Vec<PrefixKey> = prefixes
                .rows
                .keys()
                .filter(|prefix| prefix.addr().is_ipv6() == v6)
                .map(PrefixLens::key_of)
                .collect();
            for table in heavy.get(&0, 0).map_err(|e| failed(heavy_map, e))?.iter() {
                for slot in &table.slots {
                    if slot.estimate.packets != 0 {
                        keys.push(slot.key);
                    }
                }
            }
            keys.sort_unstable();
            keys.dedup();
            // The whole sketch, summed over the CPUs.
            let cells = crate::kernel::sections::Sections::new(
                sketch.fd().as_fd(),
                SKETCH_SECTION as usize,
                self.maps.cpus,
            )
            .sums(0, SKETCH_SECTION as usize)
            .map_err(|e| XdpstatError::MapRead {
                interface: interface.to_owned(),
                map: sketch_map,
                source: e.into(),
            })?;
            let error = error_bound(counted.packets);
            for key in keys {
                let mut estimate = cells[sketch_cell(&key, 0, self.seed) as usize];
                for row in 1..SKETCH_ROWS {
                    estimate = estimate.at_most(&cells[sketch_cell(&key, row, self.seed) as usize]);
                }
                if estimate.packets > 0 {
                    prefixes.add_estimate(self.lens.of_key(&key, v6), &estimate, error);
                }
            }
        }
        Ok(())
    }

    /// The port counters, summed over the CPUs' sections: a walk through
    /// memory, a word at a time (each CPU's words only grow). Read before
    /// the CPU states, whose port runs settle into them (see
    /// [`add_port_runs`]).
    fn port_sums(&self) -> Vec<Counter> {
        let section = (SIDES * PORTS) as usize;
        let mut sums = vec![Counter::default(); section];
        let ports = &self.maps.ports;
        for cpu in 0..self.maps.cpus {
            for (index, sum) in sums.iter_mut().enumerate() {
                let at = cpu * section + index;
                let packets = ports.load(at, 0, Ordering::Relaxed);
                if packets != 0 {
                    sum.add(&Counter {
                        packets,
                        bytes: ports.load(at, 8, Ordering::Relaxed),
                    });
                }
            }
        }
        sums
    }

    /// After a snapshot: if a table is nearly full, retires its idle
    /// entries so new senders find room (see `tables.rs`). Returns the
    /// sources it retired with their final counts, which from now on are in
    /// `unattributed`.
    pub fn retire_idle(&self) -> Result<SourceTable, XdpstatError> {
        self.lock_tables().retire_idle()
    }

    /// Chooses how the tables are read (memory-mapped by default; the
    /// benchmarks compare per-key reads).
    pub fn set_read_method(&self, method: ReadMethod) {
        self.lock_tables().set_method(method);
    }

    /// How snapshots read the tables.
    pub fn read_method(&self) -> ReadMethod {
        self.lock_tables().method()
    }

    pub(super) fn lock_tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Adds the CPUs' port runs in progress to the port counters read before
/// them: a run that settled in between is missing from this read (and in
/// the next), never counted twice, as with sources.
fn add_port_runs(states: &PerCpuValues<CpuState>, sums: &mut [Counter]) {
    let mut add = |side: u32, port: u32, run: &Counter| {
        if let Some(sum) = sums.get_mut((side * PORTS + (port & 0xffff)) as usize) {
            sum.add(run);
        }
    };
    for state in states.iter() {
        if state.run_tcp.packets != 0 {
            add(side::TCP_DST, state.run_tcp_port, &state.run_tcp);
        }
        if state.run_udp.packets != 0 {
            add(side::UDP_DST, state.run_udp_ports, &state.run_udp);
            add(side::UDP_SRC, state.run_udp_ports >> 16, &state.run_udp);
        }
    }
}

/// The table entries the CPUs' runs will settle into.
#[derive(Debug, Default)]
struct BusyEntries {
    v4: Vec<u32>,
    v6: Vec<u32>,
}

/// What the CPU states add to a read.
struct Folded {
    slots: ClassSlots,
    busy: BusyEntries,
    /// Runs in progress that no entry took, by source.
    unheld: Vec<(IpAddr, Counter)>,
    /// What went into the IPv4 and IPv6 sketches: the runs no entry took
    /// that have settled.
    sketched: [Counter; 2],
    /// Every packet under each verdict but `passed`, and what limit rules
    /// judged by their shared bucket.
    acted: Acted,
    shared_bucket: Counter,
    /// Traffic by protocol (the ports are read apart).
    kinds: Kinds,
}

/// Adds the CPUs' current runs to their sources and sums the class
/// counters. Unattributed is what the CPUs could not settle into an entry,
/// the runs in progress that found none, and `retired_*`, what retired
/// entries had counted.
fn fold_cpu_states(
    states: &PerCpuValues<CpuState>,
    retired_v4: Counter,
    retired_v6: Counter,
    sources: &mut SourceTableBuilder,
) -> Folded {
    let mut slots = ClassSlots {
        unattributed_v4: retired_v4,
        unattributed_v6: retired_v6,
        ..ClassSlots::default()
    };
    let mut busy = BusyEntries::default();
    let mut unheld = Vec::new();
    let mut sketched = [Counter::default(); 2];
    let mut acted = Acted::default();
    let mut shared_bucket = Counter::default();
    let mut kinds = Kinds::default();
    for state in states.iter() {
        kinds.add_cpu(state);
        for (total, part) in acted.iter_mut().zip(&state.acted) {
            total.add(part);
        }
        shared_bucket.add(&state.shared_bucket);
        slots.non_ip.add(&state.non_ip);
        slots.malformed.add(&state.malformed);
        slots.unattributed_v4.add(&state.unattributed_v4);
        slots.unattributed_v6.add(&state.unattributed_v6);
        slots.capture_skipped.add(&state.capture_skipped);
        sketched[0].add(&state.unattributed_v4);
        sketched[1].add(&state.unattributed_v6);
        if state.run_v4.packets != 0 {
            if state.run_v4_entry == NO_ENTRY {
                slots.unattributed_v4.add(&state.run_v4);
                unheld.push((Ipv4Addr::from(state.run_v4_source).into(), state.run_v4));
            } else {
                // A run's packets are all of its protocol.
                let source = Ipv4Addr::from(state.run_v4_source).into();
                sources.push_one_protocol(source, state.run_v4, state.run_v4_protocol as u8);
                busy.v4.push(state.run_v4_entry);
            }
        }
        if state.run_v6.packets != 0 {
            if state.run_v6_entry == NO_ENTRY {
                slots.unattributed_v6.add(&state.run_v6);
                unheld.push((Ipv6Addr::from(state.run_v6_source).into(), state.run_v6));
            } else {
                let source = Ipv6Addr::from(state.run_v6_source).into();
                sources.push_one_protocol(source, state.run_v6, state.run_v6_protocol as u8);
                busy.v6.push(state.run_v6_entry);
            }
        }
    }
    Folded {
        slots,
        busy,
        unheld,
        sketched,
        acted,
        shared_bucket,
        kinds,
    }
}

/// The rows read, by source: a source two entries hold (two CPUs met it
/// new at the same instant) has the verdicts of both.
fn by_source(rows: Vec<(IpAddr, Acted)>) -> std::collections::HashMap<IpAddr, Acted> {
    let mut sums: std::collections::HashMap<IpAddr, Acted> =
        std::collections::HashMap::with_capacity(rows.len());
    for (address, acted) in rows {
        let sum = sums.entry(address).or_default();
        for (sum, counter) in sum.iter_mut().zip(&acted) {
            sum.add(counter);
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_two_entries_hold_has_the_verdicts_of_both() {
        let (a, b): (IpAddr, IpAddr) =
            ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
        let acted = |dropped: u64, would_drop: u64| {
            let mut acted = Acted::default();
            acted[xdpstat_common::rules::verdict::DROPPED].packets = dropped;
            acted[xdpstat_common::rules::verdict::WOULD_DROP].packets = would_drop;
            acted
        };
        let sums = by_source(vec![
            (a, acted(3535, 2013)),
            (b, acted(1, 0)),
            (a, acted(452, 0)),
        ]);
        assert_eq!(sums[&a], acted(3987, 2013));
        assert_eq!(sums[&b], acted(1, 0));
    }
}
