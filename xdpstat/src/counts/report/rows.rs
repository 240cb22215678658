//! A report's sources in rank order, kept small until they are written.
//! A report of every source (JSON's default) made a whole row for each
//! (168 bytes, most of it packets by protocol and verdicts), which for a
//! million sources was 168 MB at every interval and a sort that moved
//! them all. Most sources sent one protocol and met no rule: their row
//! follows from their counts. So each source is kept as its counts (56
//! bytes), the few rows that say more are kept whole beside them, and
//! rows are made as they are read or written.

use std::{cmp::Reverse, net::IpAddr};

use serde::{Serialize, Serializer};
use xdpstat_common::{Counter, rules::Acted};

use super::{Rate, SourceRow, rank};
use crate::counts::{sources::SourceProtocols, verdicts::Verdicts};

/// The sources of a report, by [`rank`]. Serialized as a list of
/// [`SourceRow`]; equal when their rows are.
#[derive(Clone, Debug, Default)]
pub struct SourceRows {
    ranked: Vec<Ranked>,
    /// What the sources whose row does not follow from their counts say.
    more: Vec<More>,
    /// Seconds the rates are over.
    seconds: f64,
}

/// One source: its counts, and how to make its row.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Ranked {
    address: IpAddr,
    /// The protocol all its packets had, when `more` is [`NONE`].
    protocol: u8,
    /// Its place in [`SourceRows::more`], or [`NONE`].
    more: u32,
    now: Counter,
    /// What it sent over the interval.
    sent: Counter,
}

/// No place in [`SourceRows::more`]: the row follows from the counts.
const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq)]
struct More {
    protocols: SourceProtocols,
    verdicts: Verdicts,
}

impl SourceRows {
    /// No sources yet, with rates over `seconds`.
    pub fn over(seconds: f64) -> Self {
        Self {
            seconds,
            ..Self::default()
        }
    }

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

    /// Puts the sources in rank order.
    pub fn rank(&mut self) {
        self.ranked
            .sort_unstable_by_key(|source| Reverse(rank(source.address, &source.now)));
    }

    pub fn len(&self) -> usize {
        self.ranked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranked.is_empty()
    }

    /// The rows, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = SourceRow> + '_ {
        self.ranked.iter().map(|ranked| self.row(ranked))
    }

    fn row(&self, ranked: &Ranked) -> SourceRow {
        let rate = Rate::of_sent(&ranked.sent, self.seconds);
        let (protocols, verdicts) = match self.more.get(ranked.more as usize) {
            Some(more) => (more.protocols, more.verdicts),
            None => (
                SourceProtocols::of(usize::from(ranked.protocol), ranked.now.packets),
                Verdicts::of(&ranked.now, &Acted::default()),
            ),
        };
        SourceRow {
            address: ranked.address,
            packets: ranked.now.packets,
            bytes: ranked.now.bytes,
            pps: rate.pps,
            bps: rate.bps,
            protocols,
            verdicts,
        }
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
        let mut rows = SourceRows::over(2.0);
        for (address, now, before, protocols, acted) in given {
            let verdicts = Verdicts::of(&now, &acted.unwrap_or_default());
            rows.push(address, now, before, protocols, verdicts);
        }
        assert_eq!(rows.more.len(), 2);
        rows.rank();
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
    fn a_source_kept_as_its_counts_is_56_bytes() {
        assert_eq!(size_of::<Ranked>(), 56);
    }

    #[test]
    fn one_protocol_only_when_it_holds_every_packet() {
        assert_eq!(one_protocol(&SourceProtocols::of(2, 7), 7), Some(2));
        assert_eq!(one_protocol(&SourceProtocols::of(2, 7), 8), None);
        assert_eq!(one_protocol(&SourceProtocols([1, 0, 0, 1]), 2), None);
        assert_eq!(one_protocol(&SourceProtocols::default(), 0), None);
    }
}
