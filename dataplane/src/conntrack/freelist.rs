//! A lock-free stack of free entry indices (Treiber), with a tag in the
//! head word against ABA: a pop that raced a pop-push of the same index
//! sees a different tag and retries.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::hugemem::HugeSlice;

const NIL: u32 = u32::MAX;

pub struct FreeList {
    /// tag (high 32 bits) | top index (low 32, NIL when empty)
    head: AtomicU64,
    next: HugeSlice<AtomicU32>,
}

impl FreeList {
    /// A list holding every index of `0..capacity`, lowest on top.
    pub fn full(capacity: u32) -> FreeList {
        let next: HugeSlice<AtomicU32> = HugeSlice::zeroed(capacity as usize);
        for (i, n) in next.iter().enumerate() {
            let i = i as u32;
            n.store(
                if i + 1 < capacity { i + 1 } else { NIL },
                Ordering::Relaxed,
            );
        }
        let top = if capacity == 0 { NIL } else { 0 };
        FreeList {
            head: AtomicU64::new(u64::from(top)),
            next,
        }
    }

    /// Bytes of the list's links.
    pub fn bytes(&self) -> usize {
        self.next.bytes()
    }

    pub fn pop(&self) -> Option<u32> {
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let top = head as u32;
            if top == NIL {
                return None;
            }
            let next = self.next[top as usize].load(Ordering::Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(next);
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(top),
                Err(h) => head = h,
            }
        }
    }

    /// Pops up to `out.len()` indices at once with one CAS on the head, so
    /// that a worker refilling its cache writes the shared head once per
    /// batch. Returns how many. The tag makes a walk that raced another
    /// pop or push fail its CAS and start over: a node's link does not
    /// change while the node is on the list.
    pub fn pop_batch(&self, out: &mut [u32]) -> usize {
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let mut top = head as u32;
            let mut n = 0;
            while n < out.len() && top != NIL {
                out[n] = top;
                n += 1;
                top = self.next[top as usize].load(Ordering::Relaxed);
            }
            if n == 0 {
                return 0;
            }
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(top);
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return n,
                Err(h) => head = h,
            }
        }
    }

    pub fn push(&self, idx: u32) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            self.next[idx as usize].store(head as u32, Ordering::Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(idx);
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_each_index_once_then_runs_dry() {
        let f = FreeList::full(3);
        let mut got: Vec<u32> = std::iter::from_fn(|| f.pop()).collect();
        got.sort();
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(f.pop(), None);
        f.push(1);
        assert_eq!(f.pop(), Some(1));
    }

    #[test]
    fn batches_pop_each_index_once() {
        let f = FreeList::full(10);
        let mut out = [0u32; 4];
        assert_eq!(f.pop_batch(&mut out), 4);
        assert_eq!(out, [0, 1, 2, 3]);
        f.push(2);
        let mut rest = [0u32; 16];
        let n = f.pop_batch(&mut rest);
        assert_eq!(&rest[..n], &[2, 4, 5, 6, 7, 8, 9]);
        assert_eq!(f.pop_batch(&mut rest), 0);
    }

    /// Two threads take indices with `take` (pushing onto `seen`) and give
    /// back all but `keep`, 20,000 times each; every index is then held
    /// once, by a thread or the list.
    fn hammer(size: u32, keep: usize, take: fn(&FreeList, &mut Vec<u32>)) {
        let f = std::sync::Arc::new(FreeList::full(size));
        let held: Vec<_> = (0..2)
            .map(|_| {
                let f = f.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    for _ in 0..20_000 {
                        take(&f, &mut seen);
                        while seen.len() > keep {
                            f.push(seen.remove(0));
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut all: Vec<u32> = held.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.extend(std::iter::from_fn(|| f.pop()));
        all.sort();
        assert_eq!(all, (0..size).collect::<Vec<_>>());
    }

    #[test]
    fn concurrent_batches_and_pushes_never_hand_out_an_index_twice() {
        hammer(256, 24, |f, seen| {
            let mut out = [0u32; 8];
            let n = f.pop_batch(&mut out);
            seen.extend_from_slice(&out[..n]);
        });
    }

    #[test]
    fn concurrent_pop_push_never_hands_out_an_index_twice() {
        hammer(64, 8, |f, seen| seen.extend(f.pop()));
    }
}
