//! Empty library target: it lets `xdpstat` name this crate as a build
//! dependency so cargo rebuilds the embedded object when the program changes.
#![no_std]
