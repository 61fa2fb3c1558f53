//! Sluice's control side: the node daemon's runtime (workers, published
//! tables, clean stop) and the veth lab. The `sluice` binary is a thin CLI
//! over this library, and the integration tests drive the same code.

pub mod admin;
pub mod anchor;
pub mod daemon;
pub mod lab;
pub mod ports;
pub mod run;
pub mod source;
pub mod status;
pub mod sync;
pub mod testing;
pub mod translate;
