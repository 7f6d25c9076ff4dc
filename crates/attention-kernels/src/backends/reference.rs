//! The reference backend: gather + dense softmax in f64. The oracle of every test.

use candle_core::Tensor;

use crate::backend::{AttentionBackend, SliceKernel, attend_with};
use crate::cache::LayerKvCache;
use crate::element::KvElement;
use crate::error::Result;
use crate::kernels::inputs::AttnInputs;
use crate::kernels::reference::reference_attention;
use crate::metadata::{AttnMetadata, AttnParams};

/// Naive attention: per query head, gather the visible keys through the block table and compute
/// a dense softmax in f64. Exact up to the final rounding to the output dtype; slow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reference;

impl SliceKernel for Reference {
    fn run<T: KvElement>(&self, inputs: &AttnInputs<'_, T>, out: &mut [f32]) -> Result<()> {
        reference_attention(inputs, out)
    }
}

impl AttentionBackend for Reference {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn attend(
        &self,
        query: &Tensor,
        cache: &LayerKvCache,
        meta: &AttnMetadata,
        params: &AttnParams,
    ) -> Result<Tensor> {
        attend_with(self, query, cache, meta, params)
    }
}
