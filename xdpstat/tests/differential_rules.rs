//! Differential testing of the rules: proptest generates rule sets (drop,
//! pass, allow and limit, enforced or dry run, nested prefixes of both families,
//! protocols, port lists and ranges, SYNs, rules without a prefix) and
//! frames from a small pool of sources with capture times (TCP, UDP,
//! ICMP and other protocols, IPv4 options, IPv6 extension chains, first
//! and later fragments, headers cut short), puts each
//! set in force on one loaded program (so every case is also a reload,
//! and every source's remembered rule must be forgotten), runs the frames
//! through the real program with BPF_PROG_TEST_RUN, and compares each
//! frame's action, each source's verdicts, the verdict totals and each
//! rule's and list's hits with a decision (an allow first, then the
//! longest prefix, then the rule naming more, then file order) and token buckets written here, from what
//! each frame was built to carry. Sets carry lists of prefixes beside
//! their rules.

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
    rules::{
        Action, List, Mode, Rule, RuleSet,
        matching::{Families, Match},
    },
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
    built(address, &Carried::default()).0
}

/// What a generated frame carries after its IP header.
#[derive(Clone, Debug, Default)]
struct Carried {
    /// A protocol number (IPv4's ICMP and IPv6's ICMPv6 are swapped to
    /// the frame's family).
    protocol: u8,
    ports: (u16, u16),
    flags: u8,
    /// Bytes after the IP headers: short ones cut the L4 header.
    payload: usize,
    /// IPv4 option words.
    options: usize,
    /// IPv4: a first fragment (more fragments, offset 0) or a later one.
    fragment: Option<bool>,
    /// IPv6 extension headers: next-header numbers, and a fragment
    /// header's offset.
    extensions: Vec<(u8, u16)>,
}

/// The IPv6 extension headers the program walks.
const EXTENSIONS_WALKED: usize = 6;

/// The frame from `address` carrying `carried`, and what the program
/// should make of it: protocol (`None`: not known), ports, SYN. Worked
/// out from how the frame is built, not by parsing it.
fn built(address: IpAddr, carried: &Carried) -> (Vec<u8>, Packet) {
    let l4_protocol = match (address, carried.protocol) {
        (IpAddr::V6(_), 1) => 58,
        (IpAddr::V4(_), 58) => 1,
        (_, p) => p,
    };
    let (ethertype, mut packet, at, protocol, later) = match address {
        IpAddr::V4(a) => {
            let options = vec![1u8; carried.options * 4];
            let mut packet =
                frames::ipv4_packet(a, Ipv4Addr::new(198, 19, 0, 1), &options, carried.payload);
            packet[9] = l4_protocol;
            let later = carried.fragment == Some(true);
            let word: u16 = match carried.fragment {
                None => 0x4000,
                Some(false) => 0x2000,
                Some(true) => 0x2000 | 185,
            };
            packet[6..8].copy_from_slice(&word.to_be_bytes());
            (
                ethertype::IPV4,
                packet,
                20 + options.len(),
                Some(l4_protocol),
                later,
            )
        }
        IpAddr::V6(a) => {
            let chain = frames::extension_chain(&carried.extensions);
            let mut packet =
                frames::ipv6_packet(a, "2001:db8::1".parse().unwrap(), &chain, carried.payload);
            let last_next = if chain.is_empty() {
                6
            } else {
                40 + 8 * (chain.len() - 1)
            };
            packet[last_next] = l4_protocol;
            // The walk, as the program's rules say it.
            let nexts: Vec<u8> = carried
                .extensions
                .iter()
                .map(|(next, _)| *next)
                .chain(std::iter::once(l4_protocol))
                .collect();
            let (mut protocol, mut later) = (None, false);
            // The step after the sixth header reads what follows it: a
            // later fragment's header there still names what it carries
            // (the walk of `differential.rs`, and the program's).
            for (i, &(next, offset)) in carried.extensions.iter().enumerate() {
                if i > EXTENSIONS_WALKED {
                    break;
                }
                if next == 44 && offset != 0 {
                    protocol = Some(nexts[i + 1]);
                    later = true;
                    break;
                }
            }
            if !later {
                // Up to six extension headers, then the protocol.
                protocol = (carried.extensions.len() <= EXTENSIONS_WALKED).then_some(l4_protocol);
            }
            (
                ethertype::IPV6,
                packet,
                40 + 8 * chain.len(),
                protocol,
                later,
            )
        }
    };
    // Lay the ports and flags over what payload there is.
    frames::lay_l4(&mut packet, at, carried.ports, carried.flags);
    let whole = match protocol {
        Some(6) => 20,
        Some(17) => 8,
        _ => usize::MAX,
    };
    let ports = (!later && carried.payload >= whole).then_some(carried.ports);
    let syn = protocol == Some(6) && ports.is_some() && carried.flags & 0x12 == 0x02;
    let frame = frames::ethernet(&[], ethertype, &packet);
    (
        frame,
        Packet {
            address,
            protocol,
            ports,
            syn,
        },
    )
}

fn carried() -> impl Strategy<Value = Carried> {
    let port = prop_oneof![
        Just(53u16),
        Just(443),
        Just(123),
        Just(1024),
        Just(65535),
        1000u16..1004
    ];
    let extension = prop_oneof![
        3 => (prop_oneof![Just(0u8), Just(43), Just(60)], Just(0u16)),
        1 => (Just(44u8), prop_oneof![Just(0u16), 1u16..8192]),
    ];
    (
        prop_oneof![4 => Just(6u8), 4 => Just(17u8), 1 => Just(1u8), 1 => Just(47u8)],
        (port.clone(), port),
        prop_oneof![Just(0x02u8), Just(0x12), Just(0x10)],
        prop_oneof![4 => Just(40usize), 1 => 0usize..24],
        0usize..3,
        prop_oneof![4 => Just(None), 1 => any::<bool>().prop_map(Some)],
        prop_oneof![3 => Just(Vec::new()), 1 => proptest::collection::vec(extension, 0..9)],
    )
        .prop_map(
            |(protocol, ports, flags, payload, options, fragment, extensions)| Carried {
                protocol,
                ports,
                flags,
                payload,
                options,
                fragment,
                extensions,
            },
        )
}

/// A rule's protocol, ports and flags: often none, else a protocol, and
/// for TCP and UDP ports from the frames' pool (one, a range, two), and
/// for TCP sometimes SYNs only.
fn matching() -> impl Strategy<Value = Match> {
    let ports = prop_oneof![
        2 => Just(Vec::new()),
        1 => prop_oneof![Just(53u16), Just(443), Just(1024)].prop_map(|p| vec![(p, p)]),
        1 => Just(vec![(1000u16, 1002u16)]),
        1 => Just(vec![(53u16, 53u16), (123, 123)]),
    ];
    (
        prop_oneof![3 => Just(None), 2 => Just(Some(6u8)), 2 => Just(Some(17u8)), 1 => Just(Some(1u8)), 1 => Just(Some(58u8)), 1 => Just(Some(47u8))],
        ports.clone(),
        ports,
        any::<bool>(),
    )
        .prop_map(|(protocol, src, dst, syn)| {
            let ported = matches!(protocol, Some(6 | 17));
            Match {
                protocol,
                src_ports: if ported { src } else { Vec::new() },
                // One destination range at most: a chain stays short.
                dst_ports: if ported { dst.into_iter().take(1).collect() } else { Vec::new() },
                syn: protocol == Some(6) && syn,
            }
        })
}

/// A rule over one of the pool's sources, cut to a prefix length that
/// often covers others too.
fn rule() -> impl Strategy<Value = Rule> {
    (
        (
            0u8..32,
            0u8..=128,
            prop_oneof![5 => Just(true), 1 => Just(false)],
        ),
        0u8..4,
        any::<bool>(),
        0u64..4,
        1u64..4,
        prop_oneof![Just(0u64), Just(8_000), Just(16_000), Just(40_000)],
        prop_oneof![1 => Just(Match::default()), 1 => matching()],
    )
        .prop_map(
            |((index, len, prefixed), action, enforce, pps, burst, bps, mut matching)| {
                let address = source(index);
                let max = if address.is_ipv4() { 32 } else { 128 };
                // ICMP of the prefix's own family.
                matching.protocol = match (address, matching.protocol) {
                    (IpAddr::V6(_), Some(1)) => Some(58),
                    (IpAddr::V4(_), Some(58)) => Some(1),
                    (_, p) => p,
                };
                let prefix = (prefixed || matching.is_any())
                    .then(|| IpNet::new(address, len.min(max)).unwrap().trunc());
                let action = match action {
                    0 => Action::Pass,
                    1 => Action::Drop,
                    3 => Action::Allow,
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
                    matching,
                    action,
                    mode: if enforce { Mode::Enforce } else { Mode::DryRun },
                    line: 0,
                }
            },
        )
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
            rules.retain(|rule| {
                rule.prefixes()
                    .into_iter()
                    .all(|prefix| seen.insert((prefix, rule.matching.clone())))
            });
            // File order: the rules, then the lists.
            for (at, rule) in rules.iter_mut().enumerate() {
                rule.line = 1 + 4 * at;
            }
            let lists = lists
                .into_iter()
                .enumerate()
                .map(|(at, (entries, behaviour))| {
                    let mut prefixes: Vec<IpNet> =
                        entries.iter().filter_map(|entry| entry.prefix).collect();
                    // A list's match is its behaviour's, on every prefix
                    // (ICMP only of its own family).
                    let matching = match behaviour.matching.families() {
                        Families::Both => behaviour.matching.clone(),
                        _ => Match::default(),
                    };
                    prefixes.retain(|prefix| seen.insert((*prefix, matching.clone())));
                    List {
                        name: format!("list{at}.netset"),
                        path: format!("list{at}.netset").into(),
                        matching,
                        action: behaviour.action,
                        mode: behaviour.mode,
                        line: 1000 + at,
                        prefixes,
                    }
                })
                .collect();
            RuleSet {
                mode: Mode::DryRun,
                rules,
                lists,
                ..RuleSet::default()
            }
        })
}

/// What the oracle judges by: a prefix (none: every source of the
/// match's families), what a packet must carry, the index its hits go to,
/// where it is in the file, and what it does.
struct Entry {
    prefix: Option<IpNet>,
    matching: Match,
    index: usize,
    line: usize,
    action: Action,
    mode: Mode,
}

/// Every rule and list prefix of the set, written out here.
fn entries(set: &RuleSet) -> Vec<Entry> {
    let rules = set.rules.iter().enumerate().map(|(index, rule)| Entry {
        prefix: rule.prefix,
        matching: rule.matching.clone(),
        index,
        line: rule.line,
        action: rule.action,
        mode: rule.mode,
    });
    let lists = set.lists.iter().enumerate().flat_map(|(at, list)| {
        list.prefixes.iter().map(move |prefix| Entry {
            prefix: Some(*prefix),
            matching: list.matching.clone(),
            index: set.rules.len() + at,
            line: list.line,
            action: list.action,
            mode: list.mode,
        })
    });
    rules.chain(lists).collect()
}

/// A packet as the oracle sees it.
struct Packet {
    address: IpAddr,
    protocol: Option<u8>,
    ports: Option<(u16, u16)>,
    syn: bool,
}

/// Whether `entry` applies to the packet's source (its prefix holds it;
/// no prefix: its families do).
fn covers(entry: &Entry, address: IpAddr) -> bool {
    match entry.prefix {
        Some(prefix) => prefix.contains(&address),
        None => match entry.matching.families() {
            Families::Both => true,
            Families::V4 => address.is_ipv4(),
            Families::V6 => address.is_ipv6(),
        },
    }
}

/// Whether every field of `matching` holds for the packet.
fn fits(matching: &Match, packet: &Packet) -> bool {
    let within = |ranges: &[(u16, u16)], port: u16| {
        ranges
            .iter()
            .any(|&(low, high)| (low..=high).contains(&port))
    };
    matching.protocol.is_none_or(|p| packet.protocol == Some(p))
        && (!matching.syn || packet.syn)
        && (matching.src_ports.is_empty()
            || packet
                .ports
                .is_some_and(|(s, _)| within(&matching.src_ports, s)))
        && (matching.dst_ports.is_empty()
            || packet
                .ports
                .is_some_and(|(_, d)| within(&matching.dst_ports, d)))
}

/// The order rules decide in: the longest prefix, then the one naming
/// more, then the earlier in the file.
fn rank(entry: &Entry) -> (bool, u8, u8, std::cmp::Reverse<usize>) {
    (
        entry.action == Action::Allow,
        entry.prefix.map_or(0, |p| p.prefix_len()),
        entry.matching.specificity(),
        std::cmp::Reverse(entry.line),
    )
}

/// The rule that decides for the packet, found the slow way, and whether
/// it takes from the source's own buckets: it does when no limit comes
/// before it among the rules that could decide for a packet from that
/// source (those covering it, in deciding order, up to the first that
/// names nothing); a later limit takes from its rule's shared buckets.
fn decide<'a>(entries: &'a [Entry], packet: &Packet) -> Option<(&'a Entry, bool)> {
    let mut around: Vec<&Entry> = entries
        .iter()
        .filter(|entry| covers(entry, packet.address))
        .collect();
    around.sort_by_key(|entry| std::cmp::Reverse(rank(entry)));
    if let Some(last) = around.iter().position(|entry| entry.matching.is_any()) {
        around.truncate(last + 1);
    }
    let deciding = around
        .iter()
        .copied()
        .filter(|entry| fits(&entry.matching, packet))
        .max_by_key(|entry| rank(entry))?;
    let first_limit = around
        .iter()
        .find(|entry| matches!(entry.action, Action::Limit { .. }))
        .map(|entry| entry.index);
    Some((deciding, first_limit == Some(deciding.index)))
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
    let total = snapshot.sources.get(address).unwrap_or_default();
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
            (prop_oneof![3 => 0u8..4, 1 => 0u8..32], 0u64..1_500_000, carried()),
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
        // A source's own buckets, and each rule's shared ones.
        let mut buckets: HashMap<IpAddr, (Bucket, Bucket)> = HashMap::new();
        let mut shared: HashMap<usize, (Bucket, Bucket)> = HashMap::new();
        let mut expected: HashMap<IpAddr, Verdicts> = HashMap::new();
        let entries = entries(&set);
        let mut hits = vec![Counter::default(); set.rules.len() + set.lists.len()];
        for (index, gap, carried) in &sent {
            now += gap;
            let address = source(*index);
            let (frame, packet) = built(address, carried);
            let one = Counter { packets: 1, bytes: frame.len() as u64 };
            let verdict = match decide(&entries, &packet) {
                None => Which::Passed,
                Some((rule, own)) => {
                    hits[rule.index].add(&one);
                    let enforce = rule.mode == Mode::Enforce;
                    match rule.action {
                        Action::Pass | Action::Allow => Which::Passed,
                        Action::Drop if enforce => Which::Dropped,
                        Action::Drop => Which::WouldDrop,
                        Action::Limit { pps, burst, bps } => {
                            let full = (
                                Bucket { credit: u64::MAX / 2, last: now },
                                Bucket { credit: u64::MAX / 2, last: now },
                            );
                            let (packets, bytes) = if own {
                                buckets.entry(address).or_insert(full)
                            } else {
                                shared.entry(rule.index).or_insert(full)
                            };
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
            prop_assert_eq!(action, if dropped { XDP_DROP } else { XDP_PASS }, "{} carrying {:?} in {:?}", address, carried, set);
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
        prefix: Some(prefix),
        matching: Match::default(),
        action,
        mode: Mode::Enforce,
        line: 0,
    };
    let set = |rules| RuleSet {
        mode: Mode::Enforce,
        rules,
        lists: Vec::new(),
        ..RuleSet::default()
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
