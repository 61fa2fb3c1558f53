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

    /// The index a pop would return now (for prefetching; it may be gone
    /// by the time of the pop).
    pub fn peek(&self) -> Option<u32> {
        let top = self.head.load(Ordering::Relaxed) as u32;
        (top != NIL).then_some(top)
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
    fn concurrent_pop_push_never_hands_out_an_index_twice() {
        let f = std::sync::Arc::new(FreeList::full(64));
        let held: Vec<_> = (0..2)
            .map(|_| {
                let f = f.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    for _ in 0..20_000 {
                        if let Some(i) = f.pop() {
                            seen.push(i);
                            if seen.len() > 8 {
                                f.push(seen.remove(0));
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut all: Vec<u32> = held.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.extend(std::iter::from_fn(|| f.pop()));
        all.sort();
        assert_eq!(all, (0..64).collect::<Vec<_>>());
    }
}
