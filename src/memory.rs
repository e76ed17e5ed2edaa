//! The module's global allocator: the system allocator, counting the bytes
//! it holds.
//!
//! Every allocation of the module and of its crates goes through it, on any
//! thread (the Redis main thread, lapin's I/O thread, the executor, the mask
//! compiler), so [`live_bytes`] is what the module holds in its own heap: the
//! queue, batches in flight, the mask automaton, lapin's buffers. Memory Redis
//! allocates for the module (`RedisModuleString`s, the fallback list) is not
//! counted here: it is in Redis's `used_memory`.
//!
//! The count is of requested sizes (`Layout::size`), not of what malloc
//! reserves around them (headers, size classes, fragmentation), and not
//! thread stacks: RSS is larger. The system allocator stays underneath
//! because it honours any alignment (async-executor asks for 128 bytes).
//!
//! The cost is one relaxed atomic add per allocation and per free, on one
//! counter shared by all threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes currently allocated through [`Tracking`] (wrapping: a free on one
/// thread may be counted before the allocation it frees is, on another; the
/// sum is right once both are).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes in a counter ([`live_bytes`]
/// for the module's).
#[derive(Debug, Clone, Copy)]
pub struct Tracking {
    live: &'static AtomicUsize,
}

impl Tracking {
    /// The module's allocator (for the `redis_module!` macro's `allocator`
    /// entry), counting in [`live_bytes`].
    pub const fn new() -> Self {
        Self { live: &LIVE }
    }

    /// An allocator counting in `live` (tests).
    pub const fn counting_in(live: &'static AtomicUsize) -> Self {
        Self { live }
    }

    #[inline]
    fn grow(&self, n: usize) {
        self.live.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    fn shrink(&self, n: usize) {
        self.live.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Default for Tracking {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call is forwarded to `System` with the same arguments; the
// counting touches no memory of the caller.
unsafe impl GlobalAlloc for Tracking {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is System's contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            self.grow(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.grow(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        self.shrink(layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // One add of the difference (wrapping, as the counter is).
            self.grow(new_size.wrapping_sub(layout.size()));
        }
        p
    }
}

/// Bytes the module holds in its own heap now (see the module doc).
pub fn live_bytes() -> usize {
    shown(LIVE.load(Ordering::Relaxed))
}

/// A counter's value as bytes: a free counted before its allocation (on
/// another thread) can make the sum briefly "negative"; that reads as 0.
fn shown(n: usize) -> usize {
    if n > isize::MAX as usize {
        0
    } else {
        n
    }
}

/// Hands the heap's free pages back to the system (glibc's `malloc_trim`),
/// after a broker connection ended. Each connection's I/O thread and buffers
/// (about 8 MB while it runs) are freed when it ends, but glibc keeps freed
/// memory in its arenas: with connections replaced after broker stalls, RSS
/// rose by a third while the module's own count stayed flat. Called from the
/// AMQP thread, never from Redis's; a no-op on other C libraries.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: thread-safe libc call without pointers; it only returns free
    // memory of malloc's arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each test counts in its own counter: the test binary's global
    // allocator is the module's, so `LIVE` moves with every test thread.

    #[test]
    fn alloc_and_free_balance() {
        static C: AtomicUsize = AtomicUsize::new(0);
        let a = Tracking::counting_in(&C);
        let layout = Layout::from_size_align(1000, 8).unwrap();
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        assert_eq!(C.load(Ordering::Relaxed), 1000);
        unsafe { a.dealloc(p, layout) };
        assert_eq!(C.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn zeroed_counts_and_is_zero() {
        static C: AtomicUsize = AtomicUsize::new(0);
        let a = Tracking::counting_in(&C);
        let layout = Layout::from_size_align(4096, 16).unwrap();
        let p = unsafe { a.alloc_zeroed(layout) };
        assert_eq!(C.load(Ordering::Relaxed), 4096);
        let s = unsafe { std::slice::from_raw_parts(p, layout.size()) };
        assert!(s.iter().all(|&b| b == 0));
        unsafe { a.dealloc(p, layout) };
        assert_eq!(C.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn realloc_counts_the_difference() {
        static C: AtomicUsize = AtomicUsize::new(0);
        let a = Tracking::counting_in(&C);
        let small = Layout::from_size_align(100, 8).unwrap();
        let p = unsafe { a.alloc(small) };
        unsafe { p.write(7) };
        let q = unsafe { a.realloc(p, small, 5000) };
        assert_eq!(C.load(Ordering::Relaxed), 5000);
        assert_eq!(unsafe { q.read() }, 7);
        let big = Layout::from_size_align(5000, 8).unwrap();
        let r = unsafe { a.realloc(q, big, 30) };
        assert_eq!(C.load(Ordering::Relaxed), 30);
        assert_eq!(unsafe { r.read() }, 7);
        unsafe { a.dealloc(r, Layout::from_size_align(30, 8).unwrap()) };
        assert_eq!(C.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn honours_large_alignment() {
        static C: AtomicUsize = AtomicUsize::new(0);
        let a = Tracking::counting_in(&C);
        for align in [64, 128, 4096] {
            let layout = Layout::from_size_align(24, align).unwrap();
            let p = unsafe { a.alloc(layout) };
            assert_eq!(p as usize % align, 0);
            unsafe { a.dealloc(p, layout) };
        }
        assert_eq!(C.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn frees_before_allocations_net_out() {
        // A free counted first (another thread) reads as 0, then nets out.
        static C: AtomicUsize = AtomicUsize::new(0);
        let a = Tracking::counting_in(&C);
        a.shrink(64);
        assert_eq!(shown(C.load(Ordering::Relaxed)), 0);
        a.grow(64 + 10);
        assert_eq!(shown(C.load(Ordering::Relaxed)), 10);
    }

    #[test]
    fn the_module_counter_sees_this_binary() {
        // The global allocator of this crate (the module's) counts.
        let before = live_bytes();
        let v: Vec<u8> = Vec::with_capacity(64 << 20);
        assert!(live_bytes() >= before + (60 << 20));
        drop(v);
    }
}
