//! Software prefetch of the K/V rows of the next chunk of keys, so that scattered blocks have
//! memory requests in flight before the kernel reaches them (the hardware prefetcher does not
//! follow a block table).

/// Hints the CPU to start loading `data`. With `every_line`, every cache line of it is fetched
/// into the L2 cache (leaving the L1 working set alone); otherwise only its first line is
/// fetched, into L1, which is enough to start the hardware streamer early on a long row.
/// A no-op off x86-64.
#[inline(always)]
pub(crate) fn prefetch_row<T>(data: &[T], every_line: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T2, _mm_prefetch};
        /// Bytes per cache line.
        const LINE: usize = 64;
        let start = data.as_ptr().cast::<i8>();
        if every_line {
            for offset in (0..size_of_val(data)).step_by(LINE) {
                // SAFETY: `offset` lies inside `data`; prefetching never faults.
                unsafe { _mm_prefetch::<_MM_HINT_T2>(start.add(offset)) };
            }
        } else if !data.is_empty() {
            // SAFETY: as above (offset 0 of a non-empty slice).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, every_line);
}
