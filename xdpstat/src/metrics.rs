//! What Prometheus sees of xdpstat: the exposition built after every read
//! (class totals, unattributed, sources held and planned, program info,
//! read time, and the top sources by rate with one `source="other"` series
//! for the rest), kept ready for scrapes in both text formats.
//!
//! Counters must never go backwards, which per-source series built from
//! raw cumulative counts would do (a source leaving the top N moves its
//! count into "other"; coming back, it takes it out again). So each
//! per-source series adds up only the packets counted *while that source
//! was in the top N*, and `other` adds up the rest: every packet lands in
//! exactly one series, each series only grows, and a source that leaves and
//! comes back resumes where it stopped. While fewer than N sources send,
//! the ones shown last time stay shown, so series do not vanish in a lull (sources gone from the top for an
//! hour are forgotten, and would start again from zero, which Prometheus
//! reads as a counter reset). Class totals and unattributed are exported as
//! the largest value read so far, so a read racing the datapath never
//! shows a counter going down.

use std::{
    fmt::Write as _,
    net::IpAddr,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use hashbrown::HashMap;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use xdpstat_common::Counter as Count;

use crate::snapshot::Snapshot;

/// Per-source series exported by default.
pub const DEFAULT_TOP: usize = 50;
/// How long a source that left the top N keeps its exported counts.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

type Labels = Vec<(&'static str, String)>;

/// The latest exposition, in both formats.
#[derive(Debug, Default)]
pub struct Exposition {
    /// OpenMetrics text, for scrapers that ask for it.
    pub openmetrics: String,
    /// Prometheus text format 0.0.4, for everyone else.
    pub text: String,
}

/// Where the latest exposition waits for scrapes.
pub type Published = Arc<RwLock<Arc<Exposition>>>;

/// What one interface is, for `xdpstat_info` and capacity.
#[derive(Clone, Debug)]
pub struct InterfaceInfo {
    pub name: String,
    pub mode: String,
    pub link: String,
    pub program_id: Option<u32>,
    pub capacity: Option<usize>,
}

/// One source's exported counts.
#[derive(Clone, Copy, Debug)]
struct Exported {
    counter: Count,
    last_in_top: Instant,
}

/// One interface's exported state.
#[derive(Debug, Default)]
struct InterfaceState {
    classes: [Count; 4],
    unattributed: Count,
    sources: (usize, usize),
    read_seconds: f64,
    exported: HashMap<IpAddr, Exported>,
    in_top: Vec<IpAddr>,
    other: Count,
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
            *kept = monotonic(kept, &now);
        }
        state.unattributed = monotonic(&state.unattributed, &current.unattributed());
        state.sources = current.sources.family_lens();
        state.read_seconds = read.as_secs_f64();
        // This interval's increments, biggest packet rates first.
        let mut deltas: Vec<(IpAddr, Count)> = current
            .sources
            .since(&previous.sources)
            .map(|(address, now, before)| (address, now.since(&before)))
            .filter(|(_, delta)| delta.packets > 0)
            .collect();
        let cut = top.min(deltas.len());
        if cut < deltas.len() {
            deltas.select_nth_unstable_by(cut, |a, b| {
                b.1.packets.cmp(&a.1.packets).then(a.0.cmp(&b.0))
            });
        }
        let now = Instant::now();
        let shown_before = std::mem::take(&mut state.in_top);
        for (address, delta) in &deltas[..cut] {
            let exported = state.exported.entry(*address).or_insert(Exported {
                counter: Count::default(),
                last_in_top: now,
            });
            exported.counter.add(delta);
            exported.last_in_top = now;
            state.in_top.push(*address);
        }
        for (_, delta) in &deltas[cut..] {
            state.other.add(delta);
        }
        // Room left (fewer senders than series): sources shown last time
        // stay, unchanged, so series do not vanish when traffic pauses. They
        // sent nothing this interval, so no packet is counted twice.
        for address in shown_before {
            if state.in_top.len() >= top {
                break;
            }
            if !state.in_top.contains(&address) && state.exported.contains_key(&address) {
                state.in_top.push(address);
            }
        }
        state
            .exported
            .retain(|_, exported| now.duration_since(exported.last_in_top) < FORGET_AFTER);
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
            .unwrap_or_else(std::sync::PoisonError::into_inner) = exposition;
    }

    fn encode(&self, started: Instant) -> String {
        let mut registry = Registry::with_prefix("xdpstat");
        let packets = Family::<Labels, Counter>::default();
        let bytes = Family::<Labels, Counter>::default();
        let source_packets = Family::<Labels, Counter>::default();
        let source_bytes = Family::<Labels, Counter>::default();
        let sources = Family::<Labels, Gauge>::default();
        let capacity = Family::<Labels, Gauge>::default();
        let info = Family::<Labels, Gauge>::default();
        let read = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        for (interface, state) in &self.interfaces {
            let name = || ("interface", interface.name.clone());
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
            for address in &state.in_top {
                let counter = state.exported[address].counter;
                let labels = vec![name(), ("source", address.to_string())];
                source_packets
                    .get_or_create(&labels)
                    .inc_by(counter.packets);
                source_bytes.get_or_create(&labels).inc_by(counter.bytes);
            }
            let labels = vec![name(), ("source", "other".to_owned())];
            source_packets
                .get_or_create(&labels)
                .inc_by(state.other.packets);
            source_bytes
                .get_or_create(&labels)
                .inc_by(state.other.bytes);
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

/// The larger of what was exported and what was read, field by field.
fn monotonic(exported: &Count, read: &Count) -> Count {
    Count {
        packets: exported.packets.max(read.packets),
        bytes: exported.bytes.max(read.bytes),
    }
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
    use crate::sources::SourceTable;

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
        let exposition = metrics.published().read().unwrap().clone();
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
        let exposition = metrics.published().read().unwrap().clone();
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

    #[test]
    fn source_series_never_go_back_and_add_up_to_the_attributed_packets() {
        let mut metrics = Metrics::new(vec![info("eth0")], 1);
        let base = Snapshot::empty();
        // .1 leads, then .2 overtakes it, then .1 leads again.
        let reads = [
            snapshot(&base, 1, &[("198.18.0.1", 10), ("198.18.0.2", 1)]),
            snapshot(&base, 2, &[("198.18.0.1", 11), ("198.18.0.2", 30)]),
            snapshot(&base, 3, &[("198.18.0.1", 50), ("198.18.0.2", 31)]),
            // .2's entry was retired and began again from 4.
            snapshot(&base, 4, &[("198.18.0.1", 51), ("198.18.0.2", 4)]),
        ];
        let mut previous = base.clone();
        let mut last: HashMap<String, f64> = HashMap::new();
        let mut attributed = 0;
        for read in &reads {
            metrics.update(0, &previous, read, Duration::ZERO);
            attributed += read
                .sources
                .since(&previous.sources)
                .map(|(_, now, before)| now.since(&before).packets)
                .sum::<u64>();
            let samples = samples(&metrics);
            let mut sum = 0.0;
            for sample in samples
                .iter()
                .filter(|s| s.metric == "xdpstat_source_packets_total")
            {
                let source = sample.labels.get("source").unwrap().to_owned();
                let prometheus_parse::Value::Counter(v) = sample.value else {
                    panic!("a counter");
                };
                assert!(
                    v >= last.get(&source).copied().unwrap_or(0.0),
                    "{source} went back"
                );
                last.insert(source, v);
                sum += v;
            }
            // Series not exposed this time still hold their share.
            let hidden: f64 = last
                .iter()
                .filter(|(s, _)| {
                    !samples.iter().any(|x| {
                        x.metric == "xdpstat_source_packets_total"
                            && x.labels.get("source") == Some(s.as_str())
                    })
                })
                .map(|(_, v)| v)
                .sum();
            assert_eq!(
                sum + hidden,
                attributed as f64,
                "every packet in one series"
            );
            previous = read.clone();
        }
        assert_eq!(last["198.18.0.1"], 10.0 + 39.0, "resumed where it stopped");
        assert_eq!(
            last["198.18.0.2"],
            29.0 + 4.0,
            "a restarted entry counts from zero"
        );
        assert_eq!(last["other"], 4.0, "each read's runner-up");
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
