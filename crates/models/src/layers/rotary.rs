//! Rotary position embeddings (non-interleaved halves, as in Hugging Face), gathered at explicit
//! per-token positions so that packed batches need no per-sequence offset.

use std::f64::consts::PI;

use attention_kernels::with_f32_slice;
use candle_core::{DType, Device, Tensor};

use crate::config::RopeScaling;
use crate::error::Result;

/// Precomputed cosines and sines for every position the model supports.
///
/// Invariant: `cos` and `sin` are `[max_positions, head_dim / 2]`, contiguous, in the model dtype.
#[derive(Debug, Clone)]
pub(crate) struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

/// The rows of [`Rotary`] for one step's positions.
///
/// Invariant: `cos` and `sin` are `[tokens, head_dim / 2]`, contiguous.
#[derive(Debug, Clone)]
pub(crate) struct RotaryAtPositions {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    /// Builds the tables for `head_dim` (even) and positions `0..max_positions`.
    pub(crate) fn new(
        head_dim: usize,
        max_positions: usize,
        theta: f64,
        scaling: RopeScaling,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let inv_freq = inverse_frequencies(head_dim, theta, scaling);
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for position in 0..max_positions {
            for &f in &inv_freq {
                // Hugging Face computes the angle in f32; doing the same keeps parity at long
                // positions.
                let angle = position as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let table = |v: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (max_positions, half), device)?.to_dtype(dtype)?)
        };
        Ok(Self {
            cos: table(cos)?,
            sin: table(sin)?,
        })
    }

    /// Gathers the rows for `positions: [tokens]` (u32, each below `max_positions`).
    pub(crate) fn at(&self, positions: &Tensor) -> Result<RotaryAtPositions> {
        Ok(RotaryAtPositions {
            cos: self.cos.index_select(positions, 0)?,
            sin: self.sin.index_select(positions, 0)?,
        })
    }
}

impl RotaryAtPositions {
    /// Runs `f` with the f32 cos and sin rows (`[tokens, head_dim / 2]` each, lent in place) when
    /// the tables are f32 on the CPU; `None` otherwise.
    pub(crate) fn with_f32_tables<R>(&self, f: impl FnOnce(&[f32], &[f32]) -> R) -> Option<R> {
        with_f32_slice(&self.cos, |cos| {
            with_f32_slice(&self.sin, |sin| f(cos, sin))
        })
        .flatten()
    }

    /// Rotates `x: [tokens, heads, head_dim]`.
    pub(crate) fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.unsqueeze(0)?.contiguous()?;
        Ok(candle_nn::rotary_emb::rope_thd(&x, &self.cos, &self.sin)?.squeeze(0)?)
    }
}

/// Writes the rotation of each head of `src` (one token's heads, `head_dim = 2 · cos.len()`
/// each) into `dst`, with that token's `cos`/`sin` rows: the halves `(x₁, x₂)` become
/// `(x₁·cos − x₂·sin, x₁·sin + x₂·cos)`, the arithmetic of candle's `rope_thd`.
pub(crate) fn rotate_heads(src: &[f32], cos: &[f32], sin: &[f32], dst: &mut [f32]) {
    let half = cos.len();
    for (src, dst) in src
        .chunks_exact(2 * half)
        .zip(dst.chunks_exact_mut(2 * half))
    {
        let (x1, x2) = src.split_at(half);
        let (y1, y2) = dst.split_at_mut(half);
        for i in 0..half {
            y1[i] = x1[i] * cos[i] - x2[i] * sin[i];
            y2[i] = x1[i] * sin[i] + x2[i] * cos[i];
        }
    }
}

/// `1 / theta^(2i / head_dim)` for `i in 0..head_dim/2`, rescaled as `scaling` says.
fn inverse_frequencies(head_dim: usize, theta: f64, scaling: RopeScaling) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let base = (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32;
            rescale(base, scaling)
        })
        .collect()
}

fn rescale(inv_freq: f32, scaling: RopeScaling) -> f32 {
    match scaling {
        RopeScaling::None => inv_freq,
        RopeScaling::Linear { factor } => inv_freq / factor as f32,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old_context = original_max_position_embeddings as f64;
            let low_freq_wavelen = old_context / low_freq_factor;
            let high_freq_wavelen = old_context / high_freq_factor;
            let inv = f64::from(inv_freq);
            let wavelen = 2.0 * PI / inv;
            let scaled = if wavelen < high_freq_wavelen {
                inv
            } else if wavelen > low_freq_wavelen {
                inv / factor
            } else {
                let smooth = (old_context / wavelen - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * inv / factor + smooth * inv
            };
            scaled as f32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_keeps_high_frequencies_and_divides_low_ones() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let plain = inverse_frequencies(128, 500_000.0, RopeScaling::None);
        let scaled = inverse_frequencies(128, 500_000.0, scaling);
        // The highest frequency (wavelength 2π) is untouched.
        assert_eq!(plain[0], scaled[0]);
        // The lowest frequency has a wavelength far beyond 8192 and is divided by the factor.
        let last = plain.len() - 1;
        assert!((scaled[last] - plain[last] / 8.0).abs() <= plain[last] * 1e-6);
        // Medium frequencies lie between the two.
        for (p, s) in plain.iter().zip(&scaled) {
            assert!(*s <= *p && *s >= p / 8.0 * (1.0 - 1e-6));
        }
    }

    #[test]
    fn rotation_at_position_zero_is_identity_and_preserves_norm() -> Result<()> {
        let device = Device::Cpu;
        let rotary = Rotary::new(8, 16, 10_000.0, RopeScaling::None, DType::F32, &device)?;
        let x = Tensor::arange(0f32, 2.0 * 2.0 * 8.0, &device)?.reshape((2, 2, 8))?;
        let positions = Tensor::new(&[0u32, 5], &device)?;
        let y = rotary.at(&positions)?.apply(&x)?;
        let x0: Vec<f32> = x.get(0)?.flatten_all()?.to_vec1()?;
        let y0: Vec<f32> = y.get(0)?.flatten_all()?.to_vec1()?;
        assert_eq!(x0, y0);
        let norm = |t: &Tensor| -> Result<f32> { Ok(t.sqr()?.sum_all()?.to_scalar::<f32>()?) };
        let (nx, ny) = (norm(&x.get(1)?)?, norm(&y.get(1)?)?);
        assert!((nx - ny).abs() <= nx * 1e-5, "{nx} vs {ny}");
        assert_ne!(x.get(1)?.to_vec2::<f32>()?, y.get(1)?.to_vec2::<f32>()?);
        Ok(())
    }
}
