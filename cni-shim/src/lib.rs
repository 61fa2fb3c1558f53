//! sluice-cni: the CNI plugin that puts pods on Sluice's dataplane
//! (CNI spec 1.0.0 and 1.1.0). `command::run` is the whole protocol: the
//! environment and stdin in, the result or the error on stdout, the exit
//! status; the binary is a thin wrapper, and tests drive the binary as a
//! runtime does.

pub mod command;
pub mod conf;
pub mod daemon;
pub mod error;
pub mod ipam;
pub mod link;
