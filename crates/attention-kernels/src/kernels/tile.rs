//! Register-blocked micro-kernels over 16-lane vectors ([`Simd::V`]): a small GEMM for score and
//! P·V tiles, and a multi-head dot product that reads each key vector once for several heads.
//!
//! Both keep their accumulators in registers for the whole reduction, so the GEMM needs no
//! horizontal sums at all and the dot product needs one per (head, key) pair.

use super::simd::Simd;

/// Lanes of one [`Simd::V`].
pub(crate) const LANES: usize = 16;

/// `C[i][..] (+)= Σ_k A[i·a_row + k·a_col] · B[k][..]` for `i < m`, `k < depth`.
///
/// B and C are row-major with rows of `lanes` floats (a multiple of 16); with `accumulate` false
/// C is overwritten. The A element is broadcast and multiplied into whole vectors of B, so every
/// lane of C accumulates independently (4 rows × 2 vectors of accumulators on AVX-512).
#[inline(always)]
pub(crate) fn gemm<S: Simd>(
    a: &[f32],
    (a_row, a_col): (usize, usize),
    b: &[f32],
    c: &mut [f32],
    (m, depth, lanes): (usize, usize, usize),
    accumulate: bool,
) {
    if m == 0 {
        return;
    }
    assert!(lanes.is_multiple_of(LANES) && c.len() >= m * lanes && b.len() >= depth * lanes);
    assert!(depth == 0 || a.len() > (m - 1) * a_row + (depth - 1) * a_col);
    let vecs = lanes / LANES;
    let (pa, pb, pc) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    let mut v = 0;
    while v < vecs {
        let two = S::WIDE && v + 2 <= vecs;
        let mut i = 0;
        // SAFETY: the asserts above bound every A index by `(m−1)·a_row + (depth−1)·a_col`,
        // every B index by `depth·lanes` and every C index by `m·lanes`; blocks stay inside.
        unsafe {
            let at = |i: usize| pa.add(i * a_row);
            let (b0, ct) = (pb.add(v * LANES), |i: usize| pc.add(i * lanes + v * LANES));
            let strides = (a_col, depth, lanes, accumulate);
            while i + 4 <= m {
                if two {
                    block::<S, 4, 2>(at(i), a_row, b0, ct(i), strides);
                } else {
                    block::<S, 4, 1>(at(i), a_row, b0, ct(i), strides);
                }
                i += 4;
            }
            while i < m {
                if two {
                    block::<S, 1, 2>(at(i), a_row, b0, ct(i), strides);
                } else {
                    block::<S, 1, 1>(at(i), a_row, b0, ct(i), strides);
                }
                i += 1;
            }
        }
        v += if two { 2 } else { 1 };
    }
}

/// One `MR × NR`-vector block of [`gemm`], accumulated in registers over the whole depth.
///
/// # Safety
/// `a`, `b` and `c` point at the block's first A row, B column and C element; every index the
/// block touches must be in bounds (see [`gemm`]).
#[inline(always)]
unsafe fn block<S: Simd, const MR: usize, const NR: usize>(
    a: *const f32,
    a_row: usize,
    b: *const f32,
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
            let bk = b.add(k * lanes);
            let bv: [S::V; NR] = std::array::from_fn(|j| S::load(bk.add(j * LANES)));
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

/// `out[h·out_row + t] = Σ_k q[h·stride + k] · keys[t·stride + k]` for `h < heads`, `t < n`.
///
/// Rows of `q` and `keys` hold `stride` floats (a multiple of 16, zero-padded past the head
/// size). Heads are taken 4 at a time (and keys 2 at a time on AVX-512), so every key vector is
/// loaded once per 4 heads; a single leftover (head, key) pair is a plain [`Simd::dot`].
#[inline(always)]
pub(crate) fn dots<S: Simd>(
    q: &[f32],
    keys: &[f32],
    (heads, n, stride): (usize, usize, usize),
    out: &mut [f32],
    out_row: usize,
) {
    if heads == 0 || n == 0 {
        return;
    }
    assert!(stride.is_multiple_of(LANES) && q.len() >= heads * stride);
    assert!(keys.len() >= n * stride && out.len() > (heads - 1) * out_row + n - 1);
    let (pq, pk) = (q.as_ptr(), keys.as_ptr());
    let key_step = if S::WIDE { 2 } else { 1 };
    let mut h = 0;
    while h < heads {
        let hb = if h + 4 <= heads { 4 } else { 1 };
        let mut t = 0;
        while t < n {
            let kb = if t + key_step <= n { key_step } else { 1 };
            // SAFETY: the asserts above keep rows `h..h+hb` of q and `t..t+kb` of keys in bounds.
            let (qh, kt) = unsafe { (pq.add(h * stride), pk.add(t * stride)) };
            let mut put = |dh: usize, dt: usize, x: f32| out[(h + dh) * out_row + t + dt] = x;
            match (hb, kb) {
                // SAFETY (all three): as above.
                (4, 2) => unsafe { dot_block::<S, 4, 2>(qh, kt, stride, &mut put) },
                (4, _) => unsafe { dot_block::<S, 4, 1>(qh, kt, stride, &mut put) },
                (_, 2) => unsafe { dot_block::<S, 1, 2>(qh, kt, stride, &mut put) },
                _ => put(
                    0,
                    0,
                    S::dot(&q[h * stride..][..stride], &keys[t * stride..][..stride]),
                ),
            }
            t += kb;
        }
        h += hb;
    }
}

/// `HB` heads × `KB` keys of [`dots`], one accumulator vector per pair.
///
/// # Safety
/// Rows `0..HB` of `q` and `0..KB` of `keys` (each `stride` floats) must be readable.
#[inline(always)]
unsafe fn dot_block<S: Simd, const HB: usize, const KB: usize>(
    q: *const f32,
    keys: *const f32,
    stride: usize,
    put: &mut impl FnMut(usize, usize, f32),
) {
    let mut acc = [[S::splat(0.0); KB]; HB];
    // SAFETY: in bounds by this function's contract.
    unsafe {
        for c in (0..stride).step_by(LANES) {
            let kv: [S::V; KB] = std::array::from_fn(|t| S::load(keys.add(t * stride + c)));
            for (h, row) in acc.iter_mut().enumerate() {
                let qv = S::load(q.add(h * stride + c));
                for (x, k) in row.iter_mut().zip(kv) {
                    *x = S::fmadd(qv, k, *x);
                }
            }
        }
    }
    for (h, row) in acc.iter().enumerate() {
        for (t, x) in row.iter().enumerate() {
            put(h, t, S::reduce_add(*x));
        }
    }
}
