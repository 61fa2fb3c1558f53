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
//! Ownership of a frame is always one of: its pool's free list, the kernel
//! (a fill or TX ring, until it comes back on RX or completion), or the
//! worker (between `rx` and `tx`/`free`).

#![allow(unsafe_code)]

use std::io::Write;

use xsk_rs::config::{BindFlags, FrameSize, QueueSize, SocketConfig, UmemConfig, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::{Backend, Frame};

const FRAME_SIZE: usize = 2048;

/// What the kernel dropped on one socket before the worker saw it
/// (XDP_STATISTICS): the first place to look when frames vanish between
/// an interface's counters and the worker's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// The RX ring was full: the worker fell behind.
    pub rx_ring_full: u64,
    /// A frame arrived and the fill ring had no buffer for it.
    pub rx_fill_ring_empty: u64,
    pub rx_dropped: u64,
    pub rx_invalid: u64,
    pub tx_invalid: u64,
}

impl SocketStats {
    pub fn add(&mut self, o: &SocketStats) {
        self.rx_ring_full += o.rx_ring_full;
        self.rx_fill_ring_empty += o.rx_fill_ring_empty;
        self.rx_dropped += o.rx_dropped;
        self.rx_invalid += o.rx_invalid;
        self.tx_invalid += o.tx_invalid;
    }
}

/// Sizes of a port's pool and rings.
#[derive(Clone, Copy, Debug)]
pub struct AfXdpConfig {
    /// Frames of each port's UMEM (a power of two).
    pub frames: u32,
    /// Entries of each ring (a power of two, at most `frames / 2`).
    pub ring: u32,
    /// The queue of every interface this backend binds: a worker owns one
    /// queue of each interface.
    pub queue: u32,
}

impl Default for AfXdpConfig {
    fn default() -> Self {
        AfXdpConfig {
            frames: 4096,
            ring: 1024,
            queue: 0,
        }
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
        }
    }
}

/// Who holds a frame. The backend checks it before it touches a frame, so
/// that no sequence of calls through the safe `Backend` API (a double free,
/// a frame used after `tx`) can make it write to a frame the kernel owns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    Free,
    Worker,
    /// On a ring of this port (its slot): given back when the port closes,
    /// whatever its rings held.
    Kernel(u16),
}

/// A UMEM and its frames.
struct Pool {
    descs: Vec<FrameDesc>,
    held: Vec<Held>,
    free: Vec<u32>,
    umem: Umem,
}

impl Pool {
    fn take(&mut self) -> Option<u32> {
        let i = self.free.pop()?;
        self.held[i as usize] = Held::Worker;
        Some(i)
    }
    /// Back to the free list, from the worker (`from_kernel` false) or
    /// from a completion ring.
    fn give_back(&mut self, i: u32, from_kernel: bool) -> bool {
        match self.held.get_mut(i as usize) {
            Some(h) if matches!(*h, Held::Kernel(_)) == from_kernel && *h != Held::Free => {
                *h = Held::Free;
                self.free.push(i);
                true
            }
            _ => false,
        }
    }
    fn worker_holds(&self, i: usize) -> bool {
        self.held.get(i) == Some(&Held::Worker)
    }
    /// Every frame on a ring of port `slot`, back to the free list: its
    /// socket is closed, and the kernel will not give them back.
    fn reclaim(&mut self, slot: u16) -> usize {
        let mut n = 0;
        for (i, h) in self.held.iter_mut().enumerate() {
            if *h == Held::Kernel(slot) {
                *h = Held::Free;
                self.free.push(i as u32);
                n += 1;
            }
        }
        n
    }
}

/// Frames one TX wake-up sends in copy mode (the kernel's default
/// `max_tx_budget`): a round that queued more wakes the ring again.
const TX_PER_WAKEUP: usize = 32;

struct Port {
    /// The pool this port's rings take frames from.
    pool: usize,
    /// Frames produced on TX since the last wake-up.
    tx_queued: usize,
    /// Frames on the TX ring or sent and not yet completed.
    in_tx: usize,
    /// Frames on the fill ring or received and not yet consumed: topped
    /// up to `ring` whenever frames are free, so that a moment of
    /// shortage (frames waiting on another port's TX) is made up later.
    in_fill: usize,
    ring: usize,
    fq: FillQueue,
    cq: CompQueue,
    rx: RxQueue,
    tx: TxQueue,
    /// Descriptors libxdp opened for this socket and will not close
    /// (`libxdp_leaks`).
    libxdp_fds: Vec<(i32, u64)>,
}

pub struct AfXdpBackend {
    // Dropped first (`Drop`, then field order): the sockets' rings before
    // the UMEMs. A slot is empty once its port is detached: node ports
    // keep their numbers.
    ports: Vec<Option<Port>>,
    /// Frames a port's fill ring is topped up to: the pool shared fairly,
    /// so that the first ports do not take every frame.
    fill_target: usize,
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
    /// the caller): expected 0.
    pub misuse: u64,
    scratch: Vec<FrameDesc>,
    reply: Vec<u8>,
}

/// Replaces a frame's contents. xsk-rs's cursor starts at the frame's
/// current length (it appends), so it is rewound first.
fn write_frame(mut data: xsk_rs::umem::frame::DataMut<'_>, bytes: &[u8]) -> bool {
    let mut c = data.cursor();
    c.set_pos(0);
    c.write_all(bytes).is_ok()
}

fn index_of(d: &FrameDesc) -> u32 {
    (d.addr() / FRAME_SIZE) as u32
}

type PrintFn = unsafe extern "C" fn(
    level: libc::c_int,
    fmt: *const libc::c_char,
    args: *mut libc::c_void,
) -> libc::c_int;

extern "C" {
    fn libbpf_set_print(f: Option<PrintFn>) -> Option<PrintFn>;
    fn libxdp_set_print(f: Option<PrintFn>) -> Option<PrintFn>;
}

unsafe extern "C" fn quiet(
    _: libc::c_int,
    _: *const libc::c_char,
    _: *mut libc::c_void,
) -> libc::c_int {
    0
}

/// libbpf and libxdp print their progress to stderr (the ELF sections
/// they skip, the dispatcher they fall back from, docs/afxdp.md), which on
/// this kernel is a screenful per socket. Their failures reach us as error
/// codes anyway, so they are silenced unless SLUICE_LIBXDP_LOG is set.
fn quiet_libxdp() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("SLUICE_LIBXDP_LOG").is_none() {
            // SAFETY: both install a print callback (ours ignores its
            // arguments); they are called before any socket is created.
            unsafe {
                libbpf_set_print(Some(quiet));
                libxdp_set_print(Some(quiet));
            }
        }
    });
}

/// Held while libxdp opens or closes a socket: libxdp attaches its
/// program with an interface's first socket and finds it for the next (two
/// first sockets at once would both attach), and `libxdp_leaks` tells
/// libxdp's descriptors from others by what appeared during an open.
static LIBXDP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This process's BPF map descriptors and their map ids.
fn bpf_map_fds() -> Vec<(i32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            map_id(fd).map(|id| (fd, id))
        })
        .collect()
}

/// The id of the BPF map `fd` refers to, if it refers to one.
fn map_id(fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    if link.to_str() != Some("anon_inode:bpf-map") {
        return None;
    }
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("map_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Closes what libxdp left open of a closed socket's descriptors. libxdp
/// 1.6 looks up its program's reference-count map for every socket and
/// never closes that descriptor (xdp-tools #576, fixed upstream after the
/// release xsk-rs builds): one per socket, and the map keeps the
/// program's objects alive. Whatever of `opened` still refers to the same
/// map after the socket closed is that leak (libxdp closes its other
/// descriptors with the socket, and nothing else opens BPF maps while
/// `LIBXDP` is held).
fn close_libxdp_leaks(opened: &[(i32, u64)]) {
    for &(fd, id) in opened {
        if map_id(fd) == Some(id) {
            // SAFETY: the descriptor is libxdp's and libxdp no longer uses
            // it: its socket is deleted.
            unsafe {
                libc::close(fd);
            }
        }
    }
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

    /// Opens every interface of `ifnames` (in the calling thread's network
    /// namespace) as a port, in that order: on one shared UMEM if the
    /// kernel takes it, else on a UMEM per port.
    pub fn open(ifnames: &[&str], cfg: AfXdpConfig) -> Result<AfXdpBackend, AfXdpError> {
        quiet_libxdp();
        // Enough for every port's fill ring, its TX ring and a burst in
        // the worker's hands.
        let shared_frames = (ifnames.len() as u32 * 2 * cfg.ring + 2 * cfg.ring).max(cfg.frames);
        match Self::open_with(ifnames, cfg, true, shared_frames) {
            Ok(b) => Ok(b),
            // The first port's socket is the same in both modes: only a
            // later port's failure can be the sharing refused.
            Err((port, e @ AfXdpError::Socket { .. })) if port > 0 => {
                let mut b = Self::open_with(ifnames, cfg, false, cfg.frames).map_err(|(_, e)| e)?;
                b.refused = Some(e.to_string());
                Ok(b)
            }
            Err((_, e)) => Err(e),
        }
    }

    fn new_pool(name: &str, cfg: AfXdpConfig, frames: u32) -> Result<Pool, AfXdpError> {
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
        let count = frames
            .try_into()
            .map_err(|e| AfXdpError::Config(format!("{e}")))?;
        let (umem, descs) = Umem::new(ucfg, count, false).map_err(|e| AfXdpError::Umem {
            port: name.to_string(),
            reason: e.to_string(),
        })?;
        let free = descs.iter().map(index_of).rev().collect();
        let held = vec![Held::Free; descs.len()];
        Ok(Pool {
            descs,
            held,
            free,
            umem,
        })
    }

    fn open_with(
        ifnames: &[&str],
        cfg: AfXdpConfig,
        shared: bool,
        frames: u32,
    ) -> Result<AfXdpBackend, (usize, AfXdpError)> {
        let mut b = AfXdpBackend {
            ports: Vec::new(),
            fill_target: cfg.ring as usize,
            cfg,
            pools: Vec::new(),
            frames,
            shared: shared || ifnames.len() == 1,
            refused: None,
            moved: 0,
            copied: 0,
            misuse: 0,
            scratch: Vec::with_capacity((cfg.ring as usize).max(TX_PER_WAKEUP)),
            reply: vec![0; FRAME_SIZE],
        };
        if shared && ifnames.is_empty() {
            // The pool ports attached later share (`PortOpener`).
            b.pools
                .push(Self::new_pool("(no port yet)", cfg, frames).map_err(|e| (0, e))?);
        }
        for (i, name) in ifnames.iter().enumerate() {
            let port = b.open_port(name, cfg, shared, frames).map_err(|e| (i, e))?;
            b.ports.push(Some(port));
        }
        b.share_fill();
        for p in 0..b.ports.len() {
            b.refill(p);
        }
        Ok(b)
    }

    /// Ports open now (slots of detached ones excluded).
    pub fn open_ports(&self) -> usize {
        self.ports.iter().flatten().count()
    }

    /// The interfaces' share of a shared pool: a fill ring each and a TX
    /// ring each, and a burst's worth in the worker's hands.
    fn share_fill(&mut self) {
        let open = self.open_ports().max(1);
        let per = if self.shared {
            self.frames as usize / (2 * open + 2)
        } else {
            self.frames as usize / 4
        };
        let ring = self
            .ports
            .iter()
            .flatten()
            .map(|p| p.ring)
            .max()
            .unwrap_or(0);
        self.fill_target = per.min(ring).max(64);
    }

    /// Opens `ifname` as port `slot` while the backend runs (a pod the CNI
    /// plugin registered), on the shared UMEM where the backend has one.
    /// `slot` must be empty: a node port number is never reused for
    /// another interface while frames for it may be in flight.
    pub fn attach_with(
        &mut self,
        slot: usize,
        ifname: &str,
        cfg: AfXdpConfig,
    ) -> Result<(), AfXdpError> {
        self.check_free(slot)?;
        let (shared, frames) = (self.shared, self.frames);
        let cfg = AfXdpConfig {
            frames,
            ring: cfg.ring.min(frames / 2),
            ..cfg
        };
        let port = self.open_port(ifname, cfg, shared, frames)?;
        self.install(slot, OpenedPort(port))
    }

    fn check_free(&self, slot: usize) -> Result<(), AfXdpError> {
        if slot >= u16::MAX as usize {
            return Err(AfXdpError::Config(format!("port {slot}: too many ports")));
        }
        if self.ports.get(slot).is_some_and(Option::is_some) {
            return Err(AfXdpError::Config(format!("port {slot} is taken")));
        }
        Ok(())
    }

    /// Something another thread opens ports on this backend's shared UMEM
    /// with (`None` without one), so that the worker does not stop polling
    /// while libxdp loads and attaches its program (tens of ms).
    pub fn opener(&self) -> Option<PortOpener> {
        if !self.shared {
            return None;
        }
        let pool = self.pools.first()?;
        Some(PortOpener {
            umem: pool.umem.clone(),
            cfg: AfXdpConfig {
                ring: self.cfg.ring.min(self.frames / 2),
                ..self.cfg
            },
        })
    }

    /// Puts a port another thread opened (`PortOpener::open`) in slot
    /// `slot`: no syscall but the fill ring's first wake-up.
    pub fn install(&mut self, slot: usize, port: OpenedPort) -> Result<(), AfXdpError> {
        if let Err(e) = self.check_free(slot) {
            // Closed as every port is, libxdp's leftovers with it.
            close_port(port.0);
            return Err(e);
        }
        if self.ports.len() <= slot {
            self.ports.resize_with(slot + 1, || None);
        }
        self.ports[slot] = Some(port.0);
        self.share_fill();
        self.refill(slot);
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
            p.reclaim(slot as u16);
        }
        self.share_fill();
        true
    }

    /// Opens one more port: on the shared pool, or on a pool of its own.
    fn open_port(
        &mut self,
        name: &str,
        cfg: AfXdpConfig,
        shared: bool,
        frames: u32,
    ) -> Result<Port, AfXdpError> {
        if !shared || self.pools.is_empty() {
            self.pools.push(Self::new_pool(name, cfg, frames)?);
        }
        let pool = self.pools.len() - 1;
        open_socket(name, cfg, &self.pools[pool].umem, pool)
    }

    /// A frame's pool and its index in the pool.
    fn split(&self, f: Frame) -> (usize, usize) {
        (
            (f.index / self.frames) as usize,
            (f.index % self.frames) as usize,
        )
    }

    /// Tops port `p`'s fill ring up to its size from the pool's free frames.
    fn refill(&mut self, p: usize) {
        let Some(port) = self.ports[p].as_mut() else {
            return;
        };
        let want = self.fill_target.min(port.ring).saturating_sub(port.in_fill);
        if want == 0 {
            return;
        }
        let pool = &mut self.pools[port.pool];
        self.scratch.clear();
        while self.scratch.len() < want {
            let Some(i) = pool.free.pop() else { break };
            self.scratch.push(pool.descs[i as usize]);
        }
        // SAFETY: the frames come off the free list: nobody else holds them.
        let n = unsafe { port.fq.produce(&self.scratch) };
        for d in &self.scratch[..n] {
            pool.held[index_of(d) as usize] = Held::Kernel(p as u16);
        }
        for d in &self.scratch[n..] {
            pool.free.push(index_of(d));
        }
        port.in_fill += n;
        if n > 0 && port.fq.needs_wakeup() {
            let _ = port.fq.wakeup(port.rx.fd_mut(), 0);
        }
    }
}

impl Backend for AfXdpBackend {
    fn ports(&self) -> usize {
        self.ports.len()
    }

    fn attach(&mut self, slot: usize, ifname: &str) -> Result<(), String> {
        self.attach_with(slot, ifname, self.cfg)
            .map_err(|e| e.to_string())
    }

    fn detach(&mut self, slot: usize) -> bool {
        self.detach_port(slot)
    }

    fn install(&mut self, slot: usize, port: Box<dyn std::any::Any + Send>) -> Result<(), String> {
        let port = port
            .downcast::<OpenedPort>()
            .map_err(|_| "not an AF_XDP port".to_string())?;
        AfXdpBackend::install(self, slot, *port).map_err(|e| e.to_string())
    }

    fn rx(&mut self, p: usize, out: &mut [Frame]) -> usize {
        let Some(port) = self.ports[p].as_mut() else {
            return 0;
        };
        let base = port.pool as u32 * self.frames;
        let pool = &mut self.pools[port.pool];
        self.scratch.clear();
        self.scratch.resize(out.len(), FrameDesc::default());
        // SAFETY: the descriptors written are frames the kernel hands back;
        // they become the worker's until `tx` or `free`.
        let n = unsafe { port.rx.consume(&mut self.scratch) };
        port.in_fill = port.in_fill.saturating_sub(n);
        for (o, d) in out.iter_mut().zip(&self.scratch[..n]) {
            let i = index_of(d);
            pool.descs[i as usize] = *d;
            pool.held[i as usize] = Held::Worker;
            *o = Frame {
                index: base + i,
                len: d.lengths().data() as u16,
            };
        }
        // No wake-up when idle: `refill` kicks the fill ring only when it
        // gives the kernel frames, and an idle round gives none.
        self.refill(p);
        n
    }

    fn tx(&mut self, egress: usize, frames: &[Frame]) -> usize {
        let mut accepted = 0;
        let mut produced = 0;
        let Some(to) = self
            .ports
            .get(egress)
            .and_then(Option::as_ref)
            .map(|p| p.pool)
        else {
            // Detached: the caller frees what was refused.
            return 0;
        };
        let slot = egress as u16;
        for &f in frames {
            let (from, i) = self.split(f);
            if from >= self.pools.len() || !self.pools[from].worker_holds(i) {
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
                let ok = unsafe { port.tx.produce_one(&pool.descs[i]) == 1 };
                if ok {
                    pool.held[i] = Held::Kernel(slot);
                    self.moved += 1;
                }
                ok
            } else {
                // Another UMEM: copy into a frame of the egress port's.
                let Some(j) = self.pools[to].take() else {
                    break;
                };
                let len = {
                    let s = &self.pools[from];
                    // SAFETY: the worker holds the source frame (checked).
                    let data = unsafe { s.umem.data(&s.descs[i]) };
                    let c = data.contents();
                    self.reply[..c.len()].copy_from_slice(c);
                    c.len()
                };
                let pool = &mut self.pools[to];
                let d = &mut pool.descs[j as usize];
                // SAFETY: `j` came off the free list: the frame is ours alone.
                let written = write_frame(unsafe { pool.umem.data_mut(d) }, &self.reply[..len]);
                let Some(port) = self.ports[egress].as_mut() else {
                    pool.give_back(j, false);
                    break;
                };
                // SAFETY: as above; the kernel's once produced.
                if written && unsafe { port.tx.produce_one(&pool.descs[j as usize]) } == 1 {
                    pool.held[j as usize] = Held::Kernel(slot);
                    self.pools[from].give_back(i as u32, false);
                    self.copied += 1;
                    true
                } else {
                    pool.give_back(j, false);
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
        accepted
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
            self.scratch.clear();
            self.scratch
                .resize(port.ring.max(TX_PER_WAKEUP), FrameDesc::default());
            // SAFETY: completed descriptors are frames the kernel is done with.
            let n = unsafe { port.cq.consume(&mut self.scratch) };
            port.in_tx = port.in_tx.saturating_sub(n);
            let pool = &mut self.pools[port.pool];
            for d in &self.scratch[..n] {
                pool.give_back(index_of(d), true);
            }
        }
        // Frames that came back may make up a fill ring that ran short.
        for p in 0..self.ports.len() {
            self.refill(p);
        }
    }

    fn with_bytes<R>(&mut self, f: Frame, op: impl FnOnce(&mut [u8]) -> R) -> R {
        let (p, i) = self.split(f);
        match self.pools.get_mut(p) {
            Some(pool) if pool.worker_holds(i) => {
                // SAFETY: the worker holds the frame (received or allocated,
                // not yet given back), so no ring and no other borrow
                // touches it.
                let mut data = unsafe { pool.umem.data_mut(&mut pool.descs[i]) };
                op(data.contents_mut())
            }
            _ => {
                self.misuse += 1;
                op(&mut [])
            }
        }
    }

    fn alloc_with(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> Option<Frame> {
        let p = (0..self.pools.len()).find(|&p| !self.pools[p].free.is_empty())?;
        let len = write(&mut self.reply[..]).min(FRAME_SIZE);
        let pool = &mut self.pools[p];
        let j = pool.take()?;
        // SAFETY: `j` came off the free list.
        let ok = write_frame(
            unsafe { pool.umem.data_mut(&mut pool.descs[j as usize]) },
            &self.reply[..len],
        );
        if !ok {
            pool.give_back(j, false);
            return None;
        }
        Some(Frame {
            index: p as u32 * self.frames + j,
            len: len as u16,
        })
    }

    fn free(&mut self, f: Frame) {
        let (p, i) = self.split(f);
        let ok = self
            .pools
            .get_mut(p)
            .is_some_and(|pool| pool.give_back(i as u32, false));
        if !ok {
            self.misuse += 1;
        }
    }
}

/// Closes a port's socket, then what libxdp left open of it.
fn close_port(mut port: Port) {
    let fds = std::mem::take(&mut port.libxdp_fds);
    let _libxdp = LIBXDP.lock().unwrap_or_else(|p| p.into_inner());
    drop(port);
    close_libxdp_leaks(&fds);
}

impl Drop for AfXdpBackend {
    fn drop(&mut self) {
        // The sockets before the UMEMs (the pools drop after this).
        for port in self.ports.drain(..).flatten() {
            close_port(port);
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

/// A socket opened by a `PortOpener`, for its backend's `install`.
pub struct OpenedPort(Port);

impl PortOpener {
    /// Opens `ifname` (in the calling thread's network namespace).
    pub fn open(&self, ifname: &str) -> Result<OpenedPort, AfXdpError> {
        open_socket(ifname, self.cfg, &self.umem, 0).map(OpenedPort)
    }
}

/// Opens a socket on `name`'s queue `cfg.queue` over `umem` (pool `pool`
/// of its backend), in the calling thread's network namespace.
fn open_socket(name: &str, cfg: AfXdpConfig, umem: &Umem, pool: usize) -> Result<Port, AfXdpError> {
    let q =
        |n: u32| QueueSize::new(n).map_err(|e| AfXdpError::Config(format!("ring size {n}: {e}")));
    {
        let scfg = SocketConfig::builder()
            .rx_queue_size(q(cfg.ring)?)
            .tx_queue_size(q(cfg.ring)?)
            .xdp_flags(XdpFlags::XDP_FLAGS_SKB_MODE)
            .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        let ifname = name
            .parse()
            .map_err(|e| AfXdpError::Config(format!("interface {name}: {e}")))?;
        let socket_error = |reason: String| AfXdpError::Socket {
            port: name.to_string(),
            queue: cfg.queue,
            reason,
        };
        // The kernel unbinds a queue from a closed socket's pool in
        // deferred work, so a socket opened right after another one
        // closed (a daemon restarted, a benchmark's next phase) can
        // find the queue still busy for a moment: retried for 2 s.
        let mut attempts = 0;
        let libxdp = LIBXDP.lock().unwrap_or_else(|p| p.into_inner());
        let before = bpf_map_fds();
        let (tx, rx, fq_cq) = loop {
            // SAFETY: each (interface, queue) pair is bound once, so
            // libxdp loads its program for each (no INHIBIT_PROG_LOAD
            // is needed); the UMEM outlives the rings (field order of
            // `AfXdpBackend`).
            match unsafe { Socket::new(scfg, umem, &ifname, cfg.queue) } {
                Ok(r) => break r,
                Err(e) => {
                    use std::error::Error;
                    let errno = e
                        .source()
                        .and_then(|s| s.downcast_ref::<std::io::Error>())
                        .and_then(std::io::Error::raw_os_error);
                    if errno == Some(libc::EBUSY) && attempts < 40 {
                        // Opened nothing that stays open: libxdp
                        // closes what a failed create opened.
                        attempts += 1;
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    }
                    return Err(socket_error(match e.source() {
                        Some(cause) => format!("{e}: {cause}"),
                        None => e.to_string(),
                    }));
                }
            }
        };
        let libxdp_fds: Vec<(i32, u64)> = bpf_map_fds()
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        drop(libxdp);
        let (fq, cq) = fq_cq.ok_or_else(|| {
            socket_error("no fill and completion rings (the pair is bound already)".into())
        })?;
        Ok(Port {
            pool,
            tx_queued: 0,
            in_tx: 0,
            in_fill: 0,
            ring: cfg.ring as usize,
            fq,
            cq,
            rx,
            tx,
            libxdp_fds,
        })
    }
}
