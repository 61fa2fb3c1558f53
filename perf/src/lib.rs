//! sluice-perf's library: frames crafted for generators and benchmarks,
//! the Service fixtures that tests, benchmarks and the demo share, and the
//! throughput run (AF_XDP generator, sink and bare forwarder on a lab).

pub mod bench_world;
pub mod craft;
pub mod fixtures;
pub mod kernel_rules;
pub mod pipeline_demo;
pub mod publish;
#[cfg(feature = "afxdp")]
pub mod throughput;
#[cfg(feature = "afxdp")]
pub mod xdp;
