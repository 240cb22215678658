//! Checks, before touching the kernel, that this process may load and attach
//! XDP programs on this kernel, so the user hears which capability or kernel
//! feature is missing instead of a bare EPERM or EINVAL.

use crate::{error::XdpstatError, kernel::attach::Hook};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What a command needs from the process's capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Load and attach XDP programs.
    Attach,
    /// Load and attach, and create network namespaces (the demo).
    AttachAndNamespaces,
    /// See every BPF map and link on the host by id (`status`): without
    /// it the kernel shows none, and an empty list would be a false one.
    Inspect,
}

/// Fails with the missing capabilities, named, when the effective set lacks them.
pub fn check_capabilities(needs: Needs) -> Result<(), XdpstatError> {
    let missing = missing_for(needs);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(XdpstatError::MissingCapabilities {
            missing: missing.join(", "),
        })
    }
}

/// The capabilities `needs` asks for that this process lacks, each with
/// what it is for.
pub fn missing_for(needs: Needs) -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    missing_capabilities(effective_capabilities(&status).unwrap_or(0), needs)
}

/// What a process needs to change what an interface drops (`xdpstat
/// ban`, and the running xdpstat's peer): CAP_NET_ADMIN, named, when the
/// process `pid` (`None`: this one) lacks it.
pub fn missing_net_admin(pid: Option<i32>) -> Option<&'static str> {
    let path = pid.map_or_else(
        || "/proc/self/status".to_owned(),
        |pid| format!("/proc/{pid}/status"),
    );
    let status = std::fs::read_to_string(path).unwrap_or_default();
    let effective = effective_capabilities(&status).unwrap_or(0);
    (effective & (1 << CAP_NET_ADMIN) == 0)
        .then_some("CAP_NET_ADMIN (changing what an interface drops)")
}

/// The running kernel's release and its version, when it parses.
pub fn kernel() -> (String, Option<(u32, u32)>) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let version = kernel_version(&release);
    (release, version)
}

fn effective_capabilities(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn missing_capabilities(effective: u64, needs: Needs) -> Vec<&'static str> {
    let has = |cap: u32| effective & (1 << cap) != 0;
    let mut missing = Vec::new();
    if needs == Needs::Inspect {
        if !has(CAP_SYS_ADMIN) {
            missing.push("CAP_SYS_ADMIN (listing the kernel's BPF maps and links by id)");
        }
        return missing;
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF (loading the XDP program)");
    }
    // The verifier lets a program compare and offset packet pointers the
    // way every packet parser does only with CAP_PERFMON (Linux 5.8).
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON (the verifier's packet pointer checks)");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN (attaching to an interface)");
    }
    if needs == Needs::AttachAndNamespaces && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_SYS_ADMIN (creating the demo's network namespaces)");
    }
    missing
}

/// Fails when the kernel is older than the oldest one with every feature the
/// program uses: BPF links for XDP (5.9) and multi-buffer XDP with
/// `bpf_xdp_get_buff_len` (5.18).
pub fn check_kernel(hook: Hook) -> Result<(), XdpstatError> {
    let (release, version) = kernel();
    match version {
        Some(version) if version < (5, 18) => Err(XdpstatError::KernelTooOld {
            release,
            needed: "5.18",
            why: "multi-buffer XDP and BPF links for XDP",
        }),
        Some(version) if hook == Hook::Tcx && version < (6, 6) => Err(XdpstatError::KernelTooOld {
            release,
            needed: "6.6",
            why: "tcx links, which --hook tcx attaches with",
        }),
        // An unparsable release is left to the loader to judge.
        _ => Ok(()),
    }
}

fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\txdpstat\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_capabilities(status), Some(0x1ff_ffff_ffff));
    }

    #[test]
    fn names_what_is_missing() {
        assert!(missing_capabilities(u64::MAX, Needs::AttachAndNamespaces).is_empty());
        assert_eq!(
            missing_capabilities(0, Needs::Attach),
            [
                "CAP_BPF (loading the XDP program)",
                "CAP_PERFMON (the verifier's packet pointer checks)",
                "CAP_NET_ADMIN (attaching to an interface)"
            ]
        );
        let enough = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN);
        assert!(missing_capabilities(enough, Needs::Attach).is_empty());
        assert_eq!(
            missing_capabilities((1 << CAP_BPF) | (1 << CAP_NET_ADMIN), Needs::Attach),
            ["CAP_PERFMON (the verifier's packet pointer checks)"]
        );
        // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, not for
        // CAP_NET_ADMIN.
        assert_eq!(
            missing_capabilities(1 << CAP_SYS_ADMIN, Needs::Attach),
            ["CAP_NET_ADMIN (attaching to an interface)"]
        );
    }

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(kernel_version("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0"), Some((5, 4)));
        assert_eq!(kernel_version("garbage"), None);
    }
}
