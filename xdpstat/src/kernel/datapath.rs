//! One watched interface's kernel side: the embedded XDP program loaded with
//! maps of its own, attached with a BPF link, and read back into snapshots.
//!
//! Every interface gets its own load of the program, so its counters and its
//! `--max-sources` capacity are its own and need no interface key on the
//! per-packet path.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Instant, SystemTime},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray, PerCpuValues},
    programs::{
        LinkOrder, ProgramError, ProgramInfo, SchedClassifier, TcAttachType, TestRun,
        TestRunOptions, TestRunResult, Xdp,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions},
        xdp::{XdpLink, XdpLinkId},
    },
};
use xdpstat_common::{
    CPU_STATE_MAP, Counter, CpuState, FRAGS_PROGRAM_NAME, HASH_SEED_GLOBAL, META_MAP, Meta,
    NO_ENTRY, PAGES_V4_MAP, PAGES_V6_MAP, PIN_LAYOUT, PROGRAM_NAME, REPLAY_METADATA,
    REPLAY_PROGRAM_NAME, SOURCES_V4_MAP, SOURCES_V6_MAP, TABLE_ENTRIES_GLOBAL, TABLE_PAGE,
    TCX_PROGRAM_NAME, V4Entry, V6Entry,
    rules::{ROWS_V4_MAP, ROWS_V6_MAP},
    sketch::{
        HEAVY_V4_MAP, HEAVY_V6_MAP, Heavy, PREFIX_V4_MASK_GLOBAL, PREFIX_V6_MASK_GLOBAL, PrefixKey,
        SKETCH_ROWS, SKETCH_V4_MAP, SKETCH_V6_MAP, SKETCH_WIDTH, error_bound, sketch_cell,
    },
    table_entries,
};

use crate::{
    counts::prefixes::{PrefixLens, Prefixes},
    counts::snapshot::{ClassSlots, Snapshot},
    counts::sources::{SourceTable, SourceTableBuilder},
    counts::verdicts::VerdictRead,
    error::{Cause, XdpstatError},
    kernel::attach::{AttachMode, Attached, LinkKind, ObtainedMode, attach_error},
    kernel::meta::{self, Record},
    kernel::pins::{PINNED_MAPS, PinDir},
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

/// A loaded copy of the XDP program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
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
        Self::load_with(max_sources, PrefixLens::default(), None, None, true)
    }

    /// Loads the program; with `pins`, its maps are the ones pinned there
    /// (created and pinned if absent), and with `resume`, the record of
    /// those pins, whose table size and hash seed the program must keep.
    /// `rule_rows`: a row per table entry for what rules do to each source
    /// (80 bytes an entry; a persisted datapath always has them, since
    /// rules may come with any restart).
    pub fn load_with(
        max_sources: u32,
        lens: PrefixLens,
        pins: Option<&PinDir>,
        resume: Option<&Meta>,
        rule_rows: bool,
    ) -> Result<Self, XdpstatError> {
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
                PINNED_MAPS
                    .iter()
                    .map(|&name| (name, dir.file(name)))
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
            .override_global(PREFIX_V6_MASK_GLOBAL, &v6_mask, true)
            .map_max_entries(SOURCES_V4_MAP, entries)
            .map_max_entries(SOURCES_V6_MAP, entries)
            .map_max_entries(PAGES_V4_MAP, page_flags_len(entries, size_of::<V4Entry>()))
            .map_max_entries(PAGES_V6_MAP, page_flags_len(entries, size_of::<V6Entry>()))
            .map_max_entries(ROWS_V4_MAP, rows)
            .map_max_entries(ROWS_V6_MAP, rows);
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(PROGRAM_OBJECT)
            .map_err(|e| XdpstatError::Load { source: e.into() })?;
        for variant in [Variant::Linear, Variant::Frags, Variant::Replay] {
            program_mut(&mut ebpf, variant)?
                .load()
                .map_err(|e| XdpstatError::Load { source: e.into() })?;
        }
        tcx_program(&mut ebpf)?
            .load()
            .map_err(|e| XdpstatError::Load { source: e.into() })?;
        let record = match ebpf.take_map(META_MAP) {
            Some(Map::Array(data)) => Record::open(data).map_err(|e| XdpstatError::Map {
                map: META_MAP,
                source: e.into(),
            })?,
            _ => {
                return Err(XdpstatError::Map {
                    map: META_MAP,
                    source: "not an array in the object file".into(),
                });
            }
        };
        let mut table_fds = Vec::with_capacity(2);
        for name in [SOURCES_V4_MAP, SOURCES_V6_MAP] {
            let fd = match ebpf.map(name) {
                Some(Map::Array(data)) => data.fd().as_fd().try_clone_to_owned(),
                _ => Err(std::io::Error::other("not an array in the object file")),
            }
            .map_err(|e| XdpstatError::Map {
                map: name,
                source: e.into(),
            })?;
            table_fds.push(fd);
        }
        let table_fds: [OwnedFd; 2] = table_fds.try_into().map_err(|_| XdpstatError::Map {
            map: SOURCES_V4_MAP,
            source: "two source tables".into(),
        })?;
        let rules = RuleMaps::take(&mut ebpf, table_fds, entries as usize, resume.is_some())
            .map_err(|e| XdpstatError::Map {
                map: "rules",
                source: e,
            })?;
        let array_fd = |name: &'static str| match ebpf.map(name) {
            Some(Map::Array(data)) => Ok(data.fd().as_fd()),
            _ => Err(XdpstatError::Map {
                map: name,
                source: "not an array in the object file".into(),
            }),
        };
        let tables = Tables::open(
            TableFds {
                entries: array_fd(SOURCES_V4_MAP)?,
                pages: array_fd(PAGES_V4_MAP)?,
                rows: rule_rows.then(|| array_fd(ROWS_V4_MAP)).transpose()?,
            },
            TableFds {
                entries: array_fd(SOURCES_V6_MAP)?,
                pages: array_fd(PAGES_V6_MAP)?,
                rows: rule_rows.then(|| array_fd(ROWS_V6_MAP)).transpose()?,
            },
            entries as usize,
            max_sources as usize,
            record,
            lens,
        )?;
        Ok(Self {
            ebpf,
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

    /// Attaches to `interface` (a name in the calling thread's network
    /// namespace) and reports the mode and link kind that were obtained.
    /// In each mode the plain program is tried first; an interface that
    /// refuses it (a jumbo MTU needs multi-buffer support) gets the frags one.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<Attached, XdpstatError> {
        let mut last_refusal = None;
        let mut native_refused = None;
        for &xdp_mode in mode.tries() {
            for variant in [Variant::Linear, Variant::Frags] {
                let program = program_mut(&mut self.ebpf, variant)?;
                match program.attach(interface, xdp_mode) {
                    Ok(id) => {
                        self.link = Some(Attachment::Xdp {
                            interface: interface.to_owned(),
                            variant,
                            id,
                        });
                        self.link_fd = self.own_link();
                        let link = if self.link_fd.is_some() {
                            LinkKind::BpfLink
                        } else if self.program_id().is_some() {
                            LinkKind::Netlink
                        } else {
                            LinkKind::Unknown
                        };
                        return Ok(Attached {
                            interface: interface.to_owned(),
                            mode: ObtainedMode::from(xdp_mode),
                            link,
                            multi_buffer: variant == Variant::Frags,
                            native_refused: native_refused.clone(),
                        });
                    }
                    Err(error) => {
                        let error = attach_error(interface, xdp_mode, mode, error);
                        match error {
                            XdpstatError::ModeRefused {
                                ref why,
                                ref source,
                                ..
                            } => {
                                if xdp_mode == aya::programs::XdpMode::Driver {
                                    // The cause found, else the kernel's answer.
                                    native_refused = Some(why.clone().unwrap_or_else(|| {
                                        crate::error::one_line(source.as_ref())
                                    }));
                                }
                                last_refusal = Some(error);
                            }
                            other => return Err(other),
                        }
                    }
                }
            }
        }
        Err(last_refusal.unwrap_or_else(|| XdpstatError::Attach {
            interface: interface.to_owned(),
            source: "no attach mode to try".into(),
        }))
    }

    /// Attaches at tc ingress of `interface` through a tcx link (Linux
    /// 6.6): beside whatever holds the XDP hook, counting what it passed.
    pub fn attach_tcx(&mut self, interface: &str) -> Result<Attached, XdpstatError> {
        let id = tcx_program(&mut self.ebpf)?
            .attach_with_options(
                interface,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|error| match error {
                ProgramError::UnknownInterface { .. } => XdpstatError::UnknownInterface {
                    interface: interface.to_owned(),
                },
                ProgramError::TcError(aya::programs::tc::TcError::IoError(ref io))
                    if io.kind() == std::io::ErrorKind::NotFound =>
                {
                    XdpstatError::UnknownInterface {
                        interface: interface.to_owned(),
                    }
                }
                other => XdpstatError::Attach {
                    interface: interface.to_owned(),
                    source: other.into(),
                },
            })?;
        self.link = Some(Attachment::Tcx {
            interface: interface.to_owned(),
            id,
        });
        self.link_fd = self.own_link();
        Ok(Attached {
            interface: interface.to_owned(),
            mode: ObtainedMode::Tcx,
            link: if self.link_fd.is_some() {
                LinkKind::BpfLink
            } else {
                LinkKind::Unknown
            },
            multi_buffer: false,
            native_refused: None,
        })
    }

    /// Detaches from the interface, if attached. An interface that is gone
    /// took the attachment with it: nothing to fail then. A persisted
    /// datapath stays attached: its pins hold it.
    pub fn detach(&mut self) -> Result<(), XdpstatError> {
        if self.persisted.is_some() {
            self.link_fd = None;
            return Ok(());
        }
        let gone = self.interface_gone();
        let Some(attachment) = self.link.take() else {
            return Ok(());
        };
        // Our copy of the link's descriptor would keep it attached.
        self.link_fd = None;
        if gone {
            return Ok(());
        }
        let interface = attachment.interface().to_owned();
        let detached = match attachment {
            Attachment::Xdp { variant, id, .. } => program_mut(&mut self.ebpf, variant)?.detach(id),
            Attachment::Tcx { id, .. } => tcx_program(&mut self.ebpf)?.detach(id),
        };
        detached.map_err(|e| XdpstatError::Detach {
            interface,
            source: e.into(),
        })
    }

    /// Replaces the program of the link pinned at `link` with this one's
    /// (one BPF_LINK_UPDATE: no packet goes uncounted) and takes the
    /// attachment over. `meta` is the pinned record: how it is attached.
    pub fn take_over(
        &mut self,
        interface: &str,
        link: &Path,
        meta: &Meta,
    ) -> Result<Attached, XdpstatError> {
        let failed = |e: Cause| XdpstatError::Attach {
            interface: interface.to_owned(),
            source: e,
        };
        let mode = meta::attach_mode(meta.attach).ok_or_else(|| {
            failed(format!("unknown attachment {} in the record", meta.attach).into())
        })?;
        let pinned = FdLink::from(PinnedLink::from_pin(link).map_err(|e| failed(e.into()))?);
        let multi_buffer = meta.multi_buffer != 0;
        self.link = Some(if mode == ObtainedMode::Tcx {
            let link = SchedClassifierLink::try_from(pinned).map_err(|e| failed(e.into()))?;
            let id = tcx_program(&mut self.ebpf)?
                .attach_to_link(link)
                .map_err(|e| failed(e.into()))?;
            Attachment::Tcx {
                interface: interface.to_owned(),
                id,
            }
        } else {
            let variant = if multi_buffer {
                Variant::Frags
            } else {
                Variant::Linear
            };
            let link = XdpLink::try_from(pinned).map_err(|e| failed(e.into()))?;
            let id = program_mut(&mut self.ebpf, variant)?
                .attach_to_link(link)
                .map_err(|e| failed(e.into()))?;
            Attachment::Xdp {
                interface: interface.to_owned(),
                variant,
                id,
            }
        });
        self.link_fd = self.own_link();
        Ok(Attached {
            interface: interface.to_owned(),
            mode,
            link: LinkKind::BpfLink,
            multi_buffer,
            native_refused: None,
        })
    }

    /// Pins the BPF link of this datapath's attachment at `path`.
    pub fn pin_link(&self, path: &Path) -> Result<(), XdpstatError> {
        let link = self.link_fd.as_ref().ok_or_else(|| {
            XdpstatError::Usage(
                "--persist needs a BPF link, and this kernel attached through netlink".into(),
            )
        })?;
        crate::kernel::bpf_sys::pin(link.as_fd(), path).map_err(|e| XdpstatError::Pins {
            dir: path.to_owned(),
            source: e.into(),
        })
    }

    /// Keeps the datapath attached past the process: its pins, in `dir`
    /// (locked until this datapath is dropped), hold it.
    pub fn keep_pinned(&mut self, dir: PinDir) {
        self.persisted = Some(dir);
    }

    /// The pin directory, when persisted.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.persisted.as_ref().map(PinDir::path)
    }

    /// Writes what this datapath is to its record, for `xdpstat status`
    /// and for the xdpstat that picks persisted pins up later; the layout
    /// goes in last, in the same write, marking the record complete.
    pub fn write_record(
        &self,
        attached: &Attached,
        since: SystemTime,
        persisted: bool,
    ) -> Result<(), XdpstatError> {
        let failed = |e: Cause| XdpstatError::Map {
            map: META_MAP,
            source: e,
        };
        let map_id = |name: &'static str| -> Result<u32, XdpstatError> {
            match self.ebpf.map(name) {
                Some(Map::Array(data)) => data
                    .info()
                    .map(|info| info.id())
                    .map_err(|e| failed(e.into())),
                _ => Err(failed(format!("no array {name}").into())),
            }
        };
        let ids = [
            map_id(SOURCES_V4_MAP)?,
            map_id(SOURCES_V6_MAP)?,
            map_id(PAGES_V4_MAP)?,
            map_id(PAGES_V6_MAP)?,
        ];
        let link = match &self.link_fd {
            Some(link) => {
                crate::kernel::bpf_sys::link_facts(link.as_fd()).map_err(|e| failed(e.into()))?
            }
            None => crate::kernel::bpf_sys::LinkFacts {
                link_type: 0,
                id: 0,
                prog_id: 0,
                ifindex: nix::net::if_::if_nametoindex(attached.interface.as_str()).unwrap_or(0),
            },
        };
        let netns = crate::kernel::pins::netns_inode().map_err(|e| failed(e.into()))?;
        let mut tables = self.lock_tables();
        let entries = tables.entries() as u32;
        tables
            .record_mut()
            .update(|meta| {
                meta.attach = meta::attach_code(attached.mode);
                meta.multi_buffer = u32::from(attached.multi_buffer);
                meta.persisted = u32::from(persisted);
                meta.max_sources = self.max_sources;
                meta.table_entries = entries;
                meta.ifindex = link.ifindex;
                meta.link_id = link.id;
                [
                    meta.sources_v4_id,
                    meta.sources_v6_id,
                    meta.pages_v4_id,
                    meta.pages_v6_id,
                ] = ids;
                meta.hash_seed = self.seed;
                meta.prefix_v4 = u32::from(self.lens.v4);
                meta.prefix_v6 = u32::from(self.lens.v6);
                meta.netns = netns;
                meta.since_ns = meta::nanos(since);
                meta.interface = meta::field(&attached.interface);
                meta.version = meta::field(env!("CARGO_PKG_VERSION"));
                meta.layout = PIN_LAYOUT;
            })
            .map_err(|e| failed(e.into()))
    }

    /// Finishes a retirement a persisted xdpstat died in the middle of
    /// (see `Tables::finish_retiring`).
    pub fn finish_retiring(&self) -> Result<(), XdpstatError> {
        self.lock_tables().finish_retiring()
    }

    /// Our own descriptor of the BPF link holding our attachment (which
    /// the kernel detaches when xdpstat dies), or `None` for a netlink
    /// attachment (which stays behind).
    fn own_link(&self) -> Option<OwnedFd> {
        crate::kernel::bpf_sys::own_link(self.program_id()?)
    }

    /// Whether the interface this datapath was attached to has been
    /// removed. Asked of the BPF link, so it holds whichever network
    /// namespace the interface was in; for a netlink attachment, the name
    /// is looked up in the calling thread's namespace.
    pub fn interface_gone(&self) -> bool {
        let Some(attachment) = &self.link else {
            return false;
        };
        match &self.link_fd {
            Some(link) => matches!(crate::kernel::bpf_sys::link_ifindex(link.as_fd()), Ok(None)),
            None => nix::net::if_::if_nametoindex(attachment.interface()).is_err(),
        }
    }

    /// The kernel's id of the attached program (the plain one when nothing
    /// is attached).
    pub fn program_id(&self) -> Option<u32> {
        self.program_info().ok().map(|info| info.id())
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

    /// Runs one frame through the program with BPF_PROG_TEST_RUN and returns
    /// the XDP action it chose. Counts land in the maps as for live traffic.
    /// Frames longer than [`LINEAR_TEST_FRAME_MAX`] go through the frags
    /// program, as a jumbo-MTU interface would have them.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, ProgramError> {
        self.test_run_repeated(frame, 1)
    }

    /// Runs the same frame `repeat` times in one BPF_PROG_TEST_RUN call.
    pub fn test_run_repeated(&self, frame: &[u8], repeat: u32) -> Result<u32, ProgramError> {
        let variant = if frame.len() > LINEAR_TEST_FRAME_MAX {
            Variant::Frags
        } else {
            Variant::Linear
        };
        self.timed_test_run(variant, frame, repeat)
            .map(|result| result.return_value)
    }

    /// Runs a captured frame through the replay build at `time_ns` (its
    /// capture time: the clock of rate limits), counted as `wire_len`
    /// bytes long: the frame's length on the wire, which may be
    /// more than the bytes run (a snap length, or a frame longer than
    /// [`REPLAY_RUN_MAX`], of which the first part is run).
    pub fn replay_run(
        &self,
        frame: &[u8],
        wire_len: u64,
        time_ns: u64,
    ) -> Result<u32, ProgramError> {
        let program: &Xdp = self
            .ebpf
            .program(REPLAY_PROGRAM_NAME)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        let run = &frame[..frame.len().min(REPLAY_RUN_MAX)];
        let mut data = Vec::with_capacity(REPLAY_METADATA + run.len());
        data.extend_from_slice(&wire_len.max(run.len() as u64).to_ne_bytes());
        data.extend_from_slice(&time_ns.to_ne_bytes());
        data.extend_from_slice(run);
        // struct xdp_md: data (the metadata's length), data_end, then
        // data_meta, ingress_ifindex, rx_queue_index, egress_ifindex, all 0.
        let mut context = [0u8; 24];
        context[..4].copy_from_slice(&(REPLAY_METADATA as u32).to_ne_bytes());
        context[4..8].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        let options = TestRunOptions {
            data_in: Some(&data),
            ctx_in: Some(&context),
            ..TestRunOptions::default()
        };
        program.test_run(options).map(|result| result.return_value)
    }

    /// Runs `frame` `repeat` times through the tcx build with
    /// BPF_PROG_TEST_RUN (a socket buffer is made of it); `duration` is the
    /// mean time of one run.
    pub fn timed_tcx_test_run(
        &self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunResult, ProgramError> {
        let program: &SchedClassifier = self
            .ebpf
            .program(TCX_PROGRAM_NAME)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        program.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })
    }

    /// Runs `frame` `repeat` times through one variant of the program and
    /// returns the kernel's result: `duration` is the mean time of one run.
    pub fn timed_test_run(
        &self,
        variant: Variant,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunResult, ProgramError> {
        let program: &Xdp = self
            .ebpf
            .program(variant.program_name())
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        let options = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        };
        program.test_run(options)
    }

    /// Reads every counter into a snapshot. `interface` only labels errors.
    ///
    /// The tables are read before the CPU states, and the program starts a
    /// new run before it settles the old one: a run settled in between is
    /// missing from this snapshot (and in the next one), not counted twice.
    pub fn snapshot(&self, interface: &str) -> Result<Snapshot, XdpstatError> {
        let taken = Instant::now();
        let wall = SystemTime::now();
        let maps = self.table_maps()?;
        // One hold of the tables for the whole read: what is busy is
        // marked against the same read the idle marks came from.
        let mut tables = self.lock_tables();
        let SourcesRead {
            mut sources,
            ruled,
            retired_v4,
            retired_v6,
        } = tables.read(&maps, interface)?;
        let states: PerCpuArray<&MapData, CpuState> = self.map(CPU_STATE_MAP)?;
        let states = states.get(&0, 0).map_err(|e| XdpstatError::MapRead {
            interface: interface.to_owned(),
            map: CPU_STATE_MAP,
            source: e.into(),
        })?;
        let folded = fold_cpu_states(&states, retired_v4, retired_v6, &mut sources);
        tables.mark_busy(&folded.busy.v4, &folded.busy.v6);
        let sources = sources.finish();
        let mut prefixes = Prefixes::default();
        prefixes.add_held(&self.lens, &sources);
        tables.add_retired_prefixes(&mut prefixes);
        drop(tables);
        // Runs in progress that no entry took go into the sketch when they
        // settle: counted with its part now (their prefix's estimate grows
        // by exactly the run when it settles), so that no count moves from
        // the exact part to the estimate between reads, which would count
        // it twice once each part is kept from going backwards.
        for counter in &folded.sketched {
            prefixes.sketched.add(counter);
        }
        for (address, counter) in &folded.unheld {
            prefixes.sketched.add(counter);
            prefixes.add_estimate(self.lens.of(*address), counter, 0);
        }
        self.add_estimates(&mut prefixes, &folded.sketched, interface)?;
        // The CPUs' verdict totals were read after the rows (`ruled`, with
        // the tables), so no row holds more than the totals say.
        let rules = self
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hits()
            .map_err(|source| XdpstatError::MapRead {
                interface: interface.to_owned(),
                map: "rules",
                source,
            })?;
        let verdicts = VerdictRead {
            acted: folded.acted,
            shared_bucket: folded.shared_bucket,
            ruled: ruled.into_iter().collect(),
            rules,
        };
        Ok(Snapshot {
            taken,
            wall,
            sources,
            slots: folded.slots,
            prefixes,
            verdicts,
        })
    }

    /// Adds the sketches' estimates, for every prefix the read already has
    /// and for the prefixes the CPUs' heavy-hitter tables name: a
    /// prefix's estimate is, row by row, its cell summed over the CPUs, and
    /// the smallest of the rows. Never below what the sketch holds for it,
    /// so no listed prefix is ever counted short. The sketches are only
    /// read when something went into them (a table overflowed).
    fn add_estimates(
        &self,
        prefixes: &mut Prefixes,
        sketched: &[Counter; 2],
        interface: &str,
    ) -> Result<(), XdpstatError> {
        let failed = |map: &'static str, e: aya::maps::MapError| XdpstatError::MapRead {
            interface: interface.to_owned(),
            map,
            source: e.into(),
        };
        for (v6, (sketch_map, heavy_map)) in [
            (false, (SKETCH_V4_MAP, HEAVY_V4_MAP)),
            (true, (SKETCH_V6_MAP, HEAVY_V6_MAP)),
        ] {
            let counted = sketched[usize::from(v6)];
            if counted.packets == 0 {
                continue;
            }
            let heavy: PerCpuArray<&MapData, Heavy> = self.map(heavy_map)?;
            let sketch: PerCpuArray<&MapData, Counter> = self.map(sketch_map)?;
            let mut keys: Vec<PrefixKey> = prefixes
                .rows
                .keys()
                .filter(|prefix| prefix.addr().is_ipv6() == v6)
                .map(PrefixLens::key_of)
                .collect();
            for table in heavy.get(&0, 0).map_err(|e| failed(heavy_map, e))?.iter() {
                for slot in &table.slots {
                    if slot.estimate.packets != 0 {
                        keys.push(slot.key);
                    }
                }
            }
            keys.sort_unstable();
            keys.dedup();
            // The whole sketch, summed over the CPUs: one read per cell.
            let mut cells = vec![Counter::default(); SKETCH_ROWS * SKETCH_WIDTH as usize];
            for (index, cell) in cells.iter_mut().enumerate() {
                for per_cpu in sketch
                    .get(&(index as u32), 0)
                    .map_err(|e| failed(sketch_map, e))?
                    .iter()
                {
                    cell.add(per_cpu);
                }
            }
            let error = error_bound(counted.packets);
            for key in keys {
                let mut estimate = cells[sketch_cell(&key, 0, self.seed) as usize];
                for row in 1..SKETCH_ROWS {
                    estimate = estimate.at_most(&cells[sketch_cell(&key, row, self.seed) as usize]);
                }
                if estimate.packets > 0 {
                    prefixes.add_estimate(self.lens.of_key(&key, v6), &estimate, error);
                }
            }
        }
        Ok(())
    }

    /// After a snapshot: if a table is nearly full, retires its idle
    /// entries so new senders find room (see `tables.rs`). Returns the
    /// sources it retired with their final counts, which from now on are in
    /// `unattributed`.
    pub fn retire_idle(&self) -> Result<SourceTable, XdpstatError> {
        self.lock_tables().retire_idle()
    }

    /// Chooses how the tables are read (memory-mapped by default; the
    /// benchmarks compare per-key reads).
    pub fn set_read_method(&self, method: ReadMethod) {
        self.lock_tables().set_method(method);
    }

    /// How snapshots read the tables.
    pub fn read_method(&self) -> ReadMethod {
        self.lock_tables().method()
    }

    fn lock_tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn table_maps(&self) -> Result<TableMaps<'_>, XdpstatError> {
        let map = |name: &'static str| {
            self.ebpf.map(name).ok_or_else(|| XdpstatError::Map {
                map: name,
                source: "not in the object file".into(),
            })
        };
        Ok(TableMaps {
            v4: map(SOURCES_V4_MAP)?,
            v6: map(SOURCES_V6_MAP)?,
        })
    }

    fn map<'a, M>(&'a self, name: &'static str) -> Result<M, XdpstatError>
    where
        M: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self.ebpf.map(name).ok_or_else(|| XdpstatError::Map {
            map: name,
            source: "not in the object file".into(),
        })?;
        M::try_from(map).map_err(|e| XdpstatError::Map {
            map: name,
            source: e.into(),
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

/// Length of the page-flag array of a table of `entries` entries of
/// `entry_size` bytes: one flag per 4 KiB page.
pub fn page_flags_len(entries: u32, entry_size: usize) -> u32 {
    u32::try_from((entries as usize * entry_size).div_ceil(TABLE_PAGE)).unwrap_or(u32::MAX)
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

/// The table entries the CPUs' runs will settle into.
#[derive(Debug, Default)]
struct BusyEntries {
    v4: Vec<u32>,
    v6: Vec<u32>,
}

/// What the CPU states add to a read.
struct Folded {
    slots: ClassSlots,
    busy: BusyEntries,
    /// Runs in progress that no entry took, by source.
    unheld: Vec<(IpAddr, Counter)>,
    /// What went into the IPv4 and IPv6 sketches: the runs no entry took
    /// that have settled.
    sketched: [Counter; 2],
    /// Every packet under each verdict but `passed`, and what limit rules
    /// judged by their shared bucket.
    acted: Acted,
    shared_bucket: Counter,
}

/// Adds the CPUs' current runs to their sources and sums the class
/// counters. Unattributed is what the CPUs could not settle into an entry,
/// the runs in progress that found none, and `retired_*`, what retired
/// entries had counted.
fn fold_cpu_states(
    states: &PerCpuValues<CpuState>,
    retired_v4: Counter,
    retired_v6: Counter,
    sources: &mut SourceTableBuilder,
) -> Folded {
    let mut slots = ClassSlots {
        unattributed_v4: retired_v4,
        unattributed_v6: retired_v6,
        ..ClassSlots::default()
    };
    let mut busy = BusyEntries::default();
    let mut unheld = Vec::new();
    let mut sketched = [Counter::default(); 2];
    let mut acted = Acted::default();
    let mut shared_bucket = Counter::default();
    for state in states.iter() {
        for (total, part) in acted.iter_mut().zip(&state.acted) {
            total.add(part);
        }
        shared_bucket.add(&state.shared_bucket);
        slots.non_ip.add(&state.non_ip);
        slots.malformed.add(&state.malformed);
        slots.unattributed_v4.add(&state.unattributed_v4);
        slots.unattributed_v6.add(&state.unattributed_v6);
        sketched[0].add(&state.unattributed_v4);
        sketched[1].add(&state.unattributed_v6);
        if state.run_v4.packets != 0 {
            if state.run_v4_entry == NO_ENTRY {
                slots.unattributed_v4.add(&state.run_v4);
                unheld.push((Ipv4Addr::from(state.run_v4_source).into(), state.run_v4));
            } else {
                sources.push_v4(state.run_v4_source, state.run_v4);
                busy.v4.push(state.run_v4_entry);
            }
        }
        if state.run_v6.packets != 0 {
            if state.run_v6_entry == NO_ENTRY {
                slots.unattributed_v6.add(&state.run_v6);
                unheld.push((Ipv6Addr::from(state.run_v6_source).into(), state.run_v6));
            } else {
                sources.push_v6(state.run_v6_source, state.run_v6);
                busy.v6.push(state.run_v6_entry);
            }
        }
    }
    Folded {
        slots,
        busy,
        unheld,
        sketched,
        acted,
        shared_bucket,
    }
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
        let named: BTreeSet<&str> = PINNED_MAPS.iter().copied().collect();
        assert_eq!(in_object, named);
    }
}
