//! RMS and layer normalisation.

use std::ops::Range;

use attention_kernels::{sum_of_squares, with_f32_slice};
use candle_core::Tensor;
use rayon::prelude::*;

use crate::config::NormKind;
use crate::error::Result;
use crate::weight_source::{Init, WeightSource};

/// Rows per parallel task of the f32 loops.
const ROWS_PER_TASK: usize = 16;
/// Fewest tasks a thread takes: below `ROWS_PER_TASK · TASKS_PER_SPLIT` rows (a decode step) the
/// loop stays on the calling thread, where waking a worker would cost more than it saves.
const TASKS_PER_SPLIT: usize = 4;

/// A normalisation over the last dimension.
///
/// Invariant: `weight` (and `bias`, present exactly for layer norm) are `[hidden]` in the model
/// dtype.
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    weight: Tensor,
    bias: Option<Tensor>,
    eps: f32,
}

impl Norm {
    /// Loads the module `name` (`<name>.weight`, plus `<name>.bias` for layer norm).
    pub(crate) fn load(
        source: &dyn WeightSource,
        name: &str,
        size: usize,
        kind: NormKind,
        eps: f64,
    ) -> Result<Self> {
        let weight = source.tensor(&format!("{name}.weight"), &[size], Init::Ones)?;
        let bias = match kind {
            NormKind::Rms => None,
            NormKind::Layer => {
                Some(source.tensor(&format!("{name}.bias"), &[size], Init::Zeros)?)
            }
        };
        Ok(Self {
            weight,
            bias,
            eps: eps as f32,
        })
    }

    /// Normalises each row of `x: [tokens, hidden]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        if let Some(normed) = self.rms_f32(&x)? {
            return Ok(normed);
        }
        Ok(match &self.bias {
            None => candle_nn::ops::rms_norm(&x, &self.weight, self.eps)?,
            Some(bias) => candle_nn::ops::layer_norm(&x, &self.weight, bias, self.eps)?,
        })
    }

    /// `(x + delta, norm(x + delta))`: a residual sum and its normalisation. Both are `[rows,
    /// hidden]`.
    pub(crate) fn forward_residual(&self, x: &Tensor, delta: &Tensor) -> Result<(Tensor, Tensor)> {
        let add = |x: &[f32], delta: &[f32]| {
            row_blocks(x.len(), self.hidden(), |range, sum| {
                let (x, delta) = (&x[range.clone()], &delta[range]);
                for ((s, x), d) in sum.iter_mut().zip(x).zip(delta) {
                    *s = x + d;
                }
            })
        };
        let sum = if x.dims() == delta.dims() {
            with_f32_slice(x, |x| with_f32_slice(delta, |delta| add(x, delta))).flatten()
        } else {
            None
        };
        let sum = match sum {
            Some(sum) => Tensor::from_vec(sum, x.dims(), x.device())?,
            None => (x + delta)?,
        };
        let normed = self.forward(&sum)?;
        Ok((sum, normed))
    }

    fn hidden(&self) -> usize {
        self.weight.elem_count()
    }

    /// RMS norm of a contiguous f32 CPU `x: [rows, hidden]` with f32 weights, as candle computes
    /// it (`x / sqrt(mean(x²) + eps) · weight`, sums in f32); `None` for layer norm and other
    /// dtypes or devices.
    fn rms_f32(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let hidden = self.hidden();
        if self.bias.is_some() || x.dims().last() != Some(&hidden) {
            return Ok(None);
        }
        let normed = with_f32_slice(x, |x| {
            with_f32_slice(&self.weight, |weight| {
                row_blocks(x.len(), hidden, |range, out| {
                    let rows = x[range].chunks_exact(hidden);
                    for (out, x) in out.chunks_exact_mut(hidden).zip(rows) {
                        let mean_square = sum_of_squares(x) / hidden as f32;
                        let scale = 1.0 / (mean_square + self.eps).sqrt();
                        for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
                            *o = v * scale * w;
                        }
                    }
                })
            })
        })
        .flatten();
        Ok(match normed {
            Some(out) => Some(Tensor::from_vec(out, x.dims(), x.device())?),
            None => None,
        })
    }
}

/// `len` f32 filled in blocks of [`ROWS_PER_TASK`] rows of `width` over rayon's pool (a decode
/// step's few rows stay on the calling thread): `fill(range, out)` writes elements `range`.
fn row_blocks(
    len: usize,
    width: usize,
    fill: impl Fn(Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let block = ROWS_PER_TASK * width.max(1);
    let mut out = vec![0.0f32; len];
    out.par_chunks_mut(block)
        .enumerate()
        .with_min_len(TASKS_PER_SPLIT)
        .for_each(|(index, out)| {
            let start = index * block;
            fill(start..start + out.len(), out);
        });
    out
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    fn rms_norm(eps: f32) -> Result<Norm> {
        Ok(Norm {
            weight: Tensor::randn(1f32, 0.3, 72, &Device::Cpu)?,
            bias: None,
            eps,
        })
    }

    /// The f32 loop (many rows: parallel; few: inline) matches candle's `rms_norm`, and the
    /// residual form returns the sum and its norm.
    #[test]
    fn rms_norm_and_residual_match_candle() -> Result<()> {
        let norm = rms_norm(1e-5)?;
        for rows in [3, 200] {
            let x = Tensor::randn(0f32, 2.0, (rows, 72), &Device::Cpu)?;
            let delta = Tensor::randn(0f32, 2.0, (rows, 72), &Device::Cpu)?;
            let max_difference = |a: &Tensor, b: &Tensor| -> Result<f32> {
                Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
            };
            let want = candle_nn::ops::rms_norm(&x, &norm.weight, norm.eps)?;
            let own = norm.rms_f32(&x)?.expect("the f32 loop takes f32 CPU rows");
            assert!(max_difference(&own, &want)? <= 1e-5);
            let (sum, normed) = norm.forward_residual(&x, &delta)?;
            let want_sum = (&x + &delta)?;
            assert_eq!(max_difference(&sum, &want_sum)?, 0.0);
            let want = candle_nn::ops::rms_norm(&want_sum, &norm.weight, norm.eps)?;
            assert!(max_difference(&normed, &want)? <= 1e-5);
        }
        // Other dtypes take candle's path.
        let x = Tensor::randn(0f32, 1.0, (4, 72), &Device::Cpu)?.to_dtype(DType::BF16)?;
        let weight = norm.weight.to_dtype(DType::BF16)?;
        let bf16 = Norm { weight, ..norm };
        assert_eq!(bf16.forward(&x)?.dtype(), DType::BF16);
        Ok(())
    }
}
