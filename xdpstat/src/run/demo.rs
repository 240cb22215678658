//! `xdpstat demo`: the whole tool on a private veth pair, for a newcomer with
//! no interface they want to touch. Traffic comes from a fixed cast of
//! IPv4 and IPv6 sources in the benchmarking and documentation ranges, some
//! VLAN-tagged, plus a little ARP and one malformed sender, at different
//! rates so the top-talkers order means something.

use crate::{kernel::attach::Hook, run::watch::check_attach_args};
use std::{
    io::Write,
    net::{Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crate::{
    cli::DemoArgs,
    error::XdpstatError,
    kernel::datapath::{Datapath, Load},
    kernel::privilege::{Needs, check_capabilities},
    run::live::Watched,
    run::watch::{announce, detach_all, feed_metrics, serve_metrics, show},
};
use xdpstat_lab::{
    frames::{self, VlanTag, ethertype, tcp},
    netns::{Namespace, veth_pair},
    packet_socket::PacketSocket,
};

/// How long the demo runs without `--duration`.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// The watched end of the veth pair.
const WATCHED_LINK: &str = "demo0";
/// The sending end.
const SENDER_LINK: &str = "demo1";
/// One round of sending: each source sends its weight in frames.
const ROUND: Duration = Duration::from_millis(10);
/// How long the last frames sent may take to reach the watched end (where
/// the kernel counts them after the XDP program has) before the final
/// report is taken anyway.
const SETTLE: Duration = Duration::from_secs(2);
/// Hard cap on frames sent, whatever the duration.
const MAX_FRAMES: u64 = 2_000_000;

/// Runs the demo until `stop` is set or its duration passes.
pub fn demo(
    args: &DemoArgs,
    out: &mut dyn Write,
    stop: &AtomicBool,
    hangups: Option<crate::run::reload::Hangups>,
) -> Result<(), XdpstatError> {
    check_attach_args(&args.attach)?;
    let rules = crate::run::watch::load_rules(&args.attach)?;
    check_capabilities(Needs::AttachAndNamespaces)?;
    let capture_file = crate::run::capture::prepare(&args.attach)?;
    let server = serve_metrics(&args.metrics)?;
    let mut report = args.report.clone();

    let watched_ns = Namespace::create("demo")?;
    let sender_ns = Namespace::create("demo")?;
    veth_pair(&watched_ns, WATCHED_LINK, &sender_ns, SENDER_LINK)?;
    eprintln!(
        "xdpstat demo: veth {WATCHED_LINK} (namespace {}) <- {SENDER_LINK} (namespace {}); removed at exit",
        watched_ns.name(),
        sender_ns.name()
    );
    let mut datapath = Datapath::load_with(Load {
        prefix_len: args.attach.prefix_len,
        rule_rows: args.attach.rules.is_some(),
        capture: args.attach.capture.settings(true)?,
        ..Load::new(args.attach.max_sources)
    })?;
    datapath.put_rules(&rules, WATCHED_LINK)?;
    let attached = watched_ns.run(|| match args.attach.hook {
        Hook::Xdp => datapath.attach(WATCHED_LINK, args.attach.mode),
        Hook::Tcx => datapath.attach_tcx(WATCHED_LINK),
    })??;
    let mut watched = vec![Watched::new(attached, datapath)];
    let capture = match capture_file {
        Some((file, path, settings)) => {
            let source = crate::run::capture::source(&mut watched[0])?;
            let capture =
                crate::run::capture::Capture::start(file, &path, &settings, vec![source])?;
            watched[0].capture_stopped = Some(capture.stopped());
            Some(capture)
        }
        None => None,
    };
    let maps = watched[0].source.rule_maps();
    let notices = crate::run::reload::Notices::default();
    let targets = vec![(WATCHED_LINK.to_owned(), maps)];
    crate::run::control::serve(&targets, &notices);
    crate::run::reload::on_sighup(hangups, args.attach.rules.clone(), targets, notices.clone())?;
    // Said once `xdpstat ban` is answered and SIGHUP reloads.
    announce(
        &watched[0],
        args.attach.mode,
        args.attach.rules.is_some().then_some(&rules),
    );
    if let Some((_, published)) = &server {
        feed_metrics(&mut watched, published, args.metrics.metrics_top);
    }

    // The traffic thread decides when the run ends (its deadline or a stop
    // request), so the final report holds every frame it sent.
    let traffic_done = AtomicBool::new(false);
    let deadline = Instant::now() + report.duration.take().unwrap_or(DEFAULT_DURATION);
    let (result, traffic) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let sent = send_traffic(&sender_ns, deadline, stop, &traffic_done);
            if let Ok(sent) = &sent {
                wait_until_received(&watched_ns, *sent, stop);
            }
            traffic_done.store(true, Ordering::Relaxed);
            sent
        });
        let result = show(
            &mut watched,
            &report,
            out,
            &|| stop.load(Ordering::Relaxed) || traffic_done.load(Ordering::Relaxed),
            &notices,
        );
        // A closed pipe or an output error ends the run before the traffic does.
        traffic_done.store(true, Ordering::Relaxed);
        let traffic = sender.join().unwrap_or_else(|_| {
            Err(XdpstatError::DemoTraffic {
                doing: "sending".into(),
                source: std::io::Error::other("the traffic thread panicked"),
            })
        });
        (result, traffic)
    });
    drop(server);
    if let Some(capture) = capture {
        capture.finish();
    }
    let detached = detach_all(&mut watched);
    drop(watched);
    drop(sender_ns);
    drop(watched_ns);
    result?;
    eprintln!("xdpstat demo: sent {} frames", traffic?);
    detached
}

/// Waits (at most [`SETTLE`]) until the watched end of the veth pair has
/// received `sent` frames, as the kernel counts them: a frame is counted
/// there after the XDP program has run on it, so the final report then
/// holds every frame sent.
fn wait_until_received(watched: &Namespace, sent: u64, stop: &AtomicBool) {
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let received = watched
            .ip_output(&["-json", "-statistics", "link", "show", "dev", WATCHED_LINK])
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|links| links[0]["stats64"]["rx"]["packets"].as_u64());
        if received.is_some_and(|received| received >= sent) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One sender of the demo's cast: a frame and how many to send per round.
struct Talker {
    frame: Vec<u8>,
    per_round: u32,
}

/// The demo's cast of senders.
fn cast() -> Vec<Talker> {
    let to4 = Ipv4Addr::new(198, 19, 0, 1);
    let to6 = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
    // Each source sends one kind of traffic: (protocol, ports, TCP flags).
    type Kind = (u8, (u16, u16), u8);
    let v4 = |last: [u8; 2], tags: &[VlanTag], payload: usize, kind: Kind| {
        let mut packet =
            frames::ipv4_packet(Ipv4Addr::new(198, 18, last[0], last[1]), to4, &[], payload);
        frames::carrying(&mut packet, kind.0, kind.1, kind.2);
        frames::ethernet(tags, ethertype::IPV4, &packet)
    };
    let v6 = |segments: [u16; 2], tags: &[VlanTag], payload: usize, kind: Kind| {
        let source = Ipv6Addr::new(0x2001, 0xdb8, segments[0], 0, 0, 0, 0, segments[1]);
        let mut packet = frames::ipv6_packet(source, to6, &[], payload);
        frames::carrying(&mut packet, kind.0, kind.1, kind.2);
        frames::ethernet(tags, ethertype::IPV6, &packet)
    };
    let https: Kind = (6, (51_000, 443), tcp::ACK);
    let syn: Kind = (6, (40_000, 443), tcp::SYN);
    let ssh: Kind = (6, (50_022, 22), tcp::ACK);
    let dns_query: Kind = (17, (5353, 53), 0);
    let dns_answer: Kind = (17, (53, 33_000), 0);
    let icmp: Kind = (1, (0, 0), 0);
    let icmpv6: Kind = (58, (0, 0), 0);
    let mut malformed = v4([0, 99], &[], 20, icmp);
    malformed[14] = 0x35; // IPv4 ethertype, version 3: malformed
    vec![
        Talker {
            frame: v4([0, 10], &[], 1200, https),
            per_round: 40,
        },
        Talker {
            frame: v6([0, 0x10], &[], 64, dns_query),
            per_round: 25,
        },
        Talker {
            frame: v4([0, 11], &[VlanTag::dot1q(100)], 400, dns_answer),
            per_round: 20,
        },
        Talker {
            frame: v6(
                [0, 0xbeef],
                &[VlanTag::dot1ad(200), VlanTag::dot1q(300)],
                900,
                ssh,
            ),
            per_round: 10,
        },
        Talker {
            frame: v4([7, 1], &[], 64, syn),
            per_round: 8,
        },
        Talker {
            frame: v6([1, 5], &[VlanTag::dot1q(100)], 200, icmpv6),
            per_round: 5,
        },
        Talker {
            frame: v4(
                [3, 3],
                &[VlanTag::dot1ad(10), VlanTag::dot1q(20)],
                100,
                icmp,
            ),
            per_round: 3,
        },
        Talker {
            frame: frames::ethernet(
                &[],
                ethertype::ARP,
                &frames::arp_request(Ipv4Addr::new(198, 18, 0, 10), to4),
            ),
            per_round: 2,
        },
        Talker {
            frame: malformed,
            per_round: 1,
        },
    ]
}

/// Sends the cast's frames from the sender namespace until `deadline`, a
/// stop request, the end of the report loop (`done`), or [`MAX_FRAMES`];
/// returns how many were sent.
fn send_traffic(
    namespace: &Namespace,
    deadline: Instant,
    stop: &AtomicBool,
    done: &AtomicBool,
) -> Result<u64, XdpstatError> {
    namespace.enter()?;
    let socket = PacketSocket::bind(SENDER_LINK).map_err(|source| XdpstatError::DemoTraffic {
        doing: format!("opening a packet socket on {SENDER_LINK}"),
        source,
    })?;
    let cast = cast();
    let mut sent = 0u64;
    let mut round = Instant::now();
    while Instant::now() < deadline
        && !stop.load(Ordering::Relaxed)
        && !done.load(Ordering::Relaxed)
    {
        for talker in &cast {
            for _ in 0..talker.per_round {
                if sent >= MAX_FRAMES {
                    return Ok(sent);
                }
                socket
                    .send(&talker.frame)
                    .map_err(|source| XdpstatError::DemoTraffic {
                        doing: format!("sending on {SENDER_LINK}"),
                        source,
                    })?;
                sent += 1;
            }
        }
        round += ROUND;
        if let Some(pause) = round.checked_duration_since(Instant::now()) {
            std::thread::sleep(pause);
        }
    }
    Ok(sent)
}
