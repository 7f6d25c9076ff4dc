//! The self-attention half of a decoder block: projections and RoPE here, the attention itself
//! delegated to an [`AttentionStep`] (dense causal or paged).

use attention_kernels::with_f32_slice;
use candle_core::Tensor;

use crate::config::ModelConfig;
use crate::error::Result;
use crate::layers::linear::Linear;
use crate::layers::rotary::{RotaryAtPositions, rotate_heads};
use crate::tensor_names::{FamilyNames, QkvNames};
use crate::weight_source::WeightSource;
use rayon::prelude::*;

/// The attention computation of one step, shared by every layer of the model.
///
/// Implementations receive this step's packed queries `[T, num_heads, head_dim]` and keys/values
/// `[T, num_kv_heads, head_dim]` (RoPE already applied) and return `[T, num_heads, head_dim]`.
pub(crate) trait AttentionStep {
    /// Attention of layer `layer` for this step's tokens.
    fn attend(&mut self, layer: usize, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor>;
}

/// Query/key/value and output projections of one layer.
///
/// Invariant: `qkv` produces `[q | k | v]` of widths `num_heads * head_dim`,
/// `num_kv_heads * head_dim`, `num_kv_heads * head_dim`; `out` maps `num_heads * head_dim` back
/// to the hidden size.
#[derive(Debug, Clone)]
pub(crate) struct SelfAttention {
    qkv: Linear,
    out: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    /// Loads the attention of the layer whose module prefix is `layer`.
    pub(crate) fn load(
        source: &dyn WeightSource,
        config: &ModelConfig,
        names: &FamilyNames,
        layer: &str,
    ) -> Result<Self> {
        let (q_width, kv_width) = (config.q_width(), config.kv_width());
        let (parts, out_dims) = match names.qkv {
            QkvNames::Split { q, k, v } => (
                vec![
                    format!("{layer}{q}"),
                    format!("{layer}{k}"),
                    format!("{layer}{v}"),
                ],
                vec![q_width, kv_width, kv_width],
            ),
            QkvNames::Fused(qkv) => (vec![format!("{layer}{qkv}")], vec![q_width + 2 * kv_width]),
        };
        let qkv = Linear::load(
            source,
            &parts,
            config.hidden_size,
            &out_dims,
            config.qkv_bias,
            names.layout,
        )?;
        let out = Linear::load(
            source,
            &[format!("{layer}{}", names.attn_out)],
            q_width,
            &[config.hidden_size],
            config.o_bias,
            names.layout,
        )?;
        Ok(Self {
            qkv,
            out,
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
        })
    }

    /// Attention of `x: [T, hidden]` for layer `layer`, returning `[T, hidden]`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        rotary: Option<&RotaryAtPositions>,
        layer: usize,
        step: &mut dyn AttentionStep,
    ) -> Result<Tensor> {
        let tokens = x.dim(0)?;
        let qkv = self.qkv.forward(x)?;
        let (q, k, v) = self.split_heads(&qkv, rotary)?;
        let attended = step.attend(layer, &q, &k, &v)?;
        self.out
            .forward(&attended.reshape((tokens, self.widths().0))?)
    }

    /// Columns of q and of each of k and v in the fused projection.
    fn widths(&self) -> (usize, usize) {
        (
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
        )
    }

    /// q, k and v (`[tokens, heads, head_dim]` each) of the fused projection `qkv` (q columns,
    /// then k, then v), q and k rotated when `rotary` is given.
    fn split_heads(
        &self,
        qkv: &Tensor,
        rotary: Option<&RotaryAtPositions>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let tokens = qkv.dim(0)?;
        let fused = match rotary {
            Some(rotary) => rotary
                .with_f32_tables(|cos, sin| {
                    with_f32_slice(qkv, |rows| self.split_f32(rows, Some((cos, sin))))
                })
                .flatten(),
            None => with_f32_slice(qkv, |rows| self.split_f32(rows, None)),
        };
        let Some((q, k, v)) = fused else {
            return self.split_heads_candle(qkv, rotary);
        };
        let heads = |data: Vec<f32>, heads: usize| {
            Tensor::from_vec(data, (tokens, heads, self.head_dim), qkv.device())
        };
        Ok((
            heads(q, self.num_heads)?,
            heads(k, self.num_kv_heads)?,
            heads(v, self.num_kv_heads)?,
        ))
    }

    /// [`SelfAttention::split_heads`] with candle's ops, for every dtype and device.
    fn split_heads_candle(
        &self,
        qkv: &Tensor,
        rotary: Option<&RotaryAtPositions>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let tokens = qkv.dim(0)?;
        let (q_width, kv_width) = self.widths();
        let split = |start: usize, heads: usize| -> Result<Tensor> {
            Ok(qkv.narrow(1, start, heads * self.head_dim)?.reshape((
                tokens,
                heads,
                self.head_dim,
            ))?)
        };
        let mut q = split(0, self.num_heads)?;
        let mut k = split(q_width, self.num_kv_heads)?;
        let v = split(q_width + kv_width, self.num_kv_heads)?;
        if let Some(rotary) = rotary {
            q = rotary.apply(&q)?;
            k = rotary.apply(&k)?;
        }
        Ok((q, k, v))
    }

    /// The f32 CPU body of [`SelfAttention::split_heads`]: one pass over the rows of `qkv`,
    /// spread over rayon's pool, with each token's `(cos, sin)` rows when rotating.
    fn split_f32(
        &self,
        qkv: &[f32],
        tables: Option<(&[f32], &[f32])>,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (q_width, kv_width) = self.widths();
        let width = q_width + 2 * kv_width;
        let tokens = qkv.len() / width;
        let half = self.head_dim / 2;
        let mut q = vec![0.0f32; tokens * q_width];
        let mut k = vec![0.0f32; tokens * kv_width];
        let mut v = vec![0.0f32; tokens * kv_width];
        q.par_chunks_mut(q_width)
            .zip(k.par_chunks_mut(kv_width))
            .zip(v.par_chunks_mut(kv_width))
            .zip(qkv.par_chunks(width))
            .enumerate()
            .with_min_len(8)
            .for_each(|(token, (((q, k), v), row))| {
                let (q_in, rest) = row.split_at(q_width);
                let (k_in, v_in) = rest.split_at(kv_width);
                match tables {
                    Some((cos, sin)) => {
                        let rows = token * half..(token + 1) * half;
                        let (cos, sin) = (&cos[rows.clone()], &sin[rows]);
                        rotate_heads(q_in, cos, sin, q);
                        rotate_heads(k_in, cos, sin, k);
                    }
                    None => {
                        q.copy_from_slice(q_in);
                        k.copy_from_slice(k_in);
                    }
                }
                v.copy_from_slice(v_in);
            });
        (q, k, v)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::config::RopeScaling;
    use crate::layers::rotary::Rotary;

    /// The fused f32 split (with and without rotation, GQA widths) equals candle's narrow,
    /// reshape and `rope_thd`.
    #[test]
    fn fused_split_matches_candle() -> Result<()> {
        let device = Device::Cpu;
        // The projections are not used: the split starts from a given `qkv`.
        let unused = || Linear::new(Tensor::zeros((1, 1), DType::F32, &device)?, None);
        let attention = SelfAttention {
            qkv: unused()?,
            out: unused()?,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
        };
        let tokens = 37;
        let qkv = Tensor::randn(0f32, 1.0, (tokens, (4 + 2 * 2) * 16), &device)?;
        let rotary = Rotary::new(16, 64, 10_000.0, RopeScaling::None, DType::F32, &device)?;
        let positions: Vec<u32> = (0..tokens as u32).map(|t| (t * 7) % 64).collect();
        let at = rotary.at(&Tensor::new(positions.as_slice(), &device)?)?;
        let rows = qkv.flatten_all()?.to_vec1::<f32>()?;
        let (cos, sin) = at
            .with_f32_tables(|cos, sin| (cos.to_vec(), sin.to_vec()))
            .expect("f32 tables");
        for (rotary, tables) in [(None, None), (Some(&at), Some((&cos[..], &sin[..])))] {
            let (q, k, v) = attention.split_f32(&rows, tables);
            let candle = attention.split_heads_candle(&qkv, rotary)?;
            for (got, want) in [(q, candle.0), (k, candle.1), (v, candle.2)] {
                let want = want.flatten_all()?.to_vec1::<f32>()?;
                assert_eq!(got.len(), want.len());
                let difference = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(difference <= 1e-6, "max difference {difference}");
            }
        }
        Ok(())
    }
}
