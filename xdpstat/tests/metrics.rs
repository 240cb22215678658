//! `--metrics`: the HTTP endpoints, a real Prometheus server scraping
//! xdpstat while frames flow over the test veth, and many scrapes at once.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::{PATIENCE, TestNet, Xdpstat, ipv4_frame, ipv6_frame, total_packets};
use serde_json::Value;
use xdpstat::{
    output::metrics::server::MetricsServer,
    output::metrics::{InterfaceInfo, Metrics},
};
use xdpstat_lab::netns::Namespace;

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    )
}

fn get(url: &str) -> (u16, String, String) {
    let mut response = agent().get(url).call().expect("request");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (response.status().as_u16(), content_type, body)
}

#[test]
fn the_endpoints_answer_get_and_head_and_nothing_else() {
    let metrics = Metrics::new(
        vec![InterfaceInfo {
            name: "eth0".into(),
            mode: "native".into(),
            link: "bpf link".into(),
            program_id: None,
            capacity: Some(8),
        }],
        50,
    );
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics.published()).unwrap();
    let base = format!("http://{}", server.address());
    let (status, content_type, body) = get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "xdpstat_packets_total")
    );
    let mut openmetrics = agent()
        .get(format!("{base}/metrics"))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .call()
        .unwrap();
    let content_type = openmetrics
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(
        openmetrics
            .body_mut()
            .read_to_string()
            .unwrap()
            .ends_with("# EOF\n")
    );
    let head = agent().head(format!("{base}/metrics")).call().unwrap();
    assert_eq!(head.status().as_u16(), 200);
    let (status, content_type, body) = get(&format!("{base}/"));
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"));
    assert!(body.contains("href=\"/metrics\""));
    assert_eq!(get(&format!("{base}/nope")).0, 404);
    let post = agent().post(format!("{base}/metrics")).send("x").unwrap();
    assert_eq!(post.status().as_u16(), 405);
    drop(server);
    assert!(
        agent().get(format!("{base}/metrics")).call().is_err(),
        "stopped with its owner"
    );
}

#[test]
fn before_xdpstat_has_attached_a_scrape_gets_503_not_an_empty_200() {
    let published = xdpstat::output::metrics::Published::default();
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), published.clone()).unwrap();
    let url = format!("http://{}/metrics", server.address());
    let mut response = agent().get(&url).call().unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    assert!(
        response
            .body_mut()
            .read_to_string()
            .unwrap()
            .contains("not attached yet")
    );
    // Attaching publishes the first exposition: counters at zero.
    let metrics = Metrics::publishing_to(
        published,
        vec![InterfaceInfo {
            name: "eth0".into(),
            mode: "native".into(),
            link: "bpf link".into(),
            program_id: None,
            capacity: Some(8),
        }],
        50,
    );
    let (status, _, body) = get(&url);
    assert_eq!(status, 200);
    assert!(
        body.contains("xdpstat_packets_total{interface=\"eth0\",class=\"ipv4\"} 0"),
        "{body}"
    );
    drop(metrics);
}

/// xdpstat with `--metrics` on the test veth; its metrics address, on the
/// loopback of the watched namespace (brought up here).
fn start_with_metrics(net: &TestNet, extra: &[&str]) -> (Xdpstat, SocketAddr) {
    net.watched.ip(&["link", "set", "lo", "up"]).unwrap();
    let mut args = vec![
        "--format",
        "json",
        "--interval",
        "0.2",
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    args.push("xs0");
    let mut xdpstat = Xdpstat::start(&net.watched, &args);
    let line = xdpstat.stderr_line(|l| l.contains("metrics on http://"));
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an address in {line:?}"));
    (xdpstat, address)
}

/// A Prometheus server of the test's own, in the watched namespace next to
/// xdpstat, killed (and its data removed) when dropped.
struct Prometheus<'a> {
    child: Child,
    dir: PathBuf,
    port: u16,
    namespace: &'a Namespace,
}

impl<'a> Prometheus<'a> {
    fn start(test: &str, namespace: &'a Namespace, target: SocketAddr) -> Option<Self> {
        if Command::new("prometheus")
            .arg("--version")
            .output()
            .is_err()
        {
            common::skip(test, "needs the prometheus package (.ci/setup installs it)");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("xdpstat-prometheus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: xdpstat\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = common::free_port(Some(namespace));
        let child = Command::new("ip")
            .args(["netns", "exec", namespace.name(), "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Some(Self {
            child,
            dir,
            port,
            namespace,
        })
    }

    /// The value of an instant query's first result.
    fn query(&self, query: &str) -> Option<f64> {
        self.namespace.run(|| self.query_here(query)).unwrap()
    }

    fn query_here(&self, query: &str) -> Option<f64> {
        let mut response = agent()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query("query", query)
            .call()
            .ok()?;
        let body: Value = serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` gives a value `wanted` accepts; returns it.
    fn wait_for(&self, query: &str, wanted: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + 2 * PATIENCE;
        loop {
            let value = self.query(query);
            if let Some(value) = value.filter(|v| wanted(*v)) {
                return value;
            }
            assert!(Instant::now() < deadline, "{query} is {value:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn prometheus_scrapes_the_totals_and_rates_of_traffic_over_veth() {
    let test = "prometheus_scrapes_the_totals_and_rates_of_traffic_over_veth";
    if !common::privileged(test) {
        return;
    }
    let net = TestNet::new();
    let (mut xdpstat, address) = start_with_metrics(&net, &[]);
    let Some(prometheus) = Prometheus::start(test, &net.watched, address) else {
        return;
    };
    prometheus.wait_for("up{job=\"xdpstat\"}", |v| v == 1.0);
    // Six seconds of traffic: 100 frames from A and 50 from C every 100 ms.
    let a = ipv4_frame(Ipv4Addr::new(198, 18, 0, 1), &[], 100);
    let c = ipv6_frame("2001:db8::c".parse().unwrap(), &[], 60);
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < 60 {
        net.send(&a, 100);
        net.send(&c, 50);
        rounds += 1;
        if rounds == 40 {
            // Mid-traffic: Prometheus sees both sources sending, and the
            // per-source rates add up to the class rates.
            let source_a = prometheus.wait_for(
                "rate(xdpstat_source_packets_total{source=\"198.18.0.1\"}[3s])",
                |v| v > 0.0,
            );
            // One query, one evaluation time: A is the only IPv4 source.
            let difference = prometheus
                .query(
                    "sum(rate(xdpstat_source_packets_total{source=\"198.18.0.1\"}[3s])) \
                     - sum(rate(xdpstat_packets_total{class=\"ipv4\"}[3s]))",
                )
                .unwrap();
            assert!(
                difference.abs() <= 1e-6 * source_a,
                "{difference} against {source_a}"
            );
            let ratio = prometheus
                .query("rate(xdpstat_packets_total{class=\"ipv4\"}[3s]) / ignoring(class) rate(xdpstat_packets_total{class=\"ipv6\"}[3s])")
                .unwrap();
            assert!(
                (1.5..=2.5).contains(&ratio),
                "A sends twice what C sends: {ratio}"
            );
        }
        let next = started + Duration::from_millis(100 * rounds);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let report = xdpstat.report_where(|r| total_packets(r) >= 9_000);
    assert_eq!(total_packets(&report), 9_000);
    let ipv4 = prometheus.wait_for("xdpstat_packets_total{class=\"ipv4\"}", |v| v == 6_000.0);
    let ipv6 = prometheus.wait_for("xdpstat_packets_total{class=\"ipv6\"}", |v| v == 3_000.0);
    let bytes = prometheus
        .query("xdpstat_bytes_total{class=\"ipv4\"}")
        .unwrap();
    assert_eq!(
        (ipv4, ipv6, bytes),
        (6_000.0, 3_000.0, 6_000.0 * a.len() as f64)
    );
    let sources = prometheus.wait_for("sum(xdpstat_source_packets_total)", |v| v == 9_000.0);
    assert_eq!(
        sources, 9_000.0,
        "every packet in exactly one source series"
    );
    assert_eq!(
        prometheus.query("xdpstat_packets_total{class=\"unattributed\"}"),
        Some(0.0)
    );
    assert_eq!(
        prometheus.query("xdpstat_info{interface=\"xs0\"}"),
        Some(1.0)
    );
}

/// Polls `url` until it answers 200 with the counters (503 until xdpstat
/// has attached); fails the test after [`PATIENCE`].
fn first_exposition(agent: &ureq::Agent, url: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(mut response) = agent.get(url).call() {
            let status = response.status().as_u16();
            let body = response.body_mut().read_to_string().unwrap_or_default();
            match status {
                200 => {
                    assert!(body.contains("xdpstat_packets_total"), "{body}");
                    return;
                }
                503 => assert!(body.contains("not attached yet"), "{body}"),
                other => panic!("{url} answered {other}: {body}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "no exposition within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Peak resident memory of a process, KiB.
fn peak_rss_kib(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn many_scrapes_at_once_change_no_count_and_hold_no_memory() {
    let test = "many_scrapes_at_once_change_no_count_and_hold_no_memory";
    if !common::privileged(test) {
        return;
    }
    let net = TestNet::new();
    let (mut xdpstat, address) = start_with_metrics(&net, &[]);
    let url = format!("http://{address}/metrics");
    let done = AtomicBool::new(false);
    let mut sent = 0u64;
    let scrapes = std::thread::scope(|scope| {
        let scrapers: Vec<_> = (0..32)
            .map(|_| {
                scope.spawn(|| {
                    // The metrics listen on the watched namespace's loopback.
                    net.watched.enter().unwrap();
                    let agent = agent();
                    first_exposition(&agent, &url);
                    let mut ok = 0u64;
                    // Bounded: until the traffic is done, at most 10 s.
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                        if let Ok(mut response) = agent.get(&url).call() {
                            assert_eq!(response.status().as_u16(), 200);
                            let body = response.body_mut().read_to_string().unwrap_or_default();
                            assert!(body.contains("xdpstat_packets_total"));
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        for round in 0..30u8 {
            let frame = ipv4_frame(Ipv4Addr::new(198, 18, 3, round % 10), &[], 64);
            net.send(&frame, 100);
            sent += 100;
            std::thread::sleep(Duration::from_millis(20));
        }
        done.store(true, Ordering::Relaxed);
        scrapers.into_iter().map(|s| s.join().unwrap()).sum::<u64>()
    });
    assert!(scrapes > 32, "the scrapes got answers ({scrapes})");
    let report = xdpstat.report_where(|r| total_packets(r) >= sent);
    assert_eq!(total_packets(&report), sent, "exact under load");
    let rss_kib = peak_rss_kib(xdpstat.pid());
    assert!(rss_kib < 100 * 1024, "peak resident memory {rss_kib} KiB");
}

/// Hundreds of clients that open a connection and send request headers
/// without end (a slowloris) hold neither memory nor the endpoint: headers
/// are bounded in size and time, connections in number, and scrapes are
/// still answered while they try.
#[test]
fn slow_clients_with_endless_headers_neither_grow_memory_nor_block_scrapes() {
    let test = "slow_clients_with_endless_headers_neither_grow_memory_nor_block_scrapes";
    if !common::privileged(test) {
        return;
    }
    let net = TestNet::new();
    let (xdpstat, address) = start_with_metrics(&net, &[]);
    let url = format!("http://{address}/metrics");
    net.watched
        .run(|| {
            let agent = agent();
            first_exposition(&agent, &url);
            let mut clients = Vec::new();
            // As many as it serves at once (256) and then some, which wait
            // in the listen queue.
            for _ in 0..300 {
                let stream = std::net::TcpStream::connect(address).expect("connect");
                stream.set_nonblocking(true).unwrap();
                clients.push(stream);
            }
            // Each pushes up to 200 KB of a header that never ends, a few
            // times over, while scrapes go on.
            let chunk = format!("GET /metrics HTTP/1.1\r\nX-Slow: {}", "a".repeat(8 * 1024));
            let mut pushed = 0usize;
            for round in 0..5 {
                for client in &mut clients {
                    for _ in 0..5 {
                        match std::io::Write::write(client, chunk.as_bytes()) {
                            Ok(n) => pushed += n,
                            Err(_) => break,
                        }
                    }
                }
                let started = Instant::now();
                let mut response = agent
                    .get(&url)
                    .call()
                    .expect("a scrape while slow clients push");
                assert_eq!(response.status().as_u16(), 200, "round {round}");
                assert!(
                    response
                        .body_mut()
                        .read_to_string()
                        .unwrap()
                        .contains("xdpstat_packets_total")
                );
                eprintln!("round {round}: scrape answered in {:?}", started.elapsed());
            }
            eprintln!("{} slow clients pushed {pushed} bytes", clients.len());
            assert!(pushed > 4 << 20, "the clients pushed {pushed} bytes");
        })
        .unwrap();
    let rss_kib = peak_rss_kib(xdpstat.pid());
    assert!(rss_kib < 100 * 1024, "peak resident memory {rss_kib} KiB");
}

/// With few file descriptors allowed, many idle connections cannot kill
/// the endpoint: it stops accepting while short, keeps counting, and
/// answers again once the clients are gone.
/// Starts xdpstat on `xs0` with `nofile` file descriptors, reporting JSON
/// every 0.2 s and serving metrics on a free loopback port of the watched
/// namespace; returns it, attached, and the metrics address.
fn start_limited(net: &TestNet, nofile: u32) -> (Xdpstat, String) {
    net.watched.ip(&["link", "set", "lo", "up"]).unwrap();
    let address = format!("127.0.0.1:{}", common::free_port(Some(&net.watched)));
    let limit = format!("--nofile={nofile}");
    let mut xdpstat = Xdpstat::from_command(common::xdpstat_command(
        Some(&net.watched),
        &["prlimit", &limit, "--"],
        &[
            "--format",
            "json",
            "--interval",
            "0.2",
            "--metrics",
            &address,
            "xs0",
        ],
    ));
    xdpstat.stderr_line(|l| l.contains("attached to xs0"));
    (xdpstat, address)
}

/// Starts xdpstat with `nofile` descriptors, holds `clients` idle
/// connections to its metrics open while `meanwhile` runs, then checks
/// that scrapes are answered again once they are gone, stops it (exit 0,
/// no panic) and returns its stderr.
fn with_clients_held(
    net: &TestNet,
    nofile: u32,
    clients: usize,
    meanwhile: impl FnOnce(&mut Xdpstat),
) -> Vec<String> {
    let (mut xdpstat, address) = start_limited(net, nofile);
    let url = format!("http://{address}/metrics");
    net.watched
        .run(|| {
            let agent = agent();
            first_exposition(&agent, &url);
            let held: Vec<std::net::TcpStream> = (0..clients)
                .map(|_| std::net::TcpStream::connect(&address).expect("connect"))
                .collect();
            meanwhile(&mut xdpstat);
            drop(held);
            // Once they are gone (or timed out), scrapes are answered again.
            first_exposition(&agent, &url);
        })
        .unwrap();
    xdpstat.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _, stderr) = xdpstat.finish();
    assert!(status.success(), "{status}: {stderr:?}");
    assert!(!stderr.iter().any(|l| l.contains("panicked")), "{stderr:?}");
    stderr
}

#[test]
fn running_out_of_file_descriptors_does_not_kill_the_endpoint() {
    let test = "running_out_of_file_descriptors_does_not_kill_the_endpoint";
    if !common::privileged(test) {
        return;
    }
    let net = TestNet::new();
    // More than it will serve; fewer than the listen queue holds, so no
    // connect waits for a SYN to be retried.
    let stderr = with_clients_held(&net, 80, 100, |xdpstat| {
        // Counting goes on meanwhile.
        net.send(&ipv4_frame(Ipv4Addr::new(198, 18, 4, 1), &[], 64), 50);
        xdpstat.report_where(|r| total_packets(r) >= 50);
    });
    // With 80 descriptors, its own (one per map and program, and a few
    // more: about 60) and a few connections leave too few to read the
    // counters: the server held back (and said so once) rather than let a
    // read fail.
    assert!(
        !stderr.iter().any(|l| l.contains("failed")),
        "no read failed: {stderr:?}"
    );
    assert_eq!(
        stderr
            .iter()
            .filter(|l| l.contains("metrics: fewer than 16 file descriptors would be left"))
            .count(),
        1,
        "{stderr:?}"
    );
}

#[test]
fn clients_beyond_the_connection_cap_wait_and_stderr_says_so_once() {
    let test = "clients_beyond_the_connection_cap_wait_and_stderr_says_so_once";
    if !common::privileged(test) {
        return;
    }
    let net = TestNet::new();
    // 400 descriptors: a cap of 100 connections, with descriptors to spare;
    // past the cap, and fewer than the listen queue holds.
    let stderr = with_clients_held(&net, 400, 150, |xdpstat| {
        xdpstat.stderr_line(|l| l.contains("metrics: all 100 connections are in use"));
    });
    assert_eq!(
        stderr
            .iter()
            .filter(|l| l.contains("connections are in use"))
            .count(),
        1,
        "once a minute at most: {stderr:?}"
    );
}

#[test]
fn an_address_that_cannot_be_bound_fails_before_attaching() {
    if !common::privileged("an_address_that_cannot_be_bound_fails_before_attaching") {
        return;
    }
    let net = TestNet::new();
    net.watched.ip(&["link", "set", "lo", "up"]).unwrap();
    // Somebody already listens there.
    let taken = net
        .watched
        .run(|| TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let error = common::one_line_failure(
        Some(&net.watched),
        &[],
        &["--metrics", &address, "--format", "json", "xs0"],
    );
    assert!(error.contains(&format!("metrics on {address}")), "{error}");
    assert!(!net.xdp_attached(), "nothing was attached");
}
