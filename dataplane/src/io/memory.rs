//! The in-memory backend: a fixed pool of frames and, per port, a queue of
//! frames waiting to be received and a log of frames transmitted. Tests
//! push frames in and read what came out; the worker cannot tell it from a
//! NIC.

use std::collections::VecDeque;

use super::heap_pool::HeapPool;
pub use super::heap_pool::FRAME_SIZE;
use super::{Backend, Frame};

pub struct MemoryBackend {
    pool: HeapPool,
    /// Frames waiting to arrive, per port.
    pub incoming: Vec<VecDeque<Vec<u8>>>,
    /// Frames queued for transmission and not yet flushed, per port.
    queued: Vec<Vec<Frame>>,
    /// Frames transmitted (after a flush), per port, as bytes.
    pub sent: Vec<Vec<Vec<u8>>>,
    /// Frames a port's TX ring takes before it reports full.
    pub tx_ring: usize,
    /// Per port, frames that arrive over and over, in turn, once
    /// `incoming` is empty: a benchmark's endless traffic, with no
    /// allocation per frame (`replay`).
    replay: Vec<(Vec<Vec<u8>>, usize)>,
    /// Keep the bytes of what is sent (`sent`), or only count it
    /// (`sent_count`): a benchmark keeps nothing, so that the loop it
    /// measures allocates nothing.
    pub keep_sent: bool,
    /// Frames sent, per port, kept or not.
    pub sent_count: Vec<u64>,
    /// Each port's MTU, as an interface's would be (0: none known).
    pub mtus: Vec<u16>,
}

impl MemoryBackend {
    pub fn new(ports: usize, frames: usize) -> MemoryBackend {
        MemoryBackend {
            pool: HeapPool::new(frames),
            incoming: vec![VecDeque::new(); ports],
            queued: (0..ports).map(|_| Vec::new()).collect(),
            sent: vec![Vec::new(); ports],
            mtus: vec![0; ports],
            tx_ring: 256,
            replay: vec![(Vec::new(), 0); ports],
            keep_sent: true,
            sent_count: vec![0; ports],
        }
    }

    /// Makes `frames` arrive on `port` in turn, endlessly, and stops
    /// keeping what is sent.
    pub fn replay(&mut self, port: usize, frames: Vec<Vec<u8>>) {
        self.replay[port] = (frames, 0);
        self.keep_sent = false;
    }

    fn took_incoming(&mut self, port: usize) {
        if self.incoming[port].pop_front().is_none() {
            let (frames, at) = &mut self.replay[port];
            *at = (*at + 1) % frames.len().max(1);
        }
    }

    /// Frames in the pool, free or not: none may leak.
    pub fn free_frames(&self) -> usize {
        self.pool.free_frames()
    }
}

impl Backend for MemoryBackend {
    fn mtu(&self, port: usize) -> Option<u16> {
        self.mtus.get(port).copied().filter(|&m| m > 0)
    }

    fn ports(&self) -> usize {
        self.incoming.len()
    }

    fn rx(&mut self, port: usize, out: &mut Vec<Frame>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let bytes = match self.incoming[port].front() {
                Some(f) => f.as_slice(),
                None => {
                    let (frames, at) = &self.replay[port];
                    match frames.get(*at) {
                        Some(f) => f.as_slice(),
                        None => break,
                    }
                }
            };
            let Some(f) = self.pool.alloc_with(|buf| {
                let len = bytes.len().min(FRAME_SIZE);
                buf[..len].copy_from_slice(&bytes[..len]);
                len
            }) else {
                break;
            };
            self.took_incoming(port);
            out.push(f);
            n += 1;
        }
        n
    }

    fn tx(&mut self, port: usize, frames: &mut Vec<Frame>) {
        let room = self.tx_ring.saturating_sub(self.queued[port].len());
        let n = frames.len().min(room);
        self.queued[port].extend(frames.drain(..n));
    }

    fn flush(&mut self) {
        for port in 0..self.queued.len() {
            self.sent_count[port] += self.queued[port].len() as u64;
            for f in self.queued[port].drain(..) {
                if self.keep_sent {
                    self.sent[port].push(self.pool.bytes(&f).to_vec());
                }
                self.pool.free(f);
            }
        }
    }

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

/// The host side of the exception path, in memory.
#[derive(Default)]
pub struct MemoryHost {
    pub mac: [u8; 6],
    /// Frames the host will send, oldest first.
    pub incoming: VecDeque<Vec<u8>>,
    /// Frames the host received.
    pub received: Vec<Vec<u8>>,
}

impl super::HostPath for MemoryHost {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }
    fn send(&mut self, frame: &[u8]) -> bool {
        self.received.push(frame.to_vec());
        true
    }
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        let f = self.incoming.pop_front()?;
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        Some(n)
    }
}
