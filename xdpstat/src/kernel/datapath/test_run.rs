//! Frames run through the program with BPF_PROG_TEST_RUN: the tests'
//! and the benchmark's runs (replay's are [`super::runs`]).

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
