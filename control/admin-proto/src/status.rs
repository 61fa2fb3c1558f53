//! The status reply: what a running daemon says of itself.

use std::collections::BTreeMap;
use std::net::IpAddr;

use sluice_dataplane::io::BackendStats;
use sluice_dataplane::worker::LoopCounters;

/// Which I/O backend carries the pods' frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Io {
    /// AF_XDP sockets on the pods' veth host ends.
    Afxdp,
    /// TAP devices as the pods' interfaces, read and written by the daemon.
    Tap,
}

impl std::fmt::Display for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Io::Afxdp => "afxdp",
            Io::Tap => "tap",
        })
    }
}

/// A pod's port as attached.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attached {
    /// The node port number (routes name it).
    pub port: u16,
    pub ifname: String,
    pub addrs: Vec<IpAddr>,
    pub mac: String,
    /// `CONTAINERID/IFNAME` for a pod the plugin attached; none for one
    /// given on the daemon's command line.
    pub owner: Option<String>,
}

/// What a source (the API server, a directory of manifests) has done, for
/// `status` and for scripts and tests that wait until a change is
/// programmed rather than sleep.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SourceState {
    /// The generation of the tables published last (0: none yet).
    pub generation: u64,
    /// Scans of the source so far.
    pub scans: u64,
    pub services: usize,
    /// The Services programmed, "namespace/name", sorted: what a script
    /// checks to know a Service is Sluice's and in the tables.
    pub programmed: std::sync::Arc<Vec<String>>,
    /// Services deliberately left alone, "namespace/name: why" (another
    /// proxy's by its service-proxy-name label, headless, ExternalName).
    pub skipped: Vec<String>,
    /// Objects rejected now, and all rejections so far.
    pub rejected: Vec<String>,
    pub rejections: u64,
    /// Files refused at their last reading.
    pub file_problems: Vec<String>,
    /// The API server source: every kind listed once (the tables are
    /// whole), whether the watches work now, the last error, lists done.
    pub synced: bool,
    pub connected: bool,
    pub last_error: Option<String>,
    pub lists: u64,
}

/// One source's state.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SourceStatus {
    /// `file:DIR` or `kube`.
    pub source: String,
    #[serde(flatten)]
    pub status: SourceState,
}

/// Flows in the conntrack table, of how many it holds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ConntrackStatus {
    pub entries: usize,
    pub capacity: usize,
    /// Flows never answered that a full table freed for new ones.
    pub evicted: u64,
    /// Flows ended because their backend left its Service.
    pub ended: u64,
}

/// One worker's counters as it last published them (a counter a newer
/// daemon adds, or an older one lacks, reads as its default).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct WorkerStatus {
    pub worker: usize,
    pub core: Option<usize>,
    /// How old these counters are (`None`: the worker never published).
    pub age_ms: Option<u64>,
    /// What the pipeline did: rx, forwarded, to_host, ct_new, ...
    pub packets: BTreeMap<String, u64>,
    /// Frames dropped, by reason (every reason, zeros included).
    pub drops: BTreeMap<String, u64>,
    /// The loop's own: bursts, tx, host_tx, host_rx, longest gap, ...
    #[serde(rename = "loop")]
    pub loop_counters: LoopCounters,
    /// The frame pool and the kernel's socket drops (AF_XDP).
    pub backend: BackendStats,
}

impl WorkerStatus {
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StatusReply {
    pub io: Io,
    /// Workers, each with a queue of every interface: an interface needs
    /// this many queues.
    pub workers: usize,
    /// Pods the daemon takes at most (`--max-pods`).
    #[serde(default)]
    pub max_pods: usize,
    /// The generation of the tables the workers read now.
    pub tables_generation: u64,
    /// What the tables leave out now, and why (a frontend another Service
    /// holds, a target port no endpoint resolves); objects a source
    /// rejected are under `sources`.
    #[serde(default)]
    pub left_out: Vec<String>,
    pub interfaces: Vec<Attached>,
    #[serde(default)]
    pub sources: Vec<SourceStatus>,
    #[serde(default)]
    pub conntrack: ConntrackStatus,
    /// Each worker's live counters.
    #[serde(default)]
    pub counters: Vec<WorkerStatus>,
}
