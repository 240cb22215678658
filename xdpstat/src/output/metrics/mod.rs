//! What Prometheus sees of xdpstat: the exposition built after every read
//! (class totals, unattributed, sources held and planned, program info,
//! read time, and the top sources by rate with one `source="other"` series
//! for the rest), kept ready for scrapes in both text formats.
//!
//! Per-source series stay bounded and honest. Each interval, the
//! `--metrics-top` sources with the most packets in it are shown (while
//! fewer send, the ones shown before stay, so series do not vanish in a
//! lull). A shown source's series adds the packets it sent while shown;
//! `other` adds everything else: packets of sources not shown, the
//! unattributed ones, and the whole count of a series that ends when its
//! source leaves the shown set. So every IPv4 and IPv6 packet is in exactly
//! one series, `sum(xdpstat_source_packets_total)` equals the `ipv4` plus
//! `ipv6` class counters of the same exposition, and no series goes down
//! while it exists; a source that comes back after its series ended starts
//! a new one from zero (a counter reset to Prometheus). The reads this is
//! fed are monotonic (see `Watched::advance`); class counters are exported
//! as the largest value read all the same.
//!
//! Network prefixes (`--prefix-len`) get series the same way,
//! `xdpstat_prefix_packets_total{prefix="198.51.100.0/24"}` and `other`:
//! their sum is the `ipv4` plus `ipv6` class counters, or more where the
//! sketch's estimates run over the truth (by at most their stated bound).

pub mod server;

use std::{
    fmt::Write as _,
    net::IpAddr,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use hashbrown::{HashMap, HashSet};
use ipnet::IpNet;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use xdpstat_common::{
    Counter as Count,
    kinds::{PROTOCOL_NAMES, side, slot},
};

use crate::{
    counts::{kinds::PortKey, snapshot::Snapshot},
    rules::ban::EventKind,
};

/// Per-source series exported by default.
pub const DEFAULT_TOP: usize = 50;

type Labels = Vec<(&'static str, String)>;

/// The latest exposition, in both formats.
#[derive(Debug, Default)]
pub struct Exposition {
    /// OpenMetrics text, for scrapers that ask for it.
    pub openmetrics: String,
    /// Prometheus text format 0.0.4, for everyone else.
    pub text: String,
}

/// Where the latest exposition waits for scrapes: none until xdpstat has
/// attached (a scrape then gets 503), then one from attach time on.
pub type Published = Arc<RwLock<Option<Arc<Exposition>>>>;

/// What one interface is, for `xdpstat_info` and capacity.
#[derive(Clone, Debug)]
pub struct InterfaceInfo {
    pub name: String,
    pub mode: String,
    pub link: String,
    pub program_id: Option<u32>,
    pub capacity: Option<usize>,
}

/// One interface's exported state.
#[derive(Debug, Default)]
struct InterfaceState {
    classes: [Count; 4],
    unattributed: Count,
    sources: (usize, usize),
    read_seconds: f64,
    /// The top sources' series and `other`.
    by_source: TopSeries<IpAddr>,
    /// The top prefixes' series and `other`.
    by_prefix: TopSeries<IpNet>,
    /// Packets and bytes per verdict (never going back).
    verdicts: [Count; 5],
    /// The rules' hits: the top rules' series and `other`.
    by_rule: TopSeries<u64>,
    /// What each rule series is called (its prefix, or `list FILE`), by
    /// the hash its series goes by.
    rule_labels: HashMap<u64, String>,
    /// Bans in force, and ban events so far by kind (in
    /// `EventKind::ALL`'s order).
    bans: usize,
    bans_refused: u64,
    /// Packets `--capture` did not copy (never going back).
    capture_skipped: Count,
    ban_events: [u64; EventKind::ALL.len()],
    /// Packets and bytes per protocol (never going back).
    protocols: [Count; slot::PROTOCOLS],
    /// Per side (`kinds::side`): the top ports' series and `other`, which
    /// also holds the side's protocol packets with no port (later
    /// fragments, headers cut short), so a side's series sum to its
    /// protocol's total.
    by_port: [TopSeries<u16>; side::SIDES as usize],
}

/// Series for the top keys by packets in an interval, plus `other`: a
/// shown key's series adds what it counted while shown, `other` the rest
/// (a series that ends hands it its count), so no series goes down while it
/// exists and their sum is everything fed.
#[derive(Debug)]
struct TopSeries<K> {
    /// The shown keys' series, in the order they were shown.
    shown: Vec<K>,
    exported: HashMap<K, Count>,
    other: Count,
}

impl<K> Default for TopSeries<K> {
    fn default() -> Self {
        Self {
            shown: Vec::new(),
            exported: HashMap::new(),
            other: Count::default(),
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash + Ord> TopSeries<K> {
    /// Takes in one interval: each key's increment, and `rest`, what
    /// belongs to no key.
    fn feed(&mut self, mut deltas: Vec<(K, Count)>, rest: &Count, top: usize) {
        deltas.retain(|(_, delta)| delta.packets > 0);
        self.other.add(rest);
        let cut = top.min(deltas.len());
        if cut < deltas.len() {
            deltas.select_nth_unstable_by(cut, |a, b| {
                b.1.packets.cmp(&a.1.packets).then(a.0.cmp(&b.0))
            });
        }
        let mut shown: Vec<K> = deltas[..cut].iter().map(|(key, _)| *key).collect();
        let mut is_shown: HashSet<K> = shown.iter().copied().collect();
        // Room left (fewer senders than series): the keys shown last time
        // stay, so series do not vanish when traffic pauses.
        for &key in &self.shown {
            if shown.len() >= top {
                break;
            }
            if is_shown.insert(key) {
                shown.push(key);
            }
        }
        for (key, delta) in &deltas {
            if is_shown.contains(key) {
                self.exported.entry(*key).or_default().add(delta);
            } else {
                self.other.add(delta);
            }
        }
        // A series that ends hands its count to `other`: the sum stays.
        for key in std::mem::replace(&mut self.shown, shown) {
            if !is_shown.contains(&key)
                && let Some(count) = self.exported.remove(&key)
            {
                self.other.add(&count);
            }
        }
    }

    /// The series: each shown key's, then `other`'s (key `None`).
    fn series(&self) -> impl Iterator<Item = (Option<K>, Count)> + '_ {
        self.shown
            .iter()
            .map(|key| {
                (
                    Some(*key),
                    self.exported.get(key).copied().unwrap_or_default(),
                )
            })
            .chain(std::iter::once((None, self.other)))
    }
}

/// The exporter: fed every read, publishes an exposition after each.
pub struct Metrics {
    interfaces: Vec<(InterfaceInfo, InterfaceState)>,
    top: usize,
    published: Published,
}

impl Metrics {
    /// An exporter for `interfaces`, with a first (all-zero) exposition
    /// published, so scrapes before the first read get an answer.
    pub fn new(interfaces: Vec<InterfaceInfo>, top: usize) -> Self {
        Self::publishing_to(Published::default(), interfaces, top)
    }

    /// Like [`Metrics::new`], publishing to `published` (which a server
    /// may already be serving).
    pub fn publishing_to(published: Published, interfaces: Vec<InterfaceInfo>, top: usize) -> Self {
        let metrics = Self {
            interfaces: interfaces
                .into_iter()
                .map(|info| (info, InterfaceState::default()))
                .collect(),
            top,
            published,
        };
        metrics.publish();
        metrics
    }

    /// The handle scrapes read from.
    pub fn published(&self) -> Published {
        Arc::clone(&self.published)
    }

    /// Takes in interface `index`'s read `current` (after `previous`), which
    /// took `read` to make, and publishes a new exposition.
    pub fn update(
        &mut self,
        index: usize,
        previous: &Snapshot,
        current: &Snapshot,
        read: Duration,
    ) {
        let top = self.top;
        let Some((_, state)) = self.interfaces.get_mut(index) else {
            return;
        };
        let totals = current.totals();
        for (kept, now) in state.classes.iter_mut().zip([
            totals.ipv4,
            totals.ipv6,
            totals.non_ip,
            totals.malformed,
        ]) {
            *kept = kept.at_least(&now);
        }
        state.unattributed = state.unattributed.at_least(&current.unattributed());
        state.sources = current.sources.family_lens();
        state.read_seconds = read.as_secs_f64();
        // This interval's increments, per source and per prefix.
        let deltas: Vec<(IpAddr, Count)> = current
            .sources
            .since(&previous.sources)
            .map(|(address, now, before)| (address, now.since(&before)))
            .collect();
        let unattributed = current.unattributed().since(&previous.unattributed());
        state.by_source.feed(deltas, &unattributed, top);
        let prefix_deltas: Vec<(IpNet, Count)> = current
            .prefixes
            .rows
            .iter()
            .map(|(prefix, count)| {
                let before = previous.prefixes.total_of(prefix);
                (*prefix, count.total().since(&before))
            })
            .collect();
        // What no prefix holds: the IP packets of the interval beyond the
        // prefixes' increments (none when estimates overshoot).
        let before = previous.totals();
        let (mut ip_now, mut ip_before) = (totals.ipv4, before.ipv4);
        ip_now.add(&totals.ipv6);
        ip_before.add(&before.ipv6);
        let mut in_prefixes = Count::default();
        for (_, delta) in &prefix_deltas {
            in_prefixes.add(delta);
        }
        let rest = ip_now.since(&ip_before).saturating_sub(&in_prefixes);
        state.by_prefix.feed(prefix_deltas, &rest, top);
        for (kept, (_, now)) in state.verdicts.iter_mut().zip(totals.verdicts.named()) {
            *kept = kept.at_least(&now);
        }
        // Bans are series of their own kind: they come and go by the
        // thousand, rules stay.
        let before: HashMap<u64, Count> = previous
            .verdicts
            .rules
            .iter()
            .filter(|hits| hits.rule.ban.is_none())
            .map(|hits| (rule_key(&hits.rule.label()), hits.counter))
            .collect();
        for hits in current
            .verdicts
            .rules
            .iter()
            .filter(|h| h.rule.ban.is_none())
        {
            let label = hits.rule.label();
            state.rule_labels.entry(rule_key(&label)).or_insert(label);
        }
        state.bans = current
            .verdicts
            .rules
            .iter()
            .filter(|hits| hits.rule.ban.is_some())
            .count();
        state.bans_refused = state.bans_refused.max(current.verdicts.bans_refused);
        state.capture_skipped = state
            .capture_skipped
            .at_least(&current.slots.capture_skipped);
        for event in &current.verdicts.events {
            if let Some(at) = EventKind::ALL.iter().position(|k| *k == event.event) {
                state.ban_events[at] += 1;
            }
        }
        let rule_deltas: Vec<(u64, Count)> = current
            .verdicts
            .rules
            .iter()
            .filter(|hits| hits.rule.ban.is_none())
            .map(|hits| {
                let key = rule_key(&hits.rule.label());
                let before = before.get(&key).copied().unwrap_or_default();
                (key, hits.counter.since(&before))
            })
            .collect();
        state.by_rule.feed(rule_deltas, &Count::default(), top);
        // The protocols are the first slots, in `PROTOCOL_NAMES`' order.
        for (kept, now) in state.protocols.iter_mut().zip(&current.kinds.slots) {
            *kept = kept.at_least(now);
        }
        for (side, series) in state.by_port.iter_mut().enumerate() {
            let side = side as u32;
            let slot = if side == side::TCP_DST {
                slot::TCP
            } else {
                slot::UDP
            };
            let (now, before) = (&current.kinds, &previous.kinds);
            let deltas: Vec<(u16, Count)> = now
                .ports
                .iter()
                .filter(|(key, _)| key.side == side)
                .map(|(key, count)| (key.port, count.since(&before.ports.get(key))))
                .collect();
            let mut in_ports = Count::default();
            for (_, delta) in &deltas {
                in_ports.add(delta);
            }
            let rest = now.slots[slot]
                .since(&before.slots[slot])
                .saturating_sub(&in_ports);
            series.feed(deltas, &rest, top);
        }
        self.publish();
    }

    fn publish(&self) {
        let started = Instant::now();
        let openmetrics = self.encode(started);
        let text = openmetrics_to_text(&openmetrics);
        let exposition = Arc::new(Exposition { openmetrics, text });
        *self
            .published
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(exposition);
    }

    fn encode(&self, started: Instant) -> String {
        let mut registry = Registry::with_prefix("xdpstat");
        let packets = Family::<Labels, Counter>::default();
        let bytes = Family::<Labels, Counter>::default();
        let source_packets = Family::<Labels, Counter>::default();
        let source_bytes = Family::<Labels, Counter>::default();
        let prefix_packets = Family::<Labels, Counter>::default();
        let prefix_bytes = Family::<Labels, Counter>::default();
        let sources = Family::<Labels, Gauge>::default();
        let capacity = Family::<Labels, Gauge>::default();
        let info = Family::<Labels, Gauge>::default();
        let read = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let verdict_packets = Family::<Labels, Counter>::default();
        let verdict_bytes = Family::<Labels, Counter>::default();
        let rule_packets = Family::<Labels, Counter>::default();
        let protocol_packets = Family::<Labels, Counter>::default();
        let protocol_bytes = Family::<Labels, Counter>::default();
        let port_packets = Family::<Labels, Counter>::default();
        let bans = Family::<Labels, Gauge>::default();
        let ban_events = Family::<Labels, Counter>::default();
        let bans_refused = Family::<Labels, Counter>::default();
        let capture_skipped = Family::<Labels, Counter>::default();
        for (interface, state) in &self.interfaces {
            let name = || ("interface", interface.name.clone());
            bans.get_or_create(&vec![name()]).set(state.bans as i64);
            bans_refused
                .get_or_create(&vec![name()])
                .inc_by(state.bans_refused);
            capture_skipped
                .get_or_create(&vec![name()])
                .inc_by(state.capture_skipped.packets);
            for (kind, count) in EventKind::ALL.iter().zip(state.ban_events) {
                ban_events
                    .get_or_create(&vec![name(), ("event", kind.name().to_owned())])
                    .inc_by(count);
            }
            for (class, count) in ["ipv4", "ipv6", "non_ip", "malformed", "unattributed"]
                .into_iter()
                .zip(state.classes.iter().chain([&state.unattributed]))
            {
                let labels = vec![name(), ("class", class.to_owned())];
                packets.get_or_create(&labels).inc_by(count.packets);
                bytes.get_or_create(&labels).inc_by(count.bytes);
            }
            for (family, held) in [("ipv4", state.sources.0), ("ipv6", state.sources.1)] {
                sources
                    .get_or_create(&vec![name(), ("family", family.to_owned())])
                    .set(held as i64);
            }
            if let Some(planned) = interface.capacity {
                capacity.get_or_create(&vec![name()]).set(planned as i64);
            }
            info.get_or_create(&vec![
                name(),
                ("mode", interface.mode.clone()),
                ("link", interface.link.clone()),
                (
                    "program_id",
                    interface
                        .program_id
                        .map_or(String::new(), |id| id.to_string()),
                ),
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ])
            .set(1);
            read.get_or_create(&vec![name()]).set(state.read_seconds);
            for (address, counter) in state.by_source.series() {
                let source = address.map_or_else(|| "other".to_owned(), |a| a.to_string());
                let labels = vec![name(), ("source", source)];
                source_packets
                    .get_or_create(&labels)
                    .inc_by(counter.packets);
                source_bytes.get_or_create(&labels).inc_by(counter.bytes);
            }
            for (verdict, count) in ["passed", "dropped", "limited", "would_drop", "would_limit"]
                .into_iter()
                .zip(&state.verdicts)
            {
                let labels = vec![name(), ("verdict", verdict.to_owned())];
                verdict_packets.get_or_create(&labels).inc_by(count.packets);
                verdict_bytes.get_or_create(&labels).inc_by(count.bytes);
            }
            for (key, counter) in state.by_rule.series() {
                let rule = key
                    .and_then(|key| state.rule_labels.get(&key).cloned())
                    .unwrap_or_else(|| "other".to_owned());
                rule_packets
                    .get_or_create(&vec![name(), ("rule", rule)])
                    .inc_by(counter.packets);
            }
            for (protocol, count) in PROTOCOL_NAMES.into_iter().zip(&state.protocols) {
                let labels = vec![name(), ("protocol", protocol.to_owned())];
                protocol_packets
                    .get_or_create(&labels)
                    .inc_by(count.packets);
                protocol_bytes.get_or_create(&labels).inc_by(count.bytes);
            }
            for (side, series) in state.by_port.iter().enumerate() {
                let side = PortKey {
                    side: side as u32,
                    port: 0,
                };
                for (port, counter) in series.series() {
                    let port = port.map_or_else(|| "other".to_owned(), |p| p.to_string());
                    let labels = vec![
                        name(),
                        ("protocol", side.protocol().to_owned()),
                        ("side", side.side_name().to_owned()),
                        ("port", port),
                    ];
                    port_packets.get_or_create(&labels).inc_by(counter.packets);
                }
            }
            for (prefix, counter) in state.by_prefix.series() {
                let prefix = prefix.map_or_else(|| "other".to_owned(), |p| p.to_string());
                let labels = vec![name(), ("prefix", prefix)];
                prefix_packets
                    .get_or_create(&labels)
                    .inc_by(counter.packets);
                prefix_bytes.get_or_create(&labels).inc_by(counter.bytes);
            }
        }
        registry.register(
            "packets",
            "Packets counted at the XDP hook, by class (unattributed: IPv4/IPv6 packets no source entry holds, also in their class)",
            packets,
        );
        registry.register("bytes", "Bytes counted at the XDP hook, by class", bytes);
        registry.register(
            "source_packets",
            "Packets of the top sources by rate, counted while they were in the top (--metrics-top); source=\"other\" holds every other source's",
            source_packets,
        );
        registry.register(
            "source_bytes",
            "Bytes of the top sources by rate, counted while they were in the top; source=\"other\" holds the rest",
            source_bytes,
        );
        registry.register(
            "prefix_packets",
            "Packets of the top network prefixes (--prefix-len) by rate, counted while they were in the top; estimates included; prefix=\"other\" holds the rest",
            prefix_packets,
        );
        registry.register(
            "prefix_bytes",
            "Bytes of the top network prefixes by rate, counted while they were in the top; prefix=\"other\" holds the rest",
            prefix_bytes,
        );
        registry.register(
            "verdict_packets",
            "Frames by verdict under the rules (passed, dropped, limited, would_drop, would_limit)",
            verdict_packets,
        );
        registry.register(
            "verdict_bytes",
            "Bytes by verdict under the rules",
            verdict_bytes,
        );
        registry.register(
            "rule_packets",
            "Packets each rule matched (the top rules by packets, and other)",
            rule_packets,
        );
        registry.register("bans", "Bans in force (xdpstat ban, triggers)", bans);
        registry.register(
            "bans_refused",
            "Bans refused because max_bans were in force",
            bans_refused,
        );
        registry.register(
            "capture_skipped",
            "Packets --capture did not copy: over its per-CPU budget, or the ring was full",
            capture_skipped,
        );
        registry.register(
            "ban_events",
            "Ban events by kind (ban, extend, unban, expire, refused, would_ban)",
            ban_events,
        );
        registry.register(
            "protocol_packets",
            "IP packets by protocol (tcp, udp, icmp, icmpv6, other)",
            protocol_packets,
        );
        registry.register("protocol_bytes", "IP bytes by protocol", protocol_bytes);
        registry.register(
            "port_packets",
            "Packets of the top ports by rate (--metrics-top) per protocol and side (tcp dst, udp dst, udp src), counted while they were in the top; port=\"other\" holds the rest of the protocol's packets, those with no port included",
            port_packets,
        );
        registry.register("sources", "Sources the tables hold, by family", sources);
        registry.register(
            "source_capacity",
            "Sources per family the tables are planned for (--max-sources)",
            capacity,
        );
        registry.register("info", "How xdpstat is attached to the interface", info);
        registry.register(
            "read_duration_seconds",
            "Time the last read of the interface's counters took",
            read,
        );
        let render = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        render.set(started.elapsed().as_secs_f64());
        registry.register(
            "exposition_duration_seconds",
            "Time building the previous exposition took",
            render,
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// The key a rule's series goes by: a hash of its label (its prefix, or
/// `list FILE`), the same from one rule set to the next.
fn rule_key(label: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    // SipHash with fixed keys: the same label, the same key, every time.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    label.hash(&mut hasher);
    hasher.finish()
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition: the
/// same samples, counters' HELP and TYPE named after their `_total`
/// samples, no `_created` samples, no `# EOF`.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut counters: Vec<&str> = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.push(name);
        }
    }
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let mut renamed = None;
        for prefix in ["# HELP ", "# TYPE ", "# UNIT "] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let name = rest.split(' ').next().unwrap_or_default();
                if prefix == "# UNIT " {
                    renamed = Some(String::new());
                } else if counters.contains(&name) {
                    renamed = Some(format!("{prefix}{name}_total{}", &rest[name.len()..]));
                }
            }
        }
        match renamed {
            Some(line) if line.is_empty() => {}
            Some(line) => {
                let _ = writeln!(text, "{line}");
            }
            None => {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                if !name.ends_with("_created") {
                    let _ = writeln!(text, "{line}");
                }
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::counts::{prefixes::PrefixLens, sources::SourceTable};

    fn c(packets: u64, bytes: u64) -> Count {
        Count { packets, bytes }
    }

    fn snapshot(base: &Snapshot, seconds: u64, sources: &[(&str, u64)]) -> Snapshot {
        let mut snapshot = base.clone();
        snapshot.taken = base.taken + Duration::from_secs(seconds);
        snapshot.sources = sources
            .iter()
            .map(|&(a, packets)| (a.parse().unwrap(), c(packets, packets * 100)))
            .collect::<SourceTable>();
        snapshot
    }

    fn info(name: &str) -> InterfaceInfo {
        InterfaceInfo {
            name: name.into(),
            mode: "native".into(),
            link: "bpf link".into(),
            program_id: Some(42),
            capacity: Some(65_536),
        }
    }

    /// Every sample of the text exposition, parsed back by prometheus-parse.
    fn samples(metrics: &Metrics) -> Vec<prometheus_parse::Sample> {
        let exposition = metrics.published().read().unwrap().clone().unwrap();
        let lines = exposition.text.lines().map(|l| Ok(l.to_owned()));
        prometheus_parse::Scrape::parse(lines).unwrap().samples
    }

    fn value(
        samples: &[prometheus_parse::Sample],
        metric: &str,
        labels: &[(&str, &str)],
    ) -> Option<f64> {
        samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    }

    #[test]
    fn verdicts_and_rule_hits_are_series_that_never_go_back() {
        use xdpstat_common::rules::{Rule, action, verdict};

        use crate::rules::in_force::{InForce, RuleHits};
        let mut metrics = Metrics::new(vec![info("eth0")], 1);
        let base = Snapshot::empty();
        let mut now = snapshot(&base, 1, &[("198.18.0.1", 30), ("198.18.9.9", 20)]);
        now.verdicts.acted[verdict::DROPPED] = c(12, 1_200);
        now.verdicts.acted[verdict::WOULD_LIMIT] = c(3, 300);
        let rule = |prefix: &str| InForce {
            ban: None,
            prefix: Some(prefix.parse().unwrap()),
            matching: Default::default(),
            list: None,
            kernel: Rule {
                action: action::DROP,
                enforce: 1,
                ..Rule::default()
            },
        };
        now.verdicts.rules = vec![
            RuleHits {
                rule: rule("198.18.0.0/24"),
                counter: c(30, 3_000),
            },
            RuleHits {
                rule: rule("198.18.9.0/24"),
                counter: c(20, 2_000),
            },
        ];
        metrics.update(0, &base, &now, Duration::from_millis(1));
        let series = |metrics: &Metrics, metric: &str, label: (&str, &str)| {
            value(&samples(metrics), metric, &[("interface", "eth0"), label])
        };
        let verdict_packets = "xdpstat_verdict_packets_total";
        assert_eq!(
            series(&metrics, verdict_packets, ("verdict", "dropped")),
            Some(12.0)
        );
        assert_eq!(
            series(&metrics, verdict_packets, ("verdict", "would_limit")),
            Some(3.0)
        );
        assert_eq!(
            series(&metrics, verdict_packets, ("verdict", "limited")),
            Some(0.0)
        );
        assert_eq!(
            series(&metrics, verdict_packets, ("verdict", "passed")),
            Some(50.0 - 15.0)
        );
        // One series for the top rule, `other` for the rest.
        let rule_packets = "xdpstat_rule_packets_total";
        assert_eq!(
            series(&metrics, rule_packets, ("rule", "198.18.0.0/24")),
            Some(30.0)
        );
        assert_eq!(
            series(&metrics, rule_packets, ("rule", "other")),
            Some(20.0)
        );
        // A read lower than the last (a reload that changed the rules)
        // leaves the verdict counters where they were.
        let mut later = now.clone();
        later.taken += Duration::from_secs(1);
        later.verdicts.acted[verdict::DROPPED] = c(2, 200);
        metrics.update(0, &now, &later, Duration::from_millis(1));
        assert_eq!(
            series(&metrics, verdict_packets, ("verdict", "dropped")),
            Some(12.0)
        );
    }

    #[test]
    fn the_exposition_parses_back_with_every_series() {
        let mut metrics = Metrics::new(vec![info("eth0")], 2);
        let base = Snapshot::empty();
        let now = snapshot(
            &base,
            1,
            &[("198.18.0.1", 30), ("198.18.0.2", 20), ("2001:db8::1", 5)],
        );
        metrics.update(0, &base, &now, Duration::from_millis(3));
        let samples = samples(&metrics);
        let eth0 = ("interface", "eth0");
        assert_eq!(
            value(
                &samples,
                "xdpstat_packets_total",
                &[eth0, ("class", "ipv4")]
            ),
            Some(50.0)
        );
        assert_eq!(
            value(
                &samples,
                "xdpstat_packets_total",
                &[eth0, ("class", "ipv6")]
            ),
            Some(5.0)
        );
        assert_eq!(
            value(&samples, "xdpstat_bytes_total", &[eth0, ("class", "ipv4")]),
            Some(5000.0)
        );
        assert_eq!(
            value(
                &samples,
                "xdpstat_packets_total",
                &[eth0, ("class", "unattributed")]
            ),
            Some(0.0)
        );
        let source = |s: &str| {
            value(
                &samples,
                "xdpstat_source_packets_total",
                &[eth0, ("source", s)],
            )
        };
        assert_eq!(source("198.18.0.1"), Some(30.0));
        assert_eq!(source("198.18.0.2"), Some(20.0));
        assert_eq!(source("2001:db8::1"), None, "beyond the top 2");
        assert_eq!(source("other"), Some(5.0));
        assert_eq!(
            value(&samples, "xdpstat_sources", &[eth0, ("family", "ipv4")]),
            Some(2.0)
        );
        assert_eq!(
            value(&samples, "xdpstat_source_capacity", &[eth0]),
            Some(65_536.0)
        );
        assert_eq!(
            value(
                &samples,
                "xdpstat_info",
                &[eth0, ("mode", "native"), ("program_id", "42")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&samples, "xdpstat_read_duration_seconds", &[eth0]),
            Some(0.003)
        );
        // The OpenMetrics form has the same samples and ends with # EOF.
        let exposition = metrics.published().read().unwrap().clone().unwrap();
        assert_eq!(exposition.openmetrics.lines().last(), Some("# EOF"));
        let lines = exposition.openmetrics.lines().map(|l| Ok(l.to_owned()));
        let openmetrics = prometheus_parse::Scrape::parse(lines).unwrap().samples;
        assert_eq!(
            value(
                &openmetrics,
                "xdpstat_source_packets_total",
                &[eth0, ("source", "other")]
            ),
            Some(5.0)
        );
    }

    /// The source series of an exposition by source, and their sum.
    fn source_series(samples: &[prometheus_parse::Sample]) -> HashMap<String, f64> {
        samples
            .iter()
            .filter(|s| s.metric == "xdpstat_source_packets_total")
            .map(|s| {
                let prometheus_parse::Value::Counter(v) = s.value else {
                    panic!("a counter");
                };
                (s.labels.get("source").unwrap().to_owned(), v)
            })
            .collect()
    }

    #[test]
    fn with_many_more_senders_than_series_every_ip_packet_is_in_one_series() {
        const SOURCES: u32 = 500;
        const TOP: usize = 50;
        let mut metrics = Metrics::new(vec![info("eth0")], TOP);
        let base = Snapshot::empty();
        let mut previous = base.clone();
        let mut counts = vec![0u64; SOURCES as usize];
        let mut unattributed = 0u64;
        let mut last: HashMap<String, f64> = HashMap::new();
        let mut last_prefix: HashMap<String, f64> = HashMap::new();
        let mut ended_and_back = 0;
        // A deterministic churn: each interval a different, shifting third
        // of the sources sends, some in bursts; some packets unattributed.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for interval in 1..=200u64 {
            for (n, count) in counts.iter_mut().enumerate() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if (n as u64 + interval).is_multiple_of(3) {
                    *count += 1 + seed % 20 + if seed.is_multiple_of(97) { 5_000 } else { 0 };
                }
            }
            unattributed += interval % 7;
            let mut read = base.clone();
            read.taken = base.taken + Duration::from_secs(interval);
            read.sources = counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(n, &p)| {
                    let [_, _, hi, lo] = (n as u32).to_be_bytes();
                    (IpAddr::from([198, 18, hi, lo]), c(p, p * 100))
                })
                .collect::<SourceTable>();
            read.slots.unattributed_v4 = c(unattributed, unattributed * 100);
            // /30s: 125 prefixes for 50 series; unattributed packets in none.
            let lens: PrefixLens = "30,64".parse().unwrap();
            for (address, counter) in read.sources.iter() {
                read.prefixes.add_exact(lens.of(address), &counter);
            }
            metrics.update(0, &previous, &read, Duration::ZERO);
            let samples = samples(&metrics);
            let prefix_series: HashMap<String, f64> = samples
                .iter()
                .filter(|s| s.metric == "xdpstat_prefix_packets_total")
                .map(|s| {
                    let v = match s.value {
                        prometheus_parse::Value::Counter(v) => v,
                        _ => f64::NAN,
                    };
                    (s.labels.get("prefix").unwrap().to_owned(), v)
                })
                .collect();
            assert!(prefix_series.len() <= TOP + 1);
            let series = source_series(&samples);
            assert!(series.len() <= TOP + 1, "{} series", series.len());
            let class = |class| {
                value(
                    &samples,
                    "xdpstat_packets_total",
                    &[("interface", "eth0"), ("class", class)],
                )
                .unwrap()
            };
            let sum: f64 = series.values().sum();
            assert_eq!(
                sum,
                class("ipv4") + class("ipv6"),
                "interval {interval}: every IP packet in exactly one series"
            );
            assert_eq!(
                prefix_series.values().sum::<f64>(),
                class("ipv4") + class("ipv6"),
                "interval {interval}: every IP packet in exactly one prefix series"
            );
            for (prefix, &v) in &prefix_series {
                if let Some(&before) = last_prefix.get(prefix) {
                    assert!(v >= before, "{prefix} went back");
                }
            }
            last_prefix = prefix_series;
            for (source, &v) in &series {
                match last.get(source) {
                    Some(&before) => assert!(v >= before, "{source} went back"),
                    None if interval > 1 => ended_and_back += 1,
                    None => {}
                }
            }
            last = series;
            previous = read;
        }
        assert!(ended_and_back > 0, "the churn ended and began series");
    }

    #[test]
    fn a_shown_source_that_stays_quiet_for_hours_is_no_trouble() {
        let mut metrics = Metrics::new(vec![info("eth0")], 1);
        let base = Snapshot::empty();
        let quiet = snapshot(&base, 1, &[("198.18.0.1", 10)]);
        metrics.update(0, &base, &quiet, Duration::ZERO);
        // Two hours of one-second reads with nobody sending: the series stays.
        let mut previous = quiet;
        for seconds in 2..7_200 {
            let mut read = previous.clone();
            read.taken = base.taken + Duration::from_secs(seconds);
            metrics.update(0, &previous, &read, Duration::ZERO);
            previous = read;
        }
        let series = source_series(&samples(&metrics));
        assert_eq!(series["198.18.0.1"], 10.0);
        // Then another source sends: the quiet one's series ends into other.
        let mut read = previous.clone();
        read.sources
            .insert("198.18.0.2".parse().unwrap(), c(3, 300));
        metrics.update(0, &previous, &read, Duration::ZERO);
        let series = source_series(&samples(&metrics));
        assert_eq!(series.get("198.18.0.1"), None);
        assert_eq!(series["198.18.0.2"], 3.0);
        assert_eq!(series["other"], 10.0);
    }

    #[test]
    fn class_counters_never_go_back_even_if_a_read_does() {
        let mut metrics = Metrics::new(vec![info("eth0")], 5);
        let base = Snapshot::empty();
        let high = snapshot(&base, 1, &[("198.18.0.1", 10)]);
        let low = snapshot(&base, 2, &[("198.18.0.1", 9)]);
        metrics.update(0, &base, &high, Duration::ZERO);
        metrics.update(0, &high, &low, Duration::ZERO);
        let samples = samples(&metrics);
        assert_eq!(
            value(
                &samples,
                "xdpstat_packets_total",
                &[("interface", "eth0"), ("class", "ipv4")]
            ),
            Some(10.0)
        );
    }
}
