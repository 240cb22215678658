//! What the datapath and the loader agree on about rules: the rule sets'
//! maps and values, the verdicts, and the rate limit's arithmetic (shared
//! so that the replay oracle and the tests run the very code the XDP
//! program runs).
//!
//! A rule set lives in one of two slots, each an LPM trie per family; the
//! one-word [`RULESET_MAP`] names the slot in force. A trie maps a prefix
//! to the head of its *chain* in [`CHAINS_MAP`]: the [`Node`]s of the
//! rules that may decide for a source under that prefix, in the order
//! they decide (the prefix's own rules, the one naming more of protocol,
//! ports and flags first, then file order; then those of the longest
//! prefix around it, and so on). A packet's verdict is the first node
//! whose protocol, ports and flags match it; a node that names none
//! matches every packet, and the loader ends the chain there. A reload fills the
//! other slot and then flips the word: a packet reads the word once, so it
//! sees one rule set whole, never half of each.
//!
//! Rate limits are a token bucket per source, kept as one word: the time
//! its bucket would be full again, the "theoretical arrival time" of the
//! generic cell rate algorithm. A packet at `now` conforms when, after
//! taking its cost, the bucket is still no more than `burst` packets in
//! debt: then the word moves on by the cost; a packet over the rate leaves
//! it as it was. Over any span of time, a source passes at most `burst`
//! packets plus the rate times the span.

use crate::Counter;

/// Array of three `u64`: which slot is in force and which families have
/// rules (see [`ruleset`]); then, for slot 0 and slot 1, how many rules
/// (high half) and nodes (low half) it uses, so that a ban can be added
/// to the slot in force in place (the datapath reads only the first).
pub const RULESET_MAP: &str = "RULESET";
/// Entries of [`RULESET_MAP`].
pub const RULESET_ENTRIES: u32 = 3;
/// LPM tries of chain heads (a `u32` node index), keyed by IPv4 prefix:
/// slot 0 and slot 1.
pub const RULES_V4_MAPS: [&str; 2] = ["RULES_V4_0", "RULES_V4_1"];
/// LPM tries of chain heads, keyed by IPv6 prefix.
pub const RULES_V6_MAPS: [&str; 2] = ["RULES_V6_0", "RULES_V6_1"];
/// Memory-mappable array of [`Counter`], a section of
/// [`RULE_HITS_SECTION`] per CPU: each rule's hits on that CPU, at
/// `slot * MAX_RULES + rule index` in the section. Only that CPU adds to
/// its section; user space sums the sections through a mapping (a
/// per-CPU array can only be read by a system call that copies a value at
/// a time: 5 ms for 20,000 rules).
pub const RULE_HITS_MAP: &str = "RULE_HITS";
/// Counters of each CPU's section of [`RULE_HITS_MAP`]: both slots.
pub const RULE_HITS_SECTION: u32 = 2 * MAX_RULES;
/// Array of `u64`: each limit rule's shared buckets, for sources no table
/// entry holds, its packet bucket indexed as the hits and its byte bucket
/// [`BYTE_BUCKETS`] further on.
pub const RULE_BUCKETS_MAP: &str = "RULE_BUCKETS";
/// Array of [`Rule`], indexed as the hits: the rules of both slots by
/// index, for sources whose row remembers their rule.
pub const RULES_MAP: &str = "RULES";
/// Array of [`Node`]: both slots' chains, at `slot * MAX_NODES + node`.
pub const CHAINS_MAP: &str = "CHAINS";
/// Array of [`BanRecord`], [`MAX_BANS`] long: the bans in force with what
/// the reports say of them. Only user space reads it; pinned with the
/// rest, it carries a persisted datapath's bans to the next xdpstat.
pub const BANS_MAP: &str = "BANS";

/// Bans one datapath may hold at once (`max_bans` may only be lower).
pub const MAX_BANS: u32 = 16_384;

/// Memory-mappable arrays of [`SourceRow`], one per source table entry (at
/// the entry's index): the entry's source's bucket and verdicts.
pub const ROWS_V4_MAP: &str = "ROWS_V4";
pub const ROWS_V6_MAP: &str = "ROWS_V6";
/// Memory-mappable arrays of [`Buckets`], one per source table entry, as
/// the rows.
pub const BUCKETS_V4_MAP: &str = "BUCKETS_V4";
pub const BUCKETS_V6_MAP: &str = "BUCKETS_V6";

/// Rules one rule set may hold, both families together (a list of
/// prefixes is one).
pub const MAX_RULES: u32 = 32_768;

/// Chain nodes one rule set may hold: a node per rule and port range (a
/// rule with two source port ranges and three destination ones is six),
/// shared by every prefix whose chain goes on the same way.
pub const MAX_NODES: u32 = 32_768;

/// The most nodes a packet's walk may look at: the loader refuses a rule
/// set with a longer chain.
pub const MAX_WALK: u32 = 16;

/// Where the byte buckets of [`RULE_BUCKETS_MAP`] begin.
pub const BYTE_BUCKETS: u32 = 2 * MAX_RULES;

/// Prefixes one slot's tries may hold, both families together: the rules'
/// and the lists'. A trie is charged only for the prefixes in it.
pub const MAX_PREFIXES: u32 = 4 << 20;

/// The bits of the [`RULESET_MAP`] word.
pub mod ruleset {
    /// The slot in force (0 or 1).
    pub const SLOT: u64 = 1;
    /// Set when the slot in force has IPv4 rules.
    pub const V4: u64 = 2;
    /// Set when the slot in force has IPv6 rules.
    pub const V6: u64 = 4;
    /// The rule set's generation, bits 16 to 31: new with every rule set
    /// put in force (never 0), so a row's remembered rule from an older
    /// set is known stale.
    pub const GENERATION_SHIFT: u32 = 16;
    pub const GENERATION_MASK: u64 = 0xffff << GENERATION_SHIFT;
}

/// A table entry's remembered chain (its `rule` word): the generation it
/// was found under (high 16 bits) and the chain's head node plus one (low
/// 16 bits; 0: no prefix matched). 0 as a whole: nothing remembered. In the
/// entry itself, so a packet whose source no rule matches costs no memory
/// beyond the entry it is counted in.
pub mod cached {
    pub const RULE_MASK: u32 = 0xffff;
    pub const GENERATION_SHIFT: u32 = 16;
}

/// What a [`Node`] asks of a packet, and how it limits (its `fields`).
pub mod fields {
    /// The packet's protocol is the node's `protocol`.
    pub const PROTOCOL: u8 = 1;
    /// The packet has ports, its source port within `src_port`.
    pub const SRC_PORT: u8 = 2;
    /// The packet has ports, its destination port within `dst_port`.
    pub const DST_PORT: u8 = 4;
    /// A TCP SYN (SYN set, ACK clear).
    pub const SYN: u8 = 8;
    /// A limit that takes from its rule's shared bucket even for a source
    /// with a row: an earlier limit on the chain owns the row's buckets.
    pub const SHARED_BUCKET: u8 = 16;
    /// The rule names no prefix (it sits at the family's `/0`).
    pub const ANY_SOURCE: u8 = 32;
    /// A ban's node (so the loader can read chains back to bans).
    pub const BAN: u8 = 64;
}

/// A packet's protocol when the parser could not tell it (an IPv6 chain
/// of extension headers longer than it walks, or cut short): it matches
/// no node that names a protocol.
pub const UNKNOWN_PROTOCOL: u16 = 0x100;

/// One step of a chain: a rule (by index) and what a packet must be for
/// that rule to decide.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// The rule's index: where its [`Rule`], hits and shared buckets are.
    pub rule: u32,
    /// The next node plus one; 0 ends the chain.
    pub next: u32,
    /// Inclusive port ranges, when [`fields`] names them.
    pub src_port: [u16; 2],
    pub dst_port: [u16; 2],
    pub protocol: u8,
    /// Of [`fields`].
    pub fields: u8,
    /// The length of the rule's prefix (so the loader can read chains
    /// back to rules).
    pub prefix_len: u8,
    pub _pad: u8,
    pub _pad2: u32,
    /// A ban's end, on the kernel's monotonic clock (a replay: the
    /// capture's): from then on the walk goes past this node as if it
    /// did not match, so a ban ends on time with no process to take it
    /// out. 0: no end.
    pub until_ns: u64,
}

/// A packet's protocol (or [`UNKNOWN_PROTOCOL`]), its ports (source,
/// destination) when it has them, whether it is a TCP SYN, and the
/// protocol its source counts it under (`source`, of
/// [`crate::kinds::source`]), in one word: protocol in bits 0-8, ports
/// known at bit 9, SYN at bit 10, the source port in bits 16-31, the
/// destination port in bits 32-47, the source's protocol in bits 48-49.
#[inline(always)]
pub fn transport_word(protocol: u16, ports: Option<(u16, u16)>, syn: bool, source: usize) -> u64 {
    let mut word = u64::from(protocol & 0x1ff) | (u64::from(syn) << 10);
    if let Some((source, destination)) = ports {
        word |= 1 << 9 | u64::from(source) << 16 | u64::from(destination) << 32;
    }
    word | (source as u64 & 3) << 48
}

/// The protocol a packet's source counts it under, from its
/// [`transport_word`].
#[inline(always)]
pub fn source_protocol(word: u64) -> u16 {
    ((word >> 48) & 3) as u16
}

impl Node {
    /// Whether a packet whose [`transport_word`] is `word` is one this
    /// node's rule decides for.
    #[inline(always)]
    pub fn matches(&self, word: u64) -> bool {
        let f = self.fields;
        if f & fields::PROTOCOL != 0 && word & 0x1ff != u64::from(self.protocol) {
            return false;
        }
        if f & fields::SYN != 0 && word & 1 << 10 == 0 {
            return false;
        }
        if f & (fields::SRC_PORT | fields::DST_PORT) != 0 {
            if word & 1 << 9 == 0 {
                return false;
            }
            let source = (word >> 16) as u16;
            let destination = (word >> 32) as u16;
            if f & fields::SRC_PORT != 0 && (source < self.src_port[0] || source > self.src_port[1])
            {
                return false;
            }
            if f & fields::DST_PORT != 0
                && (destination < self.dst_port[0] || destination > self.dst_port[1])
            {
                return false;
            }
        }
        true
    }
}

/// What a rule does to the packets it matches.
pub mod action {
    pub const PASS: u32 = 0;
    pub const DROP: u32 = 1;
    pub const LIMIT: u32 = 2;
    /// Passes, as `PASS` (to the datapath, every action but `DROP` and
    /// `LIMIT` does): the chains put it before every rule that could drop
    /// or limit.
    pub const ALLOW: u32 = 3;
}

/// Verdicts other than `passed`, as indices of [`SourceRow::acted`] and of
/// the CPU state's `acted`: every packet not counted under one of these
/// passed.
pub mod verdict {
    pub const DROPPED: usize = 0;
    pub const LIMITED: usize = 1;
    pub const WOULD_DROP: usize = 2;
    pub const WOULD_LIMIT: usize = 3;
    /// How many there are.
    pub const ACTED: usize = 4;
}

/// What rules did to one source: packets and bytes per acted-on verdict,
/// indexed by [`verdict`].
pub type Acted = [crate::Counter; verdict::ACTED];

/// A rule as the datapath finds it in a trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// One of [`action`].
    pub action: u32,
    /// Non-zero when the rule acts; zero when it only counts what it
    /// would do (dry run).
    pub enforce: u32,
    /// Nanoseconds a packet costs a limit rule's bucket: 10⁹ / pps,
    /// rounded up, so the rate never exceeds the rule's.
    pub interval_ns: u64,
    /// How far into debt a bucket may go: `burst * interval_ns`.
    pub tolerance_ns: u64,
    /// Nanoseconds a byte costs a limit rule's byte bucket, in 1/65,536
    /// of a nanosecond (8 x 10⁹ x 2¹⁶ / bps, rounded up); 0: no limit in
    /// bits per second.
    pub byte_q16: u64,
    /// How far into debt the byte bucket may go: a second's worth.
    pub byte_tolerance_ns: u64,
    /// Non-zero when the rule's buckets keep time by the kernel's coarse
    /// clock (`bpf_ktime_get_coarse_ns`: at most a tick behind, and read
    /// in a few nanoseconds where the exact clock's TSC read costs tens):
    /// the loader sets it when each of the rule's tolerances is at least
    /// [`COARSE_TICKS`] ticks. A clock that lags only ever makes a bucket
    /// stricter, by at most a tick's worth of its burst; the rate stays
    /// exact.
    pub coarse: u32,
    pub _pad: u32,
}

/// Ticks of the coarse clock a rule's tolerances must each span for its
/// buckets to keep time by it (see [`Rule::coarse`]): its lag then costs a
/// burst at most a sixteenth.
pub const COARSE_TICKS: u64 = 16;

/// One ban as kept in [`BANS_MAP`]: in use while `family` is 4 or 6.
/// Strings are UTF-8, NUL-padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanRecord {
    /// When it ends on the kernel's monotonic clock; 0: never.
    pub until_ns: u64,
    /// When it began and when it ends (0: never), in nanoseconds since the
    /// Unix epoch, for the reports.
    pub since_unix_ns: u64,
    pub until_unix_ns: u64,
    /// A limit's packets and bits per second (0: none); a drop has neither.
    pub pps: u64,
    pub bps: u64,
    /// The last time a trigger found its source over its threshold (Unix
    /// nanoseconds), for extending it.
    pub last_over_unix_ns: u64,
    /// 0: free; 4 or 6.
    pub family: u32,
    pub prefix_len: u32,
    /// One of [`action`]: `DROP` or `LIMIT`.
    pub action: u32,
    pub _pad: u32,
    /// The address, IPv4 in the first four bytes.
    pub address: [u8; 16],
    /// `hand`, or the trigger's name.
    pub origin: [u8; 32],
    pub reason: [u8; 80],
}

impl Default for BanRecord {
    fn default() -> Self {
        Self {
            until_ns: 0,
            since_unix_ns: 0,
            until_unix_ns: 0,
            pps: 0,
            bps: 0,
            last_over_unix_ns: 0,
            family: 0,
            prefix_len: 0,
            action: 0,
            _pad: 0,
            address: [0; 16],
            origin: [0; 32],
            reason: [0; 80],
        }
    }
}

/// What the rules did to one table entry's source: its packets under each
/// verdict but `passed`, one cache line. Zeroed with its entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceRow {
    /// Indexed by [`verdict`].
    pub acted: [Counter; verdict::ACTED],
}

/// One table entry's source's buckets under its first limit, apart from
/// its row: every packet a limit judges takes from them, and at 16 bytes
/// an entry they are four times denser in the CPU's caches than a row
/// (with them in the row, a limit on all traffic cost Zipf-spread traffic
/// 60 ns a packet more, in cache misses). Zeroed with its entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    /// The packet bucket: when it would be full again (see the module's text).
    pub tat: u64,
    /// The byte bucket, the same way.
    pub tat_bytes: u64,
}

/// The nanoseconds `bytes` bytes cost a byte bucket of `byte_q16`,
/// rounded up (so a bucket never passes more than its rate). At most 2^18
/// bytes (a GRO buffer) times the largest `byte_q16` (the loader's lowest
/// rate, 8,000 bits per second: 6.6 x 10^10): no overflow.
#[inline(always)]
pub const fn byte_cost(bytes: u64, byte_q16: u64) -> u64 {
    bytes.wrapping_mul(byte_q16).wrapping_add(0xffff) >> 16
}

/// The bucket word after taking `cost` nanoseconds at `now`, or `None`
/// when that would put the bucket more than `tolerance_ns` in debt.
#[inline(always)]
pub fn conform_cost(tat: u64, now: u64, cost: u64, tolerance_ns: u64) -> Option<u64> {
    let from = if tat > now { tat } else { now };
    let next = from.wrapping_add(cost);
    if next - now > tolerance_ns {
        None
    } else {
        Some(next)
    }
}

/// A byte bucket for `bps` bits per second, with room for a second's
/// worth at once: its `byte_q16` and tolerance.
pub const fn byte_bucket(bps: u64) -> (u64, u64) {
    let bps = if bps == 0 { 1 } else { bps };
    ((8_000_000_000u64 << 16).div_ceil(bps), 1_000_000_000)
}

/// A limit rule's bucket parameters for `pps` packets per second with
/// room for `burst` packets at once.
pub const fn bucket(pps: u64, burst: u64) -> (u64, u64) {
    let interval = 1_000_000_000u64.div_ceil(if pps == 0 { 1 } else { pps });
    // Both at most 10^9 (the loader caps rates and bursts): at most 10^18.
    (interval, interval.wrapping_mul(burst))
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, two u32 then four u64: no padding, any bit pattern valid.
unsafe impl aya::Pod for Rule {}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, two u32, four u16, four u8, a u32 and a u64: no
// padding, any bit pattern valid.
unsafe impl aya::Pod for Node {}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, six u64, four u32, byte arrays of 16, 32 and 80:
// no padding, any bit pattern valid.
unsafe impl aya::Pod for BanRecord {}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, two u64 then four `Counter`s: no padding, any bit pattern valid.
unsafe impl aya::Pod for SourceRow {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_passes_its_burst_at_once_then_its_rate() {
        let (interval, tolerance) = bucket(1000, 200);
        assert_eq!(interval, 1_000_000);
        let (mut tat, now) = (0u64, 5_000_000_000u64);
        let mut passed = 0;
        for _ in 0..1000 {
            if let Some(next) = conform_cost(tat, now, interval, tolerance) {
                tat = next;
                passed += 1;
            }
        }
        assert_eq!(passed, 200);
        // One millisecond later, one more packet's worth.
        assert!(conform_cost(tat, now + 999_999, interval, tolerance).is_none());
        assert!(conform_cost(tat, now + 1_000_000, interval, tolerance).is_some());
    }

    #[test]
    fn rates_round_down_never_up() {
        let (interval, _) = bucket(3, 1);
        assert!(3 * interval >= 1_000_000_000);
        assert_eq!(bucket(0, 5).0, 1_000_000_000);
        assert_eq!(size_of::<Rule>(), 48);
        assert_eq!(size_of::<Node>(), 32);
        assert_eq!(size_of::<BanRecord>(), 192);
        // A row is one cache line; the buckets four to a line.
        assert_eq!(size_of::<SourceRow>(), 64);
        assert_eq!(size_of::<Buckets>(), 16);
    }

    #[test]
    fn a_node_matches_what_its_fields_name() {
        // The source's protocol rides along in the word; no node looks at it.
        let word = |protocol, ports, syn| transport_word(protocol, ports, syn, 3);
        let node = Node {
            protocol: 17,
            fields: fields::PROTOCOL | fields::SRC_PORT,
            src_port: [53, 53],
            ..Node::default()
        };
        assert!(node.matches(word(17, Some((53, 4000)), false)));
        assert!(!node.matches(word(17, Some((54, 4000)), false)));
        assert!(!node.matches(word(17, None, false)), "no ports");
        assert!(!node.matches(word(6, Some((53, 4000)), false)));
        assert!(!node.matches(word(UNKNOWN_PROTOCOL, None, false)));
        let syn = Node {
            protocol: 6,
            fields: fields::PROTOCOL | fields::SYN | fields::DST_PORT,
            dst_port: [443, 443],
            ..Node::default()
        };
        assert!(syn.matches(word(6, Some((40000, 443)), true)));
        assert!(!syn.matches(word(6, Some((40000, 443)), false)));
        assert!(Node::default().matches(word(UNKNOWN_PROTOCOL, None, false)));
        // Protocol 0 is a protocol, not the unknown one.
        let zero = Node {
            fields: fields::PROTOCOL,
            ..Node::default()
        };
        assert!(zero.matches(word(0, None, false)));
        assert!(!zero.matches(word(UNKNOWN_PROTOCOL, None, false)));
        for source in 0..4 {
            let word = transport_word(6, Some((1, 2)), true, source);
            assert_eq!(usize::from(source_protocol(word)), source);
        }
    }

    #[test]
    fn a_byte_bucket_passes_a_second_of_traffic_then_its_rate() {
        // 8 Mbit/s: a million bytes a second, a microsecond a byte.
        let (q16, tolerance) = byte_bucket(8_000_000);
        assert_eq!(byte_cost(1_000, q16), 1_000_000);
        let (mut tat, now) = (0u64, 5_000_000_000u64);
        let mut passed = 0;
        for _ in 0..2_000 {
            if let Some(next) = conform_cost(tat, now, byte_cost(1_000, q16), tolerance) {
                tat = next;
                passed += 1;
            }
        }
        assert_eq!(passed, 1_000, "a second's worth of 1,000-byte packets");
        // Rates round so that a bucket never passes more than its rate.
        for bps in [8_000, 8_001, 1_000_003, 50_000_000, 999_999_999_999] {
            let (q16, _) = byte_bucket(bps);
            for bytes in [1u64, 64, 1_500, 65_536] {
                assert!(
                    u128::from(byte_cost(bytes, q16)) * u128::from(bps)
                        >= u128::from(bytes) * 8_000_000_000,
                    "{bps} bps, {bytes} bytes"
                );
            }
        }
    }
}
