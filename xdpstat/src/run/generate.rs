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
    let completions = dir.join("completions");
    fs::create_dir_all(&completions).map_err(|e| failed("completions", e))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "xdpstat", &completions)
            .map_err(|e| failed("completions", e))?;
    }
    Ok(())
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
                "xdpstat-demo.1",
                "xdpstat-detach.1",
                "xdpstat-doctor.1",
                "xdpstat-replay.1",
                "xdpstat-rules-check.1",
                "xdpstat-rules.1",
                "xdpstat-status.1",
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
