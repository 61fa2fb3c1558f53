//! What the daemon's threads share: the tables the workers read (swapped
//! whole), the conntrack, the stop flag, and each worker's slots for what
//! it publishes (its counters) and what it has loaded (the tables'
//! generation), each on cache lines of its own. Readers off the packet
//! path see it through an `Observer`.
//!
//! Locks, in the order they may be taken (never the other way), none held
//! across a wait for another thread: the ports' state
//! (`ports::PortsInner::state`, held only to read or change the registry,
//! never while a worker is asked something nor across a publication), then
//! the publisher's spare copy (`publish::Publisher::publishing`: a
//! publication takes the copy out, with its turn, and waits for the last
//! worker to leave it holding nothing; the next publication waits for its
//! turn on a condition variable), then its left-out list; a worker's
//! `LiveSlot` is taken alone, and by the worker only with `try_lock`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice_dataplane::conntrack::Conntrack;
use sluice_dataplane::counters::Counters;
use sluice_dataplane::io::BackendStats;
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::route::Routes;
use sluice_dataplane::service::ServiceTable;
use sluice_dataplane::worker::LoopCounters;

/// What the workers read: swapped whole.
pub struct Snapshot {
    pub services: ServiceTable,
    pub routes: Routes,
    pub gateway: Gateway,
    /// Counts publications: the first tables are generation 1.
    pub generation: u64,
}

pub(crate) struct Shared {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) conntrack: Conntrack,
    pub(crate) stop: AtomicBool,
    pub(crate) generation: AtomicU64,
    /// A slot per worker, in worker order.
    pub(crate) live: Vec<LiveSlot>,
    /// The generation of the tables each worker last loaded.
    pub(crate) seen: Vec<SeenSlot>,
}

/// A worker's last loaded generation, alone on its cache lines: the worker
/// stores it once per batch of rounds when it changes.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct SeenSlot(pub(crate) AtomicU64);

/// A worker's counters: published by the worker every few milliseconds
/// while it runs (`Observer::workers`), and returned when it stops.
#[derive(Clone, Debug, Default)]
pub struct WorkerReport {
    pub core: Option<usize>,
    pub packets: Counters,
    pub loop_counters: LoopCounters,
    /// The backend's own: descriptors moved or frames copied, the frame
    /// pool, and what the kernel dropped on the worker's sockets
    /// (AF_XDP). Refreshed every `DETAIL_EVERY`: reading it makes a
    /// syscall per socket.
    pub backend: BackendStats,
    /// When the worker published this (`None`: never).
    pub at: Option<std::time::Instant>,
}

/// How often a worker publishes its counters, and its backend's state.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_millis(10);
pub(crate) const DETAIL_EVERY: Duration = Duration::from_secs(1);

/// One worker's published report, on a cache line pair of its own: the
/// worker writes it every `PUBLISH_EVERY` (if no reader holds it then),
/// readers copy it; no other worker writes near it.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct LiveSlot(pub(crate) std::sync::Mutex<WorkerReport>);

/// Reads a running daemon's state from another thread (the admin
/// socket's): the tables' generation, each worker's counters, the
/// conntrack's occupancy. Nothing it does touches the packet path.
#[derive(Clone)]
pub struct Observer {
    pub(crate) shared: Arc<Shared>,
}

impl Observer {
    /// The generation of the tables the workers now read.
    pub fn generation(&self) -> u64 {
        self.shared.snapshot.load().generation
    }

    /// Each worker's last published report.
    pub fn workers(&self) -> Vec<WorkerReport> {
        self.shared
            .live
            .iter()
            .map(|s| s.0.lock().map(|r| r.clone()).unwrap_or_default())
            .collect()
    }

    /// Live flows, the capacity, the unanswered flows evicted so far, and
    /// the flows ended because their backend left.
    pub fn conntrack(&self) -> (usize, usize, u64, u64) {
        let c = &self.shared.conntrack;
        (
            c.len().min(c.capacity()),
            c.capacity(),
            c.stats.evicted.load(Ordering::Relaxed),
            c.stats.ended.load(Ordering::Relaxed),
        )
    }
}
