//! The in-memory backend: a fixed pool of frames and, per port, a queue of
//! frames waiting to be received and a log of frames transmitted. Tests
//! push frames in and read what came out; the worker cannot tell it from a
//! NIC.

use std::collections::VecDeque;

use super::{Backend, Frame};

/// Bytes a pool frame holds, as an AF_XDP UMEM frame of 2 KiB.
pub const FRAME_SIZE: usize = 2048;

pub struct MemoryBackend {
    pool: Vec<[u8; FRAME_SIZE]>,
    free: Vec<u32>,
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
            pool: vec![[0u8; FRAME_SIZE]; frames],
            free: (0..frames as u32).rev().collect(),
            incoming: vec![VecDeque::new(); ports],
            queued: vec![Vec::new(); ports],
            sent: vec![Vec::new(); ports],
            tx_ring: 256,
        }
    }

    /// Frames in the pool, free or not: none may leak.
    pub fn free_frames(&self) -> usize {
        self.free.len()
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
            let Some(index) = self.free.pop() else { break };
            let len = bytes.len().min(FRAME_SIZE);
            self.pool[index as usize][..len].copy_from_slice(&bytes[..len]);
            self.incoming[port].pop_front();
            out[n] = Frame {
                index,
                len: len as u16,
            };
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
                self.sent[port].push(self.pool[f.index as usize][..usize::from(f.len)].to_vec());
                self.free.push(f.index);
            }
        }
    }

    fn with_bytes<R>(&mut self, f: Frame, op: impl FnOnce(&mut [u8]) -> R) -> R {
        op(&mut self.pool[f.index as usize][..usize::from(f.len)])
    }

    fn alloc_with(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> Option<Frame> {
        let index = self.free.pop()?;
        let len = write(&mut self.pool[index as usize][..]).min(FRAME_SIZE);
        Some(Frame {
            index,
            len: len as u16,
        })
    }

    fn free(&mut self, f: Frame) {
        self.free.push(f.index);
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
