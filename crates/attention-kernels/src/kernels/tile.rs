//! Register-blocked micro-kernels over 16-lane vectors ([`Simd::V`]): a small GEMM for score and
//! P·V tiles, and a multi-head dot product that reads each key vector once for several heads.
//!
//! Both keep their accumulators in registers for the whole reduction, so the GEMM needs no
//! horizontal sums at all and the dot product one per (head, key) pair, done 16 at a time where
//! the level allows ([`Simd::reduce_16`]). Their row operands
//! are [`Rows`]: dense f32 scratch, or rows read straight from a K/V cache plane and widened to
//! f32 in registers.

use crate::element::KvElement;

use super::prefetch::{LINE_BYTES, prefetch_line};
use super::simd::{Simd, load_kv, load_kv_partial};

/// Lanes of one [`Simd::V`].
pub(crate) const LANES: usize = 16;

/// Rows of f32 values a micro-kernel reads 16 lanes at a time.
pub(crate) trait Rows {
    /// Number of rows.
    fn len(&self) -> usize;
    /// Columns that may be loaded (a multiple of 16); lanes past a row's data read as zero.
    fn cols(&self) -> usize;
    /// Lanes `col..col + 16` of row `k`.
    ///
    /// # Safety
    /// `k < self.len()` and `col + 16 <= self.cols()`.
    unsafe fn load<S: Simd>(&self, k: usize, col: usize) -> S::V;
    /// Hints the memory system to fetch lanes `col..col + 16` of the row read some way after
    /// row `k` (see [`PlaneRows::with_lookahead`]); a no-op for rows without a lookahead.
    #[inline(always)]
    fn prefetch_ahead(&self, _k: usize, _col: usize) {}
}

/// Row-major f32 rows of `stride` floats (a multiple of 16).
pub(crate) struct Dense<'a> {
    data: &'a [f32],
    stride: usize,
}

impl<'a> Dense<'a> {
    /// The first `rows` rows of `data`; panics unless they fit and `stride` is a multiple of 16.
    pub(crate) fn new(data: &'a [f32], stride: usize, rows: usize) -> Self {
        assert!(stride.is_multiple_of(LANES) && data.len() >= rows * stride);
        Self {
            data: &data[..rows * stride],
            stride,
        }
    }
}

impl Rows for Dense<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.data.len().checked_div(self.stride).unwrap_or(0)
    }
    #[inline(always)]
    fn cols(&self) -> usize {
        self.stride
    }
    #[inline(always)]
    unsafe fn load<S: Simd>(&self, k: usize, col: usize) -> S::V {
        // SAFETY: `k < len` and `col + 16 <= stride` keep the 16 lanes inside `data`.
        unsafe { S::load(self.data.as_ptr().add(k * self.stride + col)) }
    }
}

/// Rows of a K or V cache plane, read in place: row `k` is `plane[offsets[k] + start..][..width]`,
/// widened to f32 as it is loaded (lanes past `width` are zero).
///
/// `WHOLE` promises that `width` is a multiple of 16 (checked by [`PlaneRows::new`] and
/// [`PlaneRows::columns`]), so every load is a full vector and the partial-load path is compiled
/// out. Measured on the decode kernel with L2-resident K/V (one thread, 8 sequences × 1k keys):
/// compiling it out cut the time by 17 % (bf16, 32q/8kv/128), 26 % (bf16, 12q/12kv/64) and
/// 7–14 % (f32); cold bf16 decode went from 19–25 to 21–26 GB/s.
#[derive(Clone, Copy)]
pub(crate) struct PlaneRows<'a, T, const WHOLE: bool> {
    plane: &'a [T],
    /// Element offset of each row's slot in the plane.
    offsets: &'a [usize],
    /// Elements readable from every offset.
    span: usize,
    /// First element of each row after its offset.
    start: usize,
    /// Elements per row.
    width: usize,
    /// Offsets of the rows to prefetch: `ahead[k]` while row `k` is read (none past its end).
    ahead: &'a [usize],
}

impl<'a, T: KvElement, const WHOLE: bool> PlaneRows<'a, T, WHOLE> {
    /// Whole spans of `span` elements at `offsets`; panics unless every span lies in `plane`
    /// (and, with `WHOLE`, unless `span` is a multiple of 16).
    pub(crate) fn new(plane: &'a [T], offsets: &'a [usize], span: usize) -> Self {
        assert!(!WHOLE || span.is_multiple_of(LANES));
        assert!(
            offsets
                .iter()
                .all(|&o| o.checked_add(span).is_some_and(|end| end <= plane.len()))
        );
        Self {
            plane,
            offsets,
            span,
            start: 0,
            width: span,
            ahead: &[],
        }
    }

    /// The same rows, prefetching the row at plane offset `ahead[k]` (the same columns) while
    /// row `k` is read; rows past the end of `ahead` prefetch nothing.
    pub(crate) fn with_lookahead(self, ahead: &'a [usize]) -> Self {
        Self { ahead, ..self }
    }

    /// Elements `start..start + width` of every row.
    pub(crate) fn columns(&self, start: usize, width: usize) -> Self {
        assert!(start + width <= self.span && (!WHOLE || width.is_multiple_of(LANES)));
        Self {
            start,
            width,
            ..*self
        }
    }

    /// The rows from `first` on.
    pub(crate) fn skip(&self, first: usize) -> Self {
        Self {
            offsets: &self.offsets[first..],
            ahead: &self.ahead[first.min(self.ahead.len())..],
            ..*self
        }
    }
}

impl<T: KvElement, const WHOLE: bool> Rows for PlaneRows<'_, T, WHOLE> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.offsets.len()
    }
    #[inline(always)]
    fn cols(&self) -> usize {
        self.width.next_multiple_of(LANES)
    }
    #[inline(always)]
    unsafe fn load<S: Simd>(&self, k: usize, col: usize) -> S::V {
        // SAFETY: `k < len`, and `new`/`columns` checked that `offset + start + width` lies in
        // the plane; a full load is only issued when `col + 16 <= width` (always so with
        // `WHOLE`, where `width` is a multiple of 16 and `col + 16 <= cols`), a partial one
        // reads `width − col` elements.
        unsafe {
            let row = self
                .plane
                .as_ptr()
                .add(*self.offsets.get_unchecked(k) + self.start + col);
            if WHOLE || col + LANES <= self.width {
                load_kv::<S, T>(row)
            } else {
                load_kv_partial::<S, T>(row, self.width - col)
            }
        }
    }
    #[inline(always)]
    fn prefetch_ahead(&self, k: usize, col: usize) {
        // One prefetch per 64 bytes of row: every load for f32, every other for 2-byte types.
        if (col * std::mem::size_of::<T>()).is_multiple_of(LINE_BYTES)
            && let Some(&offset) = self.ahead.get(k)
        {
            prefetch_line(self.plane.as_ptr().wrapping_add(offset + self.start + col));
        }
    }
}

/// `C[i][..] (+)= Σ_k A[i·a_row + k·a_col] · B[k][..]` for `i < m`, `k < depth`.
///
/// C is row-major with rows of `lanes` floats (a multiple of 16, at most `b.cols()`); with
/// `accumulate` false C is overwritten. The A element is broadcast and multiplied into whole
/// vectors of B, so every lane of C accumulates independently (4 rows × 2 vectors of
/// accumulators on AVX-512).
#[inline(always)]
pub(crate) fn gemm<S: Simd>(
    a: &[f32],
    (a_row, a_col): (usize, usize),
    b: &impl Rows,
    c: &mut [f32],
    (m, depth, lanes): (usize, usize, usize),
    accumulate: bool,
) {
    if m == 0 {
        return;
    }
    assert!(lanes.is_multiple_of(LANES) && lanes <= b.cols() && c.len() >= m * lanes);
    assert!(depth <= b.len());
    assert!(depth == 0 || a.len() > (m - 1) * a_row + (depth - 1) * a_col);
    let vecs = lanes / LANES;
    let (pa, pc) = (a.as_ptr(), c.as_mut_ptr());
    let dims = (a_col, depth, lanes, accumulate);
    // Rows in blocks of 4 (× 2 vectors on AVX-512), the rest one at a time (× 4 vectors).
    let blocked = m - m % 4;
    let mut v = 0;
    while v < vecs {
        let col = v * LANES;
        let two = S::WIDE && v + 2 <= vecs;
        for i in (0..blocked).step_by(4) {
            // SAFETY: the asserts above bound every A index by `(m−1)·a_row + (depth−1)·a_col`,
            // every B row by `depth` and column by `lanes`, every C index by `m·lanes`; blocks
            // stay inside.
            unsafe {
                let (ai, ci) = (pa.add(i * a_row), pc.add(i * lanes + col));
                if two {
                    block::<S, 4, 2>(ai, a_row, (b, col), ci, dims);
                } else {
                    block::<S, 4, 1>(ai, a_row, (b, col), ci, dims);
                }
            }
        }
        v += if two { 2 } else { 1 };
    }
    let mut v = 0;
    while v < vecs {
        let col = v * LANES;
        let nr = match vecs - v {
            _ if !S::WIDE => 1,
            4.. => 4,
            r => r.min(2),
        };
        for i in blocked..m {
            // SAFETY: as above.
            unsafe {
                let (ai, ci) = (pa.add(i * a_row), pc.add(i * lanes + col));
                match nr {
                    4 => block::<S, 1, 4>(ai, a_row, (b, col), ci, dims),
                    2 => block::<S, 1, 2>(ai, a_row, (b, col), ci, dims),
                    _ => block::<S, 1, 1>(ai, a_row, (b, col), ci, dims),
                }
            }
        }
        v += nr;
    }
}

/// One `MR × NR`-vector block of [`gemm`], accumulated in registers over the whole depth.
///
/// # Safety
/// `a` and `c` point at the block's first A row and C element, `col` is its first B column;
/// every index the block touches must be in bounds (see [`gemm`]).
#[inline(always)]
unsafe fn block<S: Simd, const MR: usize, const NR: usize>(
    a: *const f32,
    a_row: usize,
    (b, col): (&impl Rows, usize),
    c: *mut f32,
    (a_col, depth, lanes, accumulate): (usize, usize, usize, bool),
) {
    let mut acc = [[S::splat(0.0); NR]; MR];
    // SAFETY: in bounds by this function's contract.
    unsafe {
        if accumulate {
            for (i, row) in acc.iter_mut().enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    *x = S::load(c.add(i * lanes + j * LANES));
                }
            }
        }
        for k in 0..depth {
            // Plain loops, not `array::from_fn`: LLVM may leave the closure around the load out
            // of line, outside the caller's `target_feature` function, where the intrinsics
            // cannot inline (seen in an experiment that gave the load a third branch: decode
            // ran 10× slower).
            let mut bv = [S::splat(0.0); NR];
            for (j, x) in bv.iter_mut().enumerate() {
                *x = b.load::<S>(k, col + j * LANES);
            }
            for j in 0..NR {
                b.prefetch_ahead(k, col + j * LANES);
            }
            let ak = a.add(k * a_col);
            for (i, row) in acc.iter_mut().enumerate() {
                let x = S::splat(*ak.add(i * a_row));
                for (x_acc, y) in row.iter_mut().zip(bv) {
                    *x_acc = S::fmadd(x, y, *x_acc);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, x) in row.iter().enumerate() {
                S::store(c.add(i * lanes + j * LANES), *x);
            }
        }
    }
}

/// `out[h·out_row + t] = Σ_k q[h·stride + k] · keys[t][k]` for `h < heads`, `t < n`.
///
/// Rows of `q` hold `stride` floats (a multiple of 16, at most `keys.cols()`, zero-padded past
/// the keys' width). Heads are taken 4 at a time, each with 4 keys on AVX-512, so every key
/// vector is loaded once per 4 heads and every query vector once per 4 keys; these blocks of
/// 16 (head, key) pairs finish with one [`Simd::reduce_16`] instead of 16 horizontal sums.
/// Leftover heads take 4 keys at a time with a horizontal sum each.
#[inline(always)]
pub(crate) fn dots<S: Simd>(
    q: &[f32],
    keys: &impl Rows,
    (heads, n, stride): (usize, usize, usize),
    out: &mut [f32],
    out_row: usize,
) {
    if heads == 0 || n == 0 {
        return;
    }
    assert!(stride.is_multiple_of(LANES) && stride <= keys.cols() && q.len() >= heads * stride);
    assert!(n <= keys.len() && out.len() > (heads - 1) * out_row + n - 1);
    let pq = q.as_ptr();
    let mut h = 0;
    while h < heads {
        let hb = if h + 4 <= heads { 4 } else { 1 };
        // SAFETY: the assert above keeps rows `h..h+hb` of q in bounds.
        let qh = unsafe { pq.add(h * stride) };
        let mut t = 0;
        while t < n {
            let kb = if S::WIDE && n - t >= 4 { 4 } else { 1 };
            let mut put = |dh: usize, dt: usize, x: f32| out[(h + dh) * out_row + t + dt] = x;
            let rows = (keys, t);
            match (hb, kb) {
                // SAFETY (all): the asserts above keep rows `t..t+kb` of keys in bounds.
                (4, 4) => unsafe { dot_block::<S, 4, 4>(qh, rows, stride, &mut put) },
                (4, _) => unsafe { dot_block::<S, 4, 1>(qh, rows, stride, &mut put) },
                (_, 4) => unsafe { dot_block::<S, 1, 4>(qh, rows, stride, &mut put) },
                _ => unsafe { dot_block::<S, 1, 1>(qh, rows, stride, &mut put) },
            }
            t += kb;
        }
        h += hb;
    }
}

/// `HB` heads × `KB` keys of [`dots`], one accumulator vector per pair.
///
/// # Safety
/// Rows `0..HB` of `q` (each `stride` floats) and rows `t..t + KB` of `keys` must be readable,
/// and `stride <= keys.cols()`.
#[inline(always)]
unsafe fn dot_block<S: Simd, const HB: usize, const KB: usize>(
    q: *const f32,
    (keys, t): (&impl Rows, usize),
    stride: usize,
    put: &mut impl FnMut(usize, usize, f32),
) {
    let mut acc = [[S::splat(0.0); KB]; HB];
    // SAFETY: in bounds by this function's contract.
    unsafe {
        for c in (0..stride).step_by(LANES) {
            // Plain loops, as in `block`.
            let mut kv = [S::splat(0.0); KB];
            for (i, x) in kv.iter_mut().enumerate() {
                *x = keys.load::<S>(t + i, c);
            }
            for i in 0..KB {
                keys.prefetch_ahead(t + i, c);
            }
            for (h, row) in acc.iter_mut().enumerate() {
                let qv = S::load(q.add(h * stride + c));
                for (x, k) in row.iter_mut().zip(kv) {
                    *x = S::fmadd(qv, k, *x);
                }
            }
        }
    }
    if HB * KB == LANES {
        let mut sums = [0.0f32; LANES];
        // Plain loops, as in `block`.
        let mut v = [S::splat(0.0); LANES];
        for (i, x) in v.iter_mut().enumerate() {
            *x = acc[i / KB][i % KB];
        }
        // SAFETY: `sums` holds 16 floats.
        unsafe { S::store(sums.as_mut_ptr(), S::reduce_16(v)) };
        for (i, x) in sums.into_iter().enumerate() {
            put(i / KB, i % KB, x);
        }
    } else {
        for (h, row) in acc.iter().enumerate() {
            for (t, x) in row.iter().enumerate() {
                put(h, t, S::reduce_add(*x));
            }
        }
    }
}
