//! Dense causal attention over whole sequences, with no cache: the full-recompute oracle the
//! paged path is tested against.

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};
use crate::layers::attention::AttentionStep;

/// Causal (optionally sliding-window) attention over packed sequences that all start at
/// position 0.
///
/// Invariant: `seq_lens` sums to the number of packed tokens of every call.
#[derive(Debug, Clone)]
pub(crate) struct DenseCausalAttention {
    seq_lens: Vec<usize>,
    scale: f64,
    sliding_window: Option<usize>,
}

impl DenseCausalAttention {
    /// Attention for sequences of the given lengths with softmax scale `scale`.
    pub(crate) fn new(seq_lens: Vec<usize>, scale: f64, sliding_window: Option<usize>) -> Self {
        Self {
            seq_lens,
            scale,
            sliding_window,
        }
    }

    /// `[len, len]` additive mask: 0 where key `j` is visible from query `i`, -inf elsewhere.
    fn mask(&self, len: usize, device: &Device) -> Result<Tensor> {
        let window = self.sliding_window.unwrap_or(usize::MAX);
        let values: Vec<f32> = (0..len)
            .flat_map(|i| {
                (0..len).map(move |j| {
                    if j <= i && i - j < window {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        Ok(Tensor::from_vec(values, (len, len), device)?)
    }

    /// Attention of one sequence: `q: [L, Hq, D]`, `k`/`v: [L, Hkv, D]`.
    fn one_sequence(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (len, num_heads, head_dim) = q.dims3()?;
        let num_kv_heads = k.dim(1)?;
        let group = num_heads / num_kv_heads;
        let per_head = |t: &Tensor| -> Result<Tensor> {
            // [L, Hkv, D] → [Hq, L, D], kv head h serving query heads h*group .. (h+1)*group.
            let t = t.to_dtype(DType::F32)?.transpose(0, 1)?;
            Ok(t.unsqueeze(1)?
                .expand((num_kv_heads, group, len, head_dim))?
                .reshape((num_heads, len, head_dim))?)
        };
        let q = q.to_dtype(DType::F32)?.transpose(0, 1)?.contiguous()?;
        let (k, v) = (per_head(k)?, per_head(v)?);
        let scores = (q.matmul(&k.t()?)? * self.scale)?;
        let scores = scores.broadcast_add(&self.mask(len, q.device())?)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        Ok(probs.matmul(&v)?.transpose(0, 1)?)
    }
}

impl AttentionStep for DenseCausalAttention {
    fn attend(&mut self, _layer: usize, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let total: usize = self.seq_lens.iter().sum();
        if total != q.dim(0)? {
            return Err(ModelError::InvalidBatch(format!(
                "sequence lengths sum to {total} but {} tokens were given",
                q.dim(0)?
            )));
        }
        let mut outputs = Vec::with_capacity(self.seq_lens.len());
        let mut start = 0;
        for &len in &self.seq_lens {
            let part = |t: &Tensor| t.narrow(0, start, len);
            outputs.push(self.one_sequence(&part(q)?, &part(k)?, &part(v)?)?);
            start += len;
        }
        Ok(Tensor::cat(&outputs, 0)?.to_dtype(q.dtype())?)
    }
}
