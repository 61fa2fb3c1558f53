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
}

impl MemoryBackend {
    pub fn new(ports: usize, frames: usize) -> MemoryBackend {
        MemoryBackend {
            pool: HeapPool::new(frames),
            incoming: vec![VecDeque::new(); ports],
            queued: vec![Vec::new(); ports],
            sent: vec![Vec::new(); ports],
            tx_ring: 256,
        }
    }

    /// Frames in the pool, free or not: none may leak.
    pub fn free_frames(&self) -> usize {
        self.pool.free_frames()
    }
}

impl Backend for MemoryBackend {
    fn ports(&self) -> usize {
        self.incoming.len()
    }

    fn rx(&mut self, port: usize, out: &mut [Frame]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let Some(bytes) = self.incoming[port].front() else {
                break;
            };
            let Some(f) = self.pool.alloc_with(|buf| {
                let len = bytes.len().min(FRAME_SIZE);
                buf[..len].copy_from_slice(&bytes[..len]);
                len
            }) else {
                break;
            };
            self.incoming[port].pop_front();
            out[n] = f;
            n += 1;
        }
        n
    }

    fn tx(&mut self, port: usize, frames: &[Frame]) -> usize {
        let room = self.tx_ring.saturating_sub(self.queued[port].len());
        let n = frames.len().min(room);
        self.queued[port].extend_from_slice(&frames[..n]);
        n
    }

    fn flush(&mut self) {
        for port in 0..self.queued.len() {
            for f in std::mem::take(&mut self.queued[port]) {
                self.sent[port].push(self.pool.bytes(f).to_vec());
                self.pool.free(f);
            }
        }
    }

    fn with_bytes<R>(&mut self, f: Frame, op: impl FnOnce(&mut [u8]) -> R) -> R {
        self.pool.with_bytes(f, op)
    }

    fn alloc_with(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> Option<Frame> {
        self.pool.alloc_with(write)
    }

    fn free(&mut self, f: Frame) {
        self.pool.free(f);
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
