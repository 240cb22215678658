//! The errors a user of xdpstat can meet, each with the context needed to act
//! on it (which interface, which capability, which mode to try instead).

use std::io;

/// The error underneath one of xdpstat's: aya's, the kernel's, or a
/// sentence where there is nothing more to say. Kept as the source, so the
/// chain is printed once, by [`one_line`].
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can stop xdpstat from attaching, counting or reporting.
#[derive(Debug, thiserror::Error)]
pub enum XdpstatError {
    /// The process lacks capabilities that loading or attaching XDP needs.
    #[error(
        "missing capabilities: {missing}; run xdpstat as root (sudo) or grant them with `setcap cap_bpf,cap_perfmon,cap_net_admin+ep <path to xdpstat>`"
    )]
    MissingCapabilities {
        /// Names of the missing capabilities, comma-separated.
        missing: String,
    },

    /// The running kernel lacks a feature xdpstat relies on.
    #[error("this kernel ({release}) is too old: xdpstat needs Linux {needed} or newer ({why})")]
    KernelTooOld {
        /// `uname -r` of the running kernel.
        release: String,
        /// The oldest release that has what is needed.
        needed: &'static str,
        /// What the feature is.
        why: &'static str,
    },

    /// No interface has that name in this network namespace.
    #[error("no such network interface: {interface} (`ip link show` lists them)")]
    UnknownInterface {
        /// The name the user gave.
        interface: String,
    },

    /// The same interface was named twice on the command line.
    #[error("interface {interface} is named more than once")]
    DuplicateInterface {
        /// The repeated name.
        interface: String,
    },

    /// Another XDP program already sits on the interface.
    #[error(
        "{interface}: another XDP program holds the XDP hook ({existing}); count beside it at tc ingress with `--hook tcx`, or detach it first (`ip link show dev {interface}` shows it)"
    )]
    AlreadyAttached {
        /// The interface.
        interface: String,
        /// What is attached, as far as it can be told (id and name).
        existing: String,
    },

    /// xdpstat's own program holds the XDP hook: another xdpstat, running
    /// or persisted.
    #[error(
        "{interface}: xdpstat already counts here ({existing}); `xdpstat status` says who reads it, `xdpstat {interface} --persist` reads persisted counts, `xdpstat detach {interface}` ends them"
    )]
    XdpstatAttached { interface: String, existing: String },

    /// The kernel refused to attach in the mode that was asked for.
    #[error("{interface}: the kernel refused {mode} mode{} (try --mode {alternatives})", why.as_ref().map(|why| format!(" ({why})")).unwrap_or_default())]
    ModeRefused {
        /// The interface.
        interface: String,
        /// The mode that was asked for.
        mode: String,
        /// What the doctor's checks found behind the refusal.
        why: Option<String>,
        /// The modes worth trying instead.
        alternatives: &'static str,
        /// The kernel's answer.
        #[source]
        source: Cause,
    },

    /// Attaching failed for a reason other than the mode.
    #[error("{interface}: attaching the XDP program failed")]
    Attach {
        /// The interface.
        interface: String,
        /// The kernel's or aya's answer.
        #[source]
        source: Cause,
    },

    /// The embedded XDP program could not be loaded into the kernel.
    #[error("loading the XDP program into the kernel failed")]
    Load {
        /// The kernel's or aya's answer.
        #[source]
        source: Cause,
    },

    /// A map the program declares was missing or of the wrong type.
    #[error("the XDP program's map {map} cannot be used")]
    Map {
        /// Map name.
        map: &'static str,
        /// What went wrong.
        #[source]
        source: Cause,
    },

    /// Reading a counter map failed.
    #[error("{interface}: reading map {map} failed")]
    MapRead {
        /// The interface the map belongs to.
        interface: String,
        /// Map name.
        map: &'static str,
        /// What went wrong.
        #[source]
        source: Cause,
    },

    /// Detaching from an interface failed at exit.
    #[error("{interface}: detaching the XDP program failed")]
    Detach {
        /// The interface.
        interface: String,
        /// What went wrong.
        #[source]
        source: Cause,
    },

    /// A command-line value is out of range.
    #[error("{0}")]
    Usage(String),

    /// SIGINT/SIGTERM handling could not be set up, so Ctrl-C could not detach.
    #[error("cannot handle signal {signal}")]
    Signal {
        /// The signal number.
        signal: i32,
        /// What went wrong.
        #[source]
        source: io::Error,
    },

    /// Creating or using the demo's network namespaces failed.
    #[error(transparent)]
    Netns(#[from] xdpstat_lab::netns::NetnsError),

    /// The demo's traffic could not be sent.
    #[error("the demo's traffic: {doing}")]
    DemoTraffic {
        /// What was being done.
        doing: String,
        #[source]
        source: io::Error,
    },

    /// A capture `xdpstat replay` cannot read, or not to the end.
    #[error("{file}")]
    Capture {
        /// The file as named on the command line.
        file: String,
        /// What is wrong, with the byte offset where it applies.
        #[source]
        source: Cause,
    },

    /// The metrics server cannot start.
    #[error("metrics on {address}")]
    Metrics {
        /// The address asked for.
        address: std::net::SocketAddr,
        /// What went wrong.
        #[source]
        source: Cause,
    },

    /// A persisted interface's pin directory cannot be used.
    #[error("{}: the pinned state cannot be used", dir.display())]
    Pins {
        /// The interface's directory under the pin root.
        dir: std::path::PathBuf,
        #[source]
        source: Cause,
    },

    /// Another xdpstat reads the persisted interface: one reader at a time.
    #[error("{interface} is already counted by xdpstat{}; one xdpstat reads a persisted interface at a time", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    AlreadyRead {
        interface: String,
        /// The holder of the lock, when `/proc/locks` names it.
        pid: Option<u32>,
    },

    /// The pins were written by an xdpstat whose layout this one cannot read.
    #[error("{interface}: the pinned state in {} {why}; nothing was changed; `xdpstat detach {interface}` removes it (and its counts)", dir.display())]
    IncompatiblePins {
        interface: String,
        dir: std::path::PathBuf,
        why: String,
    },

    /// The command line asks for another setup than the persisted one.
    #[error(
        "{interface} is persisted {what}; run `xdpstat detach {interface}` first to change that (its counts go with it)"
    )]
    PersistedDifferently { interface: String, what: String },

    /// Writing the report failed.
    #[error("writing the report failed")]
    Output(#[source] io::Error),

    /// A rules file was refused (file and line in the message).
    #[error(transparent)]
    Rules(#[from] crate::rules::file::RulesError),

    /// The rules could not be written into the datapath.
    #[error("{interface}: putting the rules in force failed")]
    RulesNotInForce {
        interface: String,
        #[source]
        source: Cause,
    },
}

impl XdpstatError {
    /// The interface whose attach failed, for errors `xdpstat doctor IFACE`
    /// can say more about.
    pub fn doctor_can_explain(&self) -> Option<&str> {
        match self {
            Self::ModeRefused { interface, .. }
            | Self::AlreadyAttached { interface, .. }
            | Self::XdpstatAttached { interface, .. }
            | Self::Attach { interface, .. } => Some(interface),
            _ => None,
        }
    }
}

/// Flattens an error and its sources into one line, the way users see it.
pub fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace('\n', " ")
}
