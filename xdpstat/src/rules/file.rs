//! Reading a rules file: TOML in, a checked [`RuleSet`] out, or one error
//! that names the file and the line to fix.
//!
//! Everything a datapath could not do or a user most likely did not mean
//! is refused here, before anything is attached: unknown keys and
//! actions, prefixes with host bits, the same prefix twice, a rate of
//! zero, and a rule over a whole address family in force without
//! `force = true`. `[[list]]` tables name files of prefixes (`list`),
//! read here too: a prefix a rule or an earlier list has with the same
//! action is kept once; with another action, the file is refused with
//! both places named.

use std::{
    collections::HashSet,
    ops::Range,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;
use xdpstat_common::rules::{MAX_BANS, MAX_RULES};

use crate::rules::{
    Action, List, Mode, Rule, RuleSet, chain, label, list,
    matching::{self, Families, Match, RawMatch},
    trigger::{self, MAX_TRIGGERS, RawTrigger, Trigger},
};

/// Why a rules file was refused: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|line| format!(":{line}")).unwrap_or_default())]
pub struct RulesError {
    pub file: PathBuf,
    /// 1-based; `None` when the file could not be read at all.
    pub line: Option<usize>,
    pub message: String,
}

/// The most packets per second (and burst) a limit may name: one packet a
/// nanosecond, the bucket's resolution.
pub const MAX_PPS: i64 = 1_000_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    mode: Option<Spanned<String>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    list: Vec<Spanned<RawList>>,
    #[serde(default)]
    trigger: Vec<Spanned<RawTrigger>>,
    max_bans: Option<Spanned<i64>>,
    on_event: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawList {
    file: Spanned<String>,
    action: Spanned<String>,
    pps: Option<Spanned<i64>>,
    burst: Option<Spanned<i64>>,
    bps: Option<Spanned<i64>>,
    mode: Option<Spanned<String>>,
    force: Option<Spanned<bool>>,
    protocol: Option<Spanned<toml::Value>>,
    src_port: Option<Spanned<toml::Value>>,
    dst_port: Option<Spanned<toml::Value>>,
    tcp_flags: Option<Spanned<String>>,
}

/// Prefixes one rule set may hold, its rules' and its lists' together
/// (each is a node of an LPM trie in the kernel; a reload holds the old
/// set and the new one for a moment).
pub const MAX_PREFIXES: usize = xdpstat_common::rules::MAX_PREFIXES as usize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    prefix: Option<Spanned<String>>,
    action: Spanned<String>,
    pps: Option<Spanned<i64>>,
    burst: Option<Spanned<i64>>,
    bps: Option<Spanned<i64>>,
    mode: Option<Spanned<String>>,
    force: Option<Spanned<bool>>,
    protocol: Option<Spanned<toml::Value>>,
    src_port: Option<Spanned<toml::Value>>,
    dst_port: Option<Spanned<toml::Value>>,
    tcp_flags: Option<Spanned<String>>,
}

/// A limit's rates, as a rule or a list gives them.
struct RawRates<'a> {
    pps: &'a Option<Spanned<i64>>,
    burst: &'a Option<Spanned<i64>>,
    bps: &'a Option<Spanned<i64>>,
}

/// What a rule and a list both say, as the file gives it: the action and
/// its rates, the mode, `force`, and the protocol, ports and flags.
struct RawBehaviour<'a> {
    action: &'a Spanned<String>,
    rates: RawRates<'a>,
    mode: &'a Option<Spanned<String>>,
    force: &'a Option<Spanned<bool>>,
    matching: RawMatch<'a>,
}

/// A rule's or a list's behaviour, checked.
struct Behaviour {
    action: Action,
    mode: Mode,
    force: bool,
    matching: Match,
}

/// Both tables' behaviour fields, borrowed.
macro_rules! raw_behaviour {
    ($raw:expr) => {
        RawBehaviour {
            action: &$raw.action,
            rates: RawRates {
                pps: &$raw.pps,
                burst: &$raw.burst,
                bps: &$raw.bps,
            },
            mode: &$raw.mode,
            force: &$raw.force,
            matching: RawMatch {
                protocol: &$raw.protocol,
                src_port: &$raw.src_port,
                dst_port: &$raw.dst_port,
                tcp_flags: &$raw.tcp_flags,
            },
        }
    };
}

/// Checks a rule's or a list's behaviour; `mode` is the file's.
fn behaviour(raw: &RawBehaviour<'_>, mode: Mode) -> Result<Behaviour, (Range<usize>, String)> {
    let matching = matching::parse(&raw.matching)?;
    let action = parse_action(raw.action, &raw.rates)?;
    let mode = match raw.mode {
        Some(m) => {
            let own = parse_mode(m).map_err(|msg| (m.span(), msg))?;
            if action == Action::Allow && own == Mode::DryRun {
                let why = "an allow has no dry run: it passes its traffic either way (remove mode)";
                return Err((m.span(), why.into()));
            }
            own
        }
        None => mode,
    };
    // An allow only ever passes: it is in force in a dry run too (what
    // enforcing would do is what it does).
    let mode = if action == Action::Allow {
        Mode::Enforce
    } else {
        mode
    };
    let force = raw.force.as_ref().is_some_and(|f| *f.get_ref());
    Ok(Behaviour {
        action,
        mode,
        force,
        matching,
    })
}

/// The longest rules file read: far past the most rules a set holds, and
/// short of what a mistaken path (`/dev/zero`) could make xdpstat hold.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads and checks the rules file at `path`.
pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
    parse(path, &read(path)?)
}

/// Reads the rules file at `path` as text, up to [`MAX_FILE_BYTES`].
pub fn read(path: &Path) -> Result<String, RulesError> {
    read_limited(path, MAX_FILE_BYTES)
}

/// Reads the text file at `path`, up to `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<String, RulesError> {
    use std::io::Read as _;
    let unreadable = |e: std::io::Error| RulesError {
        file: path.to_owned(),
        line: None,
        message: format!("cannot read it: {e}"),
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(limit + 1).read_to_end(&mut bytes))
        .map_err(unreadable)?;
    if bytes.len() as u64 > limit {
        return Err(RulesError {
            file: path.to_owned(),
            line: None,
            message: format!(
                "longer than {} MiB; no rules file or list needs that much",
                limit >> 20
            ),
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        RulesError {
            file: path.to_owned(),
            line: Some(valid.iter().filter(|&&b| b == b'\n').count() + 1),
            message: "not UTF-8 text, so not TOML".into(),
        }
    })?;
    Ok(text)
}

/// Checks the rules in `text`, read from `path` (which only labels errors).
pub fn parse(path: &Path, text: &str) -> Result<RuleSet, RulesError> {
    let lines = LineStarts::of(text);
    let at = |span: Range<usize>, message: String| RulesError {
        file: path.to_owned(),
        line: Some(lines.line_of(span.start)),
        message,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().replace('\n', " ");
        match e.span() {
            Some(span) => at(span, message),
            None => RulesError {
                file: path.to_owned(),
                line: None,
                message,
            },
        }
    })?;
    let mode = match &raw.mode {
        Some(mode) => parse_mode(mode).map_err(|m| at(mode.span(), m))?,
        None => Mode::DryRun,
    };
    if raw.rule.len() + raw.list.len() > MAX_RULES as usize {
        let span = raw
            .rule
            .iter()
            .map(Spanned::span)
            .chain(raw.list.iter().map(Spanned::span))
            .nth(MAX_RULES as usize)
            .unwrap_or_default();
        return Err(at(
            span,
            format!(
                "more than {MAX_RULES} rules and lists; a rule set holds at most {MAX_RULES} (a list of any size is one)"
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut rules = Vec::with_capacity(raw.rule.len());
    for spanned in &raw.rule {
        let raw_rule = spanned.get_ref();
        let prefix = match &raw_rule.prefix {
            Some(text) => Some(parse_prefix(text).map_err(|m| at(text.span(), m))?),
            None => None,
        };
        let Behaviour {
            action,
            mode: rule_mode,
            force,
            matching,
        } = behaviour(&raw_behaviour!(raw_rule), mode).map_err(|(span, m)| at(span, m))?;
        let here = raw_rule
            .prefix
            .as_ref()
            .map_or_else(|| spanned.span(), Spanned::span);
        if prefix.is_none() && matching.is_any() {
            return Err(at(
                spanned.span(),
                "this rule names no prefix, protocol, port or flag, so it would match every packet: name at least one".into(),
            ));
        }
        if let Some(prefix) = prefix
            && let Some(message) = wrong_family(prefix, &matching)
        {
            return Err(at(here, message));
        }
        if !seen.insert((prefix, matching.clone())) {
            return Err(at(
                here,
                format!(
                    "{} appears twice; one rule for each prefix, protocol, ports and flags",
                    label(prefix, &matching)
                ),
            ));
        }
        if let Some(prefix) = prefix
            && let Some(message) = whole_family(prefix, &matching, rule_mode, action, force, "rule")
        {
            return Err(at(here, message));
        }
        rules.push(Rule {
            prefix,
            matching,
            action,
            mode: rule_mode,
            line: lines.line_of(spanned.span().start),
        });
    }
    let line_of = |offset: usize| lines.line_of(offset);
    let lists = read_lists(path, &raw.list, &rules, mode, &at, &line_of)?;
    if raw.trigger.len() > MAX_TRIGGERS {
        return Err(at(
            raw.trigger[MAX_TRIGGERS].span(),
            format!("more than {MAX_TRIGGERS} triggers"),
        ));
    }
    let mut triggers: Vec<Trigger> = Vec::with_capacity(raw.trigger.len());
    for spanned in &raw.trigger {
        let trigger = trigger::parse(
            spanned.get_ref(),
            spanned.span(),
            mode,
            parse_mode,
            lines.line_of(spanned.span().start),
        )
        .map_err(|(span, m)| at(span, m))?;
        if let Some(earlier) = triggers.iter().find(|t| t.name == trigger.name) {
            return Err(at(
                spanned.span(),
                format!(
                    "a trigger named \"{}\" is at line {} already",
                    trigger.name, earlier.line
                ),
            ));
        }
        triggers.push(trigger);
    }
    let max_bans = match &raw.max_bans {
        None => None,
        Some(value) => match *value.get_ref() {
            n if n < 1 || n > i64::from(MAX_BANS) => {
                return Err(at(
                    value.span(),
                    format!("max_bans = {n}: from 1 to {MAX_BANS}"),
                ));
            }
            n => Some(n as usize),
        },
    };
    let on_event = match &raw.on_event {
        None => None,
        Some(value) => Some(program(path, value.get_ref()).map_err(|m| at(value.span(), m))?),
    };
    let set = RuleSet {
        mode,
        rules,
        lists,
        triggers,
        max_bans,
        on_event,
    };
    // Chains too long to walk are refused here, where the line is known.
    if let Err(e) = chain::build(&set, &[]) {
        let index = e.index as usize;
        let line = match set.rules.get(index) {
            Some(rule) => rule.line,
            None => set.lists[index - set.rules.len()].line,
        };
        return Err(RulesError {
            file: path.to_owned(),
            line: Some(line),
            message: e.message,
        });
    }
    Ok(set)
}

/// Why `matching` cannot apply to `prefix`'s family; `None` when it can.
fn wrong_family(prefix: IpNet, matching: &Match) -> Option<String> {
    let (wanted, name) = match matching.families() {
        Families::Both => return None,
        Families::V4 => (true, "icmp is IPv4's"),
        Families::V6 => (false, "icmpv6 is IPv6's"),
    };
    (prefix.addr().is_ipv4() != wanted).then(|| {
        format!(
            "{name}, and {prefix} is an {} prefix (ICMP of IPv4 is \"icmp\", of IPv6 \"icmpv6\")",
            if wanted { "IPv6" } else { "IPv4" }
        )
    })
}

/// Where a prefix was met: the rules file (`None`) or a list (its
/// position), and its line there.
#[derive(Clone, Copy)]
struct Met {
    list: Option<u32>,
    line: u32,
    /// For a rule: its index.
    rule: u32,
}

/// Reads every `[[list]]`'s file, relative to the rules file's directory
/// when not absolute, and checks its prefixes against the rules' and the
/// earlier lists': a prefix met again with the same action and mode is
/// left out, one met with another is refused where it is met the second
/// time. Done by sorting every prefix with where it was met (a few tens
/// of bytes a prefix, where a hash map of millions would take hundreds
/// of megabytes).
fn read_lists(
    path: &Path,
    raw: &[Spanned<RawList>],
    rules: &[Rule],
    mode: Mode,
    at: &dyn Fn(Range<usize>, String) -> RulesError,
    line_of: &dyn Fn(usize) -> usize,
) -> Result<Vec<List>, RulesError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut lists: Vec<List> = Vec::with_capacity(raw.len());
    // Each distinct match by a number: two places clash only with the
    // same prefix and the same match.
    let mut match_ids: std::collections::HashMap<Match, u32> = std::collections::HashMap::new();
    let mut id_of = |matching: &Match| {
        let next = match_ids.len() as u32;
        *match_ids.entry(matching.clone()).or_insert(next)
    };
    // Every prefix in the order met, with its match, and where.
    let mut all: Vec<(IpNet, u32, u32)> = Vec::new();
    let mut places: Vec<Met> = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let id = id_of(&rule.matching);
        for prefix in rule.prefixes() {
            all.push((prefix, id, places.len() as u32));
            places.push(Met {
                list: None,
                line: rule.line as u32,
                rule: index as u32,
            });
        }
    }
    for spanned in raw {
        let raw_list = spanned.get_ref();
        let name = raw_list.file.get_ref().clone();
        if name.trim().is_empty() || name.contains('\0') {
            return Err(at(
                raw_list.file.span(),
                format!("list file {name:?} is not a path"),
            ));
        }
        let file = base.join(&name);
        let Behaviour {
            action,
            mode: list_mode,
            force,
            matching,
        } = behaviour(&raw_behaviour!(raw_list), mode).map_err(|(span, m)| at(span, m))?;
        let id = id_of(&matching);
        let this = lists.len() as u32;
        for (prefix, line) in list::read(&file)? {
            if let Some(message) = whole_family(prefix, &matching, list_mode, action, force, "list")
                .or_else(|| wrong_family(prefix, &matching))
            {
                return Err(RulesError {
                    file: file.clone(),
                    line: Some(line),
                    message,
                });
            }
            if places.len() >= MAX_PREFIXES {
                return Err(RulesError {
                    file: file.clone(),
                    line: Some(line),
                    message: format!(
                        "more than {MAX_PREFIXES} prefixes in the rules and lists together; a rule set holds at most that many"
                    ),
                });
            }
            all.push((prefix, id, places.len() as u32));
            places.push(Met {
                list: Some(this),
                line: line as u32,
                rule: 0,
            });
        }
        lists.push(List {
            name,
            path: file,
            matching,
            action,
            mode: list_mode,
            line: line_of(spanned.span().start),
            prefixes: Vec::new(),
        });
    }
    let behaviour = |met: Met| match met.list {
        None => rules
            .get(met.rule as usize)
            .map(|rule| (rule.action, rule.mode)),
        Some(list) => lists
            .get(list as usize)
            .map(|list| (list.action, list.mode)),
    };
    let place = |met: Met| -> PathBuf {
        match met.list {
            None => path.to_owned(),
            Some(list) => lists[list as usize].path.clone(),
        }
    };
    // Equal prefixes with equal matches side by side, each group in the
    // order met.
    all.sort_unstable();
    let mut kept = vec![false; places.len()];
    let mut conflict: Option<(u32, u32)> = None;
    for group in all.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
        let first = group[0].2;
        kept[first as usize] = true;
        for &(_, _, later) in &group[1..] {
            if behaviour(places[later as usize]) != behaviour(places[first as usize])
                && conflict.is_none_or(|(_, seen)| later < seen)
            {
                conflict = Some((first, later));
            }
        }
    }
    if let Some((first, later)) = conflict {
        let (earlier, here) = (places[first as usize], places[later as usize]);
        let (prefix, id) = all
            .iter()
            .find(|(_, _, at)| *at == later)
            .map(|(prefix, id, _)| (*prefix, *id))
            .unwrap_or_default();
        let matching = match_ids
            .iter()
            .find(|(_, at)| **at == id)
            .map(|(matching, _)| matching.clone())
            .unwrap_or_default();
        let prefix = label(Some(prefix), &matching);
        let (Some((was, was_mode)), Some((is, is_mode))) = (behaviour(earlier), behaviour(here))
        else {
            unreachable!("every place is a rule or a list");
        };
        return Err(RulesError {
            file: place(here),
            line: Some(here.line as usize),
            message: format!(
                "{prefix} is also at {}:{}, which does another thing with it ({} {} there, {} {} here)",
                place(earlier).display(),
                earlier.line,
                was.name(),
                was_mode.name(),
                is.name(),
                is_mode.name()
            ),
        });
    }
    // Back in the order met: each list's prefixes that no earlier place had.
    let mut firsts: Vec<(u32, IpNet)> = all
        .into_iter()
        .filter(|(_, _, at)| kept[*at as usize])
        .map(|(prefix, _, at)| (at, prefix))
        .collect();
    firsts.sort_unstable_by_key(|(at, _)| *at);
    for (at, prefix) in firsts {
        if let Some(list) = places[at as usize].list {
            lists[list as usize].prefixes.push(prefix);
        }
    }
    Ok(lists)
}

/// A rule's or a list's action, with `pps` and `burst` where it limits.
fn parse_action(
    action: &Spanned<String>,
    rates: &RawRates<'_>,
) -> Result<Action, (Range<usize>, String)> {
    let parsed = match action.get_ref().as_str() {
        "pass" => Action::Pass,
        "allow" => Action::Allow,
        "drop" => Action::Drop,
        "limit" => {
            if rates.pps.is_none() && rates.bps.is_none() {
                return Err((
                    action.span(),
                    "action \"limit\" needs pps (packets per second) or bps (bits per second), or both"
                        .into(),
                ));
            }
            let pps = match rates.pps {
                Some(pps) => rate(pps, "pps").map_err(|m| (pps.span(), m))?,
                None => 0,
            };
            let burst = match (rates.burst, pps) {
                (Some(burst), 0) => {
                    return Err((
                        burst.span(),
                        "burst belongs to pps, which this limit has not".into(),
                    ));
                }
                (Some(burst), _) => rate(burst, "burst").map_err(|m| (burst.span(), m))?,
                (None, pps) => pps,
            };
            let bps = match rates.bps {
                Some(bps) => bits(bps).map_err(|m| (bps.span(), m))?,
                None => 0,
            };
            Action::Limit { pps, burst, bps }
        }
        other => {
            return Err((
                action.span(),
                format!(
                    "unknown action \"{other}\": one of \"pass\", \"allow\", \"drop\", \"limit\""
                ),
            ));
        }
    };
    if !matches!(parsed, Action::Limit { .. }) {
        for (key, value) in [
            ("pps", rates.pps),
            ("burst", rates.burst),
            ("bps", rates.bps),
        ] {
            if let Some(value) = value {
                return Err((
                    value.span(),
                    format!("{key} belongs to action \"limit\" only"),
                ));
            }
        }
    }
    Ok(parsed)
}

/// The fewest and most bits per second a limit may name: a thousand
/// bytes a second (below, a byte's cost would overflow the bucket's
/// arithmetic) and a terabit.
pub const MIN_BPS: i64 = 8_000;
pub const MAX_BPS: i64 = 1_000_000_000_000;

fn bits(value: &Spanned<i64>) -> Result<u64, String> {
    match *value.get_ref() {
        n if n < MIN_BPS => Err(format!(
            "bps = {n}: must be at least {MIN_BPS} (a thousand bytes a second)"
        )),
        n if n > MAX_BPS => Err(format!("bps = {n}: at most {MAX_BPS}")),
        n => Ok(n as u64),
    }
}

/// Why a prefix over a whole address family may not drop or limit in
/// enforce mode without `force = true`; `None` when it may.
fn whole_family(
    prefix: IpNet,
    matching: &Match,
    mode: Mode,
    action: Action,
    force: bool,
    what: &str,
) -> Option<String> {
    (prefix.prefix_len() == 0
        && matching.is_any()
        && mode == Mode::Enforce
        && !matches!(action, Action::Pass | Action::Allow)
        && !force)
        .then(|| {
            format!(
                "{prefix} matches every {} source: in enforce mode this {what} needs force = true",
                if prefix.addr().is_ipv4() {
                    "IPv4"
                } else {
                    "IPv6"
                }
            )
        })
}

/// `on_event`'s program: a path (relative to the rules file's directory
/// when not absolute) to an executable regular file.
fn program(rules: &Path, given: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    if given.is_empty() || given.contains('\0') {
        return Err("on_event: the path of a program".into());
    }
    let path = Path::new(given);
    let path = if path.is_absolute() {
        path.to_owned()
    } else {
        rules.parent().unwrap_or(Path::new(".")).join(path)
    };
    let meta = std::fs::metadata(&path)
        .map_err(|e| format!("on_event = \"{given}\": {} ({e})", path.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "on_event = \"{given}\": {} is not an executable file",
            path.display()
        ));
    }
    Ok(path)
}

fn parse_mode(mode: &Spanned<String>) -> Result<Mode, String> {
    match mode.get_ref().as_str() {
        "dry-run" => Ok(Mode::DryRun),
        "enforce" => Ok(Mode::Enforce),
        other => Err(format!(
            "unknown mode \"{other}\": \"dry-run\" or \"enforce\""
        )),
    }
}

fn parse_prefix(text: &Spanned<String>) -> Result<IpNet, String> {
    let text = text.get_ref().trim();
    let prefix: IpNet = text.parse().map_err(|_| {
        format!("\"{text}\" is not an IPv4 or IPv6 prefix (like 198.51.100.0/24 or 2001:db8::/32)")
    })?;
    if prefix.trunc() != prefix {
        return Err(format!(
            "{text} has host bits set: the prefix is {}",
            prefix.trunc()
        ));
    }
    Ok(prefix)
}

fn rate(value: &Spanned<i64>, key: &str) -> Result<u64, String> {
    match *value.get_ref() {
        n if n <= 0 => Err(format!("{key} = {n}: must be at least 1")),
        n if n > MAX_PPS => Err(format!("{key} = {n}: at most {MAX_PPS}")),
        n => Ok(n as u64),
    }
}

/// Where each line of a file begins, found in one pass: a rule's line is
/// a binary search, so reading a file is linear in its size however many
/// rules it holds.
struct LineStarts(Vec<usize>);

impl LineStarts {
    fn of(text: &str) -> Self {
        let newlines = text.bytes().enumerate().filter(|&(_, b)| b == b'\n');
        Self(
            std::iter::once(0)
                .chain(newlines.map(|(at, _)| at + 1))
                .collect(),
        )
    }

    /// The 1-based line of byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<RuleSet, String> {
        parse(Path::new("rules.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn line_numbers_are_those_counted_by_hand() {
        let text = "a\n\nbc\nd";
        let lines = LineStarts::of(text);
        for offset in 0..=text.len() + 2 {
            let by_hand = text.as_bytes()[..offset.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            assert_eq!(lines.line_of(offset), by_hand, "offset {offset}");
        }
        assert_eq!(LineStarts::of("").line_of(0), 1);
    }

    #[test]
    fn many_rules_after_many_lines_keep_their_own_line_numbers() {
        let mut text = "# a comment\n".repeat(100_000);
        for i in 0..4096u32 {
            text.push_str(&format!(
                "[[rule]]\nprefix = \"10.{}.{}.0/24\"\naction = \"drop\"\n",
                i >> 8,
                i & 255
            ));
        }
        let set = parse(Path::new("rules.toml"), &text).unwrap();
        assert_eq!(set.rules.len(), 4096);
        for (i, rule) in set.rules.iter().enumerate() {
            assert_eq!(rule.line, 100_001 + 3 * i);
        }
    }

    #[test]
    fn the_issue_s_example_reads_as_written() {
        let set = check(
            r#"mode = "dry-run"

[[rule]]
prefix = "198.51.100.0/24"
action = "drop"

[[rule]]
prefix = "198.51.100.7/32"
action = "pass"

[[rule]]
prefix = "2001:db8:bad::/48"
action = "limit"
pps = 1000
burst = 200
"#,
        )
        .unwrap();
        assert_eq!(set.mode, Mode::DryRun);
        assert_eq!(set.rules.len(), 3);
        assert_eq!(set.rules[0].action, Action::Drop);
        assert_eq!(set.rules[0].line, 3);
        assert_eq!(
            set.rules[2].action,
            Action::Limit {
                pps: 1000,
                burst: 200,
                bps: 0
            }
        );
        assert!(set.rules.iter().all(|rule| rule.mode == Mode::DryRun));
    }

    #[test]
    fn defaults_dry_run_burst_equal_to_the_rate_and_a_rule_s_own_mode() {
        let set = check(
            "[[rule]]\nprefix = \"198.18.0.0/15\"\naction = \"limit\"\npps = 50\nmode = \"enforce\"\n[[rule]]\nprefix = \"2001:db8::/32\"\naction = \"drop\"\n",
        )
        .unwrap();
        assert_eq!(set.mode, Mode::DryRun);
        assert_eq!(
            set.rules[0].action,
            Action::Limit {
                pps: 50,
                burst: 50,
                bps: 0
            }
        );
        assert_eq!(set.rules[0].mode, Mode::Enforce);
        assert_eq!(set.rules[1].mode, Mode::DryRun);
        assert!(check("").unwrap().rules.is_empty());
    }

    #[test]
    fn an_allow_is_in_force_in_a_dry_run_and_has_none_of_its_own() {
        let set = check(
            "mode = \"dry-run\"\n[[rule]]\nprefix = \"198.18.0.0/15\"\naction = \"allow\"\n[[rule]]\nprefix = \"0.0.0.0/0\"\nprotocol = \"udp\"\naction = \"allow\"\n",
        )
        .unwrap();
        assert_eq!(set.rules[0].action, Action::Allow);
        assert!(set.rules.iter().all(|rule| rule.mode == Mode::Enforce));
        let refused =
            check("[[rule]]\nprefix = \"198.18.0.0/15\"\naction = \"allow\"\nmode = \"dry-run\"\n");
        assert_eq!(
            refused.unwrap_err(),
            "rules.toml:4: an allow has no dry run: it passes its traffic either way (remove mode)"
        );
    }

    #[test]
    fn every_bad_file_names_the_line_to_fix() {
        let cases: &[(&str, &str)] = &[
            (
                "[[rule]]\nprefix = \"198.51.100.1/24\"\naction = \"drop\"\n",
                "rules.toml:2: 198.51.100.1/24 has host bits set: the prefix is 198.51.100.0/24",
            ),
            (
                "[[rule]]\nprefix = \"198.51.100.0/33\"\naction = \"drop\"\n",
                "rules.toml:2: \"198.51.100.0/33\" is not an IPv4 or IPv6 prefix",
            ),
            (
                "[[rule]]\nprefix = \"10.0.0.0/8\"\naction = \"drop\"\n\n[[rule]]\nprefix = \"10.0.0.0/8\"\naction = \"pass\"\n",
                "rules.toml:6: 10.0.0.0/8 appears twice",
            ),
            (
                "[[rule]]\nprefix = \"10.0.0.0/8\"\naction = \"reject\"\n",
                "rules.toml:3: unknown action \"reject\"",
            ),
            (
                "[[rule]]\nprefix = \"10.0.0.0/8\"\naction = \"drop\"\ncolour = \"red\"\n",
                "rules.toml:4: unknown field `colour`",
            ),
            (
                "[[rule]]\nprefix = \"10.0.0.0/8\"\naction = \"limit\"\npps = 0\n",
                "rules.toml:4: pps = 0: must be at least 1",
            ),
            (
                "[[rule]]\nprefix = \"10.0.0.0/8\"\naction = \"limit\"\n",
                "rules.toml:3: action \"limit\" needs pps (packets per second) or bps",
            ),
            (
                "[[rule]]\nprefix = \"10.0.0.0/8\"\naction = \"drop\"\npps = 5\n",
                "rules.toml:4: pps belongs to action \"limit\" only",
            ),
            ("mode = \"enforce\"\n[[rule]\n", "rules.toml:2: "),
            (
                "mode = \"strict\"\n",
                "rules.toml:1: unknown mode \"strict\"",
            ),
            (
                "mode = \"enforce\"\n[[rule]]\nprefix = \"0.0.0.0/0\"\naction = \"drop\"\n",
                "rules.toml:3: 0.0.0.0/0 matches every IPv4 source: in enforce mode this rule needs force = true",
            ),
            (
                "[[rule]]\nprefix = \"::/0\"\naction = \"limit\"\npps = 10\nmode = \"enforce\"\n",
                "rules.toml:2: ::/0 matches every IPv6 source",
            ),
            ("bogus", "rules.toml:1: "),
            (
                "[[rule]]\nprefix = \"10.0.0.0/8\"\naction = \"limit\"\nbps = 0\n",
                "rules.toml:4: bps = 0: must be at least 8000",
            ),
            (
                "[[rule]]\nprefix = \"10.0.0.0/8\"\naction = \"drop\"\nbps = 80000\n",
                "rules.toml:4: bps belongs to action \"limit\" only",
            ),
            (
                "[[rule]]\nprefix = \"10.0.0.0/8\"\naction = \"limit\"\nbps = 80000\nburst = 5\n",
                "rules.toml:5: burst belongs to pps, which this limit has not",
            ),
        ];
        for (text, expected) in cases {
            let error = check(text).expect_err(text);
            assert!(
                error.starts_with(expected),
                "{text:?}\n gave {error:?}\n want {expected:?}"
            );
            assert!(!error.contains('\n'), "one line: {error:?}");
        }
    }

    #[test]
    fn every_bad_protocol_port_or_flag_names_the_line_to_fix() {
        let rule = |fields: &str| format!("[[rule]]\n{fields}\naction = \"drop\"\n");
        let cases: &[(&str, &str)] = &[
            (
                "protocol = \"udp\"\ndst_port = 65536",
                "rules.toml:3: dst_port: port 65536 is outside 0-65535",
            ),
            (
                "protocol = \"udp\"\nsrc_port = [53, -1]",
                "rules.toml:3: src_port: port -1 is outside 0-65535",
            ),
            (
                "protocol = \"tcp\"\ndst_port = \"2000-1000\"",
                "rules.toml:3: dst_port: range \"2000-1000\" is reversed",
            ),
            (
                "protocol = \"icmp\"\ndst_port = 53",
                "rules.toml:3: dst_port needs protocol = \"tcp\" or \"udp\"",
            ),
            (
                "src_port = 53",
                "rules.toml:2: src_port needs protocol = \"tcp\" or \"udp\"",
            ),
            (
                "protocol = \"udp\"\ntcp_flags = \"syn\"",
                "rules.toml:3: tcp_flags needs protocol = \"tcp\"",
            ),
            (
                "protocol = \"tcp\"\ntcp_flags = \"fin\"",
                "rules.toml:3: tcp_flags = \"fin\": the one flag match is \"syn\"",
            ),
            (
                "protocol = \"sctp\"",
                "rules.toml:2: unknown protocol \"sctp\"",
            ),
            (
                "protocol = 256",
                "rules.toml:2: protocol = 256: a protocol number is 0-255",
            ),
            (
                "prefix = \"2001:db8::/32\"\nprotocol = \"icmp\"",
                "rules.toml:2: icmp is IPv4's, and 2001:db8::/32 is an IPv6 prefix",
            ),
            (
                "mode = \"enforce\"",
                "rules.toml:1: this rule names no prefix, protocol, port or flag",
            ),
            (
                "protocol = \"udp\"\ndst_port = [53, 123]\naction = \"drop\"\n[[rule]]\nprotocol = \"udp\"\ndst_port = [123, 53]",
                "rules.toml:5: any udp dst port 53,123 appears twice",
            ),
        ];
        for (fields, expected) in cases {
            let text = rule(fields);
            let error = check(&text).expect_err(&text);
            assert!(
                error.starts_with(expected),
                "{text:?}\n gave {error:?}\n want {expected:?}"
            );
            assert!(!error.contains('\n'), "one line: {error:?}");
        }
        // A chain no packet may walk whole.
        let mut long = String::new();
        for port in 0..20 {
            long.push_str(&format!(
                "[[rule]]\nprotocol = \"udp\"\ndst_port = {port}\naction = \"drop\"\n"
            ));
        }
        let error = check(&long).unwrap_err();
        assert!(error.contains("rule steps, more than the 16"), "{error}");
        // Chains of 16 steps each under 2,049 prefixes: more steps than a
        // set holds.
        let ports = (0..16)
            .map(|p| (2 * p).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut many = String::new();
        for n in 0..2049u32 {
            many.push_str(&format!(
                "[[rule]]\nprefix = \"10.{}.{}.0/24\"\nprotocol = \"udp\"\ndst_port = [{ports}]\naction = \"drop\"\n",
                n >> 8,
                n & 255
            ));
        }
        let error = check(&many).unwrap_err();
        assert!(
            error.starts_with("rules.toml:")
                && error.contains("more than 32768 rule steps in the set"),
            "{error}"
        );
        many.truncate(many.rfind("[[rule]]").unwrap());
        assert_eq!(check(&many).unwrap().rules.len(), 2048, "32,768 steps fit");
    }

    #[test]
    fn the_issue_s_l4_example_reads_and_needs_no_force() {
        let set = check(
            r#"mode = "enforce"
[[rule]]
protocol = "udp"
src_port = [53, 123, 389, 1900, 11211]
action = "drop"

[[rule]]
protocol = "tcp"
dst_port = 443
tcp_flags = "syn"
action = "limit"
pps = 50

[[rule]]
prefix = "203.0.113.0/24"
action = "drop"

[[rule]]
prefix = "203.0.113.0/24"
protocol = "tcp"
dst_port = 443
action = "pass"

[[rule]]
prefix = "0.0.0.0/0"
protocol = "icmp"
action = "drop"
"#,
        )
        .unwrap();
        assert_eq!(set.rules.len(), 5);
        assert_eq!(set.rules[0].prefix, None);
        assert_eq!(
            set.rules[0].label(),
            "any udp src port 53,123,389,1900,11211"
        );
        assert_eq!(set.rules[1].label(), "any tcp dst port 443 syn");
        assert_eq!(set.rules[3].label(), "203.0.113.0/24 tcp dst port 443");
        // A rule without a prefix sits at both families' /0, ICMP at
        // IPv4's only.
        assert_eq!(set.rules[0].prefixes().len(), 2);
        assert_eq!(set.rules[4].prefixes().len(), 1);
        let chains = chain::build(&set, &[]).unwrap();
        // 203.0.113.0/24's chain: its HTTPS pass, then its drop, and no
        // further (the drop matches everything).
        let head = chains
            .heads
            .iter()
            .find(|(prefix, _)| prefix.to_string() == "203.0.113.0/24")
            .unwrap()
            .1;
        let first = chains.nodes[head as usize];
        assert_eq!(first.rule, 3);
        let second = chains.nodes[first.next as usize - 1];
        assert_eq!((second.rule, second.next), (2, 0));
    }

    #[test]
    fn allows_come_before_every_other_rule_on_every_chain_inside_them() {
        let set = check(
            r#"[[rule]]
prefix = "198.18.0.0/15"
protocol = "tcp"
dst_port = 22
action = "allow"

[[rule]]
prefix = "198.18.7.0/24"
action = "drop"
mode = "enforce"

[[rule]]
prefix = "198.18.7.7/32"
action = "allow"

[[rule]]
protocol = "udp"
action = "drop"
mode = "enforce"
"#,
        )
        .unwrap();
        let chains = chain::build(&set, &[]).unwrap();
        let walk = |prefix: &str| -> Vec<u32> {
            let head = chains
                .heads
                .iter()
                .find(|(p, _)| p.to_string() == prefix)
                .unwrap_or_else(|| panic!("{prefix} has a chain"))
                .1;
            let mut rules = vec![];
            let mut at = head + 1;
            while at != 0 {
                let node = chains.nodes[at as usize - 1];
                rules.push(node.rule);
                at = node.next;
            }
            rules
        };
        // Inside the /15's SSH allow: the allow first, then the /24's drop
        // (which ends the chain: it matches everything).
        assert_eq!(walk("198.18.7.0/24"), [0, 1]);
        // The /32's allow matches everything: nothing after it can decide.
        assert_eq!(walk("198.18.7.7/32"), [2]);
        // The /15 itself: its allow, then the UDP drop without a prefix.
        assert_eq!(walk("198.18.0.0/15"), [0, 3]);
    }

    #[test]
    fn a_limit_takes_pps_bps_or_both() {
        let set = check(
            "[[rule]]\nprefix = \"198.51.100.0/24\"\naction = \"limit\"\npps = 10000\nbps = 50_000_000\n[[rule]]\nprefix = \"203.0.113.0/24\"\naction = \"limit\"\nbps = 8000\n",
        )
        .unwrap();
        assert_eq!(
            set.rules[0].action,
            Action::Limit {
                pps: 10_000,
                burst: 10_000,
                bps: 50_000_000
            }
        );
        assert_eq!(
            set.rules[1].action,
            Action::Limit {
                pps: 0,
                burst: 0,
                bps: 8_000
            }
        );
        assert_eq!(
            set.rules[0].describe(),
            "limit 10000 pps, burst 10000 and 50000000 bps"
        );
        assert_eq!(set.rules[1].describe(), "limit 8000 bps");
    }

    #[test]
    fn whole_family_rules_pass_with_force_or_in_dry_run() {
        check("mode = \"enforce\"\n[[rule]]\nprefix = \"0.0.0.0/0\"\naction = \"drop\"\nforce = true\n")
            .unwrap();
        check("[[rule]]\nprefix = \"::/0\"\naction = \"drop\"\n").unwrap();
        check("mode = \"enforce\"\n[[rule]]\nprefix = \"::/0\"\naction = \"pass\"\n").unwrap();
    }

    /// A directory of its own for a test's rules file and lists, removed
    /// when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new(test: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("xdpstat-lists-{}-{test}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn lists_are_read_beside_the_rules_file_and_a_prefix_met_twice_is_kept_once() {
        let dir = Dir::new("read");
        dir.write(
            "drop.netset",
            "# spamhaus\n198.51.100.0/24\n203.0.113.7\n2001:db8:bad::/48\n198.51.100.0/24\n",
        );
        dir.write(
            "more.ipset",
            "create more hash:net\nadd more 192.0.2.0/24\nadd more 203.0.113.7\n",
        );
        let rules = dir.write(
            "rules.toml",
            "mode = \"enforce\"\n[[rule]]\nprefix = \"192.0.2.0/24\"\naction = \"drop\"\n\n[[list]]\nfile = \"drop.netset\"\naction = \"drop\"\n\n[[list]]\nfile = \"more.ipset\"\naction = \"drop\"\n",
        );
        let set = load(&rules).unwrap();
        assert_eq!(set.rules.len(), 1);
        assert_eq!(set.lists.len(), 2);
        let first = &set.lists[0];
        assert_eq!(first.name, "drop.netset");
        assert_eq!(first.line, 6);
        assert_eq!(first.mode, Mode::Enforce);
        let prefixes: Vec<String> = first.prefixes.iter().map(ToString::to_string).collect();
        assert_eq!(
            prefixes,
            ["198.51.100.0/24", "203.0.113.7/32", "2001:db8:bad::/48"]
        );
        assert!(
            set.lists[1].prefixes.is_empty(),
            "both of its prefixes are in force already, with the same action"
        );
        assert_eq!(set.prefixes().count(), 4);
        assert_eq!(
            set.prefixes().last(),
            Some(("2001:db8:bad::/48".parse().unwrap(), 1))
        );
        assert_eq!(set.summary(), "1 rule and 2 lists of 3 prefixes");
    }

    #[test]
    fn a_list_that_contradicts_a_rule_or_a_bad_line_refuses_the_whole_file() {
        let dir = Dir::new("refuse");
        dir.write("drop.netset", "198.51.100.0/24\n203.0.113.0/24\n");
        dir.write("bad.netset", "198.51.100.0/24\nnot-a-prefix\n");
        let rules = |text: &str| {
            let path = dir.write("rules.toml", text);
            load(&path).map_err(|e| e.to_string())
        };
        let contradiction = rules(
            "[[rule]]\nprefix = \"203.0.113.0/24\"\naction = \"pass\"\n[[list]]\nfile = \"drop.netset\"\naction = \"drop\"\n",
        )
        .unwrap_err();
        assert!(
            contradiction.contains("drop.netset:2: 203.0.113.0/24 is also at ")
                && contradiction.ends_with(
                    "rules.toml:1, which does another thing with it (pass dry-run there, drop dry-run here)"
                ),
            "{contradiction}"
        );
        let bad = rules("[[list]]\nfile = \"bad.netset\"\naction = \"drop\"\n").unwrap_err();
        assert!(
            bad.contains("bad.netset:2: \"not-a-prefix\" is not an address or a prefix"),
            "{bad}"
        );
        let missing = rules("[[list]]\nfile = \"gone.netset\"\naction = \"drop\"\n").unwrap_err();
        assert!(missing.contains("gone.netset: cannot read it"), "{missing}");
        dir.write("all.netset", "0.0.0.0/0\n");
        let whole =
            rules("mode = \"enforce\"\n[[list]]\nfile = \"all.netset\"\naction = \"drop\"\n")
                .unwrap_err();
        assert!(whole.contains("all.netset:1: 0.0.0.0/0 matches every IPv4 source: in enforce mode this list needs force = true"), "{whole}");
        let unknown =
            rules("[[list]]\nfile = \"drop.netset\"\naction = \"drop\"\ncolour = 1\n").unwrap_err();
        assert!(
            unknown.contains("rules.toml:4: unknown field `colour`"),
            "{unknown}"
        );
        let limit = rules("[[list]]\nfile = \"drop.netset\"\naction = \"limit\"\n").unwrap_err();
        assert!(
            limit.contains("rules.toml:3: action \"limit\" needs pps"),
            "{limit}"
        );
    }

    #[test]
    fn files_that_cannot_be_read_or_are_not_text_say_so() {
        let endless = load(Path::new("/dev/zero")).unwrap_err();
        assert!(
            endless.to_string().contains("longer than 64 MiB"),
            "{endless}"
        );
        let directory = load(Path::new("/")).unwrap_err();
        assert!(
            directory.to_string().starts_with("/: cannot read it"),
            "{directory}"
        );
        let missing = load(Path::new("/nonexistent/rules.toml")).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("/nonexistent/rules.toml: cannot read it")
        );
        let dir = std::env::temp_dir().join(format!("xdpstat-rules-{}", std::process::id()));
        std::fs::write(&dir, b"mode = \"dry-run\"\n\xff\xfe\n").unwrap();
        let binary = load(&dir).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(binary.line, Some(2));
        assert!(binary.message.contains("not UTF-8"));
    }
}
