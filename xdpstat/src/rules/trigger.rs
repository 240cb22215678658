//! Triggers: bans nobody has to type. A `[[trigger]]` of the rules file
//! names a rate (packets or bits a second, of all of a source's traffic
//! or of one protocol), how long a source or a network must stay over it,
//! and the ban that follows. Here: what a trigger is, read from the file,
//! and [`Watch`], which turns each interval's rates into decisions: ban,
//! extend, or (in a dry run) would ban.

use std::{
    collections::HashMap,
    ops::Range,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;
use xdpstat_common::kinds::{
    protocol::{ICMP, ICMPV6, TCP, UDP},
    source,
};

use crate::rules::{Action, Mode, file::MAX_PPS, matching};

/// What a trigger measures a rate of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Per {
    /// Each source address.
    Source,
    /// Each network of the run's `--prefix-len` (all of its traffic,
    /// estimates of what no table entry held included).
    Prefix,
}

/// One checked `[[trigger]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub name: String,
    pub per: Per,
    /// The source protocol measured (of `kinds::source`); `None`: all.
    pub protocol: Option<usize>,
    /// Over either rate (0: not that one).
    pub pps: u64,
    pub bps: u64,
    /// How long it must stay over.
    pub sustained: Duration,
    /// The ban: `Drop`, or `Limit`.
    pub action: Action,
    /// A ban ends this long after the rate was last over.
    pub ban_for: Duration,
    pub mode: Mode,
    pub line: usize,
}

impl Trigger {
    /// `udp over 5000 pps for 3s`.
    pub fn describe(&self) -> String {
        let what = self.protocol.map_or("traffic", |p| {
            xdpstat_common::kinds::SOURCE_PROTOCOL_NAMES[p]
        });
        let mut over = Vec::new();
        if self.pps > 0 {
            over.push(format!("{} pps", self.pps));
        }
        if self.bps > 0 {
            over.push(format!("{} bps", self.bps));
        }
        format!(
            "{what} over {} for {}",
            over.join(" or "),
            humantime::format_duration(self.sustained)
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrigger {
    name: Spanned<String>,
    per: Option<Spanned<String>>,
    protocol: Option<Spanned<toml::Value>>,
    src_port: Option<Spanned<toml::Value>>,
    dst_port: Option<Spanned<toml::Value>>,
    tcp_flags: Option<Spanned<String>>,
    pps: Option<Spanned<i64>>,
    bps: Option<Spanned<i64>>,
    #[serde(rename = "for")]
    sustained: Option<Spanned<String>>,
    action: Spanned<String>,
    limit_pps: Option<Spanned<i64>>,
    limit_bps: Option<Spanned<i64>>,
    ban_for: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
}

/// The most triggers a rules file may hold.
pub const MAX_TRIGGERS: usize = 64;

type Refused = (Range<usize>, String);

/// A duration as a trigger gives it: `3s`, `10m`, `1h`.
fn duration(value: &Spanned<String>, key: &str) -> Result<Duration, Refused> {
    humantime::parse_duration(value.get_ref().trim()).map_err(|e| {
        (
            value.span(),
            format!(
                "{key} = \"{}\": {e} (a duration such as 3s, 10m or 1h)",
                value.get_ref()
            ),
        )
    })
}

fn positive(value: &Spanned<i64>, key: &str, max: i64) -> Result<u64, Refused> {
    match *value.get_ref() {
        n if n <= 0 => Err((value.span(), format!("{key} = {n}: must be at least 1"))),
        n if n > max => Err((value.span(), format!("{key} = {n}: at most {max}"))),
        n => Ok(n as u64),
    }
}

/// Checks one `[[trigger]]` (`whole` is its table's span, `mode` the
/// file's, `parse_mode` the file's reading of a mode).
pub(crate) fn parse(
    raw: &RawTrigger,
    whole: Range<usize>,
    mode: Mode,
    parse_mode: impl Fn(&Spanned<String>) -> Result<Mode, String>,
    line: usize,
) -> Result<Trigger, Refused> {
    let name = raw.name.get_ref().trim().to_owned();
    if name.is_empty()
        || name.len() > crate::rules::ban::MAX_ORIGIN
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err((
            raw.name.span(),
            format!(
                "name = \"{name}\": 1 to {} letters, digits, '-', '_' or '.' (it names the trigger's bans)",
                crate::rules::ban::MAX_ORIGIN
            ),
        ));
    }
    for (key, value) in [
        ("src_port", raw.src_port.as_ref().map(Spanned::span)),
        ("dst_port", raw.dst_port.as_ref().map(Spanned::span)),
        ("tcp_flags", raw.tcp_flags.as_ref().map(Spanned::span)),
    ] {
        if let Some(span) = value {
            return Err((
                span,
                format!(
                    "{key}: a trigger measures each source's packets by protocol, and ports and flags are not counted per source; match them with a rule"
                ),
            ));
        }
    }
    let per = match &raw.per {
        None => Per::Source,
        Some(per) => match per.get_ref().as_str() {
            "source" => Per::Source,
            "prefix" => Per::Prefix,
            other => {
                return Err((
                    per.span(),
                    format!("per = \"{other}\": \"source\" or \"prefix\""),
                ));
            }
        },
    };
    let protocol = match &raw.protocol {
        None => None,
        Some(value) => {
            let (none, no_flags) = (None, None);
            let parsed = matching::parse(&matching::RawMatch {
                protocol: &raw.protocol,
                src_port: &none,
                dst_port: &none,
                tcp_flags: &no_flags,
            })?;
            let measured = match parsed.protocol {
                Some(TCP) => source::TCP,
                Some(UDP) => source::UDP,
                Some(ICMP | ICMPV6) => source::ICMP,
                _ => {
                    return Err((
                        value.span(),
                        "a trigger measures \"tcp\", \"udp\" or \"icmp\" (ICMP and ICMPv6 together) per source".into(),
                    ));
                }
            };
            Some(measured)
        }
    };
    if per == Per::Prefix
        && let Some(value) = &raw.protocol
    {
        return Err((
            value.span(),
            "per = \"prefix\" measures all of a network's traffic (what catches spoofed floods keeps no protocol); leave protocol out".into(),
        ));
    }
    let pps = raw
        .pps
        .as_ref()
        .map(|v| positive(v, "pps", MAX_PPS))
        .transpose()?
        .unwrap_or(0);
    let bps = raw
        .bps
        .as_ref()
        .map(|v| positive(v, "bps", i64::MAX))
        .transpose()?
        .unwrap_or(0);
    if pps == 0 && bps == 0 {
        return Err((
            whole,
            format!("trigger \"{name}\" has no threshold: give pps, bps or both"),
        ));
    }
    if bps > 0
        && let Some(value) = &raw.protocol
    {
        return Err((
            value.span(),
            "bps with protocol: a source's bytes are not counted by protocol; use pps".into(),
        ));
    }
    let sustained = match &raw.sustained {
        Some(value) => duration(value, "for")?,
        None => Duration::ZERO,
    };
    let ban_for = match &raw.ban_for {
        Some(value) => duration(value, "ban_for")?,
        None => Duration::from_secs(600),
    };
    if ban_for.is_zero() || ban_for > Duration::from_secs(100 * 365 * 86_400) {
        let span = raw.ban_for.as_ref().map_or(whole.clone(), Spanned::span);
        return Err((
            span,
            "ban_for: more than nothing and at most 100 years".into(),
        ));
    }
    let action = match raw.action.get_ref().as_str() {
        "drop" => {
            for (key, value) in [("limit_pps", &raw.limit_pps), ("limit_bps", &raw.limit_bps)] {
                if let Some(value) = value {
                    return Err((value.span(), format!("{key} belongs to action = \"limit\"")));
                }
            }
            Action::Drop
        }
        "limit" => {
            let pps = raw
                .limit_pps
                .as_ref()
                .map(|v| positive(v, "limit_pps", MAX_PPS))
                .transpose()?
                .unwrap_or(0);
            let bps = raw
                .limit_bps
                .as_ref()
                .map(|v| positive(v, "limit_bps", crate::rules::file::MAX_BPS))
                .transpose()?
                .unwrap_or(0);
            if let Some(value) = &raw.limit_bps
                && bps < crate::rules::file::MIN_BPS as u64
            {
                return Err((
                    value.span(),
                    format!(
                        "limit_bps = {bps}: at least {}",
                        crate::rules::file::MIN_BPS
                    ),
                ));
            }
            if pps == 0 && bps == 0 {
                return Err((
                    raw.action.span(),
                    "action = \"limit\" needs limit_pps, limit_bps or both (the ban's rate)".into(),
                ));
            }
            Action::Limit {
                pps,
                burst: pps,
                bps,
            }
        }
        other => {
            return Err((
                raw.action.span(),
                format!("action = \"{other}\": a trigger's ban is \"drop\" or \"limit\""),
            ));
        }
    };
    let mode = match &raw.mode {
        Some(value) => parse_mode(value).map_err(|m| (value.span(), m))?,
        None => mode,
    };
    Ok(Trigger {
        name,
        per,
        protocol,
        pps,
        bps,
        sustained,
        action,
        ban_for,
        mode,
        line,
    })
}

/// One key's rate over an interval: a source's (or a network's) packets
/// and bytes of what its trigger measures.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub key: IpNet,
    pub packets: u64,
    pub bytes: u64,
}

/// What a trigger decided for a key this interval.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Ban `key` (it was over for long enough); `detail` says how much.
    Ban {
        trigger: usize,
        key: IpNet,
        detail: String,
    },
    /// It is still over: its ban, if this trigger made one, now ends
    /// `ban_for` from now.
    Extend { trigger: usize, key: IpNet },
    /// A dry run's ban.
    WouldBan {
        trigger: usize,
        key: IpNet,
        detail: String,
    },
}

/// A key over its threshold: since when, and whether its ban was decided
/// (once for each time it crosses).
#[derive(Clone, Copy, Debug)]
struct Over {
    since: SystemTime,
    decided: bool,
}

/// Every trigger's keys that are over their thresholds now. Only those
/// are kept: a key below is forgotten, so memory follows what is over,
/// not what was ever seen.
#[derive(Debug, Default)]
pub struct Watch {
    over: Vec<HashMap<IpNet, Over>>,
}

impl Watch {
    /// Judges one interval of `seconds` ending at `now`: `rates(t)` gives
    /// trigger `t`'s keys with what they sent in it. Keys over a threshold
    /// for `sustained` (counted from the start of the first interval they
    /// were over in) get a ban decided once, then an extension each
    /// interval they stay over.
    pub fn judge<'a>(
        &mut self,
        triggers: &[Trigger],
        seconds: f64,
        now: SystemTime,
        mut rates: impl FnMut(&Trigger) -> Box<dyn Iterator<Item = Rate> + 'a>,
    ) -> Vec<Decision> {
        self.over.resize_with(triggers.len(), HashMap::new);
        let mut decisions = Vec::new();
        if seconds <= 0.0 {
            return decisions;
        }
        let began = now
            .checked_sub(Duration::from_secs_f64(seconds))
            .unwrap_or(now);
        for (at, trigger) in triggers.iter().enumerate() {
            let over = &mut self.over[at];
            let mut still = HashMap::with_capacity(over.len());
            for rate in rates(trigger) {
                let pps = rate.packets as f64 / seconds;
                let bps = rate.bytes as f64 * 8.0 / seconds;
                let is_over = (trigger.pps > 0 && pps > trigger.pps as f64)
                    || (trigger.bps > 0 && bps > trigger.bps as f64);
                if !is_over {
                    continue;
                }
                let mut state = over.get(&rate.key).copied().unwrap_or(Over {
                    since: began,
                    decided: false,
                });
                let long_enough = now
                    .duration_since(state.since)
                    .is_ok_and(|d| d + Duration::from_millis(1) >= trigger.sustained);
                if long_enough {
                    let detail = format!("{:.0} pps, {:.0} bps: {}", pps, bps, trigger.describe());
                    if !state.decided {
                        state.decided = true;
                        decisions.push(if trigger.mode == Mode::Enforce {
                            Decision::Ban {
                                trigger: at,
                                key: rate.key,
                                detail,
                            }
                        } else {
                            Decision::WouldBan {
                                trigger: at,
                                key: rate.key,
                                detail,
                            }
                        });
                    } else if trigger.mode == Mode::Enforce {
                        decisions.push(Decision::Extend {
                            trigger: at,
                            key: rate.key,
                        });
                    }
                }
                still.insert(rate.key, state);
            }
            *over = still;
        }
        decisions
    }

    /// Forgets every key (the triggers changed).
    pub fn reset(&mut self) {
        self.over.clear();
    }

    /// How many keys are over now, all triggers together.
    pub fn len(&self) -> usize {
        self.over.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(pps: u64, sustained: u64, mode: Mode) -> Trigger {
        Trigger {
            name: "t".into(),
            per: Per::Source,
            protocol: None,
            pps,
            bps: 0,
            sustained: Duration::from_secs(sustained),
            action: Action::Drop,
            ban_for: Duration::from_secs(60),
            mode,
            line: 1,
        }
    }

    fn rate(key: &str, packets: u64) -> Rate {
        Rate {
            key: key.parse().unwrap(),
            packets,
            bytes: packets * 100,
        }
    }

    #[test]
    fn a_key_over_for_long_enough_is_banned_once_then_extended_and_forgotten_below() {
        let triggers = [trigger(100, 2, Mode::Enforce)];
        let mut watch = Watch::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut judge = |now, flood: u64, calm: u64| {
            watch.judge(&triggers, 1.0, now, |_| {
                Box::new(
                    vec![rate("198.18.0.1/32", flood), rate("198.18.0.2/32", calm)].into_iter(),
                )
            })
        };
        // Over in the interval (0, 1] and (1, 2]: two seconds by t=2.
        assert!(judge(at(1), 500, 100).is_empty(), "100 is not over 100");
        let decided = judge(at(2), 500, 10);
        assert!(
            matches!(&decided[..], [Decision::Ban { key, .. }] if key.to_string() == "198.18.0.1/32"),
            "{decided:?}"
        );
        assert!(matches!(
            &judge(at(3), 500, 10)[..],
            [Decision::Extend { .. }]
        ));
        // Below: forgotten; over again: a new streak.
        assert!(judge(at(4), 50, 10).is_empty());
        assert!(judge(at(5), 500, 10).is_empty());
        assert!(matches!(&judge(at(6), 500, 10)[..], [Decision::Ban { .. }]));
        assert_eq!(watch.len(), 1);
    }

    #[test]
    fn a_dry_run_would_ban_once_a_streak() {
        let triggers = [trigger(10, 0, Mode::DryRun)];
        let mut watch = Watch::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
        for round in 0..3 {
            let decided = watch.judge(&triggers, 1.0, now + Duration::from_secs(round), |_| {
                Box::new(std::iter::once(rate("2001:db8::1/128", 50)))
            });
            assert_eq!(decided.len(), usize::from(round == 0), "{decided:?}");
        }
    }

    fn parsed(text: &str) -> Result<Trigger, String> {
        #[derive(Deserialize)]
        struct File {
            trigger: Vec<Spanned<RawTrigger>>,
        }
        let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let raw = &file.trigger[0];
        parse(
            raw.get_ref(),
            raw.span(),
            Mode::DryRun,
            |m| match m.get_ref().as_str() {
                "enforce" => Ok(Mode::Enforce),
                "dry-run" => Ok(Mode::DryRun),
                _ => Err("mode".into()),
            },
            1,
        )
        .map_err(|(_, m)| m)
    }

    #[test]
    fn a_trigger_reads_whole_or_is_refused_with_a_reason() {
        let good = parsed(
            "[[trigger]]\nname = \"udp-flood\"\nprotocol = \"udp\"\npps = 5000\nfor = \"3s\"\naction = \"limit\"\nlimit_pps = 100\nban_for = \"10m\"\nmode = \"enforce\"\n",
        )
        .unwrap();
        assert_eq!(good.protocol, Some(source::UDP));
        assert_eq!(good.sustained, Duration::from_secs(3));
        assert_eq!(good.ban_for, Duration::from_secs(600));
        assert_eq!(good.mode, Mode::Enforce);
        assert_eq!(good.describe(), "udp over 5000 pps for 3s");
        for (text, wanted) in [
            ("name = \"x\"\naction = \"drop\"\n", "no threshold"),
            (
                "name = \"x\"\npps = 1\nfor = \"soon\"\naction = \"drop\"\n",
                "for = \"soon\"",
            ),
            (
                "name = \"x\"\npps = 1\nban_for = \"0s\"\naction = \"drop\"\n",
                "ban_for",
            ),
            (
                "name = \"x\"\npps = 1\naction = \"drop\"\ncolour = 1\n",
                "unknown field",
            ),
            ("name = \"x\"\npps = 1\naction = \"limit\"\n", "limit_pps"),
            ("name = \"x y\"\npps = 1\naction = \"drop\"\n", "letters"),
            (
                "name = \"x\"\nprotocol = \"udp\"\ndst_port = 53\npps = 1\naction = \"drop\"\n",
                "not counted per source",
            ),
            (
                "name = \"x\"\nper = \"prefix\"\nprotocol = \"udp\"\npps = 1\naction = \"drop\"\n",
                "leave protocol out",
            ),
            (
                "name = \"x\"\nprotocol = \"gre\"\npps = 1\naction = \"drop\"\n",
                "protocol",
            ),
            (
                "name = \"x\"\nprotocol = \"udp\"\nbps = 10000\naction = \"drop\"\n",
                "use pps",
            ),
            (
                "name = \"x\"\npps = 1\naction = \"pass\"\n",
                "\"drop\" or \"limit\"",
            ),
        ] {
            let refused = parsed(&format!("[[trigger]]\n{text}")).unwrap_err();
            assert!(refused.contains(wanted), "{text}: {refused}");
        }
    }
}
