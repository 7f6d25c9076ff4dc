//! Software prefetch of K/V rows ahead of the kernels' reads, so that scattered blocks have
//! memory requests in flight before the kernel reaches them (the hardware prefetcher does not
//! follow a block table).

/// Bytes per cache line: the unit [`prefetch_line`] fetches and the kernels prefetch by.
pub const LINE_BYTES: usize = 64;

/// Hints the CPU to load the cache line holding `address` into the L2 cache. Never faults (any
/// address may be passed); a no-op off x86-64. Public for code that reproduces the kernels'
/// memory access pattern (the kernels bench's bare read).
#[inline(always)]
pub fn prefetch_line<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        // SAFETY: prefetching is a hint that never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(address.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Hints the CPU to start loading `data`. With `every_line`, every cache line of it is fetched
/// into the L2 cache (leaving the L1 working set alone); otherwise only its first line is
/// fetched, into L1, which is enough to start the hardware streamer early on a long row.
/// A no-op off x86-64.
#[inline(always)]
pub(crate) fn prefetch_row<T>(data: &[T], every_line: bool) {
    let start = data.as_ptr().cast::<u8>();
    if every_line {
        for offset in (0..size_of_val(data)).step_by(LINE_BYTES) {
            prefetch_line(start.wrapping_add(offset));
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if !data.is_empty() {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetching never faults (and offset 0 of a non-empty slice lies inside it).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(start.cast()) };
    }
}
