//! A snapshot is one consistent-enough read of an interface's counters:
//! per-source counters plus the class slots, summed over CPUs, stamped with
//! when it was taken. Reports are computed from two snapshots.

use std::time::{Instant, SystemTime};

use serde::Serialize;
use xdpstat_common::{Counter, kinds::slot};

use crate::counts::{
    kinds::{Kinds, Protocols},
    prefixes::Prefixes,
    sources::SourceTable,
    verdicts::{VerdictRead, Verdicts},
};

/// Cumulative counters of one interface at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Monotonic time of the read, for rates.
    pub taken: Instant,
    /// Wall-clock time of the read, for the report's timestamp.
    pub wall: SystemTime,
    /// Every source the maps hold, summed over CPUs.
    pub sources: SourceTable,
    /// The class slots, summed over CPUs.
    pub slots: ClassSlots,
    /// Traffic per network prefix.
    pub prefixes: Prefixes,
    /// What the rules did.
    pub verdicts: VerdictRead,
    /// Traffic by protocol and port.
    pub kinds: Kinds,
}

/// The counters the datapath keeps outside the source tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassSlots {
    pub non_ip: Counter,
    pub malformed: Counter,
    pub unattributed_v4: Counter,
    pub unattributed_v6: Counter,
    /// Packets `--capture` would have copied but for its budget or a full
    /// ring.
    pub capture_skipped: Counter,
}

/// Totals per class, in the report's vocabulary, and per verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClassTotals {
    pub ipv4: Counter,
    pub ipv6: Counter,
    pub non_ip: Counter,
    pub malformed: Counter,
    /// Every frame under exactly one verdict (non-IP and malformed frames
    /// always pass).
    pub verdicts: Verdicts,
    /// Every IP packet under exactly one protocol.
    pub protocols: Protocols,
    /// IP packets that are fragments (the first one included).
    pub fragments: Counter,
    /// TCP packets with SYN set and ACK clear.
    pub tcp_syn: Counter,
}

impl Snapshot {
    /// A snapshot with no counts, taken now: the baseline at attach time.
    pub fn empty() -> Self {
        Self {
            taken: Instant::now(),
            wall: SystemTime::now(),
            sources: SourceTable::default(),
            slots: ClassSlots::default(),
            prefixes: Prefixes::default(),
            verdicts: VerdictRead::default(),
            kinds: Kinds::default(),
        }
    }

    /// Class totals: `ipv4` and `ipv6` are their sources plus what no source
    /// entry holds (the datapath does not count them twice).
    pub fn totals(&self) -> ClassTotals {
        let (mut ipv4, mut ipv6) = self.sources.family_sums();
        ipv4.add(&self.slots.unattributed_v4);
        ipv6.add(&self.slots.unattributed_v6);
        let mut all = ipv4;
        for counter in [&ipv6, &self.slots.non_ip, &self.slots.malformed] {
            all.add(counter);
        }
        ClassTotals {
            ipv4,
            ipv6,
            non_ip: self.slots.non_ip,
            malformed: self.slots.malformed,
            verdicts: Verdicts::of(&all, &self.verdicts.acted),
            protocols: self.kinds.protocols(),
            fragments: self.kinds.slots[slot::FRAGMENTS],
            tcp_syn: self.kinds.slots[slot::TCP_SYN],
        }
    }

    /// Keeps every count from going backwards against `previous`, the read
    /// before this one: a read that races the datapath settling a run
    /// misses the run for one read, so a decrease is no change. (A source
    /// xdpstat retired was taken out of `previous` first, see
    /// [`Snapshot::retire`].) Class slots only ever grow in the kernel.
    pub fn keep_monotonic(&mut self, previous: &Snapshot) {
        self.sources.raise_to(&previous.sources);
        self.prefixes.keep_monotonic(&previous.prefixes);
        self.kinds.keep_monotonic(&previous.kinds);
        let slots = &mut self.slots;
        for (now, before) in [
            (&mut slots.non_ip, previous.slots.non_ip),
            (&mut slots.malformed, previous.slots.malformed),
            (&mut slots.unattributed_v4, previous.slots.unattributed_v4),
            (&mut slots.unattributed_v6, previous.slots.unattributed_v6),
        ] {
            *now = now.at_least(&before);
        }
    }

    /// Moves the counts of sources retired since this read from them to
    /// `unattributed`, as the kernel did: totals stay as they were, and the
    /// next read compares against what its sources still hold.
    pub fn retire(&mut self, retired: &SourceTable) {
        let (v4, v6) = self.sources.retire(retired);
        self.slots.unattributed_v4.add(&v4);
        self.slots.unattributed_v6.add(&v6);
    }

    /// Packets and bytes that no source entry holds.
    pub fn unattributed(&self) -> Counter {
        let mut sum = self.slots.unattributed_v4;
        sum.add(&self.slots.unattributed_v6);
        sum
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    fn counter(packets: u64, bytes: u64) -> Counter {
        Counter { packets, bytes }
    }

    #[test]
    fn totals_add_sources_to_their_family_and_unattributed() {
        let mut snapshot = Snapshot::empty();
        let sources: [(IpAddr, Counter); 3] = [
            (Ipv4Addr::new(198, 18, 0, 1).into(), counter(3, 300)),
            (Ipv4Addr::new(198, 18, 0, 2).into(), counter(1, 64)),
            (
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
                counter(2, 200),
            ),
        ];
        snapshot.sources = sources.into_iter().collect();
        snapshot.slots = ClassSlots {
            non_ip: counter(5, 300),
            malformed: counter(1, 14),
            unattributed_v4: counter(7, 700),
            unattributed_v6: counter(11, 1100),
            capture_skipped: Counter::default(),
        };
        let totals = snapshot.totals();
        assert_eq!(totals.ipv4, counter(11, 1064));
        assert_eq!(totals.ipv6, counter(13, 1300));
        assert_eq!(totals.non_ip, counter(5, 300));
        assert_eq!(totals.malformed, counter(1, 14));
        assert_eq!(snapshot.unattributed(), counter(18, 1800));
    }
}
