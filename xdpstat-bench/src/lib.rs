//! Benchmarks of xdpstat against the design it started from. The reference
//! programs live here, not in the shipped binary; `benches/xdpstat.rs` runs
//! every measurement and prints the table BENCHMARKS.md explains.

pub mod growth;
pub mod measure;
pub mod program;
pub mod reference;
pub mod replay;
pub mod rules;
pub mod traffic;
