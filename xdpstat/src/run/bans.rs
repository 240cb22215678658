//! `xdpstat ban`, `unban` and `bans`: ask the xdpstat that counts on an
//! interface (see [`control`]) to put a ban in force, take one out, or
//! list them, and print what it answers; with none running, change a
//! `--persist`ed interface's pins in place (`kernel::rulemaps`).

use std::{io::Write, net::IpAddr, path::Path, time::Duration};

use ipnet::IpNet;

use crate::{
    cli::{BanArgs, BansArgs, StatusFormat, UnbanArgs},
    counts::report::BanRow,
    error::XdpstatError,
    kernel::{
        pins::{self, Found, PinDir},
        privilege::{self, Needs, check_capabilities},
        rulemaps::RuleMaps,
    },
    run::control::{self, Answer, AskError, Request},
};

/// `PREFIX` as the user wrote it: an address (its /32 or /128) or a
/// prefix; host bits are cleared.
pub fn parse_prefix(text: &str) -> Result<IpNet, XdpstatError> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(address));
    }
    text.parse::<IpNet>().map(|p| p.trunc()).map_err(|_| {
        XdpstatError::Usage(format!(
            "{text:?} is not an address or a prefix (198.51.100.7, 203.0.113.0/24, 2001:db8::/32)"
        ))
    })
}

/// `--for`: a duration (`90s`, `10m`, `1h`), `0` for no end.
pub fn parse_length(text: &str) -> Result<Option<Duration>, XdpstatError> {
    if text.trim() == "0" {
        return Ok(None);
    }
    let length = humantime::parse_duration(text).map_err(|e| {
        XdpstatError::Usage(format!(
            "--for {text:?}: {e} (a duration such as 90s, 10m, 1h or 2d; 0 for no end)"
        ))
    })?;
    if length.is_zero() {
        return Ok(None);
    }
    // Far enough for anyone, near enough that the kernel's clock cannot
    // overflow adding it.
    const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);
    if length > MAX {
        return Err(XdpstatError::Usage(format!(
            "--for {text:?}: longer than 100 years; 0 means no end"
        )));
    }
    Ok(Some(length))
}

/// The index of `interface`, and that this process may change what it
/// drops.
fn target(interface: &str) -> Result<u32, XdpstatError> {
    let missing = privilege::missing_net_admin(None);
    if let Some(missing) = missing {
        return Err(XdpstatError::MissingCapabilities {
            missing: missing.into(),
        });
    }
    nix::net::if_::if_nametoindex(interface).map_err(|_| XdpstatError::UnknownInterface {
        interface: interface.to_owned(),
    })
}

/// Sends `request` to the xdpstat on `interface`; with none running,
/// acts on the interface's pins under `root`, if it has any.
fn ask(interface: &str, request: &Request, root: &Path) -> Result<Answer, XdpstatError> {
    let ifindex = target(interface)?;
    match control::ask(ifindex, request) {
        Ok(answer) => Ok(answer),
        Err(AskError::NoOne) => match pinned(interface, ifindex, root)? {
            Some((_dir, mut maps)) => Ok(control::act(request, &mut maps, interface, true)),
            None => Err(XdpstatError::Usage(format!(
                "{interface}: no xdpstat is counting on it here, running or persisted under {} (start `xdpstat {interface}`)",
                root.display()
            ))),
        },
        Err(AskError::Io(e)) => Err(XdpstatError::Usage(format!(
            "{interface}: the xdpstat counting on it did not answer: {e}"
        ))),
    }
}

/// The rule maps of `interface`'s pins under `root`, locked, when it is
/// persisted and no xdpstat runs on it; `None` when it has no pins.
fn pinned(
    interface: &str,
    ifindex: u32,
    root: &Path,
) -> Result<Option<(PinDir, RuleMaps)>, XdpstatError> {
    let netns = pins::netns_inode().map_err(|e| XdpstatError::Pins {
        dir: root.to_owned(),
        source: format!("reading the network namespace: {e}").into(),
    })?;
    let Some((pinned_as, path)) = pins::find(root, netns, interface)? else {
        return Ok(None);
    };
    check_capabilities(Needs::Attach)?;
    let dir = PinDir::lock_existing(root, &path, &pinned_as).map_err(|e| match e {
        XdpstatError::AlreadyRead { pid, .. } => XdpstatError::Usage(format!(
            "{interface}: the xdpstat reading it{} did not answer on its socket; try again",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        )),
        other => other,
    })?;
    let meta = match dir.inspect(interface, ifindex)? {
        Found::Resumable(meta) => meta,
        Found::Nothing => return Ok(None),
        Found::Incomplete | Found::Stale(_) => {
            return Err(XdpstatError::Usage(format!(
                "{interface}: its pins in {} are not counting (`xdpstat status` says why)",
                path.display()
            )));
        }
    };
    let maps = RuleMaps::from_pins(dir.path(), meta.table_entries as usize).map_err(|source| {
        XdpstatError::Pins {
            dir: path.clone(),
            source,
        }
    })?;
    Ok(Some((dir, maps)))
}

/// An answer's sentence on `out`, or its error.
fn said(answer: Answer, out: &mut dyn Write) -> Result<(), XdpstatError> {
    if !answer.ok {
        return Err(XdpstatError::Usage(answer.message));
    }
    writeln!(out, "{}", answer.message).map_err(XdpstatError::Output)
}

pub fn ban(args: &BanArgs, out: &mut dyn Write) -> Result<(), XdpstatError> {
    let prefix = parse_prefix(&args.prefix)?;
    let length = parse_length(&args.length)?;
    let request = Request::Ban {
        prefix,
        seconds: length.map(|l| l.as_secs_f64()),
        limit_pps: args.limit,
        reason: args.reason.clone(),
    };
    said(ask(&args.interface, &request, &args.pin_dir)?, out)
}

pub fn unban(args: &UnbanArgs, out: &mut dyn Write) -> Result<(), XdpstatError> {
    let prefix = parse_prefix(&args.prefix)?;
    said(
        ask(&args.interface, &Request::Unban { prefix }, &args.pin_dir)?,
        out,
    )
}

/// `xdpstat bans`: every named interface's bans (none named: every
/// interface of this network namespace that an xdpstat answers for).
pub fn list(args: &BansArgs, out: &mut dyn Write) -> Result<(), XdpstatError> {
    let mut all: Vec<(String, Vec<BanRow>)> = Vec::new();
    if args.interfaces.is_empty() {
        let interfaces = nix::net::if_::if_nameindex()
            .map_err(|e| XdpstatError::Usage(format!("listing the interfaces: {e}")))?;
        for interface in interfaces.iter() {
            let name = interface.name().to_string_lossy().into_owned();
            target(&name)?;
            match control::ask(interface.index(), &Request::Bans) {
                Ok(answer) => all.push((name, answer.bans)),
                Err(AskError::NoOne) => {
                    if let Some((_dir, mut maps)) = pinned(&name, interface.index(), &args.pin_dir)?
                    {
                        let answer = control::act(&Request::Bans, &mut maps, &name, true);
                        all.push((name, answer.bans));
                    }
                }
                Err(AskError::Io(e)) => {
                    return Err(XdpstatError::Usage(format!(
                        "{name}: the xdpstat counting on it did not answer: {e}"
                    )));
                }
            }
        }
    } else {
        for interface in &args.interfaces {
            let answer = ask(interface, &Request::Bans, &args.pin_dir)?;
            all.push((interface.clone(), answer.bans));
        }
    }
    let written = match args.format {
        StatusFormat::Json => {
            let rows: Vec<serde_json::Value> = all
                .iter()
                .map(|(interface, bans)| serde_json::json!({"interface": interface, "bans": bans}))
                .collect();
            writeln!(
                out,
                "{}",
                serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
            )
        }
        StatusFormat::Plain => write_plain(out, &all),
    };
    written.map_err(XdpstatError::Output)
}

fn write_plain(out: &mut dyn Write, all: &[(String, Vec<BanRow>)]) -> std::io::Result<()> {
    if all.is_empty() {
        return writeln!(out, "no xdpstat is counting in this network namespace");
    }
    for (interface, bans) in all {
        if bans.is_empty() {
            writeln!(out, "{interface}: no bans in force")?;
            continue;
        }
        writeln!(out, "{interface}: {} in force", plural(bans.len()))?;
        crate::output::write_bans(out, bans)?;
    }
    Ok(())
}

fn plural(n: usize) -> String {
    format!("{n} ban{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_an_address_or_a_network_and_nothing_else() {
        assert_eq!(
            parse_prefix("198.18.0.7").unwrap().to_string(),
            "198.18.0.7/32"
        );
        assert_eq!(
            parse_prefix("198.18.3.7/24").unwrap().to_string(),
            "198.18.3.0/24"
        );
        assert_eq!(
            parse_prefix("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        for bad in [
            "",
            "eth0",
            "198.18.0.0/33",
            "198.18.0.1/",
            "../etc",
            "1.2.3",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_length_is_a_duration_or_zero() {
        assert_eq!(parse_length("0").unwrap(), None);
        assert_eq!(parse_length("0s").unwrap(), None);
        assert_eq!(parse_length("90s").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(parse_length("1h").unwrap(), Some(Duration::from_secs(3600)));
        for bad in ["", "soon", "-1s", "1000years", "10"] {
            assert!(parse_length(bad).is_err(), "{bad}");
        }
    }
}
