//! Software prefetch of the next K/V block, so scattered blocks keep several memory requests in
//! flight (the hardware prefetcher does not follow a block table).

/// Hints the CPU to start loading every cache line of `data`; a no-op off x86-64.
#[inline(always)]
pub(crate) fn prefetch_slice<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        /// Bytes per cache line.
        const LINE: usize = 64;
        let start = data.as_ptr().cast::<i8>();
        let bytes = std::mem::size_of_val(data);
        for offset in (0..bytes).step_by(LINE) {
            // SAFETY: `offset < bytes`, so the address lies inside `data`; prefetching never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}
