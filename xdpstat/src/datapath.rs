//! One watched interface's kernel side: the embedded XDP program loaded with
//! maps of its own, attached with a BPF link, and read back into snapshots.
//!
//! Every interface gets its own load of the program, so its counters and its
//! `--max-sources` capacity are its own and need no interface key on the
//! per-packet path.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Instant, SystemTime},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, PerCpuHashMap},
    programs::{
        ProgramError, TestRun, TestRunOptions, Xdp, links::LinkType, loaded_links, xdp::XdpLinkId,
    },
};
use xdpstat_common::{
    CLASS_COUNTERS_MAP, ClassSlot, Counter, Ipv4Key, Ipv6Key, PROGRAM_NAME, SOURCES_V4_MAP,
    SOURCES_V6_MAP,
};

use crate::{
    attach::{AttachMode, Attached, LinkKind, ObtainedMode, attach_error},
    error::{XdpstatError, one_line},
    snapshot::{ClassSlots, Snapshot},
};

/// The XDP program, built by `build.rs` and embedded so nothing is read from
/// disk at run time.
static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdpstat"));

/// A loaded copy of the XDP program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    max_sources: u32,
    link: Option<(String, XdpLinkId)>,
}

impl Datapath {
    /// Loads the program with source maps of `max_sources` entries per
    /// address family. Nothing is attached yet.
    pub fn load(max_sources: u32) -> Result<Self, XdpstatError> {
        if max_sources == 0 {
            return Err(XdpstatError::Usage(
                "--max-sources must be at least 1".into(),
            ));
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(SOURCES_V4_MAP, max_sources)
            .map_max_entries(SOURCES_V6_MAP, max_sources)
            .load(PROGRAM_OBJECT)
            .map_err(|e| XdpstatError::Load {
                reason: one_line(&e),
            })?;
        let program = program_mut(&mut ebpf)?;
        program.load().map_err(|e| XdpstatError::Load {
            reason: one_line(&e),
        })?;
        Ok(Self {
            ebpf,
            max_sources,
            link: None,
        })
    }

    /// Capacity of each source map.
    pub fn max_sources(&self) -> u32 {
        self.max_sources
    }

    /// Attaches to `interface` (a name in the calling thread's network
    /// namespace) and reports the mode and link kind that were obtained.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<Attached, XdpstatError> {
        let program = program_mut(&mut self.ebpf)?;
        let mut last_refusal = None;
        for &xdp_mode in mode.tries() {
            match program.attach(interface, xdp_mode) {
                Ok(link_id) => {
                    self.link = Some((interface.to_owned(), link_id));
                    let link = self.link_kind();
                    return Ok(Attached {
                        interface: interface.to_owned(),
                        mode: ObtainedMode::from(xdp_mode),
                        link,
                    });
                }
                Err(error) => {
                    let error = attach_error(interface, xdp_mode, mode, &error);
                    match error {
                        XdpstatError::ModeRefused { .. } => last_refusal = Some(error),
                        other => return Err(other),
                    }
                }
            }
        }
        Err(last_refusal.unwrap_or_else(|| XdpstatError::Attach {
            interface: interface.to_owned(),
            reason: "no attach mode to try".into(),
        }))
    }

    /// Detaches from the interface, if attached.
    pub fn detach(&mut self) -> Result<(), XdpstatError> {
        let Some((interface, link_id)) = self.link.take() else {
            return Ok(());
        };
        let program = program_mut(&mut self.ebpf)?;
        program.detach(link_id).map_err(|e| XdpstatError::Detach {
            interface,
            reason: one_line(&e),
        })
    }

    /// Whether the kernel holds our attachment as a BPF link (detached by the
    /// kernel when xdpstat dies) or as a netlink attachment (stays behind).
    fn link_kind(&self) -> LinkKind {
        let Some(program_id) = self.program_id() else {
            return LinkKind::Unknown;
        };
        let is_link = loaded_links().flatten().any(|link| {
            link.program_id() == program_id && matches!(link.link_type(), Ok(LinkType::Xdp))
        });
        if is_link {
            LinkKind::BpfLink
        } else {
            LinkKind::Netlink
        }
    }

    /// The kernel's id of the loaded program.
    pub fn program_id(&self) -> Option<u32> {
        let program: &Xdp = self.ebpf.program(PROGRAM_NAME)?.try_into().ok()?;
        program.info().ok().map(|info| info.id())
    }

    /// Runs one frame through the program with BPF_PROG_TEST_RUN and returns
    /// the XDP action it chose. Counts land in the maps as for live traffic.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, ProgramError> {
        self.test_run_repeated(frame, 1)
    }

    /// Runs the same frame `repeat` times in one BPF_PROG_TEST_RUN call.
    pub fn test_run_repeated(&self, frame: &[u8], repeat: u32) -> Result<u32, ProgramError> {
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        let options = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        };
        program.test_run(options).map(|result| result.return_value)
    }

    /// Reads every counter into a snapshot. `interface` only labels errors.
    pub fn snapshot(&self, interface: &str) -> Result<Snapshot, XdpstatError> {
        let taken = Instant::now();
        let wall = SystemTime::now();
        let mut sources = HashMap::new();
        let v4: PerCpuHashMap<&MapData, Ipv4Key, Counter> = self.map(SOURCES_V4_MAP)?;
        read_sources(
            &v4,
            interface,
            SOURCES_V4_MAP,
            |key| IpAddr::V4(Ipv4Addr::from(key)),
            &mut sources,
        )?;
        let v6: PerCpuHashMap<&MapData, Ipv6Key, Counter> = self.map(SOURCES_V6_MAP)?;
        read_sources(
            &v6,
            interface,
            SOURCES_V6_MAP,
            |key| IpAddr::V6(Ipv6Addr::from(key)),
            &mut sources,
        )?;
        let classes: PerCpuArray<&MapData, Counter> = self.map(CLASS_COUNTERS_MAP)?;
        let slot = |slot: ClassSlot| -> Result<Counter, XdpstatError> {
            let values = classes
                .get(&(slot as u32), 0)
                .map_err(|e| XdpstatError::MapRead {
                    interface: interface.to_owned(),
                    map: CLASS_COUNTERS_MAP,
                    reason: one_line(&e),
                })?;
            Ok(sum_cpus(&values))
        };
        let slots = ClassSlots {
            non_ip: slot(ClassSlot::NonIp)?,
            malformed: slot(ClassSlot::Malformed)?,
            unattributed_v4: slot(ClassSlot::UnattributedV4)?,
            unattributed_v6: slot(ClassSlot::UnattributedV6)?,
        };
        Ok(Snapshot {
            taken,
            wall,
            sources,
            slots,
        })
    }

    fn map<'a, M>(&'a self, name: &'static str) -> Result<M, XdpstatError>
    where
        M: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self.ebpf.map(name).ok_or_else(|| XdpstatError::Map {
            map: name,
            reason: "not in the object file".into(),
        })?;
        M::try_from(map).map_err(|e| XdpstatError::Map {
            map: name,
            reason: one_line(&e),
        })
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // Best effort: aya would detach on drop as well, but this keeps the
        // order explicit (link first, then program and maps).
        let _ = self.detach();
    }
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpstatError> {
    let program = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or_else(|| XdpstatError::Load {
            reason: format!("the embedded object has no program named {PROGRAM_NAME}"),
        })?;
    program
        .try_into()
        .map_err(|e: ProgramError| XdpstatError::Load {
            reason: one_line(&e),
        })
}

fn read_sources<K: aya::Pod>(
    map: &PerCpuHashMap<&MapData, K, Counter>,
    interface: &str,
    name: &'static str,
    address: impl Fn(K) -> IpAddr,
    into: &mut HashMap<IpAddr, Counter>,
) -> Result<(), XdpstatError> {
    for entry in map.iter() {
        let (key, values) = entry.map_err(|e| XdpstatError::MapRead {
            interface: interface.to_owned(),
            map: name,
            reason: one_line(&e),
        })?;
        into.insert(address(key), sum_cpus(&values));
    }
    Ok(())
}

fn sum_cpus(values: &[Counter]) -> Counter {
    let mut sum = Counter::default();
    for value in values {
        sum.add(value);
    }
    sum
}
