//! Bans: a source or prefix dropped (or limited) for a while, above the
//! rules and below the allows. Each is a step at the head of the chains
//! of its prefix and of every prefix inside it, with its end on the step
//! itself, so the datapath stops applying it on time by itself. Here:
//! what a ban is, the set of bans in force with its bound, the refusal
//! of a ban an allow covers, and the events every change makes.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use serde::Serialize;
use xdpstat_common::rules::{BanRecord, action};

use crate::rules::{Action, RuleSet};

/// The most bans one interface holds unless the rules file says fewer.
pub const DEFAULT_MAX_BANS: usize = 10_000;

/// The longest reason and origin a ban keeps (bytes of UTF-8).
pub const MAX_REASON: usize = 80;
pub const MAX_ORIGIN: usize = 32;

/// The end of a ban's step taken out with no xdpstat running (the step
/// stays, ended, until one writes the rules anew): in the past on every
/// clock, and never an end a ban is given (those are its start plus a
/// length, at least 1 ns after boot).
pub const TAKEN_OUT_NS: u64 = 1;

/// One ban in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub prefix: IpNet,
    /// `Drop`, or `Limit` (its burst a second's worth).
    pub action: Action,
    /// `hand`, or the name of the trigger that made it.
    pub origin: String,
    pub reason: String,
    pub since: SystemTime,
    /// When it ends; `None`: when it is taken out.
    pub until: Option<SystemTime>,
    /// The same end on the kernel's monotonic clock (what the datapath
    /// compares a packet's time with); 0: none.
    pub until_ns: u64,
}

/// The kernel's monotonic clock (`bpf_ktime_get_ns`'s), in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// A moment on the two clocks a ban keeps: the wall clock, for the
/// reports, and the datapath's (the kernel's monotonic clock live, the
/// capture's in a replay), for its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moment {
    pub wall: SystemTime,
    pub datapath_ns: u64,
}

impl Moment {
    /// Now, live.
    pub fn now() -> Self {
        Self {
            wall: SystemTime::now(),
            datapath_ns: monotonic_ns(),
        }
    }
}

impl Ban {
    /// A ban of `prefix` from now for `length` (`None`: until taken out).
    pub fn new(
        prefix: IpNet,
        action: Action,
        origin: &str,
        reason: &str,
        length: Option<Duration>,
    ) -> Self {
        Self::at(Moment::now(), prefix, action, origin, reason, length)
    }

    /// A ban of `prefix` from `since` for `length`.
    pub fn at(
        since: Moment,
        prefix: IpNet,
        action: Action,
        origin: &str,
        reason: &str,
        length: Option<Duration>,
    ) -> Self {
        let (until, until_ns) = match length {
            Some(length) => (
                Some(since.wall + length),
                // Never 0, which means no end, nor a taken-out step's.
                since
                    .datapath_ns
                    .saturating_add(length.as_nanos() as u64)
                    .max(TAKEN_OUT_NS + 1),
            ),
            None => (None, 0),
        };
        let since = since.wall;
        Self {
            prefix: prefix.trunc(),
            action,
            origin: clip(origin, MAX_ORIGIN),
            reason: clip(reason, MAX_REASON),
            since,
            until,
            until_ns,
        }
    }

    /// `ban 198.51.100.7/32`: what the rule hits and reports call it.
    pub fn label(&self) -> String {
        format!("ban {}", self.prefix)
    }

    /// Whether it was taken out while no xdpstat ran (see [`TAKEN_OUT_NS`]).
    pub fn taken_out(&self) -> bool {
        self.until_ns == TAKEN_OUT_NS
    }

    /// Whether it has ended by `now_ns` (the monotonic clock).
    pub fn ended(&self, now_ns: u64) -> bool {
        self.until_ns != 0 && now_ns >= self.until_ns
    }

    /// The rule the datapath holds for it: always in force (a ban has no
    /// dry run: a trigger's dry run makes no ban).
    pub fn kernel(&self) -> xdpstat_common::rules::Rule {
        super::kernel_rule(self.action, super::Mode::Enforce)
    }

    /// `drop`, `limit 1000 pps`.
    pub fn describe(&self) -> String {
        match self.action {
            Action::Limit { pps, bps, .. } => {
                let mut parts = Vec::new();
                if pps > 0 {
                    parts.push(format!("{pps} pps"));
                }
                if bps > 0 {
                    parts.push(format!("{bps} bps"));
                }
                format!("limit {}", parts.join(" and "))
            }
            other => other.name().to_owned(),
        }
    }

    /// As kept in the pinned map.
    pub fn record(&self) -> BanRecord {
        let unix = |time: SystemTime| {
            time.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        };
        let mut record = BanRecord {
            until_ns: self.until_ns,
            since_unix_ns: unix(self.since),
            until_unix_ns: self.until.map_or(0, unix),
            prefix_len: u32::from(self.prefix.prefix_len()),
            ..BanRecord::default()
        };
        match self.prefix.addr() {
            IpAddr::V4(a) => {
                record.family = 4;
                record.address[..4].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                record.family = 6;
                record.address = a.octets();
            }
        }
        (record.action, record.pps, record.bps) = match self.action {
            Action::Limit { pps, bps, .. } => (action::LIMIT, pps, bps),
            _ => (action::DROP, 0, 0),
        };
        record.origin[..self.origin.len()].copy_from_slice(self.origin.as_bytes());
        record.reason[..self.reason.len()].copy_from_slice(self.reason.as_bytes());
        record
    }

    /// A ban read back from the pinned map; `None` for a free or damaged
    /// record.
    pub fn from_record(record: &BanRecord) -> Option<Self> {
        let address = match record.family {
            4 => IpAddr::from(<[u8; 4]>::try_from(&record.address[..4]).ok()?),
            6 => IpAddr::from(record.address),
            _ => return None,
        };
        let prefix = IpNet::new(address, u8::try_from(record.prefix_len).ok()?).ok()?;
        let time = |ns: u64| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns);
        let text = |bytes: &[u8]| {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        };
        let action = match record.action {
            action::DROP => Action::Drop,
            action::LIMIT if record.pps > 0 || record.bps > 0 => Action::Limit {
                pps: record.pps,
                burst: record.pps,
                bps: record.bps,
            },
            _ => return None,
        };
        Some(Self {
            prefix,
            action,
            origin: text(&record.origin),
            reason: text(&record.reason),
            since: time(record.since_unix_ns),
            until: (record.until_unix_ns != 0).then(|| time(record.until_unix_ns)),
            until_ns: record.until_ns,
        })
    }
}

/// `text` cut to at most `max` bytes on a character boundary, without
/// control characters (a reason is one line in every report).
fn clip(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// What happened to a ban, as the reports and `on_event` say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Ban,
    Extend,
    Unban,
    Expire,
    Refused,
    WouldBan,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Ban => "ban",
            EventKind::Extend => "extend",
            EventKind::Unban => "unban",
            EventKind::Expire => "expire",
            EventKind::Refused => "refused",
            EventKind::WouldBan => "would_ban",
        }
    }

    pub const ALL: [EventKind; 6] = [
        EventKind::Ban,
        EventKind::Extend,
        EventKind::Unban,
        EventKind::Expire,
        EventKind::Refused,
        EventKind::WouldBan,
    ];
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub time: SystemTime,
    pub event: EventKind,
    pub prefix: IpNet,
    pub origin: String,
    pub detail: String,
}

/// Why a ban was not put in force.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{prefix} is allowed by {by}: nothing drops or limits it")]
    Allowed { prefix: IpNet, by: String },
    #[error("{max} bans are in force on this interface already (max_bans)")]
    Full { max: usize },
}

/// The bans in force on one interface, at most `max` of them, one per
/// prefix.
#[derive(Clone, Debug)]
pub struct Bans {
    pub max: usize,
    pub list: Vec<Ban>,
}

impl Default for Bans {
    fn default() -> Self {
        Self {
            max: DEFAULT_MAX_BANS,
            list: Vec::new(),
        }
    }
}

/// What [`Bans::add`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    New,
    /// A ban of that prefix was there; it now is the new one.
    Replaced,
}

impl Bans {
    /// Puts `ban` in the set unless an allow of `rules` covers its prefix
    /// or the set is full; a ban of the same prefix is replaced.
    pub fn add(&mut self, ban: Ban, rules: &RuleSet) -> Result<Added, Refusal> {
        if let Some(by) = allowed_by(rules, &ban.prefix) {
            return Err(Refusal::Allowed {
                prefix: ban.prefix,
                by,
            });
        }
        if let Some(at) = self.list.iter().position(|b| b.prefix == ban.prefix) {
            self.list[at] = ban;
            return Ok(Added::Replaced);
        }
        if self.list.len() >= self.max {
            return Err(Refusal::Full { max: self.max });
        }
        self.list.push(ban);
        Ok(Added::New)
    }

    /// Takes out the ban of exactly `prefix`, if there is one.
    pub fn remove(&mut self, prefix: &IpNet) -> Option<Ban> {
        let at = self.list.iter().position(|b| b.prefix == prefix.trunc())?;
        Some(self.list.remove(at))
    }

    /// Takes out the bans that ended by `now_ns`.
    pub fn take_ended(&mut self, now_ns: u64) -> Vec<Ban> {
        let (ended, kept) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|b| b.ended(now_ns));
        self.list = kept;
        ended
    }

    /// Takes out the bans an allow of `rules` now covers (after a reload).
    pub fn take_allowed(&mut self, rules: &RuleSet) -> Vec<(Ban, String)> {
        let mut taken = Vec::new();
        self.list
            .retain(|ban| match allowed_by(rules, &ban.prefix) {
                Some(by) => {
                    taken.push((ban.clone(), by));
                    false
                }
                None => true,
            });
        taken
    }
}

/// The allow of `rules` that passes every packet from every source in
/// `prefix`, named as `rules check` names it, if there is one.
pub fn allowed_by(rules: &RuleSet, prefix: &IpNet) -> Option<String> {
    let family = |p: &IpNet| matches!(p, IpNet::V6(_));
    for rule in &rules.rules {
        if rule.action != Action::Allow || !rule.matching.is_any() {
            continue;
        }
        let covers = match rule.prefix {
            Some(p) => family(&p) == family(prefix) && p.contains(prefix),
            None => true,
        };
        if covers {
            return Some(format!(
                "the allow at line {} ({})",
                rule.line,
                rule.label()
            ));
        }
    }
    for list in &rules.lists {
        if list.action != Action::Allow || !list.matching.is_any() {
            continue;
        }
        if let Some(p) = list
            .prefixes
            .iter()
            .find(|p| family(p) == family(prefix) && p.contains(prefix))
        {
            return Some(format!("{p} in the allow list {}", list.name));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Mode, Rule, matching::Match};

    fn prefix(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn allow(p: &str, matching: Match) -> RuleSet {
        RuleSet {
            rules: vec![Rule {
                prefix: Some(prefix(p)),
                matching,
                action: Action::Allow,
                mode: Mode::Enforce,
                line: 3,
            }],
            ..RuleSet::default()
        }
    }

    #[test]
    fn an_allow_around_a_ban_refuses_it_and_one_inside_or_with_ports_does_not() {
        let rules = allow("198.18.0.0/16", Match::default());
        let mut bans = Bans::default();
        let ban = |p: &str| Ban::new(prefix(p), Action::Drop, "hand", "", None);
        assert!(matches!(
            bans.add(ban("198.18.5.7/32"), &rules),
            Err(Refusal::Allowed { .. })
        ));
        assert!(matches!(
            bans.add(ban("198.18.0.0/16"), &rules),
            Err(Refusal::Allowed { .. })
        ));
        // Wider than the allow: its sources outside the allow are banned,
        // the allowed ones still pass (the chains put allows first).
        assert_eq!(bans.add(ban("198.18.0.0/15"), &rules), Ok(Added::New));
        assert_eq!(bans.add(ban("2001:db8::1/128"), &rules), Ok(Added::New));
        let udp = allow(
            "198.19.0.0/16",
            Match {
                protocol: Some(17),
                ..Match::default()
            },
        );
        assert_eq!(bans.add(ban("198.19.0.1/32"), &udp), Ok(Added::New));
    }

    #[test]
    fn the_set_is_bounded_and_a_prefix_is_banned_once() {
        let mut bans = Bans {
            max: 2,
            list: Vec::new(),
        };
        let rules = RuleSet::default();
        let ban = |p: &str| Ban::new(prefix(p), Action::Drop, "hand", "", None);
        assert_eq!(bans.add(ban("198.18.0.1/32"), &rules), Ok(Added::New));
        assert_eq!(bans.add(ban("198.18.0.1/32"), &rules), Ok(Added::Replaced));
        assert_eq!(bans.add(ban("198.18.0.2/32"), &rules), Ok(Added::New));
        assert_eq!(
            bans.add(ban("198.18.0.3/32"), &rules),
            Err(Refusal::Full { max: 2 })
        );
        assert!(bans.remove(&prefix("198.18.0.1/32")).is_some());
        assert!(bans.remove(&prefix("198.18.0.1/32")).is_none());
        assert_eq!(bans.add(ban("198.18.0.3/32"), &rules), Ok(Added::New));
    }

    #[test]
    fn a_record_carries_a_ban_whole() {
        let ban = Ban::new(
            prefix("2001:db8:7::/48"),
            Action::Limit {
                pps: 100,
                burst: 100,
                bps: 0,
            },
            "udp-flood",
            "too much\nDNS ✓",
            Some(Duration::from_secs(60)),
        );
        assert_eq!(ban.reason, "too much DNS ✓");
        let back = Ban::from_record(&ban.record()).unwrap();
        // Times go through nanoseconds since the epoch.
        assert_eq!(back.prefix, ban.prefix);
        assert_eq!(back.action, ban.action);
        assert_eq!(
            (back.origin.as_str(), back.reason.as_str()),
            ("udp-flood", "too much DNS ✓")
        );
        assert_eq!(back.until_ns, ban.until_ns);
        assert!(Ban::from_record(&BanRecord::default()).is_none());
        let long = "é".repeat(100);
        assert_eq!(clip(&long, MAX_REASON).len(), 80);
    }

    #[test]
    fn ended_bans_are_taken_out() {
        let mut bans = Bans::default();
        let rules = RuleSet::default();
        let mut ban = Ban::new(prefix("198.18.0.1/32"), Action::Drop, "hand", "", None);
        ban.until_ns = 100;
        bans.add(ban, &rules).unwrap();
        bans.add(
            Ban::new(prefix("198.18.0.2/32"), Action::Drop, "hand", "", None),
            &rules,
        )
        .unwrap();
        assert!(bans.take_ended(99).is_empty());
        assert_eq!(bans.take_ended(100).len(), 1);
        assert_eq!(bans.list.len(), 1);
    }
}
