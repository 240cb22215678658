//! The xdpstat XDP program: classifies every received frame and counts its
//! packets and bytes per source address, then passes it on untouched.
//!
//! This file is the one place that decides the counting rules:
//!
//! 1. Ethernet header (14 bytes), then up to two VLAN tags (TPID 0x8100 or
//!    0x88A8, 4 bytes each).
//! 2. Ethertype 0x0800 with version 4, IHL >= 5 and the whole header (IHL x 4
//!    bytes, options included) in the frame: class `ipv4`, counted under the
//!    IPv4 source address.
//! 3. Ethertype 0x86DD with at least 40 bytes of IPv6 header and version 6:
//!    class `ipv6`, counted under the IPv6 source address.
//! 4. Ethertype 0x0800 or 0x86DD failing those checks, or a frame that ends
//!    inside the Ethernet header or a VLAN tag: class `malformed`.
//! 5. Everything else, including a third VLAN tag: class `non_ip`.
//! 6. Bytes are the whole frame's length, all fragments of a multi-buffer
//!    frame included.
//! 7. Counting never changes traffic: a frame is dropped only by a rule
//!    (`--rules`) in force, and only an IPv4 or IPv6 one; everything else
//!    gets `XDP_PASS` (`TCX_NEXT` at tc).
//!
//! Rules (see `xdpstat_common::rules`): after counting, an IP packet's
//! source is looked up in the rule set in force (an LPM trie per family,
//! skipped when the family has no rules); the longest match decides
//! whether it passes, is dropped, or is limited by its source's bucket.
//! Every verdict but `passed` is counted per packet in the CPU state, per
//! rule in `RULE_HITS`, and per source in the row beside its table entry.
//!
//! Four programs share this code. `xdpstat` measures a frame as
//! `data_end - data`: the kernel only attaches a program without multi-buffer
//! support where every frame it sees is linear, so that is the whole frame.
//! `xdpstat_frags` is for interfaces that refuse it (a jumbo MTU) and asks
//! `bpf_xdp_get_buff_len` (Linux 5.18), a helper call that costs about 5 ns.
//! `xdpstat_replay` is never attached: `xdpstat replay` runs captured
//! frames through it and hands it each frame's length on the wire as XDP
//! metadata, since a capture may hold only part of a frame. `xdpstat_tcx`
//! counts at tc ingress instead (`--hook tcx`), beside another XDP program.
//!
//! Where the counts go (see `CpuState`): a packet from the same source as
//! the CPU's previous one only bumps the current run's counter in the CPU's
//! state slot; a packet from another source begins a new run, which finds
//! or claims its source's entry in its family's *table* and keeps the
//! entry's index, and then settles the finished run into the entry it kept.
//! A table is an open-addressing hash table in a memory-mapped array:
//! finding a source costs one probe (one cache line) in the common case,
//! where a BPF hash map costs a bucket and an element, and user space reads
//! a million sources by walking memory. Entries are shared by all CPUs and
//! updated with atomic adds. A run that found no entry within reach counts
//! in the CPU's `unattributed_*` instead, so nothing is lost silently, and
//! a source is in a read exactly when an entry holds it. Headers are read
//! from the frame's linear part, which always holds them for frames the
//! kernel builds (drivers and BPF_PROG_TEST_RUN put at least the first page
//! there).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, xdp_action},
    helpers::{bpf_ktime_get_ns, bpf_xdp_get_buff_len},
    macros::{classifier, map, xdp},
    maps::{
        Array, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{TcContext, XdpContext},
};
use xdpstat_common::{
    Counter, CpuState, DEFAULT_MAX_SOURCES, Ipv4Key, Ipv6Key, MAX_PROBES, Meta, NO_ENTRY,
    REPLAY_METADATA, TABLE_PAGE, V4Entry, V6Entry, entry_state, home, mix,
    rules::{MAX_RULES, Rule, SourceRow, action, cached, conform, ruleset, verdict},
    sketch::{Heavy, PrefixKey, SKETCH_ROWS, SKETCH_WIDTH, conservative_add, offer, sketch_cell},
    table_entries,
};

/// Entries in each table; the loader sets it and sizes the tables to match.
#[unsafe(no_mangle)]
static TABLE_ENTRIES: u32 = table_entries(DEFAULT_MAX_SOURCES);

/// The table hash's secret seed; the loader sets a random one.
#[unsafe(no_mangle)]
static HASH_SEED: u64 = 0;

#[map(name = "SOURCES_V4")]
static SOURCES_V4: Array<V4Entry> =
    Array::with_max_entries(table_entries(DEFAULT_MAX_SOURCES), BPF_F_MMAPABLE);

#[map(name = "SOURCES_V6")]
static SOURCES_V6: Array<V6Entry> =
    Array::with_max_entries(table_entries(DEFAULT_MAX_SOURCES), BPF_F_MMAPABLE);

#[map(name = "PAGES_V4")]
static PAGES_V4: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

#[map(name = "PAGES_V6")]
static PAGES_V6: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Never read here: user space writes what this datapath is, and keeps
/// what must outlive it when it is persisted.
#[map(name = "XDPSTAT_META")]
static XDPSTAT_META: Array<Meta> = Array::with_max_entries(1, 0);

/// Prefix masks as on the wire; the loader sets them from `--prefix-len`.
#[unsafe(no_mangle)]
static PREFIX_V4_MASK: u32 = u32::MAX;
#[unsafe(no_mangle)]
static PREFIX_V6_MASK: [u64; 2] = [u64::MAX, u64::MAX];

/// The prefix sketches and their heavy-hitter tables (see
/// `xdpstat_common::sketch`): only runs no table entry took touch them.
#[map(name = "SKETCH_V4")]
static SKETCH_V4: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(SKETCH_ROWS as u32 * SKETCH_WIDTH, 0);
#[map(name = "SKETCH_V6")]
static SKETCH_V6: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(SKETCH_ROWS as u32 * SKETCH_WIDTH, 0);
#[map(name = "HEAVY_V4")]
static HEAVY_V4: PerCpuArray<Heavy> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "HEAVY_V6")]
static HEAVY_V6: PerCpuArray<Heavy> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "CPU_STATE")]
static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

/// Which rule slot is in force, and which families have rules there.
#[map(name = "RULESET")]
static RULESET: Array<u64> = Array::with_max_entries(1, 0);
#[map(name = "RULES_V4_0")]
static RULES_V4_0: LpmTrie<Ipv4Key, Rule> = LpmTrie::with_max_entries(MAX_RULES, 0);
#[map(name = "RULES_V4_1")]
static RULES_V4_1: LpmTrie<Ipv4Key, Rule> = LpmTrie::with_max_entries(MAX_RULES, 0);
#[map(name = "RULES_V6_0")]
static RULES_V6_0: LpmTrie<Ipv6Key, Rule> = LpmTrie::with_max_entries(MAX_RULES, 0);
#[map(name = "RULES_V6_1")]
static RULES_V6_1: LpmTrie<Ipv6Key, Rule> = LpmTrie::with_max_entries(MAX_RULES, 0);
#[map(name = "RULE_HITS")]
static RULE_HITS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(2 * MAX_RULES, 0);
#[map(name = "RULE_BUCKETS")]
static RULE_BUCKETS: Array<u64> = Array::with_max_entries(2 * MAX_RULES, 0);
#[map(name = "RULES")]
static RULES: Array<Rule> = Array::with_max_entries(2 * MAX_RULES, 0);
/// One row per table entry, at the entry's index; the loader sizes them as
/// the tables (or to one row when no rules can come).
#[map(name = "ROWS_V4")]
static ROWS_V4: Array<SourceRow> =
    Array::with_max_entries(table_entries(DEFAULT_MAX_SOURCES), BPF_F_MMAPABLE);
#[map(name = "ROWS_V6")]
static ROWS_V6: Array<SourceRow> =
    Array::with_max_entries(table_entries(DEFAULT_MAX_SOURCES), BPF_F_MMAPABLE);

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// What the parser decided about one frame: its class, and the source of
/// an IP one.
enum Class {
    Ipv4(Ipv4Key),
    Ipv6(Ipv6Key),
    NonIp,
    Malformed,
}

#[xdp]
pub fn xdpstat(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    xdp_verdict(count(start, end, 1, (end - start) as u64, Clock::Kernel))
}

#[xdp(frags)]
pub fn xdpstat_frags(ctx: XdpContext) -> u32 {
    // SAFETY: `ctx.ctx` is the live `xdp_md` the kernel handed us.
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    xdp_verdict(count(ctx.data(), ctx.data_end(), 1, len, Clock::Kernel))
}

#[xdp(frags)]
pub fn xdpstat_replay(ctx: XdpContext) -> u32 {
    let (meta, start, end) = (ctx.metadata(), ctx.data(), ctx.data_end());
    let (len, clock) = if meta + REPLAY_METADATA <= start {
        // SAFETY: the check above keeps the reads inside the metadata,
        // which `xdpstat replay` fills with the frame's length on the wire
        // and its capture time.
        unsafe {
            (
                core::ptr::read_unaligned(meta as *const u64),
                Clock::Given(core::ptr::read_unaligned((meta + 8) as *const u64)),
            )
        }
    } else {
        // SAFETY: `ctx.ctx` is the live `xdp_md` the kernel handed us.
        (unsafe { bpf_xdp_get_buff_len(ctx.ctx) }, Clock::Kernel)
    };
    xdp_verdict(count(start, end, 1, len, clock))
}

#[inline(always)]
fn xdp_verdict(drop: bool) -> u32 {
    if drop {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Where a rate limit's time comes from: the kernel's monotonic clock,
/// or a replayed frame's capture time.
#[derive(Clone, Copy)]
enum Clock {
    Kernel,
    Given(u64),
}

impl Clock {
    #[inline(always)]
    fn now(self) -> u64 {
        match self {
            // SAFETY: a helper with no arguments.
            Clock::Kernel => unsafe { bpf_ktime_get_ns() },
            Clock::Given(now) => now,
        }
    }
}

/// `--hook tcx`: the same rules at tc ingress, through a tcx link (Linux
/// 6.6), for interfaces whose XDP hook another program holds. What differs
/// from XDP: tc sees only what XDP passed, after GRO, and after the stack
/// took the outer VLAN tag off into the socket buffer. So a merged buffer
/// counts its `gso_segs` packets and the bytes they had on the wire (the
/// merged length plus the headers every segment but the first carried), and
/// a tag the stack took off counts its 4 bytes on every segment.
#[classifier]
pub fn xdpstat_tcx(ctx: TcContext) -> i32 {
    // SAFETY: the live `__sk_buff` the kernel handed us; plain field reads.
    let (len, segments, vlan_present) = unsafe {
        let skb = &*ctx.skb.skb;
        (u64::from(skb.len), skb.gso_segs, skb.vlan_present != 0)
    };
    // Headers are read from the linear part; a buffer whose headers are
    // not all there yet (rare at ingress) has them pulled in first.
    if ((ctx.data_end() - ctx.data()) as u64) < HEADERS_PULLED.min(len) {
        let _ = ctx.pull_data(HEADERS_PULLED.min(len) as u32);
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let segments = u64::from(segments.max(1));
    let mut bytes = len;
    if segments > 1 {
        bytes += (segments - 1) * segment_headers(start, end);
    }
    if vlan_present {
        bytes += segments * VLAN_HLEN as u64;
    }
    if count(start, end, segments, bytes, Clock::Kernel) {
        TC_ACT_SHOT
    } else {
        TCX_NEXT
    }
}

/// tcx: let the next program (or the stack) decide.
const TCX_NEXT: i32 = -1;
/// tc: drop the buffer.
const TC_ACT_SHOT: i32 = 2;
/// Bytes of headers a tcx program makes sure are in the linear part.
const HEADERS_PULLED: u64 = 128;

/// The bytes of headers each segment of a merged TCP or UDP buffer
/// carries: Ethernet and tags, IP, and TCP (its data offset) or UDP.
#[inline(always)]
fn segment_headers(start: usize, end: usize) -> u64 {
    let Some((ethertype, offset)) = past_vlan_tags(start, end) else {
        return 0;
    };
    let (protocol, transport) = match ethertype {
        ETH_P_IP => {
            let Some(ip) = in_frame(start, offset, IPV4_HLEN, end) else {
                return 0;
            };
            // SAFETY: `in_frame` checked the 20 header bytes are in the frame.
            let (version_ihl, protocol) = unsafe { (*(ip as *const u8), *((ip + 9) as *const u8)) };
            (protocol, offset + usize::from(version_ihl & 0x0f) * 4)
        }
        ETH_P_IPV6 => {
            let Some(ip) = in_frame(start, offset, IPV6_HLEN, end) else {
                return 0;
            };
            // SAFETY: as above, 40 bytes.
            (unsafe { *((ip + 6) as *const u8) }, offset + IPV6_HLEN)
        }
        _ => return 0,
    };
    let transport_len = match protocol {
        IPPROTO_TCP => match in_frame(start, transport, 20, end) {
            // SAFETY: `in_frame` checked the 20 TCP header bytes.
            Some(tcp) => usize::from(unsafe { *((tcp + 12) as *const u8) } >> 4) * 4,
            None => return 0,
        },
        IPPROTO_UDP => 8,
        _ => 0,
    };
    (transport + transport_len) as u64
}

/// Counts the frame in `[start, end)` as `packets` packets of `len` bytes
/// in all (one packet but for a GRO-merged buffer at tcx), then judges it
/// by the rules in force; true when a rule drops it.
#[inline(always)]
fn count(start: usize, end: usize, packets: u64, len: u64, clock: Clock) -> bool {
    let Some(state) = CPU_STATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot of a live array; XDP does not nest on a CPU, so
    // nothing else touches it while this program runs.
    let state = unsafe { &mut *state };
    let packet = Packet {
        packets,
        len,
        clock,
    };
    match classify(start, end) {
        Class::Ipv4(source) => count_ip::<V4Entry>(state, source, packet),
        Class::Ipv6(source) => count_ip::<V6Entry>(state, source, packet),
        Class::NonIp => {
            bump(&mut state.non_ip, packets, len);
            false
        }
        Class::Malformed => {
            bump(&mut state.malformed, packets, len);
            false
        }
    }
}

/// Counts a packet from `source` in its family's table, then judges it by
/// the family's rules; true when a rule drops it.
#[inline(always)]
fn count_ip<E: Entry>(state: &mut CpuState, source: E::Address, packet: Packet) -> bool {
    let family = E::family();
    let entry = track::<E>(
        family.table,
        family.pages,
        E::run(state),
        source,
        packet.packets,
        packet.len,
    );
    judge(family, &source, entry, state, packet)
}

/// One family's table and rule maps.
struct Family<E: Entry> {
    table: &'static Array<E>,
    pages: &'static Array<u64>,
    rows: &'static Array<SourceRow>,
    tries: [&'static LpmTrie<E::Address, Rule>; 2],
    /// Its bit in the ruleset word.
    bit: u64,
    /// Address bits, the trie key's length for a lookup.
    bits: u32,
}

/// One frame as counting and rules see it.
#[derive(Clone, Copy)]
struct Packet {
    packets: u64,
    len: u64,
    clock: Clock,
}

/// Judges a packet from `source` (held by table entry `entry`, or by none)
/// by the rule set in force, counts its verdict, and says whether to drop
/// it. A family with no rules costs one array read. A source an entry
/// holds has a row at the entry's index, which remembers its rule (one
/// trie lookup per source and rule set, not per packet), keeps its bucket
/// and counts its verdicts; a source no entry holds is looked up in the
/// trie every time and limited by its rule's shared bucket.
#[inline(always)]
fn judge<E: Entry>(
    family: Family<E>,
    source: &E::Address,
    entry: u32,
    state: &mut CpuState,
    packet: Packet,
) -> bool {
    let Some(word) = RULESET.get_ptr(0) else {
        return false;
    };
    // SAFETY: a live array value, read once: the whole packet is judged by
    // the slot it names.
    let word = unsafe { core::ptr::read_volatile(word) };
    if word & family.bit == 0 {
        return false;
    }
    let slot = (word & ruleset::SLOT) as u32;
    let generation = ((word & ruleset::GENERATION_MASK) >> ruleset::GENERATION_SHIFT) as u32;
    let held = held_entry(family.table, entry, source);
    // The rule: remembered by the entry under this generation, or found in
    // the slot's trie (and then remembered).
    let remembered = match held {
        // SAFETY: a live entry; its rule word is read whole.
        Some(entry) => unsafe { core::ptr::read_volatile(entry) },
        None => 0,
    };
    let index = if remembered != 0 && remembered >> cached::GENERATION_SHIFT == generation {
        match remembered & cached::RULE_MASK {
            0 => return false,
            plus_one => plus_one - 1,
        }
    } else {
        let key = Key::new(family.bits, *source);
        let found = if slot == 0 {
            family.tries[0].get(&key)
        } else {
            family.tries[1].get(&key)
        };
        let index = found.map(|rule| rule.index);
        if let Some(entry) = held {
            let plus_one = index.map_or(0, |index| (index + 1) & cached::RULE_MASK);
            // SAFETY: a live entry's rule word; any CPU may store the same
            // answer.
            unsafe {
                core::ptr::write_volatile(entry, generation << cached::GENERATION_SHIFT | plus_one);
            }
        }
        match index {
            Some(index) => index,
            None => return false,
        }
    };
    let at = slot * MAX_RULES + index;
    let Some(rule) = RULES.get(at) else {
        return false;
    };
    let (rule_action, enforce) = (rule.action, rule.enforce != 0);
    let (interval, tolerance) = (rule.interval_ns, rule.tolerance_ns);
    let (packets, len) = (packet.packets, packet.len);
    let row = held.and_then(|_| family.rows.get_ptr_mut(entry));
    if let Some(hits) = RULE_HITS.get_ptr_mut(at) {
        // SAFETY: this CPU's counter of a live per-CPU array.
        bump(unsafe { &mut *hits }, packets, len);
    }
    if rule_action == action::PASS {
        return false;
    }
    let acted = if rule_action == action::DROP {
        if enforce {
            verdict::DROPPED
        } else {
            verdict::WOULD_DROP
        }
    } else {
        let now = packet.clock.now();
        let bucket = match row {
            // SAFETY: a live row; its bucket word is only changed whole.
            Some(row) => unsafe { &raw mut (*row).tat },
            None => {
                bump(&mut state.shared_bucket, packets, len);
                match RULE_BUCKETS.get_ptr_mut(at) {
                    Some(bucket) => bucket,
                    None => return false,
                }
            }
        };
        // SAFETY: a live, aligned bucket word.
        if unsafe { take(bucket, now, packets, interval, tolerance) } {
            return false;
        }
        if enforce {
            verdict::LIMITED
        } else {
            verdict::WOULD_LIMIT
        }
    };
    if let Some(counter) = state.acted.get_mut(acted) {
        bump(counter, packets, len);
    }
    if let Some(row) = row {
        // SAFETY: a live row; every CPU judging the source adds to it.
        unsafe {
            if let Some(counter) = (*row).acted.get_mut(acted) {
                atomic_add(
                    counter,
                    &Counter {
                        packets,
                        bytes: len,
                    },
                );
            }
        }
    }
    acted == verdict::DROPPED || acted == verdict::LIMITED
}

/// The rule word of entry `index` when that entry counts `address`
/// (READY: user space retires an entry by marking it draining and waiting
/// a grace period before it clears the entry and its row, so neither is
/// cleared under this packet).
#[inline(always)]
fn held_entry<E: Entry>(table: &Array<E>, index: u32, address: &E::Address) -> Option<*mut u32> {
    if index == NO_ENTRY {
        return None;
    }
    let entry = table.get_ptr_mut(index)?;
    // SAFETY: a live table entry; its state word is read whole.
    let entry = unsafe { &mut *entry };
    if unsafe { core::ptr::read_volatile(entry.state()) } != entry_state::READY
        || !entry.holds(address)
    {
        return None;
    }
    Some(entry.rule())
}

/// Takes `packets` packets' worth from the bucket word at `bucket` if they
/// conform to the rate; false when they are over it. Another CPU changing
/// the word meanwhile makes this one look again, a few times at most
/// (then the packets count as over the rate: never more than the rate
/// passes).
#[inline(always)]
unsafe fn take(bucket: *mut u64, now: u64, packets: u64, interval: u64, tolerance: u64) -> bool {
    for _ in 0..4 {
        // SAFETY: the caller's live, aligned word.
        let seen = unsafe { core::ptr::read_volatile(bucket) };
        let Some(next) = conform(seen, now, packets, interval, tolerance) else {
            return false;
        };
        // SAFETY: as above.
        if unsafe { compare_exchange(bucket, seen, next) } {
            return true;
        }
    }
    false
}

/// An IPv6 address as two 8-byte words (a byte-wise compare would be 16
/// loads and branches).
#[inline(always)]
fn words(address: &Ipv6Key) -> (u64, u64) {
    // SAFETY: both reads are within the 16 bytes.
    unsafe {
        (
            core::ptr::read_unaligned(address.as_ptr() as *const u64),
            core::ptr::read_unaligned(address.as_ptr().add(8) as *const u64),
        )
    }
}

/// Applies the counting rules to the frame in `[start, end)`.
#[inline(always)]
fn classify(start: usize, end: usize) -> Class {
    let Some((ethertype, offset)) = past_vlan_tags(start, end) else {
        return Class::Malformed;
    };
    match ethertype {
        ETH_P_IP => match in_frame(start, offset, IPV4_HLEN, end) {
            // SAFETY: `in_frame` checked the 20 header bytes are in the frame.
            Some(ip) => unsafe {
                let version_ihl = *(ip as *const u8);
                let header_len = usize::from(version_ihl & 0x0f) * 4;
                if version_ihl >> 4 != 4 || header_len < IPV4_HLEN || ip + header_len > end {
                    return Class::Malformed;
                }
                Class::Ipv4(core::ptr::read_unaligned((ip + 12) as *const Ipv4Key))
            },
            None => Class::Malformed,
        },
        ETH_P_IPV6 => match in_frame(start, offset, IPV6_HLEN, end) {
            // SAFETY: `in_frame` checked the 40 header bytes are in the frame.
            Some(ip) => unsafe {
                if *(ip as *const u8) >> 4 != 6 {
                    return Class::Malformed;
                }
                Class::Ipv6(core::ptr::read_unaligned((ip + 8) as *const Ipv6Key))
            },
            None => Class::Malformed,
        },
        _ => Class::NonIp,
    }
}

/// The ethertype after the Ethernet header and up to two VLAN tags, and
/// where what it announces begins; `None` when the frame ends inside the
/// Ethernet header or a tag.
#[inline(always)]
fn past_vlan_tags(start: usize, end: usize) -> Option<(u16, usize)> {
    let mut ethertype = be16_at(start, 12, end)?;
    let mut offset = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = be16_at(start, offset + 2, end)?;
        offset += VLAN_HLEN;
    }
    Some((ethertype, offset))
}

/// Address of the `len` bytes at `offset` when all of them lie before `end`.
#[inline(always)]
fn in_frame(start: usize, offset: usize, len: usize, end: usize) -> Option<usize> {
    let at = start + offset;
    if at + len > end { None } else { Some(at) }
}

/// The big-endian u16 at `offset`, when the frame holds it.
#[inline(always)]
fn be16_at(start: usize, offset: usize, end: usize) -> Option<u16> {
    let at = in_frame(start, offset, 2, end)?;
    // SAFETY: `in_frame` checked both bytes are in the frame.
    Some(u16::from_be(unsafe {
        core::ptr::read_unaligned(at as *const u16)
    }))
}

/// One family's part of a CPU's state.
struct Run<'a, A> {
    counter: &'a mut Counter,
    source: &'a mut A,
    entry: &'a mut u32,
    unattributed: &'a mut Counter,
}

/// Counts a packet from `source`: into the CPU's run when it continues it,
/// else as a new run, which first finds or claims its source's entry; then
/// the finished run settles into the entry it kept (or, with none,
/// into `unattributed`). The new run is written before the old one
/// settles: a reader racing this misses the old run for one read rather
/// than counting it twice (user space keeps counts from going backwards).
/// Returns the index of the entry the packet's run settles into
/// ([`NO_ENTRY`]: none).
#[inline(always)]
fn track<E: Entry>(
    table: &Array<E>,
    pages: &Array<u64>,
    run: Run<'_, E::Address>,
    source: E::Address,
    packets: u64,
    len: u64,
) -> u32 {
    if run.counter.packets != 0 && E::same(run.source, &source) {
        bump(run.counter, packets, len);
        return *run.entry;
    }
    let (finished, finished_source, finished_entry) = (*run.counter, *run.source, *run.entry);
    let entry = entry_for::<E>(table, pages, &source);
    // No run, then the new source and entry, then the new run's count: a
    // reader copying the slot meanwhile never sees the old count under
    // the new source (see `CpuState`). Volatile keeps the stores in order.
    start_run(run.counter, 0, 0);
    // SAFETY: plain stores to this CPU's live slot.
    unsafe {
        core::ptr::write_volatile(run.source, source);
        core::ptr::write_volatile(run.entry, entry);
    }
    start_run(run.counter, packets, len);
    if finished.packets != 0
        && !settle::<E>(table, pages, finished_entry, &finished_source, &finished)
    {
        run.unattributed.add(&finished);
        E::sketch(&finished_source, &finished);
    }
    entry
}

/// Counts a run no entry took under its prefix, in this CPU's sketch, and
/// offers the prefix to this CPU's heavy-hitter table.
#[inline(always)]
fn sketch_add(
    sketch: &PerCpuArray<Counter>,
    heavy: &PerCpuArray<Heavy>,
    key: &PrefixKey,
    run: &Counter,
) {
    // SAFETY: a global the loader sets; read once, as the kernel has it.
    let seed = unsafe { core::ptr::read_volatile(&HASH_SEED) };
    let mut cells = [core::ptr::null_mut::<Counter>(); SKETCH_ROWS];
    for (row, cell) in cells.iter_mut().enumerate() {
        match sketch.get_ptr_mut(sketch_cell(key, row, seed)) {
            Some(pointer) => *cell = pointer,
            None => return,
        }
    }
    // SAFETY: this CPU's cells of a live per-CPU array (XDP does not nest
    // on a CPU); distinct rows are distinct cells.
    let estimate = conservative_add(cells.map(|cell| unsafe { &mut *cell }), run);
    if let Some(table) = heavy.get_ptr_mut(0) {
        // SAFETY: as above, this CPU's slot.
        offer(unsafe { &mut *table }, key, &estimate, seed);
    }
}

/// An entry of a source table, over its address type.
trait Entry: 'static {
    type Address: Copy;
    fn same(a: &Self::Address, b: &Self::Address) -> bool;
    fn hash(address: &Self::Address, seed: u64) -> u64;
    fn address(&mut self) -> &mut Self::Address;
    #[inline(always)]
    fn holds(&mut self, address: &Self::Address) -> bool {
        Self::same(self.address(), address)
    }
    fn state(&mut self) -> *mut u64;
    fn counter(&mut self) -> *mut Counter;
    /// The remembered rule (see `xdpstat_common::rules::cached`).
    fn rule(&mut self) -> *mut u32;
    /// Counts a run no entry took in the family's prefix sketch.
    fn sketch(address: &Self::Address, run: &Counter);
    /// The family's table and rule maps.
    fn family() -> Family<Self>
    where
        Self: Sized;
    /// The family's part of a CPU's state.
    fn run(state: &mut CpuState) -> Run<'_, Self::Address>;
}

impl Entry for V4Entry {
    type Address = Ipv4Key;
    #[inline(always)]
    fn family() -> Family<Self> {
        Family {
            table: &SOURCES_V4,
            pages: &PAGES_V4,
            rows: &ROWS_V4,
            tries: [&RULES_V4_0, &RULES_V4_1],
            bit: ruleset::V4,
            bits: 32,
        }
    }
    #[inline(always)]
    fn run(state: &mut CpuState) -> Run<'_, Ipv4Key> {
        Run {
            counter: &mut state.run_v4,
            source: &mut state.run_v4_source,
            entry: &mut state.run_v4_entry,
            unattributed: &mut state.unattributed_v4,
        }
    }
    #[inline(always)]
    fn same(a: &Ipv4Key, b: &Ipv4Key) -> bool {
        a == b
    }
    #[inline(always)]
    fn hash(address: &Ipv4Key, seed: u64) -> u64 {
        mix(u64::from(u32::from_ne_bytes(*address)), seed)
    }
    #[inline(always)]
    fn sketch(address: &Ipv4Key, run: &Counter) {
        // SAFETY: a global the loader sets.
        let mask = unsafe { core::ptr::read_volatile(&PREFIX_V4_MASK) };
        let key = [u64::from(u32::from_ne_bytes(*address) & mask), 0];
        sketch_add(&SKETCH_V4, &HEAVY_V4, &key, run);
    }
    #[inline(always)]
    fn address(&mut self) -> &mut Ipv4Key {
        &mut self.address
    }
    #[inline(always)]
    fn state(&mut self) -> *mut u64 {
        &raw mut self.state
    }
    #[inline(always)]
    fn counter(&mut self) -> *mut Counter {
        &raw mut self.counter
    }
    #[inline(always)]
    fn rule(&mut self) -> *mut u32 {
        &raw mut self.rule
    }
}

impl Entry for V6Entry {
    type Address = Ipv6Key;
    #[inline(always)]
    fn family() -> Family<Self> {
        Family {
            table: &SOURCES_V6,
            pages: &PAGES_V6,
            rows: &ROWS_V6,
            tries: [&RULES_V6_0, &RULES_V6_1],
            bit: ruleset::V6,
            bits: 128,
        }
    }
    #[inline(always)]
    fn run(state: &mut CpuState) -> Run<'_, Ipv6Key> {
        Run {
            counter: &mut state.run_v6,
            source: &mut state.run_v6_source,
            entry: &mut state.run_v6_entry,
            unattributed: &mut state.unattributed_v6,
        }
    }
    #[inline(always)]
    fn same(a: &Ipv6Key, b: &Ipv6Key) -> bool {
        words(a) == words(b)
    }
    #[inline(always)]
    fn hash(address: &Ipv6Key, seed: u64) -> u64 {
        let (a, b) = words(address);
        mix(a ^ mix(b, seed), seed)
    }
    #[inline(always)]
    fn sketch(address: &Ipv6Key, run: &Counter) {
        // SAFETY: a global the loader sets.
        let mask = unsafe { core::ptr::read_volatile(&PREFIX_V6_MASK) };
        let (a, b) = words(address);
        sketch_add(&SKETCH_V6, &HEAVY_V6, &[a & mask[0], b & mask[1]], run);
    }
    #[inline(always)]
    fn address(&mut self) -> &mut Ipv6Key {
        &mut self.address
    }
    #[inline(always)]
    fn state(&mut self) -> *mut u64 {
        &raw mut self.state
    }
    #[inline(always)]
    fn counter(&mut self) -> *mut Counter {
        &raw mut self.counter
    }
    #[inline(always)]
    fn rule(&mut self) -> *mut u32 {
        &raw mut self.rule
    }
}

/// Adds a finished run to the entry it kept; false when it has none.
/// When user space retired that entry while the run went on (the entry is
/// no longer counting the run's source), the run finds or claims another.
#[inline(always)]
fn settle<E: Entry>(
    table: &Array<E>,
    pages: &Array<u64>,
    index: u32,
    address: &E::Address,
    run: &Counter,
) -> bool {
    if index == NO_ENTRY {
        return false;
    }
    if add_if_held(table, index, address, run) {
        return true;
    }
    let index = entry_for::<E>(table, pages, address);
    index != NO_ENTRY && add_if_held(table, index, address, run)
}

/// Adds `run` to entry `index` if that entry counts `address`.
#[inline(always)]
fn add_if_held<E: Entry>(
    table: &Array<E>,
    index: u32,
    address: &E::Address,
    run: &Counter,
) -> bool {
    let Some(entry) = table.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: a live table entry; its state word is read whole.
    let entry = unsafe { &mut *entry };
    if unsafe { core::ptr::read_volatile(entry.state()) } != entry_state::READY
        || !entry.holds(address)
    {
        return false;
    }
    // SAFETY: a live entry counting this source; the adds are atomic
    // because every CPU counting the source adds to it. User space marks
    // an entry draining and then waits for a grace period before it reads
    // the final counts, so an add that saw READY here lands before that
    // read.
    unsafe { atomic_add(entry.counter(), run) };
    true
}

/// The index of `address`'s entry, claiming a free one for a new source;
/// [`NO_ENTRY`] when none within reach is free.
#[inline(always)]
fn entry_for<E: Entry>(table: &Array<E>, pages: &Array<u64>, address: &E::Address) -> u32 {
    // SAFETY: constants the loader wrote before loading.
    let (entries, seed) = unsafe {
        (
            core::ptr::read_volatile(&TABLE_ENTRIES),
            core::ptr::read_volatile(&HASH_SEED),
        )
    };
    let start = home(E::hash(address, seed), entries);
    // A second pass only after losing a claim race to another CPU, which
    // was most likely adding the same source. An entry another CPU is still
    // filling in is passed by, so two CPUs meeting a new source at the same
    // instant may give it two entries; user space adds them up.
    for _ in 0..2 {
        match probe(table, address, start, entries) {
            Probe::Found(index) => return index,
            Probe::Free(entry, index, was) => {
                // SAFETY: a live table entry. The compare-and-exchange is
                // fully ordered (BPF atomics with a fetch are), so the
                // zeroed counters user space stored before it released a
                // retired entry are visible before this CPU adds to them.
                if unsafe { compare_exchange(entry.state(), was, entry_state::CLAIMED) } {
                    *entry.address() = *address;
                    // SAFETY: the entry is ours until it is READY.
                    unsafe { core::ptr::write_volatile(entry.state(), entry_state::READY) };
                    let page = (index as usize * size_of::<E>() / TABLE_PAGE) as u32;
                    if let Some(flag) = pages.get_ptr_mut(page) {
                        // SAFETY: a live array value; any CPU may set it to 1.
                        unsafe { core::ptr::write_volatile(flag, 1) };
                    }
                    return index;
                }
            }
            Probe::Full => return NO_ENTRY,
        }
    }
    NO_ENTRY
}

/// What a probe found.
enum Probe<'a, E> {
    /// The index of the source's entry.
    Found(u32),
    /// No entry for the source; the first reusable one, its index and the
    /// state it had.
    Free(&'a mut E, u32, u64),
    /// No entry for the source and none free within reach.
    Full,
}

/// Looks for `address` from `start`, at most [`MAX_PROBES`] entries, up to
/// the first never-used entry.
#[inline(always)]
fn probe<'a, E: Entry>(
    table: &'a Array<E>,
    address: &E::Address,
    start: u32,
    entries: u32,
) -> Probe<'a, E> {
    let mut free: Option<(u32, u64)> = None;
    for step in 0..MAX_PROBES {
        let mut index = start + step;
        if index >= entries {
            index -= entries;
        }
        let Some(entry) = table.get_ptr_mut(index) else {
            break;
        };
        // SAFETY: a live table entry; its state word is read whole.
        let entry = unsafe { &mut *entry };
        let state = unsafe { core::ptr::read_volatile(entry.state()) };
        match state {
            entry_state::READY if entry.holds(address) => return Probe::Found(index),
            entry_state::EMPTY | entry_state::RETIRED if free.is_none() => {
                free = Some((index, state));
            }
            _ => {}
        }
        if state == entry_state::EMPTY {
            break;
        }
    }
    match free {
        Some((index, state)) => match table.get_ptr_mut(index) {
            // SAFETY: a live table entry.
            Some(entry) => Probe::Free(unsafe { &mut *entry }, index, state),
            None => Probe::Full,
        },
        None => Probe::Full,
    }
}

/// Atomically replaces `*word` by `new` if it is `expected`.
#[inline(always)]
unsafe fn compare_exchange(word: *mut u64, expected: u64, new: u64) -> bool {
    let mut seen = expected;
    // SAFETY: the caller passes a live, aligned word; BPF_CMPXCHG (Linux
    // 5.12) compares with r0 and leaves the old value there.
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({word} + 0, r0, {new})",
            word = in(reg) word,
            new = in(reg) new,
            inout("r0") seen,
        );
    }
    seen == expected
}

/// Atomically adds `run` to `*counter` (the BPF target has no
/// `AtomicU64::fetch_add`; BPF_ADD with BPF_ATOMIC is the kernel's xadd).
#[inline(always)]
unsafe fn atomic_add(counter: *mut Counter, run: &Counter) {
    // SAFETY: the caller passes a live, aligned counter.
    unsafe {
        let packets = &raw mut (*counter).packets;
        let bytes = &raw mut (*counter).bytes;
        core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) packets, in(reg) run.packets);
        core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) bytes, in(reg) run.bytes);
    }
}

/// Starts a run with `packets` packets of `len` bytes (volatile, so the
/// compiler keeps it ahead of settling the run it replaces).
#[inline(always)]
fn start_run(run: &mut Counter, packets: u64, len: u64) {
    // SAFETY: plain stores to a live counter.
    unsafe {
        core::ptr::write_volatile(&raw mut run.packets, packets);
        core::ptr::write_volatile(&raw mut run.bytes, len);
    }
}

#[inline(always)]
fn bump(counter: &mut Counter, packets: u64, len: u64) {
    counter.add(&Counter {
        packets,
        bytes: len,
    });
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
