//! What drives xdpstat: the report loop every interface goes through
//! ([`live`]), `xdpstat IFACE...` ([`watch`]) and `xdpstat demo` ([`demo`]).

pub mod bans;
pub mod capture;
pub(crate) mod control;
pub mod demo;
pub mod detach;
pub mod generate;
pub mod live;
pub mod reload;
pub mod rules_check;
pub mod status;
pub(crate) mod terminal;
pub mod watch;
