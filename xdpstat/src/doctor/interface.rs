//! One interface's checks, each a pure judgement of what the kernel
//! answered (so that devices this machine cannot create, VLANs, bonds,
//! tun, are tested on recorded answers): exists and up, native XDP
//! support, MTU against one page, LRO, queues, who holds the XDP hook,
//! what sits at tcx ingress, stacking on another device, and memory.

use std::{io, path::Path};

use aya::programs::{SchedClassifier, TcAttachType};

use super::Check;
use crate::kernel::{
    diagnose::ONE_PAGE_MTU,
    ethtool::{self, Channels},
    memory::{Plan, map_bytes},
    netlink::{self, Link, xdp_feature},
    pins, privilege,
};

/// Drivers that give XDP a TX queue of its own per CPU, and refuse native
/// XDP (or `XDP_TX`) without enough of them.
const QUEUE_HUNGRY: [&str; 5] = ["ixgbe", "i40e", "ice", "igb", "igc"];

pub fn checks(name: &str, plan: Plan, pin_root: &Path) -> Vec<Check> {
    let link = match netlink::link(name) {
        Ok(Some(link)) => link,
        Ok(None) => {
            return vec![
                Check::fail(
                    "exists",
                    format!("no interface named {name} in this network namespace"),
                    "`ip link show` lists them",
                )
                .on(name),
            ];
        }
        Err(error) => {
            return vec![
                Check::fail(
                    "exists",
                    format!("rtnetlink could not be asked: {error}"),
                    "run doctor in the interface's network namespace",
                )
                .on(name),
            ];
        }
    };
    let driver = ethtool::driver(name).ok();
    let features = netlink::xdp_features(link.index);
    let tcx = privilege::kernel().1.is_some_and(|v| v >= (6, 6));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let holder = link
        .xdp
        .holder()
        .map(|(id, mode)| Holder::find(id, mode, name, pin_root));
    let lower = link.lower.and_then(netlink::name_of);
    let controller = link.controller.and_then(netlink::name_of);
    [
        exists(&link, driver.as_deref()),
        state(&link),
        native(&features),
        mtu(&link, &features),
        lro(ethtool::lro(name)),
        queues(&link, driver.as_deref(), ethtool::channels(name), cpus),
        xdp_hook(holder.as_ref(), tcx),
        tcx_ingress(name, tcx),
        stacking(&link, lower.as_deref(), controller.as_deref()),
        memory(plan, mem_available()),
    ]
    .into_iter()
    .map(|check| check.on(name))
    .collect()
}

fn exists(link: &Link, driver: Option<&str>) -> Check {
    let what = match (driver, link.kind.as_deref()) {
        (Some(driver), _) => format!("driver {driver}"),
        (None, Some(kind)) => format!("a {kind} device"),
        (None, None) => "driver unknown".to_owned(),
    };
    Check::ok("exists", format!("index {}, {what}", link.index))
}

fn state(link: &Link) -> Check {
    if !link.up {
        return Check::warn(
            "state",
            "administratively down: nothing arrives to count",
            format!("ip link set dev {} up", link.name),
        );
    }
    if link.oper_state == "down" || link.oper_state == "lowerlayerdown" {
        return Check::warn(
            "state",
            format!("up, but its link is {} (no carrier)", link.oper_state),
            "check the cable, or the peer of a virtual link",
        );
    }
    Check::ok("state", format!("up (operstate {})", link.oper_state))
}

fn feature_names(features: u64) -> String {
    let names = [
        (xdp_feature::BASIC, "basic"),
        (xdp_feature::REDIRECT, "redirect"),
        (xdp_feature::NDO_XMIT, "ndo-xmit"),
        (xdp_feature::XSK_ZEROCOPY, "xsk-zerocopy"),
        (xdp_feature::HW_OFFLOAD, "hw-offload"),
        (xdp_feature::RX_SG, "rx-sg"),
        (xdp_feature::NDO_XMIT_SG, "ndo-xmit-sg"),
    ];
    let listed: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| features & bit != 0)
        .map(|&(_, name)| name)
        .collect();
    if listed.is_empty() {
        "none".to_owned()
    } else {
        listed.join(", ")
    }
}

fn native(features: &io::Result<Option<u64>>) -> Check {
    match features {
        Ok(Some(features)) if features & xdp_feature::BASIC != 0 => Check::ok(
            "native_xdp",
            format!(
                "the driver supports native XDP (features: {})",
                feature_names(*features)
            ),
        ),
        Ok(Some(_)) => Check::warn(
            "native_xdp",
            "the driver has no native XDP: auto mode attaches in generic mode, which runs after GRO and counts a batch of merged TCP segments as one packet",
            "counting works as is; for per-segment counts use `--hook tcx` (Linux 6.6), which counts GRO batches by their segments",
        ),
        Ok(None) => Check::warn(
            "native_xdp",
            "this kernel cannot say whether the driver has native XDP (the netdev family's xdp-features came in Linux 6.3)",
            "attach with `--mode native` to find out; auto mode falls back to generic and says so",
        ),
        Err(error) => Check::warn(
            "native_xdp",
            format!("the netdev family could not be asked: {error}"),
            "attach with `--mode native` to find out",
        ),
    }
}

fn mtu(link: &Link, features: &io::Result<Option<u64>>) -> Check {
    let mtu = link.mtu;
    if mtu <= ONE_PAGE_MTU {
        return Check::ok(
            "mtu",
            format!("MTU {mtu}: frames fit one page, the plain program is used"),
        );
    }
    match features {
        Ok(Some(f)) if f & xdp_feature::BASIC != 0 && f & xdp_feature::RX_SG == 0 => Check::warn(
            "mtu",
            format!(
                "MTU {mtu}: frames longer than a page, and the driver reports no multi-buffer XDP (rx-sg): native XDP will be refused and auto mode falls back to generic"
            ),
            format!(
                "ip link set dev {} mtu {ONE_PAGE_MTU}, or accept generic mode",
                link.name
            ),
        ),
        _ => Check::ok(
            "mtu",
            format!(
                "MTU {mtu}: frames longer than a page: xdpstat attaches its multi-buffer build, which counts every fragment's bytes"
            ),
        ),
    }
}

fn lro(answer: io::Result<bool>) -> Check {
    match answer {
        Ok(true) => Check::fail(
            "lro",
            "hardware LRO is on: drivers refuse native XDP while it is",
            "ethtool -K IFACE lro off",
        ),
        Ok(false) => Check::ok("lro", "hardware LRO is off"),
        Err(error) if error.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            Check::ok("lro", "the device has no LRO")
        }
        Err(error) => Check::ok(
            "lro",
            format!("LRO cannot be read ({error}); not in the way of XDP on virtual devices"),
        ),
    }
}

fn queues(link: &Link, driver: Option<&str>, channels: io::Result<Channels>, cpus: u32) -> Check {
    let hungry = driver.is_some_and(|d| QUEUE_HUNGRY.contains(&d));
    match channels {
        Ok(channels) if hungry && channels.max_combined.max(channels.max_tx) < 2 * cpus => {
            Check::warn(
                "queues",
                format!(
                    "{} gives XDP a TX queue of its own per CPU: {} CPUs want {} queues in all, and the device has at most {}",
                    driver.unwrap_or_default(),
                    cpus,
                    2 * cpus,
                    channels.max_combined.max(channels.max_tx)
                ),
                format!(
                    "leave room: ethtool -L {} combined {}",
                    link.name,
                    (channels.max_combined.max(channels.max_tx) / 2).max(1)
                ),
            )
        }
        Ok(channels) => Check::ok(
            "queues",
            format!(
                "{} combined, {} rx, {} tx channels; {cpus} CPUs",
                channels.combined, channels.rx, channels.tx
            ),
        ),
        Err(_) => Check::ok(
            "queues",
            format!(
                "{} rx / {} tx queues, {cpus} CPUs (no ethtool channels: a virtual device)",
                link.rx_queues.unwrap_or(0),
                link.tx_queues.unwrap_or(0)
            ),
        ),
    }
}

/// The program on the XDP hook, as far as this process may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub id: u32,
    pub mode: &'static str,
    /// Its name, when the program can be listed (CAP_SYS_ADMIN).
    pub name: Option<String>,
    /// Attached with a BPF link, when the links can be listed.
    pub by_link: Option<bool>,
    /// The pin directory, when it is a persisted xdpstat's.
    pub persisted_in: Option<String>,
}

impl Holder {
    fn find(id: u32, mode: &'static str, interface: &str, pin_root: &Path) -> Self {
        let name = aya::programs::loaded_programs()
            .flatten()
            .find(|program| program.id() == id)
            .and_then(|program| program.name_as_str().map(str::to_owned));
        let links: Vec<_> = aya::programs::loaded_links().collect();
        let by_link = (!links.is_empty() && links.iter().all(Result::is_ok))
            .then(|| links.iter().flatten().any(|link| link.program_id() == id));
        let persisted_in = pins::netns_inode()
            .ok()
            .and_then(|netns| pins::find(pin_root, netns, interface).ok().flatten())
            .map(|(_, dir)| dir.display().to_string());
        Self {
            id,
            mode,
            name,
            by_link,
            persisted_in,
        }
    }
}

fn xdp_hook(holder: Option<&Holder>, tcx: bool) -> Check {
    let Some(holder) = holder else {
        return Check::ok("xdp_hook", "the XDP hook is free");
    };
    let name = holder
        .name
        .as_deref()
        .map_or_else(String::new, |n| format!(", name {n}"));
    let how = match holder.by_link {
        Some(true) => ", by a BPF link",
        Some(false) => ", through netlink",
        None => "",
    };
    let what = format!(
        "program id {}{name} holds the XDP hook in {} mode{how}",
        holder.id, holder.mode
    );
    let beside = if tcx {
        "`xdpstat --hook tcx IFACE` counts beside it at tc ingress"
    } else {
        "detach it first (this kernel has no tcx to count beside it)"
    };
    match holder.name.as_deref() {
        Some(n) if n.starts_with("xdpstat") => match &holder.persisted_in {
            Some(dir) => Check::fail(
                "xdp_hook",
                format!("{what}: xdpstat's own, persisted in {dir}"),
                "`xdpstat IFACE --persist` reads its counts; `xdpstat detach IFACE` removes it",
            ),
            None => Check::fail(
                "xdp_hook",
                format!("{what}: xdpstat's own, run by another xdpstat"),
                format!("`xdpstat status` names the process; or {beside}"),
            ),
        },
        Some("xdp_dispatcher") => Check::fail(
            "xdp_hook",
            format!("{what}: libxdp's multi-program dispatcher"),
            beside,
        ),
        _ => Check::fail("xdp_hook", what, beside),
    }
}

fn tcx_ingress(name: &str, tcx: bool) -> Check {
    if !tcx {
        return Check::ok("tcx_ingress", "no tcx on this kernel (Linux 6.6)");
    }
    match SchedClassifier::query_tcx(name, TcAttachType::Ingress) {
        Ok((_, programs)) if programs.is_empty() => {
            Check::ok("tcx_ingress", "no program at tcx ingress")
        }
        Ok((_, programs)) => {
            let listed: Vec<String> = programs
                .iter()
                .map(|p| format!("id {} ({})", p.id(), p.name_as_str().unwrap_or("?")))
                .collect();
            Check::ok(
                "tcx_ingress",
                format!(
                    "at tcx ingress: {} (`--hook tcx` runs beside them)",
                    listed.join(", ")
                ),
            )
        }
        Err(error) => Check::ok(
            "tcx_ingress",
            format!(
                "tcx ingress cannot be listed: {}",
                crate::error::one_line(&error)
            ),
        ),
    }
}

fn stacking(link: &Link, lower: Option<&str>, controller: Option<&str>) -> Check {
    let kind = link.kind.as_deref().unwrap_or("");
    match kind {
        "vlan" | "macvlan" | "ipvlan" | "macsec" => {
            let on = lower.unwrap_or("its lower device");
            Check::warn(
                "stacking",
                format!(
                    "a {kind} device on {on}: XDP here runs in generic mode, after the lower device's receive path"
                ),
                format!(
                    "attach to {on}: xdpstat looks through up to two VLAN tags and counts at the earliest point"
                ),
            )
        }
        "bond" | "team" | "bridge" => Check::warn(
            "stacking",
            format!(
                "a {kind} device: its traffic arrives through its ports, which is where native XDP runs"
            ),
            "attach to the ports (xdpstat PORT1 PORT2 ...)",
        ),
        "tun" | "tap" => Check::warn(
            "stacking",
            format!("a {kind} device: generic XDP only, on what the user-space peer writes"),
            "counting works; expect generic-mode costs",
        ),
        _ => match controller {
            Some(controller) => Check::ok(
                "stacking",
                format!("a port of {controller}: counting here sees this port's traffic only"),
            ),
            None => Check::ok("stacking", "not stacked on another device"),
        },
    }
}

fn mem_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo.lines().find_map(|line| {
        let kib: u64 = line
            .strip_prefix("MemAvailable:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    })
}

fn memory(plan: Plan, available: Option<u64>) -> Check {
    let bytes = map_bytes(plan);
    let total = bytes.total();
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    let detail = format!(
        "--max-sources {}{}: {:.1} MiB of kernel memory for this interface (sources IPv4 {:.1}, IPv6 {:.1}; rule rows {:.1}; rules {:.1}; port counters {:.1}; sketches and the rest {:.1})",
        plan.max_sources,
        if plan.rule_rows { " with rules" } else { "" },
        mib(total),
        mib(bytes.sources_v4),
        mib(bytes.sources_v6),
        mib(bytes.rows),
        mib(bytes.rules),
        mib(bytes.ports),
        mib(bytes.rest),
    );
    match available {
        Some(available) if total > available => Check::fail(
            "memory",
            format!(
                "{detail}, more than the {:.0} MiB available",
                mib(available)
            ),
            "a smaller --max-sources",
        ),
        Some(available) if total > available / 4 => Check::warn(
            "memory",
            format!(
                "{detail}, over a quarter of the {:.0} MiB available",
                mib(available)
            ),
            "a smaller --max-sources, unless the host is there for this",
        ),
        Some(available) => Check::ok(
            "memory",
            format!("{detail}; {:.0} MiB available", mib(available)),
        ),
        None => Check::ok("memory", detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn link(kind: Option<&str>, mtu: u32) -> Link {
        Link::sample(kind, mtu)
    }

    /// What Linux 6.x answers for a VLAN, a bond and a tun device (which
    /// this machine cannot create: no modules), judged as recorded.
    #[test]
    fn stacked_devices_point_to_the_device_below() {
        let vlan = stacking(&link(Some("vlan"), 1500), Some("eth0"), None);
        assert_eq!(vlan.status, Status::Warn);
        assert!(vlan.fix.unwrap().contains("attach to eth0"));
        assert_eq!(
            stacking(&link(Some("bond"), 1500), None, None).status,
            Status::Warn
        );
        assert_eq!(
            stacking(&link(Some("tun"), 1500), None, None).status,
            Status::Warn
        );
        let port = stacking(&link(None, 1500), None, Some("br0"));
        assert_eq!(port.status, Status::Ok);
        assert!(port.detail.contains("br0"));
        assert_eq!(
            stacking(&link(Some("veth"), 1500), None, None).status,
            Status::Ok
        );
    }

    #[test]
    fn native_support_and_mtu_read_from_the_features() {
        let veth = Ok(Some(
            xdp_feature::BASIC | xdp_feature::REDIRECT | xdp_feature::RX_SG,
        ));
        assert_eq!(native(&veth).status, Status::Ok);
        assert_eq!(native(&Ok(Some(0))).status, Status::Warn);
        assert_eq!(native(&Ok(None)).status, Status::Warn);
        assert_eq!(mtu(&link(None, 1500), &veth).status, Status::Ok);
        let jumbo = mtu(&link(None, 9000), &veth);
        assert_eq!(jumbo.status, Status::Ok);
        assert!(jumbo.detail.contains("multi-buffer"));
        let no_sg = Ok(Some(xdp_feature::BASIC));
        assert_eq!(mtu(&link(None, 9000), &no_sg).status, Status::Warn);
    }

    #[test]
    fn lro_queues_and_memory() {
        assert_eq!(lro(Ok(true)).status, Status::Fail);
        assert_eq!(lro(Ok(false)).status, Status::Ok);
        assert_eq!(
            lro(Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))).status,
            Status::Ok
        );
        let few = Channels {
            max_combined: 8,
            combined: 8,
            ..Channels::default()
        };
        let eth = link(None, 1500);
        assert_eq!(queues(&eth, Some("i40e"), Ok(few), 8).status, Status::Warn);
        assert_eq!(queues(&eth, Some("i40e"), Ok(few), 4).status, Status::Ok);
        assert_eq!(
            queues(&eth, Some("virtio_net"), Ok(few), 64).status,
            Status::Ok
        );
        let plan = Plan {
            max_sources: 65_536,
            rule_rows: true,
            rules: 0,
            cpus: 2,
        };
        // Each memory-mappable array: a page of header, then its pages.
        assert_eq!(
            map_bytes(plan).sources_v4,
            4096 + 131_072 * 32 + 4096 + 1024 * 8 + 4096 + 131_072 * 32
        );
        assert_eq!(memory(plan, Some(1 << 20)).status, Status::Fail);
        assert_eq!(memory(plan, Some(100 << 20)).status, Status::Warn);
        assert_eq!(memory(plan, Some(24 << 30)).status, Status::Ok);
    }

    #[test]
    fn the_hook_holder_is_named_with_the_way_out() {
        assert_eq!(xdp_hook(None, true).status, Status::Ok);
        let other = Holder {
            id: 42,
            mode: "native",
            name: Some("xdpfilt_alw_all".into()),
            by_link: Some(false),
            persisted_in: None,
        };
        let check = xdp_hook(Some(&other), true);
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.contains("program id 42, name xdpfilt_alw_all"));
        assert!(check.detail.contains("through netlink"));
        assert!(check.fix.as_deref().unwrap().contains("--hook tcx"));
        let ours = Holder {
            name: Some("xdpstat".into()),
            persisted_in: Some("/sys/fs/bpf/xdpstat/net1/eth0".into()),
            ..other.clone()
        };
        assert!(
            xdp_hook(Some(&ours), true)
                .fix
                .unwrap()
                .contains("xdpstat detach IFACE")
        );
        let dispatcher = Holder {
            name: Some("xdp_dispatcher".into()),
            ..other
        };
        assert!(
            xdp_hook(Some(&dispatcher), false)
                .detail
                .contains("dispatcher")
        );
    }
}
