//! The daemon's configuration: its ports, its exception path, its
//! workers and tables, and why a start was refused.

use sluice_dataplane::service::ServiceSpec;
use sluice_dataplane::worker::Idle;
use sluice_dataplane::Addr;

pub use sluice_admin::Io;

/// One pod port of the node.
#[derive(Clone, Debug)]
pub struct PortConfig {
    /// The interface the daemon opens: the veth's host end (AF_XDP, in the
    /// node's namespace) or the pod's TAP (in `netns`).
    pub ifname: String,
    /// Where `ifname` lives, for TAP ports: the pod's namespace.
    pub netns: Option<String>,
    /// The pod's addresses, routed to this port.
    pub addrs: Vec<Addr>,
    /// The pod's MAC: frames routed to it are addressed to it.
    pub mac: [u8; 6],
}

/// The exception path: the host's TAP in the node's namespace.
#[derive(Clone, Debug)]
pub struct HostConfig {
    pub ifname: String,
    pub mac: [u8; 6],
    /// The node's own addresses, routed to the host.
    pub addrs: Vec<Addr>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub io: Io,
    /// The namespace the daemon's workers run in (the node's); `None` for
    /// the caller's.
    pub node_netns: Option<String>,
    pub ports: Vec<PortConfig>,
    pub host: Option<HostConfig>,
    /// One worker per core, pinned to it; empty for one unpinned worker.
    pub cores: Vec<usize>,
    pub conntrack_capacity: usize,
    pub idle: Idle,
    pub services: Vec<ServiceSpec>,
    /// The most pods attached at once (kubelet's maxPods): each worker's
    /// frame pool is sized for this many ports, and one more is refused.
    pub max_pods: usize,
}

/// Pods a node runs unless told otherwise: kubelet's maxPods is 110 by
/// default and often raised to 250, the most a /24 pod CIDR holds.
pub const DEFAULT_MAX_PODS: u16 = 250;

/// The most `--max-pods` takes: 4,096 pods make a 520 MiB pool a worker.
pub const MOST_PODS: u16 = 4096;

/// Why the daemon did not start.
#[derive(Debug)]
pub enum StartError {
    /// The workers' cores (`--cores`).
    Placement(crate::placement::PlacementError),
    Pin {
        core: usize,
    },
    Tables(String),
    /// A worker could not open its ports.
    Worker {
        worker: usize,
        reason: String,
    },
    /// No answer from the workers: they exited (a panic) or hung.
    Workers(String),
    Namespace {
        netns: String,
        reason: String,
    },
    /// The interface the workers' UMEMs are anchored on.
    Anchor(String),
    /// More ports on the command line than `max_pods`.
    TooManyPorts {
        ports: usize,
        max_pods: usize,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Placement(e) => e.fmt(f),
            StartError::Pin { core } => write!(f, "cannot pin a worker to core {core}"),
            StartError::Tables(e) => write!(f, "tables: {e}"),
            StartError::Worker { worker, reason } => write!(f, "worker {worker}: {reason}"),
            StartError::Workers(reason) => write!(f, "workers: {reason}"),
            StartError::Namespace { netns, reason } => {
                write!(f, "network namespace {netns}: {reason}")
            }
            StartError::Anchor(reason) => f.write_str(reason),
            StartError::TooManyPorts { ports, max_pods } => write!(
                f,
                "{ports} pod ports given, more than --max-pods {max_pods}"
            ),
        }
    }
}

impl std::error::Error for StartError {}
