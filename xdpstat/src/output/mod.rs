//! Turns reports into what lands on stdout: an aligned plain-text table for
//! people and pipes, or one JSON object per line for programs.

pub mod metrics;
pub mod notify;
pub mod pcapng;
pub mod tui;

use std::io::{self, Write};

use crate::counts::report::{BanRow, EventRow, Report};

/// The output formats of the report stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text, one block per interface per interval.
    #[default]
    Plain,
    /// One JSON object per line, per interface, per interval.
    Json,
    /// The full-screen live view (the default when stdout is a terminal);
    /// the final report after it is plain text.
    Tui,
}

impl Format {
    /// Rows shown when `--top` is not given: 20 for people, all for programs.
    pub fn default_top(self) -> Option<usize> {
        match self {
            Self::Plain => Some(20),
            Self::Json | Self::Tui => None,
        }
    }

    /// The format asked for, or the view on a terminal and plain text
    /// anywhere else (a pipe, a file).
    pub fn resolve(asked: Option<Format>, stdout_is_terminal: bool) -> Format {
        match asked {
            Some(format) => format,
            None if stdout_is_terminal => Self::Tui,
            None => Self::Plain,
        }
    }
}

/// Bytes a report is written in at a time: a JSON report of a million
/// sources is a quarter of a gigabyte, which stdout's line buffer would
/// pass on a kilobyte at a time.
const WRITE_BUFFER: usize = 256 * 1024;

/// Writes one report in `format`.
pub fn write_report(out: &mut dyn Write, format: Format, report: &Report) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(WRITE_BUFFER, out);
    match format {
        Format::Plain | Format::Tui => write_plain(&mut out, report),
        Format::Json => {
            // `From` keeps the kind of an I/O error (a closed pipe stays BrokenPipe).
            serde_json::to_writer(&mut out, report).map_err(io::Error::from)?;
            out.write_all(b"\n")
        }
    }?;
    out.flush()
}

fn write_plain(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let interval = match report.interval_s {
        Some(seconds) => format!(", rates over {seconds:.2} s"),
        None => String::new(),
    };
    let attachment = match &report.attachment {
        Some(how) => format!(" ({how})"),
        None => String::new(),
    };
    writeln!(
        out,
        "{}{attachment} at {}{interval}",
        report.interface, report.time
    )?;
    writeln!(out, "  {:<14}{:>14}{:>16}", "class", "packets", "bytes")?;
    let totals = &report.totals;
    for (name, counter) in [
        ("ipv4", totals.ipv4),
        ("ipv6", totals.ipv6),
        ("non_ip", totals.non_ip),
        ("malformed", totals.malformed),
        ("unattributed", report.unattributed),
    ] {
        writeln!(
            out,
            "  {name:<14}{:>14}{:>16}",
            counter.packets, counter.bytes
        )?;
    }
    write_kinds(out, report)?;
    writeln!(
        out,
        "  sources: {} (showing {})",
        report.source_count,
        report.sources.len()
    )?;
    // Rules or bans in force, or counts of what earlier ones did: show
    // verdicts.
    let ruled =
        !report.rules.is_empty() || !report.bans.is_empty() || report.totals.verdicts.acted();
    if ruled {
        writeln!(out, "  verdicts: {}", report.totals.verdicts.line())?;
    }
    if !report.sources.is_empty() {
        // A protocol column after the usual ones.
        let header = table_line("address", "packets", "bytes", "pkt/s", "bit/s");
        writeln!(out, "{header}  protocol")?;
        for row in report.sources.iter() {
            let line = table_line(
                &row.address.to_string(),
                &row.packets.to_string(),
                &row.bytes.to_string(),
                &si(row.pps),
                &si(row.bps),
            );
            writeln!(out, "{line}  {}", row.protocols.summary())?;
            if ruled && row.verdicts.acted() {
                writeln!(out, "    {}", row.verdicts.column())?;
            }
        }
    }
    if !report.prefixes.is_empty() {
        write_prefixes(out, report)?;
    }
    if !report.ports.is_empty() {
        write_ports(out, report)?;
    }
    if ruled {
        write_rules(out, report)?;
    }
    if !report.bans.is_empty() || report.bans_refused > 0 {
        let refused = if report.bans_refused > 0 {
            format!(" ({} refused: max_bans)", report.bans_refused)
        } else {
            String::new()
        };
        writeln!(out, "  bans: {}{refused}", report.bans.len())?;
        write_bans(out, &report.bans)?;
    }
    for event in &report.events {
        writeln!(out, "  {}", event_line(event))?;
    }
    if report.capture_skipped.packets > 0 {
        writeln!(
            out,
            "  capture: {} packets not copied (the per-CPU budget, or a full ring)",
            report.capture_skipped.packets
        )?;
    }
    if let Some(why) = &report.capture_stopped {
        writeln!(out, "  capture stopped: {why}")?;
    }
    writeln!(out)
}

/// The bans table: each ban's prefix, what it judged, what it does, and
/// where it came from and until when.
pub fn write_bans(out: &mut dyn Write, bans: &[BanRow]) -> io::Result<()> {
    table_row(out, "prefix", "packets", "bytes", "action", "origin")?;
    for ban in bans {
        table_row(
            out,
            &ban.prefix,
            &ban.packets.to_string(),
            &ban.bytes.to_string(),
            &ban.action,
            &ban.origin,
        )?;
        let until = ban.until.as_deref().unwrap_or("unbanned");
        let reason = if ban.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", ban.reason)
        };
        writeln!(out, "    since {} until {until}{reason}", ban.since)?;
    }
    Ok(())
}

/// `event ban 198.18.0.7/32 (hand): drop until ...`: one event on one line.
pub fn event_line(event: &EventRow) -> String {
    format!(
        "event {} {} ({}) at {}: {}",
        event.event, event.prefix, event.origin, event.time, event.detail
    )
}

/// The protocols line: IP packets by protocol, then fragments and SYNs.
fn write_kinds(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let totals = &report.totals;
    let p = &totals.protocols;
    let mut line = String::from("  protocols:");
    for (name, counter) in [
        ("tcp", p.tcp),
        ("udp", p.udp),
        ("icmp", p.icmp),
        ("icmpv6", p.icmpv6),
        ("other", p.other),
        ("fragments", totals.fragments),
        ("tcp_syn", totals.tcp_syn),
    ] {
        line.push_str(&format!(" {name} {}", counter.packets));
    }
    writeln!(out, "{line} (packets)")
}

/// The ports table: the busiest ports of every side.
fn write_ports(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    writeln!(
        out,
        "  ports: {} (showing {})",
        report.port_count,
        report.ports.len()
    )?;
    table_row(out, "port", "packets", "bytes", "pkt/s", "bit/s")?;
    for row in &report.ports {
        table_row(
            out,
            &format!("{} {} {}", row.protocol, row.side, row.port),
            &row.packets.to_string(),
            &row.bytes.to_string(),
            &si(row.pps),
            &si(row.bps),
        )?;
    }
    Ok(())
}

/// The rules in force and the packets each matched.
fn write_rules(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    writeln!(
        out,
        "  rules: {} (showing {})",
        report.rule_count,
        report.rules.len()
    )?;
    table_row(out, "prefix", "packets", "bytes", "action", "mode")?;
    for rule in &report.rules {
        table_row(
            out,
            rule.label(),
            &rule.packets.to_string(),
            &rule.bytes.to_string(),
            rule.action,
            rule.mode,
        )?;
    }
    Ok(())
}

/// The prefix rows; an estimated count shows `~` and its bound.
fn write_prefixes(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let parts = &report.prefix_parts;
    let ip = parts.exact.packets + parts.sketched.packets + parts.unkept.packets;
    writeln!(
        out,
        "  prefixes: showing {}; {:.1}% of IP packets exactly by prefix",
        report.prefixes.len(),
        percent(parts.exact.packets, ip)
    )?;
    table_row(out, "prefix", "packets", "bytes", "pkt/s", "bit/s")?;
    for row in &report.prefixes {
        let packets = if row.estimated {
            format!("~{} ±{}", row.packets, row.error_packets)
        } else {
            row.packets.to_string()
        };
        table_row(
            out,
            &row.prefix,
            &packets,
            &row.bytes.to_string(),
            &si(row.pps),
            &si(row.bps),
        )?;
    }
    Ok(())
}

/// One line of the sources', ports', rules' or prefixes' table.
fn table_row(
    out: &mut dyn Write,
    first: &str,
    packets: &str,
    bytes: &str,
    pps: &str,
    bps: &str,
) -> io::Result<()> {
    writeln!(out, "{}", table_line(first, packets, bytes, pps, bps))
}

/// The text of a [`table_row`].
fn table_line(first: &str, packets: &str, bytes: &str, pps: &str, bps: &str) -> String {
    format!("  {first:<40}{packets:>14}{bytes:>16}{pps:>12}{bps:>12}")
}

/// `part` as a percentage of `whole` (all of nothing is 100%).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// A count as people read it: exact below 1000, else with an SI prefix.
pub fn human_count(value: u64) -> String {
    if value < 1000 {
        value.to_string()
    } else {
        si(value as f64)
    }
}

/// A rate with an SI prefix (k, M, G, T) and one decimal.
pub fn si(value: f64) -> String {
    const PREFIXES: [&str; 5] = ["", "k", "M", "G", "T"];
    let mut scaled = value;
    let mut prefix = 0;
    // Compare the rounded value, so 999.97 prints as 1.0k, not 1000.0.
    while (scaled * 10.0).round() >= 10_000.0 && prefix + 1 < PREFIXES.len() {
        scaled /= 1000.0;
        prefix += 1;
    }
    format!("{scaled:.1}{}", PREFIXES[prefix])
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr, Ipv6Addr},
        time::{Duration, UNIX_EPOCH},
    };

    use xdpstat_common::Counter;

    use super::*;
    use crate::counts::{
        prefixes::PrefixLens,
        snapshot::{ClassSlots, Snapshot},
        sources::{SourceProtocols, Tally},
        verdicts::VerdictRead,
    };

    fn sample() -> Report {
        sample_with(VerdictRead::default())
    }

    /// The sample report, made from a read whose rules did `verdicts`.
    fn sample_with(verdicts: VerdictRead) -> Report {
        let start = Snapshot::empty();
        let mut now = Snapshot::empty();
        now.taken = start.taken + Duration::from_millis(1_000);
        now.wall = UNIX_EPOCH + Duration::from_secs(1_795_557_601);
        let sources: [(IpAddr, u64, u64); 3] = [
            (Ipv4Addr::new(198, 18, 0, 10).into(), 1_500, 96_000),
            (
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xbeef).into(),
                700,
                84_000,
            ),
            (Ipv4Addr::new(198, 18, 7, 1).into(), 3, 192),
        ];
        // The first source sends TCP, the second UDP, the third two ICMP
        // echoes and a packet of another protocol.
        let protocols = [[1_500, 0, 0, 0], [0, 700, 0, 0], [0, 0, 2, 1]];
        now.sources = sources
            .iter()
            .zip(protocols)
            .map(|(&(a, packets, bytes), kept)| {
                let tally = Tally {
                    counter: Counter { packets, bytes },
                    protocols: SourceProtocols(kept),
                };
                (a, tally)
            })
            .collect();
        now.slots = ClassSlots {
            non_ip: Counter {
                packets: 4,
                bytes: 240,
            },
            malformed: Counter {
                packets: 1,
                bytes: 30,
            },
            unattributed_v4: Counter {
                packets: 2,
                bytes: 128,
            },
            unattributed_v6: Counter::default(),
            capture_skipped: Counter::default(),
        };
        // The same IP packets by kind: TCP to 443, UDP from 53, an ICMP
        // echo, one later fragment.
        let c = |packets: u64, bytes: u64| Counter { packets, bytes };
        now.kinds.slots = [
            c(1_500, 96_000),
            c(702, 84_320),
            c(2, 128),
            c(0, 0),
            c(1, 64),
            c(2, 192),
            c(20, 1_280),
        ];
        let mut ports = vec![Counter::default(); 3 * 65_536];
        ports[443] = c(1_500, 96_000);
        ports[65_536 + 33_000] = c(700, 84_000);
        ports[2 * 65_536 + 53] = c(700, 84_000);
        ports[65_536 + 53] = c(1, 192);
        ports[2 * 65_536 + 5353] = c(1, 192);
        now.kinds.ports = crate::counts::kinds::Ports::from_sums(&ports);
        // Prefixes as a read makes them: the held sources exactly, and the
        // two unattributed packets as a sketch's estimate.
        let lens = PrefixLens::default();
        for &(address, packets, bytes) in &sources {
            now.prefixes
                .add_exact(lens.of(address), &Counter { packets, bytes });
        }
        now.prefixes.add_estimate(
            "198.51.100.0/24".parse().unwrap(),
            &Counter {
                packets: 2,
                bytes: 128,
            },
            1,
        );
        now.prefixes.sketched = Counter {
            packets: 2,
            bytes: 128,
        };
        now.verdicts = verdicts;
        let mut report = Report::between(
            "demo0",
            &std::sync::Arc::new(start),
            &std::sync::Arc::new(now),
            Some(2),
        );
        report.attachment = Some("native XDP, bpf link".into());
        report
    }

    #[test]
    fn plain_report() {
        let mut out = Vec::new();
        write_report(&mut out, Format::Plain, &sample()).unwrap();
        insta::assert_snapshot!(String::from_utf8(out).unwrap());
    }

    #[test]
    fn json_report_follows_the_schema() {
        let mut out = Vec::new();
        let sample = sample().counting_since(UNIX_EPOCH + Duration::from_secs(1_795_550_000));
        write_report(&mut out, Format::Json, &sample).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "one object per line");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        insta::assert_json_snapshot!(value);
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "bans",
                "bans_refused",
                "capture_skipped",
                "counting_since",
                "events",
                "interface",
                "interval_s",
                "limit_shared_bucket",
                "ports",
                "prefix_parts",
                "prefixes",
                "rules",
                "sources",
                "time",
                "totals",
                "unattributed",
                "unattributed_verdicts"
            ]
        );
    }

    /// The sample with a drop rule (enforced) over 198.18.0.0/16 that
    /// dropped 1,000 of the first source's packets and 2 no row holds,
    /// and a dry-run limit over 2001:db8::/32.
    fn ruled_sample() -> Report {
        use xdpstat_common::rules::{Rule, action, verdict};

        use crate::rules::in_force::{InForce, RuleHits};
        let c = |packets, bytes| Counter { packets, bytes };
        let (first, second): (IpAddr, IpAddr) = (
            Ipv4Addr::new(198, 18, 0, 10).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xbeef).into(),
        );
        let mut read = VerdictRead::default();
        read.acted[verdict::DROPPED] = c(1_002, 64_128);
        read.acted[verdict::WOULD_LIMIT] = c(200, 24_000);
        let mut acted = [Counter::default(); verdict::ACTED];
        acted[verdict::DROPPED] = c(1_000, 64_000);
        read.ruled.insert(first, acted);
        let mut acted = [Counter::default(); verdict::ACTED];
        acted[verdict::WOULD_LIMIT] = c(200, 24_000);
        read.ruled.insert(second, acted);
        let rule = |prefix: &str, code, enforce| InForce {
            ban: None,
            prefix: Some(prefix.parse().unwrap()),
            matching: Default::default(),
            list: None,
            kernel: Rule {
                action: code,
                enforce,
                ..Rule::default()
            },
        };
        read.rules = vec![
            RuleHits {
                rule: rule("198.18.0.0/16", action::DROP, 1),
                counter: c(1_505, 96_320),
            },
            RuleHits {
                rule: rule("2001:db8::/32", action::LIMIT, 0),
                counter: c(700, 84_000),
            },
        ];
        sample_with(read)
    }

    fn total_frames(report: &Report) -> Counter {
        let t = &report.totals;
        let mut all = t.ipv4;
        for part in [t.ipv6, t.non_ip, t.malformed] {
            all.add(&part);
        }
        all
    }

    #[test]
    fn plain_report_with_rules() {
        let mut out = Vec::new();
        write_report(&mut out, Format::Plain, &ruled_sample()).unwrap();
        insta::assert_snapshot!(String::from_utf8(out).unwrap());
    }

    #[test]
    fn json_report_with_rules() {
        let mut out = Vec::new();
        write_report(&mut out, Format::Json, &ruled_sample()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        insta::assert_json_snapshot!(value);
        let verdicts = &value["totals"]["verdicts"];
        let sum: u64 = ["passed", "dropped", "limited", "would_drop", "would_limit"]
            .iter()
            .map(|k| verdicts[k]["packets"].as_u64().unwrap())
            .sum();
        assert_eq!(sum, total_frames(&ruled_sample()).packets);
        assert_eq!(value["unattributed_verdicts"]["dropped"]["packets"], 2);
    }

    #[test]
    fn si_prefixes() {
        assert_eq!(si(0.0), "0.0");
        assert_eq!(si(999.0), "999.0");
        assert_eq!(si(999.97), "1.0k");
        assert_eq!(si(1_500.0), "1.5k");
        assert_eq!(si(2_000_000_000.0), "2.0G");
    }
}
