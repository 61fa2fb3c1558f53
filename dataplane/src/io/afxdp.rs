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

/// A UMEM and its frames.
struct Pool {
    descs: Vec<FrameDesc>,
    free: Vec<u32>,
    umem: Umem,
}

struct Port {
    /// The pool this port's rings take frames from.
    pool: usize,
    /// Frames produced on TX since the last wake-up.
    tx_queued: usize,
    fq: FillQueue,
    cq: CompQueue,
    rx: RxQueue,
    tx: TxQueue,
}

pub struct AfXdpBackend {
    // Dropped first (field order): the sockets' rings before the UMEMs.
    ports: Vec<Port>,
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

impl AfXdpBackend {
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
            Err(e @ AfXdpError::Socket { .. }) if ifnames.len() > 1 => {
                let mut b = Self::open_with(ifnames, cfg, false, cfg.frames)?;
                b.refused = Some(e.to_string());
                Ok(b)
            }
            Err(e) => Err(e),
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
        Ok(Pool { descs, free, umem })
    }

    fn open_with(
        ifnames: &[&str],
        cfg: AfXdpConfig,
        shared: bool,
        frames: u32,
    ) -> Result<AfXdpBackend, AfXdpError> {
        let q = |n: u32| {
            QueueSize::new(n).map_err(|e| AfXdpError::Config(format!("ring size {n}: {e}")))
        };
        let mut b = AfXdpBackend {
            ports: Vec::new(),
            pools: Vec::new(),
            frames,
            shared: shared || ifnames.len() == 1,
            refused: None,
            moved: 0,
            copied: 0,
            scratch: Vec::with_capacity(cfg.ring as usize),
            reply: vec![0; FRAME_SIZE],
        };
        for name in ifnames {
            if !shared || b.pools.is_empty() {
                b.pools.push(Self::new_pool(name, cfg, frames)?);
            }
            let pool = b.pools.len() - 1;
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
            let (tx, rx, fq_cq) = loop {
                // SAFETY: each (interface, queue) pair is bound once, so
                // libxdp loads its program for each (no INHIBIT_PROG_LOAD
                // is needed); the UMEM outlives the rings (field order of
                // `AfXdpBackend`).
                match unsafe { Socket::new(scfg, &b.pools[pool].umem, &ifname, cfg.queue) } {
                    Ok(r) => break r,
                    Err(e) => {
                        use std::error::Error;
                        let errno = e
                            .source()
                            .and_then(|s| s.downcast_ref::<std::io::Error>())
                            .and_then(std::io::Error::raw_os_error);
                        if errno == Some(libc::EBUSY) && attempts < 40 {
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
            let (fq, cq) = fq_cq.ok_or_else(|| {
                socket_error("no fill and completion rings (the pair is bound already)".into())
            })?;
            b.ports.push(Port {
                pool,
                tx_queued: 0,
                fq,
                cq,
                rx,
                tx,
            });
        }
        for p in 0..b.ports.len() {
            b.refill(p, cfg.ring as usize);
        }
        Ok(b)
    }

    /// A frame's pool and its index in the pool.
    fn split(&self, f: Frame) -> (usize, usize) {
        (
            (f.index / self.frames) as usize,
            (f.index % self.frames) as usize,
        )
    }

    /// Gives up to `want` free frames of port `p`'s pool to its fill ring.
    fn refill(&mut self, p: usize, want: usize) {
        let port = &mut self.ports[p];
        let pool = &mut self.pools[port.pool];
        self.scratch.clear();
        while self.scratch.len() < want {
            let Some(i) = pool.free.pop() else { break };
            self.scratch.push(pool.descs[i as usize]);
        }
        // SAFETY: the frames come off the free list: nobody else holds them.
        let n = unsafe { port.fq.produce(&self.scratch) };
        for d in &self.scratch[n..] {
            pool.free.push(index_of(d));
        }
        if n > 0 && port.fq.needs_wakeup() {
            let _ = port.fq.wakeup(port.rx.fd_mut(), 0);
        }
    }
}

impl Backend for AfXdpBackend {
    fn ports(&self) -> usize {
        self.ports.len()
    }

    fn rx(&mut self, p: usize, out: &mut [Frame]) -> usize {
        let port = &mut self.ports[p];
        let base = port.pool as u32 * self.frames;
        let pool = &mut self.pools[port.pool];
        self.scratch.clear();
        self.scratch.resize(out.len(), FrameDesc::default());
        // SAFETY: the descriptors written are frames the kernel hands back;
        // they become the worker's until `tx` or `free`.
        let n = unsafe { port.rx.consume(&mut self.scratch) };
        for (o, d) in out.iter_mut().zip(&self.scratch[..n]) {
            let i = index_of(d);
            pool.descs[i as usize] = *d;
            *o = Frame {
                index: base + i,
                len: d.lengths().data() as u16,
            };
        }
        // No wake-up when idle: `refill` kicks the fill ring whenever it
        // gives the kernel frames, and an idle round makes no syscall.
        self.refill(p, n);
        n
    }

    fn tx(&mut self, egress: usize, frames: &[Frame]) -> usize {
        let mut accepted = 0;
        let to = self.ports[egress].pool;
        for &f in frames {
            let (from, i) = self.split(f);
            let ok = if from == to {
                // One UMEM: the descriptor moves, the bytes stay.
                let port = &mut self.ports[egress];
                // SAFETY: the frame is the worker's, handed to the kernel here.
                let ok = unsafe { port.tx.produce_one(&self.pools[to].descs[i]) == 1 };
                self.moved += u64::from(ok);
                ok
            } else {
                // Another UMEM: copy into a frame of the egress port's.
                let Some(j) = self.pools[to].free.pop() else {
                    break;
                };
                let len = {
                    let s = &self.pools[from];
                    // SAFETY: the source frame is the worker's until freed below.
                    let data = unsafe { s.umem.data(&s.descs[i]) };
                    let c = data.contents();
                    self.reply[..c.len()].copy_from_slice(c);
                    c.len()
                };
                let pool = &mut self.pools[to];
                let d = &mut pool.descs[j as usize];
                // SAFETY: `j` came off the free list: the frame is ours alone.
                let written = write_frame(unsafe { pool.umem.data_mut(d) }, &self.reply[..len]);
                let port = &mut self.ports[egress];
                // SAFETY: as above; the kernel owns it once produced.
                if written && unsafe { port.tx.produce_one(&pool.descs[j as usize]) } == 1 {
                    self.pools[from].free.push(i as u32);
                    self.copied += 1;
                    true
                } else {
                    pool.free.push(j);
                    false
                }
            };
            if !ok {
                break;
            }
            accepted += 1;
        }
        self.ports[egress].tx_queued += accepted;
        accepted
    }

    fn flush(&mut self) {
        for p in 0..self.ports.len() {
            let port = &mut self.ports[p];
            // The wake-up is a syscall: only when something was queued, so
            // that an idle worker's rounds make none.
            if port.tx_queued > 0 {
                if port.tx.needs_wakeup() {
                    let _ = port.tx.wakeup();
                }
                port.tx_queued = 0;
            }
            self.scratch.clear();
            self.scratch.resize(256, FrameDesc::default());
            // SAFETY: completed descriptors are frames the kernel is done with.
            let n = unsafe { port.cq.consume(&mut self.scratch) };
            let pool = &mut self.pools[port.pool];
            for d in &self.scratch[..n] {
                pool.free.push(index_of(d));
            }
        }
    }

    fn with_bytes<R>(&mut self, f: Frame, op: impl FnOnce(&mut [u8]) -> R) -> R {
        let (p, i) = self.split(f);
        let pool = &mut self.pools[p];
        // SAFETY: the frame is the worker's (received, not yet given back),
        // so no ring and no other borrow touches it.
        let mut data = unsafe { pool.umem.data_mut(&mut pool.descs[i]) };
        op(data.contents_mut())
    }

    fn alloc_with(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> Option<Frame> {
        let p = (0..self.pools.len()).find(|&p| !self.pools[p].free.is_empty())?;
        let len = write(&mut self.reply[..]).min(FRAME_SIZE);
        let pool = &mut self.pools[p];
        let j = pool.free.pop()?;
        // SAFETY: `j` came off the free list.
        let ok = write_frame(
            unsafe { pool.umem.data_mut(&mut pool.descs[j as usize]) },
            &self.reply[..len],
        );
        if !ok {
            pool.free.push(j);
            return None;
        }
        Some(Frame {
            index: p as u32 * self.frames + j,
            len: len as u16,
        })
    }

    fn free(&mut self, f: Frame) {
        let (p, i) = self.split(f);
        self.pools[p].free.push(i as u32);
    }
}
