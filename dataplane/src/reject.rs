//! How often one core answers packets for a Service without endpoints:
//! token buckets per source address, under one for the whole core, so that
//! a client retrying sees several refusals in a row while a flood to an
//! empty Service cannot turn a worker into a reflector.
//!
//! Sources share 256 buckets by hash; a source that takes another's bucket
//! starts with a full one (the core's bucket still bounds the total), as
//! the kernel's ICMP rate limit keeps its per-peer state in a bounded
//! cache.

use crate::flow::Addr;

/// Answers a source may have in a row.
pub const PER_SOURCE_BURST: u32 = 10;
/// Then one every this many milliseconds (50 a second).
pub const PER_SOURCE_EVERY_MS: u64 = 20;
/// Answers the core may have in a row, and a second, across sources.
pub const CORE_BURST: u32 = 10_000;
pub const CORE_PER_SECOND: u64 = 100_000;

const BUCKETS: usize = 256;

#[derive(Clone, Copy)]
struct Bucket {
    src: Addr,
    /// Tokens in thousandths, so that rates below one a millisecond refill
    /// exactly on a millisecond clock.
    milli: u64,
    last_ms: u64,
}

impl Bucket {
    /// Refills for the time since the last answer, then takes one token.
    fn take(&mut self, now_ms: u64, per_ms_milli: u64, burst: u32) -> bool {
        let cap = u64::from(burst) * 1000;
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.milli = (self.milli + elapsed.saturating_mul(per_ms_milli)).min(cap);
        self.last_ms = now_ms;
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// One core's reject budget.
pub struct RejectLimiter {
    sources: Box<[Bucket; BUCKETS]>,
    core: Bucket,
}

impl Default for RejectLimiter {
    fn default() -> Self {
        let empty = Bucket {
            src: Addr(u128::MAX),
            milli: 0,
            last_ms: 0,
        };
        RejectLimiter {
            sources: Box::new([empty; BUCKETS]),
            core: Bucket {
                milli: u64::from(CORE_BURST) * 1000,
                ..empty
            },
        }
    }
}

impl RejectLimiter {
    /// Whether `src` may have an answer now (a millisecond clock).
    pub fn allow(&mut self, src: Addr, now_ms: u64) -> bool {
        let h = (src.0 as u64 ^ (src.0 >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let b = &mut self.sources[(h >> 56) as usize % BUCKETS];
        if b.src != src {
            *b = Bucket {
                src,
                milli: u64::from(PER_SOURCE_BURST) * 1000,
                last_ms: now_ms,
            };
        }
        // The source's token first: a source over its rate spends nothing
        // of the core's.
        // Rates in thousandths of a token a millisecond: n a second is n.
        b.take(now_ms, 1000 / PER_SOURCE_EVERY_MS, PER_SOURCE_BURST)
            && self.core.take(now_ms, CORE_PER_SECOND, CORE_BURST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut l = RejectLimiter::default();
        let a = Addr::from_v4([198, 18, 1, 2]);
        let t = 1_000;
        for i in 0..PER_SOURCE_BURST {
            assert!(l.allow(a, t), "answer {i} of the burst");
        }
        assert!(!l.allow(a, t), "past the burst, at once");
        assert!(!l.allow(a, t + PER_SOURCE_EVERY_MS - 1));
        assert!(l.allow(a, t + PER_SOURCE_EVERY_MS), "one token back");
        assert!(!l.allow(a, t + PER_SOURCE_EVERY_MS));
        // Another source is not held back by the first.
        let b = Addr::from_v4([198, 18, 1, 3]);
        assert!(l.allow(b, t + PER_SOURCE_EVERY_MS));
        // A second later the first has its whole burst again, no more.
        let later = t + 10_000;
        let n = (0..100).filter(|_| l.allow(a, later)).count();
        assert_eq!(n, PER_SOURCE_BURST as usize);
    }

    #[test]
    fn the_core_bounds_every_source_together() {
        let mut l = RejectLimiter::default();
        let t = 5;
        let mut answered = 0u32;
        for i in 0..20_000u32 {
            // Distinct sources, each within its own burst.
            let src = Addr::from_v4([198, 18, (i >> 8) as u8, i as u8]);
            answered += u32::from(l.allow(src, t));
        }
        assert_eq!(answered, CORE_BURST);
        // One millisecond refills a millisecond's share.
        let more = (0..1_000u32)
            .filter(|i| l.allow(Addr::from_v4([198, 19, (i >> 8) as u8, *i as u8]), t + 1))
            .count();
        assert_eq!(more as u64, CORE_PER_SECOND / 1000);
    }
}
