//! Judging an IP packet by the rule set in force (see
//! `xdpstat_common::rules`), after it was counted: which chain of rules is
//! its source's (remembered by its table entry for the rule set in force,
//! or found by longest prefix), which rule on it decides for the packet's
//! protocol, ports and flags (the first whose fields match), what that
//! rule does to it (pass, drop, or limit by its source's token bucket),
//! and the verdict counted per CPU, per rule and per source. A family with
//! no rules costs one array read.

use aya_ebpf::{helpers::bpf_get_smp_processor_id, maps::lpm_trie::Key};
use xdpstat_common::{
    Counter, CpuState, capture, page_flag,
    rules::{
        BYTE_BUCKETS, Buckets, MAX_NODES, MAX_RULES, MAX_WALK, RULE_HITS_SECTION, Rule, SourceRow,
        action, byte_cost, cached, conform_cost, fields, ruleset, verdict,
    },
};

use crate::{
    atomics::{atomic_add, bump, compare_exchange},
    maps::{CHAINS, RULE_BUCKETS, RULE_HITS, RULES, RULESET},
    packet::Packet,
    table::{Entry, Family, counting, page_of, set_page_flag},
};

/// The rule set in force for a family: its slot and generation.
#[derive(Clone, Copy)]
struct InForce {
    slot: u32,
    generation: u32,
}

/// Judges a packet from `source` (whose run settles into table entry
/// `entry`, or into none), carrying what the CPU state's `transport` word
/// says, by the rule set in force, counts its verdict, and says whether
/// to drop it. A source an entry holds has a row at the entry's index,
/// which remembers its chain (one trie lookup per source and rule set,
/// not per packet), keeps its bucket and counts its verdicts; a source no
/// entry holds is looked up in the trie every time and limited by its
/// rule's shared bucket.
#[inline(always)]
pub fn judge<E: Entry>(
    family: &Family<E>,
    source: &E::Address,
    entry: u32,
    state: &mut CpuState,
    packet: Packet,
) -> bool {
    let Some(in_force) = in_force(family.bit) else {
        return false;
    };
    // SAFETY: this CPU's state, which `count` filled for this packet.
    let transport = unsafe { core::ptr::read_volatile(&raw const state.transport) };
    let held = counting(family.table, entry, source);
    let Some(head) = chain_of(family, in_force, source, held) else {
        return false;
    };
    let Some((rule_index, node_fields)) = deciding(in_force.slot, head, transport, packet) else {
        return false;
    };
    let at = in_force.slot * MAX_RULES + rule_index;
    let Some(rule) = RULES.get(at) else {
        return false;
    };
    // SAFETY: a helper with no arguments (the verifier inlines it).
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if let Some(hits) = RULE_HITS.get_ptr_mut(cpu * RULE_HITS_SECTION + at) {
        // SAFETY: a live array value in this CPU's section, which only
        // this CPU writes; XDP does not nest on a CPU. User space only
        // reads it, a word at a time.
        bump(unsafe { &mut *hits }, packet.packets, packet.len);
    }
    // A held source's row and buckets are at its entry's index; its
    // buckets are the first limit's on the chain.
    let row = held.and_then(|_| family.rows.get_ptr_mut(entry));
    let buckets = if node_fields & u32::from(fields::SHARED_BUCKET) == 0 {
        held.and_then(|_| family.buckets.get_ptr_mut(entry))
    } else {
        None
    };
    let decided = acted(rule, at, buckets, state, packet);
    // For the capture: the verdict (the acted ones after `passed`) and
    // the rule behind it.
    // For the capture (which reads it only when asked for): the verdict
    // and the rule behind it.
    let code = decided.map_or(capture::verdict::PASSED, |acted| acted as u32 + 1);
    // SAFETY: a field of this CPU's live slot.
    unsafe { core::ptr::write_volatile(&raw mut state.judged, capture::judged(code, at)) };
    match decided {
        Some(acted) => {
            count_verdict(acted, state, row, packet);
            if row.is_some() {
                // User space reads the rows of flagged pages only.
                set_page_flag(family.pages, page_of::<E>(entry), page_flag::ROWS);
            }
            acted == verdict::DROPPED || acted == verdict::LIMITED
        }
        None => false,
    }
}

/// The rule set in force, when it has rules for the family of `bit`.
#[inline(always)]
fn in_force(bit: u64) -> Option<InForce> {
    let word = RULESET.get_ptr(0)?;
    // SAFETY: a live array value, read once: the whole packet is judged by
    // the slot it names.
    let word = unsafe { core::ptr::read_volatile(word) };
    if word & bit == 0 {
        return None;
    }
    Some(InForce {
        slot: (word & ruleset::SLOT) as u32,
        generation: ((word & ruleset::GENERATION_MASK) >> ruleset::GENERATION_SHIFT) as u32,
    })
}

/// The head of `source`'s chain in the set in force, if a prefix matches:
/// what the entry `held` remembers under this generation, or else the
/// longest match in the slot's trie (then remembered by the entry).
#[inline(always)]
fn chain_of<E: Entry>(
    family: &Family<E>,
    in_force: InForce,
    source: &E::Address,
    held: Option<*mut E>,
) -> Option<u32> {
    let remembered_at = held.map(|entry| {
        // SAFETY: a live entry counting this source.
        unsafe { E::rule(entry) }
    });
    let remembered = match remembered_at {
        // SAFETY: a live entry's rule word, read whole.
        Some(word) => unsafe { core::ptr::read_volatile(word) },
        None => 0,
    };
    if remembered != 0 && remembered >> cached::GENERATION_SHIFT == in_force.generation {
        return match remembered & cached::RULE_MASK {
            0 => None,
            plus_one => Some(plus_one - 1),
        };
    }
    let key = Key::new(family.bits, *source);
    let found = if in_force.slot == 0 {
        family.tries[0].get(&key)
    } else {
        family.tries[1].get(&key)
    };
    let index = found.copied();
    if let Some(word) = remembered_at {
        let plus_one = index.map_or(0, |index| (index + 1) & cached::RULE_MASK);
        // SAFETY: a live entry's rule word; any CPU may store the same
        // answer, whole.
        unsafe {
            core::ptr::write_volatile(
                word,
                in_force.generation << cached::GENERATION_SHIFT | plus_one,
            );
        }
    }
    index
}

/// The first node of the chain at `head` in `slot` whose fields match
/// the packet's `transport` word and that has not ended (a ban's node
/// ends at its `until_ns`: the clock is read only at such a node): the
/// index and fields of the rule that decides for the packet, if any does.
/// The walk yields them as scalars, so that every way out of it is one
/// state to the verifier.
#[inline(always)]
fn deciding(slot: u32, head: u32, transport: u64, packet: Packet) -> Option<(u32, u32)> {
    let base = slot * MAX_NODES;
    let mut at = head;
    let mut found = NOT_FOUND;
    for _ in 0..MAX_WALK {
        let Some(node) = CHAINS.get(base + at) else {
            break;
        };
        if node.matches(transport) && (node.until_ns == 0 || packet.clock.now() < node.until_ns) {
            found = u64::from(node.fields) << 32 | u64::from(node.rule);
            break;
        }
        if node.next == 0 {
            break;
        }
        at = node.next - 1;
    }
    if found == NOT_FOUND {
        return None;
    }
    Some((found as u32, (found >> 32) as u32))
}

/// No node of the chain matched.
const NOT_FOUND: u64 = u64::MAX;

/// What `rule` (at `at` in the rule maps) does to the packet: `None` when
/// it passes, else the verdict (`DROPPED`, `LIMITED`, or in a dry run
/// `WOULD_DROP`, `WOULD_LIMIT`). A limit takes from the source's
/// `buckets`, or, for a source no entry holds, from the rule's shared ones.
#[inline(always)]
fn acted(
    rule: &Rule,
    at: u32,
    buckets: Option<*mut Buckets>,
    state: &mut CpuState,
    packet: Packet,
) -> Option<usize> {
    let enforce = rule.enforce != 0;
    // Only a drop and a limit act; every other action (pass, allow) is a
    // pass here, where it decided.
    if rule.action == action::DROP {
        return Some(if enforce {
            verdict::DROPPED
        } else {
            verdict::WOULD_DROP
        });
    }
    if rule.action != action::LIMIT {
        return None;
    }
    let now = if rule.coarse != 0 {
        packet.clock.coarse_now()
    } else {
        packet.clock.now()
    };
    let buckets = match buckets {
        // SAFETY: live buckets; their words are only changed whole.
        Some(buckets) => unsafe { (&raw mut (*buckets).tat, &raw mut (*buckets).tat_bytes) },
        None => {
            bump(&mut state.shared_bucket, packet.packets, packet.len);
            (
                RULE_BUCKETS.get_ptr_mut(at)?,
                RULE_BUCKETS.get_ptr_mut(BYTE_BUCKETS + at)?,
            )
        }
    };
    // Packets first, then bytes: a packet over either rate is limited (one
    // that takes its packet's worth and is then over the byte rate has
    // spent that worth: a limit errs on the side of passing less).
    // At most 10^9 ns a packet (the loader caps rates) times 2^16 (GRO
    // segments): no overflow, and no 128-bit multiply, which BPF lacks.
    let cost = rule.interval_ns.wrapping_mul(packet.packets);
    // SAFETY: live, aligned bucket words.
    let conforms = (rule.interval_ns == 0
        || unsafe { take(buckets.0, now, cost, rule.tolerance_ns) })
        && (rule.byte_q16 == 0
            || unsafe {
                take(
                    buckets.1,
                    now,
                    byte_cost(packet.len, rule.byte_q16),
                    rule.byte_tolerance_ns,
                )
            });
    if conforms {
        return None;
    }
    Some(if enforce {
        verdict::LIMITED
    } else {
        verdict::WOULD_LIMIT
    })
}

/// Counts verdict `acted` in this CPU's totals and in the source's row.
#[inline(always)]
fn count_verdict(acted: usize, state: &mut CpuState, row: Option<*mut SourceRow>, packet: Packet) {
    if let Some(counter) = state.acted.get_mut(acted) {
        bump(counter, packet.packets, packet.len);
    }
    if let Some(row) = row {
        // SAFETY: a live row; every CPU judging the source adds to it, so
        // the adds are atomic and no reference to it is made.
        unsafe {
            let counters = &raw mut (*row).acted;
            if acted < verdict::ACTED {
                atomic_add(
                    (counters as *mut Counter).add(acted),
                    &Counter {
                        packets: packet.packets,
                        bytes: packet.len,
                    },
                );
            }
        }
    }
}

/// Takes `cost` nanoseconds' worth from the bucket word at `bucket` if
/// that conforms to the rate; false when it is over it. Another CPU changing
/// the word meanwhile makes this one look again, a few times at most
/// (then the packets count as over the rate: never more than the rate
/// passes).
///
/// # Safety
/// `bucket` points to a live, aligned u64.
#[inline(always)]
unsafe fn take(bucket: *mut u64, now: u64, cost: u64, tolerance: u64) -> bool {
    for _ in 0..4 {
        // SAFETY: the caller's live, aligned word.
        let seen = unsafe { core::ptr::read_volatile(bucket) };
        let Some(next) = conform_cost(seen, now, cost, tolerance) else {
            return false;
        };
        // SAFETY: as above.
        if unsafe { compare_exchange(bucket, seen, next) } {
            return true;
        }
    }
    false
}
