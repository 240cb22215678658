//! Reading a rules file: TOML in, a checked [`RuleSet`] out, or one error
//! that names the file and the line to fix.
//!
//! Everything a datapath could not do or a user most likely did not mean
//! is refused here, before anything is attached: unknown keys and
//! actions, prefixes with host bits, the same prefix twice, a rate of
//! zero, and a rule over a whole address family in force without
//! `force = true`.

use std::{
    collections::HashSet,
    ops::Range,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;
use xdpstat_common::rules::MAX_RULES;

use crate::rules::{Action, Mode, Rule, RuleSet};

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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    prefix: Spanned<String>,
    action: Spanned<String>,
    pps: Option<Spanned<i64>>,
    burst: Option<Spanned<i64>>,
    mode: Option<Spanned<String>>,
    force: Option<Spanned<bool>>,
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
    use std::io::Read as _;
    let unreadable = |e: std::io::Error| RulesError {
        file: path.to_owned(),
        line: None,
        message: format!("cannot read it: {e}"),
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(RulesError {
            file: path.to_owned(),
            line: None,
            message: format!(
                "longer than {} MiB; no rules file needs that much",
                MAX_FILE_BYTES >> 20
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
    if raw.rule.len() > MAX_RULES as usize {
        let span = raw.rule[MAX_RULES as usize].span();
        return Err(at(
            span,
            format!("more than {MAX_RULES} rules; a rule set holds at most {MAX_RULES}"),
        ));
    }
    let mut seen = HashSet::new();
    let mut rules = Vec::with_capacity(raw.rule.len());
    for spanned in &raw.rule {
        let raw_rule = spanned.get_ref();
        let prefix = parse_prefix(&raw_rule.prefix).map_err(|m| at(raw_rule.prefix.span(), m))?;
        if !seen.insert(prefix) {
            return Err(at(
                raw_rule.prefix.span(),
                format!("prefix {prefix} appears twice; one rule per prefix"),
            ));
        }
        let rule_mode = match &raw_rule.mode {
            Some(m) => parse_mode(m).map_err(|msg| at(m.span(), msg))?,
            None => mode,
        };
        let action = match raw_rule.action.get_ref().as_str() {
            "pass" => Action::Pass,
            "drop" => Action::Drop,
            "limit" => {
                let Some(pps) = &raw_rule.pps else {
                    return Err(at(
                        raw_rule.action.span(),
                        "action \"limit\" needs pps, the packets per second each source may send"
                            .into(),
                    ));
                };
                let pps_value = rate(pps, "pps").map_err(|m| at(pps.span(), m))?;
                let burst = match &raw_rule.burst {
                    Some(burst) => rate(burst, "burst").map_err(|m| at(burst.span(), m))?,
                    None => pps_value,
                };
                Action::Limit {
                    pps: pps_value,
                    burst,
                }
            }
            other => {
                return Err(at(
                    raw_rule.action.span(),
                    format!("unknown action \"{other}\": one of \"pass\", \"drop\", \"limit\""),
                ));
            }
        };
        if !matches!(action, Action::Limit { .. }) {
            for (key, value) in [("pps", &raw_rule.pps), ("burst", &raw_rule.burst)] {
                if let Some(value) = value {
                    return Err(at(
                        value.span(),
                        format!("{key} belongs to action \"limit\" only"),
                    ));
                }
            }
        }
        let force = raw_rule.force.as_ref().is_some_and(|f| *f.get_ref());
        if prefix.prefix_len() == 0
            && rule_mode == Mode::Enforce
            && action != Action::Pass
            && !force
        {
            return Err(at(
                raw_rule.prefix.span(),
                format!(
                    "{prefix} matches every {} source: in enforce mode this rule needs force = true",
                    if prefix.addr().is_ipv4() {
                        "IPv4"
                    } else {
                        "IPv6"
                    }
                ),
            ));
        }
        rules.push(Rule {
            prefix,
            action,
            mode: rule_mode,
            line: lines.line_of(spanned.span().start),
        });
    }
    Ok(RuleSet { mode, rules })
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
                burst: 200
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
        assert_eq!(set.rules[0].action, Action::Limit { pps: 50, burst: 50 });
        assert_eq!(set.rules[0].mode, Mode::Enforce);
        assert_eq!(set.rules[1].mode, Mode::DryRun);
        assert!(check("").unwrap().rules.is_empty());
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
                "rules.toml:6: prefix 10.0.0.0/8 appears twice",
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
                "rules.toml:3: action \"limit\" needs pps",
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
    fn whole_family_rules_pass_with_force_or_in_dry_run() {
        check("mode = \"enforce\"\n[[rule]]\nprefix = \"0.0.0.0/0\"\naction = \"drop\"\nforce = true\n")
            .unwrap();
        check("[[rule]]\nprefix = \"::/0\"\naction = \"drop\"\n").unwrap();
        check("mode = \"enforce\"\n[[rule]]\nprefix = \"::/0\"\naction = \"pass\"\n").unwrap();
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
