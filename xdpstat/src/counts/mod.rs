//! Counts as user space holds them: one read of an interface's counters
//! ([`snapshot`]), its sources ([`sources`]), and the report two reads make
//! ([`report`]).

pub mod report;
pub mod snapshot;
pub mod sources;
