//! The one bpf(2) use aya cannot do for xdpstat: wait until no XDP program
//! still uses a table entry it looked up before (an RCU grace period).
//!
//! The wait is an update of an array of maps. aya 0.14 can update one
//! (`ArrayOfMaps::set`) but not create one outside a loaded object (the
//! map-in-map constructor is crate-private), and aya-ebpf 0.2 cannot
//! declare one in the XDP program, so the two maps are created here.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const BPF_MAP_CREATE: libc::c_long = 0;
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
