//! `xdpstat rules check FILE`: what a rules file would do, rule by rule,
//! before it is used; needs no privilege.

use std::io::Write;

use crate::{
    cli::RulesCheckArgs,
    error::XdpstatError,
    rules::{Action, Mode, ban::DEFAULT_MAX_BANS, file, trigger::Per},
};

/// `xdpstat rules check FILE`: reads and checks the file, prints what each
/// rule would do, and exits 2 on a bad file. Needs no privilege.
pub fn check(args: &RulesCheckArgs, out: &mut dyn Write) -> Result<(), XdpstatError> {
    let set = file::load(&args.file)?;
    let write = XdpstatError::Output;
    // An allow has no mode of its own: it is counted apart.
    let allows = set
        .rules
        .iter()
        .filter(|r| r.action == Action::Allow)
        .count();
    let enforced = set
        .rules
        .iter()
        .filter(|r| r.mode == Mode::Enforce && r.action != Action::Allow)
        .count();
    let lists = if set.lists.is_empty() {
        String::new()
    } else {
        format!(
            " and {} list{}",
            set.lists.len(),
            if set.lists.len() == 1 { "" } else { "s" }
        )
    };
    writeln!(
        out,
        "{}: {} rule{}{lists}, mode {} ({} enforced, {} dry run{})",
        args.file.display(),
        set.rules.len(),
        if set.rules.len() == 1 { "" } else { "s" },
        set.mode.name(),
        enforced,
        set.rules.len() - enforced - allows,
        match allows {
            0 => String::new(),
            1 => ", 1 allow".to_owned(),
            n => format!(", {n} allows"),
        }
    )
    .map_err(write)?;
    for rule in &set.rules {
        writeln!(
            out,
            "  line {:<4} {:<24} {:<26} {:<8} {}",
            rule.line,
            rule.label(),
            rule.describe(),
            rule.mode.name(),
            effect(rule.action, rule.mode, !rule.matching.is_any()),
        )
        .map_err(write)?;
    }
    for list in &set.lists {
        let v4 = list.prefixes.iter().filter(|p| p.addr().is_ipv4()).count();
        let matching = if list.matching.is_any() {
            String::new()
        } else {
            format!(" {}", list.matching.describe())
        };
        writeln!(
            out,
            "  line {:<4} list {}{matching} ({} prefixes: {v4} IPv4, {} IPv6) {} {}: {}",
            list.line,
            list.name,
            list.prefixes.len(),
            list.prefixes.len() - v4,
            list.describe(),
            list.mode.name(),
            effect(list.action, list.mode, !list.matching.is_any()),
        )
        .map_err(write)?;
    }
    if set.rules.iter().any(|rule| {
        !rule.matching.is_any() || rule.prefix.is_none() || rule.action == Action::Allow
    }) || set
        .lists
        .iter()
        .any(|list| !list.matching.is_any() || list.action == Action::Allow)
    {
        writeln!(
            out,
            "a packet is judged by an allow that matches it whole, before any other rule; else by the rule of the longest prefix that matches it whole (no prefix: length 0), then the one naming more of protocol, ports and flags, then the one earlier in the file"
        )
        .map_err(write)?;
    }
    for trigger in &set.triggers {
        let per = match trigger.per {
            Per::Source => "a source",
            Per::Prefix => "a --prefix-len network",
        };
        let ban = match trigger.action {
            Action::Limit { pps, bps, .. } => {
                let mut rates = Vec::new();
                if pps > 0 {
                    rates.push(format!("{pps} pps"));
                }
                if bps > 0 {
                    rates.push(format!("{bps} bps"));
                }
                format!("limits it to {}", rates.join(" and "))
            }
            _ => "drops it".to_owned(),
        };
        let what = match trigger.mode {
            Mode::Enforce => format!(
                "{ban} until {} after it was last over",
                humantime::format_duration(trigger.ban_for)
            ),
            Mode::DryRun => "says would_ban, bans nothing".to_owned(),
        };
        writeln!(
            out,
            "  line {:<4} trigger {}: {per} with {} {what} ({})",
            trigger.line,
            trigger.name,
            trigger.describe(),
            trigger.mode.name(),
        )
        .map_err(write)?;
    }
    if !set.triggers.is_empty() {
        writeln!(
            out,
            "triggers act within their `for` and two report intervals; they never ban what an allow passes whole; at most {} bans at once (max_bans)",
            set.max_bans.unwrap_or(DEFAULT_MAX_BANS)
        )
        .map_err(write)?;
    }
    writeln!(
        out,
        "packets no rule matches pass; non-IP and malformed frames always pass"
    )
    .map_err(write)?;
    Ok(())
}

/// What `action` in `mode` does to the packets it matches (`l4`: of a
/// protocol, port or flag only).
fn effect(action: Action, mode: Mode, l4: bool) -> String {
    let every = if l4 {
        "every matching packet"
    } else {
        "every packet"
    };
    match (action, mode) {
        (Action::Pass, _) if l4 => {
            "passes (an exception to shorter prefixes and to rules naming less)".to_owned()
        }
        (Action::Pass, _) => "passes (an exception to shorter prefixes)".to_owned(),
        (Action::Allow, _) => format!("passes {every}, whatever any other rule says (allowed)"),
        (Action::Drop, Mode::Enforce) => format!("drops {every}: dropped"),
        (Action::Drop, Mode::DryRun) => format!("passes {every}, counted as would_drop"),
        (Action::Limit { pps, burst, bps }, mode) => {
            let mut over = Vec::new();
            if pps > 0 {
                over.push(format!("{pps} pps (burst {burst})"));
            }
            if bps > 0 {
                over.push(format!("{bps} bps (a second's worth at once)"));
            }
            let over = over.join(" or ");
            match mode {
                Mode::Enforce => format!("drops what each source sends over {over}: limited"),
                Mode::DryRun => format!(
                    "passes every packet; what each source sends over {over} is counted as would_limit"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn the_example_rules_file_the_package_ships_is_a_valid_one() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contrib/rules.example.toml");
        let mut out = Vec::new();
        check(&RulesCheckArgs { file: path }, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("6 rules, mode dry-run (1 enforced, 4 dry run, 1 allow)"),
            "{text}"
        );
    }
}
