//! The command line: `xdpstat [OPTIONS] <IFACE>...` counts on real
//! interfaces, `xdpstat demo` on a private veth pair it makes itself. Doc
//! comments here are the `--help` text.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    counts::prefixes::PrefixLens,
    kernel::attach::{AttachMode, Hook},
    kernel::datapath::capture::{DEFAULT_VERDICTS, Settings, verdict_mask},
    kernel::pins::DEFAULT_PIN_ROOT,
    output::Format,
};

/// Count packets and bytes per source IP address at the XDP hook, before the
/// kernel's network stack sees them, and print the counts every interval
/// until Ctrl-C.
#[derive(Debug, Parser)]
#[command(
    name = "xdpstat",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// Interfaces to watch (one XDP program and one report per interface).
    #[arg(value_name = "IFACE", required_unless_present = "generate_docs")]
    pub interfaces: Vec<String>,

    /// Write the man pages (DIR/man) and the bash, zsh and fish
    /// completions (DIR/completions) made from these very definitions;
    /// for packaging.
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    pub generate_docs: Option<PathBuf>,

    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub attach: AttachArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    #[command(flatten)]
    pub persist: PersistArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Counting that outlives the process.
#[derive(Debug, Args, Clone)]
pub struct PersistArgs {
    /// Pin the program's maps and link on bpffs so counting goes on when
    /// xdpstat exits, and pick up what an earlier `--persist` run pinned:
    /// the same counts, nothing missed in between. `xdpstat detach IFACE`
    /// removes it.
    #[arg(long)]
    pub persist: bool,

    /// Where `--persist` pins (bpffs is mounted there if it is not).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT, requires = "persist")]
    pub pin_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// Persisted interfaces to detach from; their pins and counts go.
    #[arg(value_name = "IFACE", required_unless_present = "stale")]
    pub interfaces: Vec<String>,

    /// Remove every pin directory `xdpstat status` lists as stale or
    /// incomplete (an interface or network namespace that is gone, a start
    /// that died), in any network namespace, and nothing else.
    #[arg(long, conflicts_with = "interfaces")]
    pub stale: bool,

    /// The pin root `--persist` used.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pub pin_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Plain)]
    pub format: StatusFormat,

    /// The pin root `--persist` used.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pub pin_dir: PathBuf,
}

/// How `xdpstat status` and `xdpstat doctor` print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Plain,
    Json,
}

/// Prometheus metrics, next to whatever `--format` shows.
#[derive(Debug, Args, Clone)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9435) at
    /// /metrics; a non-loopback address gets a warning, since the metrics
    /// name traffic sources.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Per-source series: the N sources with the highest packet rate, plus
    /// one source="other" series for the rest.
    #[arg(long, value_name = "N", default_value_t = crate::output::metrics::DEFAULT_TOP)]
    pub metrics_top: usize,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make two private network namespaces joined by a veth pair, attach to
    /// one end, send traffic from a handful of IPv4 and IPv6 sources (some
    /// VLAN-tagged) from the other, show the live report, and remove it all.
    Demo(DemoArgs),
    /// Run every Ethernet frame of pcap or pcapng captures through the XDP
    /// program with BPF_PROG_TEST_RUN (no interface is touched) and print
    /// the report a live run would have printed, one per file.
    Replay(ReplayArgs),
    /// Detach from persisted interfaces (`--persist`) and remove their
    /// pins. An interface with nothing attached is said so, and is no error.
    Detach(DetachArgs),
    /// List every interface where xdpstat's program is attached, persisted
    /// or not, with the process reading it.
    Status(StatusArgs),
    /// Check the host and interfaces for what attaching needs, and say why
    /// it would fail or end in generic mode and what to do; changes nothing.
    /// Exit status 1 when a check fails.
    Doctor(DoctorArgs),
    /// Work with rules files (`--rules`).
    Rules(RulesArgs),
    /// Drop (or limit) a source address or prefix on an interface xdpstat
    /// counts on, above its rules (an allow still wins), for a while. In
    /// force before the command returns; the datapath ends it on time by
    /// itself.
    Ban(BanArgs),
    /// Take a ban out of force.
    Unban(UnbanArgs),
    /// List the bans in force, with the packets and bytes each judged.
    Bans(BansArgs),
}

#[derive(Debug, Args)]
pub struct BanArgs {
    /// The interface a running xdpstat counts on.
    #[arg(value_name = "IFACE")]
    pub interface: String,

    /// An address (a /32 or /128) or a prefix (`198.51.100.0/24`).
    #[arg(value_name = "PREFIX")]
    pub prefix: String,

    /// How long (`90s`, `10m`, `1h`, `2d`); `0`: until `xdpstat unban`.
    #[arg(long = "for", value_name = "DURATION", default_value = "1h")]
    pub length: String,

    /// Limit to PPS packets a second (a burst of a second's worth) instead
    /// of dropping; the limit is shared by the sources under a prefix.
    #[arg(long, value_name = "PPS", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub limit: Option<u64>,

    /// Why, for the reports and `xdpstat bans` (up to 80 bytes).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,

    /// The pin root of a `--persist`ed interface no xdpstat runs on (the
    /// ban is then written into its pins).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pub pin_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct UnbanArgs {
    #[arg(value_name = "IFACE")]
    pub interface: String,

    /// The banned prefix, exactly as banned (an address is its /32 or /128).
    #[arg(value_name = "PREFIX")]
    pub prefix: String,

    /// The pin root of a `--persist`ed interface no xdpstat runs on.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pub pin_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct BansArgs {
    /// Interfaces (none: every interface a running xdpstat counts on in
    /// this network namespace).
    #[arg(value_name = "IFACE")]
    pub interfaces: Vec<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Plain)]
    pub format: StatusFormat,

    /// The pin root of `--persist`ed interfaces no xdpstat runs on.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pub pin_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Interfaces to check (none: the host only).
    #[arg(value_name = "IFACE")]
    pub interfaces: Vec<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Plain)]
    pub format: StatusFormat,

    /// The --max-sources to judge memory for.
    #[arg(long, value_name = "N", default_value_t = xdpstat_common::DEFAULT_MAX_SOURCES,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_sources: u32,

    /// The rules file the run would use (its rules and their per-source
    /// state count in the memory judged).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,

    /// Judge memory for a `--persist` run (which keeps rule state beside
    /// every source, rules or not).
    #[arg(long)]
    pub persist: bool,

    /// The pin root `--persist` uses.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pub pin_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Captures to replay (pcap in either byte order, micro- or nanosecond,
    /// or pcapng), each with a report of its own; `-` is standard input, and
    /// a pipe replays as it is written (`tcpdump -w - | xdpstat replay -`).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<std::path::PathBuf>,

    /// Report format (plain or json; the JSON object has the file as its
    /// interface and a null interval_s).
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Show only the N sources with most packets (default: 20 for plain, all for json).
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,

    /// Sources per address family the program's tables are planned for.
    #[arg(long, value_name = "N", default_value_t = xdpstat_common::DEFAULT_MAX_SOURCES,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_sources: u32,

    /// Network prefix lengths, IPv4,IPv6, that traffic is also totalled under.
    #[arg(long, value_name = "V4,V6", default_value = "24,48")]
    pub prefix_len: PrefixLens,

    /// What these rules would have done to the captured traffic (rate
    /// limits keep time by the capture's timestamps).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,

    /// With --rules: the frames the rules would act on, written as pcapng
    /// with their capture times (a replay copies every one: it has no
    /// budget, and --capture-rate is not used).
    #[command(flatten)]
    pub capture: CaptureArgs,
}

#[derive(Debug, Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub command: RulesCommand,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Check a rules file and print what each rule would do; needs no
    /// privilege. Exit status 2 and the file's line on a bad file.
    Check(RulesCheckArgs),
}

#[derive(Debug, Args)]
pub struct RulesCheckArgs {
    /// The rules file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub attach: AttachArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// How reports look and how often they come.
#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    /// Seconds between reports (fractions allowed).
    #[arg(long, default_value = "1", value_parser = parse_seconds)]
    pub interval: Duration,

    /// Exit by itself after this many seconds, with a final report
    /// (`xdpstat demo` defaults to 10).
    #[arg(long, value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Report format [default: tui when stdout is a terminal, else plain].
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Show only the N sources with most packets (default: 20 for plain, all for json).
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
}

/// Where and how the program attaches.
#[derive(Debug, Args, Clone)]
pub struct AttachArgs {
    /// Attach mode: auto tries native XDP, then generic.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub mode: AttachMode,

    /// Where to count: the XDP hook, or tc ingress through a tcx link
    /// (Linux 6.6), beside a program that holds the XDP hook.
    #[arg(long, value_enum, default_value_t = Hook::Xdp)]
    pub hook: Hook,

    /// Sources per address family and interface the tables are planned for;
    /// past 7/8 of it, idle sources are retired and their packets reported
    /// as `unattributed`.
    #[arg(long, value_name = "N", default_value_t = xdpstat_common::DEFAULT_MAX_SOURCES,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_sources: u32,

    /// Network prefix lengths, IPv4,IPv6, that traffic is also totalled
    /// under (exact where xdpstat knows the sources, estimated with a
    /// bound for a flood the tables cannot hold).
    #[arg(long, value_name = "V4,V6", default_value = "24,48")]
    pub prefix_len: PrefixLens,

    /// Drop and rate-limit rules (TOML; `xdpstat rules check FILE` shows
    /// what they would do). Dry run unless the file says `mode =
    /// "enforce"`; SIGHUP reloads the file.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,

    #[command(flatten)]
    pub capture: CaptureArgs,
}

/// `--capture`: the packets rules and bans act on, written to a file.
#[derive(Debug, Args, Clone)]
pub struct CaptureArgs {
    /// Write the packets whose verdict is in --capture-verdicts to FILE as
    /// pcapng (tcpdump -r, tshark -r, wireshark read it), each with a
    /// comment naming its verdict and the rule, list or ban behind it: a
    /// new file, or a named pipe.
    #[arg(long, value_name = "FILE")]
    pub capture: Option<PathBuf>,

    /// The verdicts captured, comma-separated: passed, dropped, limited,
    /// would_drop, would_limit.
    #[arg(long, value_name = "LIST", default_value = DEFAULT_VERDICTS, requires = "capture")]
    pub capture_verdicts: String,

    /// Bytes of each packet captured (its length on the wire is kept).
    #[arg(long, value_name = "BYTES", default_value_t = 256, requires = "capture",
          value_parser = clap::value_parser!(u32).range(14..=1024))]
    pub capture_snaplen: u32,

    /// Packets captured a second per CPU at most; beyond, they are counted
    /// as capture_skipped.
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "capture",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub capture_rate: u64,
}

impl CaptureArgs {
    /// What the program is loaded to copy (`None` without `--capture`);
    /// `budget`: a per-CPU rate (a live run), or none (a replay).
    pub fn settings(&self, budget: bool) -> Result<Option<Settings>, crate::error::XdpstatError> {
        if self.capture.is_none() {
            return Ok(None);
        }
        Ok(Some(Settings {
            verdicts: verdict_mask(&self.capture_verdicts)
                .map_err(crate::error::XdpstatError::Usage)?,
            snaplen: self.capture_snaplen,
            rate: budget.then_some(self.capture_rate),
        }))
    }
}

impl AttachArgs {
    /// What a persisted start holds against the pinned setup.
    pub fn setup(&self) -> crate::kernel::persist::Setup {
        crate::kernel::persist::Setup {
            mode: self.mode,
            hook: self.hook,
            max_sources: self.max_sources,
            prefix_len: self.prefix_len,
            rules_given: self.rules.is_some(),
            capture: self.capture.settings(true).ok().flatten(),
        }
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.01..=86_400.0).contains(&seconds) {
        return Err(format!("{text} s is out of range (0.01 to 86400)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn plain_form_takes_interfaces_and_options() {
        let cli = Cli::try_parse_from([
            "xdpstat",
            "eth0",
            "eth1",
            "--interval",
            "5",
            "--format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.interfaces, ["eth0", "eth1"]);
        assert_eq!(cli.report.interval, Duration::from_secs(5));
        assert_eq!(cli.report.format, Some(Format::Json));
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from(["xdpstat", "--mode", "generic", "eth0"]).unwrap();
        assert_eq!(cli.attach.mode, AttachMode::Generic);
    }

    #[test]
    fn persistence_options_and_commands() {
        let cli = Cli::try_parse_from(["xdpstat", "--persist", "eth0"]).unwrap();
        assert!(cli.persist.persist);
        assert_eq!(cli.persist.pin_dir, PathBuf::from(DEFAULT_PIN_ROOT));
        let cli = Cli::try_parse_from(["xdpstat", "detach", "eth0", "eth1"]).unwrap();
        match cli.command {
            Some(Command::Detach(args)) => assert_eq!(args.interfaces, ["eth0", "eth1"]),
            other => panic!("expected detach, got {other:?}"),
        }
        let cli = Cli::try_parse_from(["xdpstat", "status", "--format", "json"]).unwrap();
        match cli.command {
            Some(Command::Status(args)) => assert_eq!(args.format, StatusFormat::Json),
            other => panic!("expected status, got {other:?}"),
        }
    }

    #[test]
    fn demo_is_a_subcommand() {
        let cli = Cli::try_parse_from(["xdpstat", "demo", "--duration", "3"]).unwrap();
        match cli.command {
            Some(Command::Demo(args)) => {
                assert_eq!(args.report.duration, Some(Duration::from_secs(3)))
            }
            other => panic!("expected demo, got {other:?}"),
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["xdpstat"]).is_err());
        assert!(Cli::try_parse_from(["xdpstat", "--interval", "0", "eth0"]).is_err());
        assert!(Cli::try_parse_from(["xdpstat", "--interval", "abc", "eth0"]).is_err());
        assert!(Cli::try_parse_from(["xdpstat", "--max-sources", "0", "eth0"]).is_err());
        assert!(Cli::try_parse_from(["xdpstat", "--mode", "turbo", "eth0"]).is_err());
        assert!(Cli::try_parse_from(["xdpstat", "--pin-dir", "/x", "eth0"]).is_err());
        assert!(Cli::try_parse_from(["xdpstat", "detach"]).is_err());
        assert!(Cli::try_parse_from(["xdpstat", "detach", "--stale", "eth0"]).is_err());
        assert!(Cli::try_parse_from(["xdpstat", "detach", "--stale"]).is_ok());
    }
}
