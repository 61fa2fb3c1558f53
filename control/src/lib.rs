//! Sluice's control side: the node daemon's runtime (workers, published
//! tables, clean stop). The `sluice` binary (`cli/`) is a thin CLI over
//! this library and the veth lab (`lab/`, which this crate does not use),
//! and the integration tests drive the same code.
//!
//! Modules in layers, each using only those before it: `placement` (which
//! worker on which core owns which queue), `config` (what the daemon is
//! started with), `state` (what its threads share, and the
//! lock order), `publish` (tables for the workers), `host_xdp` (XDP on the
//! host's interfaces), `ports` (pods attached while it runs), `workers`
//! (the worker threads), `daemon` (start and stop), `admin` and `status`
//! (the admin socket), `sync` and `source` (the tables' sources), `run`
//! (`sluice run`).

pub mod admin;
pub mod anchor;
pub mod config;
pub mod daemon;
pub mod host_xdp;
pub mod placement;
pub mod ports;
pub mod publish;
pub mod run;
pub mod source;
pub mod state;
pub mod status;
pub mod sync;
pub mod testing;
pub mod translate;
pub mod workers;
