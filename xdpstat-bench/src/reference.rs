//! The reference XDP programs: `floor` (only XDP_PASS) and `seed` (the
//! cilium/ebpf example's LRU hash of IPv4 source -> u32 count), loaded the
//! way the benchmarks need them.

use std::time::Duration;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun, TestRunOptions, Xdp},
};

static FLOOR_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));
static SEED_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/seed"));

/// Name of the seed program's map.
pub const SEED_MAP: &str = "SEED_STATS";

/// A loaded reference program.
pub struct Reference {
    ebpf: Ebpf,
    name: &'static str,
}

impl Reference {
    /// The program that only returns XDP_PASS.
    pub fn floor() -> Result<Self> {
        Self::load(FLOOR_OBJECT, "floor", None)
    }

    /// The seed design with an LRU hash of `capacity` entries.
    pub fn seed(capacity: u32) -> Result<Self> {
        Self::load(SEED_OBJECT, "seed", Some(capacity))
    }

    fn load(object: &[u8], name: &'static str, capacity: Option<u32>) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        if let Some(capacity) = capacity {
            loader.map_max_entries(SEED_MAP, capacity);
        }
        let mut ebpf = loader
            .load(object)
            .with_context(|| format!("loading the {name} program"))?;
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?;
        program.load()?;
        Ok(Self { ebpf, name })
    }

    /// The loaded XDP program (to attach it or ask the kernel about it).
    pub fn program_mut(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(self.name)
            .context("program vanished")?
            .try_into()?)
    }

    /// The loaded XDP program, to run frames through.
    pub fn program(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(self.name)
            .context("program vanished")?
            .try_into()?)
    }

    /// Mean time of one run of `frame`, over `repeat` runs in the kernel.
    pub fn time_per_run(&self, frame: &[u8], repeat: u32) -> Result<Duration> {
        let program: &Xdp = self
            .ebpf
            .program(self.name)
            .context("program vanished")?
            .try_into()?;
        let result = program.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })?;
        Ok(result.duration)
    }
}
