//! The [`CausalLm`] trait the engine calls once per step.

use attention_kernels::{AttentionBackend, AttnParams, LayerKvCache};
use candle_core::Tensor;

use crate::error::{ModelError, Result};
use crate::forward_batch::ForwardBatch;
use crate::model::{DecoderModel, ModelSpec};
use crate::paged_attention::PagedAttention;

/// A stateless causal language model over the paged KV cache.
///
/// Implementations hold weights only: all per-request state lives in the caches and the batch.
pub trait CausalLm: Send + Sync {
    /// Shapes, dtype, window and special tokens.
    fn spec(&self) -> &ModelSpec;

    /// Runs one step: writes the K/V of every packed token into `kv` (one cache per layer, in
    /// layer order, dtype and geometry matching [`CausalLm::spec`]) at the batch's slots, attends
    /// over the cached context through `backend`, and returns f32 logits
    /// `[batch.logit_rows().len(), vocab]` for the requested rows, in that order.
    fn forward(
        &self,
        batch: &ForwardBatch,
        kv: &mut [LayerKvCache],
        backend: &dyn AttentionBackend,
    ) -> Result<Tensor>;
}

impl CausalLm for DecoderModel {
    fn spec(&self) -> &ModelSpec {
        DecoderModel::spec(self)
    }

    fn forward(
        &self,
        batch: &ForwardBatch,
        kv: &mut [LayerKvCache],
        backend: &dyn AttentionBackend,
    ) -> Result<Tensor> {
        let spec = DecoderModel::spec(self);
        if kv.len() != spec.num_layers {
            return Err(ModelError::InvalidBatch(format!(
                "{} layer caches for a model of {} layers",
                kv.len(),
                spec.num_layers
            )));
        }
        let params = AttnParams {
            sliding_window: spec.sliding_window,
            ..AttnParams::new(self.attention_scale() as f32, spec.num_kv_heads)
        };
        let mut step = PagedAttention {
            kv,
            backend,
            meta: batch.attn(),
            params,
        };
        self.run(
            batch.tokens(),
            batch.positions(),
            batch.logit_rows(),
            &mut step,
        )
    }
}
