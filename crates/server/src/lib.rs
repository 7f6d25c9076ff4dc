//! The vellum server: one engine thread (scheduler, block manager, KV cache, model) behind an
//! OpenAI-compatible HTTP API.
//!
//! Modules:
//! - [`openai`]: the wire format (requests with vLLM's extras, responses, chunks, error bodies).
//! - [`api_error`]: HTTP errors as OpenAI bodies and a JSON extractor that never answers 422/500.
//! - [`auth`]: the `--api-key` bearer check.
//! - [`cli`]: command-line flags (vLLM's names).
//! - [`chat`]: chat templates rendered with minijinja.
//! - [`metrics`]: Prometheus metrics under vLLM's names.

#![deny(missing_docs)]

pub mod api_error;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod metrics;
pub mod openai;
