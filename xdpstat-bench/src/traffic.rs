//! Benchmark traffic: a veth pair between two private namespaces, frames
//! sent into it with AF_PACKET, and the source sequences the measurements
//! replay (Zipf-spread senders, a spoofed-source flood).

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};
use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};
use rand_distr::Zipf;
use xdpstat_lab::{
    frames::{self, ethertype},
    netns::{Namespace, veth_pair},
    packet_socket::PacketSocket,
};

/// The watched end of the benchmark link.
pub const WATCHED: &str = "bx0";

/// Two private namespaces and a veth pair: frames sent on `bx1` arrive on
/// `bx0`, where the program under test is attached.
pub struct Link {
    // Field order is drop order: the socket closes before its namespace goes.
    socket: PacketSocket,
    pub watched: Namespace,
    pub sender: Namespace,
}

impl Link {
    pub fn new() -> Result<Self> {
        let watched = Namespace::create("bench")?;
        let sender = Namespace::create("bench")?;
        veth_pair(&watched, WATCHED, &sender, "bx1")?;
        let socket = sender
            .run(|| PacketSocket::bind("bx1"))?
            .context("packet socket on bx1")?;
        Ok(Self {
            socket,
            watched,
            sender,
        })
    }

    /// Sends every frame once, in order.
    pub fn send_all(&self, frames: &[Vec<u8>]) -> Result<()> {
        for frame in frames {
            self.socket.send(frame).context("sending a frame")?;
        }
        Ok(())
    }
}

/// A 64-byte Ethernet + IPv4 frame from `source` (an address in
/// 198.18.0.0/15 plus an offset, wrapping inside the range).
pub fn ipv4_frame(source: u32) -> Vec<u8> {
    let packet = frames::ipv4_packet(
        benchmark_address(source),
        Ipv4Addr::new(198, 19, 255, 254),
        &[],
        30,
    );
    frames::ethernet(&[], ethertype::IPV4, &packet)
}

/// Addresses in 198.18.0.0/15.
pub const BENCHMARK_ADDRESSES: u32 = 1 << 17;

/// The `n`th address of 198.18.0.0/15 (wrapping after the last).
pub fn benchmark_address(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xc612_0000 | (n % BENCHMARK_ADDRESSES))
}

/// `packets` source numbers drawn from a Zipf distribution (exponent 1)
/// over `sources` senders: a few heavy talkers and a long tail, in a fixed
/// pseudo-random order (the same for every program measured).
pub fn zipf_sources(packets: usize, sources: u32, seed: u64) -> Result<Vec<u32>> {
    let zipf = Zipf::new(f64::from(sources), 1.0).context("Zipf parameters")?;
    let mut rng = StdRng::seed_from_u64(seed);
    Ok((0..packets).map(|_| rng.sample(zipf) as u32 - 1).collect())
}

/// A spoofed-source flood: every packet from another source of
/// 198.18.0.0/15 in turn (wrapping after its 131,072 addresses), except
/// that each of `big` senders sends `big_share` of all packets, interleaved
/// at random. Big senders are numbers `0..big` and the flood never uses
/// their addresses. Returns the source numbers and each big sender's count.
pub fn flood_sources(packets: usize, big: u32, big_share: f64, seed: u64) -> (Vec<u32>, Vec<u64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let spoofable = BENCHMARK_ADDRESSES - big;
    let mut next_spoofed = 0;
    let mut sent = vec![0u64; big as usize];
    let sources = (0..packets)
        .map(|_| {
            let draw: f64 = rng.random();
            let which = (draw / big_share) as usize;
            if which < big as usize {
                sent[which] += 1;
                which as u32
            } else {
                next_spoofed = (next_spoofed + 1) % spoofable;
                big + next_spoofed
            }
        })
        .collect();
    (sources, sent)
}
