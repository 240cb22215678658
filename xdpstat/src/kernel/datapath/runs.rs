//! The builds a replay runs frames through, each loaded when a frame first
//! needs it: the verifier takes a CPU for hundreds of milliseconds a build,
//! and a capture of whole frames never needs the replay build.

use std::sync::{Mutex, OnceLock, PoisonError};

use aya::programs::{ProgramError, TestRun as _, TestRunOptions, Xdp};
use xdpstat_common::{PROGRAM_NAME, REPLAY_METADATA, REPLAY_PROGRAM_NAME, replay_metadata};

use super::{Datapath, REPLAY_RUN_MAX};

impl Datapath {
    /// Runs a captured frame through the replay build at `time_ns` (its
    /// capture time: the clock of rate limits), counted as `wire_len`
    /// bytes long (see [`Runs::replay`]).
    pub fn replay_run(
        &self,
        frame: &[u8],
        wire_len: u64,
        time_ns: u64,
    ) -> Result<u32, ProgramError> {
        let mut data = replay_metadata(wire_len.max(frame.len() as u64), time_ns).to_vec();
        data.extend_from_slice(frame);
        self.loaded_runs().replay(&data)
    }

    /// The builds as they were loaded, for many runs (one not loaded
    /// stays so).
    pub fn loaded_runs(&self) -> Runs<'_> {
        let program = |name| -> Build<'_> {
            let program = self.ebpf.program(name).and_then(|p| p.try_into().ok());
            let program = program.filter(|p: &&Xdp| p.fd().is_ok());
            Build::ready(name, program.ok_or_else(|| format!("{name}: not loaded")))
        };
        Runs {
            plain: program(PROGRAM_NAME),
            replay: program(REPLAY_PROGRAM_NAME),
        }
    }

    /// The plain and the replay build, for many runs; a build not loaded
    /// yet is loaded when a frame first needs it (or [`Runs::load_replay`]
    /// is told one will).
    pub fn runs(&mut self) -> Runs<'_> {
        let (mut plain, mut replay) = (None, None);
        for (name, program) in self.ebpf.programs_mut() {
            if let aya::programs::Program::Xdp(program) = program {
                match name {
                    PROGRAM_NAME => plain = Some(program),
                    REPLAY_PROGRAM_NAME => replay = Some(program),
                    _ => {}
                }
            }
        }
        Runs {
            plain: Build::of(plain, PROGRAM_NAME),
            replay: Build::of(replay, REPLAY_PROGRAM_NAME),
        }
    }
}

/// The plain and the replay build of a datapath, for runs of many frames.
pub struct Runs<'a> {
    plain: Build<'a>,
    replay: Build<'a>,
}

impl Runs<'_> {
    /// Runs a linear frame through the plain build, as live traffic runs.
    pub fn plain(&self, frame: &[u8]) -> Result<u32, ProgramError> {
        let options = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        };
        self.plain
            .get()?
            .test_run(options)
            .map(|result| result.return_value)
    }

    /// Runs a captured frame through the replay build: `data` is its
    /// [`REPLAY_METADATA`] bytes (see [`replay_metadata`]: its length on
    /// the wire, which may be more than the bytes run, and its capture
    /// time, the clock of rate limits), then the frame. Of a frame longer
    /// than [`REPLAY_RUN_MAX`], the first part is run.
    pub fn replay(&self, data: &[u8]) -> Result<u32, ProgramError> {
        let data = &data[..data.len().min(REPLAY_METADATA + REPLAY_RUN_MAX)];
        // struct xdp_md: data (the metadata's length), data_end, then
        // data_meta, ingress_ifindex, rx_queue_index, egress_ifindex, all 0.
        let mut context = [0u8; 24];
        context[..4].copy_from_slice(&(REPLAY_METADATA as u32).to_ne_bytes());
        context[4..8].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        let options = TestRunOptions {
            data_in: Some(data),
            ctx_in: Some(&context),
            ..TestRunOptions::default()
        };
        self.replay
            .get()?
            .test_run(options)
            .map(|result| result.return_value)
    }

    /// Loads the plain build now, if it is not: frames will need it.
    pub fn load_plain(&self) -> Result<(), ProgramError> {
        self.plain.get().map(drop)
    }

    /// Loads the replay build now, if it is not: a frame will need it.
    pub fn load_replay(&self) -> Result<(), ProgramError> {
        self.replay.get().map(drop)
    }

    /// Why a build could not be loaded, if one could not.
    pub fn load_error(&self) -> Option<String> {
        [&self.plain, &self.replay]
            .into_iter()
            .find_map(|build| build.loaded.get()?.as_ref().err().cloned())
    }
}

/// One build: loaded, or loaded by the first caller that needs it while
/// the others wait.
struct Build<'a> {
    name: &'static str,
    loaded: OnceLock<Result<&'a Xdp, String>>,
    unloaded: Mutex<Option<&'a mut Xdp>>,
}

impl<'a> Build<'a> {
    /// A build as loaded: to run, or why it cannot be.
    fn ready(name: &'static str, loaded: Result<&'a Xdp, String>) -> Self {
        Self {
            name,
            loaded: OnceLock::from(loaded),
            unloaded: Mutex::new(None),
        }
    }

    /// The build named `name` of the object, loaded or to be loaded when
    /// first needed.
    fn of(program: Option<&'a mut Xdp>, name: &'static str) -> Self {
        match program {
            Some(program) if program.fd().is_ok() => Self::ready(name, Ok(program)),
            Some(program) => Self {
                name,
                loaded: OnceLock::new(),
                unloaded: Mutex::new(Some(program)),
            },
            None => Self::ready(
                name,
                Err(format!("the embedded object has no program named {name}")),
            ),
        }
    }

    /// The build, loaded now if no caller loaded it before (a caller that
    /// comes while another loads it waits for that load).
    fn get(&self) -> Result<&'a Xdp, ProgramError> {
        let loaded = self.loaded.get_or_init(|| {
            let unloaded = self
                .unloaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match unloaded {
                Some(program) => match program.load() {
                    Ok(()) => Ok(&*program),
                    Err(error) => Err(format!("{}: {error}", self.name)),
                },
                None => Err(format!("{}: not loaded", self.name)),
            }
        });
        loaded
            .as_ref()
            .copied()
            .map_err(|_| ProgramError::NotLoaded)
    }
}
