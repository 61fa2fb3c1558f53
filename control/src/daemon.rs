//! The node daemon's runtime: worker threads pinned to their cores, each
//! owning one queue of every port (an AF_XDP socket or a TAP queue), the
//! tables they read published as one immutable snapshot that is swapped
//! whole, the shared conntrack, its sweeper, and a clean stop that leaves no
//! XDP program behind.
//!
//! A worker loads the snapshot once per batch of rounds (an `ArcSwap` load:
//! no lock, no allocation), so it sees the old tables or the new ones, never
//! a mix, and a publication never waits for a worker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice_dataplane::conntrack::{Conntrack, FlowRecord, Timeouts};
use sluice_dataplane::counters::Counters;
use sluice_dataplane::io::tap::{enter_netns, HostTap, TapBackend, TapQueue};
use sluice_dataplane::io::Backend;
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::node::NodeTables;
use sluice_dataplane::pipeline::Tables;
use sluice_dataplane::route::{PortId, Routes};
use sluice_dataplane::service::{ServiceSpec, ServiceTable};
use sluice_dataplane::worker::{Idle, LoopCounters, PortMap, Worker};
use sluice_dataplane::Addr;

/// Which I/O backend carries the pods' frames.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
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
}

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
}

/// A worker's counters when it stopped.
#[derive(Clone, Debug, Default)]
pub struct WorkerReport {
    pub core: Option<usize>,
    pub packets: Counters,
    pub loop_counters: LoopCounters,
    /// AF_XDP: frames forwarded by moving a descriptor within the shared
    /// UMEM, and by copying between UMEMs.
    pub moved: u64,
    pub copied: u64,
}

/// The running daemon. Dropping it stops it.
pub struct Daemon {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<WorkerReport>>,
    sweeper: Option<JoinHandle<()>>,
    config: Config,
    publisher: Publisher,
}

/// Publishes tables to the workers; cloned into whatever thread keeps the
/// tables in step with a source.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
    routes_template: Arc<Vec<(Addr, PortId, [u8; 6])>>,
    host_addrs: Arc<Vec<Addr>>,
    publishing: Arc<std::sync::Mutex<()>>,
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
    /// The generation of the tables the workers now read.
    pub fn generation(&self) -> u64 {
        self.shared.snapshot.load().generation
    }

    /// Publishes new Services: the workers read them from their next batch
    /// of rounds, whole.
    pub fn publish_services(&self, specs: &[ServiceSpec]) -> Published {
        // One publisher at a time, so that generations are stored in order.
        let _one = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let (services, problems) = ServiceTable::build(specs);
        let generation = self.shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared.snapshot.store(Arc::new(Snapshot {
            services,
            routes: build_routes(&self.routes_template, &self.host_addrs),
            gateway: Gateway::DEFAULT,
            generation,
        }));
        Published {
            generation,
            problems: problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Live flows, at most `limit`.
    pub fn flows(&self, limit: usize) -> Vec<FlowRecord> {
        self.shared.conntrack.flows(limit)
    }
}

fn build_services(specs: &[ServiceSpec]) -> Result<ServiceTable, StartError> {
    let (table, problems) = ServiceTable::build(specs);
    if !problems.is_empty() {
        let each: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        return Err(StartError::Tables(each.join("; ")));
    }
    Ok(table)
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
        let services = build_services(&config.services)?;
        let pods: Vec<(Addr, PortId, [u8; 6])> = config
            .ports
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.addrs.iter().map(move |&a| (a, PortId(i as u16), p.mac)))
            .collect();
        let host_addrs: Vec<Addr> = config.host.iter().flat_map(|h| h.addrs.clone()).collect();
        let routes = build_routes(&pods, &host_addrs);
        if config.io == Io::Afxdp {
            ensure_bpffs();
            for p in &config.ports {
                if detach_xdp(config.node_netns.as_deref(), &p.ifname) {
                    eprintln!(
                        "sluice: replaced a stale XDP program on {} (a daemon before this one did not stop cleanly)",
                        p.ifname
                    );
                }
            }
        }
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot {
                services,
                routes,
                gateway: Gateway::DEFAULT,
                generation: 1,
            }),
            conntrack: Conntrack::new(config.conntrack_capacity, Timeouts::default()),
            stop: AtomicBool::new(false),
            generation: AtomicU64::new(1),
        });
        let cores: Vec<Option<usize>> = if config.cores.is_empty() {
            vec![None]
        } else {
            config.cores.iter().map(|&c| Some(c)).collect()
        };
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
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
                    for (w, core) in cores.into_iter().enumerate() {
                        let shared = shared.clone();
                        let config = config.clone();
                        let ready = ready_tx.clone();
                        handles.push(
                            std::thread::Builder::new()
                                .name(format!("sluice-w{w}"))
                                .spawn(move || worker_main(w, core, &config, &shared, ready))
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
            std::thread::Builder::new()
                .name("sluice-sweep".into())
                .spawn(move || {
                    while !shared.stop.load(Ordering::Relaxed) {
                        let now = shared.conntrack.now_ms();
                        shared.conntrack.sweep(now, 65_536);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
                .expect("spawn the sweeper")
        };
        let shared_for_publisher = shared.clone();
        let mut d = Daemon {
            shared,
            workers,
            sweeper: Some(sweeper),
            config,
            publisher: Publisher {
                shared: Arc::clone(&shared_for_publisher),
                routes_template: Arc::new(pods),
                host_addrs: Arc::new(host_addrs),
                publishing: Arc::new(std::sync::Mutex::new(())),
            },
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
            for p in &self.config.ports {
                // The sockets are closed; a program libxdp left is removed.
                detach_xdp(self.config.node_netns.as_deref(), &p.ifname);
            }
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
            let mut r = run_worker(
                &mut Worker::new(backend, map),
                host,
                config,
                shared,
                ready,
                w,
            );
            r.core = core;
            r
        }
        Io::Afxdp => afxdp_worker(w, core, map, host, config, shared, ready),
    }
}

#[cfg(feature = "afxdp")]
fn afxdp_worker(
    w: usize,
    core: Option<usize>,
    map: PortMap,
    host: Option<HostTap>,
    config: &Config,
    shared: &Shared,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
) -> WorkerReport {
    use sluice_dataplane::io::afxdp::{AfXdpBackend, AfXdpConfig};
    let names: Vec<&str> = config.ports.iter().map(|p| p.ifname.as_str()).collect();
    let cfg = AfXdpConfig {
        frames: 2048,
        ring: 512,
        queue: w as u32,
    };
    // One at a time: libxdp attaches its program with the first socket of
    // an interface and finds it for the next; two first sockets at once
    // would both try to attach.
    static OPENING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let opened = {
        let _one = OPENING.lock().unwrap_or_else(|p| p.into_inner());
        AfXdpBackend::open(&names, cfg)
    };
    match opened {
        Ok(b) => {
            eprintln!(
                "sluice: worker {w}: AF_XDP on {} port(s), queue {w}: {}",
                names.len(),
                if b.shared {
                    "one UMEM shared by the ports (forwarding moves descriptors)"
                } else {
                    "a UMEM per port (forwarding copies frames): sharing one was refused"
                },
            );
            if let Some(why) = &b.refused {
                eprintln!("sluice: worker {w}: {why}");
            }
            let mut worker = Worker::new(b, map);
            let mut r = run_worker(&mut worker, host, config, shared, ready, w);
            r.core = core;
            r.moved = worker.backend.moved;
            r.copied = worker.backend.copied;
            r
        }
        Err(e) => {
            let _ = ready.send((w, Err(e.to_string())));
            WorkerReport::default()
        }
    }
}

#[cfg(not(feature = "afxdp"))]
fn afxdp_worker(
    w: usize,
    _core: Option<usize>,
    _map: PortMap,
    _host: Option<HostTap>,
    _config: &Config,
    _shared: &Shared,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
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

fn run_worker<B: Backend>(
    worker: &mut Worker<B>,
    host: Option<HostTap>,
    config: &Config,
    shared: &Shared,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
    w: usize,
) -> WorkerReport {
    worker.host = host.map(|h| Box::new(h) as Box<dyn sluice_dataplane::io::HostPath>);
    let _ = ready.send((w, Ok(())));
    drop(ready);
    let mut empty = 0u32;
    while !shared.stop.load(Ordering::Relaxed) {
        let snap = shared.snapshot.load();
        let t = NodeTables {
            pipeline: Tables {
                services: &snap.services,
                conntrack: &shared.conntrack,
            },
            routes: &snap.routes,
            gateway: snap.gateway,
        };
        worker.run_rounds(&t, 64, &mut empty, config.idle);
    }
    WorkerReport {
        core: None,
        packets: worker.packet_counters().clone(),
        loop_counters: worker.counters.clone(),
        moved: 0,
        copied: 0,
    }
}
