//! Where a replayed capture's bytes come from: a regular file, a named
//! pipe, or standard input (`-`), read as a stream, so that a pipe can be
//! replayed (`tcpdump -w - | xdpstat replay -`), a file that shrinks while
//! it is read ends early instead of faulting (nothing is memory-mapped), and
//! every wait is interruptible: opening never blocks, and a read waits for
//! data in short polls that look at the stop flag between them.

use std::{
    fs::File,
    io::{self, Read},
    os::{
        fd::{AsFd, AsRawFd},
        unix::fs::OpenOptionsExt as _,
    },
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

/// How long one wait for data lasts before the stop flag is looked at.
const POLL: Duration = Duration::from_millis(100);

/// The name that means standard input.
pub const STDIN: &str = "-";

/// A capture's bytes, read until the end or until `stop` is set.
pub struct Input<'a> {
    file: File,
    /// Regular files are read directly; anything else is polled first.
    regular: bool,
    /// The size of a regular file when opened, for progress.
    size: Option<u64>,
    stop: &'a AtomicBool,
}

/// Why an input cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open: {0}")]
    Open(#[source] io::Error),
    #[error("is a directory, not a capture")]
    Directory,
    #[error("cannot read it: {0}")]
    Stat(#[source] io::Error),
}

impl<'a> Input<'a> {
    /// Opens `path` (or standard input for `-`) without blocking, whatever
    /// it is: opening a named pipe with no writer yet would otherwise wait
    /// for one, deaf to Ctrl-C.
    pub fn open(path: &Path, stop: &'a AtomicBool) -> Result<Self, OpenError> {
        let file = if path.as_os_str() == STDIN {
            File::from(
                io::stdin()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(OpenError::Open)?,
            )
        } else {
            File::options()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .map_err(OpenError::Open)?
        };
        let metadata = file.metadata().map_err(OpenError::Stat)?;
        if metadata.is_dir() {
            return Err(OpenError::Directory);
        }
        // Anything but a regular file (a pipe, a terminal, a socket) is
        // polled before each read. The descriptor's flags are left alone:
        // standard input's are shared with whoever else holds it.
        let regular = metadata.file_type().is_file();
        Ok(Self {
            file,
            regular,
            size: regular.then_some(metadata.len()),
            stop,
        })
    }

    /// The size of a regular file, when it was opened.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    fn interrupted(&self) -> io::Error {
        io::Error::new(io::ErrorKind::Interrupted, "stopped")
    }
}

impl Read for Input<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(self.interrupted());
            }
            if !self.regular {
                let mut poll = libc::pollfd {
                    fd: self.file.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                let ready = unsafe { libc::poll(&mut poll, 1, POLL.as_millis() as i32) };
                if ready < 0 {
                    let error = io::Error::last_os_error();
                    if error.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(error);
                }
                if ready == 0 {
                    // Nothing yet (a pipe whose writer has not written, or
                    // not even opened it): wait on, unless told to stop.
                    continue;
                }
                if poll.revents & libc::POLLIN == 0 && poll.revents & libc::POLLHUP != 0 {
                    // The writer closed its end and nothing is left.
                    return Ok(0);
                }
            }
            match self.file.read(buffer) {
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) => {}
                done => return done,
            }
        }
    }
}
