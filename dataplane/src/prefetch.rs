//! Software prefetch, the one `unsafe` outside the OS-facing modules.
//!
//! A burst's conntrack lookups each miss the cache on a busy node; asking
//! for every line of the burst before reading any of them overlaps those
//! misses instead of paying them one after another.

#![allow(unsafe_code)]

/// Hints the CPU to bring the cache line holding `p` into L1.
#[inline(always)]
pub fn read<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults and never dereferences in the
    // language's sense (any address is allowed); SSE is part of the x86_64
    // baseline, so the target feature is always present.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
