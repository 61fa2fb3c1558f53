//! The node daemon's runtime: worker threads pinned to their cores, each
//! owning one queue of every port (an AF_XDP socket or a TAP queue), the
//! tables they read published as one immutable snapshot that is swapped
//! whole, the shared conntrack, its sweeper, and a clean stop that leaves no
//! XDP program behind.
//!
//! A worker loads the snapshot once per batch of rounds (an `ArcSwap` load:
//! no lock, no allocation), so it sees the old tables or the new ones, never
//! a mix, and a publication never waits for a worker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice_dataplane::conntrack::{Conntrack, FlowRecord, Timeouts};
use sluice_dataplane::counters::Counters;
use sluice_dataplane::io::tap::{enter_netns, HostTap, TapBackend, TapQueue};
use sluice_dataplane::io::{Backend, BackendStats};
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::pipeline::Tables;
use sluice_dataplane::route::{PortId, Routes};
use sluice_dataplane::service::{BuildProblem, ServiceSpec, ServiceTable};
use sluice_dataplane::worker::{Idle, LoopCounters, PortMap, Worker};
use sluice_dataplane::Addr;

use crate::ports::{
    Openers, Ports, PortsInner, PortsState, Registered, WorkerCommand, WorkerControl,
};

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
    NoSuchCore {
        core: usize,
        available: Vec<usize>,
    },
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
            StartError::NoSuchCore { core, available } => {
                write!(
                    f,
                    "--cores: core {core} does not exist (this machine has {available:?})"
                )
            }
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

/// What the workers read: swapped whole.
pub struct Snapshot {
    pub services: ServiceTable,
    pub routes: Routes,
    pub gateway: Gateway,
    /// Counts publications: the first tables are generation 1.
    pub generation: u64,
}

struct Shared {
    snapshot: ArcSwap<Snapshot>,
    conntrack: Conntrack,
    stop: AtomicBool,
    generation: AtomicU64,
    /// A slot per worker, in worker order.
    live: Vec<LiveSlot>,
    /// The generation of the tables each worker last loaded.
    seen: Vec<SeenSlot>,
}

/// A worker's last loaded generation, alone on its cache lines: the worker
/// stores it once per batch of rounds when it changes.
#[repr(align(128))]
#[derive(Default)]
struct SeenSlot(AtomicU64);

/// Keeps the calling thread, and the threads it starts from now on, off
/// `cores` (the workers'): a busy-polling worker that shares its core
/// with another thread loses it for a scheduler slice, milliseconds in
/// which its rings fill. Does nothing when no core would be left.
pub fn keep_off_cores(cores: &[usize]) {
    if cores.is_empty() {
        return;
    }
    let rest: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .filter(|c| !cores.contains(c))
        .collect();
    if rest.is_empty() {
        return;
    }
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads one.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in rest {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

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
const PUBLISH_EVERY: Duration = Duration::from_millis(10);
const DETAIL_EVERY: Duration = Duration::from_secs(1);

/// One worker's published report, on a cache line pair of its own: the
/// worker writes it every `PUBLISH_EVERY` (if no reader holds it then),
/// readers copy it; no other worker writes near it.
#[repr(align(128))]
#[derive(Default)]
struct LiveSlot(std::sync::Mutex<WorkerReport>);

/// Reads a running daemon's state from another thread (the admin
/// socket's): the tables' generation, each worker's counters, the
/// conntrack's occupancy. Nothing it does touches the packet path.
#[derive(Clone)]
pub struct Observer {
    shared: Arc<Shared>,
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

    /// Live flows and the table's capacity.
    /// Live flows, the capacity, and the unanswered flows evicted so far.
    pub fn conntrack(&self) -> (usize, usize, u64) {
        let c = &self.shared.conntrack;
        (
            c.len().min(c.capacity()),
            c.capacity(),
            c.stats.evicted.load(Ordering::Relaxed),
        )
    }
}

/// The running daemon. Dropping it stops it.
pub struct Daemon {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<WorkerReport>>,
    ports: Ports,
    /// The admin socket, when the daemon serves one: closed first on stop.
    admin: Option<crate::admin::AdminServer>,
    sweeper: Option<JoinHandle<()>>,
    config: Config,
    publisher: Publisher,
}

/// Publishes tables to the workers; cloned into whatever thread keeps the
/// tables in step with a source.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
    host_addrs: Arc<Vec<Addr>>,
    /// The copy the workers are not reading, and what it lacks; held by
    /// one publication at a time, so that generations go out in order.
    publishing: Arc<std::sync::Mutex<Spare>>,
    /// What the tables leave out now, for `status` (apart from
    /// `publishing`, which a publication holds for as long as it takes).
    left_out: Arc<std::sync::Mutex<Vec<String>>>,
}

type ServiceKey = (String, String);

/// Why each Service left out of the tables (wholly or in part) is.
type LeftOut = BTreeMap<ServiceKey, Vec<BuildProblem>>;

/// `BuildProblem`s by the Service they are about.
fn left_out_of(problems: &[BuildProblem]) -> LeftOut {
    let mut m = LeftOut::new();
    for p in problems {
        let service = match p {
            BuildProblem::DuplicateFrontend { service, .. }
            | BuildProblem::UnresolvedTargetPort { service, .. } => service,
        };
        let (ns, name) = service.split_once('/').unwrap_or(("", service));
        m.entry((ns.to_string(), name.to_string()))
            .or_default()
            .push(p.clone());
    }
    m
}

/// Applies one change to a copy of the tables, keeping in `found` the
/// problems of the Service's last change; false when the table is full.
fn apply(snap: &mut Snapshot, c: &Change, found: &mut LeftOut) -> bool {
    let problems = match c {
        Change::Upsert(s) => match snap.services.upsert_service(s) {
            Ok(p) => p,
            Err(_) => return false,
        },
        Change::Remove { namespace, name } => {
            snap.services.remove_service(namespace, name);
            Vec::new()
        }
    };
    if problems.is_empty() {
        found.remove(&c.key());
    } else {
        found.insert(c.key(), problems);
    }
    true
}

/// Whether a Service left out for these reasons may fit once another
/// Service changes: it wanted a frontend another held. (A target port no
/// endpoint resolves changes only with the Service's own objects.)
fn wants_a_taken_frontend(problems: &[BuildProblem]) -> bool {
    problems
        .iter()
        .any(|p| matches!(p, BuildProblem::DuplicateFrontend { .. }))
}

/// The same problems, in any order.
fn same_problems(a: &[BuildProblem], b: &[BuildProblem]) -> bool {
    a.len() == b.len() && a.iter().all(|p| b.contains(p))
}

struct Spare {
    table: Option<Arc<Snapshot>>,
    /// The changes of the last publication, which this copy has not had.
    pending: Vec<Change>,
    /// Every Service as published last: what a rebuild is made from.
    current: BTreeMap<(String, String), ServiceSpec>,
    /// The pods' addresses and ports: every publication routes them.
    pods: Vec<(Addr, PortId, [u8; 6])>,
    /// Services the tables leave out now, with why: each is tried again
    /// with the next publication (the frontend it wanted may be free).
    left_out: LeftOut,
}

/// One Service's change, as the control side publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Upsert(ServiceSpec),
    Remove { namespace: String, name: String },
}

impl Change {
    fn key(&self) -> ServiceKey {
        match self {
            Change::Upsert(s) => (s.namespace.clone(), s.name.clone()),
            Change::Remove { namespace, name } => (namespace.clone(), name.clone()),
        }
    }
}

/// What a publication did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub generation: u64,
    /// Services or ports left out of the tables (a frontend another
    /// Service holds, a target port no endpoint resolves); the rest is in.
    pub problems: Vec<String>,
}

impl Publisher {
    /// A publisher whose tables no worker reads, built from `specs`: for
    /// benchmarks of the publication path alone.
    pub fn detached(specs: &[ServiceSpec]) -> Publisher {
        let build = || Snapshot {
            services: ServiceTable::build_with_room(specs, room(ports_of(specs))).0,
            routes: Routes::default(),
            gateway: Gateway::DEFAULT,
            generation: 1,
        };
        let first = build();
        let left_out = build_services(specs).1;
        Publisher {
            shared: Arc::new(Shared {
                snapshot: ArcSwap::from_pointee(first),
                conntrack: Conntrack::new(1024, Timeouts::default()),
                stop: AtomicBool::new(false),
                generation: AtomicU64::new(1),
                live: Vec::new(),
                seen: Vec::new(),
            }),
            host_addrs: Arc::new(Vec::new()),
            publishing: Arc::new(std::sync::Mutex::new(Spare {
                table: Some(Arc::new(build())),
                pending: Vec::new(),
                pods: Vec::new(),
                current: specs
                    .iter()
                    .map(|s| ((s.namespace.clone(), s.name.clone()), s.clone()))
                    .collect(),
                left_out: left_out.clone(),
            })),
            left_out: Arc::new(std::sync::Mutex::new(
                left_out
                    .values()
                    .flatten()
                    .map(ToString::to_string)
                    .collect(),
            )),
        }
    }

    /// A reader's load of the live tables, as a worker's: the Service
    /// ports they hold, and their generation.
    pub fn read(&self) -> (usize, u64) {
        let s = self.shared.snapshot.load();
        (s.services.len(), s.generation)
    }

    /// The generation of the tables the workers now read.
    pub fn generation(&self) -> u64 {
        self.shared.snapshot.load().generation
    }

    /// Publishes the pods' routes (a pod attached or detached), with the
    /// Services as they are.
    pub fn publish_pods(&self, pods: Vec<(Addr, PortId, [u8; 6])>) -> Published {
        self.publishing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pods = pods;
        self.publish_changes(&[])
    }

    /// Waits until every running worker has loaded tables of `generation`
    /// or later, at most `timeout`; whether they all have. A worker loads
    /// the tables once per batch of rounds, which is milliseconds when it
    /// naps: a pod's ADD waits for this, so that the pod is routed from
    /// its first packet.
    pub fn wait_loaded(&self, generation: u64, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let all = self.shared.stop.load(Ordering::Relaxed)
                || self
                    .shared
                    .seen
                    .iter()
                    .all(|s| s.0.load(Ordering::Acquire) >= generation);
            if all {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Publishes a whole set of Services: the differences from what was
    /// published last go out as changes.
    pub fn publish_services(&self, specs: &[ServiceSpec]) -> Published {
        let changes = {
            let sp = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
            let wanted: BTreeMap<(String, String), &ServiceSpec> = specs
                .iter()
                .map(|s| ((s.namespace.clone(), s.name.clone()), s))
                .collect();
            let mut changes: Vec<Change> = sp
                .current
                .keys()
                .filter(|k| !wanted.contains_key(*k))
                .map(|(namespace, name)| Change::Remove {
                    namespace: namespace.clone(),
                    name: name.clone(),
                })
                .collect();
            changes.extend(
                wanted
                    .iter()
                    .filter(|(k, s)| sp.current.get(*k) != Some(**s))
                    .map(|(_, s)| Change::Upsert((*s).clone())),
            );
            changes
        };
        self.publish_changes(&changes)
    }

    /// Publishes changes to some Services, in time proportional to them:
    /// they are made in place to the copy the workers are not reading
    /// (once the last worker has left it), and that copy is swapped in.
    /// The workers see the old tables or the new ones, never a mix, and
    /// never wait; the copy they leave gets the same changes next time.
    pub fn publish_changes(&self, changes: &[Change]) -> Published {
        let mut sp = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        for c in changes {
            match c {
                Change::Upsert(s) => {
                    sp.current
                        .insert((s.namespace.clone(), s.name.clone()), s.clone());
                }
                Change::Remove { namespace, name } => {
                    sp.current.remove(&(namespace.clone(), name.clone()));
                }
            }
        }
        // A Service's last change is its state (an upsert carries the
        // whole Service), so one change per Service; and removes first: a
        // frontend that one Service gives up in this batch is free for
        // another that wants it in the same batch.
        let mut seen = std::collections::BTreeSet::new();
        let mut last: Vec<Change> = changes
            .iter()
            .rev()
            .filter(|c| seen.insert(c.key()))
            .cloned()
            .collect();
        last.reverse();
        let (mut changes, upserts): (Vec<Change>, Vec<Change>) = last
            .into_iter()
            .partition(|c| matches!(c, Change::Remove { .. }));
        changes.extend(upserts);
        let generation = self.shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut table = sp.table.take();
        // Workers hold a snapshot for one batch of rounds (microseconds,
        // a few milliseconds when they nap): wait for the last to leave.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        let mut ready = false;
        if let Some(t) = table.as_mut() {
            while Arc::get_mut(t).is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(20));
            }
            ready = Arc::get_mut(t).is_some();
        }
        let pending = std::mem::take(&mut sp.pending);
        let before = std::mem::take(&mut sp.left_out);
        let mut full = !ready;
        // Each Service's problems after its last change in this batch.
        let mut found = LeftOut::new();
        if let Some(snap) = table.as_mut().and_then(Arc::get_mut).filter(|_| ready) {
            // The last publication's changes (their problems were told
            // then), then this one's.
            let mut told = LeftOut::new();
            full = !pending.iter().all(|c| apply(snap, c, &mut told));
            if !full {
                full = !changes.iter().all(|c| apply(snap, c, &mut found));
            }
            // Then, with any change, every Service left out for a taken
            // frontend is tried again: the frontend may be free now.
            if !full && !changes.is_empty() {
                let touched: std::collections::BTreeSet<ServiceKey> =
                    changes.iter().map(Change::key).collect();
                let retry: Vec<Change> = before
                    .iter()
                    .filter(|(k, _)| !touched.contains(*k))
                    .chain(found.iter())
                    .filter(|(_, p)| wants_a_taken_frontend(p))
                    .filter_map(|(k, _)| sp.current.get(k).cloned().map(Change::Upsert))
                    .collect();
                for c in retry {
                    if !apply(snap, &c, &mut found) {
                        full = true;
                        break;
                    }
                    changes.push(c);
                }
            }
            snap.routes = build_routes(&sp.pods, &self.host_addrs);
            snap.generation = generation;
        }
        let next = if full {
            // No room left, or a worker held the copy for a second: both
            // copies are built afresh from every Service (rare; the tables
            // are built with a quarter more room than they need). The
            // Services that hold their frontends now go first, so that a
            // rebuild moves no frontend from one Service to another.
            let (held, wanting): (Vec<_>, Vec<_>) = sp
                .current
                .iter()
                .partition(|(k, _)| !before.contains_key(*k));
            let specs: Vec<ServiceSpec> = held
                .into_iter()
                .chain(wanting)
                .map(|(_, s)| s.clone())
                .collect();
            let pods = sp.pods.clone();
            let build = || {
                let (services, p) = ServiceTable::build_with_room(&specs, room(ports_of(&specs)));
                (
                    Snapshot {
                        services,
                        routes: build_routes(&pods, &self.host_addrs),
                        gateway: Gateway::DEFAULT,
                        generation,
                    },
                    p,
                )
            };
            let (snap, p) = build();
            sp.left_out = left_out_of(&p);
            let prev = self.shared.snapshot.swap(Arc::new(snap));
            drop(prev);
            // The spare is built now, not from the copy just swapped out,
            // which workers may still read.
            Arc::new(build().0)
        } else {
            let mut left_out = before.clone();
            for c in &changes {
                match found.get(&c.key()) {
                    Some(p) => left_out.insert(c.key(), p.clone()),
                    None => left_out.remove(&c.key()),
                };
            }
            sp.left_out = left_out;
            let new = table.expect("the spare copy");
            let prev = self.shared.snapshot.swap(new);
            sp.pending = changes;
            prev
        };
        if full {
            sp.pending.clear();
        }
        sp.table = Some(next);
        // Told once: what was left out already is not news.
        let problems = sp
            .left_out
            .iter()
            .filter(|(k, p)| !before.get(*k).is_some_and(|b| same_problems(b, p)))
            .flat_map(|(_, p)| p.iter().map(ToString::to_string))
            .collect();
        *self.left_out.lock().unwrap_or_else(|p| p.into_inner()) = sp
            .left_out
            .values()
            .flatten()
            .map(ToString::to_string)
            .collect();
        Published {
            generation,
            problems,
        }
    }

    /// What the tables leave out now (a frontend another Service holds, a
    /// target port no endpoint resolves), one line each.
    pub fn left_out(&self) -> Vec<String> {
        self.left_out.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Live flows, at most `limit`.
    pub fn flows(&self, limit: usize) -> Vec<FlowRecord> {
        self.shared.conntrack.flows(limit)
    }
}

/// Room for this many more Service ports than a table is built with, so
/// that updates go in place for a while before a rebuild.
fn room(ports: usize) -> usize {
    (ports / 4).max(1024)
}

fn ports_of(specs: &[ServiceSpec]) -> usize {
    specs
        .iter()
        .map(|s| s.ports.len() * s.cluster_ips.len())
        .sum()
}

/// The first tables, and what they leave out (logged, shown by status).
fn build_services(specs: &[ServiceSpec]) -> (ServiceTable, LeftOut) {
    let (table, problems) = ServiceTable::build_with_room(specs, room(ports_of(specs)));
    (table, left_out_of(&problems))
}

fn build_routes(pods: &[(Addr, PortId, [u8; 6])], host: &[Addr]) -> Routes {
    let mut r = Routes::default();
    for &(a, p, m) in pods {
        r.add_pod(a, p, m);
    }
    for &a in host {
        r.add_host(a);
    }
    r
}

/// Detaches whatever XDP program is on `ifname` (in `netns`): a program a
/// killed daemon left behind would otherwise keep redirecting the
/// interface's frames to a socket that no longer exists. Returns whether
/// there was one.
pub fn detach_xdp(netns: Option<&str>, ifname: &str) -> bool {
    let mut show = std::process::Command::new("ip");
    if let Some(ns) = netns {
        show.args(["-n", ns]);
    }
    let had = show
        .args(["-d", "link", "show", "dev", ifname])
        .output()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout);
            s.contains("prog/xdp") || s.contains("xdpgeneric") || s.contains(" xdp ")
        })
        .unwrap_or(false);
    if had {
        for mode in ["xdpgeneric", "xdp"] {
            let mut c = std::process::Command::new("ip");
            if let Some(ns) = netns {
                c.args(["-n", ns]);
            }
            let _ = c
                .args(["link", "set", "dev", ifname, mode, "off"])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
    had
}

/// Mounts bpffs at /sys/fs/bpf if nothing is mounted there: libxdp keeps
/// its dispatcher's state in it. Without it (or where the kernel refuses
/// the dispatcher, as this project's does: docs/afxdp.md) libxdp loads a
/// single program per interface, which is all Sluice needs.
pub fn ensure_bpffs() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"/sys/fs/bpf") && f.get(2) == Some(&"bpf")
    }) {
        return;
    }
    let ok = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        eprintln!("sluice: mounted bpffs at /sys/fs/bpf for libxdp");
    } else {
        eprintln!("sluice: no bpffs at /sys/fs/bpf and it could not be mounted; libxdp loads a single program per interface");
    }
}

impl Daemon {
    /// Starts the workers and returns once every one has opened its ports,
    /// or with the first error (the others are stopped).
    pub fn start(config: Config) -> Result<Daemon, StartError> {
        let available: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        for &core in &config.cores {
            if !available.contains(&core) {
                return Err(StartError::NoSuchCore { core, available });
            }
        }
        let (services, left_out) = build_services(&config.services);
        for p in left_out.values().flatten() {
            eprintln!("sluice: left out of the tables: {p}");
        }
        let registry: BTreeMap<u16, Registered> = config
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    i as u16,
                    Registered {
                        port: p.clone(),
                        owner: None,
                    },
                )
            })
            .collect();
        let pods = crate::ports::routes_of(&registry);
        let host_addrs: Vec<Addr> = config.host.iter().flat_map(|h| h.addrs.clone()).collect();
        let routes = build_routes(&pods, &host_addrs);
        if !(1..=usize::from(MOST_PODS)).contains(&config.max_pods) {
            return Err(StartError::Tables(format!(
                "max_pods {}: 1 to {MOST_PODS}",
                config.max_pods
            )));
        }
        if config.ports.len() > config.max_pods {
            return Err(StartError::TooManyPorts {
                ports: config.ports.len(),
                max_pods: config.max_pods,
            });
        }
        if config.io == Io::Afxdp {
            ensure_bpffs();
            crate::anchor::ensure(config.node_netns.as_deref(), config.cores.len())
                .map_err(StartError::Anchor)?;
            for p in &config.ports {
                if detach_xdp(config.node_netns.as_deref(), &p.ifname) {
                    eprintln!(
                        "sluice: replaced a stale XDP program on {} (a daemon before this one did not stop cleanly)",
                        p.ifname
                    );
                }
            }
        }
        // The second copy, which publications change while the workers
        // read the first (left-right).
        let spare = Snapshot {
            services: build_services(&config.services).0,
            routes: build_routes(&pods, &host_addrs),
            gateway: Gateway::DEFAULT,
            generation: 1,
        };
        let current: BTreeMap<(String, String), ServiceSpec> = config
            .services
            .iter()
            .map(|s| ((s.namespace.clone(), s.name.clone()), s.clone()))
            .collect();
        let cores: Vec<Option<usize>> = if config.cores.is_empty() {
            vec![None]
        } else {
            config.cores.iter().map(|&c| Some(c)).collect()
        };
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot {
                services,
                routes,
                gateway: Gateway::DEFAULT,
                generation: 1,
            }),
            conntrack: conntrack_table(config.conntrack_capacity),
            stop: AtomicBool::new(false),
            generation: AtomicU64::new(1),
            live: cores.iter().map(|_| LiveSlot::default()).collect(),
            seen: cores.iter().map(|_| SeenSlot::default()).collect(),
        });
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
        let (command_tx, command_rx): (Vec<_>, Vec<_>) = cores
            .iter()
            .map(|_| mpsc::channel::<WorkerCommand>())
            .unzip();
        let openers: Openers = Arc::new(std::sync::Mutex::new(
            (0..cores.len()).map(|_| None).collect(),
        ));
        let worker_openers = openers.clone();
        // Workers are spawned from a thread inside the node's namespace, so
        // that they (and the sockets they open) are in it too; the caller's
        // thread stays where it was.
        let launcher = {
            let shared = shared.clone();
            let config = config.clone();
            std::thread::spawn(
                move || -> Result<Vec<JoinHandle<WorkerReport>>, StartError> {
                    if let Some(ns) = &config.node_netns {
                        enter_netns(ns).map_err(|reason| StartError::Namespace {
                            netns: ns.clone(),
                            reason,
                        })?;
                    }
                    let mut handles = Vec::new();
                    for ((w, core), rx) in cores.into_iter().enumerate().zip(command_rx) {
                        let commands = WorkerControl {
                            rx,
                            openers: worker_openers.clone(),
                        };
                        let shared = shared.clone();
                        let config = config.clone();
                        let ready = ready_tx.clone();
                        handles.push(
                            std::thread::Builder::new()
                                .name(format!("sluice-w{w}"))
                                .spawn(move || {
                                    worker_main(w, core, &config, &shared, ready, commands)
                                })
                                .expect("spawn a worker thread"),
                        );
                    }
                    Ok(handles)
                },
            )
        };
        let workers = launcher
            .join()
            .map_err(|_| StartError::Tables("launcher thread panicked".into()))??;
        let mut first_error = None;
        for _ in 0..workers.len() {
            match ready_rx.recv_timeout(Duration::from_secs(30)) {
                Ok((_, Ok(()))) => {}
                Ok((w, Err(reason))) => {
                    first_error.get_or_insert(StartError::Worker { worker: w, reason });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    first_error.get_or_insert(StartError::Workers(
                        "not every worker opened its ports within 30 s".into(),
                    ));
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    first_error.get_or_insert(StartError::Workers(
                        "a worker exited before opening its ports (see the log above)".into(),
                    ));
                    break;
                }
            }
        }
        let sweeper = {
            let shared = shared.clone();
            let sweeper_cores = config.cores.clone();
            std::thread::Builder::new()
                .name("sluice-sweep".into())
                .spawn(move || {
                    keep_off_cores(&sweeper_cores);
                    while !shared.stop.load(Ordering::Relaxed) {
                        let now = shared.conntrack.now_ms();
                        shared.conntrack.sweep(now, 65_536);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
                .expect("spawn the sweeper")
        };
        let shared_for_publisher = shared.clone();
        let publisher = Publisher {
            shared: Arc::clone(&shared_for_publisher),
            host_addrs: Arc::new(host_addrs),
            publishing: Arc::new(std::sync::Mutex::new(Spare {
                table: Some(Arc::new(spare)),
                pending: Vec::new(),
                current,
                pods,
                left_out: left_out.clone(),
            })),
            left_out: Arc::new(std::sync::Mutex::new(
                left_out
                    .values()
                    .flatten()
                    .map(ToString::to_string)
                    .collect(),
            )),
        };
        let ports = Ports {
            inner: Arc::new(PortsInner {
                io: config.io,
                node_netns: config.node_netns.clone(),
                max_pods: config.max_pods,
                publisher: publisher.clone(),
                openers,
                state: std::sync::Mutex::new(PortsState {
                    registry,
                    commands: command_tx,
                }),
            }),
        };
        let mut d = Daemon {
            shared,
            workers,
            ports,
            admin: None,
            sweeper: Some(sweeper),
            config,
            publisher,
        };
        if let Some(e) = first_error {
            d.stop();
            return Err(e);
        }
        Ok(d)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn conntrack(&self) -> &Conntrack {
        &self.shared.conntrack
    }

    /// Live flows, at most `limit`.
    pub fn flows(&self, limit: usize) -> Vec<FlowRecord> {
        self.shared.conntrack.flows(limit)
    }

    /// The generation of the tables the workers now read.
    pub fn generation(&self) -> u64 {
        self.publisher.generation()
    }

    /// A reader of the running daemon's state, for another thread.
    pub fn observer(&self) -> Observer {
        Observer {
            shared: self.shared.clone(),
        }
    }

    /// Keeps `admin` (serving this daemon) until the daemon stops.
    pub fn hold_admin(&mut self, admin: crate::admin::AdminServer) {
        self.admin = Some(admin);
    }

    /// A handle that attaches and detaches pod ports from another thread
    /// (the admin socket's).
    pub fn ports(&self) -> Ports {
        self.ports.clone()
    }

    /// A handle that publishes to these workers from another thread.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Publishes new Services (see `Publisher::publish_services`).
    pub fn publish_services(&self, specs: &[ServiceSpec]) -> Published {
        self.publisher.publish_services(specs)
    }

    /// Stops the workers, waits for them, detaches every XDP program, and
    /// returns each worker's counters.
    pub fn stop(&mut self) -> Vec<WorkerReport> {
        // No attach may start while the workers stop.
        self.admin.take();
        self.shared.stop.store(true, Ordering::Relaxed);
        let reports: Vec<WorkerReport> = self
            .workers
            .drain(..)
            .enumerate()
            .filter_map(|(w, h)| match h.join() {
                Ok(r) => Some(r),
                Err(_) => {
                    eprintln!("sluice: worker {w} had panicked; its counters are lost");
                    None
                }
            })
            .collect();
        if let Some(s) = self.sweeper.take() {
            let _ = s.join();
        }
        if self.config.io == Io::Afxdp {
            for p in self.ports.attached() {
                // The sockets are closed; a program libxdp left is removed.
                detach_xdp(self.config.node_netns.as_deref(), &p.ifname);
            }
            crate::anchor::remove(self.config.node_netns.as_deref());
        }
        reports
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.stop();
        }
    }
}

/// The conntrack table, every page faulted in now (not on the packet
/// path), and a line on how it is backed.
fn conntrack_table(capacity: usize) -> Conntrack {
    let t = std::time::Instant::now();
    let ct = Conntrack::new(capacity, Timeouts::default());
    let (bytes, backing) = ct.memory();
    let thp = sluice_dataplane::hugemem::thp_mode();
    eprintln!(
        "sluice: conntrack: {} flows, {} MiB faulted in at start in {:.0} ms ({}); transparent huge pages: {}{}",
        ct.capacity(),
        bytes >> 20,
        t.elapsed().as_secs_f64() * 1e3,
        match backing {
            sluice_dataplane::hugemem::Backing::Mapped => "its own mapping, huge pages asked for",
            sluice_dataplane::hugemem::Backing::Heap => "from the heap: the mapping failed",
        },
        thp.label(),
        if thp.gives_huge_pages() {
            ""
        } else {
            " (4 KiB pages: expect TLB misses on a big table)"
        }
    );
    ct
}

fn pin(core: Option<usize>) -> Result<(), String> {
    if let Some(id) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            return Err(format!("cannot pin to core {id}"));
        }
    }
    Ok(())
}

fn worker_main(
    w: usize,
    core: Option<usize>,
    config: &Config,
    shared: &Shared,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
    commands: WorkerControl,
) -> WorkerReport {
    if let Err(e) = pin(core) {
        let _ = ready.send((w, Err(e)));
        return WorkerReport::default();
    }
    let map = match PortMap::new(
        &(0..config.ports.len())
            .map(|i| (PortId(i as u16), i))
            .collect::<Vec<_>>(),
        None,
        config.ports.len(),
    ) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send((w, Err(e.to_string())));
            return WorkerReport::default();
        }
    };
    let host = match &config.host {
        Some(h) => match TapQueue::open(&h.ifname) {
            Ok(q) => Some(HostTap {
                queue: q,
                mac: h.mac,
            }),
            Err(e) => {
                let _ = ready.send((w, Err(format!("the host's TAP: {e}"))));
                return WorkerReport::default();
            }
        },
        None => None,
    };
    match config.io {
        Io::Tap => {
            let mut queues = Vec::new();
            for p in &config.ports {
                let q = match &p.netns {
                    Some(ns) => TapQueue::open_in(ns, &p.ifname),
                    None => TapQueue::open(&p.ifname),
                };
                match q {
                    Ok(q) => queues.push(q),
                    Err(e) => {
                        let _ = ready.send((w, Err(e.to_string())));
                        return WorkerReport::default();
                    }
                }
            }
            let frames = 64 * (queues.len() + 2);
            let backend = TapBackend::new(queues, frames);
            run_worker(
                &mut Worker::new(backend, map),
                host,
                config,
                shared,
                ready,
                w,
                core,
                commands,
            )
        }
        Io::Afxdp => afxdp_worker(w, core, map, host, config, shared, ready, commands),
    }
}

#[cfg(feature = "afxdp")]
#[allow(clippy::too_many_arguments)]
fn afxdp_worker(
    w: usize,
    core: Option<usize>,
    map: PortMap,
    host: Option<HostTap>,
    config: &Config,
    shared: &Shared,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
    commands: WorkerControl,
) -> WorkerReport {
    use sluice_dataplane::io::afxdp::{AfXdpBackend, AfXdpConfig};
    let names: Vec<&str> = config.ports.iter().map(|p| p.ifname.as_str()).collect();
    // A ring of 2048 holds 10 ms at 200,000 frames a second: a worker that
    // loses its core for a few milliseconds (a shared machine, a burst of
    // interrupts) loses no frame on a busy port. The pool is sized for
    // --max-pods ports (FillPlan::for_ports: 47 MiB a worker for 250).
    let cfg = AfXdpConfig {
        ring: 2048,
        queue: w as u32,
        max_ports: config.max_pods as u32,
    };
    // One at a time: libxdp attaches its program with the first socket of
    // an interface and finds it for the next; two first sockets at once
    // would both try to attach.
    static OPENING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let opened = {
        let _one = OPENING.lock().unwrap_or_else(|p| p.into_inner());
        AfXdpBackend::open(&names, cfg, Some(crate::anchor::ANCHOR))
    };
    match opened {
        Ok(b) => {
            eprintln!(
                "sluice: worker {w}: AF_XDP on {} port(s), queue {w}, a pool of {} MiB for {} ports: {}",
                names.len(),
                b.pool_bytes() >> 20,
                config.max_pods,
                if b.shared {
                    "one UMEM shared by the ports (forwarding moves descriptors)"
                } else {
                    "a UMEM per port (forwarding copies frames): sharing one was refused"
                },
            );
            if let Some(why) = &b.refused {
                eprintln!("sluice: worker {w}: {why}");
            }
            if let Some(o) = b.opener() {
                let mut all = commands.openers.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(slot) = all.get_mut(w) {
                    *slot = Some(Box::new(move |ifname: &str| {
                        o.open(ifname)
                            .map(|p| Box::new(p) as Box<dyn std::any::Any + Send>)
                            .map_err(|e| e.to_string())
                    }));
                }
            }
            let mut worker = Worker::new(b, map);
            run_worker(&mut worker, host, config, shared, ready, w, core, commands)
        }
        Err(e) => {
            let _ = ready.send((w, Err(e.to_string())));
            WorkerReport::default()
        }
    }
}

#[cfg(not(feature = "afxdp"))]
#[allow(clippy::too_many_arguments)]
fn afxdp_worker(
    w: usize,
    _core: Option<usize>,
    _map: PortMap,
    _host: Option<HostTap>,
    _config: &Config,
    _shared: &Shared,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
    _commands: WorkerControl,
) -> WorkerReport {
    let _ = ready.send((
        w,
        Err(
            "this build has no AF_XDP backend (build with --features afxdp, or use --io tap)"
                .into(),
        ),
    ));
    WorkerReport::default()
}

/// Publishes `worker`'s counters into its live slot, and its backend's
/// state when `detail`. Skipped (never waited for) if a reader holds the
/// slot; copies into the slot's own storage, so it allocates nothing.
fn publish_report<B: Backend>(
    slot: &LiveSlot,
    worker: &Worker<B>,
    core: Option<usize>,
    detail: bool,
) {
    if let Ok(mut r) = slot.0.try_lock() {
        r.core = core;
        r.packets.clone_from(worker.packet_counters());
        r.loop_counters.clone_from(&worker.counters);
        if detail {
            r.backend = worker.backend.stats();
        }
        r.at = Some(std::time::Instant::now());
    }
}

#[allow(clippy::too_many_arguments)]
fn run_worker<B: Backend>(
    worker: &mut Worker<B>,
    host: Option<HostTap>,
    config: &Config,
    shared: &Shared,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
    w: usize,
    core: Option<usize>,
    commands: WorkerControl,
) -> WorkerReport {
    worker.host = host.map(|h| Box::new(h) as Box<dyn sluice_dataplane::io::HostPath>);
    let live = &shared.live[w];
    publish_report(live, worker, core, true);
    let _ = ready.send((w, Ok(())));
    drop(ready);
    let mut empty = 0u32;
    let (mut published, mut detailed) = (std::time::Instant::now(), std::time::Instant::now());
    while !shared.stop.load(Ordering::Relaxed) {
        let snap = shared.snapshot.load();
        let seen = &shared.seen[w].0;
        if seen.load(Ordering::Relaxed) != snap.generation {
            seen.store(snap.generation, Ordering::Release);
        }
        let t = Tables {
            services: &snap.services,
            conntrack: &shared.conntrack,
            routes: &snap.routes,
            gateway: snap.gateway,
        };
        worker.run_rounds(&t, 64, &mut empty, config.idle);
        drop(snap);
        let now = std::time::Instant::now();
        if now - published >= PUBLISH_EVERY {
            let detail = now - detailed >= DETAIL_EVERY;
            publish_report(live, worker, core, detail);
            published = now;
            if detail {
                detailed = now;
            }
        }
        // Between batches, holding no snapshot: a port detached now is
        // one the tables no longer route to.
        while let Ok(c) = commands.rx.try_recv() {
            match c {
                WorkerCommand::Attach {
                    slot,
                    ifname,
                    reply,
                } => {
                    // The worker polls nothing while libxdp opens the
                    // socket: logged, since its other ports wait that long.
                    let t = std::time::Instant::now();
                    let r = worker.attach(slot, &ifname).map_err(|e| e.to_string());
                    eprintln!(
                        "sluice: worker {w}: opened {ifname} in {:.1} ms",
                        t.elapsed().as_secs_f64() * 1e3
                    );
                    let _ = reply.send(r);
                }
                WorkerCommand::Install { slot, port, reply } => {
                    let _ = reply.send(worker.install(slot, port).map_err(|e| e.to_string()));
                }
                WorkerCommand::Detach { slot, reply } => {
                    let _ = reply.send(worker.detach(slot));
                }
            }
            // The pool changed: shown at once, not a second later.
            publish_report(live, worker, core, true);
        }
    }
    publish_report(live, worker, core, true);
    WorkerReport {
        core,
        packets: worker.packet_counters().clone(),
        loop_counters: worker.counters.clone(),
        backend: worker.backend.stats(),
        at: Some(std::time::Instant::now()),
    }
}
