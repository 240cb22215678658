//! Differential testing of the rules: proptest generates rule sets (drop,
//! pass and limit, enforced or dry run, nested prefixes of both families)
//! and frames from a small pool of sources with capture times, puts each
//! set in force on one loaded program (so every case is also a reload,
//! and every source's remembered rule must be forgotten), runs the frames
//! through the real program with BPF_PROG_TEST_RUN, and compares each
//! frame's action, each source's verdicts, the verdict totals and each
//! rule's and list's hits with a longest-prefix match and token buckets
//! written here. Sets carry lists of prefixes beside their rules.

mod common;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Mutex, OnceLock},
};

use ipnet::IpNet;
use proptest::prelude::*;
use xdpstat::{
    counts::{snapshot::Snapshot, verdicts::Verdicts},
    kernel::datapath::Datapath,
    rules::{Action, List, Mode, Rule, RuleSet},
};
use xdpstat_common::Counter;
use xdpstat_lab::frames::{self, ethertype};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn source(index: u8) -> IpAddr {
    if index < 16 {
        Ipv4Addr::new(198, 18, 7, index * 9).into()
    } else {
        Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, u16::from(index - 16) * 0x1111).into()
    }
}

fn frame(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => frames::ethernet(
            &[],
            ethertype::IPV4,
            &frames::ipv4_packet(a, Ipv4Addr::new(198, 19, 0, 1), &[], 20),
        ),
        IpAddr::V6(a) => frames::ethernet(
            &[],
            ethertype::IPV6,
            &frames::ipv6_packet(a, "2001:db8::1".parse().unwrap(), &[], 20),
        ),
    }
}

/// A rule over one of the pool's sources, cut to a prefix length that
/// often covers others too.
fn rule() -> impl Strategy<Value = Rule> {
    (
        0u8..32,
        0u8..=128,
        0u8..3,
        any::<bool>(),
        0u64..4,
        1u64..4,
        prop_oneof![Just(0u64), Just(8_000), Just(16_000), Just(40_000)],
    )
        .prop_map(|(index, len, action, enforce, pps, burst, bps)| {
            let address = source(index);
            let max = if address.is_ipv4() { 32 } else { 128 };
            let prefix = IpNet::new(address, len.min(max)).unwrap().trunc();
            let action = match action {
                0 => Action::Pass,
                1 => Action::Drop,
                // Rates of a few thousand packets a second, or of a few
                // thousand bytes a second (bursts of a second's worth: a
                // few dozen of these frames), or both: the frames' times
                // decide.
                _ => Action::Limit {
                    pps: if pps == 0 && bps == 0 {
                        1_000
                    } else {
                        pps * 1_000
                    },
                    burst,
                    bps,
                },
            };
            Rule {
                prefix,
                action,
                mode: if enforce { Mode::Enforce } else { Mode::DryRun },
                line: 0,
            }
        })
}

/// Rules, then up to two lists of prefixes (each with one action), every
/// prefix once: a prefix a rule or an earlier list has is left out of a
/// later list, as the rules file does with one of the same action.
fn rule_set() -> impl Strategy<Value = RuleSet> {
    let list = (proptest::collection::vec(rule(), 1..8), rule());
    (
        proptest::collection::vec(rule(), 0..12),
        proptest::collection::vec(list, 0..3),
    )
        .prop_map(|(mut rules, lists)| {
            let mut seen = std::collections::HashSet::new();
            rules.retain(|rule| seen.insert(rule.prefix));
            let lists = lists
                .into_iter()
                .enumerate()
                .map(|(at, (entries, behaviour))| {
                    let mut prefixes: Vec<IpNet> =
                        entries.iter().map(|entry| entry.prefix).collect();
                    prefixes.retain(|prefix| seen.insert(*prefix));
                    List {
                        name: format!("list{at}.netset"),
                        path: format!("list{at}.netset").into(),
                        action: behaviour.action,
                        mode: behaviour.mode,
                        line: 0,
                        prefixes,
                    }
                })
                .collect();
            RuleSet {
                mode: Mode::DryRun,
                rules,
                lists,
            }
        })
}

/// What the oracle judges by: a prefix, the index its hits go to, and
/// what it does.
struct Entry {
    prefix: IpNet,
    index: usize,
    action: Action,
    mode: Mode,
}

/// Every prefix of the set, rules' and lists', written out here.
fn entries(set: &RuleSet) -> Vec<Entry> {
    let rules = set.rules.iter().enumerate().map(|(index, rule)| Entry {
        prefix: rule.prefix,
        index,
        action: rule.action,
        mode: rule.mode,
    });
    let lists = set.lists.iter().enumerate().flat_map(|(at, list)| {
        list.prefixes.iter().map(move |prefix| Entry {
            prefix: *prefix,
            index: set.rules.len() + at,
            action: list.action,
            mode: list.mode,
        })
    });
    rules.chain(lists).collect()
}

/// The longest matching prefix, found the slow way.
fn longest_match(entries: &[Entry], address: IpAddr) -> Option<&Entry> {
    entries
        .iter()
        .filter(|entry| entry.prefix.contains(&address))
        .max_by_key(|entry| entry.prefix.prefix_len())
}

/// The oracle's verdict for one frame.
#[derive(Clone, Copy)]
enum Which {
    Passed,
    Dropped,
    Limited,
    WouldDrop,
    WouldLimit,
}

/// A token bucket in nanoseconds of credit, refilled by the frames' times.
struct Bucket {
    credit: u64,
    last: u64,
}

impl Bucket {
    fn take(&mut self, now: u64, pps: u64, burst: u64) -> bool {
        let cost = 1_000_000_000u64.div_ceil(pps);
        self.spend(now, cost, cost * burst)
    }

    /// `bytes` bytes at `bps` bits a second, with a second's worth of
    /// room: each byte costs 8 x 10⁹ / bps ns, kept in 1/65,536 ns and
    /// rounded up twice, so that no more than the rate passes.
    fn take_bytes(&mut self, now: u64, bytes: u64, bps: u64) -> bool {
        let per_byte_q16 = (8_000_000_000u128 << 16).div_ceil(u128::from(bps));
        let cost = (u128::from(bytes) * per_byte_q16).div_ceil(1 << 16) as u64;
        self.spend(now, cost, 1_000_000_000)
    }

    fn spend(&mut self, now: u64, cost: u64, full: u64) -> bool {
        self.credit = (self.credit + (now - self.last)).min(full);
        self.last = now;
        if self.credit >= cost {
            self.credit -= cost;
            true
        } else {
            false
        }
    }
}

fn datapath() -> &'static Mutex<Datapath> {
    static DATAPATH: OnceLock<Mutex<Datapath>> = OnceLock::new();
    DATAPATH.get_or_init(|| Mutex::new(Datapath::load(1 << 12).expect("the program loads")))
}

/// Capture times of the cases: each far past the one before, so every
/// bucket starts a case full.
fn case_start() -> u64 {
    static NEXT: Mutex<u64> = Mutex::new(1_000_000_000_000_000);
    let mut next = NEXT.lock().unwrap();
    *next += 1_000_000_000_000;
    *next
}

fn verdicts_of(snapshot: &Snapshot, address: &IpAddr) -> Verdicts {
    let total = snapshot.sources.get(address).copied().unwrap_or_default();
    snapshot.verdicts.of_source(address, &total)
}

fn minus(after: &Verdicts, before: &Verdicts) -> [Counter; 5] {
    let (a, b) = (after.named(), before.named());
    std::array::from_fn(|i| a[i].1.saturating_sub(&b[i].1))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn verdicts_match_a_longest_prefix_match_and_token_buckets(
        set in rule_set(),
        // Most frames from four sources, so that their buckets run dry
        // (a byte bucket holds a second's worth: 18 of these frames at
        // 8,000 bits a second).
        sent in proptest::collection::vec(
            (prop_oneof![3 => 0u8..4, 1 => 0u8..32], 0u64..1_500_000),
            1..80,
        ),
    ) {
        if !common::privileged("verdicts_match_a_longest_prefix_match_and_token_buckets") {
            return Ok(());
        }
        let datapath = datapath().lock().unwrap();
        datapath.put_rules(&set, "test").unwrap();
        let before = datapath.snapshot("test").unwrap();
        let mut now = case_start();
        let mut buckets: HashMap<IpAddr, (Bucket, Bucket)> = HashMap::new();
        let mut expected: HashMap<IpAddr, Verdicts> = HashMap::new();
        let entries = entries(&set);
        let mut hits = vec![Counter::default(); set.rules.len() + set.lists.len()];
        for &(index, gap) in &sent {
            now += gap;
            let address = source(index);
            let frame = frame(address);
            let one = Counter { packets: 1, bytes: frame.len() as u64 };
            let verdict = match longest_match(&entries, address) {
                None => Which::Passed,
                Some(rule) => {
                    hits[rule.index].add(&one);
                    let enforce = rule.mode == Mode::Enforce;
                    match rule.action {
                        Action::Pass => Which::Passed,
                        Action::Drop if enforce => Which::Dropped,
                        Action::Drop => Which::WouldDrop,
                        Action::Limit { pps, burst, bps } => {
                            let (packets, bytes) = buckets.entry(address).or_insert((
                                Bucket { credit: u64::MAX / 2, last: now },
                                Bucket { credit: u64::MAX / 2, last: now },
                            ));
                            // Packets first; a packet over the byte rate
                            // has spent its packet's worth.
                            let conforms = (pps == 0 || packets.take(now, pps, burst))
                                && (bps == 0 || bytes.take_bytes(now, one.bytes, bps));
                            if conforms {
                                Which::Passed
                            } else if enforce {
                                Which::Limited
                            } else {
                                Which::WouldLimit
                            }
                        }
                    }
                }
            };
            let verdicts = expected.entry(address).or_default();
            match verdict {
                Which::Passed => verdicts.passed.add(&one),
                Which::Dropped => verdicts.dropped.add(&one),
                Which::Limited => verdicts.limited.add(&one),
                Which::WouldDrop => verdicts.would_drop.add(&one),
                Which::WouldLimit => verdicts.would_limit.add(&one),
            }
            let dropped = matches!(verdict, Which::Dropped | Which::Limited);
            let action = datapath.replay_run(&frame, one.bytes, now).unwrap();
            prop_assert_eq!(action, if dropped { XDP_DROP } else { XDP_PASS }, "{} in {:?}", address, set);
        }
        let after = datapath.snapshot("test").unwrap();
        let mut totals = [Counter::default(); 5];
        for (address, verdicts) in &expected {
            let got = minus(&verdicts_of(&after, address), &verdicts_of(&before, address));
            let want: [Counter; 5] = verdicts.named().map(|(_, c)| c);
            prop_assert_eq!(got, want, "{} under {:?}", address, set);
            for (total, part) in totals.iter_mut().zip(want) {
                total.add(&part);
            }
        }
        let got = minus(&after.totals().verdicts, &before.totals().verdicts);
        prop_assert_eq!(got, totals, "totals under {:?}", set);
        let rule_hits = |snapshot: &Snapshot| -> Vec<Counter> {
            snapshot.verdicts.rules.iter().map(|hits| hits.counter).collect()
        };
        let (now_hits, then_hits) = (rule_hits(&after), rule_hits(&before));
        prop_assert_eq!(now_hits.len(), hits.len());
        for (at, want) in hits.iter().enumerate() {
            let before = then_hits.get(at).copied().unwrap_or_default();
            prop_assert_eq!(now_hits[at].saturating_sub(&before), *want, "hits of index {} in {:?}", at, set);
        }
    }
}

/// After 65,535 rule sets the generation comes round again: an entry that
/// remembered a rule under the generation's last use must not be judged by
/// it (here it would point at a drop rule; the set in force passes it).
#[test]
fn when_generations_come_round_no_entry_keeps_a_stale_rule() {
    let test = "when_generations_come_round_no_entry_keeps_a_stale_rule";
    if !common::privileged(test) {
        return;
    }
    let datapath = Datapath::load(1 << 10).unwrap();
    let sender = source(3);
    let frame = frame(sender);
    let prefix = |text: &str| -> IpNet { text.parse().unwrap() };
    let rule = |prefix, action| Rule {
        prefix,
        action,
        mode: Mode::Enforce,
        line: 0,
    };
    let set = |rules| RuleSet {
        mode: Mode::Enforce,
        rules,
        lists: Vec::new(),
    };
    // Generation 1: the sender matches rule 0, a drop, and its entry
    // remembers (1, rule 0).
    datapath
        .put_rules(
            &set(vec![rule(IpNet::new(sender, 32).unwrap(), Action::Drop)]),
            "test",
        )
        .unwrap();
    assert_eq!(datapath.test_run(&frame).unwrap(), XDP_DROP);
    // Much later: generation 65,535 ...
    datapath
        .rule_maps()
        .lock()
        .unwrap()
        .set_generation(0xfffe)
        .unwrap();
    datapath
        .put_rules(
            &set(vec![rule(prefix("203.0.113.0/24"), Action::Drop)]),
            "test",
        )
        .unwrap();
    // ... and then generation 1 again, in the same slot as the first, with
    // a drop rule at index 0 that does not match the sender and a pass
    // rule at index 1 that does.
    datapath
        .put_rules(
            &set(vec![
                rule(prefix("203.0.113.0/24"), Action::Drop),
                rule(prefix("198.18.7.0/24"), Action::Pass),
            ]),
            "test",
        )
        .unwrap();
    assert_eq!(datapath.test_run(&frame).unwrap(), XDP_PASS);
    let snapshot = datapath.snapshot("test").unwrap();
    let verdicts = verdicts_of(&snapshot, &sender);
    assert_eq!((verdicts.dropped.packets, verdicts.passed.packets), (1, 1));
}
