//! The kernel side of xdpstat: the embedded XDP program loaded, attached
//! and read back ([`datapath`]), the source tables seen from user space
//! ([`tables`]), and what xdpstat needs of the kernel and the process.

pub mod attach;
pub(crate) mod bpf_sys;
pub(crate) mod compacted;
pub mod datapath;
pub(crate) mod diagnose;
pub(crate) mod ethtool;
pub mod ifname;
pub(crate) mod mapped;
pub mod memory;
pub(crate) mod meta;
pub(crate) mod netlink;
pub(crate) mod persist;
pub mod pins;
pub mod privilege;
pub(crate) mod rulemaps;
pub(crate) mod sections;
pub mod tables;
