//! Sluice's dataplane: the packet pipeline as a pure function over frame
//! buffers and shared tables, so that every I/O backend runs the same code
//! and every behaviour can be tested on bytes.
//!
//! Layers, as the folders say: `wire` (header views), `decode` (frame to
//! flow key), `conntrack`, `service` (frontends, backends, Maglev), `nat`
//! (in-place rewrites), `neighbor` and `route` (the gateway's answers, the
//! next hop), `icmp_error`, `tcp_reset` and `reject` (the errors Sluice answers
//! with, and how often), `pipeline` (the burst function: every stage in order),
//! `worker` (one core's loop over its ports), `io` (the backends).

// Unsafe is denied everywhere but `prefetch` (one intrinsic) and `hugemem`
// (mmap for the big tables), each block with its invariant beside it; the
// AF_XDP and TAP modules (`io::afxdp`, `io::tap`) are the others.
#![deny(unsafe_code)]

pub mod action;
pub mod conntrack;
pub mod counters;
pub mod decode;
pub mod drop;
pub mod flow;
pub mod frag;
pub mod hash;
pub mod hugemem;
pub mod icmp_error;
pub mod icmp_related;
pub mod io;
pub mod nat;
pub mod neighbor;
pub mod pipeline;
pub mod prefetch;
pub mod reject;
pub mod route;
pub mod service;
pub mod tcp_reset;
pub mod wire;
pub mod worker;

pub use drop::DropReason;
pub use flow::{Addr, Family, FlowKey, Proto};
pub use pipeline::{Action, Answer, Ingress};
