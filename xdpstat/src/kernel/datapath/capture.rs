//! `--capture` on the kernel side: what the program is loaded to copy,
//! and the ring its copies come out of, read record by record.

use std::os::fd::{AsFd, BorrowedFd};

use aya::maps::{MapData, RingBuf};
use xdpstat_common::capture::{CAPTURE_MAP, Header};
pub use xdpstat_common::capture::{
    INTERVAL_GLOBAL, MAX_SNAPLEN, NO_RULE, SNAPLEN_GLOBAL, TOLERANCE_GLOBAL, VERDICTS_GLOBAL,
    verdict,
};

use super::Datapath;
use crate::error::{Cause, one_line};

/// The verdicts copied unless `--capture-verdicts` says otherwise.
pub const DEFAULT_VERDICTS: &str = "dropped,limited,would_drop,would_limit";

/// `--capture-verdicts`: names, comma-separated, into the program's mask.
pub fn verdict_mask(names: &str) -> Result<u32, String> {
    let mut mask = 0;
    for name in names.split(',').map(str::trim) {
        let Some(at) = verdict::NAMES.iter().position(|n| *n == name) else {
            return Err(format!(
                "--capture-verdicts: \"{name}\" is not a verdict (passed, dropped, limited, would_drop, would_limit)"
            ));
        };
        mask |= 1 << at;
    }
    Ok(mask)
}

/// What the program copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Bit `1 << n` for each verdict `n` of [`verdict`] copied; 0: none.
    pub verdicts: u32,
    /// Bytes of each packet copied, at most [`MAX_SNAPLEN`].
    pub snaplen: u32,
    /// Copies a second per CPU at most; `None`: no budget (a replay).
    pub rate: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            verdicts: 0,
            snaplen: 256,
            rate: None,
        }
    }
}

impl Settings {
    /// The budget's bucket: nanoseconds a copy costs, and a second's worth
    /// of room; (0, 0) without a budget.
    pub fn budget(&self) -> (u64, u64) {
        match self.rate {
            Some(rate) if rate > 0 => {
                let interval = 1_000_000_000u64.div_ceil(rate);
                (interval, interval.saturating_mul(rate))
            }
            _ => (0, 0),
        }
    }
}

/// One copy out of the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub header: Header,
    pub bytes: Vec<u8>,
}

/// The ring of one datapath's copies.
pub struct Ring(RingBuf<MapData>);

impl Ring {
    /// Every record waiting, in order, handed to `each`.
    pub fn drain(&mut self, each: &mut dyn FnMut(Record)) {
        while let Some(item) = self.0.next() {
            let head = size_of::<Header>();
            if item.len() < head {
                continue;
            }
            // SAFETY: `Header` is plain old data and the item holds one.
            let header: Header = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let end = (head + header.cap_len as usize).min(item.len());
            let bytes = item[head..end].to_vec();
            drop(item);
            each(Record { header, bytes });
        }
    }

    /// Its descriptor, readable when records wait.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Datapath {
    /// The ring `--capture` copies come out of (once).
    pub fn capture_ring(&mut self) -> Result<Ring, Cause> {
        let map = self
            .ebpf
            .take_map(CAPTURE_MAP)
            .ok_or_else(|| -> Cause { "the capture ring: taken already".into() })?;
        RingBuf::try_from(map)
            .map(Ring)
            .map_err(|e| format!("the capture ring: {}", one_line(&e)).into())
    }
}
