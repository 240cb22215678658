//! What the XDP program and its loader must agree on: map names, key and
//! value layouts, and the slots of the class counter array.
//!
//! Both sides compile this crate, so a layout change is a compile-time change
//! on both, never a silent mismatch at run time. Types are `#[repr(C)]` and
//! free of padding so the kernel's bytes and Rust's agree.
#![no_std]

/// Name of the XDP program in the object file (and, truncated to 15 bytes,
/// the name the kernel and `ip link` show).
pub const PROGRAM_NAME: &str = "xdpstat";

/// Per-CPU hash: IPv4 source address (network byte order) -> [`Counter`].
pub const SOURCES_V4_MAP: &str = "SOURCES_V4";
/// Per-CPU hash: IPv6 source address (network byte order) -> [`Counter`].
pub const SOURCES_V6_MAP: &str = "SOURCES_V6";
/// Per-CPU array of [`Counter`], indexed by [`ClassSlot`].
pub const CLASS_COUNTERS_MAP: &str = "CLASS_COUNTERS";

/// Capacity the object file declares for each source map; the loader
/// overrides it with `--max-sources` before the maps are created.
pub const DEFAULT_MAX_SOURCES: u32 = 65_536;

/// Key of the IPv4 source map: the address as it is on the wire.
pub type Ipv4Key = [u8; 4];
/// Key of the IPv6 source map: the address as it is on the wire.
pub type Ipv6Key = [u8; 16];

/// Packets and bytes, 64-bit each. One per CPU in every map, so the
/// datapath increments them without atomics and never loses an increment;
/// user space sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    /// Adds another counter to this one (wrapping, as the kernel side does).
    pub fn add(&mut self, other: &Counter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

/// Slots of [`CLASS_COUNTERS_MAP`]. The `ipv4` and `ipv6` class totals are
/// not stored: they are the sum of the source map plus the matching
/// `Unattributed*` slot, which keeps the hot path to one map update per
/// packet and makes totals and sources consistent by construction.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassSlot {
    /// Frames that are neither IPv4 nor IPv6 (ARP, LLDP, a third VLAN tag, ...).
    NonIp = 0,
    /// IPv4/IPv6 ethertype with a header that fails the checks, or a frame
    /// that ends inside the Ethernet header or a VLAN tag.
    Malformed = 1,
    /// IPv4 packets no source entry holds (the IPv4 source map was full).
    UnattributedV4 = 2,
    /// IPv6 packets no source entry holds (the IPv6 source map was full).
    UnattributedV6 = 3,
}

/// Number of slots in [`CLASS_COUNTERS_MAP`].
pub const CLASS_SLOTS: u32 = 4;

#[cfg(feature = "user")]
// SAFETY: `Counter` is `#[repr(C)]`, two `u64`s, no padding, any bit pattern valid.
unsafe impl aya::Pod for Counter {}
