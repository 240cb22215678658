//! SIGHUP: read the rules file again and put the new rules in force on
//! every watched interface. A file that fails its checks changes nothing:
//! the rules in force stay, and stderr says why (while the live view holds
//! the terminal, its notice line says it, and stderr once it is given
//! back).

use std::{
    io::IsTerminal as _,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use signal_hook::{consts::SIGHUP, iterator::Signals};

use crate::{
    error::{XdpstatError, one_line},
    kernel::rulemaps::RuleMaps,
    rules::file,
};

/// One watched interface's rule maps, by name.
pub type RuleTarget = (String, Arc<Mutex<RuleMaps>>);

/// Where reloads say what they did: stderr, or, while the live view holds
/// the terminal, kept for its notice line (each line shown once) and for
/// stderr once the terminal is given back. Shared by the reload thread and
/// the view.
#[derive(Clone, Default)]
pub struct Notices(Arc<Mutex<Held>>);

/// What reloads said while the live view held the terminal: lines not
/// shown yet, and all of them for stderr afterwards.
#[derive(Default)]
struct Held {
    holding: bool,
    /// Whether stderr is the terminal the view holds (then lines wait).
    stderr_is_terminal: bool,
    unseen: Vec<String>,
    all: Vec<String>,
}

impl Notices {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Says `line` on stderr, or keeps it for the live view.
    pub(crate) fn say(&self, line: String) {
        let mut held = self.held();
        if held.holding {
            held.unseen.push(line.clone());
            // Stderr that is not the terminal the view draws on (a file,
            // a pipe to a logger) gets the line at once.
            if held.stderr_is_terminal {
                held.all.push(line);
            } else {
                eprintln!("{line}");
            }
        } else {
            eprintln!("{line}");
        }
    }

    /// From now on, lines are kept for the live view (`true`), or, with
    /// `false`, said on stderr again, the kept ones first.
    pub fn hold(&self, holding: bool) {
        self.hold_with(holding, std::io::stderr().is_terminal());
    }

    fn hold_with(&self, holding: bool, stderr_is_terminal: bool) {
        let mut held = self.held();
        held.holding = holding;
        held.stderr_is_terminal = stderr_is_terminal;
        if !holding {
            for line in std::mem::take(&mut held.all) {
                eprintln!("{line}");
            }
            held.unseen.clear();
        }
    }

    /// The latest line said since the last call, if any.
    pub fn latest(&self) -> Option<String> {
        let mut held = self.held();
        let latest = held.unseen.pop();
        held.unseen.clear();
        latest
    }
}

/// SIGHUP caught (so that it no longer ends the process) and kept until
/// [`on_sighup`] acts on it: the commands that count catch it first thing,
/// and a SIGHUP during start-up rereads the rules once they are in force.
pub struct Hangups(Signals);

impl Hangups {
    pub fn catch() -> Result<Self, XdpstatError> {
        Signals::new([SIGHUP])
            .map(Self)
            .map_err(|e| XdpstatError::Signal {
                signal: SIGHUP,
                source: e,
            })
    }
}

/// Starts the thread that reloads `path` into `targets` on each SIGHUP
/// (with no rules file, says there is nothing to reload: SIGHUP never ends
/// a run), the ones that came during start-up first; it lives as long as
/// the process.
pub fn on_sighup(
    hangups: Option<Hangups>,
    path: Option<PathBuf>,
    targets: Vec<RuleTarget>,
    notices: Notices,
) -> Result<(), XdpstatError> {
    let mut signals = match hangups {
        Some(Hangups(signals)) => signals,
        None => Hangups::catch()?.0,
    };
    std::thread::Builder::new()
        .name("rules-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                if terminal_hung_up() {
                    // The terminal went away (a closed window or ssh
                    // session): end as SIGHUP always ended xdpstat there.
                    let _ = signal_hook::low_level::emulate_default_handler(SIGHUP);
                }
                match &path {
                    Some(path) => reload(path, &targets, &notices),
                    None => notices.say("xdpstat: SIGHUP: no --rules file to reload".into()),
                }
            }
        })
        .map_err(|e| XdpstatError::Signal {
            signal: SIGHUP,
            source: e,
        })?;
    Ok(())
}

/// Whether standard input, output or error is a terminal that has hung
/// up: then a SIGHUP is the terminal's, not a request to reload.
fn terminal_hung_up() -> bool {
    (0..3).any(|fd| {
        let is_terminal = std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|target| {
            let target = target.to_string_lossy();
            target.starts_with("/dev/pts/") || target.starts_with("/dev/tty")
        });
        let mut poll = libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no waiting.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        is_terminal && ready > 0 && poll.revents & libc::POLLHUP != 0
    })
}

/// Reads `path` and puts its rules in force on every target, saying on
/// stderr what happened. A file with nothing in it changes nothing: that is
/// what an editor or a script leaves while it rewrites the file in place,
/// not a rule set (one without rules says `mode = ...` and nothing else).
pub fn reload(path: &std::path::Path, targets: &[RuleTarget], notices: &Notices) {
    let text = file::read(path).and_then(|text| {
        if text.trim().is_empty() {
            Err(file::RulesError {
                file: path.to_owned(),
                line: None,
                message: "it is empty (being rewritten?); to remove every rule, write a file that holds only mode = \"dry-run\"".into(),
            })
        } else {
            Ok(text)
        }
    });
    let set = match text.and_then(|text| file::parse(path, &text)) {
        Ok(set) => set,
        Err(error) => {
            notices.say(format!(
                "xdpstat: reload refused, the rules in force stay: {error}"
            ));
            return;
        }
    };
    for (interface, maps) in targets {
        let result = maps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(&set);
        match result {
            Ok(()) => notices.say(format!(
                "xdpstat: {interface}: rules reloaded from {}: {} in force",
                path.display(),
                set.summary()
            )),
            Err(error) => notices.say(format!(
                "xdpstat: {interface}: reload failed, the rules in force stay: {}",
                one_line(error.as_ref())
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_lines_go_to_the_view_once_and_to_stderr_after() {
        let notices = Notices::default();
        notices.hold_with(true, true);
        notices.say("first".into());
        notices.say("second".into());
        assert_eq!(notices.latest().as_deref(), Some("second"));
        assert_eq!(notices.latest(), None, "each line is shown once");
        assert_eq!(notices.held().all, ["first", "second"]);
        notices.hold(false);
        assert!(notices.held().all.is_empty() && !notices.held().holding);
    }
}
