//! The host's checks: kernel, BTF, the JIT, bpffs, this process's
//! capabilities, the memlock limit where the kernel charges it, the
//! unprivileged-BPF setting, and xdpstat's own pinned state.

use std::path::Path;

use super::Check;
use crate::kernel::privilege::{self, Needs};

pub fn checks(pin_root: &Path) -> Vec<Check> {
    let (release, version) = privilege::kernel();
    let mut checks = vec![kernel(&release, version)];
    checks.push(btf(Path::new("/sys/kernel/btf/vmlinux").exists()));
    let jit_setting = std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable").ok();
    checks.push(jit(jit_setting.as_deref(), in_first_namespace()));
    checks.push(bpffs(
        &std::fs::read_to_string("/proc/self/mounts").unwrap_or_default(),
    ));
    checks.push(capabilities(
        &privilege::missing_for(Needs::Attach),
        &privilege::missing_for(Needs::AttachAndNamespaces),
    ));
    checks.push(memlock(version, memlock_limit()));
    checks.push(unprivileged_bpf(
        std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
            .ok()
            .as_deref(),
    ));
    checks.push(pins(pin_root));
    checks
}

fn kernel(release: &str, version: Option<(u32, u32)>) -> Check {
    match version {
        None => Check::warn(
            "kernel",
            format!("release {release:?} does not parse as a version"),
            "xdpstat needs Linux 5.18 (--hook tcx: 6.6); the loader will say what is missing",
        ),
        Some(v) if v < (5, 18) => Check::fail(
            "kernel",
            format!("Linux {release}: xdpstat needs 5.18 (multi-buffer XDP, BPF links for XDP)"),
            "upgrade the kernel to 5.18 or newer",
        ),
        Some(v) if v < (6, 6) => Check::warn(
            "kernel",
            format!("Linux {release}: XDP works; --hook tcx needs 6.6 (tcx links)"),
            "to count beside another XDP program, upgrade to 6.6 or newer",
        ),
        Some(_) => Check::ok(
            "kernel",
            format!("Linux {release}: XDP (5.18) and --hook tcx (6.6) available"),
        ),
    }
}

fn btf(present: bool) -> Check {
    if present {
        Check::ok("btf", "kernel BTF at /sys/kernel/btf/vmlinux")
    } else {
        Check::warn(
            "btf",
            "no kernel BTF (/sys/kernel/btf/vmlinux): xdpstat's program needs none, but bpftool and the verifier's messages are poorer",
            "a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    }
}

/// Whether this process is in the network namespace of PID 1 (the host's,
/// where `net.core.bpf_jit_enable` lives).
fn in_first_namespace() -> bool {
    use std::os::linux::fs::MetadataExt as _;
    let inode = |path: &str| std::fs::metadata(path).map(|m| m.st_ino()).ok();
    inode("/proc/thread-self/ns/net") == inode("/proc/1/ns/net")
}

fn jit(setting: Option<&str>, first_namespace: bool) -> Check {
    match setting.map(str::trim) {
        Some("1") => Check::ok("bpf_jit", "the BPF JIT is on"),
        Some("2") => Check::warn(
            "bpf_jit",
            "the BPF JIT is on in debug mode: every program is dumped to the kernel log",
            "sysctl -w net.core.bpf_jit_enable=1",
        ),
        Some("0") => Check::warn(
            "bpf_jit",
            "the BPF JIT is off: programs are interpreted, several times slower per packet",
            "sysctl -w net.core.bpf_jit_enable=1",
        ),
        Some(other) => Check::warn(
            "bpf_jit",
            format!("net.core.bpf_jit_enable is {other:?}"),
            "sysctl -w net.core.bpf_jit_enable=1",
        ),
        None if !first_namespace => Check::ok(
            "bpf_jit",
            "net.core.bpf_jit_enable is only readable from the host's network namespace",
        ),
        None => Check::warn(
            "bpf_jit",
            "net.core.bpf_jit_enable cannot be read",
            "check that the kernel has CONFIG_BPF_JIT",
        ),
    }
}

fn bpffs(mounts: &str) -> Check {
    let points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&"bpf")).then(|| fields.get(1).copied())?
        })
        .collect();
    if points.is_empty() {
        Check::warn(
            "bpffs",
            "no BPF filesystem is mounted: --persist mounts one at /sys/fs/bpf itself, which needs CAP_SYS_ADMIN",
            "mount -t bpf bpffs /sys/fs/bpf (systemd does it at boot)",
        )
    } else {
        Check::ok("bpffs", format!("mounted at {}", points.join(", ")))
    }
}

fn capabilities(for_attach: &[&str], for_demo: &[&str]) -> Check {
    if !for_attach.is_empty() {
        return Check::fail(
            "capabilities",
            format!("missing {}", for_attach.join(", ")),
            "run xdpstat as root, or `setcap cap_bpf,cap_perfmon,cap_net_admin+ep <path to xdpstat>`",
        );
    }
    if !for_demo.is_empty() {
        return Check::warn(
            "capabilities",
            "CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN: enough to count; `demo` and `status` also need CAP_SYS_ADMIN",
            "run `xdpstat demo` and `xdpstat status` as root",
        );
    }
    Check::ok(
        "capabilities",
        "everything xdpstat needs, the demo included",
    )
}

fn memlock_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .ok()
        .map(|(soft, _)| soft)
}

fn memlock(version: Option<(u32, u32)>, limit: Option<u64>) -> Check {
    match version {
        Some(v) if v >= (5, 11) => Check::ok(
            "memlock",
            "BPF memory is charged to the memory cgroup (Linux 5.11), not RLIMIT_MEMLOCK",
        ),
        _ => match limit {
            Some(limit) if limit == libc::RLIM_INFINITY => {
                Check::ok("memlock", "RLIMIT_MEMLOCK is unlimited")
            }
            Some(limit) if limit < 64 << 20 => Check::warn(
                "memlock",
                format!(
                    "this kernel charges BPF maps to RLIMIT_MEMLOCK, which is {} KiB: the tables may not fit",
                    limit / 1024
                ),
                "ulimit -l unlimited (or LimitMEMLOCK=infinity in a unit)",
            ),
            Some(limit) => Check::ok("memlock", format!("RLIMIT_MEMLOCK is {} MiB", limit >> 20)),
            None => Check::warn(
                "memlock",
                "RLIMIT_MEMLOCK cannot be read",
                "ulimit -l unlimited",
            ),
        },
    }
}

fn unprivileged_bpf(setting: Option<&str>) -> Check {
    let detail = match setting.map(str::trim) {
        Some("0") => "unprivileged BPF is allowed (xdpstat needs capabilities either way)",
        Some("1") => {
            "unprivileged BPF is disabled for good (xdpstat needs capabilities either way)"
        }
        Some("2") => "unprivileged BPF is disabled (xdpstat needs capabilities either way)",
        _ => "the unprivileged BPF setting cannot be read",
    };
    Check::ok("unprivileged_bpf", detail)
}

fn pins(root: &Path) -> Check {
    let missing = privilege::missing_for(Needs::Inspect);
    if !missing.is_empty() {
        // The kernel lists no map to a process without it: an empty list
        // here would say nothing is persisted when it may be.
        return Check::warn(
            "pins",
            format!(
                "cannot tell what xdpstat has persisted or attached: missing {}",
                missing.join(", ")
            ),
            "run `xdpstat doctor` (or `xdpstat status`) as root",
        );
    }
    let instances = crate::run::status::find(root);
    let persisted: Vec<_> = instances.iter().filter(|one| one.persisted).collect();
    let stale: Vec<String> = persisted
        .iter()
        .filter(|one| !one.state.is_counting())
        .map(|one| {
            let dir = one
                .pin_dir
                .as_ref()
                .map_or_else(String::new, |dir| format!(" in {}", dir.display()));
            format!("{}{dir} ({})", one.interface, one.state)
        })
        .collect();
    if !stale.is_empty() {
        return Check::warn(
            "pins",
            format!(
                "{} persisted, not counting: {}",
                stale.len(),
                stale.join("; ")
            ),
            "`xdpstat detach --stale` removes the stale and unfinished ones (`--pin-dir` names another root), `xdpstat detach IFACE` any one; or the next `xdpstat IFACE --persist` replaces them",
        );
    }
    Check::ok(
        "pins",
        format!(
            "{} interface(s) persisted under {}, {} counted by xdpstat in all",
            persisted.len(),
            root.display(),
            instances.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn kernels_are_judged_by_what_they_have() {
        assert_eq!(kernel("5.15.0", Some((5, 15))).status, Status::Fail);
        assert_eq!(kernel("6.1.0-18-amd64", Some((6, 1))).status, Status::Warn);
        assert_eq!(kernel("6.18.0", Some((6, 18))).status, Status::Ok);
        assert_eq!(kernel("weird", None).status, Status::Warn);
    }

    #[test]
    fn the_jit_bpffs_and_memlock_settings_read_as_the_kernel_writes_them() {
        assert_eq!(jit(Some("1\n"), true).status, Status::Ok);
        assert_eq!(jit(Some("0\n"), true).status, Status::Warn);
        assert_eq!(jit(Some("2\n"), true).status, Status::Warn);
        assert_eq!(jit(None, true).status, Status::Warn);
        assert_eq!(jit(None, false).status, Status::Ok);
        let mounts = "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw,relatime 0 0\n";
        let check = bpffs(mounts);
        assert_eq!(check.status, Status::Ok);
        assert!(check.detail.contains("/sys/fs/bpf"));
        assert_eq!(bpffs("sysfs /sys sysfs rw 0 0\n").status, Status::Warn);
        assert_eq!(memlock(Some((5, 10)), Some(64 * 1024)).status, Status::Warn);
        assert_eq!(
            memlock(Some((5, 10)), Some(libc::RLIM_INFINITY)).status,
            Status::Ok
        );
        assert_eq!(memlock(Some((6, 1)), Some(64 * 1024)).status, Status::Ok);
    }

    #[test]
    fn missing_capabilities_fail_and_the_demos_warn() {
        assert_eq!(capabilities(&["CAP_BPF (x)"], &[]).status, Status::Fail);
        assert_eq!(
            capabilities(&[], &["CAP_SYS_ADMIN (y)"]).status,
            Status::Warn
        );
        assert_eq!(capabilities(&[], &[]).status, Status::Ok);
    }
}
