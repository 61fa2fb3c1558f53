//! A pool of frames on the heap, for the backends whose frames are plain
//! memory (in memory, TAP): frames of 2 KiB as an AF_XDP UMEM's, and a
//! free list. The `Backend` methods that only lend or recycle frames are
//! these.

use super::Frame;

/// Bytes a pool frame holds, as an AF_XDP UMEM frame of 2 KiB.
pub const FRAME_SIZE: usize = 2048;

pub struct HeapPool {
    frames: Vec<[u8; FRAME_SIZE]>,
    free: Vec<u32>,
}

impl HeapPool {
    pub fn new(frames: usize) -> HeapPool {
        HeapPool {
            frames: vec![[0u8; FRAME_SIZE]; frames],
            free: (0..frames as u32).rev().collect(),
        }
    }

    /// Frames free now.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Fills a free frame with `write` (which returns the length, or
    /// `None` to leave the frame free).
    pub fn fill(&mut self, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> Option<Frame> {
        let &index = self.free.last()?;
        let len = write(&mut self.frames[index as usize][..])?.min(FRAME_SIZE);
        self.free.pop();
        Some(Frame {
            index,
            len: len as u16,
        })
    }

    /// A frame's bytes.
    pub fn bytes(&self, f: Frame) -> &[u8] {
        &self.frames[f.index as usize][..usize::from(f.len)]
    }

    pub fn with_bytes<R>(&mut self, f: Frame, op: impl FnOnce(&mut [u8]) -> R) -> R {
        op(&mut self.frames[f.index as usize][..usize::from(f.len)])
    }

    pub fn alloc_with(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> Option<Frame> {
        self.fill(|buf| Some(write(buf)))
    }

    pub fn free(&mut self, f: Frame) {
        self.free.push(f.index);
    }
}
