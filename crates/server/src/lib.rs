//! The vellum server: one engine thread (scheduler, block manager, KV cache, model) behind an
//! OpenAI-compatible HTTP API.
//!
//! Modules:
//! - [`api`]: the axum router and handlers.
//! - [`engine`]: the engine thread and its handle.
//! - [`startup`]: flags → loaded model, sized KV cache, running engine thread.
//! - [`openai`]: the wire format (requests with vLLM's extras, responses, chunks, error bodies).
//! - [`api_error`]: HTTP errors as OpenAI bodies and a JSON extractor that never answers 422/500.
//! - [`auth`]: the `--api-key` bearer check.
//! - [`cli`]: command-line flags (vLLM's names).
//! - [`chat`]: chat templates rendered with minijinja.
//! - [`metrics`]: Prometheus metrics under vLLM's names.

#![deny(missing_docs)]

pub mod api;
pub mod api_error;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod engine;
pub mod metrics;
pub mod openai;
pub mod startup;

/// Serves the API on `listener` until `shutdown` resolves, then stops the engine thread.
pub async fn serve(
    listener: tokio::net::TcpListener,
    started: startup::Started,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = started.state.engine.clone();
    let app = api::router(started.state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    handle.shutdown();
    let engine_thread = started.engine_thread;
    tokio::task::spawn_blocking(move || engine_thread.join())
        .await
        .ok();
    result
}
