//! `xdpstat status`: every interface on this host where xdpstat's program
//! is attached, persisted or not. Persisted ones are found by their pin
//! directories, under the given pin root and every other one on a bpffs
//! this mount namespace sees (so one no process reads is listed too);
//! running ones by the record map (`XDPSTAT_META`) their process holds
//! open, which also names the process; and whatever is left by the
//! kernel's own list of maps, so that no instance goes unlisted.

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::maps::{MapData, MapInfo};
use serde::Serialize;
use xdpstat_common::{META_MAP, Meta, PIN_LAYOUT};

use crate::{
    cli::{StatusArgs, StatusFormat},
    counts::report::rfc3339,
    error::{XdpstatError, one_line},
    kernel::privilege::{Needs, check_capabilities},
    kernel::{
        bpf_sys,
        meta::{self, attach_mode},
        netlink,
        pins::{self, LINK_PIN},
        tables::{TableFds, sources_held},
    },
};

/// One interface xdpstat counts on (or pins that say it did).
#[derive(Debug, Serialize)]
pub struct Instance {
    /// The interface's name now (for a persisted one renamed since, the
    /// name it has now, where this namespace can tell).
    pub interface: String,
    /// The name its pins are under, when the interface was renamed since.
    pub pinned_as: Option<String>,
    /// Inode of the interface's network namespace.
    pub netns: u64,
    /// `xdp` or `tcx`.
    pub hook: &'static str,
    /// native, generic, offload, or tcx.
    pub mode: String,
    pub program_id: Option<u32>,
    /// The xdpstat version that attached the running program.
    pub version: String,
    /// RFC 3339; none for pins whose record was never written.
    pub counting_since: Option<String>,
    pub persisted: bool,
    pub pin_dir: Option<PathBuf>,
    pub sources_held: Option<Held>,
    /// The xdpstat process reading it, if one runs.
    pub reader_pid: Option<u32>,
    /// `counting`, or why not: `stale: ...`, `incomplete: ...`,
    /// `incompatible: ...` (a string in JSON).
    pub state: State,
}

/// Whether an instance counts, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Attached and counting.
    Counting,
    /// Counting, persisted in pins this mount namespace does not see.
    CountingUnseen,
    /// The interface it counted on is gone, or its link is: why.
    Stale(String),
    /// Pins whose record was never finished: a start that died.
    Unfinished,
    /// Pins a running start is setting up.
    SettingUp,
    /// Pins this build cannot read: why.
    Incompatible(String),
}

impl State {
    /// Whether the instance is counting (wherever its pins are).
    pub fn is_counting(&self) -> bool {
        matches!(self, Self::Counting | Self::CountingUnseen)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Counting => write!(f, "counting"),
            Self::CountingUnseen => write!(
                f,
                "counting: persisted where this mount namespace sees no pins"
            ),
            Self::Stale(why) => write!(f, "stale: {why}; {STALE_FIX}"),
            Self::Unfinished => write!(
                f,
                "incomplete: pins an xdpstat left while setting up; {STALE_FIX}"
            ),
            Self::SettingUp => write!(f, "incomplete: an xdpstat is setting it up"),
            Self::Incompatible(why) => write!(f, "incompatible: {why}"),
        }
    }
}

impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Instance {
    /// Whether `xdpstat detach --stale` removes it: pins of an interface
    /// that is gone (or whose link is), or left unfinished by a start that
    /// died. (Pins a running xdpstat holds are not removed: it holds their
    /// lock.)
    pub fn is_stale(&self) -> bool {
        self.pin_dir.is_some() && matches!(self.state, State::Stale(_) | State::Unfinished)
    }
}

/// What every state that `detach --stale` cures ends with.
const STALE_FIX: &str = "`xdpstat detach --stale` removes it";

#[derive(Debug, Serialize)]
pub struct Held {
    pub ipv4: usize,
    pub ipv6: usize,
}

/// Prints every instance found. Without the privilege to see the kernel's
/// maps, says so (exit 2) rather than print a list that could be empty
/// only because the kernel hid it.
pub fn status(args: &StatusArgs, out: &mut dyn Write) -> Result<(), XdpstatError> {
    check_capabilities(Needs::Inspect)?;
    let instances = find(&args.pin_dir);
    let written = match args.format {
        StatusFormat::Json => serde_json::to_writer_pretty(&mut *out, &instances)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
        StatusFormat::Plain => write_plain(out, &instances),
    };
    written.map_err(XdpstatError::Output)
}

/// Every instance: persisted ones under `root` and every other pin root
/// found, then running ones, then any other record the kernel holds.
pub fn find(root: &Path) -> Vec<Instance> {
    let readers = meta_holders();
    let mut seen = HashSet::new();
    let mut instances = Vec::new();
    let others = pin_roots().into_iter().filter(|other| other != root);
    for root in std::iter::once(root.to_owned()).chain(others) {
        if pins::is_bpffs(&root) {
            for (netns, name, dir) in pins::list(&root) {
                instances.push(persisted(netns, &name, &dir, &mut seen));
            }
        }
    }
    for (&map_id, &pid) in &readers {
        if !seen.insert(map_id) {
            continue;
        }
        if let Some(instance) = by_record(map_id, Some(pid)) {
            instances.push(instance);
        }
    }
    // Pinned where this mount namespace does not see (another one's
    // bpffs, or a pin root deeper than the search goes).
    for map_id in meta_maps() {
        if !seen.insert(map_id) {
            continue;
        }
        if let Some(mut instance) = by_record(map_id, None) {
            if instance.persisted && instance.state == State::Counting {
                instance.state = State::CountingUnseen;
            }
            instances.push(instance);
        }
    }
    instances
}

/// What the pin directory `dir` of `name` in namespace `netns` holds.
pub fn persisted_at(netns: u64, name: &str, dir: &Path) -> Instance {
    persisted(netns, name, dir, &mut HashSet::new())
}

/// The instance the record map `map_id` describes, read by `reader`.
fn by_record(map_id: u32, reader: Option<u32>) -> Option<Instance> {
    let meta = meta_by_id(map_id).ok()?;
    if meta.layout != PIN_LAYOUT {
        return None;
    }
    let link = bpf_sys::link_by_id(meta.link_id)
        .and_then(|fd| bpf_sys::link_facts(fd.as_fd()))
        .ok();
    let mut instance = describe(&meta, link, reader);
    instance.persisted = meta.persisted != 0;
    Some(instance)
}

/// Every record map in the kernel, by id.
fn meta_maps() -> Vec<u32> {
    aya::maps::loaded_maps()
        .flatten()
        .filter(|info| info.name_as_str() == Some(META_MAP))
        .map(|info| info.id())
        .collect()
}

/// Pin roots on every bpffs this mount namespace sees: directories (up to
/// four levels down a bpffs mount) holding `net<inode>/<interface>/`
/// directories with a record pinned in them.
fn pin_roots() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut roots = Vec::new();
    for line in mounts.lines() {
        // "36 35 0:32 / /sys/fs/bpf rw,... - bpf bpf rw,..."
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        if after.split_whitespace().next() != Some("bpf") {
            continue;
        }
        let Some(mount_point) = before.split_whitespace().nth(4) else {
            continue;
        };
        search_pin_roots(&PathBuf::from(unescape_mount(mount_point)), 4, &mut roots);
    }
    roots.sort();
    roots.dedup();
    roots
}

fn search_pin_roots(dir: &Path, depth: usize, roots: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut is_root = false;
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let is_netns = name
            .to_str()
            .and_then(|n| n.strip_prefix("net"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let holds_record = is_netns
            && std::fs::read_dir(entry.path()).is_ok_and(|interfaces| {
                interfaces
                    .flatten()
                    .any(|interface| interface.path().join(META_MAP).exists())
            });
        if holds_record {
            is_root = true;
        } else if depth > 0 {
            search_pin_roots(&entry.path(), depth - 1, roots);
        }
    }
    if is_root {
        roots.push(dir.to_owned());
    }
}

/// A mount point as `/proc/self/mountinfo` writes it (`\040` for a space).
fn unescape_mount(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if digits.len() == 3
                && let Ok(code) = u8::from_str_radix(&digits, 8)
            {
                out.push(char::from(code));
                chars.nth(2);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The instance a pin directory holds.
fn persisted(netns: u64, name: &str, dir: &Path, seen: &mut HashSet<u32>) -> Instance {
    // This process's own lock (`detach --stale` judging under it) is no
    // reader's.
    let reader = pins::lock_holder(dir).filter(|&pid| pid != std::process::id());
    let meta_map = MapData::from_pin(dir.join(META_MAP)).ok();
    let info = meta_map.as_ref().and_then(|map| map.info().ok());
    if let Some(info) = &info {
        seen.insert(info.id());
    }
    // A record of another size is another layout's: not to be read as ours.
    let foreign = info
        .as_ref()
        .map(|info| info.value_size())
        .filter(|&size| size as usize != size_of::<Meta>());
    let meta = match foreign {
        Some(_) => None,
        None => meta_map.and_then(|map| meta::read(map).ok()),
    };
    let Some(meta) = meta.filter(|meta| meta.layout != 0) else {
        let mut instance = describe(&Meta::default(), None, reader);
        instance.interface = name.to_owned();
        instance.netns = netns;
        instance.persisted = true;
        instance.pin_dir = Some(dir.to_owned());
        instance.state = match foreign {
            Some(size) => State::Incompatible(format!(
                "a {size}-byte record from another xdpstat's layout (`xdpstat detach {name}` removes it)"
            )),
            None if reader.is_some() => State::SettingUp,
            None => State::Unfinished,
        };
        return instance;
    };
    let link = bpf_sys::open_pinned(&dir.join(LINK_PIN))
        .and_then(|fd| bpf_sys::link_facts(fd.as_fd()))
        .ok();
    let mut instance = describe(&meta, link, reader);
    instance.interface = name.to_owned();
    instance.persisted = true;
    instance.pin_dir = Some(dir.to_owned());
    if meta.layout != PIN_LAYOUT {
        instance.state = State::Incompatible(format!(
            "layout {} (this xdpstat reads {PIN_LAYOUT})",
            meta.layout
        ));
    } else if instance.state == State::Counting {
        // The index may belong to another interface now, or the interface
        // may have been renamed (in this namespace only: another
        // namespace's names are not ours to see).
        let here = pins::netns_inode().ok() == Some(netns);
        if let (true, Some(link)) = (here, link)
            && nix::net::if_::if_nametoindex(name).ok() != Some(link.ifindex)
        {
            match netlink::name_of(link.ifindex) {
                Some(current) => {
                    instance.interface = current;
                    instance.pinned_as = Some(name.to_owned());
                }
                None => {
                    instance.state =
                        State::Stale(format!("{name} (index {}) no longer exists", link.ifindex))
                }
            }
        }
    }
    instance
}

/// An instance from its record and its link.
fn describe(meta: &Meta, link: Option<bpf_sys::LinkFacts>, reader: Option<u32>) -> Instance {
    let mode = attach_mode(meta.attach);
    let state = match link {
        None => State::Stale("its link is gone".into()),
        Some(link) if link.ifindex == 0 => State::Stale(format!(
            "the interface it counted on, index {}, is gone",
            meta.ifindex
        )),
        Some(_) => State::Counting,
    };
    let held = held(meta).ok().map(|(ipv4, ipv6)| Held { ipv4, ipv6 });
    Instance {
        interface: meta::text(&meta.interface),
        pinned_as: None,
        netns: meta.netns,
        hook: meta::hook(meta).name(),
        mode: mode.map_or_else(|| "unknown".to_owned(), |m| m.to_string()),
        program_id: link.map(|l| l.prog_id).filter(|&id| id != 0),
        version: meta::text(&meta.version),
        counting_since: (meta.since_ns != 0).then(|| rfc3339(meta::time(meta.since_ns))),
        persisted: meta.persisted != 0,
        pin_dir: None,
        sources_held: held,
        reader_pid: reader,
        state,
    }
}

/// Sources the instance's tables hold, counted now.
fn held(meta: &Meta) -> Result<(usize, usize), String> {
    let open = |id: u32| {
        MapInfo::from_id(id)
            .and_then(|info| info.fd())
            .map_err(|e| one_line(&e))
    };
    let (v4, v4_pages) = (open(meta.sources_v4_id)?, open(meta.pages_v4_id)?);
    let (v6, v6_pages) = (open(meta.sources_v6_id)?, open(meta.pages_v6_id)?);
    sources_held(
        TableFds {
            entries: v4.as_fd(),
            pages: v4_pages.as_fd(),
            rows: None,
            buckets: None,
            mixed: None,
        },
        TableFds {
            entries: v6.as_fd(),
            pages: v6_pages.as_fd(),
            rows: None,
            buckets: None,
            mixed: None,
        },
        meta.table_entries as usize,
    )
    .map_err(|e| e.to_string())
}

fn meta_by_id(id: u32) -> Result<Meta, String> {
    let fd = MapInfo::from_id(id)
        .and_then(|info| info.fd())
        .map_err(|e| one_line(&e))?;
    let fd = fd.as_fd().try_clone_to_owned().map_err(|e| e.to_string())?;
    let map = MapData::from_fd(fd).map_err(|e| one_line(&e))?;
    meta::read(map).map_err(|e| one_line(&e))
}

/// Record maps other processes hold open: map id to pid.
fn meta_holders() -> HashMap<u32, u32> {
    let me = std::process::id();
    let mut holders = HashMap::new();
    let mut names: HashMap<u32, bool> = HashMap::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return holders;
    };
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let is_map = std::fs::read_link(fd.path())
                .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf-map");
            if !is_map {
                continue;
            }
            let info = process.path().join("fdinfo").join(fd.file_name());
            let Some(map_id) = std::fs::read_to_string(info).ok().and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("map_id:"))
                    .and_then(|id| id.trim().parse::<u32>().ok())
            }) else {
                continue;
            };
            let is_meta = *names.entry(map_id).or_insert_with(|| {
                MapInfo::from_id(map_id).is_ok_and(|info| info.name_as_str() == Some(META_MAP))
            });
            if is_meta {
                holders.entry(map_id).or_insert(pid);
            }
        }
    }
    holders
}

fn write_plain(out: &mut dyn Write, instances: &[Instance]) -> std::io::Result<()> {
    if instances.is_empty() {
        return writeln!(out, "xdpstat is attached to no interface on this host");
    }
    writeln!(
        out,
        "{:<16} {:>12} {:<4} {:<8} {:>8} {:<8} {:<20} {:<9} {:>15} {:>8}  STATE",
        "INTERFACE",
        "NETNS",
        "HOOK",
        "MODE",
        "PROGRAM",
        "VERSION",
        "COUNTING SINCE",
        "PERSISTED",
        "SOURCES v4/v6",
        "READER"
    )?;
    for one in instances {
        let dash = || "-".to_owned();
        writeln!(
            out,
            "{:<16} {:>12} {:<4} {:<8} {:>8} {:<8} {:<20} {:<9} {:>15} {:>8}  {}",
            match &one.pinned_as {
                Some(old) => format!("{} (pinned as {old})", one.interface),
                None => one.interface.clone(),
            },
            one.netns,
            one.hook,
            one.mode,
            one.program_id.map_or_else(dash, |id| id.to_string()),
            if one.version.is_empty() {
                "-"
            } else {
                &one.version
            },
            one.counting_since.as_deref().unwrap_or("-"),
            if one.persisted { "yes" } else { "no" },
            one.sources_held
                .as_ref()
                .map_or_else(dash, |held| format!("{}/{}", held.ipv4, held.ipv6)),
            one.reader_pid.map_or_else(dash, |pid| pid.to_string()),
            one.state
        )?;
    }
    Ok(())
}
