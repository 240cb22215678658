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

/// Name of the same program built with XDP multi-buffer support, for
/// interfaces whose MTU needs it. It counts bytes with
/// `bpf_xdp_get_buff_len`; the plain program uses `data_end - data`, which is
/// the whole frame whenever a program without frags support may attach.
pub const FRAGS_PROGRAM_NAME: &str = "xdpstat_frags";

/// Hash: IPv4 source address (network byte order) -> its slot.
pub const INDEX_V4_MAP: &str = "INDEX_V4";
/// Hash: IPv6 source address (network byte order) -> its slot.
pub const INDEX_V6_MAP: &str = "INDEX_V6";
/// Memory-mappable array: slot -> [`SlotSource`], the address a slot counts.
pub const SLOT_SOURCES_MAP: &str = "SLOT_SOURCES";
/// Memory-mappable array of [`Counter`]s, one run of `slots` entries per
/// possible CPU: CPU `c` counts slot `s` at index `c * slots + s`, so no two
/// CPUs ever write the same counter and user space reads them all with
/// plain loads.
pub const SLOT_COUNTERS_MAP: &str = "SLOT_COUNTERS";
/// Queue of slots user space has retired and cleared, ready for new sources.
pub const FREE_SLOTS_MAP: &str = "FREE_SLOTS";
/// Array with one `u64`: the first slot never handed out (slots below it
/// are in use or in the free queue).
pub const NEXT_SLOT_MAP: &str = "NEXT_SLOT";
/// Per-CPU array with one [`CpuState`].
pub const CPU_STATE_MAP: &str = "CPU_STATE";
/// Name of the global holding the number of slots (set at load time).
pub const SLOTS_GLOBAL: &str = "SLOTS";

/// Address family tags in [`SlotSource::family`].
pub const FAMILY_V4: u32 = 4;
pub const FAMILY_V6: u32 = 6;

/// The source a slot counts: an IPv4 address in the first four bytes of
/// `address`, or an IPv6 address, as on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotSource {
    pub address: [u8; 16],
    pub family: u32,
    pub _pad: u32,
}

/// Slots (sources counted at once, both families together) unless
/// `--max-sources` says otherwise; the loader sizes every slot map from it.
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

    /// This counter less `other`, each field floored at zero.
    pub fn saturating_sub(&self, other: &Counter) -> Counter {
        Counter {
            packets: self.packets.saturating_sub(other.packets),
            bytes: self.bytes.saturating_sub(other.bytes),
        }
    }
}

/// Everything one CPU counts outside the source maps, in one per-CPU array
/// slot so that a packet costs one (inlined) array lookup on top of parsing.
///
/// A *run* is a sequence of consecutive packets from one source on one CPU.
/// While packets keep coming from the run's source, the datapath only bumps
/// the run's counter; the first packet from another source *settles* the run
/// (adds it to the source's map entry and to `settled_*`) and starts a new
/// one. A run counter with no packets means no run.
///
/// Per family, the packets the CPU has seen are `settled + run`. Settled
/// packets that no slot holds (every slot was taken, or user space retired
/// the slot) are the family's `unattributed` count, which user space
/// computes as `settled` minus what the family's slots hold.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuState {
    /// Frames that are neither IPv4 nor IPv6 (ARP, LLDP, a third VLAN tag, ...).
    pub non_ip: Counter,
    /// IPv4/IPv6 ethertype with a header that fails the checks, or a frame
    /// that ends inside the Ethernet header or a VLAN tag.
    pub malformed: Counter,
    /// IPv4 packets of settled runs.
    pub settled_v4: Counter,
    /// IPv6 packets of settled runs.
    pub settled_v6: Counter,
    /// The current IPv4 run.
    pub run_v4: Counter,
    /// The current IPv6 run.
    pub run_v6: Counter,
    /// Source of the current IPv6 run.
    pub run_v6_source: Ipv6Key,
    /// Source of the current IPv4 run.
    pub run_v4_source: Ipv4Key,
    /// Explicit tail padding, so the layout has no bytes Rust leaves undefined.
    pub _pad: [u8; 4],
}

#[cfg(feature = "user")]
// SAFETY: `Counter` is `#[repr(C)]`, two `u64`s, no padding, any bit pattern valid.
unsafe impl aya::Pod for Counter {}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, 16 bytes and two `u32`s, no padding, any bit pattern valid.
unsafe impl aya::Pod for SlotSource {}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, 6 `Counter`s then byte arrays of 16, 4 and 4 bytes:
// no implicit padding (checked by `cpu_state_has_no_padding`), any bit
// pattern valid.
unsafe impl aya::Pod for CpuState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_state_has_no_padding() {
        assert_eq!(size_of::<CpuState>(), 6 * size_of::<Counter>() + 16 + 4 + 4);
        assert_eq!(size_of::<SlotSource>(), 16 + 4 + 4);
    }
}
