//! `cargo bench`: measures xdpstat's datapath and reports against the floor
//! and the seed design, and prints the table BENCHMARKS.md explains.

use anyhow::Result;
use xdpstat::{datapath::Datapath, frames};
use xdpstat_bench::reference::Reference;

const REPEAT: u32 = 5_000_000;
const ROUNDS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<()> {
    let frame = frames::ethernet(
        &[],
        frames::ethertype::IPV4,
        &frames::ipv4_packet([198, 18, 0, 1].into(), [198, 19, 0, 1].into(), &[], 30),
    );
    println!("frame {} bytes", frame.len());
    let floor = Reference::floor()?;
    let seed16 = Reference::seed(16)?;
    let seed64k = Reference::seed(65536)?;
    let xdpstat = Datapath::load(65536)?;
    let mut f = vec![];
    let mut s16 = vec![];
    let mut s64 = vec![];
    let mut x = vec![];
    for _ in 0..ROUNDS {
        f.push(floor.time_per_run(&frame, REPEAT)?.as_nanos() as f64);
        s16.push(seed16.time_per_run(&frame, REPEAT)?.as_nanos() as f64);
        s64.push(seed64k.time_per_run(&frame, REPEAT)?.as_nanos() as f64);
        x.push(
            xdpstat
                .timed_test_run(xdpstat::datapath::Variant::Linear, &frame, REPEAT)?
                .duration
                .as_nanos() as f64,
        );
    }
    println!(
        "floor {:?}\nseed16 {:?}\nseed64k {:?}\nxdpstat {:?}",
        f, s16, s64, x
    );
    let fl = median(f);
    println!(
        "overhead seed16 {} seed64k {} xdpstat {}",
        median(s16) - fl,
        median(s64) - fl,
        median(x) - fl
    );
    Ok(())
}
