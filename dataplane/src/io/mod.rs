//! The I/O backends behind one trait: AF_XDP (the production path), TAP
//! (the exception path and the fallback), and in memory (tests and
//! benchmarks).
//!
//! The shape follows AF_XDP's: frames live in a pool the backend owns (a
//! UMEM), ports receive into it and transmit from it by descriptor, and a
//! worker rewrites frames in place. Forwarding from one port to another
//! moves a descriptor when the ports share the pool, which is how a UMEM
//! shared across a node's interfaces avoids copying.

#[cfg(feature = "afxdp")]
pub mod afxdp;
mod heap_pool;
pub mod ledger;
pub mod memory;
pub mod tap;

/// What the kernel dropped on one socket before the worker saw it
/// (XDP_STATISTICS): the first place to look when frames vanish between
/// an interface's counters and the worker's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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

/// What a backend says of itself, for `sluice status` and the report at
/// stop: read off the packet path (the AF_XDP part makes a syscall per
/// socket and walks the pool).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BackendStats {
    /// Frames forwarded by moving a descriptor within one pool, and by
    /// copying between pools.
    pub moved: u64,
    pub copied: u64,
    /// Calls on frames the worker did not hold (expected 0).
    pub misuse: u64,
    /// The frame pool, where the backend has a shared one.
    pub pool: Option<ledger::PoolStats>,
    /// The kernel's drop counts over the sockets (AF_XDP).
    pub sockets: Option<SocketStats>,
}

/// A frame of the backend's pool, held by the worker: where it is and how
/// long it is. Move-only: `tx` or `free` consumes it, so a frame cannot be
/// freed twice nor used after it was sent, and only a backend makes one.
/// (A frame dropped without either leaks from its pool; the backend's
/// holder check, the pool's ledger, shows it.)
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a frame must be sent or freed"]
pub struct Frame {
    index: u32,
    len: u16,
}

impl Frame {
    /// Only backends mint frames, for buffers of their own pools.
    pub(crate) fn new(index: u32, len: u16) -> Frame {
        Frame { index, len }
    }
    /// The frame's place in its backend's pool.
    pub fn index(&self) -> u32 {
        self.index
    }
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }
}

/// Whether `f` is in `burst` once (the debug check behind `with_burst`'s
/// disjoint slices: frames are moved, never copied, so it always is).
pub(crate) fn once_in(burst: &[Frame], f: &Frame) -> bool {
    burst.iter().filter(|g| g.index() == f.index()).count() == 1
}

/// Why a port could not be attached, installed or told apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortError {
    /// The backend opens its ports when it starts, and takes no more.
    Fixed,
    /// The port handed to `install` is not one of this backend's.
    Foreign,
    /// The backend refused: its own words (a socket, a ring, the pool).
    Backend(String),
    /// The interface's network namespace could not be entered.
    Namespace { netns: String, reason: String },
}

impl std::fmt::Display for PortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortError::Fixed => f.write_str("this backend's ports are fixed when it starts"),
            PortError::Foreign => f.write_str("the port was opened by another kind of backend"),
            PortError::Backend(r) => f.write_str(r),
            PortError::Namespace { netns, reason } => {
                write!(f, "network namespace {netns}: {reason}")
            }
        }
    }
}

impl std::error::Error for PortError {}

/// A worker's view of its ports (indices `0..ports()`) and their pool.
pub trait Backend {
    fn ports(&self) -> usize;
    /// `port`'s MTU, as its interface had it when opened; `None` if not
    /// known (no check is made then).
    fn mtu(&self, _port: usize) -> Option<u16> {
        None
    }
    /// Receives up to `max` frames from `port` onto `out`; returns how
    /// many. `out` has the room (the worker sizes it once).
    fn rx(&mut self, port: usize, out: &mut Vec<Frame>, max: usize) -> usize;
    /// Queues the frames of `frames` for transmission on `port`, taking
    /// the ones accepted from its front; the ones left are refused (the
    /// ring is full, or the port is gone) and stay the caller's. The TX
    /// ring's producer index is published once for the batch.
    fn tx(&mut self, port: usize, frames: &mut Vec<Frame>);
    /// Pushes queued transmissions out (the batched wake-up) and takes back
    /// the frames the ports are done with.
    fn flush(&mut self);
    /// Lends a frame's bytes, writable in place, to `op`. A closure rather
    /// than a returned slice because AF_XDP's UMEM lends its frames only
    /// for the length of a borrow (docs/afxdp.md).
    fn with_bytes<R>(&mut self, f: &Frame, op: impl FnOnce(&mut [u8]) -> R) -> R;
    /// Lends the bytes of a burst of frames at once (at most
    /// `pipeline::BURST`), `bytes[i]` being `frames[i]`'s: the burst
    /// function reads and rewrites them together. Frames are distinct by
    /// construction (each is moved, never copied), so the slices never
    /// overlap.
    fn with_burst<R>(&mut self, frames: &[Frame], op: impl FnOnce(&mut [&mut [u8]]) -> R) -> R;
    /// Takes an empty frame and lets `write` fill it; `write` returns the
    /// length. `None` when the pool is exhausted.
    fn alloc_with(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> Option<Frame>;
    /// Returns a frame to the pool.
    fn free(&mut self, f: Frame);
    /// Opens `ifname` as port `slot` while the worker runs (a pod the CNI
    /// plugin registered). Not on the packet path: it makes syscalls.
    fn attach(&mut self, slot: usize, ifname: &str) -> Result<(), PortError> {
        let _ = (slot, ifname);
        Err(PortError::Fixed)
    }
    /// Puts a port opened elsewhere (by the backend's own opener, on
    /// another thread) in slot `slot`.
    fn install(
        &mut self,
        slot: usize,
        port: Box<dyn std::any::Any + Send>,
    ) -> Result<(), PortError> {
        let _ = (slot, port);
        Err(PortError::Fixed)
    }
    /// Closes port `slot`; its number stays reserved (`ports()` does not
    /// shrink). Returns whether there was a port.
    fn detach(&mut self, slot: usize) -> bool {
        let _ = slot;
        false
    }
    /// Counters and pool state (not for the packet path).
    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }
}

/// The exception path: frames between the dataplane and the host kernel
/// (the node's own addresses), one frame at a time. A TAP queue in the
/// daemon; a pair of queues in tests.
pub trait HostPath: Send {
    /// The MAC of the host's interface: frames for the host are addressed
    /// to it.
    fn mac(&self) -> [u8; 6];
    /// Writes one frame to the host; false if it was refused.
    fn send(&mut self, frame: &[u8]) -> bool;
    /// Reads one frame the host sent, if one is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize>;
}
