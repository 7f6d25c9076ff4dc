//! The fast CPU backend: rayon over work items, online softmax in f32, SIMD inner loops.

use candle_core::Tensor;

use crate::backend::{AttentionBackend, SliceKernel, attend_with};
use crate::cache::LayerKvCache;
use crate::element::KvElement;
use crate::error::{KernelError, Result};
use crate::kernels::inputs::AttnInputs;
use crate::kernels::paged::{CpuKernelConfig, paged_attention_with};
use crate::kernels::simd::SimdLevel;
use crate::metadata::{AttnMetadata, AttnParams};

/// The fast CPU backend. Invariant: its SIMD level is supported by the CPU it was built on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    config: CpuKernelConfig,
}

impl Cpu {
    /// The best SIMD level of this CPU and the default work split.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend with an explicit configuration; errors when the CPU lacks the SIMD level.
    pub fn with_config(config: CpuKernelConfig) -> Result<Self> {
        if config.simd > SimdLevel::detect() {
            return Err(KernelError::BackendUnavailable(
                "requested SIMD level not supported by this CPU",
            ));
        }
        Ok(Self { config })
    }

    /// The configuration in use.
    pub fn config(&self) -> &CpuKernelConfig {
        &self.config
    }
}

impl SliceKernel for Cpu {
    fn run<T: KvElement>(&self, inputs: &AttnInputs<'_, T>, out: &mut [f32]) -> Result<()> {
        paged_attention_with(inputs, out, &self.config)
    }
}

impl AttentionBackend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
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
