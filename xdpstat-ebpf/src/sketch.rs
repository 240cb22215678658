//! The prefix sketch: a run no table entry took (a flood's) is counted
//! under its prefix in this CPU's Count-Min sketch and offered to its
//! heavy-hitter table (see `xdpstat_common::sketch`), so even traffic the
//! tables cannot hold is totalled per network. Once per such run, never
//! for a packet that continues a run.

use aya_ebpf::{
    helpers::bpf_get_smp_processor_id,
    maps::{Array, PerCpuArray},
};
use xdpstat_common::{
    Counter,
    sketch::{Heavy, PrefixKey, SKETCH_ROWS, SKETCH_SECTION, conservative_add, offer, sketch_cell},
};

use crate::maps::{HASH_SEED, loaded};

/// Counts `run` under prefix `key` in this CPU's section of `sketch` and
/// offers the prefix to this CPU's `heavy`.
#[inline(always)]
pub fn add(sketch: &Array<Counter>, heavy: &PerCpuArray<Heavy>, key: &PrefixKey, run: &Counter) {
    let seed = loaded(&HASH_SEED);
    // SAFETY: a helper with no arguments (the verifier inlines it).
    let section = unsafe { bpf_get_smp_processor_id() } * SKETCH_SECTION;
    let mut cells = [core::ptr::null_mut::<Counter>(); SKETCH_ROWS];
    for (row, cell) in cells.iter_mut().enumerate() {
        match sketch.get_ptr_mut(section + sketch_cell(key, row, seed)) {
            Some(pointer) => *cell = pointer,
            None => return,
        }
    }
    // SAFETY: cells of this CPU's section of a live array, which only this
    // CPU writes (XDP does not nest on a CPU; user space only reads it, a
    // word at a time); distinct rows are distinct cells.
    let estimate = conservative_add(cells.map(|cell| unsafe { &mut *cell }), run);
    if let Some(table) = heavy.get_ptr_mut(0) {
        // SAFETY: as above, this CPU's slot.
        offer(unsafe { &mut *table }, key, &estimate, seed);
    }
}
