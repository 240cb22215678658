//! `xdpstat detach IFACE...`: ends persisted counting on each interface by
//! removing its pins: the link (which the kernel then detaches), the maps
//! and the record. Scripts run it unconditionally, so an interface with
//! nothing persisted is said so and is no error.

use std::path::Path;

use crate::{
    cli::DetachArgs,
    error::{XdpstatError, one_line},
    kernel::pins::{self, PinDir},
    kernel::privilege::{Needs, check_capabilities},
};

/// Detaches every named interface; reports the first failure after trying all.
pub fn detach(args: &DetachArgs) -> Result<(), XdpstatError> {
    check_capabilities(Needs::Attach)?;
    let netns = pins::netns_inode().map_err(|e| XdpstatError::Pins {
        dir: args.pin_dir.clone(),
        source: format!("reading the network namespace: {e}").into(),
    })?;
    let mut first_error = None;
    for interface in &args.interfaces {
        match detach_one(interface, &args.pin_dir, netns) {
            Ok(said) => println!("{said}"),
            Err(error) => {
                if first_error.is_some() {
                    eprintln!("xdpstat: {}", one_line(&error));
                }
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn detach_one(interface: &str, root: &Path, netns: u64) -> Result<String, XdpstatError> {
    let path = pins::dir_of(root, netns, interface);
    if !pins::is_bpffs(root) || !path.is_dir() {
        return Ok(format!(
            "{interface}: nothing persisted by xdpstat (under {}); nothing to detach",
            root.display()
        ));
    }
    let dir = PinDir::lock(root, netns, interface).map_err(|error| match error {
        XdpstatError::AlreadyRead { pid, .. } => XdpstatError::Usage(format!(
            "{interface} is being read by xdpstat{}; stop it first, then detach",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        )),
        other => other,
    })?;
    dir.remove()?;
    Ok(format!(
        "{interface}: detached; its pins in {} are removed",
        path.display()
    ))
}
