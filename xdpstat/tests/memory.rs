//! The kernel memory `doctor` judges is what the kernel charges: a
//! datapath is loaded, and the memory the kernel states for each of its
//! maps (`memlock` in fdinfo) is summed and held against the formula.
//! (A test binary of its own: every BPF map this process holds is the
//! datapath's.)

mod common;

use common::privileged;
use xdpstat::kernel::{
    datapath::{Datapath, Load},
    memory::{Plan, map_bytes, possible_cpus},
};

/// The kernel's `memlock` of every BPF map this process holds open (each
/// map once, however many descriptors it has), summed.
fn charged() -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_map = std::fs::read_link(fd.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf-map");
        if !is_map {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            fd.file_name().to_str().unwrap()
        ))
        .unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        if seen.insert(field("map_id:")) {
            total += field("memlock:");
        }
    }
    total
}

#[test]
fn the_memory_doctor_states_is_what_the_kernel_charges() {
    if !privileged("the_memory_doctor_states_is_what_the_kernel_charges") {
        return;
    }
    for (max_sources, rule_rows) in [(65_536, true), (65_536, false), (1_000_000, true)] {
        let datapath = Datapath::load_with(Load {
            rule_rows,
            ..Load::new(max_sources)
        })
        .unwrap();
        let charged = charged();
        let planned = map_bytes(Plan {
            max_sources,
            rule_rows,
            rules: 0,
            cpus: possible_cpus(),
        })
        .total();
        eprintln!(
            "--max-sources {max_sources}, rule rows {rule_rows}: the kernel charges {charged} bytes, the formula says {planned}"
        );
        let off = charged.abs_diff(planned) as f64 / charged as f64;
        assert!(
            off < 0.001,
            "{charged} charged, {planned} planned: {:.2}% off",
            off * 100.0
        );
        drop(datapath);
    }
}
