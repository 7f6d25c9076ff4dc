//! The built-in demo model: a small Llama with deterministic seeded weights and a byte-level
//! tokenizer built in code, so the server has an embedded default and tests need no download.
//! Its output is not meaningful text. Also the random Llama of any shape that benchmarks use.

use candle_core::{DType, Device};
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::config::{Family, MlpKind, ModelConfig, NormKind, PositionScheme, RopeScaling};
use crate::error::{ModelError, Result};
use crate::model::DecoderModel;
use crate::tokenizer::{ModelTokenizer, SpecialToken};
use crate::weight_source::RandomSource;

/// The demo model's name; anything that prints it tells the user the output is meaningless.
pub const DEMO_MODEL_NAME: &str = "vellum-demo (random weights, output is not meaningful)";
/// The demo model's seed: the same weights in every build.
pub const DEMO_SEED: u64 = 0x005e_ed0f_7e11;
/// Demo beginning-of-sequence token id.
pub const DEMO_BOS_ID: u32 = 0;
/// Demo end-of-sequence token id.
pub const DEMO_EOS_ID: u32 = 1;
/// Demo vocabulary: two special tokens, then the 256 bytes.
pub const DEMO_VOCAB_SIZE: usize = 2 + 256;

/// The shape of a randomly initialised Llama.
///
/// Invariant (checked by [`random_llama`]): every field is positive, `hidden_size` is a
/// multiple of `num_heads`, the quotient is even, and `num_heads % num_kv_heads == 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlamaShape {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads.
    pub num_kv_heads: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest supported position.
    pub max_position_embeddings: usize,
}

impl LlamaShape {
    /// The demo model's shape (about 0.1 M parameters).
    pub fn demo() -> Self {
        Self {
            hidden_size: 64,
            intermediate_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            vocab_size: DEMO_VOCAB_SIZE,
            max_position_embeddings: 4096,
        }
    }

    /// The benchmark shape: hidden 768, 12 layers, 12 heads, intermediate 2048 and a 12 800-token
    /// tied vocabulary, 94.8 M parameters.
    pub fn bench_95m() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 2048,
            num_layers: 12,
            num_heads: 12,
            num_kv_heads: 12,
            vocab_size: 12_800,
            max_position_embeddings: 4096,
        }
    }

    /// Number of parameters (embeddings tied with the output projection).
    pub fn parameter_count(&self) -> usize {
        let head_dim = self.hidden_size / self.num_heads;
        let attention = self.hidden_size * head_dim * (2 * self.num_heads + 2 * self.num_kv_heads);
        let mlp = 3 * self.hidden_size * self.intermediate_size;
        let norms = 2 * self.hidden_size;
        self.num_layers * (attention + mlp + norms)
            + self.vocab_size * self.hidden_size
            + self.hidden_size
    }

    /// Multiply-adds ×2 per token of the linear layers, the attention excluded (it depends on the
    /// context length) and the output projection included.
    pub fn linear_flops_per_token(&self) -> usize {
        2 * (self.parameter_count() - self.num_layers * 2 * self.hidden_size - self.hidden_size)
    }

    /// The Llama model configuration of this shape.
    pub(crate) fn config(&self) -> ModelConfig {
        ModelConfig {
            family: Family::Llama,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.hidden_size / self.num_heads.max(1),
            vocab_size: self.vocab_size,
            max_position_embeddings: self.max_position_embeddings,
            norm: NormKind::Rms,
            norm_eps: 1e-5,
            mlp: MlpKind::GatedSilu,
            positions: PositionScheme::Rotary {
                theta: 10_000.0,
                scaling: RopeScaling::None,
            },
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            tie_word_embeddings: true,
            sliding_window: None,
            dtype: DType::F32,
            bos_token_id: Some(DEMO_BOS_ID),
            eos_token_ids: vec![DEMO_EOS_ID],
        }
    }

    fn validate(&self) -> Result<()> {
        let fields = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, v)| *v == 0) {
            return Err(ModelError::InvalidShape(format!("{name} must be positive")));
        }
        let head_dim = self.hidden_size / self.num_heads;
        if !self.hidden_size.is_multiple_of(self.num_heads)
            || !head_dim.is_multiple_of(2)
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
        {
            return Err(ModelError::InvalidShape(format!(
                "hidden {} / heads {} / kv heads {} do not give an even head size shared by whole groups",
                self.hidden_size, self.num_heads, self.num_kv_heads
            )));
        }
        Ok(())
    }
}

/// A Llama of `shape` with weights drawn deterministically from `seed` (norm scales 1, matrices
/// uniform with standard deviation 0.02), named `name`.
pub fn random_llama(
    shape: &LlamaShape,
    seed: u64,
    dtype: DType,
    device: &Device,
    name: &str,
) -> Result<DecoderModel> {
    shape.validate()?;
    let config = shape.config();
    let source = RandomSource {
        seed,
        dtype,
        device: device.clone(),
    };
    let eos = config.eos_token_ids.clone();
    DecoderModel::build(&source, config, name.to_string(), eos, dtype, device)
}

/// The built-in demo model, named [`DEMO_MODEL_NAME`].
pub fn demo_model(dtype: DType, device: &Device) -> Result<DecoderModel> {
    random_llama(
        &LlamaShape::demo(),
        DEMO_SEED,
        dtype,
        device,
        DEMO_MODEL_NAME,
    )
}

/// The demo tokenizer: `<s>` = 0, `</s>` = 1, then one token per byte (GPT-2's byte-to-character
/// mapping), no merges, BOS added to every prompt, and a plain chat template.
pub fn demo_tokenizer() -> Result<ModelTokenizer> {
    // The special tokens must also be in the model's vocabulary, or the tokenizer renumbers them.
    let mut vocab = serde_json::Map::new();
    vocab.insert("<s>".into(), Value::from(DEMO_BOS_ID));
    vocab.insert("</s>".into(), Value::from(DEMO_EOS_ID));
    for (byte, ch) in byte_characters().into_iter().enumerate() {
        vocab.insert(ch.to_string(), Value::from(2 + byte as u32));
    }
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                            "trim_offsets": true, "use_regex": true});
    let definition = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(DEMO_BOS_ID, "<s>"), special(DEMO_EOS_ID, "</s>")],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []},
    });
    let tokenizer =
        Tokenizer::from_bytes(definition.to_string()).map_err(|e| ModelError::Tokenizer {
            path: "<built-in demo tokenizer>".into(),
            message: e.to_string(),
        })?;
    Ok(ModelTokenizer {
        tokenizer,
        bos: Some(SpecialToken {
            text: "<s>".into(),
            id: DEMO_BOS_ID,
        }),
        eos: Some(SpecialToken {
            text: "</s>".into(),
            id: DEMO_EOS_ID,
        }),
        add_bos_token: true,
        chat_template: Some(
            "{% for message in messages %}{{ message.role }}: {{ message.content }}\n\
             {% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
                .into(),
        ),
    })
}

/// GPT-2's reversible map from bytes to printable characters, indexed by byte.
fn byte_characters() -> Vec<char> {
    let printable = |b: u32| {
        (u32::from(b'!')..=u32::from(b'~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut next_unprintable = 256;
    (0u32..256)
        .map(|b| {
            let code = if printable(b) {
                b
            } else {
                next_unprintable += 1;
                next_unprintable - 1
            };
            char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
        })
        .collect()
}
