//! `config.json`: the model families and their normalised hyper-parameters.
//!
//! Hugging Face spells the same quantity differently per family (`n_embd` vs `hidden_size`) and
//! per transformers version (`rope_theta` + `rope_scaling` + `torch_dtype` before version 5,
//! `rope_parameters` + `dtype` after). [`ModelConfig::from_file`] reads all of them into one
//! normalised [`ModelConfig`] that the shared decoder implementation is parameterised by.

use std::path::Path;

use candle_core::DType;

use crate::error::{ModelError, Result};
use crate::json_file::JsonFile;

/// The model families this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Llama 1/2/3 and TinyLlama (`LlamaForCausalLM`).
    Llama,
    /// Mistral, optionally with sliding-window attention (`MistralForCausalLM`).
    Mistral,
    /// Qwen2 (`Qwen2ForCausalLM`): Llama with q/k/v biases.
    Qwen2,
    /// Meta's OPT (`OPTForCausalLM`): learned positions offset by 2, ReLU, LayerNorm, biases.
    Opt,
    /// OpenAI's GPT-2 (`GPT2LMHeadModel`): learned positions, Conv1D weights, gelu_new.
    Gpt2,
}

impl Family {
    /// Maps a Hugging Face architecture class name or `model_type` to a family.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "LlamaForCausalLM" | "llama" => Some(Self::Llama),
            "MistralForCausalLM" | "mistral" => Some(Self::Mistral),
            "Qwen2ForCausalLM" | "qwen2" => Some(Self::Qwen2),
            "OPTForCausalLM" | "opt" => Some(Self::Opt),
            "GPT2LMHeadModel" | "gpt2" => Some(Self::Gpt2),
            _ => None,
        }
    }
}

/// Which normalisation the decoder uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NormKind {
    /// Root-mean-square norm with a learned scale (Llama, Mistral, Qwen2).
    Rms,
    /// Layer norm with learned scale and shift (OPT, GPT-2).
    Layer,
}

/// The MLP's shape and activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpKind {
    /// `down(silu(gate(x)) * up(x))` (Llama, Mistral, Qwen2).
    GatedSilu,
    /// `fc2(relu(fc1(x)))` (OPT).
    Relu,
    /// `fc2(gelu_tanh(fc1(x)))`, GPT-2's `gelu_new`.
    GeluTanh,
}

/// How rotary frequencies are rescaled for long contexts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        /// The interpolation factor (> 0).
        factor: f64,
    },
    /// Llama 3's frequency-dependent smoothing.
    Llama3 {
        /// Scaling of the low frequencies (> 0).
        factor: f64,
        /// Wavelength threshold (as a fraction of the original context) above which the full
        /// factor applies.
        low_freq_factor: f64,
        /// Wavelength threshold below which frequencies are kept (> `low_freq_factor`).
        high_freq_factor: f64,
        /// The context length the model was pre-trained with.
        original_max_position_embeddings: usize,
    },
}

/// How token positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PositionScheme {
    /// Rotary embeddings applied to queries and keys (non-interleaved halves, as in HF).
    Rotary {
        /// The base of the geometric frequency sequence (> 0).
        theta: f64,
        /// Long-context rescaling.
        scaling: RopeScaling,
    },
    /// A learned table added to the token embeddings, looked up at `position + offset`.
    Learned {
        /// OPT stores two unused rows first (offset 2); GPT-2 uses 0.
        offset: usize,
    },
}

/// The normalised hyper-parameters of one checkpoint.
///
/// Invariants (checked when parsing `config.json`): every size is positive,
/// `num_heads % num_kv_heads == 0`, `head_dim` is even when positions are rotary, and a sliding
/// window, when set, is positive.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The family, which fixes tensor names and structural choices.
    pub family: Family,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention when smaller than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding and of the output projection).
    pub vocab_size: usize,
    /// The longest position the model supports.
    pub max_position_embeddings: usize,
    /// Normalisation kind.
    pub norm: NormKind,
    /// Epsilon of every norm.
    pub norm_eps: f64,
    /// MLP shape and activation.
    pub mlp: MlpKind,
    /// Positional scheme.
    pub positions: PositionScheme,
    /// Whether q, k and v projections have biases.
    pub qkv_bias: bool,
    /// Whether the attention output projection has a bias.
    pub o_bias: bool,
    /// Whether the MLP projections have biases.
    pub mlp_bias: bool,
    /// Whether the output projection reuses the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// Each query attends to at most this many most recent positions (itself included).
    pub sliding_window: Option<usize>,
    /// The dtype the checkpoint was saved in.
    pub dtype: DType,
    /// Beginning-of-sequence token named by `config.json`.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens named by `config.json`.
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    /// Reads and normalises `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&JsonFile::read(path)?)
    }

    /// Parses the text of a `config.json` (`path` is used in error messages only).
    pub fn from_json_str(path: &Path, text: &str) -> Result<Self> {
        Self::from_json(&JsonFile::parse(path, text)?)
    }

    fn from_json(json: &JsonFile) -> Result<Self> {
        let family = detect_family(json)?;
        let config = match family {
            Family::Llama | Family::Mistral | Family::Qwen2 => llama_like(json, family)?,
            Family::Opt => opt(json)?,
            Family::Gpt2 => gpt2(json)?,
        };
        config.validate(json)?;
        Ok(config)
    }

    fn validate(&self, json: &JsonFile) -> Result<()> {
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(json.invalid(
                "num_key_value_heads",
                format!(
                    "{} query heads are not a multiple of {} key/value heads",
                    self.num_heads, self.num_kv_heads
                ),
            ));
        }
        if matches!(self.positions, PositionScheme::Rotary { .. })
            && !self.head_dim.is_multiple_of(2)
        {
            return Err(json.invalid("head_dim", "rotary embeddings need an even head_dim"));
        }
        if self.sliding_window == Some(0) {
            return Err(json.invalid("sliding_window", "must be positive"));
        }
        Ok(())
    }

    /// Total query width, `num_heads * head_dim`.
    pub fn q_width(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Total key (or value) width, `num_kv_heads * head_dim`.
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

fn detect_family(json: &JsonFile) -> Result<Family> {
    let architecture = json
        .get("architectures")
        .and_then(|v| v.as_array())
        .and_then(|a| a.first())
        .and_then(|v| v.as_str());
    let name = match (architecture, json.str("model_type")?) {
        (Some(arch), _) => arch,
        (None, Some(model_type)) => model_type,
        (None, None) => {
            return Err(json.invalid("architectures", "neither `architectures` nor `model_type`"));
        }
    };
    Family::from_hf_name(name).ok_or_else(|| ModelError::UnknownArchitecture {
        path: json.path().to_path_buf(),
        name: name.to_string(),
    })
}

fn parse_dtype(json: &JsonFile) -> Result<DType> {
    let key = if json.get("dtype").is_some() {
        "dtype"
    } else {
        "torch_dtype"
    };
    let Some(name) = json.str(key)? else {
        return Ok(DType::F32);
    };
    match name.trim_start_matches("torch.") {
        "float32" | "float" => Ok(DType::F32),
        "float16" | "half" => Ok(DType::F16),
        "bfloat16" => Ok(DType::BF16),
        other => Err(json.invalid(key, format!("unsupported dtype `{other}`"))),
    }
}

/// Llama, Mistral and Qwen2 share one config layout.
fn llama_like(json: &JsonFile, family: Family) -> Result<ModelConfig> {
    let hidden_size = json.required_positive(&["hidden_size"])?;
    let num_heads = json.required_positive(&["num_attention_heads"])?;
    let num_kv_heads = json
        .usize_any(&["num_key_value_heads"])?
        .unwrap_or(num_heads);
    if num_kv_heads == 0 {
        return Err(json.invalid("num_key_value_heads", "must be positive"));
    }
    let head_dim = match json.usize_any(&["head_dim"])? {
        Some(0) => return Err(json.invalid("head_dim", "must be positive")),
        Some(d) => d,
        None => divide_evenly(json, hidden_size, num_heads)?,
    };
    let qkv_bias = family == Family::Qwen2 || json.bool("attention_bias")?.unwrap_or(false);
    let sliding_window = match family {
        Family::Mistral => json.usize_any(&["sliding_window"])?,
        Family::Qwen2 if json.bool("use_sliding_window")?.unwrap_or(false) => {
            return Err(json.invalid(
                "use_sliding_window",
                "Qwen2's per-layer sliding window is not supported",
            ));
        }
        _ => None,
    };
    Ok(ModelConfig {
        family,
        hidden_size,
        intermediate_size: json.required_positive(&["intermediate_size"])?,
        num_layers: json.required_positive(&["num_hidden_layers"])?,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab_size: json.required_positive(&["vocab_size"])?,
        max_position_embeddings: json.required_positive(&["max_position_embeddings"])?,
        norm: NormKind::Rms,
        norm_eps: json.f64("rms_norm_eps")?.unwrap_or(1e-6),
        mlp: MlpKind::GatedSilu,
        positions: rotary(json)?,
        qkv_bias,
        o_bias: family != Family::Qwen2 && qkv_bias,
        mlp_bias: json.bool("mlp_bias")?.unwrap_or(false),
        tie_word_embeddings: json.bool("tie_word_embeddings")?.unwrap_or(false),
        sliding_window,
        dtype: parse_dtype(json)?,
        bos_token_id: json.token_ids("bos_token_id")?.first().copied(),
        eos_token_ids: json.token_ids("eos_token_id")?,
    })
}

fn divide_evenly(json: &JsonFile, hidden_size: usize, num_heads: usize) -> Result<usize> {
    if !hidden_size.is_multiple_of(num_heads) {
        return Err(json.invalid(
            "num_attention_heads",
            format!("hidden size {hidden_size} is not divisible by {num_heads} heads"),
        ));
    }
    Ok(hidden_size / num_heads)
}

/// RoPE parameters from either `rope_parameters` (transformers 5) or `rope_theta` +
/// `rope_scaling` (earlier versions).
fn rotary(json: &JsonFile) -> Result<PositionScheme> {
    let (theta, scaling) = match json.object("rope_parameters")? {
        Some(params) => (params.f64("rope_theta")?, Some(params)),
        None => (json.f64("rope_theta")?, json.object("rope_scaling")?),
    };
    let theta = theta.unwrap_or(10_000.0);
    if theta <= 0.0 {
        return Err(json.invalid("rope_theta", "must be positive"));
    }
    let scaling = match scaling {
        None => RopeScaling::None,
        Some(params) => rope_scaling(&params)?,
    };
    Ok(PositionScheme::Rotary { theta, scaling })
}

fn rope_scaling(params: &JsonFile) -> Result<RopeScaling> {
    let kind = match params.str("rope_type")? {
        Some(kind) => kind,
        None => params.str("type")?.unwrap_or("default"),
    };
    let positive = |key: &str| -> Result<f64> {
        match params.f64(key)? {
            Some(v) if v > 0.0 => Ok(v),
            Some(_) => Err(params.invalid(key, "must be positive")),
            None => Err(params.invalid(key, format!("missing (needed by rope type `{kind}`)"))),
        }
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: positive("factor")?,
        }),
        "llama3" => {
            let low_freq_factor = positive("low_freq_factor")?;
            let high_freq_factor = positive("high_freq_factor")?;
            if high_freq_factor <= low_freq_factor {
                return Err(params.invalid("high_freq_factor", "must exceed low_freq_factor"));
            }
            Ok(RopeScaling::Llama3 {
                factor: positive("factor")?,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: params
                    .required_positive(&["original_max_position_embeddings"])?,
            })
        }
        other => Err(params.invalid("rope_type", format!("unsupported rope type `{other}`"))),
    }
}

fn opt(json: &JsonFile) -> Result<ModelConfig> {
    let hidden_size = json.required_positive(&["hidden_size"])?;
    let num_heads = json.required_positive(&["num_attention_heads"])?;
    if !json.bool("do_layer_norm_before")?.unwrap_or(true) {
        return Err(json.invalid(
            "do_layer_norm_before",
            "post-norm OPT (opt-350m) is not supported",
        ));
    }
    if let Some(proj) = json.usize_any(&["word_embed_proj_dim"])?
        && proj != hidden_size
    {
        return Err(json.invalid(
            "word_embed_proj_dim",
            "embedding projections (opt-350m) are not supported",
        ));
    }
    if !json.bool("layer_norm_elementwise_affine")?.unwrap_or(true) {
        return Err(json.invalid(
            "layer_norm_elementwise_affine",
            "layer norms without weights are not supported",
        ));
    }
    let activation = json.str("activation_function")?.unwrap_or("relu");
    if activation != "relu" {
        return Err(json.invalid(
            "activation_function",
            format!("OPT with `{activation}` is not supported (only relu)"),
        ));
    }
    let bias = json.bool("enable_bias")?.unwrap_or(true);
    Ok(ModelConfig {
        family: Family::Opt,
        hidden_size,
        intermediate_size: json.required_positive(&["ffn_dim"])?,
        num_layers: json.required_positive(&["num_hidden_layers"])?,
        num_heads,
        num_kv_heads: num_heads,
        head_dim: divide_evenly(json, hidden_size, num_heads)?,
        vocab_size: json.required_positive(&["vocab_size"])?,
        max_position_embeddings: json.required_positive(&["max_position_embeddings"])?,
        norm: NormKind::Layer,
        norm_eps: 1e-5,
        mlp: MlpKind::Relu,
        positions: PositionScheme::Learned { offset: 2 },
        qkv_bias: bias,
        o_bias: bias,
        mlp_bias: bias,
        tie_word_embeddings: json.bool("tie_word_embeddings")?.unwrap_or(true),
        sliding_window: None,
        dtype: parse_dtype(json)?,
        bos_token_id: json.token_ids("bos_token_id")?.first().copied(),
        eos_token_ids: json.token_ids("eos_token_id")?,
    })
}

fn gpt2(json: &JsonFile) -> Result<ModelConfig> {
    let hidden_size = json.required_positive(&["n_embd", "hidden_size"])?;
    let num_heads = json.required_positive(&["n_head", "num_attention_heads"])?;
    let activation = json.str("activation_function")?.unwrap_or("gelu_new");
    if !matches!(activation, "gelu_new" | "gelu_pytorch_tanh") {
        return Err(json.invalid(
            "activation_function",
            format!("GPT-2 with `{activation}` is not supported (only gelu_new)"),
        ));
    }
    for key in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
        if json.bool(key)?.unwrap_or(false) {
            return Err(json.invalid(key, "not supported"));
        }
    }
    Ok(ModelConfig {
        family: Family::Gpt2,
        hidden_size,
        intermediate_size: json.usize_any(&["n_inner"])?.unwrap_or(4 * hidden_size),
        num_layers: json.required_positive(&["n_layer", "num_hidden_layers"])?,
        num_heads,
        num_kv_heads: num_heads,
        head_dim: divide_evenly(json, hidden_size, num_heads)?,
        vocab_size: json.required_positive(&["vocab_size"])?,
        max_position_embeddings: json
            .required_positive(&["n_positions", "max_position_embeddings"])?,
        norm: NormKind::Layer,
        norm_eps: json.f64("layer_norm_epsilon")?.unwrap_or(1e-5),
        mlp: MlpKind::GeluTanh,
        positions: PositionScheme::Learned { offset: 0 },
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        tie_word_embeddings: json.bool("tie_word_embeddings")?.unwrap_or(true),
        sliding_window: None,
        dtype: parse_dtype(json)?,
        bos_token_id: json.token_ids("bos_token_id")?.first().copied(),
        eos_token_ids: json.token_ids("eos_token_id")?,
    })
}
