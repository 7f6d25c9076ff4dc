//! The feed-forward half of a decoder block.

use attention_kernels::with_f32_slice;
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::config::{MlpKind, ModelConfig};
use crate::error::Result;
use crate::layers::linear::Linear;
use crate::tensor_names::{FamilyNames, UpNames};
use crate::weight_source::WeightSource;

/// Rows the MLP takes at once. A long prefill's intermediate activations (`rows × 2 ×
/// intermediate` f32) stay below glibc's 32 MiB mmap threshold, so their buffers are reused from
/// the heap instead of being mapped, faulted in page by page and unmapped on every layer.
const CHUNK_ROWS: usize = 512;

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

    /// Applies the MLP to `x: [tokens, hidden]`, at most [`CHUNK_ROWS`] rows at a time.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let tokens = x.dim(0)?;
        if tokens <= CHUNK_ROWS {
            return self.forward_rows(x);
        }
        let chunks = (0..tokens)
            .step_by(CHUNK_ROWS)
            .map(|start| self.forward_rows(&x.narrow(0, start, CHUNK_ROWS.min(tokens - start))?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&chunks, 0)?)
    }

    /// [`Mlp::forward`] of one chunk of rows.
    fn forward_rows(&self, x: &Tensor) -> Result<Tensor> {
        let up = self.up.forward(x)?;
        let activated = match self.kind {
            MlpKind::GatedSilu => gated_silu(&up, self.intermediate)?,
            MlpKind::Relu => up.relu()?,
            MlpKind::GeluTanh => up.gelu()?,
        };
        self.down.forward(&activated)
    }
}

/// `silu(gate) · value` of a fused `[rows, 2·intermediate]` projection (gate columns first).
///
/// Contiguous f32 on the CPU goes through one pass per row, spread over rayon's pool and
/// vectorised ([`attention_kernels::silu_mul`]); other dtypes, layouts and devices use candle's
/// ops.
fn gated_silu(up: &Tensor, intermediate: usize) -> Result<Tensor> {
    let (rows, width) = up.dims2()?;
    if width == 2 * intermediate
        && let Some(out) = with_f32_slice(up, |input| {
            let mut out = vec![0.0f32; rows * intermediate];
            out.par_chunks_mut(intermediate)
                .zip(input.par_chunks(width))
                .for_each(|(out, row)| {
                    let (gate, value) = row.split_at(intermediate);
                    attention_kernels::silu_mul(gate, value, out);
                });
            out
        })
    {
        return Ok(Tensor::from_vec(out, (rows, intermediate), &Device::Cpu)?);
    }
    let gate = up.narrow(1, 0, intermediate)?;
    let value = up.narrow(1, intermediate, intermediate)?;
    Ok((candle_nn::ops::silu(&gate)? * value)?)
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;
    use crate::demo::LlamaShape;
    use crate::weight_source::RandomSource;

    /// A prefill longer than `CHUNK_ROWS` gives exactly the rows of one unchunked pass.
    #[test]
    fn chunked_rows_equal_one_pass() -> Result<()> {
        let config = LlamaShape::demo().config();
        let source = RandomSource {
            seed: 5,
            dtype: DType::F32,
            device: Device::Cpu,
        };
        let names = FamilyNames::of(config.family);
        let mlp = Mlp::load(&source, &config, &names, "model.layers.0.")?;
        let rows = 2 * CHUNK_ROWS + 37;
        let x = Tensor::randn(0f32, 1.0, (rows, config.hidden_size), &Device::Cpu)?;
        let chunked = mlp.forward(&x)?;
        let whole = mlp.forward_rows(&x)?;
        assert_eq!(chunked.dims(), whole.dims());
        let difference = (chunked - whole)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(difference, 0.0);
        Ok(())
    }

    /// The fused f32 path equals candle's `silu(gate) · value` up to the exponential's rounding.
    #[test]
    fn fused_gated_silu_matches_candle() -> Result<()> {
        let (rows, intermediate) = (37, 80);
        let up = Tensor::randn(0f32, 4.0, (rows, 2 * intermediate), &Device::Cpu)?;
        let fused = gated_silu(&up, intermediate)?;
        let gate = up.narrow(1, 0, intermediate)?;
        let value = up.narrow(1, intermediate, intermediate)?;
        let want = (candle_nn::ops::silu(&gate)? * value)?;
        let difference = (fused - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(difference < 1e-5, "max difference {difference}");
        Ok(())
    }
}
