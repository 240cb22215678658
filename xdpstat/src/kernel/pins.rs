//! Where a persisted interface's state lives on bpffs, and what is found
//! there: one directory per interface and network namespace
//! (`<root>/net<inode>/<name>`) holding the pinned maps, the pinned BPF
//! link and the META record; a lock on that directory, held by the one
//! xdpstat that reads it; and the checks that decide whether the pins can
//! be picked up again, are stale, or were written by a build that cannot
//! read them.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd as _, linux::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use aya::maps::MapData;
use xdpstat_common::{META_MAP, Meta, PIN_LAYOUT};

use crate::{
    error::{XdpstatError, one_line},
    kernel::{attach::Hook, bpf_sys, ifname, memory, meta, netlink},
};

/// Where `--persist` pins unless `--pin-dir` says otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/xdpstat";

/// The name of the pinned BPF link in an interface's directory.
pub const LINK_PIN: &str = "link";

/// `f_type` of bpffs (the field is as wide as a C long; the magic fits 32 bits).
const BPF_FS_MAGIC: u32 = 0xcafe_4a11;

/// Whether `path` is on a BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 as u32 == BPF_FS_MAGIC)
}

/// The pin root `given` on the command line, made absolute and canonical:
/// the part that exists with its symbolic links resolved, the rest as
/// written (without `.` or `..`), so that every command finds the same
/// root whatever directory it runs in.
pub fn pin_root(given: &Path) -> Result<PathBuf, XdpstatError> {
    let refused =
        |why: String| XdpstatError::Usage(format!("--pin-dir {}: {why}", given.display()));
    let absolute = std::path::absolute(given).map_err(|e| refused(e.to_string()))?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return Err(refused("no part of it exists".into())),
        }
    }
    let mut root = existing
        .canonicalize()
        .map_err(|e| refused(format!("resolving it: {e}")))?;
    for name in rest.iter().rev() {
        if name == ".." || name == "." {
            return Err(refused("'..' after a directory that does not exist".into()));
        }
        root.push(name);
    }
    if root.exists() && !root.is_dir() {
        return Err(refused("not a directory".into()));
    }
    Ok(root)
}

/// Makes sure `root` (canonical, from [`pin_root`]) is a directory on
/// bpffs. A root under `/sys/fs/bpf` gets bpffs mounted on `/sys/fs/bpf`
/// if it has none; any other root gets it mounted on itself. bpffs is
/// mounted only on a directory that is empty or that xdpstat creates, and
/// stderr says so; anything else is refused with nothing changed.
pub fn ensure_bpffs(root: &Path) -> Result<(), XdpstatError> {
    let failed = |what: String, e: io::Error| XdpstatError::Pins {
        dir: root.to_owned(),
        source: format!("{what}: {e}").into(),
    };
    if root.is_dir() && is_bpffs(root) {
        return Ok(());
    }
    let mount_at = if root.starts_with("/sys/fs/bpf") {
        Path::new("/sys/fs/bpf")
    } else {
        root
    };
    if !is_bpffs(mount_at) {
        match std::fs::read_dir(mount_at) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(XdpstatError::Usage(format!(
                        "{} is not on bpffs and is not empty: xdpstat mounts bpffs only on an empty directory (name a new or empty one with --pin-dir, or mount bpffs there yourself)",
                        mount_at.display()
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(mount_at).map_err(|e| failed("creating it".into(), e))?;
            }
            Err(e) => return Err(failed(format!("listing {}", mount_at.display()), e)),
        }
        mount_bpffs(mount_at)
            .map_err(|e| failed(format!("mounting bpffs on {}", mount_at.display()), e))?;
        eprintln!(
            "xdpstat: mounted bpffs on {} for the pins (it stays mounted; `umount {}` once nothing is pinned there)",
            mount_at.display(),
            mount_at.display()
        );
    }
    std::fs::create_dir_all(root).map_err(|e| failed("creating it".into(), e))
}

fn mount_bpffs(at: &Path) -> io::Result<()> {
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    // SAFETY: NUL-terminated strings that outlive the call; no data.
    let result = unsafe {
        libc::mount(
            c"bpffs".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The inode of the calling thread's network namespace: with the
/// interface's name, it names the interface on this host.
pub fn netns_inode() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.st_ino())
}

/// The directory of `interface` in network namespace `netns` under `root`;
/// a name that is no interface's (one that could reach outside the root)
/// is refused before any path is built.
pub fn dir_of(root: &Path, netns: u64, interface: &str) -> Result<PathBuf, XdpstatError> {
    ifname::check(interface)?;
    Ok(root.join(format!("net{netns}")).join(interface))
}

/// The directory holding `interface`'s pins in network namespace `netns`:
/// the one of its name, or, after a rename (which keeps the interface's
/// index), the one whose pinned link counts on the index `interface` has
/// now, with the name it was pinned under.
pub fn find(
    root: &Path,
    netns: u64,
    interface: &str,
) -> Result<Option<(String, PathBuf)>, XdpstatError> {
    let own = dir_of(root, netns, interface)?;
    if !is_bpffs(root) {
        return Ok(None);
    }
    // The pins counting on the interface win over stale ones under its
    // name (an interface that had the name before).
    if let Ok(ifindex) = nix::net::if_::if_nametoindex(interface)
        && let Some(found) = pinned_for_index(root, netns, ifindex)
    {
        return Ok(Some(found));
    }
    Ok(own.is_dir().then(|| (interface.to_owned(), own)))
}

/// The pin directory in namespace `netns` whose link counts on `ifindex`.
fn pinned_for_index(root: &Path, netns: u64, ifindex: u32) -> Option<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root.join(format!("net{netns}"))) else {
        return None;
    };
    entries.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        ifname::check(&name).ok()?;
        let link = bpf_sys::open_pinned(&entry.path().join(LINK_PIN)).ok()?;
        let facts = bpf_sys::link_facts(std::os::fd::AsFd::as_fd(&link)).ok()?;
        (facts.ifindex == ifindex).then(|| (name, entry.path()))
    })
}

/// What an interface's directory holds.
#[derive(Debug)]
pub enum Found {
    /// No pins: nothing persisted.
    Nothing,
    /// Pins an xdpstat left while it set them up (it died then): nothing
    /// counted through them that a report has shown.
    Incomplete,
    /// Pins that cannot be picked up again, and why (the interface they
    /// counted is gone, or its index belongs to another interface now).
    Stale(String),
    /// Pins to continue from.
    Resumable(Meta),
}

/// An interface's pin directory, locked by this process.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
    /// The directory, opened without following a symbolic link; holds the
    /// `flock` (closed, and so unlocked, on drop or process death), and
    /// pins are removed relative to it, never through a path.
    dir: File,
}

impl PinDir {
    /// Creates (if needed) and locks the directory of `interface`. Another
    /// xdpstat holding it is refused with its pid.
    pub fn lock(root: &Path, netns: u64, interface: &str) -> Result<Self, XdpstatError> {
        Self::lock_path(root, &dir_of(root, netns, interface)?, interface, true)
    }

    /// Locks the existing pin directory `path` under `root` (found by
    /// [`find`] or [`list`]), pinned for `interface`.
    pub fn lock_existing(root: &Path, path: &Path, interface: &str) -> Result<Self, XdpstatError> {
        Self::lock_path(root, path, interface, false)
    }

    fn lock_path(
        root: &Path,
        path: &Path,
        interface: &str,
        create: bool,
    ) -> Result<Self, XdpstatError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let failed = |what: &str, e: io::Error| XdpstatError::Pins {
            dir: path.to_owned(),
            source: format!("{what}: {e}").into(),
        };
        // A `detach` may remove the directory between our open and our
        // lock: then the lock is on a directory nobody sees; try again.
        for _ in 0..8 {
            if create {
                std::fs::create_dir_all(path).map_err(|e| failed("creating it", e))?;
            }
            let dir = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(path)
                .map_err(|e| failed("opening it", e))?;
            check_inside(root, path, &dir)
                .map_err(|why| failed("refused", io::Error::other(why)))?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::WouldBlock {
                    return Err(XdpstatError::AlreadyRead {
                        interface: interface.to_owned(),
                        pid: lock_holder(path),
                    });
                }
                return Err(failed("locking it", error));
            }
            let locked = dir.metadata().map_err(|e| failed("reading it", e))?;
            match std::fs::symlink_metadata(path) {
                Ok(now) if now.st_ino() == locked.st_ino() && now.st_dev() == locked.st_dev() => {
                    return Ok(Self {
                        path: path.to_owned(),
                        dir,
                    });
                }
                _ if !create => {
                    return Err(failed("locking it", io::Error::other("it was removed")));
                }
                _ => continue,
            }
        }
        Err(failed(
            "locking it",
            io::Error::other("it keeps being removed"),
        ))
    }

    /// Gives the directory, locked, the name of the interface it counts
    /// on now (after the interface was renamed).
    pub fn rename_to(&mut self, interface: &str) -> Result<(), XdpstatError> {
        ifname::check(interface)?;
        let new = self.path.with_file_name(interface);
        if new.exists() {
            return Err(self.error("renaming it", &format!("{} exists", new.display())));
        }
        std::fs::rename(&self.path, &new).map_err(|e| self.error("renaming it", &e))?;
        self.path = new;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the pin named `name` goes.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Whether anything is pinned here.
    fn has_pins(&self) -> bool {
        std::fs::read_dir(&self.path).is_ok_and(|mut entries| entries.next().is_some())
    }

    /// Decides what the pins here are, for `interface`, which has index
    /// `ifindex` now. Pins another layout wrote are an error: nothing is
    /// changed then.
    pub fn inspect(&self, interface: &str, ifindex: u32) -> Result<Found, XdpstatError> {
        let incompatible = |why: String| XdpstatError::IncompatiblePins {
            interface: interface.to_owned(),
            dir: self.path.clone(),
            why,
        };
        let meta_path = self.file(META_MAP);
        if !meta_path.exists() {
            return Ok(if self.has_pins() {
                Found::Incomplete
            } else {
                Found::Nothing
            });
        }
        let map = MapData::from_pin(&meta_path).map_err(|e| self.error("opening META", &e))?;
        let info = map.info().map_err(|e| self.error("reading META", &e))?;
        if info.value_size() as usize != size_of::<Meta>() || info.max_entries() != 1 {
            return Err(incompatible(format!(
                "was written by an xdpstat with another layout (a {}-byte record; this one writes {} bytes)",
                info.value_size(),
                size_of::<Meta>()
            )));
        }
        let meta = meta::read(map).map_err(|e| self.error("reading META", &e))?;
        if meta.layout == 0 {
            return Ok(Found::Incomplete);
        }
        if meta.layout != PIN_LAYOUT {
            return Err(incompatible(format!(
                "has layout {}, and this xdpstat reads layout {PIN_LAYOUT}",
                meta.layout
            )));
        }
        if let Some(why) = self.maps_differ(&meta) {
            return Err(incompatible(why));
        }
        let link = match bpf_sys::open_pinned(&self.file(LINK_PIN)) {
            Ok(link) => link,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Found::Stale("its link pin is gone".into()));
            }
            Err(e) => return Err(self.error("opening the link", &e)),
        };
        let facts = bpf_sys::link_facts(std::os::fd::AsFd::as_fd(&link))
            .map_err(|e| self.error("reading the link", &e))?;
        let hook = meta::hook(&meta);
        let expected = match hook {
            Hook::Tcx => bpf_sys::LINK_TYPE_TCX,
            Hook::Xdp => bpf_sys::LINK_TYPE_XDP,
        };
        if facts.link_type != expected {
            return Err(incompatible(format!(
                "has a link of type {} where its record says {}",
                facts.link_type,
                hook.name()
            )));
        }
        if facts.ifindex == 0 {
            return Ok(Found::Stale(format!(
                "the interface it counted on, index {}, is gone",
                meta.ifindex
            )));
        }
        if facts.ifindex != ifindex {
            // The interface it counts on was renamed, and another took its
            // old name: its counts are not this one's to clear.
            let now = netlink::name_of(facts.ifindex)
                .unwrap_or_else(|| format!("index {}", facts.ifindex));
            return Err(XdpstatError::Usage(format!(
                "{interface}: the pins in {} count on interface index {}, now named {now}, not on {interface} (index {ifindex}); `xdpstat {now} --persist` picks them up, `xdpstat detach {now}` removes them",
                self.path.display(),
                facts.ifindex,
            )));
        }
        Ok(Found::Resumable(meta))
    }

    /// Why the pinned maps cannot be the ones `meta` describes, if they
    /// cannot (a type, entry size or length this build does not use).
    fn maps_differ(&self, meta: &Meta) -> Option<String> {
        let entries = meta.table_entries;
        // The record is judged by its own size before this.
        let expected = memory::layouts(entries, entries, memory::possible_cpus())
            .into_iter()
            .filter(|map| map.pinned() && map.name != META_MAP)
            .map(|map| (map.name, map.value_size, map.max_entries));
        for (name, value_size, max_entries) in expected {
            let info = match aya::maps::MapInfo::from_pin(self.file(name)) {
                Ok(info) => info,
                Err(e) => return Some(format!("has no usable {name} ({})", one_line(&e))),
            };
            if info.value_size() as usize != value_size || info.max_entries() != max_entries {
                return Some(format!(
                    "has a {name} of {} entries of {} bytes, where this xdpstat needs {max_entries} of {value_size}",
                    info.max_entries(),
                    info.value_size()
                ));
            }
        }
        None
    }

    /// Removes every pin here: the link first (nobody else holding it, the
    /// kernel detaches it), the record last, so that a removal cut short
    /// leaves pins the next start finds stale or unfinished. Only the
    /// names xdpstat pins are removed, relative to the locked directory.
    pub fn clear(&self) -> Result<(), XdpstatError> {
        let maps = memory::map_names()
            .into_iter()
            .filter(|&name| name != META_MAP);
        for name in std::iter::once(LINK_PIN)
            .chain(maps)
            .chain(std::iter::once(META_MAP))
        {
            let name = std::ffi::CString::new(name).expect("pin names hold no NUL");
            // SAFETY: a directory descriptor we own and a NUL-terminated
            // name; unlinkat never follows a symbolic link.
            if unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) } != 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(self.error("removing a pin", &e));
                }
            }
        }
        Ok(())
    }

    /// What is left here that xdpstat did not pin, by name.
    fn strangers(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Removes every pin and the directory (and the namespace's directory
    /// when it is left empty). Whatever else is found there is left, and
    /// named on stderr, with the directory.
    pub fn remove(self) -> Result<(), XdpstatError> {
        self.clear()?;
        let strangers = self.strangers();
        if !strangers.is_empty() {
            eprintln!(
                "xdpstat: {}: left {} (not pinned by xdpstat), and so the directory",
                self.path.display(),
                strangers
                    .iter()
                    .map(|name| ifname::quoted(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Ok(());
        }
        std::fs::remove_dir(&self.path).map_err(|e| self.error("removing it", &e))?;
        if let Some(parent) = self.path.parent() {
            // Another interface of the namespace may still be there.
            let _ = std::fs::remove_dir(parent);
        }
        Ok(())
    }

    fn error(&self, what: &str, e: &dyn std::fmt::Display) -> XdpstatError {
        XdpstatError::Pins {
            dir: self.path.clone(),
            source: format!("{what}: {e}").into(),
        }
    }
}

/// Refuses a pin directory that is not where it claims to be: its real
/// path (from the open descriptor, symbolic links resolved) must be `path`
/// itself, directly two levels under `root`, and on bpffs.
fn check_inside(root: &Path, path: &Path, dir: &File) -> Result<(), String> {
    let real = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .map_err(|e| format!("resolving it: {e}"))?;
    let root = root
        .canonicalize()
        .map_err(|e| format!("resolving the pin root: {e}"))?;
    if real != path || real.parent().and_then(Path::parent) != Some(root.as_path()) {
        return Err(format!(
            "it resolves to {}, which is not a directory of the pin root {}",
            real.display(),
            root.display()
        ));
    }
    let on_bpffs = nix::sys::statfs::fstatfs(dir)
        .is_ok_and(|fs| fs.filesystem_type().0 as u32 == BPF_FS_MAGIC);
    if !on_bpffs {
        return Err("it is not on bpffs".into());
    }
    Ok(())
}

/// The pid of the process holding the lock on directory `path`, from
/// `/proc/locks` (a lock, unlike a pid file, dies with its process).
pub fn lock_holder(path: &Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.st_dev();
    let wanted = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.st_ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&wanted.as_str()))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
}

/// Every interface directory under `root`: `(netns inode, name, path)`.
pub fn list(root: &Path) -> Vec<(u64, String, PathBuf)> {
    let mut found = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(root) else {
        return found;
    };
    for namespace in namespaces.flatten() {
        let name = namespace.file_name().to_string_lossy().into_owned();
        let Some(netns) = name.strip_prefix("net").and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(interfaces) = std::fs::read_dir(namespace.path()) else {
            continue;
        };
        for interface in interfaces.flatten() {
            found.push((
                netns,
                interface.file_name().to_string_lossy().into_owned(),
                interface.path(),
            ));
        }
    }
    found.sort();
    found
}
