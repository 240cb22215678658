//! How xdpstat sits on an interface: the attach modes a user can ask for,
//! what the kernel actually gave, and the kernel's refusals turned into
//! messages that say what to do next.

use std::fmt;

use aya::programs::{ProgramError, XdpMode, xdp::XdpError};

use crate::{error::XdpstatError, kernel::netlink};

/// The attach mode asked for on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native where the driver has it, generic otherwise.
    #[default]
    Auto,
    /// In the driver, before any socket buffer exists (fastest).
    Native,
    /// In the kernel's generic receive path; works on every interface.
    Generic,
    /// On the network card itself, where card and driver support it.
    Offload,
}

impl AttachMode {
    /// The kernel modes to try, in order.
    pub(crate) fn tries(self) -> &'static [XdpMode] {
        match self {
            Self::Auto => &[XdpMode::Driver, XdpMode::Skb],
            Self::Native => &[XdpMode::Driver],
            Self::Generic => &[XdpMode::Skb],
            Self::Offload => &[XdpMode::Hardware],
        }
    }

    /// What to suggest when the kernel refused this mode.
    fn alternatives(self) -> &'static str {
        match self {
            // Auto tried both already; only a card with offload is left.
            Self::Auto => "offload, on a card and driver that support it",
            Self::Offload => "native or --mode generic",
            Self::Native => "generic",
            Self::Generic => "native",
        }
    }
}

/// Where in the receive path xdpstat counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Hook {
    /// The XDP hook: the earliest point, every frame the driver receives.
    #[default]
    Xdp,
    /// tc ingress through a tcx link (Linux 6.6): beside a program that
    /// holds the XDP hook, counting what it passed.
    Tcx,
}

impl Hook {
    /// The name `--hook` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Tcx => "tcx",
        }
    }
}

/// The mode the program ended up running in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObtainedMode {
    Native,
    Generic,
    Offload,
    /// At tc ingress (`--hook tcx`), not on the XDP hook.
    Tcx,
}

impl From<XdpMode> for ObtainedMode {
    fn from(mode: XdpMode) -> Self {
        match mode {
            // xdpstat always names a mode; `Default` is never asked for.
            XdpMode::Driver | XdpMode::Default => Self::Native,
            XdpMode::Skb => Self::Generic,
            XdpMode::Hardware => Self::Offload,
        }
    }
}

impl fmt::Display for ObtainedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Offload => "offload",
            Self::Tcx => "tcx",
        })
    }
}

/// How the kernel holds the attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// A BPF link: the kernel detaches it when xdpstat exits, even on SIGKILL.
    BpfLink,
    /// A netlink attachment (aya's fallback): it outlives a killed xdpstat.
    Netlink,
    /// The program's id could not be read to tell.
    Unknown,
}

impl LinkKind {
    /// Its name in reports and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::BpfLink => "bpf link",
            Self::Netlink => "netlink",
            Self::Unknown => "unknown",
        }
    }
}

/// A successful attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub interface: String,
    pub mode: ObtainedMode,
    pub link: LinkKind,
    /// Whether the interface needed the multi-buffer build of the program.
    pub multi_buffer: bool,
    /// Why native mode was refused, when auto mode settled for generic.
    pub native_refused: Option<String>,
}

impl Attached {
    /// Warnings for the user: when the attachment can outlive xdpstat, and
    /// when auto mode had to settle for generic XDP, which counts less.
    pub fn warnings(&self, asked: AttachMode) -> Vec<String> {
        let mut warnings: Vec<String> = self.link_warning().into_iter().collect();
        if self.mode == ObtainedMode::Generic && asked == AttachMode::Auto {
            let why = self
                .native_refused
                .as_deref()
                .map_or_else(String::new, |why| format!(" ({why})"));
            warnings.push(format!(
                "{}: native XDP was refused{why}, so xdpstat attached in generic mode, which runs after GRO: a batch of TCP segments merged by GRO counts as one packet, with its headers counted once; run 'xdpstat doctor {}' for details",
                self.interface, self.interface
            ));
        }
        warnings
    }

    /// A warning when the attachment can outlive xdpstat.
    fn link_warning(&self) -> Option<String> {
        match self.link {
            LinkKind::BpfLink => None,
            LinkKind::Netlink => Some(format!(
                "{}: no BPF link could be made (the kernel refused one, or xdpstat was out of file descriptors), attached through netlink instead; if xdpstat is killed, remove the program with `ip link set dev {} xdp off`",
                self.interface, self.interface
            )),
            LinkKind::Unknown => Some(format!(
                "{}: could not tell whether the attachment is a BPF link; if xdpstat is killed, check `ip link show dev {}`",
                self.interface, self.interface
            )),
        }
    }
}

impl fmt::Display for Attached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let link = match self.link {
            LinkKind::Unknown => "link kind unknown",
            known => known.name(),
        };
        if self.mode == ObtainedMode::Tcx {
            // GRO-merged buffers count as the segments they were.
            return write!(f, "tcx ingress, {link}");
        }
        write!(f, "{} XDP, {link}", self.mode)?;
        if self.mode == ObtainedMode::Generic {
            // Generic XDP runs in the stack after GRO has merged segments.
            write!(f, ", one count per GRO batch")?;
        }
        if self.multi_buffer {
            write!(f, ", multi-buffer")?;
        }
        Ok(())
    }
}

/// Turns aya's attach error into one the user can act on.
pub(crate) fn attach_error(
    interface: &str,
    tried: XdpMode,
    asked: AttachMode,
    error: ProgramError,
) -> XdpstatError {
    let errno = match &error {
        ProgramError::UnknownInterface { .. } => {
            return XdpstatError::UnknownInterface {
                interface: interface.to_owned(),
            };
        }
        ProgramError::SyscallError(syscall) => syscall.io_error.raw_os_error(),
        ProgramError::XdpError(XdpError::NetlinkError(netlink)) => netlink.raw_os_error(),
        _ => None,
    };
    match errno {
        Some(libc::EBUSY) | Some(libc::EEXIST) => {
            let existing = existing_program(interface);
            if existing.contains("name xdpstat") {
                XdpstatError::XdpstatAttached {
                    interface: interface.to_owned(),
                    existing,
                }
            } else {
                XdpstatError::AlreadyAttached {
                    interface: interface.to_owned(),
                    existing,
                }
            }
        }
        // ERANGE: the MTU is too large for a program without multi-buffer
        // support (veth and several drivers answer so).
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENODEV) | Some(libc::ERANGE) => {
            XdpstatError::ModeRefused {
                interface: interface.to_owned(),
                mode: match asked {
                    AttachMode::Auto => "native or generic".to_owned(),
                    _ => ObtainedMode::from(tried).to_string(),
                },
                why: match tried {
                    XdpMode::Driver => crate::kernel::diagnose::refusal_cause(interface),
                    _ => None,
                },
                alternatives: asked.alternatives(),
                source: error.into(),
            }
        }
        Some(libc::EPERM) | Some(libc::EACCES) => XdpstatError::MissingCapabilities {
            missing: "CAP_NET_ADMIN (attaching XDP to an interface)".into(),
        },
        _ => XdpstatError::Attach {
            interface: interface.to_owned(),
            source: error.into(),
        },
    }
}

/// Names the XDP program already on `interface`, as the kernel reports it
/// (its id from rtnetlink, its name from bpf(2) where this process may
/// list programs).
fn existing_program(interface: &str) -> String {
    let Some((id, _)) = netlink::link(interface)
        .ok()
        .flatten()
        .and_then(|link| link.xdp.holder())
    else {
        return "an XDP program".to_owned();
    };
    let name = aya::programs::loaded_programs()
        .flatten()
        .find(|program| program.id() == id)
        .and_then(|program| program.name_as_str().map(str::to_owned));
    describe_program(id, name.as_deref())
}

/// `program id 42, name xdp_counter`, or without the name when it is unknown.
fn describe_program(id: u32, name: Option<&str>) -> String {
    match name {
        Some(name) if !name.is_empty() => format!("program id {id}, name {name}"),
        _ => format!("program id {id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_program_with_its_name_when_known() {
        assert_eq!(
            describe_program(42, Some("xdp_counter")),
            "program id 42, name xdp_counter"
        );
        assert_eq!(describe_program(7, None), "program id 7");
        assert_eq!(describe_program(7, Some("")), "program id 7");
    }

    #[test]
    fn generic_mode_says_it_counts_gro_batches_and_a_fallback_warns() {
        let attached = |mode| Attached {
            interface: "eth0".into(),
            mode,
            link: LinkKind::BpfLink,
            multi_buffer: false,
            native_refused: None,
        };
        let generic = attached(ObtainedMode::Generic);
        assert_eq!(
            generic.to_string(),
            "generic XDP, bpf link, one count per GRO batch"
        );
        assert_eq!(
            attached(ObtainedMode::Native).to_string(),
            "native XDP, bpf link"
        );
        let warnings = generic.warnings(AttachMode::Auto);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("native XDP was refused"),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("counts as one packet"), "{warnings:?}");
        assert!(
            generic.warnings(AttachMode::Generic).is_empty(),
            "asked for it"
        );
        assert!(
            attached(ObtainedMode::Native)
                .warnings(AttachMode::Auto)
                .is_empty()
        );
    }

    #[test]
    fn auto_tries_native_then_generic() {
        assert_eq!(AttachMode::Auto.tries(), &[XdpMode::Driver, XdpMode::Skb]);
        assert_eq!(AttachMode::Offload.tries(), &[XdpMode::Hardware]);
    }
}
