//! The real binary in a real terminal: `xdpstat` under tmux, attached in a
//! private namespace, shows the full-screen view with the right counts,
//! quits on `q` and on SIGTERM, and leaves no program attached and a shell
//! that still works behind it.

mod common;

use std::{
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use common::{PATIENCE, TestNet, ipv4_frame};

/// A tmux session of its own, killed when dropped.
struct Tmux {
    name: String,
}

impl Tmux {
    /// A 120x40 terminal running a plain shell, or `None` without tmux.
    fn start(test: &str) -> Option<Self> {
        if Command::new("tmux").arg("-V").output().is_err() {
            common::skip(test, "needs tmux (.ci/setup installs it)");
            return None;
        }
        // One session per test: the tests of this binary run side by side.
        static SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let session = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("xdpstat-test-{}-{session}", std::process::id());
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x", "120", "-y", "40"])
            .args([
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm-256color",
            ])
            .args(["bash", "--norc", "--noprofile"])
            .status()
            .expect("tmux runs");
        assert!(status.success(), "tmux new-session");
        Some(Self { name })
    }

    fn send(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    fn screen(&self) -> String {
        let output = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `xdpstat ARGS xs0` in `net`'s watched namespace (then says its
    /// exit status as `xdpstat-exit-N`) and waits for the view; returns
    /// `xdpstat ARGS` as it runs, for `pkill -f`.
    fn view(&self, net: &TestNet, args: &str) -> String {
        let command = format!("{} {args}", env!("CARGO_BIN_EXE_xdpstat"));
        self.send(&[
            &format!(
                "ip netns exec {} {command} xs0; echo xdpstat-exit-$?",
                net.watched.name()
            ),
            "Enter",
        ]);
        self.wait_for("the view", |s| s.contains("xs0 (") && s.contains("? help"));
        command
    }

    /// Waits until the screen satisfies `wanted`; returns it.
    fn wait_for(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if wanted(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

/// A table line of the view: the address, then its packet count.
fn row_shows(screen: &str, address: &str, packets: u64) -> bool {
    screen.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some(address) && words.next() == Some(packets.to_string().as_str())
    })
}

#[test]
fn the_view_in_a_real_terminal_counts_quits_and_gives_the_terminal_back() {
    let test = "the_view_in_a_real_terminal_counts_quits_and_gives_the_terminal_back";
    if !common::privileged(test) {
        return;
    }
    let Some(tmux) = Tmux::start(test) else {
        return;
    };
    let net = TestNet::new();
    tmux.view(&net, "--interval 0.2 --top 41");
    let a = ipv4_frame(Ipv4Addr::new(198, 18, 0, 1), &[], 100);
    let b = ipv4_frame(Ipv4Addr::new(198, 18, 200, 2), &[], 500);
    net.send(&a, 50);
    net.send(&b, 30);
    tmux.wait_for("both sources with their counts", |s| {
        row_shows(s, "198.18.0.1", 50) && row_shows(s, "198.18.200.2", 30)
    });
    // Sorting by address puts 198.18.0.1 first.
    tmux.send(&["s", "s", "s", "s"]);
    tmux.wait_for("sorted by address", |s| s.contains("sort: address"));
    tmux.send(&["q"]);
    let screen = tmux.wait_for("exit 0", |s| s.contains("xdpstat-exit-0"));
    assert!(
        screen.contains("198.18.0.1") && screen.contains("sources: 2"),
        "the final plain report follows the view:\n{screen}"
    );
    assert!(!net.xdp_attached(), "q detaches");
    tmux.send(&["echo shell-works-$((40+2))", "Enter"]);
    tmux.wait_for("a working shell", |s| s.contains("shell-works-42"));

    // Again, ended by SIGTERM this time.
    tmux.send(&["clear", "Enter"]);
    let second = tmux.view(&net, "--interval 0.2 --top 43");
    let killed = Command::new("pkill")
        .args(["-TERM", "-f", &second])
        .status()
        .expect("pkill");
    assert!(killed.success(), "found the second xdpstat");
    tmux.wait_for("exit 0 after SIGTERM", |s| s.contains("xdpstat-exit-0"));
    assert!(!net.xdp_attached(), "SIGTERM detaches");
    tmux.send(&["echo still-works-$((40+3))", "Enter"]);
    tmux.wait_for("a working shell", |s| s.contains("still-works-43"));
}

#[test]
fn in_the_view_a_reload_is_told_on_the_notice_line_and_v_shows_the_dropped() {
    let test = "in_the_view_a_reload_is_told_on_the_notice_line_and_v_shows_the_dropped";
    if !common::privileged(test) {
        return;
    }
    let Some(tmux) = Tmux::start(test) else {
        return;
    };
    let scratch = common::Scratch::new(test);
    let rules = |mode: &str| {
        format!("mode = \"{mode}\"\n[[rule]]\nprefix = \"198.18.200.0/24\"\naction = \"drop\"\n")
    };
    let file = scratch.write("rules.toml", rules("enforce"));
    let net = TestNet::new();
    let command = tmux.view(&net, &format!("--interval 0.2 --rules {}", file.display()));
    net.send(&ipv4_frame(Ipv4Addr::new(198, 18, 0, 1), &[], 100), 50);
    net.send(&ipv4_frame(Ipv4Addr::new(198, 18, 200, 2), &[], 500), 30);
    tmux.wait_for("the dropped source's verdict", |s| {
        s.lines()
            .any(|line| line.starts_with("198.18.200.2") && line.contains("dropped 30"))
    });
    tmux.send(&["v"]);
    tmux.wait_for("only the dropped source", |s| {
        row_shows(s, "198.18.200.2", 30) && !s.contains("198.18.0.1 ")
    });
    scratch.write("rules.toml", rules("dry-run"));
    let hup = Command::new("pkill")
        .args(["-HUP", "-f", &command])
        .status()
        .expect("pkill");
    assert!(hup.success(), "found xdpstat");
    // The status line (its end cut off at 120 columns by the long path).
    tmux.wait_for("the reload on the notice line", |s| {
        s.lines()
            .any(|line| line.starts_with("sort: ") && line.contains("rules reloaded from"))
    });
    tmux.send(&["q"]);
    let screen = tmux.wait_for("exit 0", |s| s.contains("xdpstat-exit-0"));
    assert!(
        screen.contains("rules reloaded from"),
        "said again on stderr once the terminal is back:\n{screen}"
    );
}

#[test]
fn a_terminal_that_hangs_up_ends_the_view_even_with_rules_to_reload() {
    let test = "a_terminal_that_hangs_up_ends_the_view_even_with_rules_to_reload";
    if !common::privileged(test) {
        return;
    }
    let Some(tmux) = Tmux::start(test) else {
        return;
    };
    let scratch = common::Scratch::new(test);
    let file = scratch.write(
        "rules.toml",
        "[[rule]]\nprefix = \"198.18.0.0/15\"\naction = \"drop\"\n",
    );
    let net = TestNet::new();
    let marker = tmux.view(&net, &format!("--interval 0.2 --rules {}", file.display()));
    let running = || {
        Command::new("pgrep")
            .args(["-f", &marker])
            .status()
            .expect("pgrep")
            .success()
    };
    assert!(running());
    // A hangup (the window closed) ends xdpstat, as it always did, though
    // SIGHUP now reloads rules.
    drop(tmux);
    let deadline = Instant::now() + PATIENCE;
    while running() {
        assert!(Instant::now() < deadline, "xdpstat outlived its terminal");
        std::thread::sleep(Duration::from_millis(50));
    }
    // pgrep stops matching once the exiting process has given up its
    // memory, a moment before it has closed its files (the BPF link among
    // them): the detach follows within that moment.
    common::eventually("the kernel detached it with the process", || {
        !net.xdp_attached()
    });
}
