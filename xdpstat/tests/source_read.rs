//! Reading the source maps: batch lookups against per-key reads on the same
//! map, buckets larger than the batch buffer, and reads that race with
//! inserts and LRU evictions. Sources get into the maps through the real
//! program under BPF_PROG_TEST_RUN.

mod common;

use std::{
    collections::HashSet,
    net::{Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

use aya::maps::{MapData, PerCpuHashMap};
use nix::{
    sched::{CpuSet, sched_getaffinity, sched_setaffinity},
    unistd::Pid,
};
use xdpstat::{
    batch::{BatchReader, Outcome},
    datapath::Datapath,
    frames::{self, ethertype},
    source_read::{ReadMethod, SourceReader},
};
use xdpstat_common::{Counter, Ipv4Key, SOURCES_V4_MAP};

fn load(test: &str, max_sources: u32) -> Option<Datapath> {
    common::privileged(test).then(|| Datapath::load(max_sources).expect("program loads"))
}

fn v4_frame(n: u32) -> Vec<u8> {
    let source = Ipv4Addr::from(0xc612_0000 + n); // 198.18.0.0/15
    let packet = frames::ipv4_packet(source, Ipv4Addr::new(198, 19, 255, 1), &[], 10);
    frames::ethernet(&[], ethertype::IPV4, &packet)
}

fn v6_frame(n: u16) -> Vec<u8> {
    let source = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n);
    let packet = frames::ipv6_packet(source, "2001:db8::ffff".parse().unwrap(), &[], 10);
    frames::ethernet(&[], ethertype::IPV6, &packet)
}

fn send(datapath: &Datapath, frame: &[u8], times: u32) {
    datapath.test_run_repeated(frame, times).expect("test run");
}

/// Every key of the IPv4 map, read one key at a time.
fn per_key_keys(datapath: &Datapath) -> HashSet<Ipv4Key> {
    let map = datapath.source_map(SOURCES_V4_MAP).unwrap();
    let map: PerCpuHashMap<&MapData, Ipv4Key, Counter> = PerCpuHashMap::try_from(map.map).unwrap();
    map.keys().map(|key| key.unwrap()).collect()
}

/// Sends one packet from a source of its own on every CPU, so each CPU's
/// run of earlier sources is settled into the map.
fn settle_runs(datapath: &Datapath, settler: u32) {
    let everywhere = sched_getaffinity(Pid::from_raw(0)).unwrap();
    for cpu in 0..CpuSet::count() {
        if everywhere.is_set(cpu).unwrap_or(false) {
            let mut one = CpuSet::new();
            one.set(cpu).unwrap();
            sched_setaffinity(Pid::from_raw(0), &one).unwrap();
            send(datapath, &v4_frame(settler), 1);
        }
    }
    sched_setaffinity(Pid::from_raw(0), &everywhere).unwrap();
}

/// Every key of the IPv4 map as one batch read hands them out, in order.
fn batch_keys(datapath: &Datapath, entries: usize) -> (Vec<Ipv4Key>, Outcome) {
    let map = datapath.source_map(SOURCES_V4_MAP).unwrap();
    let cpus = aya::util::nr_cpus().unwrap();
    let mut reader = BatchReader::<Ipv4Key, Counter>::new(cpus, entries);
    let mut keys = Vec::new();
    let outcome = reader
        .read(map.fd().unwrap(), map.max_entries, |key, _| keys.push(*key))
        .expect("batch read");
    (keys, outcome)
}

#[test]
fn batch_and_per_key_reads_agree_for_every_batch_size() {
    // 64 entries means 64 hash buckets: 40 sources share some of them, so
    // one-entry batches must grow to take a whole bucket.
    let Some(datapath) = load("batch_and_per_key_reads_agree_for_every_batch_size", 64) else {
        return;
    };
    for n in 0..40 {
        send(&datapath, &v4_frame(n), n + 1);
    }
    for n in 0..30 {
        send(&datapath, &v6_frame(n), 2);
    }
    datapath.set_reader(SourceReader::new(ReadMethod::PerKey).unwrap());
    let per_key = datapath.snapshot("test").unwrap();
    assert_eq!(datapath.read_method(), ReadMethod::PerKey);
    assert_eq!(per_key.sources.family_lens(), (40, 30));
    for entries in [1, 2, 3, 7, 64, 4096] {
        datapath.set_reader(SourceReader::with_batch_entries(ReadMethod::Batch, entries).unwrap());
        let batch = datapath.snapshot("test").unwrap();
        assert_eq!(datapath.read_method(), ReadMethod::Batch);
        assert_eq!(batch.sources, per_key.sources, "{entries} entries per call");
        assert_eq!(batch.slots, per_key.slots);
        let (keys, outcome) = batch_keys(&datapath, entries);
        let unique: HashSet<Ipv4Key> = keys.iter().copied().collect();
        assert_eq!(
            unique.len(),
            keys.len(),
            "each key once with {entries} per call"
        );
        assert_eq!(unique, per_key_keys(&datapath));
        let Outcome::Read { calls } = outcome else {
            panic!("this kernel has batch lookups");
        };
        if entries >= 40 {
            assert_eq!(calls, 1, "one call returns them all and says it is done");
        } else {
            assert!(
                calls > 1,
                "{entries} per call cannot take {} at once",
                keys.len()
            );
        }
    }
    for n in 0..40 {
        let address = Ipv4Addr::from(0xc612_0000 + n).into();
        assert_eq!(per_key.sources[&address].packets, u64::from(n + 1));
    }
}

#[test]
fn sources_present_for_a_whole_read_are_seen_exactly_once_while_others_arrive() {
    const STABLE: u32 = 1_000;
    const ARRIVING: u32 = 3_000;
    let Some(datapath) = load(
        "sources_present_for_a_whole_read_are_seen_exactly_once_while_others_arrive",
        8_192,
    ) else {
        return;
    };
    for n in 0..STABLE {
        send(&datapath, &v4_frame(n), 1);
    }
    settle_runs(&datapath, u32::MAX >> 16);
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        scope.spawn(|| {
            for n in STABLE..STABLE + ARRIVING {
                send(&datapath, &v4_frame(n), 1);
            }
            done.store(true, Ordering::Release);
        });
        let mut reads = 0;
        while !done.load(Ordering::Acquire) || reads < 3 {
            let (keys, _) = batch_keys(&datapath, 16);
            let unique: HashSet<Ipv4Key> = keys.iter().copied().collect();
            assert_eq!(unique.len(), keys.len(), "no key twice in one read");
            for n in 0..STABLE {
                assert!(
                    unique.contains(&(0xc612_0000 + n).to_be_bytes()),
                    "stable {n}"
                );
            }
            reads += 1;
        }
    });
    // The first settler's runs were settled by the arriving sources; the
    // second one's stay in the CPUs' state.
    settle_runs(&datapath, (u32::MAX >> 16) - 1);
    let (keys, _) = batch_keys(&datapath, 16);
    let unique: HashSet<Ipv4Key> = keys.iter().copied().collect();
    assert_eq!(keys.len(), (STABLE + ARRIVING + 1) as usize);
    for n in (0..STABLE + ARRIVING).chain([u32::MAX >> 16]) {
        assert!(
            unique.contains(&(0xc612_0000 + n).to_be_bytes()),
            "source {n}"
        );
    }
}

#[test]
fn reads_racing_lru_evictions_never_see_a_source_twice() {
    const CAPACITY: u32 = 256;
    let Some(datapath) = load(
        "reads_racing_lru_evictions_never_see_a_source_twice",
        CAPACITY,
    ) else {
        return;
    };
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        scope.spawn(|| {
            for n in 0..20_000 {
                send(&datapath, &v4_frame(n), 1);
            }
            done.store(true, Ordering::Release);
        });
        let mut reads = 0;
        while !done.load(Ordering::Acquire) || reads < 3 {
            let (keys, _) = batch_keys(&datapath, 8);
            let unique: HashSet<Ipv4Key> = keys.iter().copied().collect();
            assert_eq!(unique.len(), keys.len(), "no key twice in one read");
            assert!(keys.len() <= CAPACITY as usize);
            let snapshot = datapath.snapshot("test").unwrap();
            assert!(snapshot.sources.len() <= CAPACITY as usize + 2);
            reads += 1;
        }
    });
    let snapshot = datapath.snapshot("test").unwrap();
    assert_eq!(snapshot.totals().ipv4.packets, 20_000);
}
