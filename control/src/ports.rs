//! The node's pod ports while the daemon runs: the CNI plugin registers a
//! pod's host end over the admin socket, every worker opens its queue of
//! it, and the pod's addresses are routed to it; a pod deleted is undone
//! in the other order (routes first, then sockets), so that no frame is
//! routed to a socket that is gone.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use sluice_dataplane::io::PortError as IoPortError;
use sluice_dataplane::route::PortId;
use sluice_dataplane::Addr;

use crate::config::{Io, PortConfig};
use crate::host_xdp::detach_xdp;
use crate::publish::Publisher;

/// What a worker does between batches of rounds, for the control side.
pub enum WorkerCommand {
    Attach {
        slot: usize,
        ifname: String,
        reply: mpsc::Sender<Result<(), IoPortError>>,
    },
    /// A socket the control side opened on the worker's UMEM.
    Install {
        slot: usize,
        port: Box<dyn std::any::Any + Send>,
        reply: mpsc::Sender<Result<(), IoPortError>>,
    },
    Detach {
        slot: usize,
        reply: mpsc::Sender<bool>,
    },
}

/// Opens an interface on a worker's UMEM from the calling thread.
pub type Opener = Box<dyn Fn(&str) -> Result<Box<dyn std::any::Any + Send>, IoPortError> + Send>;

/// Each worker's opener, once it has one (AF_XDP with a shared UMEM).
pub type Openers = Arc<Mutex<Vec<Option<Opener>>>>;

/// What a worker hears from the control side.
pub struct WorkerControl {
    pub rx: mpsc::Receiver<WorkerCommand>,
    pub openers: Openers,
}

/// A port as registered: its configuration and who asked for it (the CNI
/// plugin's container id and interface; `None` for ports given on the
/// command line).
#[derive(Clone, Debug)]
pub struct Registered {
    pub port: PortConfig,
    pub owner: Option<String>,
}

pub use sluice_admin::Attached;

/// Why a port was not attached or detached.
#[derive(Debug, PartialEq, Eq)]
pub enum PortError {
    /// Another owner holds this interface.
    InterfaceTaken {
        ifname: String,
        owner: Option<String>,
    },
    /// Another port is routed this address.
    AddressTaken {
        addr: IpAddr,
        ifname: String,
    },
    /// This daemon's backend cannot take ports while it runs.
    Unsupported(String),
    /// A worker could not open its queue of the interface (the others
    /// were closed again).
    Worker {
        worker: usize,
        reason: IoPortError,
    },
    /// A worker did not answer in time, or has stopped.
    NoAnswer {
        worker: usize,
    },
    /// The interface is being attached or detached by an earlier request
    /// that has not finished.
    Busy {
        ifname: String,
    },
    NoSlot,
    /// The interface has no queue for some worker.
    Queues(crate::placement::PlacementError),
    /// The node has `max` pods attached, its --max-pods.
    MaxPods {
        max: usize,
    },
}

impl std::fmt::Display for PortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortError::InterfaceTaken { ifname, owner } => write!(
                f,
                "interface {ifname} is attached already, for {}",
                owner.as_deref().unwrap_or("the command line")
            ),
            PortError::AddressTaken { addr, ifname } => {
                write!(f, "address {addr} is routed to {ifname} already")
            }
            PortError::Unsupported(why) => f.write_str(why),
            PortError::Worker { worker, reason } => write!(f, "worker {worker}: {reason}"),
            PortError::NoAnswer { worker } => {
                write!(f, "worker {worker} did not answer within 10 s")
            }
            PortError::NoSlot => f.write_str("every node port number is taken"),
            PortError::Queues(e) => e.fmt(f),
            PortError::Busy { ifname } => write!(
                f,
                "interface {ifname} is being attached by an earlier request that has not finished; try again"
            ),
            PortError::MaxPods { max } => write!(
                f,
                "the node has {max} pods attached, its limit (sluice run --max-pods {max}); delete a pod or restart the daemon with a larger --max-pods"
            ),
        }
    }
}

impl std::error::Error for PortError {}

pub(crate) struct PortsState {
    pub registry: BTreeMap<u16, Registered>,
    /// Ports being attached: their numbers, interfaces and addresses are
    /// taken, and they are not routed yet.
    pub attaching: BTreeMap<u16, Registered>,
    /// Numbers of ports being detached: free once every worker has closed
    /// its socket.
    pub closing: std::collections::BTreeSet<u16>,
    /// Counts changes to `registry`: the version `Publisher::publish_pods`
    /// is given, so that an older registry never replaces a newer.
    pub version: u64,
    pub commands: Vec<mpsc::Sender<WorkerCommand>>,
}

impl PortsState {
    pub(crate) fn new(
        registry: BTreeMap<u16, Registered>,
        commands: Vec<mpsc::Sender<WorkerCommand>>,
    ) -> PortsState {
        PortsState {
            registry,
            attaching: BTreeMap::new(),
            closing: Default::default(),
            version: 0,
            commands,
        }
    }
}

pub(crate) struct PortsInner {
    pub io: Io,
    pub node_netns: Option<String>,
    pub max_pods: usize,
    /// Which worker owns which queue: every interface attached has one
    /// for each.
    pub placement: crate::placement::Placement,
    pub publisher: Publisher,
    pub openers: Openers,
    /// Held only to read or change the registry: never while a worker is
    /// asked something, nor across a shell-out or a publication (the lock
    /// order is in `state`).
    pub state: Mutex<PortsState>,
}

/// A handle on the daemon's ports, for the admin socket's thread.
#[derive(Clone)]
pub struct Ports {
    pub(crate) inner: Arc<PortsInner>,
}

const ANSWER: Duration = Duration::from_secs(10);

impl Ports {
    /// The ports attached now, by port number.
    pub fn attached(&self) -> Vec<Attached> {
        let st = self.lock();
        st.registry
            .iter()
            .map(|(&port, r)| Attached {
                port,
                ifname: r.port.ifname.clone(),
                addrs: r.port.addrs.iter().map(|a| a.ip()).collect(),
                mac: sluice_cni::link::mac_str(r.port.mac),
                owner: r.owner.clone(),
            })
            .collect()
    }

    /// How many workers (each opens one queue of every port): an interface
    /// needs that many queues.
    pub fn workers(&self) -> usize {
        self.lock().commands.len()
    }

    pub fn io(&self) -> Io {
        self.inner.io
    }

    /// Pods attached at most (`--max-pods`).
    pub fn max_pods(&self) -> usize {
        self.inner.max_pods
    }

    /// Attaches `port` for `owner`: every worker opens its queue of the
    /// interface, then the pod's addresses are routed to it. Asked again
    /// by the same owner for the same interface and addresses (a runtime
    /// retrying), it answers with the port it has.
    pub fn attach(&self, port: PortConfig, owner: Option<String>) -> Result<u16, PortError> {
        if self.inner.io != Io::Afxdp {
            return Err(PortError::Unsupported(format!(
                "this daemon runs --io {}: its pod interfaces are fixed when it starts (AF_XDP takes pods while it runs)",
                self.inner.io
            )));
        }
        let (slot, commands) = {
            let mut st = self.lock();
            for (&n, r) in &st.registry {
                if r.port.ifname == port.ifname {
                    if r.owner == owner && r.port.addrs == port.addrs && r.port.mac == port.mac {
                        return Ok(n);
                    }
                    return Err(PortError::InterfaceTaken {
                        ifname: port.ifname,
                        owner: r.owner.clone(),
                    });
                }
            }
            if st.attaching.values().any(|r| r.port.ifname == port.ifname) {
                return Err(PortError::Busy {
                    ifname: port.ifname,
                });
            }
            for r in st.registry.values().chain(st.attaching.values()) {
                if let Some(&a) = r.port.addrs.iter().find(|a| port.addrs.contains(a)) {
                    return Err(PortError::AddressTaken {
                        addr: a.ip(),
                        ifname: r.port.ifname.clone(),
                    });
                }
            }
            if st.registry.len() + st.attaching.len() >= self.inner.max_pods {
                return Err(PortError::MaxPods {
                    max: self.inner.max_pods,
                });
            }
            // The lowest free number: a detached port's number is free once
            // every worker has closed its socket.
            let slot = (0..u16::MAX)
                .find(|n| {
                    !st.registry.contains_key(n)
                        && !st.attaching.contains_key(n)
                        && !st.closing.contains(n)
                })
                .ok_or(PortError::NoSlot)?;
            st.attaching.insert(
                slot,
                Registered {
                    port: port.clone(),
                    owner: owner.clone(),
                },
            );
            (slot, st.commands.clone())
        };
        // Unlocked from here: `status` and other requests go on while the
        // workers open their sockets.
        let result = self.open_everywhere(slot, &port.ifname, &commands);
        let (routes, version) = {
            let mut st = self.lock();
            st.attaching.remove(&slot);
            result?;
            st.registry.insert(slot, Registered { port, owner });
            st.version += 1;
            (routes_of(&st.registry), st.version)
        };
        let published = self.inner.publisher.publish_pods(routes, version);
        // Answered once the workers route to the pod: its first packet
        // (a runtime's readiness probe) is not dropped as unroutable.
        if !self
            .inner
            .publisher
            .wait_loaded(published.generation, Duration::from_secs(1))
        {
            eprintln!(
                "sluice: attached port {slot} but a worker has not loaded its routes within 1 s"
            );
        }
        Ok(slot)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PortsState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every worker opens its queue of `ifname` as port `slot`; if one
    /// cannot, those that did close theirs again. Holds no lock.
    fn open_everywhere(
        &self,
        slot: u16,
        ifname: &str,
        commands: &[mpsc::Sender<WorkerCommand>],
    ) -> Result<(), PortError> {
        let queues = crate::host_xdp::rx_queues(self.inner.node_netns.as_deref(), ifname);
        self.inner
            .placement
            .check_queues(ifname, queues)
            .map_err(PortError::Queues)?;
        if detach_xdp(self.inner.node_netns.as_deref(), ifname) {
            eprintln!("sluice: replaced a stale XDP program on {ifname} before attaching it");
        }
        let mut opened = Vec::new();
        let mut failure = None;
        for (w, tx) in commands.iter().enumerate() {
            let (reply, answer) = mpsc::channel();
            // Opened here where the worker has an opener, so that it
            // keeps polling while libxdp loads its program; else by the
            // worker between batches.
            let command = match self.open_here(w, ifname) {
                Some(Err(reason)) => {
                    failure = Some(PortError::Worker { worker: w, reason });
                    break;
                }
                Some(Ok(opened)) => WorkerCommand::Install {
                    slot: slot as usize,
                    port: opened,
                    reply,
                },
                None => WorkerCommand::Attach {
                    slot: slot as usize,
                    ifname: ifname.to_string(),
                    reply,
                },
            };
            let sent = tx.send(command);
            match sent.ok().and_then(|_| answer.recv_timeout(ANSWER).ok()) {
                Some(Ok(())) => opened.push(w),
                Some(Err(reason)) => {
                    failure = Some(PortError::Worker { worker: w, reason });
                    break;
                }
                None => {
                    failure = Some(PortError::NoAnswer { worker: w });
                    break;
                }
            }
        }
        let Some(e) = failure else {
            return Ok(());
        };
        for &w in &opened {
            let (reply, answer) = mpsc::channel();
            if commands[w]
                .send(WorkerCommand::Detach {
                    slot: slot as usize,
                    reply,
                })
                .is_ok()
            {
                let _ = answer.recv_timeout(ANSWER);
            }
        }
        detach_xdp(self.inner.node_netns.as_deref(), ifname);
        Err(e)
    }

    /// Opens `ifname` on worker `w`'s UMEM from a thread in the node's
    /// namespace; `None` if the worker has no opener.
    #[allow(clippy::type_complexity)]
    fn open_here(
        &self,
        w: usize,
        ifname: &str,
    ) -> Option<Result<Box<dyn std::any::Any + Send>, IoPortError>> {
        let opener = self
            .inner
            .openers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(w)?
            .take()?;
        let netns = self.inner.node_netns.clone();
        let name = ifname.to_string();
        let t = std::time::Instant::now();
        let (opener, result) = std::thread::spawn(move || {
            if let Some(ns) = &netns {
                if let Err(e) = sluice_dataplane::io::tap::enter_netns(ns) {
                    let e = IoPortError::Namespace {
                        netns: ns.clone(),
                        reason: e.to_string(),
                    };
                    return (opener, Err(e));
                }
            }
            let r = opener(&name);
            (opener, r)
        })
        .join()
        .ok()?;
        eprintln!(
            "sluice: opened {ifname} for worker {w} in {:.1} ms, off the worker's thread",
            t.elapsed().as_secs_f64() * 1e3
        );
        if let Some(slot) = self
            .inner
            .openers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(w)
        {
            *slot = Some(opener);
        }
        Some(result)
    }

    /// Detaches the port on `ifname`: its routes go first, then every
    /// worker closes its socket. Returns the port it had, `None` if the
    /// interface was not attached (a repeated DEL).
    pub fn detach(&self, ifname: &str) -> Result<Option<u16>, PortError> {
        let (slot, commands, routes, version) = {
            let mut st = self.lock();
            let Some(slot) = st
                .registry
                .iter()
                .find(|(_, r)| r.port.ifname == ifname)
                .map(|(&n, _)| n)
            else {
                return Ok(None);
            };
            st.registry.remove(&slot);
            st.closing.insert(slot);
            st.version += 1;
            (
                slot,
                st.commands.clone(),
                routes_of(&st.registry),
                st.version,
            )
        };
        // Published and swapped in before the sockets close; a worker
        // takes commands only between batches, holding no snapshot, so it
        // routes nothing to this port once it has closed it.
        self.inner.publisher.publish_pods(routes, version);
        let mut result = Ok(Some(slot));
        for (w, tx) in commands.iter().enumerate() {
            let (reply, answer) = mpsc::channel();
            let sent = tx.send(WorkerCommand::Detach {
                slot: slot as usize,
                reply,
            });
            if sent
                .ok()
                .and_then(|_| answer.recv_timeout(ANSWER).ok())
                .is_none()
            {
                result = Err(PortError::NoAnswer { worker: w });
            }
        }
        self.lock().closing.remove(&slot);
        if self.inner.io == Io::Afxdp {
            detach_xdp(self.inner.node_netns.as_deref(), ifname);
        }
        result
    }
}

impl Ports {
    /// Re-attaches what sluice-cni wired before this daemon started (a
    /// restart, a crash): every container interface in the plugin's store
    /// for `network` whose host end still exists. Those whose veth is gone
    /// are left to the runtime's DEL or GC. Returns the interfaces
    /// attached and the problems met.
    pub fn reattach(&self, data_dir: &std::path::Path, network: &str) -> (usize, Vec<String>) {
        use sluice_cni::{ipam, link};
        let dir = data_dir.join(network);
        if !dir.exists() {
            return (0, Vec::new());
        }
        // Held while attaching, so that an ADD or DEL in the meantime
        // waits and sees the ports as they are after.
        let store = match ipam::Store::lock(data_dir, network) {
            Ok(s) => s,
            Err(e) => return (0, vec![e.to_string()]),
        };
        let mut owners: BTreeMap<(String, String), Vec<IpAddr>> = BTreeMap::new();
        for (ip, o) in store.allocations() {
            owners
                .entry((o.container_id, o.ifname))
                .or_default()
                .push(ip);
        }
        let mut attached = 0;
        let mut problems = Vec::new();
        for ((id, ifname), mut addrs) in owners {
            let host = link::host_name(&id, &ifname);
            if !self.exists(&host) {
                continue;
            }
            addrs.sort_by_key(|a| a.is_ipv6());
            let port = PortConfig {
                ifname: host.clone(),
                netns: None,
                addrs: addrs.iter().map(|&a| Addr::from_ip(a)).collect(),
                mac: link::mac_for(addrs[0]),
            };
            match self.attach(port, Some(format!("{id}/{ifname}"))) {
                Ok(_) => attached += 1,
                Err(e) => problems.push(format!("{host} ({id}/{ifname}): {e}")),
            }
        }
        (attached, problems)
    }

    /// Whether `ifname` exists in the node's namespace (its index, from a
    /// thread in that namespace; no `ip` to run and parse).
    fn exists(&self, ifname: &str) -> bool {
        let (ns, name) = (self.inner.node_netns.clone(), ifname.to_string());
        std::thread::spawn(move || {
            if let Some(ns) = &ns {
                if sluice_dataplane::io::tap::enter_netns(ns).is_err() {
                    return false;
                }
            }
            let Ok(c) = std::ffi::CString::new(name) else {
                return false;
            };
            // SAFETY: `c` is NUL-terminated and outlives the call.
            unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
        })
        .join()
        .unwrap_or(false)
    }
}

pub(crate) fn routes_of(registry: &BTreeMap<u16, Registered>) -> Vec<(Addr, PortId, [u8; 6])> {
    registry
        .iter()
        .flat_map(|(&n, r)| {
            r.port
                .addrs
                .iter()
                .map(move |&a| (a, PortId(n), r.port.mac))
        })
        .collect()
}
