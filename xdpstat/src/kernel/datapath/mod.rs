//! One watched interface's kernel side: the embedded XDP program loaded with
//! maps of its own (here), attached ([`hook`]), pinned ([`pinned`]), run
//! on frames ([`test_run`]) and read back into snapshots ([`read`]).
//!
//! Every interface gets its own load of the program, so its counters and its
//! `--max-sources` capacity are its own and need no interface key on the
//! per-packet path.

pub mod capture;
mod hook;
mod maps;
mod pinned;
mod read;
mod runs;
mod test_run;

pub use self::runs::Runs;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Instant, SystemTime},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::PerCpuValues,
    programs::{
        LinkOrder, ProgramError, ProgramInfo, SchedClassifier, TcAttachType, TestRun,
        TestRunOptions, TestRunResult, Xdp,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions},
        xdp::{XdpLink, XdpLinkId},
    },
};
use xdpstat_common::{
    COMPACT_PROGRAM_NAME, CPU_STATE_MAP, Counter, CpuState, FRAGS_PROGRAM_NAME, HASH_SEED_GLOBAL,
    META_MAP, Meta, NO_ENTRY, PIN_LAYOUT, PROGRAM_NAME, REPLAY_PROGRAM_NAME, SOURCES_V4_MAP,
    TABLE_ENTRIES_GLOBAL, TCX_PROGRAM_NAME,
    kinds::{
        PORTS,
        side::{self, SIDES},
    },
    sketch::{
        HEAVY_V4_MAP, HEAVY_V6_MAP, PREFIX_V4_MASK_GLOBAL, PREFIX_V6_MASK_GLOBAL, PrefixKey,
        SKETCH_ROWS, SKETCH_SECTION, SKETCH_V4_MAP, SKETCH_V6_MAP, error_bound, sketch_cell,
    },
    table_entries,
};

use self::maps::Maps;
use crate::{
    counts::kinds::{Kinds, Ports},
    counts::prefixes::{PrefixLens, Prefixes},
    counts::snapshot::{ClassSlots, Snapshot},
    counts::sources::{SourceTable, SourceTableBuilder},
    counts::verdicts::VerdictRead,
    error::{Cause, XdpstatError},
    kernel::attach::{AttachMode, Attached, LinkKind, ObtainedMode, attach_error},
    kernel::memory::{layouts, map_names, possible_cpus},
    kernel::meta,
    kernel::pins::PinDir,
    kernel::rulemaps::RuleMaps,
    kernel::tables::{Acted, ReadMethod, SourcesRead, TableFds, TableMaps, Tables},
    rules::RuleSet,
};

/// The XDP program, built by `build.rs` and embedded so nothing is read from
/// disk at run time.
static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdpstat"));

/// Frames up to this long are linear under BPF_PROG_TEST_RUN (a 4 KiB page
/// less the XDP headroom and `skb_shared_info`); longer ones need the
/// multi-buffer program.
pub const LINEAR_TEST_FRAME_MAX: usize = 4096 - 256 - 320;

/// The most of a frame a replay runs: BPF_PROG_TEST_RUN takes a linear
/// part and at most 17 pages of fragments (about 70 KB); the rest of a
/// longer frame is counted through its wire length.
pub const REPLAY_RUN_MAX: usize = 64 * 1024;

/// Which build of the program: the plain one, or the one that handles
/// multi-buffer frames (and pays a helper call per frame for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Linear,
    Frags,
    /// Never attached: `xdpstat replay` runs captures through it.
    Replay,
}

impl Variant {
    fn program_name(self) -> &'static str {
        match self {
            Variant::Linear => PROGRAM_NAME,
            Variant::Frags => FRAGS_PROGRAM_NAME,
            Variant::Replay => REPLAY_PROGRAM_NAME,
        }
    }
}

/// How a datapath is attached, and where.
enum Attachment {
    Xdp {
        interface: String,
        variant: Variant,
        id: XdpLinkId,
    },
    Tcx {
        interface: String,
        id: SchedClassifierLinkId,
    },
}

impl Attachment {
    fn interface(&self) -> &str {
        match self {
            Self::Xdp { interface, .. } | Self::Tcx { interface, .. } => interface,
        }
    }
}

/// How a datapath is loaded.
#[derive(Clone, Copy, Debug)]
pub struct Load<'a> {
    /// Sources per address family the tables are planned for.
    pub max_sources: u32,
    /// The prefix lengths the sketches count under.
    pub prefix_len: PrefixLens,
    /// Its maps are the ones pinned here (created and pinned if absent).
    pub pins: Option<&'a PinDir>,
    /// The record of those pins, whose table size and hash seed the
    /// program must keep.
    pub resume: Option<&'a Meta>,
    /// A row per table entry for what rules do to each source (72 bytes an
    /// entry; a persisted datapath always has them, since rules may come
    /// with any restart).
    pub rule_rows: bool,
    /// What `--capture` copies; `None`: nothing.
    pub capture: Option<capture::Settings>,
    /// Which builds of the program are loaded (each costs the verifier
    /// hundreds of milliseconds).
    pub programs: Programs,
}

/// Which builds of the program a datapath loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Programs {
    /// Every build: the plain and multi-buffer XDP programs and the tcx
    /// one (any of which may be attached), the replay build, and the
    /// program a read copies the tables' sources out through.
    All,
    /// The replay build alone: what a replay whose frames keep their time
    /// runs every frame through. A replay's datapath, read once at its
    /// end (or once a second of the capture, with triggers), walks the
    /// mapped tables: loading the copying program (about 25 ms) would
    /// cost more than it saves.
    Replay,
    /// The plain build, what live traffic runs through, and the program
    /// its reads, every interval, go through.
    Plain,
    /// None yet: [`Datapath::runs`] loads each build a replay runs when it
    /// is first needed.
    WhenNeeded,
}

impl Programs {
    fn includes(self, name: &str) -> bool {
        match self {
            Programs::All => true,
            Programs::Replay => name == REPLAY_PROGRAM_NAME,
            Programs::Plain => name == PROGRAM_NAME || name == COMPACT_PROGRAM_NAME,
            Programs::WhenNeeded => false,
        }
    }
}

impl Load<'_> {
    /// Tables for `max_sources`, the default prefix lengths, rule rows,
    /// nothing pinned.
    pub fn new(max_sources: u32) -> Self {
        Self {
            max_sources,
            prefix_len: PrefixLens::default(),
            pins: None,
            resume: None,
            rule_rows: true,
            capture: None,
            programs: Programs::All,
        }
    }
}

/// A loaded copy of the XDP program and its maps.
pub struct Datapath {
    /// The programs (the maps are taken out into `maps` and `rules`).
    ebpf: Ebpf,
    maps: Maps,
    max_sources: u32,
    seed: u64,
    /// The prefix lengths the sketches count under.
    lens: PrefixLens,
    link: Option<Attachment>,
    /// Our own descriptor of the BPF link, when the attachment is one.
    link_fd: Option<OwnedFd>,
    tables: Mutex<Tables>,
    /// The rule maps, taken out of `ebpf` (shared with the SIGHUP reload).
    rules: Arc<Mutex<RuleMaps>>,
    /// The locked pin directory of a persisted datapath, which stays
    /// attached when xdpstat exits.
    persisted: Option<PinDir>,
}

impl Datapath {
    /// Loads the program with source tables planned for `max_sources`
    /// sources per address family. Nothing is attached yet.
    pub fn load(max_sources: u32) -> Result<Self, XdpstatError> {
        Self::load_with(Load::new(max_sources))
    }

    /// Loads the program as `options` say. Nothing is attached yet.
    pub fn load_with(options: Load<'_>) -> Result<Self, XdpstatError> {
        let Load {
            max_sources,
            prefix_len: lens,
            pins,
            resume,
            rule_rows,
            capture,
            programs,
        } = options;
        if max_sources == 0 {
            return Err(XdpstatError::Usage(
                "--max-sources must be at least 1".into(),
            ));
        }
        let entries = resume.map_or_else(|| table_entries(max_sources), |meta| meta.table_entries);
        let seed = match resume {
            Some(meta) => meta.hash_seed,
            None => random_seed()?,
        };
        let pin_paths: Vec<(&'static str, PathBuf)> = pins
            .map(|dir| {
                map_names()
                    .into_iter()
                    .map(|name| (name, dir.file(name)))
                    .collect()
            })
            .unwrap_or_default();
        let (v4_mask, v6_mask) = (lens.v4_mask(), lens.v6_mask());
        let rule_rows = rule_rows || pins.is_some();
        let rows = if rule_rows { entries } else { 1 };
        let mut loader = EbpfLoader::new();
        loader
            .override_global(TABLE_ENTRIES_GLOBAL, &entries, true)
            .override_global(HASH_SEED_GLOBAL, &seed, true)
            .override_global(PREFIX_V4_MASK_GLOBAL, &v4_mask, true)
            .override_global(PREFIX_V6_MASK_GLOBAL, &v6_mask, true);
        let capture = capture.unwrap_or_default();
        let (interval, tolerance) = capture.budget();
        loader
            .override_global(capture::VERDICTS_GLOBAL, &capture.verdicts, true)
            .override_global(capture::SNAPLEN_GLOBAL, &capture.snaplen, true)
            .override_global(capture::INTERVAL_GLOBAL, &interval, true)
            .override_global(capture::TOLERANCE_GLOBAL, &tolerance, true);
        // Every map as its layout says (a run sizes the tables, their page
        // flags and their rows).
        for map in layouts(entries, rows, possible_cpus()) {
            loader.map_max_entries(map.name, map.max_entries);
        }
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(PROGRAM_OBJECT)
            .map_err(|e| XdpstatError::Load { source: e.into() })?;
        load_programs(&mut ebpf, programs)?;
        let (maps, record) = Maps::take(&mut ebpf)?;
        let table_fds = [false, true].map(|v6| {
            maps.sources_fd(v6).and_then(|fd| {
                fd.try_clone_to_owned().map_err(|e| XdpstatError::Map {
                    map: SOURCES_V4_MAP,
                    source: e.into(),
                })
            })
        });
        let [v4_fd, v6_fd] = table_fds;
        let rules = RuleMaps::take(
            &mut ebpf,
            [v4_fd?, v6_fd?],
            entries as usize,
            resume.is_some(),
        )
        .map_err(|e| XdpstatError::Map {
            map: "rules",
            source: e,
        })?;
        let tables = Tables::open(
            TableFds {
                entries: maps.sources_fd(false)?,
                pages: maps.pages[0].fd().as_fd(),
                rows: rule_rows.then(|| maps.rows[0].fd().as_fd()),
                buckets: rule_rows.then(|| maps.buckets[0].fd().as_fd()),
                mixed: Some(maps.mixed[0].fd().as_fd()),
            },
            TableFds {
                entries: maps.sources_fd(true)?,
                pages: maps.pages[1].fd().as_fd(),
                rows: rule_rows.then(|| maps.rows[1].fd().as_fd()),
                buckets: rule_rows.then(|| maps.buckets[1].fd().as_fd()),
                mixed: Some(maps.mixed[1].fd().as_fd()),
            },
            entries as usize,
            max_sources as usize,
            record,
            lens,
        )?;
        Ok(Self {
            ebpf,
            maps,
            max_sources,
            seed,
            lens,
            link: None,
            link_fd: None,
            tables: Mutex::new(tables),
            rules: Arc::new(Mutex::new(rules)),
            persisted: None,
        })
    }

    /// The rule maps, for whoever reloads the rules.
    pub fn rule_maps(&self) -> Arc<Mutex<RuleMaps>> {
        Arc::clone(&self.rules)
    }

    /// Puts `set` in force in place of the rules in force (none at first),
    /// atomically: each packet is judged by one set or the other whole.
    /// On failure the rules in force stay. `interface` labels errors.
    pub fn put_rules(&self, set: &RuleSet, interface: &str) -> Result<(), XdpstatError> {
        self.rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(set)
            .map_err(|source| XdpstatError::RulesNotInForce {
                interface: interface.to_owned(),
                source,
            })
    }

    /// Sources each table is planned for.
    pub fn max_sources(&self) -> u32 {
        self.max_sources
    }

    /// The kernel's id of the attached program (the plain one when nothing
    /// is attached).
    pub fn program_id(&self) -> Option<u32> {
        self.program_info().ok().map(|info| info.id())
    }

    /// How many instructions the verifier processed to load each of the
    /// five programs (of the kernel's 1,000,000), by program name: how
    /// much room is left for the datapath to grow.
    pub fn verified_instructions(&self) -> Vec<(&'static str, Option<u32>)> {
        let names = [
            Variant::Linear.program_name(),
            Variant::Frags.program_name(),
            Variant::Replay.program_name(),
            TCX_PROGRAM_NAME,
            COMPACT_PROGRAM_NAME,
        ];
        names
            .into_iter()
            .map(|name| {
                let info = match self.ebpf.program(name) {
                    Some(aya::programs::Program::Xdp(program)) => program.info().ok(),
                    Some(aya::programs::Program::SchedClassifier(program)) => program.info().ok(),
                    _ => None,
                };
                (
                    name,
                    info.and_then(|info| info.verified_instruction_count()),
                )
            })
            .collect()
    }

    /// The kernel's view of the attached program (the plain one when
    /// nothing is attached), run-time statistics included.
    pub fn program_info(&self) -> Result<ProgramInfo, XdpstatError> {
        let name = match &self.link {
            Some(Attachment::Tcx { .. }) => TCX_PROGRAM_NAME,
            Some(Attachment::Xdp { variant, .. }) => variant.program_name(),
            None => Variant::Linear.program_name(),
        };
        let info = match self.ebpf.program(name) {
            Some(aya::programs::Program::Xdp(program)) => program.info(),
            Some(aya::programs::Program::SchedClassifier(program)) => program.info(),
            _ => {
                return Err(XdpstatError::Load {
                    source: format!("no program named {name}").into(),
                });
            }
        };
        info.map_err(|e| XdpstatError::Load { source: e.into() })
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // Best effort: aya would detach on drop as well, but this keeps the
        // order explicit (link first, then program and maps).
        let _ = self.detach();
    }
}

/// A random hash seed, so nobody can choose sources that collide.
fn random_seed() -> Result<u64, XdpstatError> {
    let mut seed = [0u8; 8];
    // SAFETY: getrandom fills the buffer it is given.
    let filled = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if filled != seed.len() as isize {
        return Err(XdpstatError::Load {
            source: format!("getrandom: {}", std::io::Error::last_os_error()).into(),
        });
    }
    Ok(u64::from_ne_bytes(seed))
}

/// Loads the wanted builds of the program, each on a thread of its own:
/// the verifier takes hundreds of milliseconds a build, on one CPU.
fn load_programs(ebpf: &mut Ebpf, wanted: Programs) -> Result<(), XdpstatError> {
    let names = [
        PROGRAM_NAME,
        FRAGS_PROGRAM_NAME,
        REPLAY_PROGRAM_NAME,
        TCX_PROGRAM_NAME,
        COMPACT_PROGRAM_NAME,
    ];
    for name in names.into_iter().filter(|name| wanted.includes(name)) {
        if ebpf.program(name).is_none() {
            return Err(XdpstatError::Load {
                source: format!("the embedded object has no program named {name}").into(),
            });
        }
    }
    let programs = ebpf
        .programs_mut()
        .filter(|(name, _)| wanted.includes(name) && names.contains(name));
    std::thread::scope(|scope| {
        let loading: Vec<_> = programs
            .map(|(name, program)| {
                scope.spawn(move || {
                    match program {
                        aya::programs::Program::Xdp(program) => program.load(),
                        aya::programs::Program::SchedClassifier(program) => program.load(),
                        _ => Err(ProgramError::UnexpectedProgramType),
                    }
                    .map_err(|e| format!("{name}: {e}"))
                })
            })
            .collect();
        for thread in loading {
            thread
                .join()
                .unwrap_or_else(|_| Err("a thread loading a program panicked".into()))
                .map_err(|e| XdpstatError::Load { source: e.into() })?;
        }
        Ok(())
    })
}

/// The tcx build of the program.
fn tcx_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, XdpstatError> {
    let program = ebpf
        .program_mut(TCX_PROGRAM_NAME)
        .ok_or_else(|| XdpstatError::Load {
            source: format!("the embedded object has no program named {TCX_PROGRAM_NAME}").into(),
        })?;
    program
        .try_into()
        .map_err(|e: ProgramError| XdpstatError::Load { source: e.into() })
}

fn program_mut(ebpf: &mut Ebpf, variant: Variant) -> Result<&mut Xdp, XdpstatError> {
    let name = variant.program_name();
    let program = ebpf.program_mut(name).ok_or_else(|| XdpstatError::Load {
        source: format!("the embedded object has no program named {name}").into(),
    })?;
    program
        .try_into()
        .map_err(|e: ProgramError| XdpstatError::Load { source: e.into() })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The kernel program names its maps in attributes, which cannot name
    /// a constant: this holds the names in the object file against the
    /// constants the loader uses, with no privilege needed.
    #[test]
    fn the_object_file_s_maps_are_the_ones_the_loader_names() {
        let object = aya_obj::Object::parse(PROGRAM_OBJECT).unwrap();
        let in_object: BTreeSet<&str> = object
            .maps
            .keys()
            .map(String::as_str)
            // The globals' sections (.rodata, .data, .bss) are not named.
            .filter(|name| !name.starts_with('.'))
            .collect();
        let named: BTreeSet<&str> = layouts(1, 1, 1).map(|map| map.name).into_iter().collect();
        assert_eq!(in_object, named);
    }
}
