//! Where xdpstat meets the file system, signals and names, tried as an
//! attacker or an unlucky operator would: names that are paths, strangers
//! and symbolic links among the pins, pin roots that are not empty, not
//! absolute or not what they seem, a SIGHUP before the rules are in force,
//! an interface renamed or a network namespace deleted under persisted
//! pins, a start refused half-way, a rules file caught mid-rewrite, and
//! `status` run without the privilege to see.

mod common;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use common::{
    PinRoot, Scratch, TestNet, Xdpstat, eventually, inode_of, ipv4_frame, nsenter,
    one_line_failure, privileged, run_in, run_to_end, source, start_persisted, stop, xdp_program,
};
use nix::sys::signal::Signal;
use serde_json::Value;
use xdpstat_lab::netns::{Namespace, veth_pair};

/// Every file and directory under `dir`, as paths relative to it, sorted.
fn listing(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            found.push(entry.path().strip_prefix(base).unwrap().to_owned());
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                walk(base, &entry.path(), found);
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}

/// Whether `path` is a mount point (in this mount namespace).
fn mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let wanted = path.to_str().unwrap();
    mounts
        .lines()
        .any(|line| line.split_whitespace().nth(4) == Some(wanted))
}

/// Unmounts whatever is mounted on the path when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let path = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; unmounting what may not be mounted.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn names_that_are_no_interface_s_are_refused_and_nothing_is_removed() {
    if !privileged("names_that_are_no_interface_s_are_refused_and_nothing_is_removed") {
        return;
    }
    let scratch = Scratch::new("names");
    for name in ["a", "b", "link", "sub/c", "sub/d"] {
        scratch.write(name, "keep me");
    }
    let victim = scratch.0.to_str().unwrap().to_owned();
    let before = listing(&scratch.0);
    assert_eq!(before.len(), 6);
    let depth = std::env::current_dir().unwrap().components().count();
    let relative = format!(
        "{}{}",
        "../".repeat(depth + 2),
        victim.trim_start_matches('/')
    );
    let unique_root = format!("/sys/fs/bpf/xdpstat-names-{}", std::process::id());
    let cases: Vec<Vec<&str>> = vec![
        vec!["detach", &victim],
        vec!["detach", &victim, "--pin-dir", "/"],
        vec!["detach", &relative, "--pin-dir", &unique_root],
        vec!["detach", "..", "--pin-dir", &victim],
        vec!["detach", ".", "--pin-dir", &victim],
        vec!["detach", "xs0\nxs1"],
        vec!["doctor", &victim],
        vec!["doctor", "eth0\n"],
        vec![&victim, "--persist", "--pin-dir", "/tmp"],
        vec!["a/b", "--duration", "1"],
        vec!["detach", "sixteen-bytes-xx"],
    ];
    for args in cases {
        let line = one_line_failure(None, &[], &args);
        assert!(
            line.contains("is not an interface name"),
            "{args:?}: {line}"
        );
        assert_eq!(
            listing(&scratch.0),
            before,
            "{args:?} touched the directory"
        );
    }
    assert!(!Path::new(&unique_root).exists(), "nothing was created");
}

#[test]
fn detach_removes_only_what_xdpstat_pinned_and_follows_no_link() {
    if !privileged("detach_removes_only_what_xdpstat_pinned_and_follows_no_link") {
        return;
    }
    let net = TestNet::new();
    let root = PinRoot::new("strangers");
    let scratch = Scratch::new("strangers");
    let precious = scratch.write("precious", "keep me");

    stop(start_persisted(&net.watched, "xs0", &root, &[]));
    let dir = root.dir(&net.watched, "xs0");
    std::os::unix::fs::symlink(&precious, dir.join("note")).unwrap();
    std::fs::create_dir(dir.join("keep")).unwrap();
    let (code, stdout, stderr) = run_in(&net.watched, &["detach", "xs0", "--pin-dir", root.arg()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("detached"), "{stdout}");
    assert!(
        stderr.contains("\"keep\"") && stderr.contains("\"note\""),
        "the strangers are named: {stderr}"
    );
    assert_eq!(
        xdp_program(&net.watched, "xs0"),
        None,
        "the link was removed"
    );
    assert_eq!(
        listing(&dir),
        [PathBuf::from("keep"), PathBuf::from("note")],
        "only xdpstat's pins went"
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");

    // A pin directory that is a symbolic link out of the pin root.
    std::fs::remove_file(dir.join("note")).unwrap();
    std::fs::remove_dir(dir.join("keep")).unwrap();
    std::fs::remove_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&scratch.0, &dir).unwrap();
    let before = listing(&scratch.0);
    let (code, _, stderr) = run_in(&net.watched, &["detach", "xs0", "--pin-dir", root.arg()]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(listing(&scratch.0), before);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    std::fs::remove_file(&dir).unwrap();
}

#[test]
fn bpffs_is_mounted_only_on_an_empty_directory_and_the_pin_root_is_canonical() {
    if !privileged("bpffs_is_mounted_only_on_an_empty_directory_and_the_pin_root_is_canonical") {
        return;
    }
    let net = TestNet::new();
    let scratch = Scratch::new("pin-roots");
    let full = scratch.0.join("full");
    scratch.write("full/file", "keep me");
    let link = scratch.0.join("link");
    std::os::unix::fs::symlink(&full, &link).unwrap();
    // Should bpffs be mounted there after all, it goes before the scratch.
    let _unmount = Unmount(full.clone());
    for pin_dir in [&full, &link] {
        let (code, _, stderr) = run_in(
            &net.watched,
            &["xs0", "--persist", "--pin-dir", pin_dir.to_str().unwrap()],
        );
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("not empty"), "{stderr}");
        assert!(!mounted(&full), "bpffs hid {}", full.display());
        assert_eq!(
            std::fs::read_to_string(full.join("file")).unwrap(),
            "keep me"
        );
    }
    assert_eq!(xdp_program(&net.watched, "xs0"), None);

    // A relative pin root is the same root from any directory.
    let root = PinRoot::new("relative");
    let parent = root.0.parent().unwrap();
    let name = root.0.file_name().unwrap().to_str().unwrap();
    let mut command = nsenter(
        &net.watched,
        &[],
        &["xs0", "--persist", "--pin-dir", name, "--format", "json"],
    );
    command.current_dir(parent);
    let mut one = Xdpstat::from_command(command);
    let said = one.stderr_line(|line| line.contains("mounted bpffs on"));
    assert!(said.contains(root.arg()), "{said}");
    one.stderr_line(|line| line.contains("attached to xs0 "));
    stop(one);
    assert!(mounted(&root.0));
    let (code, stdout, stderr) = run_in(&net.watched, &["detach", "xs0", "--pin-dir", root.arg()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("detached"), "{stdout}");
    assert_eq!(xdp_program(&net.watched, "xs0"), None);
}

#[test]
fn a_sighup_during_start_up_is_a_reload_once_the_rules_are_in_force() {
    if !privileged("a_sighup_during_start_up_is_a_reload_once_the_rules_are_in_force") {
        return;
    }
    let net = TestNet::new();
    let scratch = Scratch::new("early-hup");
    // Enough rules that start-up takes a while.
    let mut text = String::from("mode = \"dry-run\"\n");
    for i in 0..20_000u32 {
        text.push_str(&format!(
            "[[rule]]\nprefix = \"198.19.{}.{}/32\"\naction = \"drop\"\n",
            i >> 8,
            i & 255
        ));
    }
    let file = scratch.write("rules.toml", text);
    let mut one = Xdpstat::spawn(
        &net.watched,
        &["xs0", "--format", "json", "--rules", file.to_str().unwrap()],
    );
    // SIGINT is handled from the first moments of start-up, long before
    // the rules are in force: send SIGHUP then.
    let status = format!("/proc/{}/status", one.pid());
    eventually("xdpstat handles SIGINT", || {
        std::fs::read_to_string(&status).is_ok_and(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("SigCgt:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
        })
    });
    let attached_before = one
        .stderr_seen
        .iter()
        .any(|l| l.contains("attached to xs0"));
    one.signal(Signal::SIGHUP);
    one.stderr_line(|line| line.contains("attached to xs0 "));
    one.stderr_line(|line| {
        line.contains("rules reloaded") && line.contains("20000 rules in force")
    });
    one.fresh_report();
    let stderr = stop(one);
    eprintln!("attached before the SIGHUP: {attached_before}; stderr: {stderr:?}");
}

#[test]
fn a_renamed_interface_keeps_its_persisted_counts_under_its_new_name() {
    if !privileged("a_renamed_interface_keeps_its_persisted_counts_under_its_new_name") {
        return;
    }
    let net = TestNet::new();
    let root = PinRoot::new("rename");
    let address = Ipv4Addr::new(198, 18, 50, 1);
    let frame = ipv4_frame(address, &[], 40);
    let sent_by = |one: &mut Xdpstat, count: u64| {
        one.report_where(|report| {
            source(report, "198.18.50.1").is_some_and(|(packets, _)| packets >= count)
        })
    };

    let mut first = start_persisted(&net.watched, "xs0", &root, &[]);
    net.send(&frame, 10);
    sent_by(&mut first, 10);
    stop(first);
    for args in [
        &["link", "set", "dev", "xs0", "down"][..],
        &["link", "set", "dev", "xs0", "name", "xs0r"],
        &["link", "set", "dev", "xs0r", "up"],
    ] {
        net.watched.ip(args).unwrap();
    }
    net.send(&frame, 5);

    let (code, stdout, stderr) = run_in(
        &net.watched,
        &["status", "--format", "json", "--pin-dir", root.arg()],
    );
    assert_eq!(code, 0, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let ours: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|one| one["netns"].as_u64() == Some(inode_of(&net.watched)))
        .collect();
    assert_eq!(ours.len(), 1, "{stdout}");
    assert_eq!(ours[0]["interface"], "xs0r", "{stdout}");
    assert_eq!(ours[0]["pinned_as"], "xs0", "{stdout}");
    assert_eq!(ours[0]["state"], "counting", "{stdout}");

    // An empty directory under the new name (a start that died before it
    // pinned anything) does not hide the pins counting on the interface.
    std::fs::create_dir(root.dir(&net.watched, "xs0r")).unwrap();
    let mut second = start_persisted(&net.watched, "xs0r", &root, &[]);
    assert!(
        second
            .stderr_seen
            .iter()
            .any(|line| line.contains("earlier name xs0") && line.contains("left them there")),
        "{:?}",
        second.stderr_seen
    );
    net.send(&frame, 5);
    let report = sent_by(&mut second, 20);
    assert_eq!(
        source(&report, "198.18.50.1").unwrap().0,
        20,
        "every frame, once"
    );
    stop(second);

    let (code, stdout, stderr) = run_in(&net.watched, &["detach", "xs0r", "--pin-dir", root.arg()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("detached"), "{stdout}");
    assert_eq!(xdp_program(&net.watched, "xs0r"), None);
    assert!(!root.dir(&net.watched, "xs0").exists());
    // The empty directory is left to `detach --stale`.
    let (code, stdout, stderr) = run_in(
        &net.watched,
        &["detach", "--stale", "--pin-dir", root.arg()],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("removed"), "{stdout}");
    assert!(!root.dir(&net.watched, "xs0r").exists());
}

#[test]
fn pins_of_a_deleted_namespace_go_with_detach_stale_and_nothing_else_does() {
    if !privileged("pins_of_a_deleted_namespace_go_with_detach_stale_and_nothing_else_does") {
        return;
    }
    let net = TestNet::new();
    let root = PinRoot::new("stale");
    stop(start_persisted(&net.watched, "xs0", &root, &[]));
    let gone_inode = {
        let gone = Namespace::create("test").unwrap();
        let peer = Namespace::create("test").unwrap();
        veth_pair(&gone, "xg0", &peer, "xg1").unwrap();
        stop(start_persisted(&gone, "xg0", &root, &[]));
        inode_of(&gone)
        // Both namespaces are deleted here, the veth pair with them.
    };
    let status = || {
        let (status, stdout, stderr) = run_to_end(
            None,
            &[],
            &["status", "--format", "json", "--pin-dir", root.arg()],
        );
        assert!(status.success(), "{stderr}");
        serde_json::from_str::<Value>(&stdout).unwrap()
    };
    let stale = |listed: &Value| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|one| one["netns"].as_u64() == Some(gone_inode))
            .cloned()
    };
    eventually("the deleted namespace's pins are stale", || {
        stale(&status()).is_some_and(|one| one["state"].as_str().unwrap().starts_with("stale"))
    });
    let listed = status();
    let state = stale(&listed).unwrap()["state"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(state.contains("xdpstat detach --stale"), "{state}");

    let (status_code, stdout, stderr) =
        run_to_end(None, &[], &["detach", "--stale", "--pin-dir", root.arg()]);
    assert!(status_code.success(), "{stderr}");
    assert!(stdout.contains("removed"), "{stdout}");
    assert!(!root.0.join(format!("net{gone_inode}")).exists());
    assert!(stale(&status()).is_none());
    // The living one stays, counting.
    assert!(root.dir(&net.watched, "xs0").join("link").exists());
    assert!(xdp_program(&net.watched, "xs0").is_some());
    let (status_code, stdout, _) =
        run_to_end(None, &[], &["detach", "--stale", "--pin-dir", root.arg()]);
    assert!(status_code.success());
    assert!(stdout.contains("nothing to remove"), "{stdout}");
    let (code, _, stderr) = run_in(&net.watched, &["detach", "xs0", "--pin-dir", root.arg()]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_refused_persisted_start_leaves_the_pin_root_as_it_was() {
    if !privileged("a_refused_persisted_start_leaves_the_pin_root_as_it_was") {
        return;
    }
    let net = TestNet::new();
    let root = PinRoot::new("refused");
    // A pin root on bpffs already, as after any earlier --persist run.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpffs", root.arg()])
        .status()
        .unwrap();
    assert!(mounted.success());
    let running = Xdpstat::start(&net.watched, &["xs0", "--format", "json"]);
    let before = listing(&root.0);
    let (code, _, stderr) = run_in(
        &net.watched,
        &[
            "xs0",
            "--persist",
            "--pin-dir",
            root.arg(),
            "--duration",
            "1",
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("xdpstat already counts here"), "{stderr}");
    assert_eq!(listing(&root.0), before, "nothing left behind");
    drop(running);
}

#[test]
fn status_says_when_it_cannot_see_and_finds_pins_under_any_root() {
    if !privileged("status_says_when_it_cannot_see_and_finds_pins_under_any_root") {
        return;
    }
    let nobody = common::NOBODY;
    let line = one_line_failure(None, &nobody, &["status"]);
    assert!(line.contains("CAP_SYS_ADMIN"), "{line}");

    let net = TestNet::new();
    let root = PinRoot::new("any-root");
    stop(start_persisted(&net.watched, "xs0", &root, &[]));
    // Asked about the default root, it still finds this one.
    let (status, stdout, stderr) = run_to_end(None, &[], &["status", "--format", "json"]);
    assert!(status.success(), "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let ours = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|one| one["netns"].as_u64() == Some(inode_of(&net.watched)))
        .unwrap_or_else(|| panic!("not listed: {stdout}"));
    assert_eq!(
        ours["pin_dir"],
        root.dir(&net.watched, "xs0").to_str().unwrap()
    );
    assert_eq!(ours["state"], "counting");
    assert_eq!(ours["reader_pid"], Value::Null);
    let (code, _, stderr) = run_in(&net.watched, &["detach", "xs0", "--pin-dir", root.arg()]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_reload_that_finds_the_file_empty_keeps_the_rules_in_force() {
    if !privileged("a_reload_that_finds_the_file_empty_keeps_the_rules_in_force") {
        return;
    }
    let net = TestNet::new();
    let scratch = Scratch::new("empty-reload");
    let rules = "[[rule]]\nprefix = \"198.18.61.0/24\"\naction = \"drop\"\n";
    let file = scratch.write("rules.toml", rules);
    let root = PinRoot::new("empty-reload");
    let mut one = start_persisted(
        &net.watched,
        "xs0",
        &root,
        &["--rules", file.to_str().unwrap()],
    );
    scratch.write("rules.toml", "");
    one.signal(Signal::SIGHUP);
    let said = one.stderr_line(|line| line.contains("reload refused"));
    assert!(said.contains("empty"), "{said}");
    let report = one.fresh_report();
    assert_eq!(report["rules"].as_array().unwrap().len(), 1, "{report}");
    scratch.write("rules.toml", "mode = \"dry-run\"\n");
    one.signal(Signal::SIGHUP);
    one.stderr_line(|line| line.contains("rules reloaded") && line.contains("0 rules in force"));
    scratch.write("rules.toml", rules);
    one.signal(Signal::SIGHUP);
    one.stderr_line(|line| line.contains("rules reloaded") && line.contains("1 rule in force"));
    stop(one);

    // A persisted restart without --rules says it removes the rules.
    let again = start_persisted(&net.watched, "xs0", &root, &[]);
    assert!(
        again
            .stderr_seen
            .iter()
            .any(|line| line.contains("no --rules given") && line.contains("1 rule")),
        "{:?}",
        again.stderr_seen
    );
    stop(again);
    let (code, _, stderr) = run_in(&net.watched, &["detach", "xs0", "--pin-dir", root.arg()]);
    assert_eq!(code, 0, "{stderr}");
}
