//! A dense projection over all packed tokens at once.

use candle_core::Tensor;

use crate::error::Result;
#[cfg(target_arch = "x86_64")]
use crate::layers::packed::PackedWeight;
use crate::tensor_names::LinearLayout;
use crate::weight_source::{Init, WeightSource};

/// Standard deviation of invented weights (GPT-2's initialiser range).
const INIT_STD: f64 = 0.02;

/// `y = x Wᵀ + b` for `x: [tokens, in]`.
///
/// Invariant: `weight` is `[out, in]`, `bias` (when present) is `[out]`, both in the model dtype.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

/// The weight of a [`Linear`] in the form its product needs.
#[derive(Debug, Clone)]
enum Weight {
    /// `[out, in]`, multiplied by candle.
    Dense(Tensor),
    /// f32 on an AVX-512 CPU: packed once for the dedicated product.
    #[cfg(target_arch = "x86_64")]
    Packed(PackedWeight),
}

impl Linear {
    /// Loads the modules `parts` (each `<name>.weight` and, with `bias`, `<name>.bias`) and stacks
    /// them along the output dimension, so split q/k/v (or gate/up) become one product.
    /// `out_dims[i]` is the output width of `parts[i]`.
    pub(crate) fn load(
        source: &dyn WeightSource,
        parts: &[String],
        in_dim: usize,
        out_dims: &[usize],
        bias: bool,
        layout: LinearLayout,
    ) -> Result<Self> {
        let mut weights = Vec::with_capacity(parts.len());
        let mut biases = Vec::with_capacity(parts.len());
        for (name, &out_dim) in parts.iter().zip(out_dims) {
            let weight_name = format!("{name}.weight");
            let weight = match layout {
                LinearLayout::OutIn => {
                    source.tensor(&weight_name, &[out_dim, in_dim], Init::Noise(INIT_STD))?
                }
                LinearLayout::InOut => source
                    .tensor(&weight_name, &[in_dim, out_dim], Init::Noise(INIT_STD))?
                    .t()?,
            };
            weights.push(weight);
            if bias {
                biases.push(source.tensor(&format!("{name}.bias"), &[out_dim], Init::Zeros)?);
            }
        }
        let weight = Tensor::cat(&weights, 0)?.contiguous()?;
        let bias = if bias {
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        Self::new(weight, bias)
    }

    /// A projection with `weight: [out, in]` and optional `bias: [out]`.
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        #[cfg(target_arch = "x86_64")]
        if let Some(packed) = PackedWeight::new(&weight)? {
            return Ok(Self {
                weight: Weight::Packed(packed),
                bias,
            });
        }
        Ok(Self {
            weight: Weight::Dense(weight),
            bias,
        })
    }

    /// Applies the projection to `x: [tokens, in]`, giving `[tokens, out]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Dense(weight) => x.matmul(&weight.t()?)?,
            #[cfg(target_arch = "x86_64")]
            Weight::Packed(packed) => return packed.matmul(x, self.bias.as_ref()),
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}
