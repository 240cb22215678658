//! The bpf(2) uses aya cannot do for xdpstat: wait until no XDP program
//! still uses a table entry it looked up before (an RCU grace period), find
//! this process's own link to a program and ask it which interface it is on
//! (aya's `LinkInfo` does not say, and listing every link on the host needs
//! CAP_SYS_ADMIN, which xdpstat does not), and pin a link aya does not own
//! or open one by id.
//!
//! The wait is an update of an array of maps. aya 0.14 can update one
//! (`ArrayOfMaps::set`) but not create one outside a loaded object (the
//! map-in-map constructor is crate-private), and aya-ebpf 0.2 cannot
//! declare one in the XDP program, so the two maps are created here.

use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The `map_create` member of `union bpf_attr`, up to `inner_map_fd`.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

/// The element-command member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a `bpf_attr` prefix laid out for `command`; every
    // pointer in it refers to memory the caller keeps alive for the call.
    let result = unsafe { libc::syscall(libc::SYS_bpf, command, attr as *mut T, size_of::<T>()) };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// The `info` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_link_info` up to the XDP member of its union, which starts
/// at byte 16 (the union is 8-byte aligned), with room for the rest.
#[repr(C)]
#[derive(Default)]
struct LinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    /// `xdp.ifindex` or `tcx.ifindex`: 0 once the interface is gone.
    xdp_ifindex: u32,
    _rest: [u32; 11],
}

/// A descriptor of this process's BPF link to program `program_id`, if it
/// holds one (an XDP attachment through netlink has none). Found among the
/// process's own descriptors by their `/proc/self/fdinfo` (`prog_id:`), and
/// duplicated: the caller must drop it before detaching, since an open
/// descriptor keeps a link attached.
pub fn own_link(program_id: u32) -> Option<OwnedFd> {
    let wanted = format!("prog_id:\t{program_id}");
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let is_link = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf_link");
        if !is_link {
            continue;
        }
        let name = entry.file_name();
        let Ok(info) =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", name.to_string_lossy()))
        else {
            continue;
        };
        if !info.lines().any(|line| line == wanted) {
            continue;
        }
        let fd: i32 = name.to_string_lossy().parse().ok()?;
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor this process holds; the
        // new descriptor is ours.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return None;
        }
        // SAFETY: a fresh descriptor from fcntl, owned from here on.
        return Some(unsafe { OwnedFd::from_raw_fd(dup) });
    }
    None
}

/// `link_type` of an XDP link and of a tcx link.
pub const LINK_TYPE_XDP: u32 = 6;
pub const LINK_TYPE_TCX: u32 = 11;

/// What the kernel says of a BPF link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    /// The interface an XDP or tcx link is attached to: 0 once the
    /// interface is gone (the kernel detaches the link then). Both kinds
    /// keep the index first in their member of the info's union.
    pub ifindex: u32,
}

/// The kernel's facts about the link behind `link`.
pub fn link_facts(link: BorrowedFd<'_>) -> io::Result<LinkFacts> {
    let mut info = LinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: size_of::<LinkInfo>() as u32,
        info: &raw mut info as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(LinkFacts {
        link_type: info.link_type,
        id: info.id,
        prog_id: info.prog_id,
        ifindex: info.xdp_ifindex,
    })
}

/// The interface index the XDP or tcx link behind `link` is attached to:
/// `None` once the interface is gone.
pub fn link_ifindex(link: BorrowedFd<'_>) -> io::Result<Option<u32>> {
    let ifindex = link_facts(link)?.ifindex;
    Ok((ifindex != 0).then_some(ifindex))
}

/// The `obj_pin` / `obj_get` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))
}

/// Pins the BPF object behind `fd` (a link here) at `path` on bpffs.
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// Opens the BPF object pinned at `path`.
pub fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        ..ObjAttr::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Opens the BPF link with kernel id `id` (needs CAP_SYS_ADMIN).
pub fn link_by_id(id: u32) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct IdAttr {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut attr = IdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    let fd = bpf(BPF_LINK_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: BPF_LINK_GET_FD_BY_ID returned a new file descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn create_map(attr: &mut MapCreateAttr) -> io::Result<OwnedFd> {
    let fd = bpf(BPF_MAP_CREATE, attr)?;
    // SAFETY: BPF_MAP_CREATE returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits for an RCU grace period: once [`Grace::wait`] returns, every XDP
/// program run that started before the call has finished.
///
/// The kernel guarantee relied on: after updating an element of an array
/// or hash of maps, `bpf(BPF_MAP_UPDATE_ELEM)` calls `synchronize_rcu()`
/// before it returns (`maybe_wait_bpf_programs()` in kernel/bpf/syscall.c,
/// since Linux 5.0), so that user space knows no program still uses the old
/// inner map. XDP programs run inside RCU read-side critical sections (the
/// driver's NAPI poll runs with bottom halves off, which RCU waits for since
/// Linux 4.20; BPF_PROG_TEST_RUN takes `rcu_read_lock()`), so the wait
/// covers every program run that could have seen an entry before it was
/// marked draining. `wait` updates a one-entry array of maps that exists
/// only for that.
pub struct Grace {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl Grace {
    pub fn new() -> io::Result<Self> {
        let inner = create_map(&mut MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            ..MapCreateAttr::default()
        })?;
        let outer = create_map(&mut MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd: inner.as_raw_fd() as u32,
            ..MapCreateAttr::default()
        })?;
        Ok(Self { outer, inner })
    }

    /// Returns after a grace period.
    pub fn wait(&self) -> io::Result<()> {
        let key = 0u32;
        let value = self.inner.as_raw_fd() as u32;
        let mut attr = ElemAttr {
            map_fd: self.outer.as_raw_fd() as u32,
            key: &raw const key as u64,
            value: &raw const value as u64,
            ..ElemAttr::default()
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }
}
