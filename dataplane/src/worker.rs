//! A worker: one thread's loop over its ports, shaped like DPDK's l3fwd.
//! Receive a burst per port, decide every frame (`node::handle`), stage the
//! transmissions per egress port, flush, and go round again until the stop
//! flag is raised. The per-core state (counters, fragment table, burst
//! scratch) is the worker's alone.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::counters::Counters;
use crate::io::{Backend, Frame, HostPath};
use crate::node::{handle, Action, Ingress, NodeTables};
use crate::pipeline::{Worker as PipelineWorker, BURST};
use crate::route::{Egress, PortId};

/// A busy worker reads the host's TAP every this many rounds (and every
/// round while the host is sending).
const HOST_EVERY: u32 = 16;

/// How node ports map to the backend's ports. Validated at start: every
/// pod port must name a backend port, the uplink too.
#[derive(Clone, Debug)]
pub struct PortMap {
    /// `pods[i]` is the backend port of node port `PortId(i)`.
    pods: Vec<Option<usize>>,
    /// `ingress[b]`: where a frame from backend port `b` comes from.
    ingress: Vec<Ingress>,
    uplink: Option<usize>,
}

/// Why a port map was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortMapError {
    /// A node port names a backend port that does not exist.
    NoSuchPort {
        node_port: u16,
        backend_port: usize,
        ports: usize,
    },
    /// Two node ports on one backend port.
    Shared { backend_port: usize },
}

impl std::fmt::Display for PortMapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortMapError::NoSuchPort {
                node_port,
                backend_port,
                ports,
            } => {
                write!(f, "node port {node_port} maps to backend port {backend_port}, but the backend has {ports}")
            }
            PortMapError::Shared { backend_port } => {
                write!(f, "backend port {backend_port} is mapped twice")
            }
        }
    }
}

impl PortMap {
    /// `pods` pairs node ports with backend ports; `uplink` is where
    /// uplink-bound traffic leaves (`None`: it is dropped, counted).
    pub fn new(
        pods: &[(PortId, usize)],
        uplink: Option<usize>,
        backend_ports: usize,
    ) -> Result<PortMap, PortMapError> {
        let mut map = vec![
            None;
            pods.iter()
                .map(|(p, _)| usize::from(p.0) + 1)
                .max()
                .unwrap_or(0)
        ];
        let mut used = vec![false; backend_ports];
        // A backend port no node port names carries nothing routable here:
        // its frames are held to the strictest source check (no pod's).
        let mut ingress = vec![Ingress::Pod(PortId(u16::MAX)); backend_ports];
        for &(PortId(node_port), backend_port) in pods
            .iter()
            .chain(uplink.map(|u| (PortId(u16::MAX), u)).iter())
        {
            if backend_port >= backend_ports {
                return Err(PortMapError::NoSuchPort {
                    node_port,
                    backend_port,
                    ports: backend_ports,
                });
            }
            if std::mem::replace(&mut used[backend_port], true) {
                return Err(PortMapError::Shared { backend_port });
            }
            if node_port != u16::MAX {
                map[usize::from(node_port)] = Some(backend_port);
                ingress[backend_port] = Ingress::Pod(PortId(node_port));
            } else {
                ingress[backend_port] = Ingress::Uplink;
            }
        }
        Ok(PortMap {
            pods: map,
            ingress,
            uplink,
        })
    }

    /// Where frames from backend port `b` come from.
    #[inline]
    fn ingress(&self, b: usize) -> Ingress {
        self.ingress
            .get(b)
            .copied()
            .unwrap_or(Ingress::Pod(PortId(u16::MAX)))
    }

    fn egress(&self, e: Egress) -> Option<usize> {
        match e {
            Egress::Pod { port, .. } => self.pods.get(usize::from(port.0)).copied().flatten(),
            Egress::Uplink => self.uplink,
            // VXLAN encapsulation comes with multi-node: until then a frame
            // for another node has no way out, and is counted.
            Egress::Tunnel { .. } => None,
            Egress::Host => None,
        }
    }
}

/// A staging vector per port, each with room for a burst from every port
/// and one from the host, all to one port at worst: staging never
/// allocates.
fn staging(ports: usize) -> Vec<Vec<Frame>> {
    (0..ports)
        .map(|_| Vec::with_capacity(BURST * (ports + 1)))
        .collect()
}

/// Counters of the loop itself, beside the pipeline's.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LoopCounters {
    pub bursts: u64,
    pub tx: u64,
    /// A TX ring was full: the frame was dropped (expected 0 but under
    /// overload).
    pub tx_full: u64,
    /// No frame left in the pool for a reply (expected 0: the pool is sized
    /// for a burst per port plus the rings).
    pub pool_empty: u64,
    /// Frames whose egress has no port here (another node, before VXLAN).
    pub no_egress: u64,
    /// Frames written to the host (the exception path), and read from it.
    pub host_tx: u64,
    pub host_rx: u64,
    /// Frames for the host that it refused, or that had no host path.
    pub host_refused: u64,
    pub no_host: u64,
    /// Frames from the host that the pipeline sent back to the host (a
    /// loop, dropped).
    pub host_loop: u64,
    /// The longest time from one round to the next (naps left out), and
    /// the rounds that came more than 1 ms after the last: a worker that
    /// lost its core while its rings filled.
    pub longest_gap_ns: u64,
    pub slow_rounds: u64,
}

impl LoopCounters {
    fn count_host_send(&mut self, sent: bool) {
        if sent {
            self.host_tx += 1;
        } else {
            self.host_refused += 1;
        }
    }
}

/// What a worker does when a round finds nothing: spin (it owns its core),
/// or after `spin_rounds` empty rounds sleep `sleep` between rounds, for
/// cores that a lab shares with the pods' own processes,.
#[derive(Clone, Copy, Debug)]
pub struct Idle {
    pub spin_rounds: u32,
    pub sleep: std::time::Duration,
}

impl Idle {
    pub const BUSY: Idle = Idle {
        spin_rounds: u32::MAX,
        sleep: std::time::Duration::ZERO,
    };
}

pub struct Worker<B: Backend> {
    pub backend: B,
    pub map: PortMap,
    pub pipeline: PipelineWorker,
    pub counters: LoopCounters,
    /// The exception path, on the one worker (or each) that has a queue of
    /// the host's TAP.
    pub host: Option<Box<dyn HostPath>>,
    /// Rounds polled, and whether the host gave frames last time: reading
    /// the host's TAP is a syscall, so a busy worker reads it every
    /// `HOST_EVERY` rounds unless the host is sending.
    rounds: u32,
    host_hot: bool,
    last_round: Option<std::time::Instant>,
    staged: Vec<Vec<Frame>>,
    reply: Vec<u8>,
}

impl<B: Backend> Worker<B> {
    pub fn new(backend: B, map: PortMap) -> Worker<B> {
        let ports = backend.ports();
        Worker {
            backend,
            map,
            pipeline: PipelineWorker::default(),
            counters: LoopCounters::default(),
            host: None,
            rounds: 0,
            host_hot: false,
            last_round: None,
            staged: staging(ports),
            reply: vec![0; 2048],
        }
    }

    /// Opens `ifname` as node port `slot` (`PortId(slot)`), between
    /// rounds: the staging room is made for one more port.
    pub fn attach(&mut self, slot: usize, ifname: &str) -> Result<(), String> {
        self.backend.attach(slot, ifname)?;
        self.ports_changed();
        Ok(())
    }

    /// Installs a port opened on another thread as node port `slot`.
    pub fn install(
        &mut self,
        slot: usize,
        port: Box<dyn std::any::Any + Send>,
    ) -> Result<(), String> {
        self.backend.install(slot, port)?;
        self.ports_changed();
        Ok(())
    }

    /// Closes node port `slot`, between rounds (nothing is staged then).
    pub fn detach(&mut self, slot: usize) -> bool {
        let had = self.backend.detach(slot);
        self.ports_changed();
        had
    }

    /// Node port `i` is backend port `i`, for every port the backend has;
    /// the uplink stays where it was.
    fn ports_changed(&mut self) {
        let n = self.backend.ports();
        let uplink = self.map.uplink.filter(|&u| u < n);
        let pods: Vec<(PortId, usize)> = (0..n)
            .filter(|&i| Some(i) != uplink)
            .map(|i| (PortId(i as u16), i))
            .collect();
        if let Ok(m) = PortMap::new(&pods, uplink, n) {
            self.map = m;
        }
        if self.staged.len() != n {
            self.staged = staging(n);
        }
    }

    /// The pipeline's counters.
    pub fn packet_counters(&self) -> &Counters {
        &self.pipeline.counters
    }

    /// One round: a burst from every port, decided, transmitted. Returns
    /// how many frames it received.
    pub fn poll(&mut self, t: &NodeTables<'_>) -> usize {
        self.pipeline.tick(t.pipeline.conntrack);
        let mut got = 0;
        let mut burst = [Frame { index: 0, len: 0 }; BURST];
        for port in 0..self.backend.ports() {
            let n = self.backend.rx(port, &mut burst);
            if n == 0 {
                continue;
            }
            got += n;
            self.counters.bursts += 1;
            let ingress = self.map.ingress(port);
            for &f in &burst[..n] {
                let (pipeline, reply) = (&mut self.pipeline, &mut self.reply);
                let action = self
                    .backend
                    .with_bytes(f, |bytes| handle(bytes, ingress, t, pipeline, reply));
                self.withdraw_if_stuck(t, action, false);
                self.act(port, f, action);
            }
        }
        self.rounds = self.rounds.wrapping_add(1);
        if self.host.is_some() && (self.host_hot || self.rounds.is_multiple_of(HOST_EVERY)) {
            let n = self.poll_host(t);
            self.host_hot = n > 0;
            got += n;
        }
        for port in 0..self.staged.len() {
            if self.staged[port].is_empty() {
                continue;
            }
            let sent = self.backend.tx(port, &self.staged[port]);
            self.counters.tx += sent as u64;
            for &f in &self.staged[port][sent..] {
                self.counters.tx_full += 1;
                self.backend.free(f);
            }
            self.staged[port].clear();
        }
        self.backend.flush();
        got
    }

    /// A new flow whose first frame has no way out of this node (a backend
    /// on another node before the overlay, no uplink) is withdrawn from
    /// conntrack: it would hold an entry for a flow that never left.
    /// So is one for the host that cannot reach it (no host path here, or
    /// the host's own frame that would go straight back: a loop).
    #[inline]
    fn withdraw_if_stuck(&mut self, t: &NodeTables<'_>, action: Action, from_host: bool) {
        if let Some(e) = self.pipeline.created.take() {
            let stuck = match action {
                Action::Transmit(eg) => self.map.egress(eg).is_none(),
                Action::ToHost => from_host || self.host.is_none(),
                Action::Reply(_) | Action::Drop(_) => false,
            };
            if stuck {
                t.pipeline.conntrack.forget(e);
            }
        }
    }

    /// Queues `f` for its egress port, or frees and counts it when the
    /// egress has no port here.
    fn stage(&mut self, e: Egress, f: Frame) {
        match self.map.egress(e) {
            Some(port) => self.staged[port].push(f),
            None => {
                self.counters.no_egress += 1;
                self.backend.free(f);
            }
        }
    }

    fn act(&mut self, ingress: usize, f: Frame, action: Action) {
        match action {
            Action::Transmit(e) => self.stage(e, f),
            Action::Reply(n) => {
                self.backend.free(f);
                let reply = &self.reply[..n];
                match self.backend.alloc_with(|buf| {
                    buf[..n].copy_from_slice(reply);
                    n
                }) {
                    Some(r) => self.staged[ingress].push(r),
                    None => self.counters.pool_empty += 1,
                }
            }
            Action::ToHost => {
                match &mut self.host {
                    Some(h) => {
                        let mac = h.mac();
                        // The frame was addressed to the gateway; the host's
                        // interface takes only frames for its own MAC.
                        let sent = self.backend.with_bytes(f, |b| {
                            if b.len() >= 6 {
                                b[..6].copy_from_slice(&mac);
                            }
                            h.send(b)
                        });
                        self.counters.count_host_send(sent);
                    }
                    None => self.counters.no_host += 1,
                }
                self.backend.free(f);
            }
            Action::Drop(_) => self.backend.free(f),
        }
    }

    /// Frames the host sent, through the same stages as a pod's: its ARP
    /// for the gateway answered, its packets to pods routed, and its
    /// connections to ClusterIPs load-balanced.
    fn poll_host(&mut self, t: &NodeTables<'_>) -> usize {
        // Out of `self` for the loop, so that the staging helpers can take
        // `self`; put back at the end.
        let Some(mut host) = self.host.take() else {
            return 0;
        };
        let mut got = 0;
        while got < BURST {
            let mut len = 0;
            let Some(f) = self.backend.alloc_with(|buf| {
                len = host.recv(buf).unwrap_or(0);
                len
            }) else {
                self.counters.pool_empty += 1;
                break;
            };
            if len == 0 {
                self.backend.free(f);
                break;
            }
            got += 1;
            self.counters.host_rx += 1;
            let (pipeline, reply) = (&mut self.pipeline, &mut self.reply);
            let action = self
                .backend
                .with_bytes(f, |bytes| handle(bytes, Ingress::Host, t, pipeline, reply));
            self.withdraw_if_stuck(t, action, true);
            match action {
                Action::Transmit(e) => self.stage(e, f),
                Action::Reply(n) => {
                    self.backend.free(f);
                    let sent = host.send(&self.reply[..n]);
                    self.counters.count_host_send(sent);
                }
                // The host's ARP (its answers for the node's address, its
                // own questions) belongs on the wire: out of the uplink.
                // Anything else the pipeline would hand back to the host
                // is a loop.
                Action::ToHost => {
                    let arp = self
                        .backend
                        .with_bytes(f, |b| b.get(12..14) == Some(&[0x08, 0x06]));
                    match self.map.uplink {
                        Some(up) if arp => self.staged[up].push(f),
                        _ => {
                            self.counters.host_loop += 1;
                            self.backend.free(f);
                        }
                    }
                }
                Action::Drop(_) => self.backend.free(f),
            }
        }
        self.host = Some(host);
        got
    }

    /// Polls until `stop` is raised, idling as `idle` says when there is
    /// nothing to receive.
    pub fn run(&mut self, t: &NodeTables<'_>, stop: &AtomicBool, idle: Idle) {
        let mut empty = 0u32;
        while !stop.load(Ordering::Relaxed) {
            self.run_rounds(t, 64, &mut empty, idle);
        }
    }

    /// `rounds` rounds of the loop, idling as `idle` says; `empty` carries
    /// the count of empty rounds between calls. For a caller that loads
    /// fresh tables between batches of rounds.
    pub fn run_rounds(&mut self, t: &NodeTables<'_>, rounds: u32, empty: &mut u32, idle: Idle) {
        for _ in 0..rounds {
            // One clock read a round (vDSO, no syscall): the gap since the
            // last round is the stall that a full ring would explain.
            let now = std::time::Instant::now();
            if let Some(prev) = self.last_round.replace(now) {
                let gap = (now - prev).as_nanos() as u64;
                self.counters.longest_gap_ns = self.counters.longest_gap_ns.max(gap);
                if gap > 1_000_000 {
                    self.counters.slow_rounds += 1;
                }
            }
            if self.poll(t) > 0 {
                *empty = 0;
                continue;
            }
            *empty = empty.saturating_add(1);
            if idle.sleep.is_zero() || *empty < idle.spin_rounds {
                std::hint::spin_loop();
            } else {
                // A round after a nap costs a syscall anyway: it reads the
                // host too, so the host waits no longer than a pod.
                self.host_hot = true;
                std::thread::sleep(idle.sleep);
                self.last_round = None;
            }
        }
    }
}
