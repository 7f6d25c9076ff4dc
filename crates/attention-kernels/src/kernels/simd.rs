//! Instruction-set dispatch and the vectorisable inner loops (dot, axpy, scale, exp).
//!
//! The inner loops are plain Rust over fixed 16-lane chunks. They are instantiated inside
//! functions compiled with `#[target_feature]` (AVX-512 or AVX2+FMA, chosen at runtime), so LLVM
//! vectorises the same source for the widest unit the CPU has; a portable instantiation serves
//! every other machine.

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

    /// `Σ a[i]·b[i]` over the common length.
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        portable_dot::<Self>(a, b)
    }

    /// `acc[i] += p · x[i]` over the common length.
    #[inline(always)]
    fn axpy(acc: &mut [f32], p: f32, x: &[f32]) {
        portable_axpy::<Self>(acc, p, x)
    }
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
        sum_lanes(v)
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

/// Portable dot product in 16 independent f32 lanes.
#[inline(always)]
fn portable_dot<S: Simd + ?Sized>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a_chunks, a_tail) = a[..n].as_chunks::<LANES>();
    let (b_chunks, b_tail) = b[..n].as_chunks::<LANES>();
    let mut lanes = [0.0f32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for i in 0..LANES {
            lanes[i] = S::madd(x[i], y[i], lanes[i]);
        }
    }
    let mut tail = 0.0;
    for (x, y) in a_tail.iter().zip(b_tail) {
        tail = S::madd(*x, *y, tail);
    }
    sum_lanes(lanes) + tail
}

/// Pairwise sum of the lanes (a reduction tree LLVM maps to shuffles).
#[inline(always)]
fn sum_lanes(mut lanes: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            lanes[i] += lanes[i + width];
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
    fn dot_and_axpy_handle_tails() {
        for n in [0, 1, 15, 16, 17, 80, 113] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.25).collect();
            let expected: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            for level in levels() {
                let got = run_at(level, Dot(&a, &b));
                assert!(
                    (got - expected).abs() <= 1e-4 * (1.0 + expected.abs()),
                    "{level:?} n={n}"
                );
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

    fn levels() -> Vec<SimdLevel> {
        [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512]
            .into_iter()
            .filter(|l| *l <= SimdLevel::detect())
            .collect()
    }

    struct Dot<'a>(&'a [f32], &'a [f32]);
    impl SimdTask for Dot<'_> {
        type Output = f32;
        fn run<S: Simd>(self) -> f32 {
            S::dot(self.0, self.1)
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
