//! What the datapath and the loader agree on about `--capture`: the ring
//! the copies go through, the record each is, and the verdicts by number.
//! A packet whose verdict is among the captured ones is copied (its first
//! `snaplen` bytes, with its time, wire length, verdict and the rule
//! behind it) while its CPU's budget lasts; one over the budget, or that
//! finds the ring full, is counted as skipped.

/// The BPF ring buffer of [`Header`]s, each followed by its bytes.
pub const CAPTURE_MAP: &str = "CAPTURE";
/// Its size in bytes (a power of two, a multiple of the page size).
pub const CAPTURE_RING_BYTES: u32 = 4 << 20;
/// Per-CPU scratch where a record is put together before it goes out.
pub const CAPTURE_SCRATCH_MAP: &str = "CAPTURE_SCRATCH";

/// The loader's globals (see the program's `maps`).
pub const VERDICTS_GLOBAL: &str = "CAPTURE_VERDICTS";
pub const SNAPLEN_GLOBAL: &str = "CAPTURE_SNAPLEN";
pub const INTERVAL_GLOBAL: &str = "CAPTURE_INTERVAL_NS";
pub const TOLERANCE_GLOBAL: &str = "CAPTURE_TOLERANCE_NS";

/// The most bytes of a packet a record holds.
pub const MAX_SNAPLEN: usize = 1024;

/// Verdicts as records and the loader's mask number them (bit `1 << n`).
pub mod verdict {
    pub const PASSED: u32 = 0;
    pub const DROPPED: u32 = 1;
    pub const LIMITED: u32 = 2;
    pub const WOULD_DROP: u32 = 3;
    pub const WOULD_LIMIT: u32 = 4;
    /// Their names, by number.
    pub const NAMES: [&str; 5] = ["passed", "dropped", "limited", "would_drop", "would_limit"];
}

/// Not judged (a frame with no source: non-IP, malformed): never copied.
pub const NOT_JUDGED: u32 = 31;

/// No rule decided (a passed packet no rule matched).
pub const NO_RULE: u32 = u32::MAX;

/// A record's head.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// The datapath's clock when it was judged (the kernel's monotonic
    /// clock live, the capture's in a replay).
    pub time_ns: u64,
    /// Bytes on the wire, and bytes that follow this head.
    pub wire_len: u32,
    pub cap_len: u32,
    /// The rule behind the verdict, as the rule maps index it (slot times
    /// `MAX_RULES` plus its index), or [`NO_RULE`].
    pub rule: u32,
    /// Of [`verdict`].
    pub verdict: u32,
}

/// A record put together: its head and room for the most bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scratch {
    pub header: Header,
    pub bytes: [u8; MAX_SNAPLEN],
}

/// The word the rules leave for the capture: the verdict in the low 8
/// bits, the rule above.
#[inline(always)]
pub const fn judged(verdict: u32, rule: u32) -> u64 {
    (verdict as u64) | (rule as u64) << 8
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, one u64 then four u32: no padding, any bit pattern valid.
unsafe impl aya::Pod for Header {}
