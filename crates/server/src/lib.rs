//! The vellum server: one engine thread (scheduler, block manager, KV cache, model) behind an
//! OpenAI-compatible HTTP API.
//!
//! Modules:
//! - [`openai`]: the wire format (requests with vLLM's extras, responses, chunks, error bodies).

#![deny(missing_docs)]

pub mod openai;
