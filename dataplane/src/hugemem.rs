//! Fixed tables in memory backed by 2 MiB pages where the kernel has them.
//!
//! Conntrack is hundreds of megabytes read at random: with 4 KiB pages
//! nearly every lookup also misses the TLB. The table is mapped anonymous
//! (so the kernel hands out zeroed pages), marked MADV_HUGEPAGE before its
//! first touch (transparent huge pages are often in "madvise" mode, as on
//! this project's machines), and freed with the mapping.

#![allow(unsafe_code)]

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Types whose all-zero bit pattern is a valid value (atomics, plain
/// integers, structs of them).
///
/// # Safety
/// Implement only for types for which zeroed memory is a valid value.
pub unsafe trait ZeroValid {}

// SAFETY: atomics and integers are valid for every bit pattern, zero included.
unsafe impl ZeroValid for std::sync::atomic::AtomicU64 {}
// SAFETY: as above.
unsafe impl ZeroValid for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl ZeroValid for u16 {}

const HUGE: usize = 2 << 20;

/// A zero-initialised, fixed-length slice in its own mapping.
pub struct HugeSlice<T: ZeroValid> {
    ptr: NonNull<T>,
    len: usize,
    map_len: usize,
}

// SAFETY: HugeSlice owns its memory like a Box<[T]>; sharing it is as safe
// as sharing a &[T], which needs T: Sync.
unsafe impl<T: ZeroValid + Sync> Sync for HugeSlice<T> {}
// SAFETY: as Box<[T]>: moving the owner across threads needs T: Send.
unsafe impl<T: ZeroValid + Send> Send for HugeSlice<T> {}

impl<T: ZeroValid> HugeSlice<T> {
    /// `len` zeroed values. Falls back to the global allocator when the
    /// mapping cannot be made (or for small tables, where it is no gain).
    pub fn zeroed(len: usize) -> HugeSlice<T> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .expect("table size overflows");
        let map_len = bytes.div_ceil(HUGE).max(1) * HUGE;
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert!(
            p != libc::MAP_FAILED,
            "mmap of {map_len} bytes for a table failed: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `p` is the start of a mapping of `map_len` bytes just made.
        // A failed madvise only means 4 KiB pages: not an error.
        unsafe {
            libc::madvise(p, map_len, libc::MADV_HUGEPAGE);
        }
        assert!(
            std::mem::align_of::<T>() <= 4096,
            "mmap gives page alignment"
        );
        HugeSlice {
            ptr: NonNull::new(p as *mut T).expect("mmap returned null"),
            len,
            map_len,
        }
    }
}

impl<T: ZeroValid> Deref for HugeSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points at `map_len >= len * size_of::<T>()` bytes of
        // zeroed, page-aligned memory that this value owns, and zero is a
        // valid T (ZeroValid); the memory lives until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: ZeroValid> DerefMut for HugeSlice<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only
        // reference to the memory.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: ZeroValid> Drop for HugeSlice<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `zeroed`; no reference
        // into it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.map_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn zeroed_and_writable() {
        let s: HugeSlice<AtomicU64> = HugeSlice::zeroed(1 << 20);
        assert_eq!(s.len(), 1 << 20);
        assert!(s
            .iter()
            .step_by(4096)
            .all(|a| a.load(Ordering::Relaxed) == 0));
        s[12345].store(7, Ordering::Relaxed);
        assert_eq!(s[12345].load(Ordering::Relaxed), 7);
    }
}
