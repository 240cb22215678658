//! The programs the benchmarks compare, behind one interface: attach to the
//! benchmark link, read the kernel's run-time statistics, detach.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use aya::programs::{ProgramInfo, XdpMode, xdp::XdpLinkId};
use xdpstat::kernel::{attach::AttachMode, datapath::Datapath};
use xdpstat_lab::netns::Namespace;

use crate::reference::Reference;

/// One of the compared programs.
pub enum Program {
    Reference(Reference, Option<XdpLinkId>),
    Xdpstat(Box<Datapath>),
    /// xdpstat at tc ingress (`--hook tcx`).
    XdpstatTcx(Box<Datapath>),
}

/// The kernel's counters for one program (`kernel.bpf_stats_enabled`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    pub run_time: Duration,
    pub runs: u64,
}

impl RunStats {
    /// Mean time per run between `before` and `self`.
    pub fn per_run_since(&self, before: &RunStats) -> Result<f64> {
        let runs = self.runs - before.runs;
        if runs == 0 {
            return Err(anyhow!("the program did not run"));
        }
        Ok((self.run_time - before.run_time).as_nanos() as f64 / runs as f64)
    }
}

impl Program {
    /// Attaches in native mode to `interface` inside `namespace`.
    pub fn attach(&mut self, namespace: &Namespace, interface: &str) -> Result<()> {
        match self {
            Program::Reference(reference, link) => {
                let program = reference.program_mut()?;
                *link = Some(
                    namespace
                        .run(|| program.attach(interface, XdpMode::Driver))?
                        .context("attaching a reference program")?,
                );
            }
            Program::Xdpstat(datapath) => {
                namespace.run(|| datapath.attach(interface, AttachMode::Native))??;
            }
            Program::XdpstatTcx(datapath) => {
                namespace.run(|| datapath.attach_tcx(interface))??;
            }
        }
        Ok(())
    }

    pub fn detach(&mut self) -> Result<()> {
        match self {
            Program::Reference(reference, link) => {
                if let Some(link) = link.take() {
                    reference.program_mut()?.detach(link)?;
                }
            }
            Program::Xdpstat(datapath) | Program::XdpstatTcx(datapath) => datapath.detach()?,
        }
        Ok(())
    }

    pub fn stats(&mut self) -> Result<RunStats> {
        let info: ProgramInfo = match self {
            Program::Reference(reference, _) => reference.program_mut()?.info()?,
            Program::Xdpstat(datapath) | Program::XdpstatTcx(datapath) => {
                datapath.program_info()?
            }
        };
        Ok(RunStats {
            run_time: info.run_time(),
            runs: info.run_count(),
        })
    }
}
