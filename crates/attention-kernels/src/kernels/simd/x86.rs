//! x86-64 levels: AVX-512 and AVX2 (both with FMA), written with explicit intrinsics.
//!
//! Each primitive is a `#[target_feature]` function; the `Simd` impls call them, and the whole
//! kernel is instantiated inside `run_avx512` / `run_avx2`, which carry the same features, so
//! LLVM inlines the primitives into the hot loops.

use std::arch::x86_64::*;

use super::{Simd, SimdTask};

/// AVX-512 F/BW/VL + FMA + F16C.
pub(crate) struct Avx512;
/// AVX2 + FMA + F16C.
pub(crate) struct Avx2;

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn run_avx512<K: SimdTask>(task: K) -> K::Output {
    task.run::<Avx512>()
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn run_avx2<K: SimdTask>(task: K) -> K::Output {
    task.run::<Avx2>()
}

// SAFETY (every intrinsic in the two impls below): `Avx512` is only used inside `run_avx512` and
// `Avx2` inside `run_avx2`, which run on CPUs with the features the intrinsics need; pointer
// validity is the caller's contract of `load` and `store`.
impl Simd for Avx512 {
    type V = __m512;
    const WIDE: bool = true;

    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn splat(x: f32) -> __m512 {
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(src: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(src) }
    }
    #[inline(always)]
    unsafe fn store(dst: *mut f32, v: __m512) {
        unsafe { _mm512_storeu_ps(dst, v) }
    }
    #[inline(always)]
    fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn reduce_add(v: __m512) -> f32 {
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    fn reduce_16(v: [__m512; 16]) -> __m512 {
        // A transpose-and-add tree: 15 additions and 30 shuffles instead of 16 full reductions.
        // Plain loops, not `array::from_fn`, whose closures LLVM may leave out of line, outside
        // the `target_feature` function, where these intrinsics do not inline (seen when the
        // decode dot product grew in an experiment: decode ran 3.5× slower).
        unsafe {
            // Each 128-bit chunk of `pairs[i]` holds 2 partial sums of `v[2i]` and 2 of `v[2i+1]`.
            let mut pairs = [_mm512_setzero_ps(); 8];
            for (i, x) in pairs.iter_mut().enumerate() {
                let (a, b) = (v[2 * i], v[2 * i + 1]);
                *x = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
            }
            // Chunk `j` of `quads[i]` holds the sums of chunk `j` of `v[4i..4i + 4]`.
            let mut quads = [_mm512_setzero_ps(); 4];
            for (i, x) in quads.iter_mut().enumerate() {
                let (a, b) = (
                    _mm512_castps_pd(pairs[2 * i]),
                    _mm512_castps_pd(pairs[2 * i + 1]),
                );
                *x = _mm512_add_ps(
                    _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                    _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
                );
            }
            // Fold the four chunks: pairs of chunks, then pairs of halves.
            #[inline(always)]
            fn fold(a: __m512, b: __m512) -> __m512 {
                // SAFETY: inlined into `reduce_16`, under its caller's AVX-512 features.
                unsafe {
                    _mm512_add_ps(
                        _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
                        _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
                    )
                }
            }
            fold(fold(quads[0], quads[1]), fold(quads[2], quads[3]))
        }
    }
    #[inline(always)]
    fn axpy(acc: &mut [f32], p: f32, x: &[f32]) {
        // SAFETY: `Avx512` is only used inside `run_avx512`, which runs on CPUs with AVX-512F.
        unsafe { axpy512(acc, p, x) }
    }
    #[inline(always)]
    unsafe fn load_f16(src: *const u16) -> __m512 {
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(src.cast())) }
    }
    #[inline(always)]
    unsafe fn load_bf16(src: *const u16) -> __m512 {
        // bf16 is the upper half of an f32: zero-extend to 32 bits and shift into place.
        unsafe {
            let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(src.cast()));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
        }
    }
}

impl Simd for Avx2 {
    type V = [__m256; 2];
    const WIDE: bool = false;

    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn splat(x: f32) -> [__m256; 2] {
        let v = unsafe { _mm256_set1_ps(x) };
        [v, v]
    }
    #[inline(always)]
    unsafe fn load(src: *const f32) -> [__m256; 2] {
        unsafe { [_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8))] }
    }
    #[inline(always)]
    unsafe fn store(dst: *mut f32, v: [__m256; 2]) {
        unsafe {
            _mm256_storeu_ps(dst, v[0]);
            _mm256_storeu_ps(dst.add(8), v[1]);
        }
    }
    #[inline(always)]
    fn fmadd(a: [__m256; 2], b: [__m256; 2], c: [__m256; 2]) -> [__m256; 2] {
        unsafe {
            [
                _mm256_fmadd_ps(a[0], b[0], c[0]),
                _mm256_fmadd_ps(a[1], b[1], c[1]),
            ]
        }
    }
    #[inline(always)]
    fn reduce_add(v: [__m256; 2]) -> f32 {
        unsafe {
            let sum = _mm256_add_ps(v[0], v[1]);
            let quad = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps::<1>(sum));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<0b01>(pair, pair)))
        }
    }
    #[inline(always)]
    fn axpy(acc: &mut [f32], p: f32, x: &[f32]) {
        // SAFETY: `Avx2` is only used inside `run_avx2`, which runs on CPUs with AVX2 and FMA.
        unsafe { axpy256(acc, p, x) }
    }
    #[inline(always)]
    unsafe fn load_f16(src: *const u16) -> [__m256; 2] {
        unsafe {
            [
                _mm256_cvtph_ps(_mm_loadu_si128(src.cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(src.add(8).cast())),
            ]
        }
    }
    #[inline(always)]
    unsafe fn load_bf16(src: *const u16) -> [__m256; 2] {
        // bf16 is the upper half of an f32: zero-extend to 32 bits and shift into place.
        unsafe {
            let lo = _mm256_cvtepu16_epi32(_mm_loadu_si128(src.cast()));
            let hi = _mm256_cvtepu16_epi32(_mm_loadu_si128(src.add(8).cast()));
            [
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(lo)),
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(hi)),
            ]
        }
    }
}

/// Mask of the first `n` of 16 lanes (`n < 16`).
#[inline(always)]
fn tail_mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn axpy512(acc: &mut [f32], p: f32, x: &[f32]) {
    let n = acc.len().min(x.len());
    let (pa, px) = (acc.as_mut_ptr(), x.as_ptr());
    let pv = _mm512_set1_ps(p);
    let mut i = 0;
    // SAFETY (all loads and stores): indices below `n`; masked accesses touch lanes below `n` only.
    unsafe {
        while i + 16 <= n {
            let v = _mm512_fmadd_ps(pv, _mm512_loadu_ps(px.add(i)), _mm512_loadu_ps(pa.add(i)));
            _mm512_storeu_ps(pa.add(i), v);
            i += 16;
        }
        if i < n {
            let m = tail_mask(n - i);
            let v = _mm512_fmadd_ps(
                pv,
                _mm512_maskz_loadu_ps(m, px.add(i)),
                _mm512_maskz_loadu_ps(m, pa.add(i)),
            );
            _mm512_mask_storeu_ps(pa.add(i), m, v);
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn axpy256(acc: &mut [f32], p: f32, x: &[f32]) {
    let n = acc.len().min(x.len());
    let (pa, px) = (acc.as_mut_ptr(), x.as_ptr());
    let pv = _mm256_set1_ps(p);
    let mut i = 0;
    // SAFETY: every load and store covers indices below `n`.
    unsafe {
        while i + 8 <= n {
            let v = _mm256_fmadd_ps(pv, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(pa.add(i)));
            _mm256_storeu_ps(pa.add(i), v);
            i += 8;
        }
    }
    for j in i..n {
        acc[j] = p.mul_add(x[j], acc[j]);
    }
}
