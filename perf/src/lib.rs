//! sluice-perf's library: frames crafted for generators and benchmarks,
//! and the Service fixtures that tests, benchmarks and the demo share.

pub mod bench_world;
pub mod craft;
pub mod fixtures;
