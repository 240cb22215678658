//! Frames run through the program with BPF_PROG_TEST_RUN: the tests'
//! and the benchmark's runs, and replay's, which hands each frame its
//! length on the wire and its capture time.

use super::*;

impl Datapath {
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
    /// bytes long (see [`Runs::replay`]).
    pub fn replay_run(
        &self,
        frame: &[u8],
        wire_len: u64,
        time_ns: u64,
    ) -> Result<u32, ProgramError> {
        self.runs()?.replay(frame, wire_len, time_ns)
    }

    /// The builds a replay runs frames through, looked up once for many
    /// runs.
    pub fn runs(&self) -> Result<Runs<'_>, ProgramError> {
        let program = |name| -> Result<&Xdp, ProgramError> {
            self.ebpf
                .program(name)
                .ok_or(ProgramError::NotLoaded)?
                .try_into()
        };
        Ok(Runs {
            plain: program(PROGRAM_NAME)?,
            replay: program(REPLAY_PROGRAM_NAME)?,
        })
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
}

/// The plain and the replay build of a loaded datapath, for runs of many
/// frames.
pub struct Runs<'a> {
    plain: &'a Xdp,
    replay: &'a Xdp,
}

impl Runs<'_> {
    /// Runs a linear frame through the plain build, as live traffic runs.
    pub fn plain(&self, frame: &[u8]) -> Result<u32, ProgramError> {
        let options = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        };
        self.plain
            .test_run(options)
            .map(|result| result.return_value)
    }

    /// Runs a captured frame through the replay build at `time_ns` (its
    /// capture time: the clock of rate limits), counted as `wire_len`
    /// bytes long: the frame's length on the wire, which may be more than
    /// the bytes run (a snap length, or a frame longer than
    /// [`REPLAY_RUN_MAX`], of which the first part is run).
    pub fn replay(&self, frame: &[u8], wire_len: u64, time_ns: u64) -> Result<u32, ProgramError> {
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
        self.replay
            .test_run(options)
            .map(|result| result.return_value)
    }
}
