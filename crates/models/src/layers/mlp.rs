//! The feed-forward half of a decoder block.

use candle_core::Tensor;

use crate::config::{MlpKind, ModelConfig};
use crate::error::Result;
use crate::layers::linear::Linear;
use crate::tensor_names::{FamilyNames, UpNames};
use crate::weight_source::WeightSource;

/// A gated (SiLU) or plain (ReLU / tanh-GELU) MLP.
///
/// Invariant: for [`MlpKind::GatedSilu`] `up` produces `[gate | up]`, `2 * intermediate` wide;
/// otherwise `intermediate` wide. `down` maps `intermediate` back to `hidden`.
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    kind: MlpKind,
    intermediate: usize,
    up: Linear,
    down: Linear,
}

impl Mlp {
    /// Loads the MLP of the layer whose module prefix is `layer`.
    pub(crate) fn load(
        source: &dyn WeightSource,
        config: &ModelConfig,
        names: &FamilyNames,
        layer: &str,
    ) -> Result<Self> {
        let (hidden, intermediate) = (config.hidden_size, config.intermediate_size);
        let (parts, out_dims) = match names.mlp_up {
            UpNames::Gated { gate, up } => (
                vec![format!("{layer}{gate}"), format!("{layer}{up}")],
                vec![intermediate, intermediate],
            ),
            UpNames::Plain(up) => (vec![format!("{layer}{up}")], vec![intermediate]),
        };
        let up = Linear::load(
            source,
            &parts,
            hidden,
            &out_dims,
            config.mlp_bias,
            names.layout,
        )?;
        let down = Linear::load(
            source,
            &[format!("{layer}{}", names.mlp_down)],
            intermediate,
            &[hidden],
            config.mlp_bias,
            names.layout,
        )?;
        Ok(Self {
            kind: config.mlp,
            intermediate,
            up,
            down,
        })
    }

    /// Applies the MLP to `x: [tokens, hidden]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let up = self.up.forward(x)?;
        let activated = match self.kind {
            MlpKind::GatedSilu => {
                let gate = up.narrow(1, 0, self.intermediate)?;
                let value = up.narrow(1, self.intermediate, self.intermediate)?;
                (candle_nn::ops::silu(&gate)? * value)?
            }
            MlpKind::Relu => up.relu()?,
            MlpKind::GeluTanh => up.gelu()?,
        };
        self.down.forward(&activated)
    }
}
