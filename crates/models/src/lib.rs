//! Model definitions for vellum.
//!
//! This crate will hold the Llama, Mistral, Qwen2, OPT and GPT-2 families built on
//! `candle-core`/`candle-nn`, loaded from Hugging Face directories (`config.json`,
//! safetensors, `tokenizer.json`). A model is stateless: the engine calls it once per step
//! with a packed batch of tokens and the paged-attention metadata, and the model reads and
//! writes keys and values only through the `attention-kernels` backend. Not built yet
//! (issue 5); see `ARCHITECTURE.md` for the planned trait.
