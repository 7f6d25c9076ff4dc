//! RMS and layer normalisation.

use candle_core::Tensor;

use crate::config::NormKind;
use crate::error::Result;
use crate::weight_source::{Init, WeightSource};

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
        Ok(match &self.bias {
            None => candle_nn::ops::rms_norm(&x, &self.weight, self.eps)?,
            Some(bias) => candle_nn::ops::layer_norm(&x, &self.weight, bias, self.eps)?,
        })
    }
}
