//! The prefix sketch: what the datapath keeps about packets no table entry
//! took (a spoofed flood's), per network prefix, in memory no flood can
//! outgrow. Shared so that the XDP program and the property test in user
//! space run the very same update.
//!
//! A Count-Min sketch with conservative update, per CPU and per family:
//! [`SKETCH_ROWS`] rows of [`SKETCH_WIDTH`] cells, each a packets and bytes
//! [`Counter`]. A prefix's estimate is, row by row, the cell it hashes to,
//! summed over the CPUs, and the smallest of the rows: never below the
//! truth, and above it by at most ε·N with probability at least 1 − δ, for
//! N the packets counted into the sketch, ε = e / [`SKETCH_WIDTH`] and
//! δ = e^−[`SKETCH_ROWS`]. Which prefixes to ask about comes from a small
//! per-CPU heavy-hitter table ([`Heavy`]) the sketch feeds, with two
//! choices: a prefix may sit in one of two slots its hash picks; offered
//! with its new estimate, it updates its slot, or takes the smaller of the
//! two if its estimate is larger. Constant work per update and no loop for
//! the verifier to walk (a scan of every slot made the program too complex
//! to load); a heavy prefix is missed only when both its slots hold
//! heavier ones.

use crate::{Counter, mix};

/// Rows of the sketch (δ = e^−5 ≈ 0.0067).
pub const SKETCH_ROWS: usize = 5;
/// Cells per row (ε = e / 2048 ≈ 0.00133).
pub const SKETCH_WIDTH: u32 = 2048;
/// Cells of one CPU's sketch: each family's sketch map is a
/// memory-mappable array of a section this long per CPU, which only that
/// CPU adds to and user space sums through a mapping.
pub const SKETCH_SECTION: u32 = SKETCH_ROWS as u32 * SKETCH_WIDTH;
/// Slots of a CPU's heavy-hitter table per family.
pub const HEAVY_SLOTS: usize = 64;

/// ε in parts per million: an estimate exceeds the truth by at most
/// `N * SKETCH_EPSILON_PPM / 1_000_000` (rounded up), with probability 1 − δ.
pub const SKETCH_EPSILON_PPM: u64 = 1328; // e / 2048 = 0.0013273...

/// Per-CPU arrays of `SKETCH_ROWS * SKETCH_WIDTH` counters.
pub const SKETCH_V4_MAP: &str = "SKETCH_V4";
pub const SKETCH_V6_MAP: &str = "SKETCH_V6";
/// Per-CPU arrays with one [`Heavy`].
pub const HEAVY_V4_MAP: &str = "HEAVY_V4";
pub const HEAVY_V6_MAP: &str = "HEAVY_V6";

/// Globals the loader sets: the prefix masks, as on the wire (an IPv4 one
/// in the first 4 bytes of the first word).
pub const PREFIX_V4_MASK_GLOBAL: &str = "PREFIX_V4_MASK";
pub const PREFIX_V6_MASK_GLOBAL: &str = "PREFIX_V6_MASK";

/// Prefix lengths unless `--prefix-len` says otherwise.
pub const DEFAULT_PREFIX_V4: u8 = 24;
pub const DEFAULT_PREFIX_V6: u8 = 48;

/// A prefix as the sketch keys it: the masked address's bytes as two
/// native words (an IPv4 prefix in the first 4 bytes, the rest zero).
pub type PrefixKey = [u64; 2];

/// One heavy-hitter slot: a prefix and its estimate when it was last
/// offered. Empty when `estimate.packets` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeavySlot {
    pub key: PrefixKey,
    pub estimate: Counter,
}

/// A CPU's heavy-hitter table for one family.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heavy {
    pub slots: [HeavySlot; HEAVY_SLOTS],
}

impl Default for Heavy {
    fn default() -> Self {
        Self {
            slots: [HeavySlot::default(); HEAVY_SLOTS],
        }
    }
}

/// The cell of row `row` that `key` hashes to, as an index into the
/// sketch array (`row * SKETCH_WIDTH + column`).
#[inline(always)]
pub fn sketch_cell(key: &PrefixKey, row: usize, seed: u64) -> u32 {
    let row_seed = seed ^ (row as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let hash = mix(key[0] ^ mix(key[1], row_seed), row_seed);
    row as u32 * SKETCH_WIDTH + ((hash >> 32) as u32 % SKETCH_WIDTH)
}

/// Adds `add` to the prefix whose row cells are `cells`, conservatively:
/// each cell rises only as far as the smallest one plus `add`, which keeps
/// every cell at or above the prefix's true count while adding the least.
/// Returns the prefix's new estimate from these cells.
#[inline(always)]
pub fn conservative_add(cells: [&mut Counter; SKETCH_ROWS], add: &Counter) -> Counter {
    let mut low = *cells[0];
    for cell in cells.iter().skip(1) {
        low = low.at_most(cell);
    }
    let mut target = low;
    target.add(add);
    for cell in cells {
        *cell = cell.at_least(&target);
    }
    target
}

/// The two slots `key` may sit in.
#[inline(always)]
pub fn heavy_slots(key: &PrefixKey, seed: u64) -> (usize, usize) {
    let hash = mix(key[0] ^ mix(key[1], !seed), !seed);
    let first = (hash as usize) % HEAVY_SLOTS;
    let second = ((hash >> 32) as usize) % HEAVY_SLOTS;
    (
        first,
        if second == first {
            (first + 1) % HEAVY_SLOTS
        } else {
            second
        },
    )
}

/// Offers a prefix with its new estimate to a heavy-hitter table: held in
/// one of its two slots, it gets the estimate there; otherwise it takes the
/// one of them with the smaller estimate if its own is larger (an empty
/// slot has 0).
#[inline(always)]
pub fn offer(heavy: &mut Heavy, key: &PrefixKey, estimate: &Counter, seed: u64) {
    let (first, second) = heavy_slots(key, seed);
    let holds = |slot: &HeavySlot| slot.estimate.packets != 0 && slot.key == *key;
    let at = if holds(&heavy.slots[first]) {
        first
    } else if holds(&heavy.slots[second]) {
        second
    } else if heavy.slots[first].estimate.packets <= heavy.slots[second].estimate.packets {
        first
    } else {
        second
    };
    let slot = &mut heavy.slots[at];
    if holds(slot) || estimate.packets > slot.estimate.packets {
        *slot = HeavySlot {
            key: *key,
            estimate: *estimate,
        };
    }
}

/// The bound on an estimate's excess over the truth (probability 1 − δ)
/// when `counted` packets went into the sketch.
pub fn error_bound(counted: u64) -> u64 {
    (counted as u128 * SKETCH_EPSILON_PPM as u128).div_ceil(1_000_000) as u64
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, two u64 and a `Counter`: no padding, any bit pattern valid.
unsafe impl aya::Pod for HeavySlot {}

#[cfg(feature = "user")]
// SAFETY: an array of `HeavySlot`s.
unsafe impl aya::Pod for Heavy {}
