//! TAP: the exception path to the host kernel, and the fallback backend for
//! machines where AF_XDP cannot bind.
//!
//! Each queue is one file descriptor on a multi-queue TAP device, opened
//! non-blocking with `IFF_NO_PI` (plain Ethernet frames, no header) and
//! without `IFF_VNET_HDR`: the kernel then hands us finished checksums and
//! no GSO super-frames, which the pipeline needs. A worker owns one queue of
//! every device, as it owns one AF_XDP socket per (interface, queue).
//!
//! The device is made persistent by whoever sets up the node (`ip tuntap
//! add ... multi_queue`), so that it survives a daemon restart and a pod's
//! interface keeps its name and addresses. Attaching looks the name up in
//! the calling thread's network namespace, so a pod's TAP is attached from
//! inside the pod's namespace (`open_in`); the descriptor keeps working from
//! any namespace afterwards.
//!
//! The TAP path costs a syscall per frame (read and write have no batch
//! form on TAP); that is why it is the fallback and the exception path, and
//! AF_XDP the production path.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use super::heap_pool::HeapPool;
pub use super::heap_pool::FRAME_SIZE;
use super::{Backend, Frame};

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
// _IOW('T', 202, int)
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Why a TAP queue could not be opened.
#[derive(Debug)]
pub enum TapError {
    Name(String),
    Open(io::Error),
    Attach { ifname: String, reason: io::Error },
    Namespace { netns: String, reason: String },
}

impl std::fmt::Display for TapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TapError::Name(n) => write!(f, "TAP name {n:?}: 1 to 15 bytes, no NUL"),
            TapError::Open(e) => write!(f, "open /dev/net/tun: {e}"),
            TapError::Attach { ifname, reason } => write!(
                f,
                "attach to TAP {ifname}: {reason} (it must exist as a multi_queue tap: ip tuntap add dev {ifname} mode tap multi_queue)"
            ),
            TapError::Namespace { netns, reason } => {
                write!(f, "enter network namespace {netns}: {reason}")
            }
        }
    }
}

impl std::error::Error for TapError {}

/// One queue of a TAP device.
pub struct TapQueue {
    file: File,
    pub ifname: String,
}

impl TapQueue {
    /// Attaches a new queue to the TAP `ifname` of the calling thread's
    /// network namespace.
    pub fn open(ifname: &str) -> Result<TapQueue, TapError> {
        if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
            return Err(TapError::Name(ifname.into()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(TapError::Open)?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE,
            _pad: [0; 22],
        };
        for (d, s) in req.name.iter_mut().zip(ifname.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is (name,
        // flags, and padding to the kernel's 40 bytes); the fd is open.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
        if r != 0 {
            return Err(TapError::Attach {
                ifname: ifname.into(),
                reason: io::Error::last_os_error(),
            });
        }
        Ok(TapQueue {
            file,
            ifname: ifname.into(),
        })
    }

    /// Attaches a queue to the TAP `ifname` of network namespace `netns`
    /// (a name under /run/netns), from a short-lived thread that enters it,
    /// so that the caller's own namespace is left alone.
    pub fn open_in(netns: &str, ifname: &str) -> Result<TapQueue, TapError> {
        let (netns, ifname) = (netns.to_string(), ifname.to_string());
        std::thread::spawn(move || {
            enter_netns(&netns).map_err(|reason| TapError::Namespace { netns, reason })?;
            TapQueue::open(&ifname)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(TapError::Namespace {
                netns: "?".into(),
                reason: "the thread attaching the TAP panicked".into(),
            })
        })
    }

    /// Reads one frame into `buf`; `None` when none is waiting.
    pub fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        match self.file.read(buf) {
            Ok(n) if n > 0 => Some(n),
            _ => None,
        }
    }

    /// Writes one frame; false when the queue is full or the device down
    /// (the frame is then lost, and the caller counts it).
    pub fn send(&mut self, frame: &[u8]) -> bool {
        matches!(self.file.write(frame), Ok(n) if n == frame.len())
    }
}

/// The host's TAP queue as the exception path. `mac` is the device's
/// address, which the node's set-up fixes.
pub struct HostTap {
    pub queue: TapQueue,
    pub mac: [u8; 6],
}

impl super::HostPath for HostTap {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }
    fn send(&mut self, frame: &[u8]) -> bool {
        self.queue.send(frame)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.queue.recv(buf)
    }
}

/// Moves the calling thread into network namespace `name` (/run/netns).
pub fn enter_netns(name: &str) -> Result<(), String> {
    let f = File::open(format!("/run/netns/{name}")).map_err(|e| format!("{e}"))?;
    // SAFETY: setns on an open namespace fd; it moves only this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(io::Error::last_os_error().to_string());
    }
    Ok(())
}

/// The TAP backend: a queue of each port's device and a pool of frames.
/// Frames are read into the pool and written from it; forwarding between
/// ports is a write of the frame, so there is nothing to copy between pools.
pub struct TapBackend {
    queues: Vec<TapQueue>,
    pool: HeapPool,
    /// Writes a full or downed device refused.
    pub tx_refused: u64,
}

impl TapBackend {
    /// Ports are `queues`, in order; the pool holds `frames` frames (a
    /// burst per port plus replies is enough: TAP has no rings to stock).
    pub fn new(queues: Vec<TapQueue>, frames: usize) -> TapBackend {
        TapBackend {
            queues,
            pool: HeapPool::new(frames),
            tx_refused: 0,
        }
    }
}

impl Backend for TapBackend {
    fn ports(&self) -> usize {
        self.queues.len()
    }

    fn rx(&mut self, port: usize, out: &mut Vec<Frame>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let queue = &mut self.queues[port];
            let Some(f) = self.pool.fill(|buf| queue.recv(buf)) else {
                break;
            };
            out.push(f);
            n += 1;
        }
        n
    }

    fn tx(&mut self, port: usize, frames: &mut Vec<Frame>) {
        // A write takes the frame or refuses it (the device's queue is
        // full, or it is down): the first refusal ends the batch, and the
        // frames left are the caller's, counted as a full ring.
        let mut sent = 0;
        for f in frames.iter() {
            if !self.queues[port].send(self.pool.bytes(f)) {
                self.tx_refused += 1;
                break;
            }
            sent += 1;
        }
        for f in frames.drain(..sent) {
            self.pool.free(f);
        }
    }

    fn flush(&mut self) {}

    fn with_bytes<R>(&mut self, f: &Frame, op: impl FnOnce(&mut [u8]) -> R) -> R {
        self.pool.with_bytes(f, op)
    }

    fn with_burst<R>(&mut self, frames: &[Frame], op: impl FnOnce(&mut [&mut [u8]]) -> R) -> R {
        self.pool.with_burst(frames, op)
    }

    fn alloc_with(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> Option<Frame> {
        self.pool.alloc_with(write)
    }

    fn free(&mut self, f: Frame) {
        self.pool.free(f);
    }

    fn stats(&self) -> super::BackendStats {
        super::BackendStats {
            misuse: self.pool.misuse,
            ..Default::default()
        }
    }
}
