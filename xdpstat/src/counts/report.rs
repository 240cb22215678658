//! A report is what the user reads for one interface and one interval:
//! cumulative counts since attach, and rates over the time that actually
//! passed between two snapshots.

use std::{
    cmp::{Ordering, Reverse},
    collections::BinaryHeap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use xdpstat_common::Counter;

mod rows;

pub use rows::{Counted, SourceRows};

use crate::{
    counts::{
        snapshot::{ClassTotals, Snapshot},
        sources::SourceProtocols,
        verdicts::{RuleRow, Unattributed, Verdicts},
    },
    rules::{ban::Event, in_force::RuleHits},
};

/// One interface's report, serialised as the JSON output's schema.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Wall-clock time of the read, RFC 3339 in UTC to the second.
    pub time: String,
    pub interface: String,
    /// Seconds between the two reads the rates come from; `None` when there
    /// is no interval (a replay).
    pub interval_s: Option<f64>,
    /// When the counts began (RFC 3339, UTC): the attach, or a replayed
    /// capture's first frame. Not when this process started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counting_since: Option<String>,
    pub totals: ClassTotals,
    /// What no source entry holds (no entry within reach, or retired).
    pub unattributed: Counter,
    /// Sources by packets, descending, cut to `--top`.
    pub sources: SourceRows,
    /// Network prefixes by packets, descending, cut to `--top`.
    pub prefixes: Vec<PrefixRow>,
    /// How the prefix totals were made, both families: `exact`, what
    /// xdpstat had the facts of; `sketched`, what no entry held (counted
    /// into the sketches, estimated per prefix); `unkept`, retired counts
    /// no prefix holds.
    /// `exact + sketched + unkept` is `ipv4 + ipv6`.
    pub prefix_parts: PrefixParts,
    /// The rules in force and the packets each matched, by packets,
    /// descending (ties in the file's order), cut to `--top`.
    pub rules: Vec<RuleRow>,
    /// How many rules are in force (before the `--top` cut).
    #[serde(skip)]
    pub rule_count: usize,
    /// The bans in force (every one), longest-running first.
    pub bans: Vec<BanRow>,
    /// What happened to bans since the previous report, in order.
    pub events: Vec<EventRow>,
    /// Bans refused because `max_bans` were in force, since the attach.
    pub bans_refused: u64,
    /// Packets `--capture` would have copied but for its per-CPU budget
    /// or a full ring (zero without `--capture`).
    pub capture_skipped: Counter,
    /// Why the capture file stopped being written, if it did (counting
    /// goes on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_stopped: Option<String>,
    /// Verdicts other than `passed` no source holds (its source had no
    /// table entry, or the entry was retired).
    pub unattributed_verdicts: Unattributed,
    /// Packets limit rules judged by their shared bucket (see docs/GUIDE.md, rules).
    pub limit_shared_bucket: Counter,
    /// Ports by packets, descending (TCP destination, UDP destination and
    /// UDP source ports together), cut to `--top`.
    pub ports: Vec<PortRow>,
    /// How many ports saw packets (before the `--top` cut).
    #[serde(skip)]
    pub port_count: usize,
    /// How many sources the map holds (before the `--top` cut).
    #[serde(skip)]
    pub source_count: usize,
    /// How the program is attached, for the plain header (`native XDP, bpf link`).
    #[serde(skip)]
    pub attachment: Option<String>,
}

/// The parts the prefix totals are made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PrefixParts {
    pub exact: Counter,
    pub sketched: Counter,
    pub unkept: Counter,
}

/// One prefix's line in a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrefixRow {
    /// `198.51.100.0/24`, `2001:db8:bad::/48`.
    pub prefix: String,
    pub packets: u64,
    pub bytes: u64,
    pub pps: f64,
    pub bps: f64,
    /// Whether part of the count is the sketch's estimate: never below
    /// the truth, above it by at most `error_packets` (probability 1 − δ).
    pub estimated: bool,
    pub error_packets: u64,
    /// The exact part.
    pub exact_packets: u64,
    pub exact_bytes: u64,
}

/// One port's line in a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortRow {
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// `dst` or `src`.
    pub side: &'static str,
    pub port: u16,
    pub packets: u64,
    pub bytes: u64,
    pub pps: f64,
    pub bps: f64,
}

/// One source's line in a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceRow {
    pub address: IpAddr,
    pub packets: u64,
    pub bytes: u64,
    /// Packets per second over the interval.
    pub pps: f64,
    /// Bits per second over the interval.
    pub bps: f64,
    /// Its packets by protocol (cumulative, as `packets`): every packet
    /// under exactly one of `tcp`, `udp`, `icmp` (either family), `other`.
    pub protocols: SourceProtocols,
    /// What the rules did to its packets.
    pub verdicts: Verdicts,
}

impl Report {
    /// The report for `current`, with rates against `previous` (the last
    /// report's snapshot, or the empty one taken at attach time).
    pub fn between(
        interface: &str,
        previous: &Arc<Snapshot>,
        current: &Arc<Snapshot>,
        top: Option<usize>,
    ) -> Self {
        let seconds = current
            .taken
            .saturating_duration_since(previous.taken)
            .as_secs_f64();
        let (sources, source_count) = match top {
            // A few: ranked first, then looked up.
            Some(top) => {
                // Counted in the same pass that ranks them, as numbers:
                // making an address of each of a million sources cost more
                // than the ranking.
                let mut count = 0;
                let v4 = current
                    .sources
                    .v4()
                    .map(|(v4, c)| (AddressOrder::v4(v4), c));
                let v6 = current
                    .sources
                    .v6()
                    .map(|(v6, c)| (AddressOrder::v6(v6), c));
                // An entry claimed by a run still on its CPU can be read
                // with no packets for an instant: no row for it.
                let counted = v4.chain(v6).filter(|(_, c)| c.packets > 0);
                let ranked = top_by_packets(counted.inspect(|_| count += 1), top);
                let mut rows = Counted::default();
                for (address, now) in ranked {
                    let before = previous.sources.get(&address).unwrap_or_default();
                    let protocols = current
                        .sources
                        .tally(&address)
                        .map(|tally| tally.protocols)
                        .unwrap_or_default();
                    let verdicts = current.verdicts.of_source(&address, &now);
                    rows.push(address, now, before, protocols, verdicts);
                }
                (SourceRows::counted(rows, seconds), count)
            }
            // Every source (JSON): one walk of both reads in address
            // order, then the sources' places in them put in rank order;
            // each row is made from the reads as it is written.
            None => {
                let rows = SourceRows::every(previous, current, seconds);
                let count = rows.len();
                (rows, count)
            }
        };
        let prefixes = current
            .prefixes
            .ranked(top)
            .into_iter()
            .map(|(prefix, count)| {
                let now = count.total();
                let before = previous.prefixes.total_of(&prefix);
                let rate = Rate::between(&now, &before, seconds);
                PrefixRow {
                    prefix: prefix.to_string(),
                    packets: now.packets,
                    bytes: now.bytes,
                    pps: rate.pps,
                    bps: rate.bps,
                    estimated: count.estimated.packets > 0,
                    error_packets: count.error_packets,
                    exact_packets: count.exact.packets,
                    exact_bytes: count.exact.bytes,
                }
            })
            .collect();
        let ports = current
            .kinds
            .ports
            .ranked(top, None)
            .into_iter()
            .map(|(key, now)| {
                let rate = Rate::between(&now, &previous.kinds.ports.get(&key), seconds);
                PortRow {
                    protocol: key.protocol(),
                    side: key.side_name(),
                    port: key.port,
                    packets: now.packets,
                    bytes: now.bytes,
                    pps: rate.pps,
                    bps: rate.bps,
                }
            })
            .collect();
        // The rules (bans are listed apart).
        let mut ranked_rules: Vec<&RuleHits> = current
            .verdicts
            .rules
            .iter()
            .filter(|hits| hits.rule.ban.is_none())
            .collect();
        Self {
            time: rfc3339(current.wall),
            interface: interface.to_owned(),
            interval_s: Some(seconds),
            counting_since: None,
            totals: current.totals(),
            unattributed: current.unattributed(),
            sources,
            prefixes,
            prefix_parts: PrefixParts {
                exact: current.prefixes.exact_total(),
                sketched: current.prefixes.sketched,
                unkept: current.prefixes.unkept,
            },
            rule_count: ranked_rules.len(),
            rules: {
                // Ranked first (a stable sort: ties in file order), so
                // that only the rules shown are made rows.
                ranked_rules.sort_by_key(|hits| Reverse(hits.counter.packets));
                ranked_rules.truncate(top.unwrap_or(usize::MAX));
                ranked_rules.into_iter().map(RuleRow::from).collect()
            },
            bans: ban_rows(&current.verdicts.rules),
            events: current.verdicts.events.iter().map(EventRow::from).collect(),
            bans_refused: current.verdicts.bans_refused,
            capture_skipped: current.slots.capture_skipped,
            capture_stopped: None,
            unattributed_verdicts: current.verdicts.unattributed().into(),
            limit_shared_bucket: current.verdicts.shared_bucket,
            ports,
            port_count: current.kinds.ports.len(),
            source_count,
            attachment: None,
        }
    }

    /// The report, saying that its counts began at `since`.
    pub fn counting_since(mut self, since: SystemTime) -> Self {
        self.counting_since = Some(rfc3339(since));
        self
    }
}

/// One ban in force, as the reports and `xdpstat bans` list it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRow {
    pub prefix: String,
    /// `drop`, `limit 1000 pps`.
    pub action: String,
    /// `hand`, or the trigger's name.
    pub origin: String,
    pub reason: String,
    /// RFC 3339.
    pub since: String,
    /// RFC 3339; `null`: until unbanned.
    pub until: Option<String>,
    /// What the ban judged since it began (for a drop, what it dropped).
    pub packets: u64,
    pub bytes: u64,
}

/// The bans among `rules`, oldest first.
pub fn ban_rows(rules: &[RuleHits]) -> Vec<BanRow> {
    let mut bans: Vec<(&crate::rules::ban::Ban, Counter)> = rules
        .iter()
        .filter_map(|hits| hits.rule.ban.as_ref().map(|ban| (ban, hits.counter)))
        .filter(|(ban, _)| !ban.taken_out())
        .collect();
    bans.sort_by_key(|(ban, _)| (ban.since, ban.prefix));
    bans.into_iter()
        .map(|(ban, counter)| BanRow {
            prefix: ban.prefix.to_string(),
            action: ban.describe(),
            origin: ban.origin.clone(),
            reason: ban.reason.clone(),
            since: rfc3339(ban.since),
            until: ban.until.map(rfc3339),
            packets: counter.packets,
            bytes: counter.bytes,
        })
        .collect()
}

/// One event, as the reports say it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventRow {
    pub time: String,
    pub event: &'static str,
    pub prefix: String,
    pub origin: String,
    pub detail: String,
}

impl From<&Event> for EventRow {
    fn from(event: &Event) -> Self {
        Self {
            time: rfc3339(event.time),
            event: event.event.name(),
            prefix: event.prefix.to_string(),
            origin: event.origin.clone(),
            detail: event.detail.clone(),
        }
    }
}

/// Packets and bits per second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate {
    pub pps: f64,
    pub bps: f64,
}

impl Rate {
    /// What was counted from `before` to `now` (see [`Counter::since`]),
    /// per second of `seconds`; nothing when no time passed.
    pub fn between(now: &Counter, before: &Counter, seconds: f64) -> Self {
        Self::of_sent(&now.since(before), seconds)
    }

    /// `sent` per second of `seconds`; nothing when no time passed.
    pub fn of_sent(sent: &Counter, seconds: f64) -> Self {
        if seconds <= 0.0 {
            return Self::default();
        }
        Self {
            pps: sent.packets as f64 / seconds,
            bps: sent.bytes as f64 * 8.0 / seconds,
        }
    }

    pub fn add(&mut self, other: &Rate) {
        self.pps += other.pps;
        self.bps += other.bps;
    }
}

/// The order sources are listed in: packets descending, then bytes
/// descending, then address ascending, so that equal counts always print in
/// the same order. Greater is listed first.
fn rank(address: IpAddr, counter: &Counter) -> (u64, u64, Reverse<AddressOrder>) {
    rank_of(AddressOrder::of(address), counter)
}

/// [`rank`], of an address as a number.
fn rank_of(address: AddressOrder, counter: &Counter) -> (u64, u64, Reverse<AddressOrder>) {
    (counter.packets, counter.bytes, Reverse(address))
}

/// An address as a number that orders as [`IpAddr`] does (IPv4 before
/// IPv6, each by value): a million comparisons of it cost what a
/// million of two integers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct AddressOrder(bool, u128);

impl AddressOrder {
    fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self::v4(v4.into()),
            IpAddr::V6(v6) => Self::v6(v6.into()),
        }
    }

    fn v4(address: u32) -> Self {
        AddressOrder(false, address.into())
    }

    fn v6(address: u128) -> Self {
        AddressOrder(true, address)
    }

    fn address(self) -> IpAddr {
        match self {
            AddressOrder(false, v4) => IpAddr::V4((v4 as u32).into()),
            AddressOrder(true, v6) => IpAddr::V6(v6.into()),
        }
    }
}

/// The `top` first sources in [`rank`] order, from a heap of `top`
/// entries, so a million sources cost one pass and no million-row list.
/// `sources` come in ascending address order: a source whose counts only
/// tie those of the last of the heap ranks below it, so a source is
/// passed over on its counts alone unless they are greater (a spoofed
/// flood is a million sources of one packet each).
fn top_by_packets(
    sources: impl Iterator<Item = (AddressOrder, Counter)>,
    top: usize,
) -> Vec<(IpAddr, Counter)> {
    let ranked = |(address, counter): (AddressOrder, Counter)| Ranked {
        key: rank_of(address, &counter),
        counter,
    };
    // A min-heap of the best `top` so far: its root is the one to beat.
    let mut best: BinaryHeap<Reverse<Ranked>> = BinaryHeap::with_capacity(top + 1);
    let mut last: Option<AddressOrder> = None;
    for source in sources {
        debug_assert!(last < Some(source.0), "sources in ascending address order");
        last = Some(source.0);
        if best.len() < top {
            best.push(Reverse(ranked(source)));
            continue;
        }
        let Some(Reverse(worst)) = best.peek() else {
            continue;
        };
        let counts = |c: &Counter| (c.packets, c.bytes);
        if counts(&source.1) <= counts(&worst.counter) {
            continue;
        }
        if let Some(mut worst) = best.peek_mut() {
            *worst = Reverse(ranked(source));
        }
    }
    let mut rows: Vec<Ranked> = best.into_iter().map(|Reverse(r)| r).collect();
    rows.sort_unstable_by(|a, b| b.cmp(a));
    rows.into_iter()
        .map(|r| (r.key.2.0.address(), r.counter))
        .collect()
}

/// A source with its [`rank`] key; ordered by the key alone.
struct Ranked {
    key: (u64, u64, Reverse<AddressOrder>),
    counter: Counter,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

/// RFC 3339 in UTC to the second. RFC 3339 ends with the year 9999; a
/// later time (a replayed capture may hold any timestamp) prints as its
/// last second.
pub fn rfc3339(time: SystemTime) -> String {
    let last = UNIX_EPOCH + Duration::from_secs(LAST_RFC3339_SECOND);
    humantime::format_rfc3339_seconds(time.min(last)).to_string()
}

/// 9999-12-31T23:59:59Z, in seconds since the epoch.
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        time::{Duration, UNIX_EPOCH},
    };

    use super::*;
    use crate::counts::sources::Tally;

    /// The report between copies of two reads.
    fn between(interface: &str, before: &Snapshot, now: &Snapshot, top: Option<usize>) -> Report {
        Report::between(
            interface,
            &Arc::new(before.clone()),
            &Arc::new(now.clone()),
            top,
        )
    }

    fn snapshot_at(seconds: u64, sources: &[(IpAddr, u64, u64)]) -> Snapshot {
        let base = Snapshot::empty();
        Snapshot {
            taken: base.taken + Duration::from_secs(seconds),
            wall: UNIX_EPOCH + Duration::from_secs(1_795_000_000 + seconds),
            sources: sources
                .iter()
                .map(|&(a, packets, bytes)| (a, Counter { packets, bytes }))
                .collect(),
            slots: Default::default(),
            prefixes: Default::default(),
            verdicts: Default::default(),
            kinds: Default::default(),
        }
    }

    fn v4(last: u8) -> IpAddr {
        Ipv4Addr::new(198, 18, 0, last).into()
    }

    #[test]
    fn rules_are_listed_by_packets_and_cut_to_top_ties_in_file_order() {
        use xdpstat_common::rules::Rule;

        use crate::rules::in_force::InForce;
        let before = snapshot_at(0, &[]);
        let mut now = snapshot_at(1, &[]);
        now.verdicts.rules = [
            ("198.18.1.0/24", 5),
            ("198.18.2.0/24", 9),
            ("198.18.3.0/24", 5),
        ]
        .iter()
        .map(|&(prefix, packets)| RuleHits {
            rule: InForce {
                ban: None,
                prefix: Some(prefix.parse().unwrap()),
                matching: Default::default(),
                list: None,
                kernel: Rule::default(),
            },
            counter: Counter {
                packets,
                bytes: packets * 100,
            },
        })
        .collect();
        let listed = |top| -> Vec<String> {
            between("eth0", &before, &now, top)
                .rules
                .into_iter()
                .map(|rule| rule.label().to_owned())
                .collect()
        };
        assert_eq!(
            listed(None),
            ["198.18.2.0/24", "198.18.1.0/24", "198.18.3.0/24"]
        );
        assert_eq!(listed(Some(2)), ["198.18.2.0/24", "198.18.1.0/24"]);
        assert_eq!(between("eth0", &before, &now, Some(1)).rule_count, 3);
    }

    #[test]
    fn rates_use_the_elapsed_time_and_new_sources_count_from_zero() {
        let before = snapshot_at(0, &[(v4(1), 100, 10_000)]);
        let after = snapshot_at(2, &[(v4(1), 300, 30_000), (v4(2), 50, 5_000)]);
        let mut before = before;
        before.taken = after.taken - Duration::from_secs(2);
        let report = between("x0", &before, &after, None);
        assert_eq!(report.interval_s, Some(2.0));
        let rows: Vec<SourceRow> = report.sources.iter().collect();
        assert_eq!(rows[0].address, v4(1));
        assert_eq!(rows[0].pps, 100.0);
        assert_eq!(rows[0].bps, 80_000.0);
        assert_eq!(rows[1].pps, 25.0);
        assert_eq!(rows[1].bps, 20_000.0);
    }

    proptest::proptest! {
        /// Every source, ranked whole (JSON, the live view), is a
        /// top cut longer than the list: the same rows, rates,
        /// protocols and order, with sources new, gone, idle and mixed.
        #[test]
        fn every_source_ranked_whole_equals_a_longer_top_cut(
            sources in proptest::collection::vec(
                (0u8..30, proptest::bool::ANY, 0u64..4, 0u64..3, 0u8..3, 0u64..3, 0u64..3),
                0..60,
            ),
        ) {
            let address = |n: u8, v6: bool| -> IpAddr {
                if v6 {
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n.into()))
                } else {
                    v4(n)
                }
            };
            let (mut before, mut now) = (snapshot_at(10, &[]), snapshot_at(12, &[]));
            for &(n, v6, earlier, more, protocol, udp, dropped) in &sources {
                let at = address(n, v6);
                if earlier > 0 {
                    before.sources.insert(at, Counter { packets: earlier, bytes: earlier * 100 });
                }
                let packets = earlier + more;
                // Some of its packets TCP, the rest `protocol`: mixed or not.
                let tcp = udp.min(packets);
                let mut counts = [0u64; 4];
                counts[0] = tcp;
                counts[usize::from(protocol) + 1] += packets - tcp;
                now.sources.insert(
                    at,
                    Tally {
                        counter: Counter { packets, bytes: packets * 100 + u64::from(n) },
                        protocols: SourceProtocols(counts),
                    },
                );
                // A rule dropped some of them.
                if dropped > 0 {
                    let mut acted = xdpstat_common::rules::Acted::default();
                    acted[xdpstat_common::rules::verdict::DROPPED] =
                        Counter { packets: dropped.min(packets), bytes: dropped.min(packets) * 100 };
                    now.verdicts.ruled.insert(at, acted);
                }
            }
            let whole = between("t", &before, &now, None);
            let cut = between("t", &before, &now, Some(1000));
            proptest::prop_assert_eq!(whole.source_count, cut.source_count);
            proptest::prop_assert_eq!(&whole.sources, &cut.sources);
            proptest::prop_assert_eq!(whole.sources.len(), whole.source_count);
        }

        #[test]
        fn the_top_cut_equals_the_head_of_the_full_order(
            counts in proptest::collection::vec((0u8..40, 0u8..4, 0u8..3), 0..200),
            top in 0usize..50,
        ) {
            // Small ranges, so equal packets and equal bytes are common.
            let sources: Vec<(IpAddr, Counter)> = counts
                .iter()
                .enumerate()
                .map(|(i, &(packets, bytes, family))| {
                    // Both families, so ties fall to how addresses of
                    // either family compare.
                    let address = match family {
                        0 => Ipv4Addr::from(0xc612_0000 + (i as u32 * 7919) % 256).into(),
                        _ => IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | ((i as u128 * 7919) % 256))),
                    };
                    (address, Counter { packets: packets.into(), bytes: bytes.into() })
                })
                .collect();
            // The full order, by a plain sort.
            let mut all = sources.clone();
            all.sort_by_key(|a| Reverse(rank(a.0, &a.1)));
            for pair in all.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                proptest::prop_assert!(rank(a.0, &a.1) > rank(b.0, &b.1));
                // The address breaks ties as `IpAddr` orders.
                proptest::prop_assert!(
                    (a.1.packets, a.1.bytes, Reverse(a.0)) > (b.1.packets, b.1.bytes, Reverse(b.0))
                );
            }
            // Given in address order, as the reads hold them.
            let mut in_order: Vec<(AddressOrder, Counter)> =
                sources.iter().map(|&(a, c)| (AddressOrder::of(a), c)).collect();
            in_order.sort_by_key(|&(address, _)| address);
            let cut = top_by_packets(in_order.into_iter(), top);
            proptest::prop_assert_eq!(&cut[..], &all[..top.min(all.len())]);
        }
    }

    #[test]
    fn any_time_prints_as_rfc3339_even_past_the_year_9999() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn a_counter_that_went_backwards_is_no_change_never_a_negative_rate() {
        let c = |packets, bytes| Counter { packets, bytes };
        assert_eq!(Rate::between(&c(5, 50), &c(10, 100), 1.0), Rate::default());
        assert_eq!(Rate::between(&c(10, 10), &c(10, 10), 0.0), Rate::default());
    }

    #[test]
    fn sources_sort_by_packets_then_bytes_then_address_and_top_cuts() {
        let v6: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into();
        let current = snapshot_at(
            1,
            &[
                (v4(3), 5, 500),
                (v4(1), 5, 500),
                (v6, 9, 900),
                (v4(2), 5, 600),
            ],
        );
        let report = between("x0", &Snapshot::empty(), &current, Some(3));
        let order: Vec<IpAddr> = report.sources.iter().map(|row| row.address).collect();
        assert_eq!(order, vec![v6, v4(2), v4(1)]);
        assert_eq!(report.source_count, 4);
    }
}
