//! Model definitions for vellum: stateless decoder-only language models over the paged KV cache.
//!
//! The crate turns a Hugging Face model directory (Llama 2/3 and TinyLlama, Mistral with its
//! sliding window, Qwen2, OPT, GPT-2) into a [`DecoderModel`] built on `candle-core`: it reads
//! `config.json` in both the pre-5 and the transformers-5 spelling, `generation_config.json`,
//! single or sharded safetensors (memory-mapped, converted to f32/f16/bf16 on load) and the
//! tokenizer files, and reports every broken input as a [`ModelError`] naming the file and the
//! tensor. The engine calls [`CausalLm::forward`] once per step with a [`ForwardBatch`] of packed
//! tokens (prefill chunks and decode tokens mixed, no padding), their positions and the
//! `attention-kernels` metadata; the model writes each layer's K/V into the caches and attends
//! through an `AttentionBackend`, with every linear layer a single product over all packed tokens,
//! and returns f32 logits only for the requested rows. All five families are one decoder
//! parameterised by the normalised [`ModelConfig`]; a seeded random Llama and a byte-level
//! tokenizer built in code form the demo model, so nothing needs a download.
//!
//! Modules:
//! - `config`, `generation_config`, `tokenizer`: the JSON files of a model directory;
//! - `checkpoint`, `weight_source`, `tensor_names`, `loader`: weights from safetensors (or seeded
//!   noise) under each family's tensor names, and [`load_model`];
//! - `layers`: linear, norm, rotary, embedding, MLP, attention projections and the decoder block;
//! - `model`: [`DecoderModel`] and [`ModelSpec`], with the dense full-recompute forward;
//! - `forward_batch`, `causal_lm`, `paged_attention`: the engine-facing trait and its paged path;
//! - `dense_attention`: the cache-free causal attention used as the tests' oracle;
//! - `demo`: [`demo_model`], [`demo_tokenizer`] and [`random_llama`] for benchmarks.
#![deny(missing_docs)]

mod causal_lm;
mod checkpoint;
mod config;
mod demo;
mod dense_attention;
mod error;
mod forward_batch;
mod generation_config;
mod json_file;
mod layers;
mod loader;
mod model;
mod paged_attention;
mod tensor_names;
mod tokenizer;
mod weight_source;

pub use causal_lm::CausalLm;
pub use checkpoint::{Checkpoint, SHARD_INDEX, SINGLE_FILE};
pub use config::{Family, MlpKind, ModelConfig, NormKind, PositionScheme, RopeScaling};
pub use demo::{
    DEMO_BOS_ID, DEMO_EOS_ID, DEMO_MODEL_NAME, DEMO_SEED, DEMO_VOCAB_SIZE, LlamaShape, demo_model,
    demo_tokenizer, random_llama,
};
pub use error::{ModelError, Result};
pub use forward_batch::ForwardBatch;
pub use generation_config::{GENERATION_CONFIG_FILE, GenerationConfig};
pub use loader::{CONFIG_FILE, LoadOptions, load_model};
pub use model::{DecoderModel, ModelSpec};
pub use tokenizer::{ModelTokenizer, SpecialToken, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE};
