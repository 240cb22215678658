//! How a command that ran ended: whole, or in part, which is no error
//! (every readable capture was reported, every interface's final counts
//! were shown, every check was printed) but is told by the exit status,
//! 1, and one line on stderr.

/// A command's end, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything it set out to do was done: exit 0.
    Whole,
    /// Done in part: exit 1, with this said on stderr.
    Partial(Partial),
}

/// What was left undone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Partial {
    /// Every interface xdpstat watched was removed while it ran; each one's
    /// final counts were reported.
    #[error("every watched interface is gone; their final counts are above")]
    AllInterfacesGone,
    /// Some of the captures given to `xdpstat replay` could not be read
    /// whole; each was named on stderr.
    #[error("{failed} of {files} captures could not be replayed whole (see above)")]
    SomeCapturesFailed { failed: usize, files: usize },
    /// `xdpstat doctor` found checks that fail (they are printed above).
    #[error("{failed} check(s) failed (see above)")]
    ChecksFailed { failed: usize },
}
