//! Counts as user space holds them: one read of an interface's counters
//! ([`snapshot`]), its sources ([`sources`]) and network prefixes
//! ([`prefixes`]), what the rules did ([`verdicts`]), and the report two
//! reads make ([`report`]).

pub(crate) mod buffers;
pub mod kinds;
pub(crate) mod prefixes;
pub(crate) mod rates;
pub(crate) mod report;
pub mod snapshot;
pub mod sources;
pub mod verdicts;
