//! How the per-packet cost grows with the number of sources: the table
//! against the CPU's caches. Each program runs passes of frames spread
//! evenly over the sources with BPF_PROG_TEST_RUN (nothing is sent on any
//! link), timed by the kernel's run-time statistics.

use anyhow::{Context as _, Result};
use aya::sys::{Stats, enable_stats};
use xdpstat::kernel::datapath::{Datapath, Load, Programs};
use xdpstat_lab::frames::{self, ethertype};

use crate::{
    measure::median,
    program::Program,
    reference::Reference,
    traffic::{benchmark_address, ipv4_frame},
};

/// Frames in a measured pass at least (a pass covers every source once).
pub const PER_PACKET_FRAMES: usize = 200_000;

/// The IPv4 sources the benchmark range holds (198.18.0.0/15).
const IPV4_SOURCES: u32 = 1 << 17;

/// Mean ns per packet of each program at one number of sources.
#[derive(Clone, Copy, Debug)]
pub struct PerPacket {
    pub floor: f64,
    /// The seed design (IPv4 only), with an LRU hash as large as
    /// xdpstat's plan; `None` past the IPv4 sources the range holds.
    pub seed: Option<f64>,
    /// xdpstat with IPv4 sources; `None` past the range, as above.
    pub xdpstat_v4: Option<f64>,
    /// xdpstat with IPv6 sources (2001:db8::/32).
    pub xdpstat_v6: f64,
}

/// The frames of a pass over `sources`: IPv4 ones from the benchmark
/// range, or IPv6 ones from the documentation prefix.
#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// Runs one pass of `frames` frames over `sources` sources of `family`
/// through `program`; returns the mean ns per run the kernel measured.
fn pass(program: &mut Program, family: Family, sources: u32, frames: usize) -> Result<f64> {
    let run = |program: &Program, frame: &[u8]| -> Result<()> {
        match program {
            Program::Reference(reference, _) => {
                reference.time_per_run(frame, 1)?;
            }
            Program::Xdpstat(datapath) | Program::XdpstatTcx(datapath) => {
                datapath.test_run(frame)?;
            }
        }
        Ok(())
    };
    let before = program.stats()?;
    match family {
        Family::V4 => {
            let mut frame = ipv4_frame(0);
            for n in 0..frames {
                let source = n as u32 % sources;
                frame[26..30].copy_from_slice(&benchmark_address(source).octets());
                run(program, &frame)?;
            }
        }
        Family::V6 => {
            let packet =
                frames::ipv6_packet("2001:db8::".parse()?, "2001:db8:ffff::1".parse()?, &[], 10);
            let mut frame = frames::ethernet(&[], ethertype::IPV6, &packet);
            for n in 0..frames {
                // 2001:db8:0:0:0:0:NNNN:NNNN, the source at bytes 22..38.
                let source = n as u32 % sources;
                frame[34..38].copy_from_slice(&source.to_be_bytes());
                run(program, &frame)?;
            }
        }
    }
    program.stats()?.per_run_since(&before)
}

/// The per-packet cost of each program at `sources` sources: a first pass
/// puts every source in the tables, the second is measured; median of
/// `rounds`, each with fresh loads.
pub fn per_packet_at(sources: u32, rounds: usize) -> Result<PerPacket> {
    let _stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let frames = PER_PACKET_FRAMES.max(sources as usize);
    let capacity = sources + sources / 8;
    let in_range = sources <= IPV4_SOURCES;
    let xdpstat = || -> Result<Program> {
        Ok(Program::Xdpstat(Box::new(Datapath::load_with(Load {
            rule_rows: false,
            programs: Programs::Plain,
            ..Load::new(capacity)
        })?)))
    };
    let mut times: [Vec<f64>; 4] = Default::default();
    for _ in 0..rounds {
        let mut runs = vec![
            (0, Program::Reference(Reference::floor()?, None), Family::V4),
            (3, xdpstat()?, Family::V6),
        ];
        if in_range {
            runs.push((
                1,
                Program::Reference(Reference::seed(capacity)?, None),
                Family::V4,
            ));
            runs.push((2, xdpstat()?, Family::V4));
        }
        for (column, mut program, family) in runs {
            pass(&mut program, family, sources, frames)?;
            times[column].push(pass(&mut program, family, sources, frames)?);
        }
    }
    let [floor, seed, v4, v6] = times;
    let some = |values: Vec<f64>| (!values.is_empty()).then(|| median(values));
    Ok(PerPacket {
        floor: median(floor),
        seed: some(seed),
        xdpstat_v4: some(v4),
        xdpstat_v6: median(v6),
    })
}
