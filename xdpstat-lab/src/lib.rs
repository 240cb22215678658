//! A private lab network for xdpstat's demo, tests and benchmarks: network
//! namespaces joined by veth pairs (the only places xdpstat ever sends
//! traffic), raw frames sent from one end, and the frames themselves built
//! byte by byte. Nothing here is part of counting; the product uses it only
//! for `xdpstat demo`.

pub mod frames;
pub mod netns;
pub mod packet_socket;
