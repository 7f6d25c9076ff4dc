//! The shared decoder: embeddings, blocks, final norm and output projection, parameterised by a
//! [`ModelConfig`] so that all five families are one implementation.

use candle_core::{DType, Device, Tensor};

use crate::config::{Family, ModelConfig, PositionScheme};
use crate::dense_attention::DenseCausalAttention;
use crate::error::{ModelError, Result};
use crate::layers::attention::AttentionStep;
use crate::layers::block::DecoderBlock;
use crate::layers::embedding::Embeddings;
use crate::layers::linear::Linear;
use crate::layers::norm::Norm;
use crate::layers::rotary::Rotary;
use crate::tensor_names::{FamilyNames, LM_HEAD};
use crate::weight_source::{Init, WeightSource};

/// What the engine needs to know about a model to size caches, batches and stop conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Display name; for the demo model it says that its output is meaningless.
    pub name: String,
    /// The family.
    pub family: Family,
    /// Number of decoder layers (= number of per-layer KV caches).
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads per layer's cache.
    pub num_kv_heads: usize,
    /// Width of one head (the cache's last dimension).
    pub head_dim: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Number of logits per row.
    pub vocab_size: usize,
    /// Positions must be below this.
    pub max_position_embeddings: usize,
    /// Dtype of the weights and of the KV cache the model expects.
    pub dtype: DType,
    /// Sliding attention window (tokens, the query included), if any.
    pub sliding_window: Option<usize>,
    /// Beginning-of-sequence token, if the checkpoint names one.
    pub bos_token_id: Option<u32>,
    /// Tokens that end generation (from `generation_config.json`, else `config.json`).
    pub eos_token_ids: Vec<u32>,
}

/// A loaded decoder-only language model. It holds weights only, never per-request state.
///
/// Invariant: `blocks.len() == spec.num_layers`; `lm_head` maps hidden to vocab; `rotary` is
/// present exactly when the configuration uses rotary positions.
#[derive(Debug, Clone)]
pub struct DecoderModel {
    spec: ModelSpec,
    config: ModelConfig,
    device: Device,
    embeddings: Embeddings,
    rotary: Option<Rotary>,
    blocks: Vec<DecoderBlock>,
    final_norm: Norm,
    lm_head: Linear,
}

impl DecoderModel {
    /// Builds the model described by `config` from `source`, in `dtype` on `device`.
    pub(crate) fn build(
        source: &dyn WeightSource,
        config: ModelConfig,
        name: String,
        eos_token_ids: Vec<u32>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let names = FamilyNames::of(config.family);
        let prefix = names.prefix_in(source);
        let position_name = names.position_embedding.map(|p| format!("{prefix}{p}"));
        let embeddings = Embeddings::load(
            source,
            &config,
            &format!("{prefix}{}", names.token_embedding),
            position_name.as_deref(),
        )?;
        let rotary = match config.positions {
            PositionScheme::Rotary { theta, scaling } => Some(Rotary::new(
                config.head_dim,
                config.max_position_embeddings,
                theta,
                scaling,
                dtype,
                device,
            )?),
            PositionScheme::Learned { .. } => None,
        };
        let blocks = (0..config.num_layers)
            .map(|i| DecoderBlock::load(source, &config, &names, &names.layer_prefix(prefix, i)))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = Norm::load(
            source,
            &format!("{prefix}{}", names.final_norm),
            config.hidden_size,
            config.norm,
            config.norm_eps,
        )?;
        let lm_head = Linear::new(
            if config.tie_word_embeddings {
                embeddings.token_matrix().clone()
            } else {
                source.tensor(
                    LM_HEAD,
                    &[config.vocab_size, config.hidden_size],
                    Init::Noise(0.02),
                )?
            },
            None,
        )?;
        let spec = ModelSpec {
            name,
            family: config.family,
            num_layers: config.num_layers,
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            hidden_size: config.hidden_size,
            vocab_size: config.vocab_size,
            max_position_embeddings: config.max_position_embeddings,
            dtype,
            sliding_window: config.sliding_window,
            bos_token_id: config.bos_token_id,
            eos_token_ids,
        };
        Ok(Self {
            spec,
            config,
            device: device.clone(),
            embeddings,
            rotary,
            blocks,
            final_norm,
            lm_head,
        })
    }

    /// The engine-facing summary of this model.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The normalised configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device holding the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The softmax scale of every attention layer, `1 / sqrt(head_dim)`.
    pub fn attention_scale(&self) -> f64 {
        1.0 / (self.spec.head_dim as f64).sqrt()
    }

    /// Full-recompute forward with dense causal attention and no cache: each sequence is run
    /// from position 0. Returns f32 logits for every token, `[Σ len, vocab]`, sequences packed in
    /// order. This is the oracle the paged path is tested against.
    pub fn forward_dense(&self, sequences: &[&[u32]]) -> Result<Tensor> {
        let tokens: Vec<u32> = sequences.iter().flat_map(|s| s.iter().copied()).collect();
        let positions: Vec<u32> = sequences.iter().flat_map(|s| 0..s.len() as u32).collect();
        let rows: Vec<u32> = (0..tokens.len() as u32).collect();
        let mut step = DenseCausalAttention::new(
            sequences.iter().map(|s| s.len()).collect(),
            self.attention_scale(),
            self.spec.sliding_window,
        );
        self.run(&tokens, &positions, &rows, &mut step)
    }

    /// Runs the packed tokens through every layer with `step` as the attention, then returns
    /// f32 logits `[logit_rows.len(), vocab]` for the requested rows only.
    pub(crate) fn run(
        &self,
        tokens: &[u32],
        positions: &[u32],
        logit_rows: &[u32],
        step: &mut dyn AttentionStep,
    ) -> Result<Tensor> {
        self.check_inputs(tokens, positions, logit_rows)?;
        let tokens_t = Tensor::new(tokens, &self.device)?;
        let positions_t = Tensor::new(positions, &self.device)?;
        let rotary = self
            .rotary
            .as_ref()
            .map(|r| r.at(&positions_t))
            .transpose()?;
        let mut x = self.embeddings.forward(&tokens_t, &positions_t)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, rotary.as_ref(), layer, step)?;
        }
        let rows = Tensor::new(logit_rows, &self.device)?;
        let selected = self.final_norm.forward(&x.index_select(&rows, 0)?)?;
        Ok(self.lm_head.forward(&selected)?.to_dtype(DType::F32)?)
    }

    fn check_inputs(&self, tokens: &[u32], positions: &[u32], logit_rows: &[u32]) -> Result<()> {
        let invalid = |message: String| Err(ModelError::InvalidBatch(message));
        if tokens.is_empty() {
            return invalid("no tokens".into());
        }
        if tokens.len() != positions.len() {
            return invalid(format!(
                "{} tokens but {} positions",
                tokens.len(),
                positions.len()
            ));
        }
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= self.spec.vocab_size) {
            return invalid(format!(
                "token id {t} outside the vocabulary of {}",
                self.spec.vocab_size
            ));
        }
        let max_position = self.spec.max_position_embeddings;
        if let Some(p) = positions.iter().find(|&&p| p as usize >= max_position) {
            return invalid(format!("position {p} not below {max_position}"));
        }
        if let Some(r) = logit_rows.iter().find(|&&r| r as usize >= tokens.len()) {
            return invalid(format!(
                "logit row {r} outside the batch of {} tokens",
                tokens.len()
            ));
        }
        Ok(())
    }
}
