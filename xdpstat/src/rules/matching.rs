//! What a rule asks of a packet beyond its source: its protocol, its
//! ports, whether it is a TCP SYN. Read from a rule's or a list's fields,
//! checked (ports only with TCP or UDP, a SYN only with TCP), and said
//! back in a few words the way the rules file wrote it.

use std::ops::Range;

use toml::Spanned;
use xdpstat_common::kinds::protocol::{ICMP, ICMPV6, TCP, UDP};

/// The protocols a rules file may name, by name.
const NAMED: [(&str, u8); 4] = [
    ("tcp", TCP),
    ("udp", UDP),
    ("icmp", ICMP),
    ("icmpv6", ICMPV6),
];

/// A protocol's name, when it has one.
pub fn named(protocol: u8) -> Option<&'static str> {
    NAMED
        .iter()
        .find(|(_, number)| *number == protocol)
        .map(|(name, _)| *name)
}

/// A rule's protocol, ports and flags; all empty: every packet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Match {
    pub protocol: Option<u8>,
    /// Inclusive ranges, sorted, none overlapping or adjacent; empty: any
    /// port (or none).
    pub src_ports: Vec<(u16, u16)>,
    pub dst_ports: Vec<(u16, u16)>,
    /// Only TCP SYNs (SYN set, ACK clear).
    pub syn: bool,
}

/// Which address families a match can apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Families {
    Both,
    V4,
    V6,
}

impl Match {
    /// Whether it matches every packet.
    pub fn is_any(&self) -> bool {
        self.protocol.is_none()
            && self.src_ports.is_empty()
            && self.dst_ports.is_empty()
            && !self.syn
    }

    /// How many of protocol, source ports, destination ports and flags it
    /// names: among rules of one prefix, the one naming more decides.
    pub fn specificity(&self) -> u8 {
        u8::from(self.protocol.is_some())
            + u8::from(!self.src_ports.is_empty())
            + u8::from(!self.dst_ports.is_empty())
            + u8::from(self.syn)
    }

    /// ICMP is IPv4's, ICMPv6 IPv6's; everything else either's.
    pub fn families(&self) -> Families {
        match self.protocol {
            Some(ICMP) => Families::V4,
            Some(ICMPV6) => Families::V6,
            _ => Families::Both,
        }
    }

    /// `udp src port 53,123`, `tcp dst port 443 syn`, `protocol 47`; empty
    /// for a match of every packet.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(protocol) = self.protocol {
            parts.push(protocol_name(protocol));
        }
        for (side, ranges) in [("src", &self.src_ports), ("dst", &self.dst_ports)] {
            if !ranges.is_empty() {
                parts.push(format!("{side} port {}", ports_text(ranges)));
            }
        }
        if self.syn {
            parts.push("syn".into());
        }
        parts.join(" ")
    }
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, or `protocol N`.
pub fn protocol_name(protocol: u8) -> String {
    named(protocol).map_or_else(|| format!("protocol {protocol}"), str::to_owned)
}

/// `53,123,1024-65535`.
pub fn ports_text(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|&(low, high)| {
            if low == high {
                low.to_string()
            } else {
                format!("{low}-{high}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A rule's or a list's L4 fields as the file gives them.
pub struct RawMatch<'a> {
    pub protocol: &'a Option<Spanned<toml::Value>>,
    pub src_port: &'a Option<Spanned<toml::Value>>,
    pub dst_port: &'a Option<Spanned<toml::Value>>,
    pub tcp_flags: &'a Option<Spanned<String>>,
}

/// Reads and checks the fields: the match, or where the first mistake is
/// and what it is.
pub fn parse(raw: &RawMatch<'_>) -> Result<Match, (Range<usize>, String)> {
    let protocol = match raw.protocol {
        Some(value) => Some(parse_protocol(value).map_err(|m| (value.span(), m))?),
        None => None,
    };
    let mut matching = Match {
        protocol,
        ..Match::default()
    };
    for (key, value, ranges) in [
        ("src_port", raw.src_port, &mut matching.src_ports),
        ("dst_port", raw.dst_port, &mut matching.dst_ports),
    ] {
        let Some(value) = value else { continue };
        if !matches!(protocol, Some(TCP | UDP)) {
            return Err((
                value.span(),
                format!("{key} needs protocol = \"tcp\" or \"udp\" (only they have ports)"),
            ));
        }
        *ranges = parse_ports(value.get_ref(), key).map_err(|m| (value.span(), m))?;
    }
    if let Some(flags) = raw.tcp_flags {
        if protocol != Some(TCP) {
            return Err((
                flags.span(),
                "tcp_flags needs protocol = \"tcp\"".to_owned(),
            ));
        }
        if flags.get_ref() != "syn" {
            return Err((
                flags.span(),
                format!(
                    "tcp_flags = \"{}\": the one flag match is \"syn\" (SYN set, ACK clear)",
                    flags.get_ref()
                ),
            ));
        }
        matching.syn = true;
    }
    Ok(matching)
}

fn parse_protocol(value: &Spanned<toml::Value>) -> Result<u8, String> {
    match value.get_ref() {
        toml::Value::String(name) => NAMED
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, number)| *number)
            .ok_or_else(|| {
                format!(
                    "unknown protocol \"{name}\": \"tcp\", \"udp\", \"icmp\", \"icmpv6\" or a number 0-255"
                )
            }),
        toml::Value::Integer(n) => {
            u8::try_from(*n).map_err(|_| format!("protocol = {n}: a protocol number is 0-255"))
        }
        other => Err(format!(
            "protocol = {other}: a name (\"tcp\", \"udp\", \"icmp\", \"icmpv6\") or a number 0-255"
        )),
    }
}

/// A port, a range `"1024-65535"`, or a list of them: sorted, merged
/// ranges.
fn parse_ports(value: &toml::Value, key: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut ranges = Vec::new();
    match value {
        toml::Value::Array(items) => {
            if items.is_empty() {
                return Err(format!("{key} = []: name at least one port"));
            }
            for item in items {
                ranges.push(one_port(item, key)?);
            }
        }
        single => ranges.push(one_port(single, key)?),
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (low, high) in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(low) <= u32::from(last.1) + 1 => last.1 = last.1.max(high),
            _ => merged.push((low, high)),
        }
    }
    Ok(merged)
}

fn one_port(value: &toml::Value, key: &str) -> Result<(u16, u16), String> {
    let number =
        |n: i64| u16::try_from(n).map_err(|_| format!("{key}: port {n} is outside 0-65535"));
    match value {
        toml::Value::Integer(n) => number(*n).map(|port| (port, port)),
        toml::Value::String(text) => {
            let parse = |part: &str| -> Result<u16, String> {
                let n: i64 = part.trim().parse().map_err(|_| {
                    format!("{key}: \"{text}\" is not a port or a range like \"1024-65535\"")
                })?;
                number(n)
            };
            match text.split_once('-') {
                Some((low, high)) => {
                    let (low, high) = (parse(low)?, parse(high)?);
                    if low > high {
                        return Err(format!(
                            "{key}: range \"{text}\" is reversed (write \"{high}-{low}\")"
                        ));
                    }
                    Ok((low, high))
                }
                None => parse(text).map(|port| (port, port)),
            }
        }
        other => Err(format!(
            "{key} = {other}: a port, a range like \"1024-65535\", or a list of them"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_merge_into_sorted_ranges_and_say_themselves_back() {
        let value: toml::Value =
            toml::from_str::<toml::Table>("p = [11211, 53, \"1024-2000\", 54, \"1500-3000\", 123]")
                .unwrap()["p"]
                .clone();
        let ranges = parse_ports(&value, "src_port").unwrap();
        assert_eq!(ranges, [(53, 54), (123, 123), (1024, 3000), (11211, 11211)]);
        assert_eq!(ports_text(&ranges), "53-54,123,1024-3000,11211");
        let full = parse_ports(&toml::Value::String("0-65535".into()), "dst_port").unwrap();
        assert_eq!(full, [(0, 65535)]);
    }

    #[test]
    fn bad_ports_say_what_is_wrong() {
        let cases = [
            (toml::Value::Integer(65536), "port 65536 is outside 0-65535"),
            (toml::Value::Integer(-1), "port -1 is outside 0-65535"),
            (toml::Value::String("2000-1000".into()), "is reversed"),
            (
                toml::Value::String("http".into()),
                "is not a port or a range",
            ),
            (toml::Value::Array(vec![]), "name at least one port"),
            (toml::Value::Boolean(true), "a port, a range"),
        ];
        for (value, expected) in cases {
            let error = parse_ports(&value, "dst_port").unwrap_err();
            assert!(error.contains(expected), "{value}: {error}");
        }
    }

    #[test]
    fn specificity_counts_what_is_named() {
        let syn = Match {
            protocol: Some(TCP),
            dst_ports: vec![(443, 443)],
            syn: true,
            ..Match::default()
        };
        assert_eq!(syn.specificity(), 3);
        assert_eq!(syn.describe(), "tcp dst port 443 syn");
        assert!(Match::default().is_any());
        assert_eq!(Match::default().specificity(), 0);
        let icmp = Match {
            protocol: Some(ICMP),
            ..Match::default()
        };
        assert_eq!(icmp.families(), Families::V4);
        assert_eq!(
            Match {
                protocol: Some(47),
                ..Match::default()
            }
            .describe(),
            "protocol 47"
        );
    }
}
