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
use sluice_dataplane::conntrack::{Conntrack, FlowRecord};
use sluice_dataplane::io::tap::enter_netns;
use sluice_dataplane::neighbor::Gateway;
use sluice_dataplane::service::ServiceSpec;
use sluice_dataplane::Addr;

use crate::host_xdp::{detach_xdp, ensure_bpffs, rx_queues};
use crate::placement::Placement;
use crate::ports::{
    Openers, Ports, PortsInner, PortsState, Registered, WorkerCommand, WorkerControl,
};
use crate::publish::{build_routes, build_services, Published, Publisher};
use crate::state::{LiveSlot, Observer, SeenSlot, Shared, Snapshot, WorkerReport};
use crate::workers::{conntrack_table, keep_off_cores, worker_main};

// What the daemon is started with.
pub use crate::config::{
    Config, HostConfig, Io, PortConfig, StartError, DEFAULT_MAX_PODS, MOST_PODS,
};

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

impl Daemon {
    /// Starts the workers and returns once every one has opened its ports,
    /// or with the first error (the others are stopped).
    pub fn start(config: Config) -> Result<Daemon, StartError> {
        let available: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        let placement = Placement::new(&config.cores, &available).map_err(StartError::Placement)?;
        eprintln!("sluice: {}", placement.describe());
        if config.io == Io::Afxdp {
            for p in &config.ports {
                let queues = rx_queues(config.node_netns.as_deref(), &p.ifname);
                placement
                    .check_queues(&p.ifname, queues)
                    .map_err(StartError::Placement)?;
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
        let places = placement.places().to_vec();
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
            live: places.iter().map(|_| LiveSlot::default()).collect(),
            seen: places.iter().map(|_| SeenSlot::default()).collect(),
        });
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
        let (command_tx, command_rx): (Vec<_>, Vec<_>) = places
            .iter()
            .map(|_| mpsc::channel::<WorkerCommand>())
            .unzip();
        let openers: Openers = Arc::new(std::sync::Mutex::new(
            (0..places.len()).map(|_| None).collect(),
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
                    for (place, rx) in places.into_iter().zip(command_rx) {
                        let w = place.worker;
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
                                    worker_main(place, &config, &shared, ready, commands)
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
        let publisher = Publisher::new(
            shared.clone(),
            host_addrs,
            &config.services,
            pods,
            spare,
            left_out,
        );
        let ports = Ports {
            inner: Arc::new(PortsInner {
                io: config.io,
                node_netns: config.node_netns.clone(),
                max_pods: config.max_pods,
                placement: placement.clone(),
                publisher: publisher.clone(),
                openers,
                state: std::sync::Mutex::new(PortsState::new(registry, command_tx)),
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
    /// What the admin socket answers about.
    pub fn handles(&self) -> crate::admin::Handles {
        crate::admin::Handles {
            ports: self.ports(),
            observer: self.observer(),
            publisher: self.publisher(),
        }
    }

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
