//! Fixed tables in memory backed by 2 MiB pages where the kernel has them.
//!
//! Conntrack is hundreds of megabytes read at random: with 4 KiB pages
//! nearly every lookup also misses the TLB. The table is mapped anonymous
//! (so the kernel hands out zeroed pages), marked MADV_HUGEPAGE before its
//! first touch (transparent huge pages are often in "madvise" mode, as on
//! this project's machines), pre-faulted at once so that no page is first
//! touched on the packet path, and freed with the mapping.
//!
//! Where the mapping cannot be made, the table comes from the global
//! allocator (zeroed, pre-faulted as well), and `Backing` says so; where
//! the kernel has no transparent huge pages, `thp_mode` says that, and
//! the daemon logs both at start.

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

/// Where a table's memory came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Its own anonymous mapping, huge pages asked for (`thp_mode` says
    /// whether the kernel gives them).
    Mapped,
    /// The global allocator: the mapping failed (`mmap`'s error was
    /// logged once), so 4 KiB pages and more TLB misses.
    Heap,
}

/// The kernel's transparent huge page mode
/// (/sys/kernel/mm/transparent_hugepage/enabled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThpMode {
    Always,
    /// Huge pages where asked for: the tables ask.
    Madvise,
    /// None: every table is on 4 KiB pages.
    Never,
    /// The file is missing or unreadable (no THP in this kernel).
    Unknown,
}

impl ThpMode {
    pub fn label(self) -> &'static str {
        match self {
            ThpMode::Always => "always",
            ThpMode::Madvise => "madvise",
            ThpMode::Never => "never",
            ThpMode::Unknown => "unknown",
        }
    }
    /// Whether the tables get huge pages under this mode.
    pub fn gives_huge_pages(self) -> bool {
        matches!(self, ThpMode::Always | ThpMode::Madvise)
    }
}

/// The kernel's transparent huge page mode now.
pub fn thp_mode() -> ThpMode {
    let Ok(s) = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled") else {
        return ThpMode::Unknown;
    };
    // The mode in use is the bracketed one: "always [madvise] never".
    match s.split('[').nth(1).and_then(|r| r.split(']').next()) {
        Some("always") => ThpMode::Always,
        Some("madvise") => ThpMode::Madvise,
        Some("never") => ThpMode::Never,
        _ => ThpMode::Unknown,
    }
}

/// A zero-initialised, fixed-length slice in its own mapping (or, where
/// none can be made, on the heap), every page of it faulted in.
pub struct HugeSlice<T: ZeroValid> {
    ptr: NonNull<T>,
    len: usize,
    /// The mapping's length, or the heap allocation's layout.
    map_len: usize,
    heap: Option<std::alloc::Layout>,
}

// SAFETY: HugeSlice owns its memory like a Box<[T]>; sharing it is as safe
// as sharing a &[T], which needs T: Sync.
unsafe impl<T: ZeroValid + Sync> Sync for HugeSlice<T> {}
// SAFETY: as Box<[T]>: moving the owner across threads needs T: Send.
unsafe impl<T: ZeroValid + Send> Send for HugeSlice<T> {}

impl<T: ZeroValid> HugeSlice<T> {
    /// `len` zeroed values, every page faulted in now. Falls back to the
    /// global allocator when the mapping cannot be made.
    pub fn zeroed(len: usize) -> HugeSlice<T> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .expect("table size overflows");
        let map_len = bytes.div_ceil(HUGE).max(1) * HUGE;
        assert!(
            std::mem::align_of::<T>() <= 4096,
            "mmap gives page alignment"
        );
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Self::on_heap(len, map_len, std::io::Error::last_os_error());
        }
        // SAFETY: `p` is the start of a mapping of `map_len` bytes just made.
        // A failed madvise only means 4 KiB pages: not an error.
        unsafe {
            libc::madvise(p, map_len, libc::MADV_HUGEPAGE);
        }
        prefault(p as *mut u8, map_len);
        HugeSlice {
            ptr: NonNull::new(p as *mut T).expect("mmap returned null"),
            len,
            map_len,
            heap: None,
        }
    }

    fn on_heap(len: usize, bytes: usize, why: std::io::Error) -> HugeSlice<T> {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!("sluice: mapping a table of {bytes} bytes failed ({why}); tables come from the heap, on 4 KiB pages");
        });
        let layout = std::alloc::Layout::from_size_align(bytes, 4096).expect("table layout");
        // SAFETY: the layout is non-zero (`bytes` is at least one huge
        // page); the result is checked for null.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(p as *mut T) else {
            std::alloc::handle_alloc_error(layout);
        };
        prefault(p, bytes);
        HugeSlice {
            ptr,
            len,
            map_len: bytes,
            heap: Some(layout),
        }
    }

    /// Where the memory came from.
    pub fn backing(&self) -> Backing {
        match self.heap {
            None => Backing::Mapped,
            Some(_) => Backing::Heap,
        }
    }

    /// Bytes the table holds, rounded to its pages.
    pub fn bytes(&self) -> usize {
        self.map_len
    }
}

/// Faults in every page of `len` bytes at `p` now, so that the packet path
/// never takes a first-touch fault: MADV_POPULATE_WRITE (Linux 5.14) in one
/// call, honouring the huge-page advice, or else a write of zero to each
/// 4 KiB page (the memory is zero already, so no value changes).
fn prefault(p: *mut u8, len: usize) {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    // SAFETY: `p` is the start of `len` bytes this module just mapped or
    // allocated; populating writes nothing a reader could see.
    let r = unsafe { libc::madvise(p as *mut libc::c_void, len, MADV_POPULATE_WRITE) };
    if r == 0 {
        return;
    }
    for off in (0..len).step_by(4096) {
        // SAFETY: `off < len`, inside the memory just made, which nothing
        // else references yet; writing zero over zero changes no value.
        unsafe { std::ptr::write_volatile(p.add(off), 0) };
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
        match self.heap {
            // SAFETY: frees exactly the allocation made in `on_heap`, with
            // its layout; no reference into it outlives `self`.
            Some(layout) => unsafe { std::alloc::dealloc(self.ptr.as_ptr() as *mut u8, layout) },
            // SAFETY: unmaps exactly the mapping made in `zeroed`; no
            // reference into it outlives `self`.
            None => unsafe {
                libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.map_len);
            },
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
        assert_eq!(s.backing(), Backing::Mapped);
    }

    /// Pre-faulted: every page of a table is resident before any use
    /// (mincore, page by page).
    #[test]
    fn every_page_is_resident_at_once() {
        let s: HugeSlice<AtomicU64> = HugeSlice::zeroed(8 << 20); // 64 MiB
        let pages = s.bytes() / 4096;
        let mut vec = vec![0u8; pages];
        // SAFETY: the range is the table's own mapping; `vec` has a byte
        // per page.
        let r = unsafe {
            libc::mincore(
                s.ptr.as_ptr() as *mut libc::c_void,
                s.bytes(),
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        let resident = vec.iter().filter(|&&b| b & 1 == 1).count();
        assert_eq!(resident, pages, "pages resident before first use");
    }

    #[test]
    fn the_heap_fallback_is_zeroed_and_freed() {
        let s: HugeSlice<AtomicU64> =
            HugeSlice::on_heap(1 << 16, (1 << 16) * 8, std::io::Error::other("test"));
        assert_eq!(s.backing(), Backing::Heap);
        assert!(s.iter().all(|a| a.load(Ordering::Relaxed) == 0));
        s[7].store(1, Ordering::Relaxed);
    }
}
