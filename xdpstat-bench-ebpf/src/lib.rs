//! Empty library target: it lets `xdpstat-bench` name this crate as a build
//! dependency so cargo rebuilds the reference programs when they change.
#![no_std]
