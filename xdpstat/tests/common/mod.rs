//! Helpers the privileged test binaries share: the privilege gate, and the
//! frames of the counting rules.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use xdpstat::kernel::privilege::{Needs, check_capabilities};

/// True when the test may touch the kernel; otherwise says why it does not
/// run, so a skipped test is visible in the output, not silently green.
pub fn privileged(test: &str) -> bool {
    match check_capabilities(Needs::AttachAndNamespaces) {
        Ok(()) => true,
        Err(error) => {
            skip(test, &format!("needs root ({error})"));
            false
        }
    }
}

/// Says that `test` does not run and why, on a line `.ci/run` counts as
/// skipped. The line is written to stderr directly, past the test
/// harness's capture, so a skip shows even when the test passes. In CI
/// (`CI` set), where every test must run, it fails the test instead.
pub fn skip(test: &str, reason: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {reason}");
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} must run in CI: {reason}"
    );
}

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, Ipv6Addr},
    os::linux::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;
use xdpstat_lab::{
    frames::{self, VlanTag, ethertype},
    netns::{Namespace, veth_pair},
    packet_socket::PacketSocket,
};

/// The prefix that runs a command as nobody, with no capabilities.
pub const NOBODY: [&str; 4] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

/// How long any wait in these tests may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Two private namespaces joined by a veth pair: `xs0` (watched) <- `xs1`.
pub struct TestNet {
    // Field order is drop order: the socket closes before its namespace goes.
    socket: PacketSocket,
    pub watched: Namespace,
    pub sender: Namespace,
}

impl TestNet {
    pub fn new() -> Self {
        let watched = Namespace::create("test").expect("namespace");
        let sender = Namespace::create("test").expect("namespace");
        veth_pair(&watched, "xs0", &sender, "xs1").expect("veth pair");
        let socket = sender
            .run(|| PacketSocket::bind("xs1"))
            .expect("enter sender namespace")
            .expect("packet socket");
        Self {
            socket,
            watched,
            sender,
        }
    }

    /// Sends `frame` `count` times from `xs1`.
    pub fn send(&self, frame: &[u8], count: usize) {
        for _ in 0..count {
            self.socket.send(frame).expect("send frame");
        }
    }

    /// Puts `{network}.1/24` on `xs0` and `{network}.2/24` on `xs1`, for
    /// traffic the sender's kernel makes (`network` a /24 of
    /// 198.18.0.0/15, as `198.18.40`).
    pub fn addresses(&self, network: &str) {
        self.watched
            .ip(&["addr", "add", &format!("{network}.1/24"), "dev", "xs0"])
            .unwrap();
        self.sender
            .ip(&["addr", "add", &format!("{network}.2/24"), "dev", "xs1"])
            .unwrap();
    }

    /// Whether any XDP program sits on `xs0`.
    pub fn xdp_attached(&self) -> bool {
        let text = self
            .watched
            .ip_output(&["-json", "-details", "link", "show", "dev", "xs0"])
            .expect("ip link");
        let links: Value = serde_json::from_str(&text).expect("ip -json output");
        assert_eq!(links[0]["ifname"], "xs0", "xs0 should exist: {text}");
        links[0].get("xdp").is_some()
    }
}

/// A running `xdpstat` inside a namespace, its stdout lines and stderr.
pub struct Xdpstat {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    pub stderr_seen: Vec<String>,
}

impl Xdpstat {
    /// Starts `xdpstat ARGS` in `namespace` and waits until it has attached
    /// to every interface among ARGS (the test links are all named `xs*`).
    pub fn start(namespace: &Namespace, args: &[&str]) -> Self {
        let mut one = Self::spawn(namespace, args);
        let deadline = Instant::now() + PATIENCE;
        for interface in args.iter().filter(|a| a.starts_with("xs")) {
            let wanted = format!("attached to {interface} ");
            while !one.stderr_seen.iter().any(|line| line.contains(&wanted)) {
                let wait = deadline.saturating_duration_since(Instant::now());
                match one.stderr.recv_timeout(wait) {
                    Ok(line) => one.stderr_seen.push(line),
                    Err(_) => panic!(
                        "xdpstat did not attach to {interface}; stderr: {:?}",
                        one.stderr_seen
                    ),
                }
            }
        }
        one
    }

    /// Starts `xdpstat ARGS` in `namespace` without waiting.
    pub fn spawn(namespace: &Namespace, args: &[&str]) -> Self {
        Self::from_command(xdpstat_command(Some(namespace), &[], args))
    }

    /// Starts `command` and collects its output lines as they come.
    pub fn from_command(mut command: Command) -> Self {
        let mut child = command.spawn().expect("spawn xdpstat");
        let stdout = lines(child.stdout.take().expect("stdout"));
        let stderr = lines(child.stderr.take().expect("stderr"));
        Self {
            child,
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        }
    }

    /// Waits for a stderr line `wanted` accepts and returns it.
    pub fn stderr_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.stderr_seen.iter().find(|line| wanted(line)) {
                return line.clone();
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(wait) {
                Ok(line) => self.stderr_seen.push(line),
                Err(_) => panic!("no such stderr line; stderr: {:?}", self.stderr_seen),
            }
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal xdpstat");
    }

    /// Forgets the reports already printed and waits for the next one: a
    /// report from after whatever the caller just waited for.
    pub fn fresh_report(&mut self) -> Value {
        while self.stdout.try_recv().is_ok() {}
        self.report_where(|_| true)
    }

    /// Reads JSON reports until one satisfies `done`; returns it.
    pub fn report_where(&mut self, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        let mut last = Value::Null;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(wait) {
                Ok(line) => {
                    let report: Value =
                        serde_json::from_str(&line).expect("a JSON report per line");
                    if done(&report) {
                        return report;
                    }
                    last = report;
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no such report within {PATIENCE:?}; the last one: {last}")
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "xdpstat closed stdout early; stderr: {:?}",
                    self.stderr_seen
                ),
            }
        }
    }

    /// Waits for exit; returns the status, the stdout lines not read yet, and all stderr.
    /// Both streams are read to their end (the reader threads may still be
    /// passing on the last lines when the process has exited).
    pub fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        let status = wait_with_timeout(&mut self.child);
        let rest: Vec<String> = self.stdout.iter().collect();
        let mut stderr = std::mem::take(&mut self.stderr_seen);
        stderr.extend(self.stderr.iter());
        (status, rest, stderr)
    }
}

impl Drop for Xdpstat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Waits for `child`, killing it and failing the test after [`PATIENCE`].
pub fn wait_with_timeout(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("process did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `xdpstat ARGS` with piped output: inside `namespace` when given (through
/// `ip netns exec`), behind `prefix` (such as `setpriv ...`) when given.
pub fn xdpstat_command(namespace: Option<&Namespace>, prefix: &[&str], args: &[&str]) -> Command {
    let mut words: Vec<&str> = Vec::new();
    if let Some(namespace) = namespace {
        words.extend(["ip", "netns", "exec", namespace.name()]);
    }
    words.extend(prefix);
    words.push(env!("CARGO_BIN_EXE_xdpstat"));
    words.extend(args);
    let mut command = Command::new(words[0]);
    command
        .args(&words[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits until `done` holds, polling; fails the test after [`PATIENCE`].
pub fn eventually(what: &str, done: impl FnMut() -> bool) {
    eventually_or(what, done, String::new);
}

/// As [`eventually`], saying what `state` tells when it does not happen.
pub fn eventually_or(what: &str, mut done: impl FnMut() -> bool, state: impl Fn() -> String) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {PATIENCE:?} {}",
            state()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `xdpstat ARGS`, which must fail with exit status 2 and exactly one
/// line on stderr; returns that line.
pub fn one_line_failure(namespace: Option<&Namespace>, prefix: &[&str], args: &[&str]) -> String {
    let (status, _, stderr) = run_to_end(namespace, prefix, args);
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

/// Runs `xdpstat ARGS` to completion; returns its status, stdout and stderr.
pub fn run_to_end(
    namespace: Option<&Namespace>,
    prefix: &[&str],
    args: &[&str],
) -> (ExitStatus, String, String) {
    let (status, stdout, stderr) =
        Xdpstat::from_command(xdpstat_command(namespace, prefix, args)).finish();
    (status, stdout.join("\n"), stderr.join("\n"))
}

/// The frames `xdpstat demo` says on stderr it sent.
pub fn demo_sent(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("xdpstat demo: sent ")?
                .strip_suffix(" frames")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("demo says how much it sent: {stderr}"))
}

/// `(packets, bytes)` of a `{"packets", "bytes"}` object.
pub fn pair(value: &Value) -> (u64, u64) {
    (
        value["packets"].as_u64().expect("packets"),
        value["bytes"].as_u64().expect("bytes"),
    )
}

/// `(packets, bytes)` of the source with `address` in a report, if listed.
pub fn source(report: &Value, address: &str) -> Option<(u64, u64)> {
    report["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["address"] == address)
        .map(pair)
}

/// Packets of all classes in a report.
pub fn total_packets(report: &Value) -> u64 {
    ["ipv4", "ipv6", "non_ip", "malformed"]
        .iter()
        .map(|class| pair(&report["totals"][class]).0)
        .sum()
}

/// Frames with known sources for the live tests.
pub fn ipv4_frame(source: Ipv4Addr, tags: &[VlanTag], payload: usize) -> Vec<u8> {
    let packet = frames::ipv4_packet(source, Ipv4Addr::new(198, 19, 0, 1), &[], payload);
    frames::ethernet(tags, ethertype::IPV4, &packet)
}

pub fn ipv6_frame(source: Ipv6Addr, tags: &[VlanTag], payload: usize) -> Vec<u8> {
    let packet = frames::ipv6_packet(source, "2001:db8:ffff::1".parse().unwrap(), &[], payload);
    frames::ethernet(tags, ethertype::IPV6, &packet)
}

/// Keeps the calling thread on one CPU, so that BPF_PROG_TEST_RUN calls
/// share one CPU's runs and settle in the order they were made.
pub fn pin_to_one_cpu() {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    let allowed = sched_getaffinity(Pid::from_raw(0)).expect("affinity");
    let cpu = (0..CpuSet::count())
        .find(|&cpu| allowed.is_set(cpu).unwrap_or(false))
        .expect("some CPU is allowed");
    let mut one = CpuSet::new();
    one.set(cpu).expect("CPU in range");
    sched_setaffinity(Pid::from_raw(0), &one).expect("pin to one CPU");
}

/// A scratch directory removed at the end of the test.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xdpstat-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    /// Writes `text` to the file `name` in the directory; returns its path.
    pub fn write(&self, name: &str, text: impl AsRef<[u8]>) -> std::path::PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether the program `tool` runs here; when not, the test says so and
/// skips (in CI, where `.ci/setup` installs it, it fails).
pub fn have(test: &str, tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        skip(
            test,
            &format!("{tool} is not installed (.ci/setup installs it)"),
        );
    }
    found
}

/// `ARGS` run inside `namespace` (through `ip netns exec`), bounded to 30 s.
pub fn in_namespace(namespace: &Namespace, args: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace.name(), "timeout", "30"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// 8 MB of TCP with iperf3 from `{network}.2` on `xs1` to `{network}.1` on
/// `xs0` (a /24 of 198.18.0.0/15; the addresses are put on the links
/// here); returns when the server has received it all.
pub fn iperf3_8mb(net: &TestNet, network: &str) {
    let (server, client) = (format!("{network}.1"), format!("{network}.2"));
    net.addresses(network);
    let (server, client) = (server.as_str(), client.as_str());
    let mut listening = in_namespace(&net.watched, &["iperf3", "-s", "-1", "-B", server])
        .spawn()
        .expect("iperf3 server");
    // The server listens within moments; the client retries until then.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let sent = in_namespace(
            &net.sender,
            &["iperf3", "-c", server, "-n", "8M", "-B", client],
        )
        .output()
        .expect("iperf3 client");
        if sent.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "iperf3 client: {}",
            String::from_utf8_lossy(&sent.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_with_timeout(&mut listening);
}

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use etherparse::{NetSlice, SlicedPacket};
use xdpstat_lab::packet_socket::Listener;

/// Counts, per IP source, the frames received on `xs0` past XDP.
pub struct Arrived {
    counts: Arc<Mutex<HashMap<IpAddr, u64>>>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Arrived {
    pub fn on(net: &TestNet) -> Self {
        let listener = net
            .watched
            .run(|| Listener::bind("xs0", Duration::from_millis(50)))
            .expect("enter namespace")
            .expect("listening socket");
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (counts, done) = (Arc::clone(&counts), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 65_536];
                while !done.load(Ordering::Relaxed) {
                    let Ok(Some(len)) = listener.recv(&mut buffer) else {
                        continue;
                    };
                    let source = match SlicedPacket::from_ethernet(&buffer[..len]) {
                        Ok(SlicedPacket {
                            net: Some(NetSlice::Ipv4(ip)),
                            ..
                        }) => IpAddr::V4(ip.header().source_addr()),
                        Ok(SlicedPacket {
                            net: Some(NetSlice::Ipv6(ip)),
                            ..
                        }) => IpAddr::V6(ip.header().source_addr()),
                        _ => continue,
                    };
                    *counts.lock().unwrap().entry(source).or_default() += 1;
                }
            })
        };
        Self {
            counts,
            done,
            thread: Some(thread),
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.lock().unwrap().values().sum()
    }

    pub fn of(&self, source: &IpAddr) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .get(source)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Arrived {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A pin root of the test's own, on a bpffs xdpstat mounts there; on drop
/// the pins are removed (which detaches what they hold), the bpffs
/// unmounted and the directory removed.
pub struct PinRoot(pub PathBuf);

impl PinRoot {
    pub fn new(test: &str) -> Self {
        let path = std::env::temp_dir().join(format!("xdpstat-pins-{test}-{}", std::process::id()));
        let root = Self(path);
        root.clean();
        std::fs::create_dir_all(&root.0).unwrap();
        root
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// The directory of `interface` in `namespace`.
    pub fn dir(&self, namespace: &Namespace, interface: &str) -> PathBuf {
        self.0
            .join(format!("net{}", inode_of(namespace)))
            .join(interface)
    }

    pub fn clean(&self) {
        if let Ok(namespaces) = std::fs::read_dir(&self.0) {
            for namespace in namespaces.flatten() {
                if namespace.path().is_dir() {
                    let _ = std::fs::remove_dir_all(namespace.path());
                }
            }
        }
        let path = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; unmounting what may not be mounted.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        self.clean();
    }
}

/// `xdpstat ARGS` in `namespace`'s network namespace and the host's mount
/// namespace, behind `prefix` (such as `setpriv ...`).
pub fn nsenter(namespace: &Namespace, prefix: &[&str], args: &[&str]) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{}", namespace.name()))
        .args(prefix)
        .arg(env!("CARGO_BIN_EXE_xdpstat"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The JSON reports a run of xdpstat printed, one per line.
pub fn reports(output: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

/// What a run of xdpstat said on stderr.
pub fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A TCP port free on the loopback of `namespace` (the host's: `None`).
pub fn free_port(namespace: Option<&Namespace>) -> u16 {
    let bind = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    match namespace {
        Some(namespace) => namespace.run(bind).unwrap(),
        None => bind(),
    }
}

/// Runs `xdpstat ARGS` in `namespace`'s network namespace and the host's
/// mount namespace, to its end: `(exit code, stdout, stderr)`.
pub fn run_in(namespace: &Namespace, args: &[&str]) -> (i32, String, String) {
    let (status, stdout, stderr) = Xdpstat::from_command(nsenter(namespace, &[], args)).finish();
    (
        status.code().unwrap_or(-1),
        stdout.join("\n"),
        stderr.join("\n"),
    )
}

/// Starts a persisted xdpstat on `interface` in `namespace` behind
/// `prefix` (such as `setpriv ...`), reporting JSON every 0.2 s.
pub fn spawn_persisted(
    namespace: &Namespace,
    interface: &str,
    root: &PinRoot,
    prefix: &[&str],
    extra: &[&str],
) -> Xdpstat {
    let mut args = vec![
        interface,
        "--persist",
        "--pin-dir",
        root.arg(),
        "--format",
        "json",
        "--interval",
        "0.2",
    ];
    args.extend_from_slice(extra);
    Xdpstat::from_command(nsenter(namespace, prefix, &args))
}

/// [`spawn_persisted`], waiting until it has attached.
pub fn start_persisted(
    namespace: &Namespace,
    interface: &str,
    root: &PinRoot,
    extra: &[&str],
) -> Xdpstat {
    let mut one = spawn_persisted(namespace, interface, root, &[], extra);
    one.stderr_line(|line| line.contains(&format!("attached to {interface} ")));
    one
}

/// xdpstat on `xs0` with the rules in `file` and `more` options, JSON
/// every `interval` s.
pub fn start_with_rules(
    net: &TestNet,
    file: &std::path::Path,
    interval: &str,
    more: &[&str],
) -> Xdpstat {
    let rules = ["--rules", file.to_str().unwrap()];
    let report = ["--format", "json", "--interval", interval];
    Xdpstat::start(
        &net.watched,
        &[&["xs0"], &report[..], &rules, more].concat(),
    )
}

/// Sends `count` UDP datagrams of `size` bytes from `from` (an address
/// and port on `xs1`) to `to`: over the MTU, the sender's kernel sends
/// each as fragments.
pub fn send_datagrams(net: &TestNet, from: &str, to: &str, count: u64, size: usize) {
    net.sender
        .run(|| {
            let socket = std::net::UdpSocket::bind(from).expect("bind");
            for _ in 0..count {
                socket
                    .send_to(&vec![7u8; size], to)
                    .expect("send a datagram");
            }
        })
        .unwrap();
}

/// Stops `one` with SIGTERM; it must exit 0. Returns its stderr.
pub fn stop(one: Xdpstat) -> Vec<String> {
    one.signal(Signal::SIGTERM);
    let (status, _, stderr) = one.finish();
    assert!(status.success(), "{stderr:?}");
    stderr
}

/// The XDP program id on `interface` in `namespace`, if any.
pub fn xdp_program(namespace: &Namespace, interface: &str) -> Option<u64> {
    let text = namespace
        .ip_output(&["-json", "-details", "link", "show", "dev", interface])
        .unwrap();
    let links: Value = serde_json::from_str(&text).unwrap();
    links[0]["xdp"]["prog"]["id"].as_u64()
}

/// The inode of `namespace`: what xdpstat names it by (`net<inode>`).
pub fn inode_of(namespace: &Namespace) -> u64 {
    std::fs::metadata(Path::new("/run/netns").join(namespace.name()))
        .unwrap()
        .st_ino()
}

/// A nanosecond pcap of Ethernet `frames`, each with its time (ns since
/// the epoch).
#[allow(dead_code)]
pub fn pcap_of(frames: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Vec<u8> {
    use pcap_file::{
        DataLink, Endianness, TsResolution,
        pcap::{PcapHeader, PcapPacket, PcapWriter},
    };
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: 65_535,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::NanoSecond,
        endianness: Endianness::Little,
    };
    let mut writer = PcapWriter::with_header(Vec::new(), header).expect("a pcap header");
    for (time, frame) in frames {
        writer
            .write_packet(&PcapPacket::new(
                Duration::from_nanos(time),
                frame.len() as u32,
                &frame,
            ))
            .expect("a pcap record");
    }
    writer.into_writer()
}
