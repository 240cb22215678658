//! What rules cost: the hot-source and Zipf measurements with no rules,
//! with ten, and with 10,000 IPv4 plus 10,000 IPv6 prefixes; and xdpstat
//! beside a real peer, xdp-filter, each dropping the same exact
//! addresses from the same traffic.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use aya::sys::{Stats, enable_stats};
use ipnet::IpNet;
use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};
use xdpstat::{
    kernel::datapath::{Datapath, Variant},
    rules::{Action, List, Mode, Rule, RuleSet, ban::Ban, matching::Match},
};
use xdpstat_common::DEFAULT_MAX_SOURCES;
use xdpstat_lab::frames::{self, ethertype};

use crate::{
    measure::{cost_over_veth, median},
    program::{Program, RunStats},
    traffic::{Link, WATCHED, benchmark_address, ipv4_frame},
};

/// One rule set's costs.
pub struct RulesRow {
    pub name: &'static str,
    pub rules: usize,
    /// ns per run, one source, BPF_PROG_TEST_RUN.
    pub hot: f64,
    /// ns per packet, Zipf traffic over veth.
    pub zipf: f64,
}

fn rule(prefix: IpNet, action: Action) -> Rule {
    Rule {
        prefix: Some(prefix),
        matching: Match::default(),
        action,
        mode: Mode::DryRun,
        line: 0,
    }
}

/// Ten rules, as a user might write them: the benchmark traffic's /15
/// limited (a rate it never reaches, so each packet takes the bucket
/// path), part of it dropped, an exception, and rules no packet matches.
pub fn ten_rules() -> RuleSet {
    let limit = Action::Limit {
        pps: 100_000_000,
        burst: 100_000_000,
        bps: 0,
    };
    let rules = [
        ("198.18.0.0/15", limit),
        ("198.18.64.0/18", Action::Drop),
        ("198.18.7.0/24", Action::Pass),
        ("203.0.113.0/24", Action::Drop),
        ("192.0.2.0/24", Action::Drop),
        ("2001:db8:bad::/48", Action::Drop),
        ("2001:db8:1::/48", limit),
        ("2001:db8::/32", Action::Pass),
        ("2001:db8:dead::/48", Action::Drop),
        ("2001:db8:beef::/64", Action::Drop),
    ]
    .into_iter()
    .map(|(prefix, action)| rule(prefix.parse().expect("a prefix"), action))
    .collect();
    RuleSet {
        mode: Mode::DryRun,
        rules,
        lists: Vec::new(),
        ..RuleSet::default()
    }
}

/// One limit on all of the benchmark's traffic (its /15), at a rate it
/// never reaches: every packet takes the bucket path and passes.
pub fn limit_on_all() -> RuleSet {
    let limit = Action::Limit {
        pps: 100_000_000,
        burst: 100_000_000,
        bps: 0,
    };
    RuleSet {
        mode: Mode::DryRun,
        rules: vec![rule("198.18.0.0/15".parse().expect("a prefix"), limit)],
        lists: Vec::new(),
        ..RuleSet::default()
    }
}

/// A rule naming a protocol, ports and flags (`None` for a port side or
/// the prefix: any).
fn l4_rule(
    prefix: Option<&str>,
    protocol: u8,
    src: &[(u16, u16)],
    dst: &[(u16, u16)],
    syn: bool,
    action: Action,
) -> Rule {
    Rule {
        prefix: prefix.map(|p| p.parse().expect("a prefix")),
        matching: Match {
            protocol: Some(protocol),
            src_ports: src.to_vec(),
            dst_ports: dst.to_vec(),
            syn,
        },
        action,
        mode: Mode::DryRun,
        line: 0,
    }
}

/// Ten rules on protocols and ports, as a user under attack might write
/// them: a reflection drop and a SYN limit for every source, ICMP drops,
/// a network's drop with an HTTPS exception, and for the benchmark's /15
/// a limit on its UDP to ports 0-1023 (which its frames, UDP to port 0,
/// meet on their chain's second step: the bucket path) and a drop of a
/// quarter of it on its first.
pub fn ten_l4_rules() -> RuleSet {
    let limit = Action::Limit {
        pps: 100_000_000,
        burst: 100_000_000,
        bps: 0,
    };
    let reflectors = [
        (53, 53),
        (123, 123),
        (389, 389),
        (1900, 1900),
        (11211, 11211),
    ];
    let syn_limit = Action::Limit {
        pps: 50,
        burst: 50,
        bps: 0,
    };
    let mut rules = vec![
        l4_rule(None, 17, &reflectors, &[], false, Action::Drop),
        l4_rule(None, 6, &[], &[(443, 443)], true, syn_limit),
        l4_rule(None, 1, &[], &[], false, Action::Drop),
        l4_rule(None, 58, &[], &[], false, Action::Drop),
        rule("203.0.113.0/24".parse().expect("a prefix"), Action::Drop),
        l4_rule(
            Some("203.0.113.0/24"),
            6,
            &[],
            &[(443, 443)],
            false,
            Action::Pass,
        ),
        l4_rule(
            Some("198.18.0.0/15"),
            6,
            &[],
            &[(22, 22)],
            false,
            Action::Pass,
        ),
        l4_rule(Some("198.18.0.0/15"), 17, &[], &[(0, 1023)], false, limit),
        l4_rule(
            Some("198.18.64.0/18"),
            17,
            &[],
            &[(0, 0)],
            false,
            Action::Drop,
        ),
        l4_rule(
            Some("2001:db8::/32"),
            17,
            &reflectors,
            &[],
            false,
            Action::Drop,
        ),
    ];
    for (line, rule) in rules.iter_mut().enumerate() {
        rule.line = line + 1;
    }
    RuleSet {
        mode: Mode::DryRun,
        rules,
        lists: Vec::new(),
        ..RuleSet::default()
    }
}

/// The rules of [`ten_l4_rules`] about other traffic than the
/// benchmark's: each of its frames walks the whole chain of the rules
/// without a prefix (seven steps) and none matches.
pub fn l4_rules_walked_whole() -> RuleSet {
    let mut set = ten_l4_rules();
    set.rules.retain(|rule| {
        rule.prefix
            .is_none_or(|p| !p.to_string().starts_with("198.18."))
    });
    set
}

/// 10,000 IPv4 and 10,000 IPv6 prefixes: IPv4 ones of every length from
/// /8 to /32 all over the address space, 1,000 of them /32s among the
/// benchmark's senders (dropped, dry run); IPv6 ones from /33 to /128 in
/// 2001:db8::/32. A blocklist's shape.
pub fn twenty_thousand() -> RuleSet {
    let mut rng = StdRng::seed_from_u64(20_000);
    let mut seen = std::collections::HashSet::new();
    let mut rules = Vec::with_capacity(20_000);
    let mut add = |prefix: IpNet, action| {
        if seen.insert(prefix) {
            rules.push(rule(prefix, action));
            true
        } else {
            false
        }
    };
    let mut v4 = 0;
    while v4 < 1_000 {
        let source: u32 = rng.random_range(0..20_000);
        let address = IpAddr::from(benchmark_address(source));
        v4 += usize::from(add(IpNet::new(address, 32).expect("/32"), Action::Drop));
    }
    while v4 < 10_000 {
        let address = Ipv4Addr::from(rng.random::<u32>());
        let len = rng.random_range(8..=32u8);
        let prefix = IpNet::new(address.into(), len).expect("length").trunc();
        let benchmark: IpNet = "198.18.0.0/15".parse().expect("a prefix");
        if benchmark.contains(&prefix) || prefix.contains(&benchmark) {
            continue;
        }
        v4 += usize::from(add(prefix, Action::Drop));
    }
    let mut v6 = 0;
    while v6 < 10_000 {
        let address = Ipv6Addr::from(0x2001_0db8_u128 << 96 | (rng.random::<u128>() >> 32));
        let len = rng.random_range(33..=128u8);
        let prefix = IpNet::new(address.into(), len).expect("length").trunc();
        v6 += usize::from(add(prefix, Action::Drop));
    }
    RuleSet {
        mode: Mode::DryRun,
        rules,
        lists: Vec::new(),
        ..RuleSet::default()
    }
}

/// A blocklist of a million prefixes (dry run, drop): 700,000 IPv4 ones,
/// /24s and /32s all over the address space but the benchmark's, 1,000
/// of them /32s among the benchmark's senders; and 300,000 IPv6 /64s in
/// 2001:db8::/32. Loaded as one `[[list]]`.
pub fn million_list() -> RuleSet {
    let mut rng = StdRng::seed_from_u64(1_000_000);
    let mut seen = std::collections::HashSet::with_capacity(1_000_000);
    let benchmark: IpNet = "198.18.0.0/15".parse().expect("a prefix");
    while seen.len() < 1_000 {
        let source: u32 = rng.random_range(0..20_000);
        let address = IpAddr::from(benchmark_address(source));
        seen.insert(IpNet::new(address, 32).expect("/32"));
    }
    while seen.len() < 700_000 {
        let address = Ipv4Addr::from(rng.random::<u32>());
        let len = if rng.random::<bool>() { 24 } else { 32 };
        let prefix = IpNet::new(address.into(), len).expect("length").trunc();
        if !benchmark.contains(&prefix) {
            seen.insert(prefix);
        }
    }
    while seen.len() < 1_000_000 {
        let address =
            Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(rng.random::<u32>()) << 64);
        seen.insert(IpNet::new(address.into(), 64).expect("/64"));
    }
    let mut prefixes: Vec<IpNet> = seen.into_iter().collect();
    prefixes.sort_unstable();
    RuleSet {
        mode: Mode::DryRun,
        rules: Vec::new(),
        lists: vec![List {
            name: "million.netset".into(),
            path: "million.netset".into(),
            matching: Match::default(),
            action: Action::Drop,
            mode: Mode::DryRun,
            line: 1,
            prefixes,
        }],
        ..RuleSet::default()
    }
}

/// `set` with room for the most bans a datapath holds.
fn room_for_bans(set: RuleSet) -> RuleSet {
    RuleSet {
        max_bans: Some(xdpstat_common::rules::MAX_BANS as usize),
        ..set
    }
}

/// `count` hour-long drop bans of single addresses the benchmark's
/// traffic never comes from (its Zipf sources are the first 20,000 of
/// 198.18.0.0/15; these are from the 100,000th on).
fn unhit_bans(count: u32) -> Vec<Ban> {
    (0..count)
        .map(|n| {
            Ban::new(
                IpNet::from(IpAddr::V4(benchmark_address(100_000 + n))),
                Action::Drop,
                "hand",
                "benchmark",
                Some(Duration::from_secs(3600)),
            )
        })
        .collect()
}

/// The hot and Zipf costs of each rule set: none, ten, twenty thousand
/// prefixes, a million-prefix list.
pub fn rules_cost(
    link: &Link,
    frames: &[Vec<u8>],
    repeat: u32,
    rounds: usize,
) -> Result<Vec<RulesRow>> {
    // `--capture` of drops and limits, which these dry runs never have:
    // what a capture costs the packets it does not copy.
    let capture = Some(xdpstat::kernel::datapath::capture::Settings {
        verdicts: 0b110,
        snaplen: 256,
        rate: Some(1000),
    });
    let sets = [
        ("no rules", RuleSet::default(), 0, None),
        ("no rules, --capture", RuleSet::default(), 0, capture),
        ("a limit on all traffic", limit_on_all(), 0, None),
        ("10 rules", ten_rules(), 0, None),
        ("10 rules, --capture", ten_rules(), 0, capture),
        ("10 L4 rules", ten_l4_rules(), 0, None),
        (
            "7 L4 rules, 7 steps, no match",
            l4_rules_walked_whole(),
            0,
            None,
        ),
        (
            "10,000 bans",
            room_for_bans(RuleSet::default()),
            10_000,
            None,
        ),
        (
            "10 rules and 10,000 bans",
            room_for_bans(ten_rules()),
            10_000,
            None,
        ),
        ("10,000 + 10,000 prefixes", twenty_thousand(), 0, None),
        ("a 1,000,000-prefix list", million_list(), 0, None),
    ];
    // XDPSTAT_BENCH_SETS="no rules,a limit on all traffic" measures only
    // those rows (for runs side by side with another build).
    let only = std::env::var("XDPSTAT_BENCH_SETS").unwrap_or_default();
    let sets: Vec<_> = sets
        .into_iter()
        .filter(|set| only.is_empty() || only.split(',').any(|name| name == set.0))
        .collect();
    let hot_frame = ipv4_frame(1);
    let mut programs = Vec::with_capacity(sets.len());
    for (name, set, bans, capture) in &sets {
        let datapath = Datapath::load_with(xdpstat::kernel::datapath::Load {
            capture: *capture,
            ..xdpstat::kernel::datapath::Load::new(DEFAULT_MAX_SOURCES)
        })?;
        datapath.put_rules(set, WATCHED)?;
        if *bans > 0 {
            let maps = datapath.rule_maps();
            let mut maps = maps
                .lock()
                .map_err(|_| anyhow::anyhow!("the rule maps' lock"))?;
            let began = std::time::Instant::now();
            let refused = maps
                .ban_all(unhit_bans(*bans))
                .map_err(|e| anyhow::anyhow!("putting the bans in force: {e}"))?;
            let all = began.elapsed();
            anyhow::ensure!(refused == 0, "{refused} bans refused");
            // One more, as `xdpstat ban` or a trigger puts it, and out again.
            let one = Ban::new(
                IpNet::from(IpAddr::V4(benchmark_address(99_999))),
                Action::Drop,
                "hand",
                "",
                None,
            );
            let prefix = one.prefix;
            let began = std::time::Instant::now();
            maps.ban(one)
                .map_err(|e| anyhow::anyhow!("one more ban: {e}"))?
                .map_err(|e| anyhow::anyhow!("one more ban: {e}"))?;
            let more = began.elapsed();
            maps.unban(&prefix, "bench")
                .map_err(|e| anyhow::anyhow!("unban: {e}"))?;
            println!(
                "   ({name}: all {bans} put in force in {:.1} ms; one more ban then takes {:.1} ms)",
                all.as_secs_f64() * 1e3,
                more.as_secs_f64() * 1e3
            );
        }
        programs.push(Program::Xdpstat(Box::new(datapath)));
    }
    let mut hot: Vec<Vec<f64>> = vec![Vec::new(); sets.len()];
    let mut zipf: Vec<Vec<f64>> = vec![Vec::new(); sets.len()];
    // Hot first: run-time statistics (for the veth rows) add to each run.
    for _ in 0..rounds {
        for (index, program) in programs.iter_mut().enumerate() {
            let Program::Xdpstat(datapath) = program else {
                unreachable!("made as xdpstat above")
            };
            let run = datapath.timed_test_run(Variant::Linear, &hot_frame, repeat)?;
            hot[index].push(run.duration.as_nanos() as f64);
        }
    }
    let _stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    for _ in 0..rounds {
        for (index, program) in programs.iter_mut().enumerate() {
            zipf[index].push(cost_over_veth(link, program, frames)?.0);
        }
    }
    Ok(sets
        .iter()
        .zip(hot.into_iter().zip(zipf))
        .map(|((name, set, bans, _), (hot, zipf))| RulesRow {
            name,
            rules: set.prefixes().count() + *bans as usize,
            hot: median(hot),
            zipf: median(zipf),
        })
        .collect())
}

/// What the two drop beside each other.
#[derive(Clone, Copy)]
pub enum Filtered {
    /// Exact source addresses (`xdp-filter ip ADDR --mode src`, a /32
    /// rule each).
    Addresses,
    /// UDP from source port 53, which those addresses send and the rest
    /// do not (`xdp-filter port 53 --mode src`, one rule without a
    /// prefix).
    SourcePort,
}

/// xdp-filter and xdpstat, each dropping the same exact addresses' frames.
pub struct BesideXdpFilter {
    pub filtered: Filtered,
    pub addresses: usize,
    pub packets: u64,
    /// Frames sent from the dropped addresses (each pass).
    pub from_dropped: u64,
    /// ns per packet.
    pub xdp_filter: f64,
    pub xdpstat: f64,
    /// What xdpstat counted as dropped on its measured pass.
    pub xdpstat_dropped: u64,
}

/// A well-formed UDP frame from `source`, port `port`, to port 5000
/// (xdp-filter parses the ports).
fn udp_frame(source: u32, port: u16) -> Vec<u8> {
    let mut packet = frames::ipv4_packet(
        benchmark_address(source),
        Ipv4Addr::new(198, 19, 255, 254),
        &[],
        30,
    );
    packet[20..22].copy_from_slice(&port.to_be_bytes());
    packet[22..28].copy_from_slice(&[0x13, 0x88, 0, 30, 0, 0]);
    frames::ethernet(&[], ethertype::IPV4, &packet)
}

/// bpffs of the measurement's own, for libxdp's pins; removed on drop.
struct Bpffs(PathBuf);

impl Bpffs {
    fn mount() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("xdpstat-bench-bpffs-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()?;
        if !status.success() {
            bail!("mounting bpffs on {}", dir.display());
        }
        Ok(Self(dir))
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xdp-filter on the benchmark link, unloaded on drop.
struct XdpFilter<'a> {
    link: &'a Link,
    bpffs: &'a Bpffs,
}

impl XdpFilter<'_> {
    fn run(&self, args: &[&str]) -> Result<String> {
        let output = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.link.watched.name()))
            .args(["timeout", "60", "xdp-filter"])
            .args(args)
            .env("LIBXDP_BPFFS", &self.bpffs.0)
            .output()
            .context("running xdp-filter")?;
        if !output.status.success() {
            bail!(
                "xdp-filter {args:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The kernel's run-time statistics of the program on the XDP hook.
    fn stats(&self) -> Result<RunStats> {
        let text = self
            .link
            .watched
            .ip_output(&["-json", "-details", "link", "show", "dev", WATCHED])?;
        let id = text
            .split("\"id\":")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|id| id.parse::<u32>().ok())
            .context("the program id on the XDP hook")?;
        let info = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|info| info.id() == id)
            .context("xdp-filter's program")?;
        Ok(RunStats {
            run_time: info.run_time(),
            runs: info.run_count(),
        })
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["unload", WATCHED]);
    }
}

/// Both on the same Zipf traffic (as UDP), dropping the frames of
/// `addresses` source addresses drawn from its senders: by address, or
/// by their source port.
pub fn beside_xdp_filter(
    link: &Link,
    sources: &[u32],
    addresses: usize,
    filtered: Filtered,
    rounds: usize,
) -> Result<BesideXdpFilter> {
    let _stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let dropped: std::collections::HashSet<u32> =
        (0..addresses as u32).map(|n| 100 + 7 * n).collect();
    let frames: Vec<Vec<u8>> = sources
        .iter()
        .map(|&n| match filtered {
            Filtered::Addresses => udp_frame(n, 4000),
            Filtered::SourcePort => udp_frame(n, if dropped.contains(&n) { 53 } else { 4000 }),
        })
        .collect();
    let from_dropped = sources.iter().filter(|n| dropped.contains(n)).count() as u64;
    // xdpstat: one /32 drop rule per address, or one port rule, enforced.
    let rules = match filtered {
        Filtered::Addresses => dropped
            .iter()
            .map(|&n| Rule {
                prefix: Some(IpNet::new(benchmark_address(n).into(), 32).expect("/32")),
                matching: Match::default(),
                action: Action::Drop,
                mode: Mode::Enforce,
                line: 0,
            })
            .collect(),
        Filtered::SourcePort => vec![Rule {
            mode: Mode::Enforce,
            ..l4_rule(None, 17, &[(53, 53)], &[], false, Action::Drop)
        }],
    };
    let set = RuleSet {
        mode: Mode::Enforce,
        rules,
        lists: Vec::new(),
        ..RuleSet::default()
    };
    let datapath = Datapath::load(DEFAULT_MAX_SOURCES)?;
    datapath.put_rules(&set, WATCHED)?;
    let mut xdpstat = Program::Xdpstat(Box::new(datapath));
    let mut xdpstat_costs = Vec::new();
    for _ in 0..rounds {
        xdpstat_costs.push(cost_over_veth(link, &mut xdpstat, &frames)?.0);
    }
    let Program::Xdpstat(datapath) = &xdpstat else {
        unreachable!("made as xdpstat above")
    };
    let snapshot = datapath.snapshot(WATCHED)?;
    let xdpstat_dropped = snapshot.totals().verdicts.dropped.packets;
    // xdp-filter: the same addresses, source mode, native XDP.
    let bpffs = Bpffs::mount()?;
    let filter = XdpFilter {
        link,
        bpffs: &bpffs,
    };
    filter.run(&["load", WATCHED, "--mode", "native"])?;
    match filtered {
        Filtered::Addresses => {
            for &n in &dropped {
                filter.run(&["ip", &benchmark_address(n).to_string(), "--mode", "src"])?;
            }
        }
        Filtered::SourcePort => {
            filter.run(&["port", "53", "--mode", "src", "--proto", "udp"])?;
        }
    }
    let mut filter_costs = Vec::new();
    for _ in 0..rounds {
        link.send_all(&frames)?;
        let before = filter.stats()?;
        link.send_all(&frames)?;
        let mut last = filter.stats()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while last.runs - before.runs < frames.len() as u64 && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
            last = filter.stats()?;
        }
        filter_costs.push(last.per_run_since(&before)?);
    }
    drop(filter);
    Ok(BesideXdpFilter {
        filtered,
        addresses,
        packets: frames.len() as u64,
        from_dropped,
        xdp_filter: median(filter_costs),
        xdpstat: median(xdpstat_costs),
        xdpstat_dropped,
    })
}

/// Reading a rules file: how long `xdpstat` takes to read and check one
/// of `rules` rules after `lines` comment lines.
pub struct FileRead {
    pub rules: usize,
    pub lines: usize,
    pub bytes: usize,
    /// Seconds, median of the rounds.
    pub seconds: f64,
}

/// Writes such a file and reads it `rounds` times with the loader's own
/// reader (what `--rules`, SIGHUP and `rules check` run).
pub fn file_read(rules: usize, lines: usize, rounds: usize) -> Result<FileRead> {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(lines * 20 + rules * 60);
    for line in 0..lines {
        writeln!(text, "# comment line {line}")?;
    }
    text.push_str("mode = \"dry-run\"\n");
    for index in 0..rules {
        let address = Ipv4Addr::from(0xc612_0000_u32 + index as u32);
        writeln!(
            text,
            "[[rule]]\nprefix = \"{address}/32\"\naction = \"drop\""
        )?;
    }
    let path =
        std::env::temp_dir().join(format!("xdpstat-bench-rules-{}.toml", std::process::id()));
    std::fs::write(&path, &text)?;
    let mut times = Vec::with_capacity(rounds);
    let mut read = Ok(());
    for _ in 0..rounds {
        let started = std::time::Instant::now();
        match xdpstat::rules::file::load(&path) {
            Ok(set) if set.rules.len() == rules => {}
            Ok(set) => read = Err(anyhow::anyhow!("read {} rules of {rules}", set.rules.len())),
            Err(e) => read = Err(e.into()),
        }
        times.push(started.elapsed().as_secs_f64());
    }
    std::fs::remove_file(&path)?;
    read?;
    Ok(FileRead {
        rules,
        lines,
        bytes: text.len(),
        seconds: median(times),
    })
}

/// What reading costs where the reads are one per-CPU value per element:
/// the rules' hits with 10,000 + 10,000 prefixes in force, and a snapshot
/// of a flood that overflows small tables, so the prefix sketch is read.
pub struct ReadCosts {
    pub rules: usize,
    /// Milliseconds to read every rule's hits, median of the rounds.
    pub hits_ms: f64,
    pub flood_sources: u32,
    /// Milliseconds for a snapshot whose families both used the sketch.
    pub sketch_snapshot_ms: f64,
}

pub fn read_costs(rounds: usize) -> Result<ReadCosts> {
    let timed = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let started = std::time::Instant::now();
            f()?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(median(times))
    };
    let set = twenty_thousand();
    let datapath = Datapath::load(DEFAULT_MAX_SOURCES)?;
    datapath.put_rules(&set, "bench")?;
    let maps = datapath.rule_maps();
    let hits_ms = timed(&mut || {
        let hits = maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .hits()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(hits.len() == set.rules.len(), "read {} hits", hits.len());
        Ok(())
    })?;
    // Tables for 1,024 sources and 20,000 senders of each family: most
    // runs find no entry and go to the sketches.
    let flood_sources = 20_000;
    let small = Datapath::load(1024)?;
    for n in 0..flood_sources {
        small.test_run(&ipv4_frame(n))?;
        let v6 = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xbe, 0, 0, 0, (n >> 16) as u16, n as u16);
        let packet = frames::ipv6_packet(v6, "2001:db8::1".parse()?, &[], 30);
        small.test_run(&frames::ethernet(&[], ethertype::IPV6, &packet))?;
    }
    let sketch_snapshot_ms = timed(&mut || {
        small.snapshot("bench")?;
        Ok(())
    })?;
    Ok(ReadCosts {
        rules: set.rules.len(),
        hits_ms,
        flood_sources,
        sketch_snapshot_ms,
    })
}

/// What a copy costs: one source's frames, all dropped by a rule,
/// BPF_PROG_TEST_RUN'd `repeat` times with `--capture` of drops and no
/// budget while a thread drains the ring into a pcapng writer (to
/// nowhere), against the same without a capture.
pub struct CaptureCost {
    pub repeat: u32,
    /// ns per packet, without and with the capture.
    pub without: f64,
    pub with: f64,
    /// Records the writer wrote, and those the full ring skipped.
    pub written: u64,
    pub skipped: u64,
    /// Seconds the run with the capture took.
    pub seconds: f64,
}

pub fn capture_cost(repeat: u32, rounds: usize) -> Result<CaptureCost> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use xdpstat::kernel::datapath::{Load, capture::Settings};
    let frame = ipv4_frame(1);
    let mut set = RuleSet {
        rules: vec![rule(
            IpNet::from(IpAddr::V4(benchmark_address(1))),
            Action::Drop,
        )],
        ..RuleSet::default()
    };
    set.rules[0].mode = Mode::Enforce;
    let plain = Datapath::load(DEFAULT_MAX_SOURCES)?;
    plain.put_rules(&set, "bench")?;
    let mut capturing = Datapath::load_with(Load {
        capture: Some(Settings {
            verdicts: 1 << 1,
            snaplen: 256,
            rate: None,
        }),
        ..Load::new(DEFAULT_MAX_SOURCES)
    })?;
    capturing.put_rules(&set, "bench")?;
    let mut ring = capturing
        .capture_ring()
        .map_err(|e| anyhow::anyhow!("the capture ring: {e}"))?;
    let mut without = Vec::with_capacity(rounds);
    let mut with = Vec::with_capacity(rounds);
    let written = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let mut seconds = 0.0;
    std::thread::scope(|scope| -> Result<()> {
        let writer = scope.spawn(|| {
            let mut out =
                xdpstat::output::pcapng::PcapngWriter::new(std::io::sink(), 256).expect("a sink");
            loop {
                let last = done.load(Ordering::Relaxed);
                ring.drain(&mut |record| {
                    let time = Duration::from_nanos(record.header.time_ns);
                    let _ = out.packet(
                        "bench",
                        time,
                        record.header.wire_len,
                        &record.bytes,
                        "dropped by rule 198.18.0.1/32 drop",
                    );
                    written.fetch_add(1, Ordering::Relaxed);
                });
                if last {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        for _ in 0..rounds {
            let run = plain.timed_test_run(Variant::Linear, &frame, repeat)?;
            without.push(run.duration.as_nanos() as f64);
            let started = std::time::Instant::now();
            let run = capturing.timed_test_run(Variant::Linear, &frame, repeat)?;
            seconds += started.elapsed().as_secs_f64();
            with.push(run.duration.as_nanos() as f64);
        }
        done.store(true, Ordering::Relaxed);
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("the writer panicked"))?;
        Ok(())
    })?;
    let skipped = capturing.snapshot("bench")?.slots.capture_skipped.packets;
    Ok(CaptureCost {
        repeat,
        without: median(without),
        with: median(with),
        written: written.into_inner(),
        skipped,
        seconds,
    })
}

/// A spoofed flood with and without 20,000 prefixes in force.
pub struct FloodUnderRules {
    pub distinct: usize,
    /// ns per packet over veth without rules, and with the 20,000.
    pub without: f64,
    pub with: f64,
}

/// The spoofed flood of section 5 (`sources`, beyond what the tables hold,
/// so most packets' sources have no entry to remember their rule in)
/// over veth, through xdpstat without rules and with the 20,000 prefixes
/// of [`twenty_thousand`]; median of `rounds`.
pub fn flood_under_rules(link: &Link, sources: &[u32], rounds: usize) -> Result<FloodUnderRules> {
    let frames: Vec<Vec<u8>> = sources.iter().map(|&n| ipv4_frame(n)).collect();
    let distinct = {
        let mut unique = sources.to_vec();
        unique.sort_unstable();
        unique.dedup();
        unique.len()
    };
    let _stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (set, times) in [
            (RuleSet::default(), &mut without),
            (twenty_thousand(), &mut with),
        ] {
            let datapath = Datapath::load(DEFAULT_MAX_SOURCES)?;
            datapath.put_rules(&set, WATCHED)?;
            let mut program = Program::Xdpstat(Box::new(datapath));
            times.push(cost_over_veth(link, &mut program, &frames)?.0);
        }
    }
    Ok(FloodUnderRules {
        distinct,
        without: median(without),
        with: median(with),
    })
}
