//! A report's sources in rank order, kept small until they are written.
//! A report of every source (JSON's default) made a whole row for each
//! (168 bytes, most of it packets by protocol and verdicts), which for a
//! million sources was 168 MB at every interval and a sort that moved
//! them all. A report of the top few keeps each source as its counts (56
//! bytes), the few rows that say more kept whole beside them. A report of
//! every source keeps the two reads it compares (shared, not copied) and
//! each source's place in them with the counts it ranks by (24 bytes).
//! Rows are made as they are read or written.

use std::{cmp::Reverse, net::IpAddr, sync::Arc};

use serde::{Serialize, Serializer};
use xdpstat_common::{Counter, rules::Acted};

use super::{Rate, SourceRow, rank};
use crate::counts::{snapshot::Snapshot, sources::SourceProtocols, verdicts::Verdicts};

/// The sources of a report, by [`rank`]. Serialized as a list of
/// [`SourceRow`]; equal when their rows are.
#[derive(Clone, Debug, Default)]
pub struct SourceRows {
    kept: Kept,
    /// Seconds the rates are over.
    seconds: f64,
}

#[derive(Clone, Debug)]
enum Kept {
    /// A few sources, as their counts.
    Counted(Counted),
    /// Every source, as places in the reads.
    Placed(Placed),
}

impl Default for Kept {
    fn default() -> Self {
        Kept::Counted(Counted::default())
    }
}

/// Sources given one by one, in rank order (see [`SourceRows::counted`]).
#[derive(Clone, Debug, Default)]
pub struct Counted {
    ranked: Vec<Ranked>,
    /// What the sources whose row does not follow from their counts say.
    more: Vec<More>,
}

/// One source: its counts, and how to make its row.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Ranked {
    address: IpAddr,
    /// The protocol all its packets had, when `more` is [`NONE`].
    protocol: u8,
    /// Its place in [`Counted::more`], or [`NONE`].
    more: u32,
    now: Counter,
    /// What it sent over the interval.
    sent: Counter,
}

/// No place in [`Counted::more`], or no place in the earlier read.
const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq)]
struct More {
    protocols: SourceProtocols,
    verdicts: Verdicts,
}

/// Every source of `now` with packets, by rank, as places in `now` and
/// `before` (see `SourceTable::at`).
#[derive(Clone, Debug)]
struct Placed {
    now: Arc<Snapshot>,
    before: Arc<Snapshot>,
    order: Vec<Place>,
}

/// A source's counts to rank by, and its places: 24 bytes.
#[derive(Clone, Copy, Debug)]
struct Place {
    packets: u64,
    bytes: u64,
    now: u32,
    /// [`NONE`]: not in the earlier read.
    before: u32,
}

impl Counted {
    /// Adds a source with `now` counted, `before` at the last read.
    pub fn push(
        &mut self,
        address: IpAddr,
        now: Counter,
        before: Counter,
        protocols: SourceProtocols,
        verdicts: Verdicts,
    ) {
        let one = one_protocol(&protocols, now.packets)
            .filter(|_| verdicts == Verdicts::of(&now, &Acted::default()));
        let (protocol, more) = match one {
            Some(protocol) => (protocol, NONE),
            None => {
                self.more.push(More {
                    protocols,
                    verdicts,
                });
                // A u32 (a report of 2^32 sources whose rows say more
                // would need 480 GB for those rows alone), never NONE.
                (0, (self.more.len() - 1).min(NONE as usize - 1) as u32)
            }
        };
        self.ranked.push(Ranked {
            address,
            protocol,
            more,
            now,
            sent: now.since(&before),
        });
    }

    /// Every source of `now` with packets, as its counts, put in rank
    /// order: where places do not fit in 32 bits.
    fn every(before: &Snapshot, now: &Snapshot) -> Self {
        let mut counted = Counted::default();
        for (address, now_tally, before_tally) in now.sources.tallies_since(&before.sources) {
            if now_tally.counter.packets == 0 {
                continue;
            }
            let verdicts = now.verdicts.of_source(&address, &now_tally.counter);
            counted.push(
                address,
                now_tally.counter,
                before_tally.counter,
                now_tally.protocols,
                verdicts,
            );
        }
        counted.rank();
        counted
    }

    /// Puts the sources in rank order.
    fn rank(&mut self) {
        self.ranked
            .sort_unstable_by_key(|source| Reverse(rank(source.address, &source.now)));
    }

    fn row(&self, ranked: &Ranked, seconds: f64) -> SourceRow {
        let (protocols, verdicts) = match self.more.get(ranked.more as usize) {
            Some(more) => (more.protocols, more.verdicts),
            None => (
                SourceProtocols::of(usize::from(ranked.protocol), ranked.now.packets),
                Verdicts::of(&ranked.now, &Acted::default()),
            ),
        };
        source_row(
            ranked.address,
            ranked.now,
            &ranked.sent,
            protocols,
            verdicts,
            seconds,
        )
    }
}

impl Placed {
    /// Every source of `now` with packets, ranked; `None` past `u32::MAX`
    /// places (a table of 2^32 sources, 128 GB of rows).
    fn every(before: &Arc<Snapshot>, now: &Arc<Snapshot>) -> Option<Self> {
        let mut order = Vec::new();
        for (here, counter, there) in now.sources.places_since(&before.sources) {
            // An entry claimed by a run still on its CPU can be read with
            // no packets for an instant: no row for it.
            if counter.packets == 0 {
                continue;
            }
            order.push(Place {
                packets: counter.packets,
                bytes: counter.bytes,
                now: u32::try_from(here).ok()?,
                before: match there {
                    Some(there) => u32::try_from(there).ok().filter(|&b| b != NONE)?,
                    None => NONE,
                },
            });
        }
        // Places are in address order: the rank's last key.
        order.sort_unstable_by_key(|p| (Reverse(p.packets), Reverse(p.bytes), p.now));
        Some(Placed {
            now: Arc::clone(now),
            before: Arc::clone(before),
            order,
        })
    }

    fn row(&self, place: &Place, seconds: f64) -> SourceRow {
        let (address, tally) = self.now.sources.at(place.now as usize);
        let before = match place.before {
            NONE => Counter::default(),
            before => self.before.sources.counter_at(before as usize),
        };
        let verdicts = self.now.verdicts.of_source(&address, &tally.counter);
        let sent = tally.counter.since(&before);
        source_row(
            address,
            tally.counter,
            &sent,
            tally.protocols,
            verdicts,
            seconds,
        )
    }
}

/// A source's row.
fn source_row(
    address: IpAddr,
    now: Counter,
    sent: &Counter,
    protocols: SourceProtocols,
    verdicts: Verdicts,
    seconds: f64,
) -> SourceRow {
    let rate = Rate::of_sent(sent, seconds);
    SourceRow {
        address,
        packets: now.packets,
        bytes: now.bytes,
        pps: rate.pps,
        bps: rate.bps,
        protocols,
        verdicts,
    }
}

impl SourceRows {
    /// The sources `counted`, given in rank order (the top few come
    /// ranked from the heap that picked them), with rates over `seconds`.
    pub fn counted(counted: Counted, seconds: f64) -> Self {
        debug_assert!(
            counted
                .ranked
                .is_sorted_by_key(|source| Reverse(rank(source.address, &source.now))),
            "sources in rank order"
        );
        Self {
            kept: Kept::Counted(counted),
            seconds,
        }
    }

    /// Every source of `now` that has packets, with rates since `before`
    /// over `seconds`, ranked: the reads are kept (shared), with each
    /// source's place in them.
    pub fn every(before: &Arc<Snapshot>, now: &Arc<Snapshot>, seconds: f64) -> Self {
        match Placed::every(before, now) {
            Some(placed) => Self {
                kept: Kept::Placed(placed),
                seconds,
            },
            None => Self::counted(Counted::every(before, now), seconds),
        }
    }

    pub fn len(&self) -> usize {
        match &self.kept {
            Kept::Counted(counted) => counted.ranked.len(),
            Kept::Placed(placed) => placed.order.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = SourceRow> + '_ {
        (0..self.len()).map(move |at| match &self.kept {
            Kept::Counted(counted) => counted.row(&counted.ranked[at], self.seconds),
            Kept::Placed(placed) => placed.row(&placed.order[at], self.seconds),
        })
    }
}

impl PartialEq for SourceRows {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// The one protocol of `protocols` when every one of `packets` had it.
fn one_protocol(protocols: &SourceProtocols, packets: u64) -> Option<u8> {
    let mut sent = protocols.0.iter().enumerate().filter(|(_, n)| **n != 0);
    match (sent.next(), sent.next()) {
        (Some((protocol, &n)), None) if n == packets => u8::try_from(protocol).ok(),
        _ => None,
    }
}

impl Serialize for SourceRows {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use xdpstat_common::rules::verdict;

    use super::*;

    fn c(packets: u64, bytes: u64) -> Counter {
        Counter { packets, bytes }
    }

    #[test]
    fn rows_made_from_counts_equal_the_rows_given() {
        let a = IpAddr::from(Ipv4Addr::new(198, 18, 0, 1));
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let d = IpAddr::from(Ipv4Addr::new(198, 18, 0, 2));
        let mut acted = Acted::default();
        acted[verdict::DROPPED] = c(2, 100);
        let given = [
            // One protocol, no rule: made from its counts.
            (a, c(10, 1000), c(4, 400), SourceProtocols::of(1, 10), None),
            // Two protocols.
            (b, c(10, 1000), c(0, 0), SourceProtocols([4, 6, 0, 0]), None),
            // A rule dropped some.
            (
                d,
                c(5, 500),
                c(5, 500),
                SourceProtocols::of(0, 5),
                Some(acted),
            ),
        ];
        // Given out of order, then ranked.
        let mut counted = Counted::default();
        for (address, now, before, protocols, acted) in given.into_iter().rev() {
            let verdicts = Verdicts::of(&now, &acted.unwrap_or_default());
            counted.push(address, now, before, protocols, verdicts);
        }
        assert_eq!(counted.more.len(), 2);
        counted.rank();
        let rows = SourceRows::counted(counted, 2.0);
        let made: Vec<SourceRow> = rows.iter().collect();
        // Ties in packets and bytes: address order.
        assert_eq!(
            made.iter().map(|r| r.address).collect::<Vec<_>>(),
            [a, b, d]
        );
        assert_eq!(made[0].protocols, SourceProtocols::of(1, 10));
        assert_eq!((made[0].pps, made[0].bps), (3.0, 2400.0));
        assert_eq!(
            made[0].verdicts,
            Verdicts::of(&c(10, 1000), &Acted::default())
        );
        assert_eq!(made[1].protocols, SourceProtocols([4, 6, 0, 0]));
        assert_eq!(made[2].verdicts.dropped, c(2, 100));
        assert_eq!(made[2].verdicts.passed, c(3, 400));
        assert_eq!((made[2].pps, made[2].bps), (0.0, 0.0));
    }

    #[test]
    fn a_source_kept_as_its_counts_is_56_bytes_and_as_its_places_24() {
        assert_eq!(size_of::<Ranked>(), 56);
        assert_eq!(size_of::<Place>(), 24);
    }

    #[test]
    fn every_source_made_from_places_in_the_reads_equals_every_source_counted() {
        let a = IpAddr::from(Ipv4Addr::new(198, 18, 0, 1));
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let d = IpAddr::from(Ipv4Addr::new(198, 18, 0, 2));
        let e: IpAddr = "2001:db8::2".parse().unwrap();
        let mut before = Snapshot::empty();
        before.sources = [(a, c(4, 400)), (e, c(9, 900)), (b, c(1, 100))]
            .into_iter()
            .collect();
        let mut now = before.clone();
        now.taken += std::time::Duration::from_secs(2);
        now.sources.insert(a, c(10, 1000));
        now.sources.insert(
            b,
            crate::counts::sources::Tally {
                counter: c(10, 1000),
                protocols: SourceProtocols([4, 6, 0, 0]),
            },
        );
        now.sources.insert(d, c(10, 990));
        let mut acted = Acted::default();
        acted[verdict::DROPPED] = c(2, 100);
        now.verdicts.ruled.insert(d, acted);
        let (before, now) = (Arc::new(before), Arc::new(now));
        let placed = SourceRows::every(&before, &now, 2.0);
        assert!(matches!(placed.kept, Kept::Placed(_)));
        let counted = SourceRows::counted(Counted::every(&before, &now), 2.0);
        assert_eq!(placed, counted);
        // By packets, then bytes, then address; `e` sent nothing new but
        // is listed with what it has.
        let order: Vec<IpAddr> = placed.iter().map(|row| row.address).collect();
        assert_eq!(order, [a, b, d, e]);
        let rows: Vec<SourceRow> = placed.iter().collect();
        assert_eq!((rows[0].pps, rows[0].bps), (3.0, 2400.0));
        assert_eq!(rows[1].protocols, SourceProtocols([4, 6, 0, 0]));
        assert_eq!(rows[2].verdicts.dropped, c(2, 100));
        assert_eq!((rows[3].pps, rows[3].bps), (0.0, 0.0));
    }

    #[test]
    fn one_protocol_only_when_it_holds_every_packet() {
        assert_eq!(one_protocol(&SourceProtocols::of(2, 7), 7), Some(2));
        assert_eq!(one_protocol(&SourceProtocols::of(2, 7), 8), None);
        assert_eq!(one_protocol(&SourceProtocols([1, 0, 0, 1]), 2), None);
        assert_eq!(one_protocol(&SourceProtocols::default(), 0), None);
    }
}
