//! The AF_XDP backend (xsk-rs): one socket per port on the worker's queue,
//! generic (SKB) XDP in copy mode with need_wakeup, which is what veth
//! allows on this project's machines (docs/afxdp.md).
//!
//! All of a worker's sockets share one UMEM where the kernel allows it
//! (XDP_SHARED_UMEM across devices, Linux 5.10 and later): a frame received
//! on one port is then transmitted on another by moving its descriptor, and
//! its bytes are never copied in userspace. Each port keeps its own fill and
//! completion rings over the shared pool. Where the kernel refuses the
//! sharing, each port gets a UMEM of its own and forwarding copies the
//! frame into the egress port's; `AfXdpBackend::shared` says which, and the
//! daemon logs it.
//!
//! A shared UMEM belongs to the first socket bound on it: libxdp makes
//! that socket's descriptor the UMEM's own, and every later socket shares
//! the UMEM through it, which the kernel allows only while it is bound. So
//! the first socket is never a pod's: it is an anchor bound to an
//! interface that lives as long as the daemon (`open`'s `anchor`, a veth
//! the daemon keeps, with no program loaded on it), and pods come and go
//! around it. Without an anchor, ports are fixed when the backend opens.
//!
//! Who holds each frame, and how many frames each port's fill ring may
//! hold, is the pool's `Ledger` (`io::ledger`): the pool is sized by a
//! formula for the most ports it will serve (`AfXdpConfig::max_ports`),
//! and fill shares follow the ports as they come and go.

#![allow(unsafe_code)]

mod socket;
pub mod xdp_link;

use std::io::Write;

use xsk_rs::config::{FrameSize, QueueSize, UmemConfig};
use xsk_rs::{FrameDesc, Umem};

use super::ledger::{FillPlan, Ledger, LedgerError, PoolStats};
pub use super::SocketStats;
use super::{once_in, Backend, BackendStats, Frame, PortError};
use crate::pipeline::BURST;
use socket::{close_port, open_socket, quiet_libxdp, Port, Program};

const FRAME_SIZE: usize = 2048;

/// Replaces a frame's contents. xsk-rs's cursor starts at the frame's
/// current length (it appends), so it is rewound first.
fn write_frame(mut data: xsk_rs::umem::frame::DataMut<'_>, bytes: &[u8]) -> bool {
    let mut c = data.cursor();
    c.set_pos(0);
    c.write_all(bytes).is_ok()
}

/// Sizes of a backend's pools and rings.
#[derive(Clone, Copy, Debug)]
pub struct AfXdpConfig {
    /// Entries of each ring (a power of two).
    pub ring: u32,
    /// The queue of every interface this backend binds: a worker owns one
    /// queue of each interface.
    pub queue: u32,
    /// The most ports open at once: the shared pool is sized for them
    /// (`FillPlan::for_ports`), and one more is refused.
    pub max_ports: u32,
}

impl Default for AfXdpConfig {
    fn default() -> Self {
        AfXdpConfig {
            ring: 1024,
            queue: 0,
            max_ports: 16,
        }
    }
}

impl AfXdpConfig {
    /// The plan of one pool: every port's in a shared pool, one port's in
    /// a pool of its own.
    pub fn plan(&self, shared: bool) -> FillPlan {
        let ports = if shared { self.max_ports } else { 1 };
        FillPlan::for_ports(ports as usize, self.ring as usize)
    }
}

/// Why a port could not be opened.
#[derive(Debug)]
pub enum AfXdpError {
    Config(String),
    Umem {
        port: String,
        reason: String,
    },
    Socket {
        port: String,
        queue: u32,
        reason: String,
    },
    /// The pool has no room for another port, or the slot is taken.
    Ports(LedgerError),
    /// Ports attached while the backend runs share its UMEM through an
    /// anchor, and this backend was opened without one.
    NoAnchor,
}

impl std::fmt::Display for AfXdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AfXdpError::Config(r) => write!(f, "AF_XDP configuration: {r}"),
            AfXdpError::Umem { port, reason } => write!(f, "AF_XDP UMEM for {port}: {reason}"),
            AfXdpError::Socket {
                port,
                queue,
                reason,
            } => {
                write!(f, "AF_XDP socket on {port} queue {queue}: {reason}")
            }
            AfXdpError::Ports(e) => e.fmt(f),
            AfXdpError::NoAnchor => f.write_str(
                "this backend's ports are fixed: it was opened without an anchor for its shared UMEM",
            ),
        }
    }
}

/// A UMEM, its frames' descriptors, and who holds each.
struct Pool {
    descs: Vec<FrameDesc>,
    ledger: Ledger,
    umem: Umem,
}

/// Frames one TX wake-up sends in copy mode (the kernel's default
/// `max_tx_budget`): a round that queued more wakes the ring again.
const TX_PER_WAKEUP: usize = 32;

pub struct AfXdpBackend {
    // Dropped first (`Drop`): the ports' sockets, then the anchor's, then
    // the UMEMs. A slot is empty once its port is detached: node ports
    // keep their numbers.
    ports: Vec<Option<Port>>,
    /// The socket that owns the shared UMEM (see the module's comment).
    anchor: Option<Port>,
    /// What ports attached later are opened with.
    cfg: AfXdpConfig,
    pools: Vec<Pool>,
    /// Frames of each pool.
    frames: u32,
    /// Whether every port shares one UMEM (descriptors move) or each has
    /// its own (frames are copied between ports).
    pub shared: bool,
    /// Why sharing was refused, when it was.
    pub refused: Option<String>,
    /// Frames forwarded by moving a descriptor, and by copying.
    pub moved: u64,
    pub copied: u64,
    /// Calls on a frame the worker did not hold (refused, and a bug in
    /// the caller), and descriptors the kernel gave back that it did not
    /// hold: expected 0.
    pub misuse: u64,
    /// Descriptors in and out of the rings, sized once for the largest
    /// batch (a ring's worth).
    scratch: Vec<FrameDesc>,
    indices: Vec<u32>,
    reply: Vec<u8>,
    /// Frames went back to a pool since the fill rings were last made up:
    /// `flush` tops the idle ports up only then, so that an idle round
    /// does no work per port.
    returned: bool,
}

fn index_of(d: &FrameDesc) -> u32 {
    (d.addr() / FRAME_SIZE) as u32
}

impl AfXdpBackend {
    /// The kernel's drop counts of `port`'s socket; `None` if it would
    /// not say (a syscall: not for the packet path).
    pub fn socket_stats(&self, port: usize) -> Option<SocketStats> {
        let st = self
            .ports
            .get(port)?
            .as_ref()?
            .rx
            .fd()
            .xdp_statistics()
            .ok()?;
        Some(SocketStats {
            rx_ring_full: st.rx_ring_full(),
            // Counted per attempt while the ring stays empty, so it can
            // exceed the frames lost; any count means the ring ran dry.
            rx_fill_ring_empty: st.rx_fill_ring_empty_descs(),
            rx_dropped: st.rx_dropped(),
            rx_invalid: st.rx_invalid_descs(),
            tx_invalid: st.tx_invalid_descs(),
        })
    }

    /// The pools' state, summed (walks every frame: not for the packet
    /// path).
    pub fn pool_stats(&self) -> PoolStats {
        let mut s = PoolStats::default();
        for p in &self.pools {
            s.add(&p.ledger.stats());
        }
        s
    }

    /// Bytes of frame memory the pools hold.
    pub fn pool_bytes(&self) -> usize {
        self.pools.len() * self.frames as usize * FRAME_SIZE
    }

    /// Opens every interface of `ifnames` (in the calling thread's network
    /// namespace) as a port, in that order: on one shared UMEM if the
    /// kernel takes it, else on a UMEM per port. With an `anchor`
    /// interface, the shared UMEM belongs to a socket bound there, and
    /// ports can be attached and detached while the backend runs.
    pub fn open(
        ifnames: &[&str],
        cfg: AfXdpConfig,
        anchor: Option<&str>,
    ) -> Result<AfXdpBackend, AfXdpError> {
        quiet_libxdp();
        match Self::open_with(ifnames, cfg, true, anchor) {
            Ok(b) => Ok(b),
            // A socket that shares the UMEM failed: the sharing may be
            // what the kernel refused.
            Err((true, e @ AfXdpError::Socket { .. })) => {
                let mut b = Self::open_with(ifnames, cfg, false, None).map_err(|(_, e)| e)?;
                b.refused = Some(e.to_string());
                Ok(b)
            }
            Err((_, e)) => Err(e),
        }
    }

    fn new_pool(name: &str, cfg: AfXdpConfig, plan: FillPlan) -> Result<Pool, AfXdpError> {
        let q = |n: u32| {
            QueueSize::new(n).map_err(|e| AfXdpError::Config(format!("ring size {n}: {e}")))
        };
        let ucfg = UmemConfig::builder()
            .frame_size(
                FrameSize::new(FRAME_SIZE as u32).map_err(|e| AfXdpError::Config(e.to_string()))?,
            )
            .fill_queue_size(q(cfg.ring)?)
            .comp_queue_size(q(cfg.ring)?)
            .build()
            .map_err(|e| AfXdpError::Config(e.to_string()))?;
        let count = u32::try_from(plan.frames())
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| AfXdpError::Config(format!("{} frames: too many", plan.frames())))?;
        let (umem, descs) = Umem::new(ucfg, count, false).map_err(|e| AfXdpError::Umem {
            port: name.to_string(),
            reason: e.to_string(),
        })?;
        // The ledger's frame i is the UMEM's frame at i * FRAME_SIZE.
        debug_assert!(descs
            .iter()
            .enumerate()
            .all(|(i, d)| index_of(d) == i as u32));
        let ledger = Ledger::new(descs.len(), plan);
        Ok(Pool {
            descs,
            ledger,
            umem,
        })
    }

    /// Err's bool: whether the failure was a socket sharing the UMEM.
    fn open_with(
        ifnames: &[&str],
        cfg: AfXdpConfig,
        shared: bool,
        anchor: Option<&str>,
    ) -> Result<AfXdpBackend, (bool, AfXdpError)> {
        let plan = cfg.plan(shared);
        let mut b = AfXdpBackend {
            ports: Vec::new(),
            anchor: None,
            cfg,
            pools: Vec::new(),
            frames: plan.frames() as u32,
            shared,
            refused: None,
            moved: 0,
            copied: 0,
            misuse: 0,
            scratch: vec![FrameDesc::default(); (cfg.ring as usize).max(TX_PER_WAKEUP)],
            indices: Vec::with_capacity(cfg.ring as usize),
            reply: vec![0; FRAME_SIZE],
            returned: false,
        };
        if shared {
            let name = anchor.or(ifnames.first().copied()).unwrap_or("(no port)");
            b.pools
                .push(Self::new_pool(name, cfg, plan).map_err(|e| (false, e))?);
            if let Some(a) = anchor {
                let s = open_socket(a, cfg, &b.pools[0].umem, 0, Program::Inhibit)
                    .map_err(|e| (false, e))?;
                b.anchor = Some(s);
            }
        }
        for (i, name) in ifnames.iter().enumerate() {
            let sharing = shared && (anchor.is_some() || i > 0);
            let port = b.open_port(name).map_err(|e| (sharing, e))?;
            b.install(i, OpenedPort(Some(port)))
                .map_err(|e| (false, e))?;
        }
        Ok(b)
    }

    /// Ports open now (slots of detached ones excluded).
    pub fn open_ports(&self) -> usize {
        self.ports.iter().flatten().count()
    }

    /// Opens `ifname` as port `slot` while the backend runs (a pod the CNI
    /// plugin registered), on the shared UMEM where the backend has one.
    /// `slot` must be empty: a node port number is never reused for
    /// another interface while frames for it may be in flight.
    pub fn attach_with(&mut self, slot: usize, ifname: &str) -> Result<(), AfXdpError> {
        self.check_free(slot)?;
        if self.shared {
            if self.anchor.is_none() {
                return Err(AfXdpError::NoAnchor);
            }
            // Refused before libxdp loads anything (tens of ms).
            let l = &self.pools[0].ledger;
            if l.open_ports() >= l.plan().max_ports {
                return Err(AfXdpError::Ports(LedgerError::PortsFull {
                    max: l.plan().max_ports,
                }));
            }
        }
        let port = self.open_port(ifname)?;
        self.install(slot, OpenedPort(Some(port)))
    }

    fn check_free(&self, slot: usize) -> Result<(), AfXdpError> {
        if slot >= u16::MAX as usize {
            return Err(AfXdpError::Config(format!("port {slot}: too many ports")));
        }
        if self.ports.get(slot).is_some_and(Option::is_some) {
            return Err(AfXdpError::Ports(LedgerError::SlotTaken {
                slot: slot as u16,
            }));
        }
        Ok(())
    }

    /// Something another thread opens ports on this backend's shared UMEM
    /// with (`None` without one, or without an anchor), so that the worker
    /// does not stop polling while libxdp loads and attaches its program
    /// (tens of ms).
    pub fn opener(&self) -> Option<PortOpener> {
        if !self.shared || self.anchor.is_none() {
            return None;
        }
        let pool = self.pools.first()?;
        Some(PortOpener {
            umem: pool.umem.clone(),
            cfg: self.cfg,
        })
    }

    /// Puts a port another thread opened (`PortOpener::open`) in slot
    /// `slot`: no syscall but the fill ring's first wake-up. A port the
    /// pool has no room for is closed and refused.
    pub fn install(&mut self, slot: usize, mut port: OpenedPort) -> Result<(), AfXdpError> {
        let Some(port) = port.0.take() else {
            return Err(AfXdpError::Config("an opened port given twice".into()));
        };
        let opened = self.check_free(slot).and_then(|()| {
            self.pools[port.pool]
                .ledger
                .open_port(slot as u16)
                .map_err(AfXdpError::Ports)
        });
        if let Err(e) = opened {
            // Closed as every port is, libxdp's leftovers with it.
            close_port(port);
            return Err(e);
        }
        if self.ports.len() <= slot {
            self.ports.resize_with(slot + 1, || None);
        }
        self.ports[slot] = Some(port);
        self.refill(slot, false);
        Ok(())
    }

    /// Closes port `slot` (a pod deleted): its socket is closed, libxdp's
    /// leftovers with it, and the frames its rings held are the pool's
    /// again. Frames the worker holds for it are its to free. Returns
    /// whether there was a port.
    pub fn detach_port(&mut self, slot: usize) -> bool {
        let Some(port) = self.ports.get_mut(slot).and_then(Option::take) else {
            return false;
        };
        let pool = port.pool;
        close_port(port);
        if let Some(p) = self.pools.get_mut(pool) {
            p.ledger.close_port(slot as u16);
        }
        // Its frames are free again, for the other ports' fill rings.
        self.returned = true;
        true
    }

    /// Opens one more socket: on the shared pool, or on a pool of its own.
    fn open_port(&mut self, name: &str) -> Result<Port, AfXdpError> {
        if !self.shared {
            // A pool of its own, which this port's socket owns. It is not
            // reused after the port closes: libxdp would bind the new
            // socket through the closed one's descriptor (see the module's
            // comment), so a per-port backend keeps a pool per attach
            // until it stops. The shared mode, with its anchor, is the
            // one that takes pods all day.
            let pool = Self::new_pool(name, self.cfg, self.cfg.plan(false))?;
            self.pools.push(pool);
            let p = self.pools.len() - 1;
            return open_socket(name, self.cfg, &self.pools[p].umem, p, Program::Load).inspect_err(
                |_| {
                    self.pools.pop();
                },
            );
        }
        open_socket(name, self.cfg, &self.pools[0].umem, 0, Program::Load)
    }

    /// A frame's pool and its index in the pool.
    fn split(&self, f: &Frame) -> (usize, u32) {
        ((f.index() / self.frames) as usize, f.index() % self.frames)
    }

    /// Gives port `p`'s fill ring what its share allows now; `busy`: it
    /// received this round (`Ledger::fill_grant`).
    fn refill(&mut self, p: usize, busy: bool) {
        let Some(port) = self.ports[p].as_mut() else {
            return;
        };
        let pool = &mut self.pools[port.pool];
        pool.ledger.take_for_fill(p as u16, busy, &mut self.indices);
        let want = self.indices.len();
        if want == 0 {
            return;
        }
        for (d, &i) in self.scratch.iter_mut().zip(&self.indices) {
            *d = pool.descs[i as usize];
        }
        // SAFETY: the frames came off the free list: nobody else holds them.
        let n = unsafe { port.fq.produce(&self.scratch[..want]) };
        if n < want {
            pool.ledger.unfilled(p as u16, &self.indices[n..]);
        }
        if n > 0 && port.fq.needs_wakeup() {
            let _ = port.fq.wakeup(port.rx.fd_mut(), 0);
        }
    }
}

impl AfXdpBackend {
    /// `tx` on a shared pool: the descriptors move, and the ring's
    /// producer index is published once for the whole burst.
    fn tx_shared(&mut self, egress: usize, frames: &mut Vec<Frame>) {
        let Some(port) = self.ports[egress].as_mut() else {
            return;
        };
        let pool = &mut self.pools[0];
        // Single producer: the room seen now is there at `produce`.
        let room = (port.tx.nb_free(frames.len() as u32) as usize).min(self.scratch.len());
        self.indices.clear();
        let slot = egress as u16;
        let mut accepted = 0;
        for f in frames.iter() {
            if self.indices.len() == room {
                break;
            }
            let i = f.index() % self.frames;
            // Marked the kernel's as it is taken, so that a frame staged
            // twice is refused the second time.
            if f.index() >= self.frames || !pool.ledger.sent(i, slot) {
                // Not the worker's to send: refused, and not the caller's
                // to keep either.
                self.misuse += 1;
                accepted += 1;
                continue;
            }
            self.scratch[self.indices.len()] = pool.descs[i as usize];
            self.indices.push(i);
            accepted += 1;
        }
        // Taken: the kernel's now (or, below, the pool's).
        frames.drain(..accepted);
        let n = self.indices.len();
        if n == 0 {
            return;
        }
        // SAFETY: the worker held every frame (checked as each was marked
        // sent above); they are the kernel's once produced.
        let produced = unsafe { port.tx.produce(&self.scratch[..n]) };
        if produced == n {
            self.moved += n as u64;
            port.tx_queued += n;
            port.in_tx += n;
        } else {
            // The room was there a moment ago; should the ring say
            // otherwise, the frames are dropped here, counted, and never
            // lost to the pool.
            for &i in &self.indices {
                pool.ledger.completed(i);
            }
            self.returned = true;
            self.misuse += n as u64;
        }
    }
}

impl Backend for AfXdpBackend {
    fn ports(&self) -> usize {
        self.ports.len()
    }

    fn mtu(&self, port: usize) -> Option<u16> {
        self.ports
            .get(port)?
            .as_ref()
            .map(|p| p.mtu)
            .filter(|&m| m > 0)
    }

    fn attach(&mut self, slot: usize, ifname: &str) -> Result<(), PortError> {
        self.attach_with(slot, ifname)
            .map_err(|e| PortError::Backend(e.to_string()))
    }

    fn detach(&mut self, slot: usize) -> bool {
        self.detach_port(slot)
    }

    fn stats(&self) -> BackendStats {
        let mut sockets = SocketStats::default();
        for p in 0..self.ports.len() {
            if let Some(st) = self.socket_stats(p) {
                sockets.add(&st);
            }
        }
        BackendStats {
            moved: self.moved,
            copied: self.copied,
            misuse: self.misuse,
            pool: Some(self.pool_stats()),
            sockets: Some(sockets),
        }
    }

    fn install(
        &mut self,
        slot: usize,
        port: Box<dyn std::any::Any + Send>,
    ) -> Result<(), PortError> {
        let port = port
            .downcast::<OpenedPort>()
            .map_err(|_| PortError::Foreign)?;
        AfXdpBackend::install(self, slot, *port).map_err(|e| PortError::Backend(e.to_string()))
    }

    fn rx(&mut self, p: usize, out: &mut Vec<Frame>, max: usize) -> usize {
        let Some(port) = self.ports[p].as_mut() else {
            return 0;
        };
        let base = port.pool as u32 * self.frames;
        let pool = &mut self.pools[port.pool];
        let want = max.min(self.scratch.len());
        // SAFETY: the descriptors written are frames the kernel hands back;
        // they become the worker's until `tx` or `free`.
        let n = unsafe { port.rx.consume(&mut self.scratch[..want]) };
        let mut got = 0;
        for d in &self.scratch[..n] {
            let i = index_of(d);
            if !pool.ledger.received(i, p as u16) {
                // Not a frame of this port's fill ring: never touched.
                self.misuse += 1;
                continue;
            }
            pool.descs[i as usize] = *d;
            out.push(Frame::new(base + i, d.lengths().data() as u16));
            got += 1;
        }
        // A port that received is topped up now; an idle one is left
        // alone (no work per idle port per round): `flush` tops it up when
        // frames come back.
        if n > 0 {
            self.refill(p, true);
        }
        got
    }

    fn tx(&mut self, egress: usize, frames: &mut Vec<Frame>) {
        let Some(to) = self
            .ports
            .get(egress)
            .and_then(Option::as_ref)
            .map(|p| p.pool)
        else {
            // Detached: the caller frees what was refused.
            return;
        };
        if self.shared {
            self.tx_shared(egress, frames);
            return;
        }
        let mut accepted = 0;
        let mut produced = 0;
        let slot = egress as u16;
        for f in frames.iter() {
            let (from, i) = self.split(f);
            if from >= self.pools.len() || !self.pools[from].ledger.worker_holds(i) {
                // Not the worker's to send: refused, and not the caller's
                // to keep either.
                self.misuse += 1;
                accepted += 1;
                continue;
            }
            let ok = if from == to {
                // One UMEM: the descriptor moves, the bytes stay.
                let Some(port) = self.ports[egress].as_mut() else {
                    break;
                };
                let pool = &mut self.pools[to];
                // SAFETY: the worker holds the frame (checked above); it is
                // the kernel's once produced.
                let ok = unsafe { port.tx.produce_one(&pool.descs[i as usize]) == 1 };
                if ok {
                    pool.ledger.sent(i, slot);
                    self.moved += 1;
                }
                ok
            } else {
                // Another UMEM: copy into a frame of the egress port's.
                let Some(j) = self.pools[to].ledger.take() else {
                    break;
                };
                let len = {
                    let s = &self.pools[from];
                    // SAFETY: the worker holds the source frame (checked).
                    let data = unsafe { s.umem.data(&s.descs[i as usize]) };
                    let c = data.contents();
                    self.reply[..c.len()].copy_from_slice(c);
                    c.len()
                };
                let pool = &mut self.pools[to];
                let d = &mut pool.descs[j as usize];
                // SAFETY: `j` came off the free list: the frame is ours alone.
                let written = write_frame(unsafe { pool.umem.data_mut(d) }, &self.reply[..len]);
                let Some(port) = self.ports[egress].as_mut() else {
                    pool.ledger.free(j);
                    break;
                };
                // SAFETY: as above; the kernel's once produced.
                if written && unsafe { port.tx.produce_one(&pool.descs[j as usize]) } == 1 {
                    pool.ledger.sent(j, slot);
                    self.pools[from].ledger.free(i);
                    self.copied += 1;
                    true
                } else {
                    pool.ledger.free(j);
                    false
                }
            };
            if !ok {
                break;
            }
            accepted += 1;
            produced += 1;
        }
        if let Some(port) = self.ports[egress].as_mut() {
            port.tx_queued += produced;
            port.in_tx += produced;
        }
        frames.drain(..accepted);
    }

    fn flush(&mut self) {
        for p in 0..self.ports.len() {
            let Some(port) = self.ports[p].as_mut() else {
                continue;
            };
            // A wake-up is a syscall: only while something is on the ring or
            // in flight, so an idle round makes none. In copy mode one
            // wake-up sends at most TX_PER_WAKEUP frames, so a round that
            // queued more wakes the ring as many times.
            if port.in_tx > 0 && port.tx.needs_wakeup() {
                let wakes = port.tx_queued.div_ceil(TX_PER_WAKEUP).max(1);
                for _ in 0..wakes {
                    let _ = port.tx.wakeup();
                }
            }
            port.tx_queued = 0;
            if port.in_tx == 0 {
                continue;
            }
            // SAFETY: completed descriptors are frames the kernel is done with.
            let n = unsafe { port.cq.consume(&mut self.scratch) };
            port.in_tx = port.in_tx.saturating_sub(n);
            self.returned |= n > 0;
            let pool = &mut self.pools[port.pool];
            for d in &self.scratch[..n] {
                if !pool.ledger.completed(index_of(d)) {
                    self.misuse += 1;
                }
            }
        }
        // Frames that came back make up the fill rings that ran short.
        if std::mem::take(&mut self.returned) {
            for p in 0..self.ports.len() {
                self.refill(p, false);
            }
        }
    }

    fn with_bytes<R>(&mut self, f: &Frame, op: impl FnOnce(&mut [u8]) -> R) -> R {
        let (p, i) = self.split(f);
        match self.pools.get_mut(p) {
            Some(pool) if pool.ledger.worker_holds(i) => {
                // SAFETY: the worker holds the frame (received or allocated,
                // not yet given back), so no ring and no other borrow
                // touches it.
                let mut data = unsafe { pool.umem.data_mut(&mut pool.descs[i as usize]) };
                op(data.contents_mut())
            }
            _ => {
                self.misuse += 1;
                op(&mut [])
            }
        }
    }

    fn with_burst<R>(&mut self, frames: &[Frame], op: impl FnOnce(&mut [&mut [u8]]) -> R) -> R {
        let n = frames.len().min(BURST);
        let mut bytes: [&mut [u8]; BURST] = Default::default();
        for (b, f) in bytes.iter_mut().zip(&frames[..n]) {
            let (p, i) = self.split(f);
            let Some(pool) = self
                .pools
                .get_mut(p)
                .filter(|pool| pool.ledger.worker_holds(i))
            else {
                self.misuse += 1;
                continue;
            };
            debug_assert!(
                once_in(&frames[..n], f),
                "frame {} twice in one burst",
                f.index()
            );
            // SAFETY: the worker holds the frame (the ledger says so), so
            // no ring touches it; no two frames of a burst are one (a
            // `Frame` is moved, never copied), so the slices are disjoint.
            // They point into the UMEM's mapping, which outlives `&mut
            // self`, and live no longer than this call.
            *b = unsafe {
                let mut data = pool.umem.data_mut(&mut pool.descs[i as usize]);
                let c = data.contents_mut();
                std::slice::from_raw_parts_mut(c.as_mut_ptr(), c.len())
            };
        }
        op(&mut bytes[..n])
    }

    fn alloc_with(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> Option<Frame> {
        let p = (0..self.pools.len()).find(|&p| self.pools[p].ledger.free_frames() > 0)?;
        let len = write(&mut self.reply[..]).min(FRAME_SIZE);
        let pool = &mut self.pools[p];
        let j = pool.ledger.take()?;
        // SAFETY: `j` came off the free list.
        let ok = write_frame(
            unsafe { pool.umem.data_mut(&mut pool.descs[j as usize]) },
            &self.reply[..len],
        );
        if !ok {
            pool.ledger.free(j);
            return None;
        }
        Some(Frame::new(p as u32 * self.frames + j, len as u16))
    }

    fn free(&mut self, f: Frame) {
        let (p, i) = self.split(&f);
        let ok = self
            .pools
            .get_mut(p)
            .is_some_and(|pool| pool.ledger.free(i));
        if ok {
            self.returned = true;
        } else {
            self.misuse += 1;
        }
    }
}

impl Drop for AfXdpBackend {
    fn drop(&mut self) {
        // The ports' sockets, then the anchor's, before the UMEMs (the
        // pools drop after this).
        for port in self.ports.drain(..).flatten() {
            close_port(port);
        }
        if let Some(a) = self.anchor.take() {
            close_port(a);
        }
    }
}

/// Opens sockets on a worker's shared UMEM from another thread (the
/// control side's, in the node's namespace): the UMEM's own lock
/// serialises libxdp's changes to it, and the worker keeps using the
/// frames and its rings meanwhile.
pub struct PortOpener {
    umem: Umem,
    cfg: AfXdpConfig,
}

/// A socket opened by a `PortOpener`, for its backend's `install`; one
/// that never gets there (its worker stopped) is closed as every port is.
pub struct OpenedPort(Option<Port>);

impl Drop for OpenedPort {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            close_port(p);
        }
    }
}

impl PortOpener {
    /// Opens `ifname` (in the calling thread's network namespace).
    pub fn open(&self, ifname: &str) -> Result<OpenedPort, AfXdpError> {
        open_socket(ifname, self.cfg, &self.umem, 0, Program::Load).map(|p| OpenedPort(Some(p)))
    }
}
