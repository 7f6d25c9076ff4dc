//! The HTTP API (axum): OpenAI's completions and chat, plus vLLM's auxiliary endpoints.
//!
//! Handlers never touch the model: they tokenize, validate, submit to the engine through its
//! handle and format what comes back. Every failure is an [`ApiError`] with an OpenAI body.

mod chat;
mod completions;
mod generate;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use models::ModelTokenizer;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api_error::{ApiError, ApiJson, MAX_BODY_BYTES};
use crate::auth::check_bearer;
use crate::chat::ChatTemplate;
use crate::engine::EngineHandle;
use crate::metrics::Metrics;

/// Everything the handlers share. Immutable after startup.
pub struct AppState {
    /// The engine.
    pub engine: EngineHandle,
    /// The model's tokenizer.
    pub tokenizer: Arc<ModelTokenizer>,
    /// The compiled chat template, if the model has one.
    pub chat_template: Option<ChatTemplate>,
    /// The name clients must send as `model`.
    pub served_model_name: String,
    /// Where the model came from (shown as `root` in `/v1/models`).
    pub model_root: String,
    /// Longest prompt + output.
    pub max_model_len: usize,
    /// Width of the model's logits (token ids must be below it).
    pub vocab_size: usize,
    /// Required bearer token for `/v1`, if any.
    pub api_key: Option<String>,
    /// Waiting requests above which new ones get 503.
    pub max_waiting_requests: usize,
    /// Most sequences one request may run at once (`best_of`, beam width): the scheduler's
    /// `min(max_num_seqs, max_num_batched_tokens)`.
    pub max_parallel_seqs: usize,
    /// Most top logprobs a request may ask for, per generated or prompt token (`--max-logprobs`).
    pub max_logprobs: usize,
    /// Metrics rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Unix seconds at startup.
    pub created: u64,
}

impl AppState {
    /// 404 unless `model` is the served model's name.
    pub fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if model == self.served_model_name {
            Ok(())
        } else {
            Err(ApiError::ModelNotFound(model.to_string()))
        }
    }

    /// Token ids of `text`, with the tokenizer's special tokens (BOS) when `add_special_tokens`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ApiError> {
        let result = if add_special_tokens {
            self.tokenizer
                .encode(text)
                .map_err(|error| error.to_string())
        } else {
            self.tokenizer
                .tokenizer
                .encode(text, false)
                .map(|encoding| encoding.get_ids().to_vec())
                .map_err(|error| error.to_string())
        };
        result.map_err(|message| ApiError::bad_request(format!("Could not tokenize: {message}")))
    }

    /// Text of `ids` (special tokens dropped); unknown ids are a 400.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ApiError> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(ApiError::bad_request(format!(
                "Token id {bad} is out of vocabulary."
            )));
        }
        self.tokenizer
            .decode(ids)
            .map_err(|error| ApiError::bad_request(format!("Could not detokenize: {error}")))
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The whole API.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/models", get(list_models))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.api_key
        && let Err(error) = check_bearer(request.headers(), key)
    {
        return error.into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::NotFoundPath
}

async fn health(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.engine.is_alive() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn version() -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn list_models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.served_model_name,
            "object": "model",
            "created": state.created,
            "owned_by": "vellum",
            "root": state.model_root,
            "parent": null,
            "max_model_len": state.max_model_len,
        }],
    }))
}

/// `POST /tokenize`: a prompt (or chat messages are not supported here) to token ids.
#[derive(Deserialize)]
struct TokenizeRequest {
    model: Option<String>,
    prompt: String,
    #[serde(default = "default_true")]
    add_special_tokens: bool,
}

fn default_true() -> bool {
    true
}

async fn tokenize(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<TokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    if let Some(model) = &request.model {
        state.check_model(model)?;
    }
    let tokens = state.encode(&request.prompt, request.add_special_tokens)?;
    Ok(Json(json!({
        "count": tokens.len(),
        "max_model_len": state.max_model_len,
        "tokens": tokens,
    })))
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    model: Option<String>,
    tokens: Vec<u32>,
}

async fn detokenize(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<DetokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    if let Some(model) = &request.model {
        state.check_model(model)?;
    }
    Ok(Json(json!({ "prompt": state.decode(&request.tokens)? })))
}
