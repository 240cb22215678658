//! `xdpstat doctor`: each check's ok and fail paths on real interfaces in
//! private namespaces (veth at a jumbo MTU, a hook another xdpstat holds,
//! a bridge and its port, `lo`, a name that does not exist), without
//! capabilities, and with and without bpffs in a mount namespace of its
//! own; and every run leaves the interfaces exactly as it found them.

mod common;

use std::process::{Command, Stdio};

use common::{TestNet, Xdpstat, privileged, xdpstat_command};
use serde_json::Value;
use xdpstat_lab::netns::Namespace;

/// `xdpstat doctor ARGS --format json` in `namespace`: exit code and checks.
fn doctor(namespace: Option<&Namespace>, prefix: &[&str], args: &[&str]) -> (i32, Vec<Value>) {
    let mut all = vec!["doctor", "--format", "json"];
    all.extend_from_slice(args);
    let output = xdpstat_command(namespace, prefix, &all).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let parsed: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("doctor's JSON ({e}): {text}; stderr {:?}", output.stderr));
    (
        output.status.code().unwrap_or(-1),
        parsed["checks"].as_array().unwrap().clone(),
    )
}

/// The check named `name` of `interface` (None: the host).
fn check<'a>(checks: &'a [Value], interface: Option<&str>, name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == name && c["interface"].as_str() == interface)
        .unwrap_or_else(|| panic!("no {name} check for {interface:?} in {checks:?}"))
}

fn status(checks: &[Value], interface: Option<&str>, name: &str) -> String {
    check(checks, interface, name)["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every link of `namespace` in full detail, to compare before and after.
fn links(namespace: &Namespace) -> Value {
    let text = namespace
        .ip_output(&["-json", "-details", "link", "show"])
        .unwrap();
    let mut links: Value = serde_json::from_str(&text).unwrap();
    // Counters move with the kernel's own traffic; what doctor must not
    // change is the rest.
    for link in links.as_array_mut().unwrap() {
        link.as_object_mut().unwrap().remove("stats64");
    }
    links
}

#[test]
fn each_interface_check_finds_what_blocks_attaching_and_changes_nothing() {
    if !privileged("each_interface_check_finds_what_blocks_attaching_and_changes_nothing") {
        return;
    }
    let net = TestNet::new();
    let ns = Some(&net.watched);
    let before = links(&net.watched);

    // A plain veth: nothing in the way.
    let (code, checks) = doctor(ns, &[], &["xs0"]);
    assert_eq!(code, 0, "{checks:?}");
    let xs0 = Some("xs0");
    for name in [
        "exists",
        "state",
        "native_xdp",
        "mtu",
        "xdp_hook",
        "tcx_ingress",
        "stacking",
        "memory",
    ] {
        assert_eq!(status(&checks, xs0, name), "ok", "{name}: {checks:?}");
    }
    assert!(
        check(&checks, xs0, "exists")["detail"]
            .as_str()
            .unwrap()
            .contains("driver veth")
    );
    assert!(
        check(&checks, xs0, "native_xdp")["detail"]
            .as_str()
            .unwrap()
            .contains("basic")
    );
    assert_eq!(links(&net.watched), before, "doctor changed nothing");

    // A jumbo MTU: the multi-buffer build, which veth supports.
    net.watched
        .ip(&["link", "set", "dev", "xs0", "mtu", "9000"])
        .unwrap();
    let (_, checks) = doctor(ns, &[], &["xs0"]);
    let mtu = check(&checks, xs0, "mtu");
    assert_eq!(mtu["status"], "ok");
    assert!(mtu["detail"].as_str().unwrap().contains("multi-buffer"));
    net.watched
        .ip(&["link", "set", "dev", "xs0", "mtu", "1500"])
        .unwrap();

    // Another xdpstat holds the hook: a failure naming it, exit 1.
    let first = Xdpstat::start(&net.watched, &["xs0", "--format", "json"]);
    let holding = links(&net.watched);
    let (code, checks) = doctor(ns, &[], &["xs0"]);
    assert_eq!(code, 1);
    let hook = check(&checks, xs0, "xdp_hook");
    assert_eq!(hook["status"], "fail");
    let detail = hook["detail"].as_str().unwrap();
    assert!(
        detail.contains("name xdpstat") && detail.contains("by a BPF link"),
        "{detail}"
    );
    assert!(hook["fix"].as_str().unwrap().contains("xdpstat status"));
    assert_eq!(links(&net.watched), holding, "doctor changed nothing");
    drop(first);

    // A program at tcx ingress is listed; the XDP hook is free again.
    let beside = Xdpstat::start(&net.watched, &["xs0", "--hook", "tcx", "--format", "json"]);
    let (code, checks) = doctor(ns, &[], &["xs0"]);
    assert_eq!(code, 0, "{checks:?}");
    let tcx = check(&checks, xs0, "tcx_ingress");
    assert!(
        tcx["detail"].as_str().unwrap().contains("xdpstat_tcx"),
        "{tcx}"
    );
    assert_eq!(status(&checks, xs0, "xdp_hook"), "ok");
    drop(beside);

    // A bridge: no native XDP, and a device whose ports carry its traffic;
    // its port says whose port it is.
    net.watched
        .ip(&["link", "add", "xsbr0", "type", "bridge"])
        .unwrap();
    net.watched
        .ip(&["link", "set", "xs0", "master", "xsbr0"])
        .unwrap();
    let (code, checks) = doctor(ns, &[], &["xsbr0", "xs0", "lo", "nope0"]);
    assert_eq!(code, 1, "nope0 fails");
    let bridge = Some("xsbr0");
    assert_eq!(status(&checks, bridge, "native_xdp"), "warn");
    assert_eq!(status(&checks, bridge, "stacking"), "warn");
    assert_eq!(
        status(&checks, bridge, "state"),
        "warn",
        "the bridge is down"
    );
    let port = check(&checks, xs0, "stacking");
    assert_eq!(port["status"], "ok");
    assert!(port["detail"].as_str().unwrap().contains("xsbr0"));
    assert_eq!(status(&checks, Some("lo"), "native_xdp"), "warn");
    assert_eq!(status(&checks, Some("nope0"), "exists"), "fail");
    assert!(
        checks
            .iter()
            .all(|c| c["interface"] != "nope0" || c["check"] == "exists"),
        "a missing interface gets one check"
    );
}

#[test]
fn host_checks_see_capabilities_and_bpffs() {
    if !privileged("host_checks_see_capabilities_and_bpffs") {
        return;
    }
    // Everything (root); the plain form says the same in lines.
    let (code, checks) = doctor(None, &[], &[]);
    assert_eq!(code, 0, "{checks:?}");
    assert_eq!(status(&checks, None, "capabilities"), "ok");
    assert_eq!(status(&checks, None, "kernel"), "ok");
    assert!(checks.iter().all(|c| c["interface"].is_null()));

    // No capabilities: a failure naming them, exit 1.
    let nobody = common::NOBODY;
    let (code, checks) = doctor(None, &nobody, &[]);
    assert_eq!(code, 1);
    let capabilities = check(&checks, None, "capabilities");
    assert_eq!(capabilities["status"], "fail");
    assert!(capabilities["detail"].as_str().unwrap().contains("CAP_BPF"));
    // What it cannot see, it does not call empty.
    let pins = check(&checks, None, "pins");
    assert_eq!(pins["status"], "warn");
    assert!(
        pins["detail"].as_str().unwrap().contains("CAP_SYS_ADMIN"),
        "{pins}"
    );

    // In a mount namespace of its own: without bpffs, then with it.
    let in_own_mounts = |script: &str| {
        let output = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
            .env("XDPSTAT", env!("CARGO_BIN_EXE_xdpstat"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let parsed: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
        parsed["checks"].as_array().unwrap().clone()
    };
    let unmount_all =
        r#"for m in $(awk '$3 == "bpf" {print $2}' /proc/self/mounts); do umount "$m"; done"#;
    let checks = in_own_mounts(&format!(
        r#"{unmount_all}; exec "$XDPSTAT" doctor --format json"#
    ));
    assert_eq!(status(&checks, None, "bpffs"), "warn");
    let checks = in_own_mounts(&format!(
        r#"{unmount_all}; mount -t bpf bpffs /sys/fs/bpf && exec "$XDPSTAT" doctor --format json"#
    ));
    let bpffs = check(&checks, None, "bpffs");
    assert_eq!(bpffs["status"], "ok");
    assert!(bpffs["detail"].as_str().unwrap().contains("/sys/fs/bpf"));
}

#[test]
fn doctor_output_is_one_line_per_check() {
    if !privileged("doctor_output_is_one_line_per_check") {
        return;
    }
    let net = TestNet::new();
    let output = xdpstat_command(Some(&net.watched), &[], &["doctor", "xs0"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let (_, checks) = doctor(Some(&net.watched), &[], &["xs0"]);
    assert_eq!(text.lines().count(), checks.len(), "{text}");
    for line in text.lines() {
        let status = line.split_whitespace().next().unwrap();
        assert!(["ok", "warn", "FAIL"].contains(&status), "{line}");
        // Warnings and failures carry their fix after an arrow.
        assert_eq!(status != "ok", line.contains(" -> "), "{line}");
    }
}
