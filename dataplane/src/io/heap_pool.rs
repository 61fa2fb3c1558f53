//! A pool of frames on the heap, for the backends whose frames are plain
//! memory (in memory, TAP): frames of 2 KiB as an AF_XDP UMEM's, a free
//! list, and who holds each frame. The `Backend` methods that only lend or
//! recycle frames are these.

// One unsafe block: lending a burst's frames at once (`with_burst`).
#![allow(unsafe_code)]

use super::{once_in, Frame};
use crate::pipeline::BURST;

/// Bytes a pool frame holds, as an AF_XDP UMEM frame of 2 KiB.
pub const FRAME_SIZE: usize = 2048;

pub struct HeapPool {
    frames: Vec<[u8; FRAME_SIZE]>,
    free: Vec<u32>,
    /// `held[i]`: frame `i` is out of the pool (the worker's).
    held: Vec<bool>,
    /// Calls on frames the pool did not lend (expected 0: frames are
    /// move-only, so only a frame of another pool gets here).
    pub misuse: u64,
}

impl HeapPool {
    pub fn new(frames: usize) -> HeapPool {
        HeapPool {
            frames: vec![[0u8; FRAME_SIZE]; frames],
            free: (0..frames as u32).rev().collect(),
            held: vec![false; frames],
            misuse: 0,
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
        self.held[index as usize] = true;
        Some(Frame::new(index, len as u16))
    }

    fn holds(&self, f: &Frame) -> bool {
        self.held.get(f.index() as usize).copied().unwrap_or(false)
    }

    /// A frame's bytes (empty for a frame the pool did not lend).
    pub fn bytes(&self, f: &Frame) -> &[u8] {
        if !self.holds(f) {
            return &[];
        }
        &self.frames[f.index() as usize][..f.len()]
    }

    pub fn with_bytes<R>(&mut self, f: &Frame, op: impl FnOnce(&mut [u8]) -> R) -> R {
        if !self.holds(f) {
            self.misuse += 1;
            return op(&mut []);
        }
        op(&mut self.frames[f.index() as usize][..f.len()])
    }

    /// Lends up to `BURST` frames' bytes at once; frames past `BURST`, and
    /// frames the pool did not lend, get empty slices.
    pub fn with_burst<R>(&mut self, frames: &[Frame], op: impl FnOnce(&mut [&mut [u8]]) -> R) -> R {
        let n = frames.len().min(BURST);
        let mut bytes: [&mut [u8]; BURST] = Default::default();
        let base = self.frames.as_mut_ptr();
        for (b, f) in bytes.iter_mut().zip(&frames[..n]) {
            if !self.holds(f) {
                self.misuse += 1;
                continue;
            }
            debug_assert!(
                once_in(&frames[..n], f),
                "frame {} twice in one burst",
                f.index()
            );
            // SAFETY: the index is in bounds (`holds`), and no two frames
            // of a burst share an index: a `Frame` is minted once per
            // `fill` and moved, never copied, until `free` takes it back.
            // The slices are disjoint and live no longer than `&mut self`.
            *b = unsafe {
                std::slice::from_raw_parts_mut(
                    (*base.add(f.index() as usize)).as_mut_ptr(),
                    f.len(),
                )
            };
        }
        op(&mut bytes[..n])
    }

    pub fn alloc_with(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> Option<Frame> {
        self.fill(|buf| Some(write(buf)))
    }

    pub fn free(&mut self, f: Frame) {
        if !self.holds(&f) {
            self.misuse += 1;
            return;
        }
        self.held[f.index() as usize] = false;
        self.free.push(f.index());
    }
}
