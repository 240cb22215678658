//! The prefix sketch: a run no table entry took (a flood's) is counted
//! under its prefix in this CPU's Count-Min sketch and offered to its
//! heavy-hitter table (see `xdpstat_common::sketch`), so even traffic the
//! tables cannot hold is totalled per network. Once per such run, never
//! for a packet that continues a run.

use aya_ebpf::maps::PerCpuArray;
use xdpstat_common::{
    Counter,
    sketch::{Heavy, PrefixKey, SKETCH_ROWS, conservative_add, offer, sketch_cell},
};

use crate::maps::{HASH_SEED, loaded};

/// Counts `run` under prefix `key` in `sketch` and offers the prefix to
/// `heavy`, both this CPU's.
#[inline(always)]
pub fn add(
    sketch: &PerCpuArray<Counter>,
    heavy: &PerCpuArray<Heavy>,
    key: &PrefixKey,
    run: &Counter,
) {
    let seed = loaded(&HASH_SEED);
    let mut cells = [core::ptr::null_mut::<Counter>(); SKETCH_ROWS];
    for (row, cell) in cells.iter_mut().enumerate() {
        match sketch.get_ptr_mut(sketch_cell(key, row, seed)) {
            Some(pointer) => *cell = pointer,
            None => return,
        }
    }
    // SAFETY: this CPU's cells of a live per-CPU array (XDP does not nest
    // on a CPU); distinct rows are distinct cells.
    let estimate = conservative_add(cells.map(|cell| unsafe { &mut *cell }), run);
    if let Some(table) = heavy.get_ptr_mut(0) {
        // SAFETY: as above, this CPU's slot.
        offer(unsafe { &mut *table }, key, &estimate, seed);
    }
}
