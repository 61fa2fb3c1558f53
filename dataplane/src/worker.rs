//! A worker: one core's loop over its ports, shaped like DPDK's l3fwd.
//! Receive a burst per port, decide it with the burst function
//! (`pipeline::decide`), stage the transmissions per egress port, hand
//! each port's staged frames to its TX ring once per round, and go round
//! again until the stop flag is raised.
//!
//! `Worker` is the per-core context: its backend (ports, rings, pool), the
//! port map, the pipeline's `Core` (counters, fragment table, burst
//! scratch), the TX staging and the loop's counters. None of it is shared.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::counters::Counters;
use crate::decode::{decode, Decoded};
use crate::drop::DropReason;
use crate::flow::Family;
use crate::icmp_error::{self, IcmpError};
use crate::io::{Backend, Frame, HostPath, PortError};
use crate::pipeline::{decide, Action, Answer, Core, Ingress, Tables, BURST, REPLY_MAX};
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

/// Frames a port's staging holds before they are handed to its TX ring
/// early, within the round: staging stays small with hundreds of ports.
const STAGE_MAX: usize = 2 * BURST;

/// What a staged frame is, for the count once its TX ring takes it.
#[derive(Clone, Copy, Debug)]
enum Sent {
    Forwarded,
    Answer(Answer),
}

/// A port's frames waiting for its TX ring, and what each is.
struct Staged {
    frames: Vec<Frame>,
    sent: Vec<Sent>,
}

impl Staged {
    fn new() -> Staged {
        Staged {
            frames: Vec::with_capacity(STAGE_MAX),
            sent: Vec::with_capacity(STAGE_MAX),
        }
    }
}

/// Counters of the loop itself, beside the pipeline's (which count every
/// frame's outcome, including the loop's drops: `no_egress`,
/// `tx_ring_full`, `pool_empty`, `no_host_path`, `host_refused`,
/// `host_loop`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LoopCounters {
    /// Bursts received (from pods, the uplink and the host).
    pub bursts: u64,
    /// Frames handed to TX rings: forwarded frames and answers.
    pub tx: u64,
    /// Frames written to the host (the exception path), and read from it.
    pub host_tx: u64,
    pub host_rx: u64,
    /// The longest time from one round to the next (naps left out), and
    /// the rounds that came more than 1 ms after the last: a worker that
    /// lost its core while its rings filled.
    pub longest_gap_ns: u64,
    pub slow_rounds: u64,
    /// Held later fragments whose first never came in time (`hold`).
    pub held_expired: u64,
}

/// What a worker does when a round finds nothing: spin (it owns its core),
/// or after `spin_rounds` empty rounds sleep `sleep` between rounds, for
/// cores that a lab shares with the pods' own processes.
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

mod hold;

/// Later fragments a worker holds at once, waiting for their first.
pub const HOLD_SLOTS: usize = hold::SLOTS;

/// Where the burst being acted on came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Port(usize),
    Host,
}

pub struct Worker<B: Backend> {
    pub backend: B,
    pub map: PortMap,
    /// What the burst function keeps per core.
    pub core: Core,
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
    /// The burst in hand and its actions.
    burst: Vec<Frame>,
    actions: [Action; BURST],
    staged: Vec<Staged>,
    /// Ports with staged frames, each once: a round visits only these.
    dirty: Vec<usize>,
    /// Later fragments waiting for their first.
    hold: hold::Hold,
    /// The ICMP errors the loop wrote about frames too big for their port,
    /// to go through the burst function (which translates and routes
    /// them) at the end of the round.
    too_big: Vec<Frame>,
    scratch: Box<[u8; REPLY_MAX]>,
}

impl<B: Backend> Worker<B> {
    pub fn new(backend: B, map: PortMap) -> Worker<B> {
        let ports = backend.ports();
        let mut core = Core::default();
        core.hold_fragments();
        Worker {
            backend,
            map,
            core,
            counters: LoopCounters::default(),
            host: None,
            rounds: 0,
            host_hot: false,
            last_round: None,
            burst: Vec::with_capacity(BURST),
            actions: [Action::ToHost; BURST],
            staged: (0..ports).map(|_| Staged::new()).collect(),
            dirty: Vec::with_capacity(ports),
            hold: hold::Hold::default(),
            too_big: Vec::with_capacity(BURST),
            scratch: Box::new([0; REPLY_MAX]),
        }
    }

    /// Opens `ifname` as node port `slot` (`PortId(slot)`), between
    /// rounds: the staging room is made for one more port.
    pub fn attach(&mut self, slot: usize, ifname: &str) -> Result<(), PortError> {
        self.backend.attach(slot, ifname)?;
        self.ports_changed();
        Ok(())
    }

    /// Installs a port opened on another thread as node port `slot`.
    pub fn install(
        &mut self,
        slot: usize,
        port: Box<dyn std::any::Any + Send>,
    ) -> Result<(), PortError> {
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
        while self.staged.len() < n {
            self.staged.push(Staged::new());
        }
        if self.dirty.capacity() < n {
            self.dirty.reserve(n - self.dirty.len());
        }
    }

    /// The pipeline's counters.
    pub fn packet_counters(&self) -> &Counters {
        &self.core.counters
    }

    /// One round: a burst from every port, decided, transmitted. Returns
    /// how many frames it received.
    pub fn poll(&mut self, t: &Tables<'_>) -> usize {
        self.core.tick(t.conntrack);
        let mut got = 0;
        for port in 0..self.backend.ports() {
            let n = self.backend.rx(port, &mut self.burst, BURST);
            if n == 0 {
                continue;
            }
            got += n;
            self.counters.bursts += 1;
            self.decide_burst(self.map.ingress(port), t);
            self.act(Source::Port(port), t);
        }
        self.rounds = self.rounds.wrapping_add(1);
        if self.host.is_some() && (self.host_hot || self.rounds.is_multiple_of(HOST_EVERY)) {
            let n = self.poll_host(t);
            self.host_hot = n > 0;
            got += n;
        }
        if !self.hold.is_empty() {
            self.release_held(t);
        }
        if !self.too_big.is_empty() {
            self.burst.append(&mut self.too_big);
            self.decide_burst(Ingress::Host, t);
            self.act(Source::Host, t);
        }
        while let Some(port) = self.dirty.pop() {
            self.send(port);
        }
        self.backend.flush();
        got
    }

    /// The burst in hand through the burst function.
    fn decide_burst(&mut self, ingress: Ingress, t: &Tables<'_>) {
        let n = self.burst.len();
        let (core, actions) = (&mut self.core, &mut self.actions[..n]);
        self.backend.with_burst(&self.burst, |bytes| {
            decide(bytes, ingress, t, core, actions)
        });
    }

    /// Does what the burst function decided for each frame of the burst in
    /// hand, and counts the outcomes known now (the ones that wait for a
    /// ring are counted by `send`).
    fn act(&mut self, from: Source, t: &Tables<'_>) {
        let mut frames = std::mem::take(&mut self.burst);
        for (i, f) in frames.drain(..).enumerate() {
            match self.actions[i] {
                Action::Transmit(e) => match self.map.egress(e) {
                    Some(port) if self.fits(port, &f) => self.stage(port, f, Sent::Forwarded),
                    Some(port) => self.frag_needed(i, f, port, t),
                    None => {
                        // A new flow whose first frame has no way out of
                        // this node (a backend on another node before the
                        // overlay, no uplink) holds no entry.
                        self.core.withdraw(t.conntrack, i);
                        self.gone(f, DropReason::NoEgress);
                    }
                },
                Action::Reply { len, answer } => self.answer(from, i, f, len, answer),
                Action::ToHost => self.for_host(from, i, f, t),
                Action::Drop(_) => self.backend.free(f),
                Action::Hold => self.hold_fragment(from, f),
            }
        }
        self.burst = frames;
    }

    /// Whether frame `f` fits `port`'s MTU (always, when it is unknown).
    #[inline]
    fn fits(&mut self, port: usize, f: &Frame) -> bool {
        let mtu = usize::from(self.backend.mtu(port).unwrap_or(0));
        // Ethernet's 14 bytes, or 18 with a VLAN tag: only a frame past
        // the first bound is looked at.
        mtu == 0
            || f.len() <= mtu + 14
            || (f.len() <= mtu + 18
                && self
                    .backend
                    .with_bytes(f, |b| b.get(12..14) == Some(&[0x81, 0x00])))
    }

    /// A frame too big for its egress port, as a router does with it: not
    /// sent (`mtu_exceeded`), and, if it may not be fragmented (IPv4 with
    /// DF, any IPv6), answered with fragmentation-needed / packet-too-big
    /// from the gateway, carrying the port's MTU. The answer quotes the
    /// frame as it is now, after NAT; it goes through the burst function
    /// at the end of the round, which translates it back for its sender
    /// (`icmp_related`) and routes it there.
    #[cold]
    #[inline(never)]
    fn frag_needed(&mut self, i: usize, f: Frame, port: usize, t: &Tables<'_>) {
        let mtu = self.backend.mtu(port).unwrap_or(0);
        let gw = t.gateway;
        let (backend, scratch) = (&mut self.backend, &mut self.scratch);
        let n = backend.with_bytes(&f, |b| {
            let Ok(Decoded::Ip(p)) = decode(b) else {
                return None;
            };
            let l3 = p.l3 as usize;
            let df = p.family == Family::V6 || b.get(l3 + 6).is_some_and(|f| f & 0x40 != 0);
            if !df {
                return None;
            }
            let kind = IcmpError::TooBig { mtu };
            icmp_error::write(
                b,
                l3,
                p.family,
                kind,
                gw.addr(p.family),
                &gw,
                &mut scratch[..],
            )
        });
        self.core.withdraw(t.conntrack, i);
        self.gone(f, DropReason::MtuExceeded);
        let Some(n) = n else { return };
        if self.too_big.len() >= BURST {
            return;
        }
        let scratch = &self.scratch;
        // No frame for the answer: the sender retransmits, and asks again.
        if let Some(g) = self.backend.alloc_with(|buf| {
            buf[..n].copy_from_slice(&scratch[..n]);
            n
        }) {
            self.too_big.push(g);
        }
    }

    /// Holds a copy of a later fragment that came before its first.
    fn hold_fragment(&mut self, from: Source, f: Frame) {
        let ingress = match from {
            Source::Port(p) => self.map.ingress(p),
            Source::Host => Ingress::Host,
        };
        let now = self.core.now_ms;
        let (backend, hold) = (&mut self.backend, &mut self.hold);
        if backend.with_bytes(&f, |b| hold.put(from, ingress, now, b)) {
            self.core.counters.held += 1;
            self.backend.free(f);
        } else {
            self.gone(f, DropReason::FragmentHoldFull);
        }
    }

    /// Gives the held fragments whose first has passed back to the burst
    /// function, each a burst of one from where it came; frees those that
    /// waited too long.
    fn release_held(&mut self, t: &Tables<'_>) {
        self.counters.held_expired += self.hold.expire(self.core.now_ms);
        while let Some(r) = self.hold.next_ready(&self.core.frags, self.core.now_ms) {
            let (from, ingress, bytes) = (r.from, r.ingress, r.bytes);
            let n = bytes.len();
            let Some(f) = self.backend.alloc_with(|buf| {
                buf[..n].copy_from_slice(bytes);
                n
            }) else {
                // No frame for it: lost, as a drop of its own.
                self.core.counters.drop(DropReason::PoolEmpty);
                self.core.counters.rx += 1;
                continue;
            };
            self.burst.push(f);
            self.decide_burst(ingress, t);
            self.act(from, t);
        }
    }

    /// Frees a frame that goes no further, counted under `r`.
    fn gone(&mut self, f: Frame, r: DropReason) {
        self.core.counters.drop(r);
        self.backend.free(f);
    }

    /// Sends the answer written for frame `i` back where the frame came
    /// from; the frame itself is done with.
    fn answer(&mut self, from: Source, i: usize, f: Frame, len: u16, answer: Answer) {
        self.backend.free(f);
        let reply = self.core.reply(i, len);
        match from {
            Source::Port(port) => {
                let n = reply.len();
                match self.backend.alloc_with(|buf| {
                    buf[..n].copy_from_slice(reply);
                    n
                }) {
                    Some(r) => self.stage(port, r, Sent::Answer(answer)),
                    None => self.core.counters.drop(DropReason::PoolEmpty),
                }
            }
            Source::Host => {
                let sent = self.host.as_mut().is_some_and(|h| h.send(reply));
                if sent {
                    self.counters.host_tx += 1;
                    self.count_sent(Sent::Answer(answer));
                } else {
                    self.core.counters.drop(DropReason::HostRefused);
                }
            }
        }
    }

    /// A frame for the host: through the exception path. From the host
    /// itself, only its ARP (its answers for the node's address, its own
    /// questions) has somewhere to go, out of the uplink; anything else
    /// would go straight back to the host.
    fn for_host(&mut self, from: Source, i: usize, f: Frame, t: &Tables<'_>) {
        if from == Source::Host {
            let arp = self
                .backend
                .with_bytes(&f, |b| b.get(12..14) == Some(&[0x08, 0x06]));
            match self.map.uplink {
                Some(up) if arp => self.stage(up, f, Sent::Forwarded),
                _ => {
                    self.core.withdraw(t.conntrack, i);
                    self.gone(f, DropReason::HostLoop);
                }
            }
            return;
        }
        let Some(h) = &mut self.host else {
            self.core.withdraw(t.conntrack, i);
            self.gone(f, DropReason::NoHostPath);
            return;
        };
        let mac = h.mac();
        // The frame was addressed to the gateway; the host's interface
        // takes only frames for its own MAC.
        let sent = self.backend.with_bytes(&f, |b| {
            if b.len() >= 6 {
                b[..6].copy_from_slice(&mac);
            }
            h.send(b)
        });
        if sent {
            self.counters.host_tx += 1;
            self.core.counters.to_host += 1;
            self.backend.free(f);
        } else {
            self.gone(f, DropReason::HostRefused);
        }
    }

    /// Queues `f` for `port`'s TX ring; a full staging goes to the ring
    /// now.
    fn stage(&mut self, port: usize, f: Frame, what: Sent) {
        let Some(st) = self.staged.get_mut(port) else {
            self.gone(f, DropReason::NoEgress);
            return;
        };
        if st.frames.is_empty() {
            self.dirty.push(port);
        }
        st.frames.push(f);
        st.sent.push(what);
        if st.frames.len() >= STAGE_MAX {
            self.send(port);
        }
    }

    /// Hands `port`'s staged frames to its TX ring, once for all of them;
    /// counts what the ring took as sent and frees the rest as dropped.
    fn send(&mut self, port: usize) {
        let st = &mut self.staged[port];
        if st.frames.is_empty() {
            return;
        }
        let before = st.frames.len();
        self.backend.tx(port, &mut st.frames);
        let taken = before - st.frames.len();
        self.counters.tx += taken as u64;
        for k in 0..taken {
            let what = self.staged[port].sent[k];
            self.count_sent(what);
        }
        let st = &mut self.staged[port];
        st.sent.clear();
        for f in st.frames.drain(..) {
            self.core.counters.drop(DropReason::TxRingFull);
            self.backend.free(f);
        }
    }

    fn count_sent(&mut self, what: Sent) {
        let c = &mut self.core.counters;
        match what {
            Sent::Forwarded => c.forwarded += 1,
            Sent::Answer(Answer::Neighbor) => c.neighbor_replies += 1,
            Sent::Answer(Answer::TimeExceeded) => c.time_exceeded += 1,
            Sent::Answer(Answer::Reject) => c.rejected += 1,
            Sent::Answer(Answer::Reset) => c.resets += 1,
        }
    }

    /// Frames the host sent, through the same burst function as a pod's:
    /// its ARP for the gateway answered, its packets to pods routed, and
    /// its connections to ClusterIPs load-balanced.
    fn poll_host(&mut self, t: &Tables<'_>) -> usize {
        let Some(host) = self.host.as_mut() else {
            return 0;
        };
        while self.burst.len() < BURST {
            let mut len = 0;
            let Some(f) = self.backend.alloc_with(|buf| {
                len = host.recv(buf).unwrap_or(0);
                len
            }) else {
                break;
            };
            if len == 0 {
                self.backend.free(f);
                break;
            }
            self.burst.push(f);
        }
        let got = self.burst.len();
        if got == 0 {
            return 0;
        }
        self.counters.host_rx += got as u64;
        self.counters.bursts += 1;
        self.decide_burst(Ingress::Host, t);
        self.act(Source::Host, t);
        got
    }

    /// Polls until `stop` is raised, idling as `idle` says when there is
    /// nothing to receive.
    pub fn run(&mut self, t: &Tables<'_>, stop: &AtomicBool, idle: Idle) {
        let mut empty = 0u32;
        while !stop.load(Ordering::Relaxed) {
            self.run_rounds(t, 64, &mut empty, idle);
        }
    }

    /// `rounds` rounds of the loop, idling as `idle` says; `empty` carries
    /// the count of empty rounds between calls. For a caller that loads
    /// fresh tables between batches of rounds.
    pub fn run_rounds(&mut self, t: &Tables<'_>, rounds: u32, empty: &mut u32, idle: Idle) {
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
