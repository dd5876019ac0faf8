//! Heap accounting for `memory_limit`: a wrapper around the system allocator
//! that counts the bytes handed out and not yet returned, so the broker can
//! refuse new messages before a memory cap (a cgroup, a small device) kills
//! it. musl has no `mallinfo`, and glibc's costs a walk of every arena, so the
//! figure is kept here instead.
//!
//! Counting starts when [`start_counting`] is called (the server does, when
//! `memory_limit` is set): until then an allocation costs one relaxed load of
//! a flag. Blocks allocated before the start and freed after it are subtracted
//! without having been added, so the count is low by at most the heap in use
//! at the start (the configuration, a few kilobytes); [`in_use`] clamps at 0.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};

static COUNTING: AtomicBool = AtomicBool::new(false);
static IN_USE: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counted once [`start_counting`] has been called.
/// The midge binary installs it as its `#[global_allocator]`.
pub struct Counting;

// SAFETY: every call is passed to `System` unchanged; the counter is a side
// effect that allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `layout` is `System`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && COUNTING.load(Relaxed) {
            IN_USE.fetch_add(layout.size() as isize, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && COUNTING.load(Relaxed) {
            IN_USE.fetch_add(layout.size() as isize, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (that is, `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        if COUNTING.load(Relaxed) {
            IN_USE.fetch_sub(layout.size() as isize, Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is the caller's to get right.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && COUNTING.load(Relaxed) {
            IN_USE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        }
        p
    }
}

/// Count from now on. False (and nothing counted) when [`Counting`] is not
/// this program's allocator: a probe allocation did not move the count.
pub fn start_counting() -> bool {
    COUNTING.store(true, Relaxed);
    let before = IN_USE.load(Relaxed);
    let probe = std::hint::black_box(Box::new([0u8; 64]));
    let counted = IN_USE.load(Relaxed) != before;
    drop(probe);
    if !counted {
        COUNTING.store(false, Relaxed);
    }
    counted
}

/// Heap bytes in use as counted since [`start_counting`]; `None` unless it
/// has started.
pub fn in_use() -> Option<u64> {
    COUNTING
        .load(Relaxed)
        .then(|| IN_USE.load(Relaxed).max(0) as u64)
}

#[cfg(test)]
mod tests {
    /// The library's tests run on the plain system allocator: counting cannot
    /// start, and nothing claims a figure it does not have.
    #[test]
    fn without_the_counting_allocator_nothing_is_claimed() {
        assert!(!super::start_counting());
        assert_eq!(super::in_use(), None);
    }
}
