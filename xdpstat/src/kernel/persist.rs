//! `xdpstat IFACE --persist`: count through maps and a BPF link pinned on
//! bpffs, so counting goes on between xdpstat processes. The first run
//! pins; every later one takes the lock, checks the pins, loads this
//! build's program on the pinned maps and swaps it into the pinned link
//! (an upgrade is the same swap), and continues the same counts.

use std::{path::Path, time::SystemTime};

use xdpstat_common::Meta;

use crate::{
    counts::{prefixes::PrefixLens, report::rfc3339},
    error::{XdpstatError, one_line},
    kernel::attach::{AttachMode, Attached, Hook, ObtainedMode},
    kernel::bpf_sys,
    kernel::datapath::{Datapath, Load},
    kernel::meta,
    kernel::pins::{self, Found, LINK_PIN, PinDir},
    rules::RuleSet,
};

/// What a persisted start asks for: the attach options a pinned setup is
/// held against, and whether the run names a rules file.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub mode: AttachMode,
    pub hook: Hook,
    pub max_sources: u32,
    pub prefix_len: PrefixLens,
    /// A run without `--rules` takes the pinned rules out of force.
    pub rules_given: bool,
    /// What `--capture` copies.
    pub capture: Option<crate::kernel::datapath::capture::Settings>,
}

/// A persisted datapath, attached, and when its counts began.
pub struct Persisted {
    pub datapath: Datapath,
    pub attached: Attached,
    pub since: SystemTime,
    /// Whether pins were picked up (not made anew).
    pub resumed: bool,
}

/// Attaches to `interface` with its state pinned under `root` (canonical),
/// picking up what an earlier xdpstat pinned there, under this name or,
/// after a rename, under the interface's earlier name. A start refused
/// before its pins were complete leaves none behind.
pub fn attach(
    interface: &str,
    args: &Setup,
    root: &Path,
    rules: &RuleSet,
) -> Result<Persisted, XdpstatError> {
    let ifindex =
        nix::net::if_::if_nametoindex(interface).map_err(|_| XdpstatError::UnknownInterface {
            interface: interface.to_owned(),
        })?;
    pins::ensure_bpffs(root)?;
    let netns = pins::netns_inode().map_err(|e| XdpstatError::Pins {
        dir: root.to_owned(),
        source: format!("reading the network namespace: {e}").into(),
    })?;
    let dir = match pins::find(root, netns, interface)? {
        Some((pinned_as, path)) if pinned_as != interface => {
            let mut dir = PinDir::lock_existing(root, &path, &pinned_as)?;
            match dir.rename_to(interface) {
                Ok(()) => eprintln!(
                    "xdpstat: {interface}: its pins were under its earlier name {pinned_as} (the same interface, index {ifindex}); moved them to {}",
                    dir.path().display()
                ),
                // Stale pins hold the new name: these stay where they are.
                Err(error) => eprintln!(
                    "xdpstat: {interface}: picked up its pins under its earlier name {pinned_as} (the same interface, index {ifindex}) and left them there: {}",
                    one_line(&error)
                ),
            }
            dir
        }
        _ => PinDir::lock(root, netns, interface)?,
    };
    let resume = match dir.inspect(interface, ifindex)? {
        Found::Nothing => None,
        Found::Incomplete => {
            eprintln!(
                "xdpstat: {interface}: removing the pins an xdpstat left unfinished in {}",
                dir.path().display()
            );
            dir.clear()?;
            None
        }
        Found::Stale(why) => {
            eprintln!(
                "xdpstat: {interface}: the pins in {} are stale ({why}); removed them, counting starts anew",
                dir.path().display()
            );
            dir.clear()?;
            None
        }
        Found::Resumable(meta) => Some(meta),
    };
    if let Some(meta) = &resume {
        check_same(interface, meta, args)?;
    }
    match start(interface, args, &dir, resume.as_ref(), rules) {
        Ok((mut datapath, attached, since)) => {
            datapath.keep_pinned(dir);
            Ok(Persisted {
                datapath,
                attached,
                since,
                resumed: resume.is_some(),
            })
        }
        Err(error) => {
            // Pins made by this start would hold kernel memory for nobody.
            if resume.is_none()
                && let Err(cleanup) = dir.remove()
            {
                eprintln!("xdpstat: {interface}: {}", one_line(&cleanup));
            }
            Err(error)
        }
    }
}

/// Loads the datapath on the pins in `dir` (picked up from `resume`, or
/// new), puts `rules` in force and attaches or takes the pinned link over.
fn start(
    interface: &str,
    args: &Setup,
    dir: &PinDir,
    resume: Option<&Meta>,
    rules: &RuleSet,
) -> Result<(Datapath, Attached, SystemTime), XdpstatError> {
    let mut datapath = Datapath::load_with(Load {
        prefix_len: args.prefix_len,
        pins: Some(dir),
        resume,
        capture: args.capture,
        ..Load::new(args.max_sources)
    })?;
    let pinned_rules = datapath
        .rule_maps()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .in_force_len();
    if !args.rules_given && pinned_rules > 0 {
        eprintln!(
            "xdpstat: {interface}: no --rules given: the {pinned_rules} rule{} the persisted run had in force {} removed (give --rules FILE to keep rules in force)",
            if pinned_rules == 1 { "" } else { "s" },
            if pinned_rules == 1 { "is" } else { "are" },
        );
    }
    // The pinned rules stay in force until these replace them, in one
    // write: a restart leaves no instant without rules.
    datapath.put_rules(rules, interface)?;
    let (attached, since) = match resume {
        Some(meta) => {
            let link = dir.file(LINK_PIN);
            let old = bpf_sys::open_pinned(&link)
                .and_then(|fd| bpf_sys::link_facts(std::os::fd::AsFd::as_fd(&fd)))
                .map(|facts| facts.prog_id)
                .unwrap_or(0);
            let attached = datapath.take_over(interface, &link, meta)?;
            datapath.finish_retiring()?;
            let since = meta::time(meta.since_ns);
            eprintln!(
                "xdpstat: {interface}: picked up the counts pinned in {} (counting since {}); this xdpstat's program (xdpstat {}, id {}) replaced the one xdpstat {} attached (id {old}) in one link update",
                dir.path().display(),
                rfc3339(since),
                env!("CARGO_PKG_VERSION"),
                datapath.program_id().unwrap_or(0),
                meta::text(&meta.version),
            );
            (attached, since)
        }
        None => {
            let attached = match args.hook {
                Hook::Xdp => datapath.attach(interface, args.mode)?,
                Hook::Tcx => datapath.attach_tcx(interface)?,
            };
            datapath.pin_link(&dir.file(LINK_PIN))?;
            (attached, SystemTime::now())
        }
    };
    datapath.write_record(&attached, since, true)?;
    Ok((datapath, attached, since))
}

/// Refuses a command line that asks for another setup than the pinned one.
fn check_same(interface: &str, meta: &Meta, args: &Setup) -> Result<(), XdpstatError> {
    let (mode, hook, max_sources) = (args.mode, args.hook, args.max_sources);
    let differs = |what: String| {
        Err(XdpstatError::PersistedDifferently {
            interface: interface.to_owned(),
            what,
        })
    };
    let pinned = meta::attach_mode(meta.attach);
    let pinned_hook = meta::hook(meta);
    if pinned_hook != hook {
        return differs(format!(
            "on the {} hook, not {}",
            pinned_hook.name(),
            hook.name()
        ));
    }
    let asked = match mode {
        AttachMode::Auto => None,
        AttachMode::Native => Some(ObtainedMode::Native),
        AttachMode::Generic => Some(ObtainedMode::Generic),
        AttachMode::Offload => Some(ObtainedMode::Offload),
    };
    if let (Some(asked), Some(pinned)) = (asked, pinned)
        && asked != pinned
    {
        return differs(format!("in {pinned} mode, not {asked}"));
    }
    let lens = args.prefix_len;
    if (meta.prefix_v4, meta.prefix_v6) != (u32::from(lens.v4), u32::from(lens.v6)) {
        return differs(format!(
            "with --prefix-len {},{}, not {lens}",
            meta.prefix_v4, meta.prefix_v6
        ));
    }
    if meta.max_sources != max_sources {
        return differs(format!(
            "with --max-sources {}, not {max_sources}",
            meta.max_sources
        ));
    }
    Ok(())
}
