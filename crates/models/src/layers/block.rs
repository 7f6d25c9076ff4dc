//! One pre-norm decoder block, the same for every family.

use candle_core::Tensor;

use crate::config::ModelConfig;
use crate::error::Result;
use crate::layers::attention::{AttentionStep, SelfAttention};
use crate::layers::mlp::Mlp;
use crate::layers::norm::Norm;
use crate::layers::rotary::RotaryAtPositions;
use crate::tensor_names::FamilyNames;
use crate::weight_source::WeightSource;

/// `h = x + attn(norm₁(x)); y = h + mlp(norm₂(h))`.
#[derive(Debug, Clone)]
pub(crate) struct DecoderBlock {
    attn_norm: Norm,
    attn: SelfAttention,
    mlp_norm: Norm,
    mlp: Mlp,
}

impl DecoderBlock {
    /// Loads the block whose module prefix is `layer` (e.g. `model.layers.3.`).
    pub(crate) fn load(
        source: &dyn WeightSource,
        config: &ModelConfig,
        names: &FamilyNames,
        layer: &str,
    ) -> Result<Self> {
        let norm = |name: &str| {
            Norm::load(
                source,
                &format!("{layer}{name}"),
                config.hidden_size,
                config.norm,
                config.norm_eps,
            )
        };
        Ok(Self {
            attn_norm: norm(names.attn_norm)?,
            attn: SelfAttention::load(source, config, names, layer)?,
            mlp_norm: norm(names.mlp_norm)?,
            mlp: Mlp::load(source, config, names, layer)?,
        })
    }

    /// Applies the block to the residual stream `x: [T, hidden]`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        rotary: Option<&RotaryAtPositions>,
        layer: usize,
        step: &mut dyn AttentionStep,
    ) -> Result<Tensor> {
        let attended = self
            .attn
            .forward(&self.attn_norm.forward(x)?, rotary, layer, step)?;
        let (h, normed) = self.mlp_norm.forward_residual(x, &attended)?;
        let mlp = self.mlp.forward(&normed)?;
        Ok((h + mlp)?)
    }
}
