//! Traffic kinds: what the datapath reads after the IP header (protocol,
//! ports, TCP flags, fragments) and the slots it counts them in, shared by
//! the program that counts and the reader that reports.

/// The slots of `CpuState::kinds`: one per protocol, then fragments and
/// TCP SYNs (each packet is in exactly one protocol slot, and may also be
/// in the last two).
pub mod slot {
    pub const TCP: usize = 0;
    pub const UDP: usize = 1;
    pub const ICMP: usize = 2;
    pub const ICMPV6: usize = 3;
    pub const OTHER: usize = 4;
    /// Every fragment of a fragmented packet, the first included.
    pub const FRAGMENTS: usize = 5;
    /// TCP with SYN set and ACK clear: connection attempts.
    pub const TCP_SYN: usize = 6;
    /// Slots in all.
    pub const KINDS: usize = 7;
    /// Slots that are protocols.
    pub const PROTOCOLS: usize = 5;
}

/// The protocols a source's packets are counted under (ICMP of either
/// family is one): see `V4Entry::protocol` and `MIXED_V4_MAP`.
pub mod source {
    pub const TCP: usize = 0;
    pub const UDP: usize = 1;
    pub const ICMP: usize = 2;
    pub const OTHER: usize = 3;
    /// Protocols in all.
    pub const PROTOCOLS: usize = 4;

    /// The source protocol of a packet in protocol slot `slot`.
    #[inline(always)]
    pub const fn of_slot(slot: usize) -> usize {
        match slot {
            super::slot::TCP => TCP,
            super::slot::UDP => UDP,
            super::slot::ICMP | super::slot::ICMPV6 => ICMP,
            _ => OTHER,
        }
    }
}

/// Report names of the source protocols, in [`source`] order.
pub const SOURCE_PROTOCOL_NAMES: [&str; source::PROTOCOLS] = ["tcp", "udp", "icmp", "other"];

/// Report names of the protocol slots, in slot order.
pub const PROTOCOL_NAMES: [&str; slot::PROTOCOLS] = ["tcp", "udp", "icmp", "icmpv6", "other"];

/// IANA protocol numbers the datapath tells apart.
pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// The protocol slot of IANA protocol number `number`, whichever the
/// family that carries it.
#[inline(always)]
pub const fn slot_of(number: u8) -> usize {
    match number {
        protocol::TCP => slot::TCP,
        protocol::UDP => slot::UDP,
        protocol::ICMP => slot::ICMP,
        protocol::ICMPV6 => slot::ICMPV6,
        _ => slot::OTHER,
    }
}

/// The sides of the port counters: which port of which protocol a row of
/// [`PORTS_MAP`] counts. UDP's source port is the reflection side (a flood
/// of DNS answers comes from port 53).
pub mod side {
    pub const TCP_DST: u32 = 0;
    pub const UDP_DST: u32 = 1;
    pub const UDP_SRC: u32 = 2;
    /// Sides in all.
    pub const SIDES: u32 = 3;
}

/// Ports on one side.
pub const PORTS: u32 = 65_536;

/// Memory-mappable array of `Counter`: a section of [`side::SIDES`] x
/// [`PORTS`] for each possible CPU, packets and bytes per port at
/// `cpu * SIDES * PORTS + side * PORTS + port`. Exact: each CPU adds to
/// its own section with plain adds, user space sums them by walking
/// memory (a per-CPU map would cost a system call per 2,048 ports).
pub const PORTS_MAP: &str = "PORTS";

/// The most IPv6 extension headers the datapath walks to find a packet's
/// protocol; a packet with more is protocol `other`.
pub const MAX_EXTENSION_HEADERS: usize = 6;
