//! Instruction-set dispatch and the vectorisable inner loops (axpy, scale, exp, widening loads).
//!
//! The inner loops are plain Rust over fixed 16-lane chunks. They are instantiated inside
//! functions compiled with `#[target_feature]` (AVX-512 or AVX2+FMA, chosen at runtime), so LLVM
//! vectorises the same source for the widest unit the CPU has; a portable instantiation serves
//! every other machine.

use crate::element::{KvDtype, KvElement, bf16_bits_to_f32, f16_bits_to_f32};

/// Width of the fixed lane arrays the loops are written in.
const LANES: usize = 16;

/// The vector primitives of one instruction-set level. The provided methods are portable Rust
/// over 16-lane chunks; the x86 levels override them with explicit intrinsics.
///
/// [`Simd::V`] is a vector of 16 f32 lanes (one AVX-512 register, two AVX2 registers or a plain
/// array); the register-blocked micro-kernels in `kernels::tile` are written once over it.
pub(crate) trait Simd {
    /// Sixteen f32 lanes.
    type V: Copy;
    /// Whether the level has 32 vector registers, room for 4 × 2 accumulators of [`Simd::V`].
    const WIDE: bool;

    /// `a × b + c` (fused where the level has FMA).
    fn madd(a: f32, b: f32, c: f32) -> f32;

    /// Every lane set to `x`.
    fn splat(x: f32) -> Self::V;

    /// Loads 16 lanes from `src`.
    ///
    /// # Safety
    /// `src..src + 16` must be readable.
    unsafe fn load(src: *const f32) -> Self::V;

    /// Stores 16 lanes to `dst`.
    ///
    /// # Safety
    /// `dst..dst + 16` must be writable.
    unsafe fn store(dst: *mut f32, v: Self::V);

    /// Lane-wise `a × b + c`.
    fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;

    /// Sum of the 16 lanes.
    fn reduce_add(v: Self::V) -> f32;

    /// Lane `i` of the result is the sum of the lanes of `v[i]` (sixteen horizontal sums at once).
    #[inline(always)]
    fn reduce_16(v: [Self::V; LANES]) -> Self::V {
        let sums: [f32; LANES] = std::array::from_fn(|i| Self::reduce_add(v[i]));
        // SAFETY: `sums` holds 16 floats.
        unsafe { Self::load(sums.as_ptr()) }
    }

    /// `acc[i] += p · x[i]` over the common length.
    #[inline(always)]
    fn axpy(acc: &mut [f32], p: f32, x: &[f32]) {
        portable_axpy::<Self>(acc, p, x)
    }

    /// Loads 16 IEEE half values (as bits) from `src`, widened exactly to f32.
    ///
    /// # Safety
    /// `src..src + 16` must be readable.
    #[inline(always)]
    unsafe fn load_f16(src: *const u16) -> Self::V {
        // SAFETY: the caller guarantees 16 readable elements.
        let lanes: [f32; LANES] = std::array::from_fn(|i| f16_bits_to_f32(unsafe { *src.add(i) }));
        // SAFETY: `lanes` holds 16 floats.
        unsafe { Self::load(lanes.as_ptr()) }
    }

    /// Loads 16 bfloat16 values (as bits) from `src`, widened exactly to f32.
    ///
    /// # Safety
    /// `src..src + 16` must be readable.
    #[inline(always)]
    unsafe fn load_bf16(src: *const u16) -> Self::V {
        // SAFETY: the caller guarantees 16 readable elements.
        let lanes: [f32; LANES] = std::array::from_fn(|i| bf16_bits_to_f32(unsafe { *src.add(i) }));
        // SAFETY: `lanes` holds 16 floats.
        unsafe { Self::load(lanes.as_ptr()) }
    }
}

/// Loads 16 cache elements from `src`, widened exactly to f32 (in registers, no scratch copy).
///
/// # Safety
/// `src..src + 16` must be readable.
#[inline(always)]
pub(crate) unsafe fn load_kv<S: Simd, T: KvElement>(src: *const T) -> S::V {
    // SAFETY: `KvElement` is sealed and `KV_DTYPE` names the one type that implements it with
    // that tag (f32, f16 or bf16; the half types are `u16` bits), so each cast reinterprets the
    // same readable elements; readability is the caller's contract.
    unsafe {
        match T::KV_DTYPE {
            KvDtype::F32 => S::load(src.cast()),
            KvDtype::F16 => S::load_f16(src.cast()),
            KvDtype::Bf16 => S::load_bf16(src.cast()),
        }
    }
}

/// Loads the first `n < 16` cache elements from `src`, widened to f32; the other lanes are zero.
///
/// # Safety
/// `src..src + n` must be readable.
#[inline(always)]
pub(crate) unsafe fn load_kv_partial<S: Simd, T: KvElement>(src: *const T, n: usize) -> S::V {
    let mut lanes = [0.0f32; LANES];
    for (i, x) in lanes[..n].iter_mut().enumerate() {
        // SAFETY: `i < n`, readable by the caller's contract.
        *x = unsafe { *src.add(i) }.to_f32();
    }
    // SAFETY: `lanes` holds 16 floats.
    unsafe { S::load(lanes.as_ptr()) }
}

/// Plain Rust, separate multiply and add (no FMA assumed).
pub(crate) struct Portable;
impl Simd for Portable {
    type V = [f32; LANES];
    const WIDE: bool = false;

    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    #[inline(always)]
    fn splat(x: f32) -> Self::V {
        [x; LANES]
    }
    #[inline(always)]
    unsafe fn load(src: *const f32) -> Self::V {
        // SAFETY: the caller guarantees 16 readable lanes; `read_unaligned` needs no alignment.
        unsafe { src.cast::<Self::V>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(dst: *mut f32, v: Self::V) {
        // SAFETY: the caller guarantees 16 writable lanes.
        unsafe { dst.cast::<Self::V>().write_unaligned(v) }
    }
    #[inline(always)]
    fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    fn reduce_add(v: Self::V) -> f32 {
        reduce_lanes(v, |a, b| a + b)
    }
}

/// A vector instruction-set level the CPU kernels can be compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Whatever the compilation target guarantees (SSE2 on x86-64), no FMA.
    Portable,
    /// AVX2 with FMA and F16C (x86-64 only).
    Avx2,
    /// AVX-512 F/BW/VL with FMA and F16C (x86-64 only).
    Avx512,
}

impl SimdLevel {
    /// Every level, lowest first.
    pub const ALL: [SimdLevel; 3] = [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512];

    /// The best level this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            if avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") {
                return SimdLevel::Avx512;
            }
            if avx2 {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Portable
    }

    /// The levels this CPU supports, lowest first.
    pub fn supported() -> impl Iterator<Item = SimdLevel> {
        Self::ALL.into_iter().filter(|l| *l <= Self::detect())
    }
}

/// A computation generic over the SIMD level, run by [`run_at`] under a target feature.
pub(crate) trait SimdTask {
    /// What the task returns.
    type Output;
    /// Runs the task; everything it calls in the hot path must be `#[inline(always)]`.
    fn run<S: Simd>(self) -> Self::Output;
}

/// Runs `task` compiled for `level`. Callers guarantee `level <= SimdLevel::detect()`.
#[inline]
pub(crate) fn run_at<K: SimdTask>(level: SimdLevel, task: K) -> K::Output {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: callers only pass levels at or below `SimdLevel::detect()`, so the CPU has
        // every feature the function is compiled with.
        SimdLevel::Avx512 => unsafe { x86::run_avx512(task) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2 => unsafe { x86::run_avx2(task) },
        _ => task.run::<Portable>(),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

/// The lanes combined pairwise by `op` (a reduction tree LLVM maps to shuffles: 4 dependent
/// steps, where a left fold is 15).
#[inline(always)]
fn reduce_lanes(mut lanes: [f32; LANES], op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            lanes[i] = op(lanes[i], lanes[i + width]);
        }
        width /= 2;
    }
    lanes[0]
}

/// Portable `acc[i] += p · x[i]`.
#[inline(always)]
fn portable_axpy<S: Simd + ?Sized>(acc: &mut [f32], p: f32, x: &[f32]) {
    let n = acc.len().min(x.len());
    let (acc_chunks, acc_tail) = acc[..n].as_chunks_mut::<LANES>();
    let (x_chunks, x_tail) = x[..n].as_chunks::<LANES>();
    for (a, v) in acc_chunks.iter_mut().zip(x_chunks) {
        for i in 0..LANES {
            a[i] = S::madd(p, v[i], a[i]);
        }
    }
    for (a, v) in acc_tail.iter_mut().zip(x_tail) {
        *a = S::madd(p, *v, *a);
    }
}

/// The largest of `init` and the elements of `xs` (NaNs ignored), in 16 independent lanes.
#[inline(always)]
pub(crate) fn max_of(xs: &[f32], init: f32) -> f32 {
    let (chunks, tail) = xs.as_chunks::<LANES>();
    let mut lanes = [init; LANES];
    for c in chunks {
        for i in 0..LANES {
            lanes[i] = lanes[i].max(c[i]);
        }
    }
    tail.iter()
        .fold(reduce_lanes(lanes, f32::max), |a, b| a.max(*b))
}

/// The sum of the elements of `xs`, in 16 independent lanes.
#[inline(always)]
pub(crate) fn sum_of(xs: &[f32]) -> f32 {
    lane_sum(xs, |x| x)
}

/// `Σ x²` over `xs`, in 16 independent lanes.
#[inline(always)]
pub(crate) fn sum_of_squares(xs: &[f32]) -> f32 {
    lane_sum(xs, |x| x * x)
}

/// `Σ term(x)` over `xs` in 16 independent partial sums, so the additions pipeline and vectorise
/// (one running f32 sum is a chain of dependent additions).
#[inline(always)]
fn lane_sum(xs: &[f32], term: impl Fn(f32) -> f32) -> f32 {
    let (chunks, tail) = xs.as_chunks::<LANES>();
    let mut lanes = [0.0f32; LANES];
    for c in chunks {
        for i in 0..LANES {
            lanes[i] += term(c[i]);
        }
    }
    reduce_lanes(lanes, |a, b| a + b) + tail.iter().map(|&x| term(x)).sum::<f32>()
}

/// `xs[i] *= c`.
#[inline(always)]
pub(crate) fn scale(xs: &mut [f32], c: f32) {
    for x in xs {
        *x *= c;
    }
}

/// Replaces every `x ≤ 0` by `e^x` (relative error below 2e-7); `x < −87` (and −∞) gives 0.
///
/// Branch-free (Cody–Waite range reduction, degree-6 polynomial, exponent bits built by integer
/// arithmetic) so the loop vectorises.
#[inline(always)]
pub(crate) fn exp_non_positive<S: Simd>(xs: &mut [f32]) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 × 2^23: adding it rounds to an integer.
    for x in xs {
        let underflow = *x < -87.0;
        let v = x.max(-87.0);
        let shifted = v * LOG2E + ROUND;
        let n = shifted - ROUND;
        let r = S::madd(n, -LN2_LO, S::madd(n, -LN2_HI, v));
        let mut p = 1.987_569_2e-4f32;
        p = S::madd(p, r, 1.398_199_9e-3);
        p = S::madd(p, r, 8.333_452e-3);
        p = S::madd(p, r, 4.166_579_6e-2);
        p = S::madd(p, r, 0.166_666_65);
        p = S::madd(p, r, 0.5);
        p = S::madd(p * r, r, r) + 1.0;
        // The low mantissa bits of `shifted` hold n (two's complement); add the bias and move
        // them into the exponent field, which yields 2^n without a float → int conversion.
        let pow2 = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
        *x = if underflow { 0.0 } else { p * pow2 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_on_the_softmax_range() {
        let mut worst = 0.0f64;
        let inputs: Vec<f32> = (0..200_000).map(|i| -(i as f32) * 4.35e-4).collect();
        let mut got = inputs.clone();
        exp_non_positive::<Portable>(&mut got);
        for (x, y) in inputs.iter().zip(&got) {
            let exact = f64::from(*x).exp();
            worst = worst.max(((f64::from(*y) - exact) / exact).abs());
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }

    #[test]
    fn exp_underflows_to_exact_zero() {
        let mut xs = [f32::NEG_INFINITY, -100.0, -87.5, 0.0];
        exp_non_positive::<Portable>(&mut xs);
        assert_eq!(xs[..3], [0.0, 0.0, 0.0]);
        assert!((xs[3] - 1.0).abs() < 1e-7);
    }

    #[test]
    fn axpy_handles_tails() {
        for n in [0, 1, 15, 16, 17, 80, 113] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.25).collect();
            for level in SimdLevel::supported() {
                let acc = run_at(level, Axpy(b.clone(), 2.0, &a));
                for i in 0..n {
                    assert!(
                        (acc[i] - (b[i] + 2.0 * a[i])).abs() <= 1e-6,
                        "{level:?} n={n} i={i}"
                    );
                }
            }
        }
    }

    /// Vector widening (`load_kv`, `load_kv_partial`) agrees bit for bit with the scalar
    /// conversion for every f16 and bf16 bit pattern, at every SIMD level.
    #[test]
    fn vector_widening_matches_scalar_for_every_bit_pattern() {
        fn check<T: KvElement>(from_bits: fn(u16) -> T) {
            let all: Vec<T> = (0..=u16::MAX).map(from_bits).collect();
            for level in SimdLevel::supported() {
                let got = run_at(level, Widen(&all));
                for (x, y) in all.iter().zip(&got) {
                    let expected = x.to_f32();
                    assert!(
                        y.to_bits() == expected.to_bits() || (y.is_nan() && expected.is_nan()),
                        "{level:?} {x:?}: {y} vs {expected}"
                    );
                }
            }
        }
        check(half::f16::from_bits);
        check(half::bf16::from_bits);
        check(|bits| f32::from(bits) - 3e4);
    }

    #[test]
    fn sixteen_sums_at_once_match_single_sums() {
        let v: Vec<f32> = (0..LANES * LANES)
            .map(|i| ((i * 37) % 101) as f32 - 50.0)
            .collect();
        for level in SimdLevel::supported() {
            let got = run_at(level, Reduce16(&v));
            for (i, row) in v.chunks_exact(LANES).enumerate() {
                assert_eq!(got[i], row.iter().sum::<f32>(), "{level:?} lane {i}");
            }
        }
    }

    #[test]
    fn max_and_sum_cover_every_element() {
        for n in [0, 1, 15, 16, 17, 32, 45] {
            let xs: Vec<f32> = (0..n).map(|i| ((i * 7) % 23) as f32 - 11.0).collect();
            let max = xs.iter().fold(-100.0f32, |a, b| a.max(*b));
            assert_eq!(max_of(&xs, -100.0), max, "n={n}");
            assert_eq!(sum_of(&xs), xs.iter().sum::<f32>(), "n={n}");
            let squares: f32 = xs.iter().map(|x| x * x).sum();
            assert_eq!(sum_of_squares(&xs), squares, "n={n}");
        }
    }

    struct Reduce16<'a>(&'a [f32]);
    impl SimdTask for Reduce16<'_> {
        type Output = [f32; LANES];
        fn run<S: Simd>(self) -> [f32; LANES] {
            // SAFETY: the slice holds 16 rows of 16 floats; `out` holds 16.
            unsafe {
                let v = std::array::from_fn(|i| S::load(self.0[i * LANES..].as_ptr()));
                let mut out = [0.0; LANES];
                S::store(out.as_mut_ptr(), S::reduce_16(v));
                out
            }
        }
    }

    /// Widens a slice 16 elements at a time with [`load_kv`] and the tail (and, for good measure,
    /// every 7th element onwards) with [`load_kv_partial`].
    struct Widen<'a, T>(&'a [T]);
    impl<T: KvElement> SimdTask for Widen<'_, T> {
        type Output = Vec<f32>;
        fn run<S: Simd>(self) -> Vec<f32> {
            let src = self.0;
            let mut out = vec![0.0f32; src.len().next_multiple_of(LANES)];
            for (i, dst) in out.chunks_exact_mut(LANES).enumerate() {
                let start = i * LANES;
                let n = (src.len() - start).min(LANES);
                let p = src[start..].as_ptr();
                // SAFETY: `n` elements from `start` are in `src`; `dst` holds 16 floats.
                unsafe {
                    let v = if n == LANES && i % 7 != 0 {
                        load_kv::<S, T>(p)
                    } else {
                        load_kv_partial::<S, T>(p, n.min(LANES - 1))
                    };
                    S::store(dst.as_mut_ptr(), v);
                    if n == LANES && i % 7 == 0 {
                        dst[LANES - 1] = src[start + LANES - 1].to_f32();
                    }
                }
            }
            out.truncate(src.len());
            out
        }
    }

    struct Axpy<'a>(Vec<f32>, f32, &'a [f32]);
    impl SimdTask for Axpy<'_> {
        type Output = Vec<f32>;
        fn run<S: Simd>(mut self) -> Vec<f32> {
            S::axpy(&mut self.0, self.1, self.2);
            self.0
        }
    }
}
