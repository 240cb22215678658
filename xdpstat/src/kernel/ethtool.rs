//! What the ethtool ioctl says about an interface, for `xdpstat doctor`:
//! its driver, whether hardware LRO is on (it blocks native XDP on the
//! drivers that have it), and its channel (queue) counts.

use std::{io, os::fd::AsRawFd as _};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x3;
const ETHTOOL_GFLAGS: u32 = 0x25;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
/// `ETH_FLAG_LRO` in ETHTOOL_GFLAGS' answer.
const ETH_FLAG_LRO: u32 = 1 << 15;

/// `struct ethtool_drvinfo`.
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `struct ethtool_value`.
#[repr(C)]
struct Value {
    cmd: u32,
    data: u32,
}

/// `struct ethtool_channels`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Channels {
    /// ETHTOOL_GCHANNELS in a request.
    pub cmd: u32,
    pub max_rx: u32,
    pub max_tx: u32,
    pub max_other: u32,
    pub max_combined: u32,
    pub rx: u32,
    pub tx: u32,
    pub other: u32,
    pub combined: u32,
}

/// `struct ifreq` with the `ifr_data` member.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Runs one ethtool command on `interface`; `value` starts with its `cmd`.
fn ethtool<T>(interface: &str, value: &mut T) -> io::Result<()> {
    if interface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: a plain datagram socket, owned right away.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from socket(2).
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(socket) };
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: (value as *mut T).cast(),
        _pad: [0; 16],
    };
    request.name[..interface.len()].copy_from_slice(interface.as_bytes());
    // SAFETY: SIOCETHTOOL with an ifreq whose data points at a structure
    // of the command's layout, alive for the call.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut request) };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The driver's name.
pub fn driver(interface: &str) -> io::Result<String> {
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    ethtool(interface, &mut info)?;
    Ok(crate::kernel::meta::text(&info.driver))
}

/// Whether hardware LRO is on.
pub fn lro(interface: &str) -> io::Result<bool> {
    let mut value = Value {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    ethtool(interface, &mut value)?;
    Ok(value.data & ETH_FLAG_LRO != 0)
}

/// The channel counts (unsupported by many virtual devices: an error).
pub fn channels(interface: &str) -> io::Result<Channels> {
    let mut channels = Channels {
        cmd: ETHTOOL_GCHANNELS,
        ..Channels::default()
    };
    ethtool(interface, &mut channels)?;
    Ok(channels)
}
