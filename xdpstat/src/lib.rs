//! xdpstat counts packets and bytes per source IP address at the XDP hook
//! and reports them. The binary is a thin shell over this library so that
//! the tests and the benchmark can drive the same code; what only xdpstat
//! itself uses is `pub(crate)`. Where things are (docs/DESIGN.md draws
//! their layers):
//!
//! - [`kernel`]: the XDP program loaded, attached and read; the source
//!   tables from user space; privileges and kernel checks.
//! - [`counts`]: what a read holds (snapshots, sources) and the report
//!   computed from two of them.
//! - [`output`]: where counts go: text and JSON, the live view, Prometheus.
//! - [`run`]: the commands: the report loop, `xdpstat IFACE...`, the demo,
//!   `status`, `detach`, `rules check`.
//! - [`outcome`]: how a command that did not fail ended (whole or in part).
//! - [`replay`]: captures read and run through the same program.
//! - [`doctor`]: why attaching would fail, found before trying.
//! - [`rules`]: drop and rate-limit rules, read from a file and checked.

pub mod cli;
pub mod counts;
pub mod doctor;
pub mod error;
pub mod kernel;
pub mod outcome;
pub mod output;
pub mod replay;
pub mod rules;
pub mod run;
