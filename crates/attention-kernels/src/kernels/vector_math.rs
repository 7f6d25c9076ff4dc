//! Vector math that the models crate shares with the kernels: the gated SiLU compiled per SIMD
//! level like them and built on the same exponential, and the lane-wise sum of squares of RMS
//! norm, so a model layer gets neither a second implementation.

use super::simd::{Simd, SimdLevel, SimdTask, exp_non_positive, run_at};

/// `Σ x²` over `xs` in sixteen independent partial sums (RMS norm's mean square without a chain
/// of dependent additions).
pub fn sum_of_squares(xs: &[f32]) -> f32 {
    super::simd::sum_of_squares(xs)
}

/// Elements per inner block: the exponentials of one block live in a stack buffer in L1.
const BLOCK: usize = 64;

/// `out[i] = silu(gate[i]) · up[i]`, with `silu(x) = x · σ(x)` (the gated MLP of Llama, Mistral
/// and Qwen2), at the best SIMD level of this CPU.
///
/// σ is computed from `e = exp(−|x|)` as `1 / (1 + e)` for `x ≥ 0` and `e / (1 + e)` below, so
/// no exponential can overflow; the relative error of each result is below 1e-6. NaN in `gate`
/// gives NaN.
///
/// # Panics
/// When the three slices differ in length (a caller bug, not user input).
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(
        gate.len() == out.len() && up.len() == out.len(),
        "silu_mul over {}, {} and {} elements",
        gate.len(),
        up.len(),
        out.len()
    );
    run_at(SimdLevel::detect(), SiluMul { gate, up, out });
}

struct SiluMul<'a> {
    gate: &'a [f32],
    up: &'a [f32],
    out: &'a mut [f32],
}

impl SimdTask for SiluMul<'_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self) {
        let mut e = [0.0f32; BLOCK];
        let blocks = self
            .out
            .chunks_mut(BLOCK)
            .zip(self.gate.chunks(BLOCK).zip(self.up.chunks(BLOCK)));
        for (out, (gate, up)) in blocks {
            let e = &mut e[..out.len()];
            for (e, &g) in e.iter_mut().zip(gate) {
                *e = -g.abs();
            }
            exp_non_positive::<S>(e);
            for (((o, &g), &u), &e) in out.iter_mut().zip(gate).zip(up).zip(e.iter()) {
                let numerator = if g >= 0.0 { 1.0 } else { e };
                *o = g * numerator / (1.0 + e) * u;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silu_f64(x: f32) -> f64 {
        let x = f64::from(x);
        x / (1.0 + (-x).exp())
    }

    #[test]
    fn silu_mul_matches_f64_over_the_whole_range() {
        let gate: Vec<f32> = (0..5_003).map(|i| (i as f32 - 2_500.0) * 0.037).collect();
        let up: Vec<f32> = (0..gate.len()).map(|i| 0.5 + (i % 7) as f32).collect();
        let mut out = vec![f32::NAN; gate.len()];
        silu_mul(&gate, &up, &mut out);
        for ((&g, &u), &o) in gate.iter().zip(&up).zip(&out) {
            let want = silu_f64(g) * f64::from(u);
            let tolerance = 1e-6 * want.abs() + 1e-30;
            assert!(
                (f64::from(o) - want).abs() <= tolerance,
                "silu({g}) · {u}: {o} vs {want}"
            );
        }
    }

    #[test]
    fn silu_mul_saturates_and_propagates_nan() {
        let gate = [-1e30, -200.0, 200.0, 1e30, f32::NAN, 0.0];
        let mut out = [1.0f32; 6];
        silu_mul(&gate, &[1.0; 6], &mut out);
        assert_eq!(out[..4], [-0.0, -0.0, 200.0, 1e30]);
        assert!(out[4].is_nan());
        assert_eq!(out[5], 0.0);
    }
}
