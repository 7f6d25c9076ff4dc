//! The paged attention step: every layer writes this step's K/V into its cache and attends
//! through an [`AttentionBackend`].

use attention_kernels::{AttentionBackend, AttnMetadata, AttnParams, LayerKvCache};
use candle_core::Tensor;

use crate::error::{ModelError, Result};
use crate::layers::attention::AttentionStep;

/// Paged attention over the per-layer caches `kv` (indexed by layer).
///
/// Invariant: `kv` has one cache per layer of the model that runs this step.
pub(crate) struct PagedAttention<'a> {
    pub(crate) kv: &'a mut [LayerKvCache],
    pub(crate) backend: &'a dyn AttentionBackend,
    pub(crate) meta: &'a AttnMetadata,
    pub(crate) params: AttnParams,
}

impl AttentionStep for PagedAttention<'_> {
    fn attend(&mut self, layer: usize, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let layers = self.kv.len();
        let cache = self.kv.get_mut(layer).ok_or_else(|| {
            ModelError::InvalidBatch(format!("no KV cache for layer {layer} (have {layers})"))
        })?;
        self.backend.write_kv(cache, k, v, self.meta)?;
        Ok(self.backend.attend(q, cache, self.meta, &self.params)?)
    }
}
