//! What the XDP program and its loader must agree on: map names, key and
//! value layouts, and the slots of the class counter array.
//!
//! Both sides compile this crate, so a layout change is a compile-time change
//! on both, never a silent mismatch at run time. Types are `#[repr(C)]` and
//! free of padding so the kernel's bytes and Rust's agree.
#![no_std]

pub mod capture;
pub mod kinds;
pub mod rules;
pub mod sketch;

/// Name of the XDP program in the object file (and, truncated to 15 bytes,
/// the name the kernel and `ip link` show).
pub const PROGRAM_NAME: &str = "xdpstat";

/// Name of the same program built with XDP multi-buffer support, for
/// interfaces whose MTU needs it. It counts bytes with
/// `bpf_xdp_get_buff_len`; the plain program uses `data_end - data`, which is
/// the whole frame whenever a program without frags support may attach.
pub const FRAGS_PROGRAM_NAME: &str = "xdpstat_frags";

/// Name of the build that counts at tc ingress through a tcx link
/// (`--hook tcx`, Linux 6.6), beside another program on the XDP hook.
pub const TCX_PROGRAM_NAME: &str = "xdpstat_tcx";

/// Name of the build `xdpstat replay` runs captures through with
/// BPF_PROG_TEST_RUN: the same counting rules, with each frame's length on
/// the wire handed in as [`REPLAY_METADATA`] bytes of XDP metadata, since a
/// capture may hold only part of a frame (a snap length) and the kernel
/// runs frames of at most about 70 KB (GRO and BIG TCP captures hold up to
/// 256 KiB).
pub const REPLAY_PROGRAM_NAME: &str = "xdpstat_replay";

/// Name of the build that copies the entries of a table that hold a source,
/// and only those, into [`COMPACTED_MAP`] for user space to read (see
/// [`compact`]). Never attached: user space runs it with BPF_PROG_TEST_RUN.
pub const COMPACT_PROGRAM_NAME: &str = "xdpstat_compact";

/// Memory-mappable array of [`compact::Compacted`]: where
/// [`COMPACT_PROGRAM_NAME`] copies entries to.
pub const COMPACTED_MAP: &str = "COMPACTED";
/// Memory-mappable array of one [`compact::Control`]: which table the
/// compaction reads, from where to where, and how far it got.
pub const COMPACT_CONTROL_MAP: &str = "COMPACT_CONTROL";

/// Reading a table through the kernel: user space names a range of a
/// table's entries in [`Control`] and runs [`COMPACT_PROGRAM_NAME`], which
/// walks the range and copies each entry that holds a source (state
/// `READY`) into [`COMPACTED_MAP`], its index in place of its state word.
/// User space then reads only those, from an array small enough to stay
/// mapped, instead of mapping and walking the whole table.
pub mod compact {
    /// Entries one run of the program looks at: the bound of its loop,
    /// which the verifier walks once per step.
    pub const STEP: u32 = 256;
    /// Entries [`super::COMPACTED_MAP`] holds. One call of the program (its
    /// runs repeated) may look at more entries than this; where the array
    /// fills up first, the program stops where it is, and the next call
    /// goes on from there.
    pub const COMPACTED_ENTRIES: u32 = 16 * 1024;
    /// A copied entry: word 0 is the entry's index, the others the
    /// entry's own words from word 1 on (an IPv4 entry's three, an IPv6
    /// entry's five).
    pub type Compacted = [u64; 6];
    /// Which table: [`Control::family`].
    pub const V4: u64 = 4;
    pub const V6: u64 = 6;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Control {
        /// The next entry to look at; the program moves it on.
        pub next: u64,
        /// One past the last entry of the range.
        pub end: u64,
        /// Entries copied so far; the program moves it on, user space sets
        /// it back to 0 once it has read them.
        pub written: u64,
        /// [`V4`] or [`V6`].
        pub family: u64,
    }
}

/// Bytes of XDP metadata before a replayed frame: its wire length, then
/// its capture time in nanoseconds (the clock of rate limits in a
/// replay), two u64 in the host's byte order.
pub const REPLAY_METADATA: usize = 16;

/// The [`REPLAY_METADATA`] bytes for a frame `wire_len` bytes long on the
/// wire, captured at `time_ns`.
pub fn replay_metadata(wire_len: u64, time_ns: u64) -> [u8; REPLAY_METADATA] {
    let mut metadata = [0; REPLAY_METADATA];
    metadata[..8].copy_from_slice(&wire_len.to_ne_bytes());
    metadata[8..].copy_from_slice(&time_ns.to_ne_bytes());
    metadata
}

/// The wire length and capture time that [`replay_metadata`] wrote.
pub fn read_replay_metadata(metadata: &[u8; REPLAY_METADATA]) -> (u64, u64) {
    let (wire_len, time_ns) = metadata.split_at(8);
    let word = |bytes: &[u8]| {
        let mut word = [0; 8];
        word.copy_from_slice(bytes);
        u64::from_ne_bytes(word)
    };
    (word(wire_len), word(time_ns))
}

/// Memory-mappable array of [`V4Entry`]: the IPv4 source table, an
/// open-addressing hash table the datapath probes and user space walks.
pub const SOURCES_V4_MAP: &str = "SOURCES_V4";
/// Memory-mappable array of [`V6Entry`]: the IPv6 source table.
pub const SOURCES_V6_MAP: &str = "SOURCES_V6";
/// Memory-mappable arrays of `u64`, one per 4 KiB page of the matching
/// table, whose bytes are flags (see [`page_flag`]): user space skips the
/// pages a table never used, and the rows of pages no rule acted on.
pub const PAGES_V4_MAP: &str = "PAGES_V4";
pub const PAGES_V6_MAP: &str = "PAGES_V6";

/// The bytes of a page's flag word, each set to 1 on its own by any CPU (a
/// byte store leaves the others as they are) and never cleared.
pub mod page_flag {
    /// An entry on the page was claimed.
    pub const USED: usize = 0;
    /// A rule's verdict was counted in the row of an entry on the page.
    pub const ROWS: usize = 1;
}
/// Global: entries in each source table (set at load time).
pub const TABLE_ENTRIES_GLOBAL: &str = "TABLE_ENTRIES";
/// Global: the secret seed of the table hash (set at load time, so that
/// nobody can pick source addresses that collide).
pub const HASH_SEED_GLOBAL: &str = "HASH_SEED";

/// Entries the datapath looks at for one source before giving up (the
/// packet is then unattributed).
pub const MAX_PROBES: u32 = 32;
/// Bytes in one page of a table, for [`PAGES_V4_MAP`] and [`PAGES_V6_MAP`].
pub const TABLE_PAGE: usize = 4096;

/// The state word of a table entry: a `u32` at offset 0, beside the
/// remembered rule (user space reads and clears the two as one word), so
/// that the IPv4 entry has room for its source's first protocol in 32
/// bytes.
pub mod entry_state {
    /// Never used: a probe for a missing source stops here.
    pub const EMPTY: u32 = 0;
    /// Being filled in by one CPU (for nanoseconds).
    pub const CLAIMED: u32 = 1;
    /// Counting its source.
    pub const READY: u32 = 2;
    /// Being retired by user space: probes pass it by, nothing counts in it.
    pub const DRAINING: u32 = 3;
    /// Retired and cleared: reusable, but probes go on past it.
    pub const RETIRED: u32 = 4;
}

/// Entries in each source table for `max_sources` sources: twice as many,
/// so that with every planned source in, probes stay short and one in
/// thousands of new sources at most finds no entry within reach.
pub const fn table_entries(max_sources: u32) -> u32 {
    let entries = 2 * max_sources as u64;
    let entries = if entries < MAX_PROBES as u64 {
        MAX_PROBES as u64
    } else {
        entries
    };
    if entries > u32::MAX as u64 {
        u32::MAX
    } else {
        entries as u32
    }
}

/// Where probing for a source starts: its hash scaled onto the table.
pub const fn home(hash: u64, entries: u32) -> u32 {
    (((hash >> 32) * entries as u64) >> 32) as u32
}

/// A 64-bit mix (the murmur3 finaliser) of `value` under `seed`.
pub const fn mix(value: u64, seed: u64) -> u64 {
    let mut x = value ^ seed;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// One IPv4 source in the table: 32 bytes, two to a cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V4Entry {
    /// One of [`entry_state`].
    pub state: u32,
    /// The rule the source matched, remembered (see `rules::cached`).
    pub rule: u32,
    /// The address as on the wire.
    pub address: Ipv4Key,
    /// The protocol of the source's first packet ([`kinds::source`]),
    /// set when the entry is claimed: its packets of that protocol are
    /// `counter`'s less what [`MIXED_V4_MAP`] holds of the others.
    pub protocol: u8,
    /// Non-zero once a packet of another protocol was counted: only then
    /// does the entry's row of [`MIXED_V4_MAP`] hold anything.
    pub mixed: u8,
    pub _pad: [u8; 2],
    /// Updated with atomic adds by every CPU that counts the source.
    pub counter: Counter,
}

/// One IPv6 source in the table: 64 bytes, one cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V6Entry {
    /// One of [`entry_state`].
    pub state: u32,
    /// The rule the source matched, remembered (see `rules::cached`).
    pub rule: u32,
    /// The address as on the wire.
    pub address: Ipv6Key,
    /// Updated with atomic adds by every CPU that counts the source.
    pub counter: Counter,
    /// As [`V4Entry::protocol`] and [`V4Entry::mixed`].
    pub protocol: u8,
    pub mixed: u8,
    pub _pad: [u8; 2],
    pub _pad2: [u32; 5],
}

/// Memory-mappable arrays of `[u64; kinds::source::PROTOCOLS]` beside each
/// table, entry for entry: a source's packets of each protocol but its
/// first (see [`V4Entry::protocol`]). A source that sends one protocol, as
/// most do, never touches its row.
pub const MIXED_V4_MAP: &str = "MIXED_V4";
pub const MIXED_V6_MAP: &str = "MIXED_V6";

/// Per-CPU array with one [`CpuState`].
pub const CPU_STATE_MAP: &str = "CPU_STATE";

/// Sources each table is planned for unless `--max-sources` says
/// otherwise; the loader sizes the tables from it.
pub const DEFAULT_MAX_SOURCES: u32 = 65_536;

/// An IPv4 address as it is on the wire.
pub type Ipv4Key = [u8; 4];
/// An IPv6 address as it is on the wire.
pub type Ipv6Key = [u8; 16];

/// Packets and bytes, 64-bit each.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    /// Adds another counter to this one (wrapping, as the kernel side does).
    #[inline(always)]
    pub fn add(&mut self, other: &Counter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }

    /// What was counted since `before`. Counters never go backwards once
    /// user space has made reads monotonic, so a decrease here is no change
    /// (never the whole count again, which would show a source's lifetime
    /// as one interval's traffic).
    pub fn since(&self, before: &Counter) -> Counter {
        self.saturating_sub(before)
    }

    /// Field by field, the larger of this counter and `other`.
    #[inline(always)]
    pub fn at_least(&self, other: &Counter) -> Counter {
        Counter {
            packets: if self.packets > other.packets {
                self.packets
            } else {
                other.packets
            },
            bytes: if self.bytes > other.bytes {
                self.bytes
            } else {
                other.bytes
            },
        }
    }

    /// Field by field, the smaller of this counter and `other`.
    #[inline(always)]
    pub fn at_most(&self, other: &Counter) -> Counter {
        Counter {
            packets: if self.packets < other.packets {
                self.packets
            } else {
                other.packets
            },
            bytes: if self.bytes < other.bytes {
                self.bytes
            } else {
                other.bytes
            },
        }
    }

    /// This counter less `other`, each field floored at zero.
    pub fn saturating_sub(&self, other: &Counter) -> Counter {
        Counter {
            packets: self.packets.saturating_sub(other.packets),
            bytes: self.bytes.saturating_sub(other.bytes),
        }
    }
}

/// Everything one CPU counts outside the source tables, in one per-CPU
/// array slot so that a packet costs one (inlined) array lookup on top of
/// parsing.
///
/// A *run* is a sequence of consecutive packets from one source on one CPU.
/// A run begins by finding (or claiming) its source's table entry and
/// remembering its index; while packets keep coming from the run's source,
/// the datapath only bumps the run's counter; the first packet from another
/// source starts a new run and *settles* the old one into its entry. A run
/// that found no entry within reach ([`NO_ENTRY`]) is unattributed from its
/// first packet and settles into `unattributed_*`. So a source is in a read
/// exactly when a table entry holds it. A run counter with no packets means
/// no run.
///
/// A reader copies the slot while the datapath may be switching runs (the
/// kernel copies a per-CPU value one long at a time, in address order). So
/// the run sources and entries come before the run counters, and a switch
/// zeroes the counter, then writes the source and entry, then the new
/// counter: a copy sees no run, or the old run whole, or the new run whole,
/// or the old source with the new run's first packet (which the old
/// source's entry outgrows as soon as its run settles), never the old run's
/// count under the new source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuState {
    /// Frames that are neither IPv4 nor IPv6 (ARP, LLDP, a third VLAN tag, ...).
    pub non_ip: Counter,
    /// IPv4/IPv6 ethertype with a header that fails the checks, or a frame
    /// that ends inside the Ethernet header or a VLAN tag.
    pub malformed: Counter,
    /// IPv4 runs no table entry could take.
    pub unattributed_v4: Counter,
    /// IPv6 runs no table entry could take.
    pub unattributed_v6: Counter,
    /// Source of the current IPv6 run.
    pub run_v6_source: Ipv6Key,
    /// Source of the current IPv4 run.
    pub run_v4_source: Ipv4Key,
    /// Index of the IPv4 table entry the run settles into, or [`NO_ENTRY`]:
    /// the run found no entry when it began and is unattributed.
    pub run_v4_entry: u32,
    /// Index of the IPv6 table entry the run settles into, or [`NO_ENTRY`].
    pub run_v6_entry: u32,
    /// The protocol of the current IPv4 and IPv6 run, as
    /// [`kinds::source`] numbers it: a run is one source's packets of one
    /// protocol, so it settles as its entry's first protocol or into one
    /// counter of the entry's row of the mixed array.
    pub run_v4_protocol: u16,
    pub run_v6_protocol: u16,
    /// The current IPv4 run.
    pub run_v4: Counter,
    /// The current IPv6 run.
    pub run_v6: Counter,
    /// Packets under each verdict but `passed`, indexed by
    /// [`rules::verdict`], counted per packet (so exact whatever the runs).
    pub acted: [Counter; rules::verdict::ACTED],
    /// Packets a limit rule judged by its shared bucket: their source had
    /// no row in the ruled table (it was full).
    pub shared_bucket: Counter,
    /// IP packets by kind, indexed by [`kinds::slot`]: every IP packet in
    /// one protocol slot, fragments and TCP SYNs also in theirs.
    pub kinds: [Counter; kinds::slot::KINDS],
    /// Port runs, as the source runs: the TCP destination port of the
    /// current TCP run, and the UDP ports of the current UDP run (source
    /// port in the high 16 bits, destination port in the low 16); a run
    /// settles into this CPU's section of the port counters when a packet
    /// with other ports comes. Keys before counters, as for sources.
    pub run_tcp_port: u32,
    pub run_udp_ports: u32,
    pub run_tcp: Counter,
    pub run_udp: Counter,
    /// The packet being counted and judged, as [`rules::transport_word`]
    /// packs it (its source's protocol among the rest): the table and the
    /// rules read it from here rather than from the parser's result, so
    /// that the verifier sees one unknown word, not every shape of packet
    /// the parser tells apart.
    pub transport: u64,
    /// The packet's verdict (of [`capture::verdict`]) and the index of the
    /// rule behind it, as the rules left them for the capture (see
    /// [`capture`]), read back as one word.
    pub judged: u64,
    /// This CPU's capture budget: when its bucket is full again (see
    /// `rules::conform_cost`).
    pub capture_tat: u64,
    /// Packets the capture would have copied but for the budget or a full
    /// ring.
    pub capture_skipped: Counter,
    /// The frame being judged, for the capture, as plain words (the
    /// capture reads them back after the rules, so the verifier sees one
    /// state there, not every way through the rules): where its bytes
    /// are, how many are linear, its wire length, its packets and bytes,
    /// and its time (0: the kernel's clock, read when it is copied).
    pub frame_start: u64,
    pub frame_linear: u64,
    pub frame_wire: u64,
    pub frame_packets: u64,
    pub frame_bytes: u64,
    pub frame_time: u64,
}

/// A run's entry index when no table entry could take its source.
pub const NO_ENTRY: u32 = u32::MAX;

#[cfg(feature = "user")]
// SAFETY: `Counter` is `#[repr(C)]`, two `u64`s, no padding, any bit pattern valid.
unsafe impl aya::Pod for Counter {}

/// One-entry array saying what a loaded datapath is and where it counts:
/// written by user space, never read by the programs. `xdpstat status`
/// finds every running datapath by it, and a persisted one keeps in it
/// what user space would otherwise lose on exit (retired counts).
pub const META_MAP: &str = "XDPSTAT_META";

/// The layout of a persisted datapath's pinned state that this build reads
/// and writes: the table entries, [`CpuState`], [`Meta`] and the set of
/// maps. Bump it with any change to them; the kernel checks only map types
/// and sizes, so this number is what refuses pins another build made.
pub const PIN_LAYOUT: u32 = 8;

/// How a datapath is attached, as [`Meta::attach`] records it.
pub mod meta_attach {
    pub const XDP_NATIVE: u32 = 1;
    pub const XDP_GENERIC: u32 = 2;
    pub const XDP_OFFLOAD: u32 = 3;
    pub const TCX: u32 = 4;
}

/// What [`META_MAP`] holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// [`PIN_LAYOUT`] once the datapath is attached; 0 while it is being
    /// set up (pins left with 0 are from an xdpstat that died doing so).
    pub layout: u32,
    /// One of [`meta_attach`].
    pub attach: u32,
    /// Non-zero when the XDP program is the multi-buffer build.
    pub multi_buffer: u32,
    /// Non-zero when the datapath is pinned and outlives its process.
    pub persisted: u32,
    pub max_sources: u32,
    pub table_entries: u32,
    pub ifindex: u32,
    /// The kernel's id of the BPF link that attaches it.
    pub link_id: u32,
    /// Kernel ids of the source tables and their page flags, for readers
    /// that find this map by id.
    pub sources_v4_id: u32,
    pub sources_v6_id: u32,
    pub pages_v4_id: u32,
    pub pages_v6_id: u32,
    /// The prefix lengths the sketches count under.
    pub prefix_v4: u32,
    pub prefix_v6: u32,
    pub hash_seed: u64,
    /// Inode of the network namespace the interface is in.
    pub netns: u64,
    /// When counting began, in nanoseconds since the Unix epoch.
    pub since_ns: u64,
    /// Everything entries retired so far had counted.
    pub retired_v4: Counter,
    pub retired_v6: Counter,
    /// Non-zero while a batch of retired entries is being cleared: their
    /// counts are already in `retired_*`, so entries still draining must
    /// not be added again by whoever finishes the batch.
    pub retiring: u64,
    /// NUL-padded interface name.
    pub interface: [u8; 16],
    /// NUL-padded version of the xdpstat that attached the running program.
    pub version: [u8; 32],
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, fourteen u32 then u64s, `Counter`s and byte arrays
// of 16 and 32: no implicit padding (checked by `meta_has_no_padding`),
// any bit pattern valid.
unsafe impl aya::Pod for Meta {}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, u64, 4 bytes, u32, two u64: no padding, any bit pattern valid.
unsafe impl aya::Pod for V4Entry {}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, u64, 16 bytes, two u64, six u32: no padding, any bit pattern valid.
unsafe impl aya::Pod for V6Entry {}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, 20 `Counter`s, byte arrays of 16 and 4 bytes, five
// u32: no implicit padding (checked by `cpu_state_has_no_padding`), any bit
// pattern valid.
unsafe impl aya::Pod for CpuState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_metadata_reads_back_as_written() {
        for (wire_len, time_ns) in [(0, 0), (64, 1_795_000_000_000_000_000), (u64::MAX, 1)] {
            let metadata = replay_metadata(wire_len, time_ns);
            assert_eq!(read_replay_metadata(&metadata), (wire_len, time_ns));
        }
    }

    #[test]
    fn homes_spread_over_the_whole_table_and_stay_inside_it() {
        let entries = table_entries(1000);
        assert_eq!(entries, 2000);
        let mut hit = [false; 2000];
        for address in 0..40_000u64 {
            let home = home(mix(address, 0x5eed), entries);
            assert!(home < entries);
            hit[home as usize] = true;
        }
        assert!(hit.iter().all(|&h| h), "40,000 sources reach every entry");
        assert_eq!(table_entries(1), MAX_PROBES);
        assert_eq!(table_entries(u32::MAX), u32::MAX);
    }

    #[test]
    fn an_address_hashes_inside_the_table_whichever_way_a_host_reads_it() {
        // The datapath hashes the wire bytes read as a native integer: a
        // big-endian host gets another number than a little-endian one, and
        // either must land inside the table (the hash is the host's own, so
        // only that matters).
        let entries = table_entries(1000);
        for address in [[198u8, 18, 0, 1], [255, 255, 255, 255], [0, 0, 0, 0]] {
            for read in [u32::from_le_bytes, u32::from_be_bytes] {
                let hash = mix(u64::from(read(address)), 0x5eed);
                assert!(home(hash, entries) < entries);
            }
        }
        assert_ne!(
            u32::from_le_bytes([198, 18, 0, 1]),
            u32::from_be_bytes([198, 18, 0, 1])
        );
    }

    #[test]
    fn cpu_state_has_no_padding() {
        assert_eq!(
            size_of::<CpuState>(),
            21 * size_of::<Counter>() + 16 + 4 + 5 * 4 + 8 + 8 * 8
        );
        assert_eq!(size_of::<V4Entry>(), 32);
        // The order a switch of runs relies on (see `CpuState`).
        assert!(
            core::mem::offset_of!(CpuState, run_v4_entry) < core::mem::offset_of!(CpuState, run_v4)
                && core::mem::offset_of!(CpuState, run_v6_protocol)
                    < core::mem::offset_of!(CpuState, run_v4)
                && core::mem::offset_of!(CpuState, run_v6_entry)
                    < core::mem::offset_of!(CpuState, run_v4)
                && core::mem::offset_of!(CpuState, run_v4)
                    < core::mem::offset_of!(CpuState, run_v6)
        );
        assert_eq!(
            size_of::<Meta>(),
            14 * 4 + 4 * 8 + 2 * size_of::<Counter>() + 16 + 32
        );
        assert_eq!(size_of::<V6Entry>(), 64);
        // The state word and the remembered rule share the first 8 bytes
        // (user space reads and clears them as one word); the first
        // protocol and the mixed flag share a word (see `tables.rs`).
        for (state, rule, protocol, mixed) in [
            (
                core::mem::offset_of!(V4Entry, state),
                core::mem::offset_of!(V4Entry, rule),
                core::mem::offset_of!(V4Entry, protocol),
                core::mem::offset_of!(V4Entry, mixed),
            ),
            (
                core::mem::offset_of!(V6Entry, state),
                core::mem::offset_of!(V6Entry, rule),
                core::mem::offset_of!(V6Entry, protocol),
                core::mem::offset_of!(V6Entry, mixed),
            ),
        ] {
            assert_eq!(protocol / 8, mixed / 8);
            assert_eq!((state, rule), (0, 4));
        }
    }
}
