//! The HTTP side of the suite: an OpenAI-compatible engine at a base URL, asked for its model
//! name, its health and metrics, and for streamed completions that are timed chunk by chunk.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::ServeError;
use super::scrape::MetricsSnapshot;
use super::sse::{SseEvent, SseParser};
use super::stats::RequestOutcome;

/// Longest a single completion request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(900);

/// The error of a stream that ended without a chunk carrying a choice.
const NO_CHOICE: &str = "the stream ended without a chunk carrying a choice";

/// A client of one engine. Invariant: `base` has no trailing slash.
#[derive(Clone, Debug)]
pub struct EngineClient {
    http: reqwest::Client,
    base: String,
}

/// One completion request: token-id prompt, greedy, exactly `max_tokens` tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletionRequest {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Tokens to generate (`ignore_eos` makes it exact).
    pub max_tokens: usize,
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

impl EngineClient {
    /// A client of the engine at `base_url` (e.g. `http://127.0.0.1:8000`).
    pub fn new(base_url: &str) -> Result<Self, ServeError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ServeError::http(base_url, &e))?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// The engine's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether `GET /health` answers 200 now.
    pub async fn healthy(&self) -> bool {
        let response = self
            .http
            .get(self.url("/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        response.is_ok_and(|r| r.status().is_success())
    }

    /// The first model `GET /v1/models` lists.
    pub async fn model_name(&self) -> Result<String, ServeError> {
        let url = self.url("/v1/models");
        let response = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| ServeError::http(&url, &e))?;
        let list: ModelList = checked(&url, response)
            .await?
            .json()
            .await
            .map_err(|e| ServeError::http(&url, &e))?;
        list.data
            .into_iter()
            .next()
            .map(|model| model.id)
            .ok_or(ServeError::NoModel { url })
    }

    /// One scrape of `GET /metrics`; `None` when the engine has no metrics endpoint or the
    /// scrape fails (the suite then reports the figures as absent).
    pub async fn metrics(&self) -> Option<MetricsSnapshot> {
        let response = self
            .http
            .get(self.url("/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let text = response.error_for_status().ok()?.text().await.ok()?;
        Some(MetricsSnapshot::parse(&text))
    }

    /// Sends `request` to `model` as a streamed completion and times its chunks. Never fails:
    /// a transport, status or stream error becomes a failed outcome.
    pub async fn complete(&self, model: &str, request: &CompletionRequest) -> RequestOutcome {
        let start = Instant::now();
        match self.stream(model, request, start).await {
            Ok(outcome) => outcome,
            Err(error) => {
                RequestOutcome::failed(request.prompt.len(), start.elapsed(), error.to_string())
            }
        }
    }

    async fn stream(
        &self,
        model: &str,
        request: &CompletionRequest,
        start: Instant,
    ) -> Result<RequestOutcome, ServeError> {
        let url = self.url("/v1/completions");
        let body = json!({
            "model": model,
            "prompt": request.prompt,
            "max_tokens": request.max_tokens,
            "temperature": 0.0,
            "ignore_eos": true,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let response = self
            .http
            .post(&url)
            .json(&body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| ServeError::http(&url, &e))?;
        let mut bytes = checked(&url, response).await?.bytes_stream();
        let mut parser = SseParser::new();
        let mut timing = StreamTiming::default();
        while let Some(piece) = bytes.next().await {
            let piece = piece.map_err(|e| ServeError::http(&url, &e))?;
            let at = start.elapsed();
            for event in parser.push(&piece)? {
                if timing.observe(event, at)? {
                    return Ok(timing.outcome(request.prompt.len(), at));
                }
            }
        }
        let at = start.elapsed();
        for event in parser.finish()? {
            timing.observe(event, at)?;
        }
        Ok(timing.outcome(request.prompt.len(), at))
    }
}

/// The response if its status is a success, else a status error with the start of its body.
async fn checked(url: &str, response: reqwest::Response) -> Result<reqwest::Response, ServeError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(ServeError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        body: body.chars().take(300).collect(),
    })
}

/// The chunk arrivals and token count of one stream so far.
#[derive(Debug, Default)]
struct StreamTiming {
    chunks: Vec<Duration>,
    usage_tokens: Option<usize>,
}

impl StreamTiming {
    /// Records an event that arrived `at` after sending; returns whether the stream is over.
    fn observe(&mut self, event: SseEvent, at: Duration) -> Result<bool, ServeError> {
        match event {
            SseEvent::Chunk {
                text,
                completion_tokens,
            } => {
                if text.is_some() {
                    self.chunks.push(at);
                }
                if completion_tokens.is_some() {
                    self.usage_tokens = completion_tokens;
                }
                Ok(false)
            }
            SseEvent::Error(message) => Err(ServeError::InStream(message)),
            SseEvent::Done => Ok(true),
        }
    }

    /// The outcome of the finished stream; one that never carried a choice failed, as in
    /// vLLM's client.
    fn outcome(self, prompt_tokens: usize, e2e: Duration) -> RequestOutcome {
        if self.chunks.is_empty() {
            return RequestOutcome::failed(prompt_tokens, e2e, NO_CHOICE.to_string());
        }
        RequestOutcome {
            prompt_tokens,
            output_tokens: self.usage_tokens.unwrap_or(self.chunks.len()),
            chunks: self.chunks,
            e2e,
            error: None,
        }
    }
}
