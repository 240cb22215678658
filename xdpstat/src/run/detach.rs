//! `xdpstat detach IFACE...`: ends persisted counting on each interface by
//! removing its pins: the link (which the kernel then detaches), the maps
//! and the record. Scripts run it unconditionally, so an interface with
//! nothing persisted is said so and is no error. `xdpstat detach --stale`
//! removes the pins `status` lists as stale or incomplete (those of a
//! deleted network namespace among them), and nothing else.

use std::path::Path;

use crate::{
    cli::DetachArgs,
    error::{XdpstatError, one_line},
    kernel::pins::{self, PinDir},
    kernel::privilege::{Needs, check_capabilities},
    run::status,
};

/// Detaches every named interface (or every stale one); reports the first
/// failure after trying all.
pub fn detach(args: &DetachArgs) -> Result<(), XdpstatError> {
    check_capabilities(Needs::Attach)?;
    if args.stale {
        return detach_stale(&args.pin_dir);
    }
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
    let Some((pinned_as, path)) = pins::find(root, netns, interface)? else {
        return Ok(format!(
            "{interface}: nothing persisted by xdpstat (under {}); nothing to detach",
            root.display()
        ));
    };
    let dir = PinDir::lock_existing(root, &path, &pinned_as).map_err(busy(interface))?;
    dir.remove()?;
    let renamed = if pinned_as == interface {
        String::new()
    } else {
        format!(" (pinned under its earlier name {pinned_as})")
    };
    Ok(format!(
        "{interface}: detached; its pins in {}{renamed} are removed",
        path.display()
    ))
}

/// A lock held by a running xdpstat, said as what to do.
fn busy(interface: &str) -> impl Fn(XdpstatError) -> XdpstatError + '_ {
    move |error| match error {
        XdpstatError::AlreadyRead { pid, .. } => XdpstatError::Usage(format!(
            "{interface} is being read by xdpstat{}; stop it first, then detach",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        )),
        other => other,
    }
}

/// Removes every pin directory under `root` that `status` finds stale or
/// incomplete, in any network namespace; one whose reader still runs is
/// left and said.
fn detach_stale(root: &Path) -> Result<(), XdpstatError> {
    let mut removed = 0;
    let mut first_error = None;
    let listed = if pins::is_bpffs(root) {
        pins::list(root)
    } else {
        Vec::new()
    };
    for (netns, name, path) in listed {
        let instance = status::persisted_at(netns, &name, &path);
        if !instance.is_stale() {
            continue;
        }
        if let Some(pid) = instance.reader_pid {
            println!(
                "{}: left ({}; xdpstat pid {pid} still reads it)",
                path.display(),
                instance.state
            );
            continue;
        }
        let result = PinDir::lock_existing(root, &path, &name)
            .map_err(busy(&name))
            .and_then(|dir| {
                // Judged again under the lock: a start may have picked the
                // pins up since they were judged.
                if status::persisted_at(netns, &name, &path).is_stale() {
                    dir.remove()
                } else {
                    Err(XdpstatError::Usage(format!(
                        "{}: picked up while detaching; left",
                        path.display()
                    )))
                }
            });
        match result {
            Ok(()) => {
                removed += 1;
                println!(
                    "{}: removed ({}; netns {netns})",
                    path.display(),
                    instance.state
                );
            }
            Err(error) => {
                eprintln!("xdpstat: {}", one_line(&error));
                first_error.get_or_insert(error);
            }
        }
    }
    if removed == 0 && first_error.is_none() {
        println!(
            "no stale or incomplete pins under {}; nothing to remove",
            root.display()
        );
    }
    first_error.map_or(Ok(()), Err)
}
