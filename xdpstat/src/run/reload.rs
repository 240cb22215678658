//! SIGHUP: read the rules file again and put the new rules in force on
//! every watched interface. A file that fails its checks changes nothing:
//! the rules in force stay, and stderr says why.

use std::{
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

/// Starts the thread that reloads `path` into `targets` on each SIGHUP
/// (with no rules file, says there is nothing to reload: SIGHUP never ends
/// a run); it lives as long as the process.
pub fn on_sighup(path: Option<PathBuf>, targets: Vec<RuleTarget>) -> Result<(), XdpstatError> {
    let mut signals = Signals::new([SIGHUP]).map_err(|e| XdpstatError::Signal {
        signal: SIGHUP,
        source: e,
    })?;
    std::thread::Builder::new()
        .name("rules-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                match &path {
                    Some(path) => reload(path, &targets),
                    None => eprintln!("xdpstat: SIGHUP: no --rules file to reload"),
                }
            }
        })
        .map_err(|e| XdpstatError::Signal {
            signal: SIGHUP,
            source: e,
        })?;
    Ok(())
}

/// Reads `path` and puts its rules in force on every target, saying on
/// stderr what happened.
pub fn reload(path: &std::path::Path, targets: &[RuleTarget]) {
    let set = match file::load(path) {
        Ok(set) => set,
        Err(error) => {
            eprintln!("xdpstat: reload refused, the rules in force stay: {error}");
            return;
        }
    };
    for (interface, maps) in targets {
        let result = maps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(&set);
        match result {
            Ok(()) => eprintln!(
                "xdpstat: {interface}: rules reloaded from {}: {} rule{} in force",
                path.display(),
                set.rules.len(),
                if set.rules.len() == 1 { "" } else { "s" }
            ),
            Err(error) => eprintln!(
                "xdpstat: {interface}: reload failed, the rules in force stay: {}",
                one_line(error.as_ref())
            ),
        }
    }
}
