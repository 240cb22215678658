//! The full-screen live view (`--format tui`, the default on a terminal):
//! its state and key handling ([`view`]) and its drawing ([`render`]),
//! both pure, so tests drive them with fakes and a test backend. The loop
//! that owns the terminal is a command's, in `run::terminal`.

pub(crate) mod kinds;
pub(crate) mod recent;
pub mod render;
pub mod view;
