//! xdpstat counts packets and bytes per source IP address at the XDP hook
//! and reports them. The binary is a thin shell over this library so that
//! the tests can drive the same code: loading and reading the datapath,
//! building reports, and the namespaces and frames the demo uses.

pub mod attach;
pub mod bpf_sys;
pub mod capture;
pub mod capture_input;
pub mod cli;
pub mod datapath;
pub mod demo;
pub mod error;
pub mod frames;
pub mod live;
pub mod mapped;
pub mod metrics;
pub mod metrics_server;
pub mod netns;
pub mod output;
pub mod packet_socket;
pub mod privilege;
pub mod replay;
pub mod report;
pub mod snapshot;
pub mod sources;
pub mod tables;
pub mod top_view;
pub mod tui;
pub mod tui_render;
pub mod watch;
