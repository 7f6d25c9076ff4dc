//! The self-attention half of a decoder block: projections and RoPE here, the attention itself
//! delegated to an [`AttentionStep`] (dense causal or paged).

use candle_core::Tensor;

use crate::config::ModelConfig;
use crate::error::Result;
use crate::layers::linear::Linear;
use crate::layers::rotary::RotaryAtPositions;
use crate::tensor_names::{FamilyNames, QkvNames};
use crate::weight_source::WeightSource;

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
        let (q_width, kv_width) = (
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
        );
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
        let attended = step.attend(layer, &q, &k, &v)?;
        self.out.forward(&attended.reshape((tokens, q_width))?)
    }
}
