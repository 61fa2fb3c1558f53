//! sluice-perf's library: frames crafted for generators and benchmarks,
//! the Service fixtures that tests, benchmarks and the demo share, the
//! AF_XDP generator, the probe-reading sink, kube-proxy's rules, and the
//! side-by-side comparison on a lab.

pub mod bench_world;
#[cfg(feature = "afxdp")]
pub mod chart;
#[cfg(feature = "afxdp")]
pub mod compare;
pub mod craft;
pub mod kernel_path;
pub mod kernel_rules;
pub mod pipeline_demo;
#[cfg(feature = "afxdp")]
pub mod pods;
pub mod probe;
pub mod publish;
pub mod sink;
#[cfg(feature = "afxdp")]
pub mod standalone;
pub mod traffic;
#[cfg(feature = "afxdp")]
pub mod xdp;
