//! `xdpstat rules check FILE`: what a rules file would do, rule by rule,
//! before it is used; needs no privilege.

use std::io::Write;

use crate::{
    cli::RulesCheckArgs,
    error::XdpstatError,
    rules::{Action, Mode, file},
};

/// `xdpstat rules check FILE`: reads and checks the file, prints what each
/// rule would do, and exits 2 on a bad file. Needs no privilege.
pub fn check(args: &RulesCheckArgs, out: &mut dyn Write) -> Result<(), XdpstatError> {
    let set = file::load(&args.file)?;
    let write = XdpstatError::Output;
    let enforced = set.rules.iter().filter(|r| r.mode == Mode::Enforce).count();
    writeln!(
        out,
        "{}: {} rule{}, mode {} ({} enforced, {} dry run)",
        args.file.display(),
        set.rules.len(),
        if set.rules.len() == 1 { "" } else { "s" },
        set.mode.name(),
        enforced,
        set.rules.len() - enforced
    )
    .map_err(write)?;
    for rule in &set.rules {
        let effect = match (rule.action, rule.mode) {
            (Action::Pass, _) => "passes (an exception to shorter prefixes)".to_owned(),
            (Action::Drop, Mode::Enforce) => "drops every packet: dropped".to_owned(),
            (Action::Drop, Mode::DryRun) => "passes every packet, counted as would_drop".to_owned(),
            (Action::Limit { pps, burst }, Mode::Enforce) => {
                format!("drops what each source sends over {pps} pps (burst {burst}): limited")
            }
            (Action::Limit { pps, burst }, Mode::DryRun) => format!(
                "passes every packet; what each source sends over {pps} pps (burst {burst}) is counted as would_limit"
            ),
        };
        writeln!(
            out,
            "  line {:<4} {:<24} {:<26} {:<8} {effect}",
            rule.line,
            rule.prefix.to_string(),
            rule.describe(),
            rule.mode.name(),
        )
        .map_err(write)?;
    }
    writeln!(
        out,
        "sources no rule matches pass; non-IP and malformed frames always pass"
    )
    .map_err(write)?;
    Ok(())
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
            text.contains("3 rules, mode dry-run (1 enforced, 2 dry run)"),
            "{text}"
        );
    }
}
