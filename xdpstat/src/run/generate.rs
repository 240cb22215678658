//! `xdpstat --generate-docs DIR`: the man pages and shell completions,
//! made from the command line's own definitions (clap's), so they never
//! drift from the flags. The Debian package ships what this writes.

use std::{fs, io, path::Path};

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::{cli::Cli, error::XdpstatError};

/// Writes `DIR/man/xdpstat.1`, a page per command (`xdpstat-replay.1`,
/// ...), and `DIR/completions/` for bash, zsh and fish.
pub fn generate(dir: &Path) -> Result<(), XdpstatError> {
    let failed = |what: &str, e: io::Error| {
        XdpstatError::Output(io::Error::new(
            e.kind(),
            format!("writing the {what} under {}: {e}", dir.display()),
        ))
    };
    let man = dir.join("man");
    fs::create_dir_all(&man).map_err(|e| failed("man pages", e))?;
    clap_mangen::generate_to(Cli::command(), &man).map_err(|e| failed("man pages", e))?;
    // xdpstat(1) again, with what a reader of the main page looks for.
    fs::write(
        man.join("xdpstat.1"),
        main_page().map_err(|e| failed("man pages", e))?,
    )
    .map_err(|e| failed("man pages", e))?;
    let completions = dir.join("completions");
    fs::create_dir_all(&completions).map_err(|e| failed("completions", e))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "xdpstat", &completions)
            .map_err(|e| failed("completions", e))?;
    }
    Ok(())
}

/// Commands and what they do, for xdpstat(1)'s EXAMPLES.
const EXAMPLES: [(&str, &str); 12] = [
    (
        "xdpstat eth0",
        "attach; on a terminal, the live full-screen view until q; piped, a plain report every second",
    ),
    (
        "xdpstat --format json eth0",
        "one JSON object per interface per interval",
    ),
    (
        "xdpstat --metrics 127.0.0.1:9435 eth0",
        "also Prometheus metrics at /metrics",
    ),
    (
        "xdpstat --hook tcx eth0",
        "count at tc ingress, beside a program that holds the XDP hook",
    ),
    (
        "xdpstat --persist eth0",
        "counts that go on across restarts and upgrades",
    ),
    (
        "xdpstat status",
        "every interface xdpstat counts on, persisted or not",
    ),
    ("xdpstat detach eth0", "end persisted counting on eth0"),
    (
        "xdpstat detach --stale",
        "remove pins whose interface or network namespace is gone",
    ),
    (
        "xdpstat doctor eth0",
        "why attaching would fail or end in generic mode, and the fix",
    ),
    (
        "xdpstat rules check rules.toml",
        "what a rules file would do, with no privilege",
    ),
    (
        "xdpstat --rules rules.toml eth0",
        "drop and rate-limit sources (a dry run unless the file enforces)",
    ),
    (
        "xdpstat replay --rules rules.toml attack.pcap",
        "what xdpstat, and the rules, would have done to a capture",
    ),
];

/// xdpstat(1): clap's sections, then examples, exit status, signals,
/// files and where to read more.
fn main_page() -> io::Result<Vec<u8>> {
    use clap_mangen::roff::{Roff, bold, roman};
    let man = clap_mangen::Man::new(Cli::command());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    let mut roff = Roff::default();
    roff.control("SH", ["EXAMPLES"]);
    for (command, what) in EXAMPLES {
        roff.control("TP", []);
        roff.text([bold(command)]);
        roff.text([roman(what)]);
    }
    let section = |roff: &mut Roff, heading: &str, paragraphs: &[&str]| {
        roff.control("SH", [heading]);
        for (index, paragraph) in paragraphs.iter().enumerate() {
            if index > 0 {
                roff.control("PP", []);
            }
            roff.text([roman(*paragraph)]);
        }
    };
    section(
        &mut roff,
        "EXIT STATUS",
        &[
            "0: done. 1: done in part (every watched interface went away, a capture could not be replayed whole, a doctor check failed). 2: an error, said in one line on stderr; nothing is left attached.",
        ],
    );
    section(
        &mut roff,
        "SIGNALS",
        &[
            "SIGINT and SIGTERM: one last report, detach (a persisted interface stays counting), exit 0. SIGHUP: read the rules file again (caught from the start; a terminal that hangs up still ends xdpstat). SIGKILL: the kernel removes the program with its BPF link.",
        ],
    );
    section(
        &mut roff,
        "FILES",
        &[
            "/sys/fs/bpf/xdpstat/net<inode>/<interface>/: what --persist pins (--pin-dir chooses another root).",
            "/usr/share/doc/xdpstat/: the user guide (GUIDE.md), the design (DESIGN.md), an example rules file and a Grafana dashboard.",
        ],
    );
    section(
        &mut roff,
        "SEE ALSO",
        &[
            "xdpstat-demo(1), xdpstat-replay(1), xdpstat-status(1), xdpstat-detach(1), xdpstat-doctor(1), xdpstat-rules-check(1), xdpstat-ban(1), xdpstat-bans(1), xdp-filter(8), tcpdump(8)",
        ],
    );
    roff.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_a_man_page_and_every_shell_its_completions() {
        let dir = std::env::temp_dir().join(format!("xdpstat-docs-{}", std::process::id()));
        generate(&dir).unwrap();
        let mut pages: Vec<String> = fs::read_dir(dir.join("man"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        pages.sort();
        assert_eq!(
            pages,
            [
                "xdpstat-ban.1",
                "xdpstat-bans.1",
                "xdpstat-demo.1",
                "xdpstat-detach.1",
                "xdpstat-doctor.1",
                "xdpstat-replay.1",
                "xdpstat-rules-check.1",
                "xdpstat-rules.1",
                "xdpstat-status.1",
                "xdpstat-unban.1",
                "xdpstat.1"
            ]
        );
        let main = fs::read_to_string(dir.join("man/xdpstat.1")).unwrap();
        for flag in ["persist", "rules", "hook", "max\\-sources"] {
            assert!(
                main.contains(&format!("\\-\\-{flag}")),
                "--{flag} in xdpstat(1)"
            );
        }
        assert!(
            !main.contains("generate"),
            "the packaging flag stays hidden"
        );
        for file in ["xdpstat.bash", "_xdpstat", "xdpstat.fish"] {
            let text = fs::read_to_string(dir.join("completions").join(file)).unwrap();
            assert!(
                text.contains("--persist") && text.contains("detach"),
                "{file}"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
