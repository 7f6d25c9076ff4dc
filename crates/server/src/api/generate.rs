//! What completions and chat share: checking a prompt against the model, submitting it, and
//! turning the engine's events into whole choices or into a stream of SSE events.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{Stream, StreamExt, select_all};
use sampling::{FinishReason, SamplingParams, StopReason, ValidatedParams};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};

use super::AppState;
use crate::api_error::ApiError;
use crate::engine::{AbortOnDrop, ChoiceDelta, Event, PromptLogprobs, Usage as EngineUsage};
use crate::openai::{ErrorBody, PromptPositionLogprobs, PromptTokenLogprob, ResponseBody, Usage};

/// A whole choice, accumulated from its deltas.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Choice {
    /// Generated text.
    pub text: String,
    /// Generated tokens.
    pub token_ids: Vec<u32>,
    /// One entry per token when logprobs were asked for.
    pub logprobs: Vec<sampling::PositionLogprobs>,
    /// Why it ended.
    pub finish: Option<(FinishReason, Option<StopReason>)>,
    /// Logprobs of its prompt, when asked for.
    pub prompt_logprobs: Option<PromptLogprobs>,
}

impl Choice {
    fn extend(&mut self, delta: ChoiceDelta) {
        self.text.push_str(&delta.text);
        self.token_ids.extend(delta.token_ids);
        self.logprobs.extend(delta.logprobs);
        if delta.finish.is_some() {
            self.finish = delta.finish;
        }
    }
}

/// The validated form of a request: prompts as token ids and the parameters they share.
pub struct Submission {
    /// One entry per prompt.
    pub prompts: Vec<Vec<u32>>,
    /// Shared parameters.
    pub params: ValidatedParams,
    /// Scheduling priority.
    pub priority: i64,
}

impl AppState {
    /// Validates `params` and each prompt against the model: non-empty, known token ids, and
    /// prompt + max_tokens within the context (vLLM's message). Warnings are logged.
    pub fn prepare(
        &self,
        prompts: Vec<Vec<u32>>,
        params: SamplingParams,
        priority: i64,
    ) -> Result<Submission, ApiError> {
        let (params, warnings) = params
            .validate()
            .map_err(|error| ApiError::bad_request(error.to_string()))?;
        for warning in warnings {
            tracing::warn!("request parameters adjusted: {warning}");
        }
        for (field, kind, requested) in [
            ("logprobs", "sample", params.logprobs()),
            ("prompt_logprobs", "prompt", params.prompt_logprobs()),
        ] {
            if let Some(requested) = requested.filter(|&k| k > self.max_logprobs) {
                return Err(ApiError::BadRequest {
                    message: format!(
                        "Requested {kind} logprobs of {requested}, which is greater than max \
                         allowed: {} (--max-logprobs).",
                        self.max_logprobs
                    ),
                    param: Some(field.into()),
                });
            }
        }
        if params.best_of() > self.max_parallel_seqs {
            return Err(ApiError::BadRequest {
                message: format!(
                    "best_of (or n, or the beam width) is {}, but this server runs at most {} \
                     sequences of one request at once (--max-num-seqs).",
                    params.best_of(),
                    self.max_parallel_seqs
                ),
                param: Some("best_of".into()),
            });
        }
        for prompt in &prompts {
            self.check_prompt(prompt, params.max_tokens())?;
        }
        if self.engine.waiting() >= self.max_waiting_requests {
            return Err(ApiError::Overloaded(format!(
                "The server is overloaded: {} requests are already waiting. Retry later.",
                self.engine.waiting()
            )));
        }
        Ok(Submission {
            prompts,
            params,
            priority,
        })
    }

    fn check_prompt(&self, prompt: &[u32], max_tokens: Option<usize>) -> Result<(), ApiError> {
        if prompt.is_empty() {
            return Err(ApiError::bad_request(
                "The prompt is empty; send at least one token.",
            ));
        }
        if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(ApiError::bad_request(format!(
                "Token id {bad} is out of vocabulary (the model has {} tokens).",
                self.vocab_size
            )));
        }
        let limit = self.max_model_len;
        match max_tokens {
            Some(max_tokens) if prompt.len() + max_tokens > limit => {
                Err(ApiError::bad_request(format!(
                    "This model's maximum context length is {limit} tokens. However, you requested \
                     {} tokens ({} in the messages, {max_tokens} in the completion). Please reduce \
                     the length of the messages or completion.",
                    prompt.len() + max_tokens,
                    prompt.len()
                )))
            }
            None if prompt.len() >= limit => Err(ApiError::bad_request(format!(
                "This model's maximum context length is {limit} tokens. However, you requested \
                 {} tokens in the messages, Please reduce the length of the messages.",
                prompt.len()
            ))),
            _ => Ok(()),
        }
    }

    /// Submits every prompt; returns the receivers (prompt order) and a guard that aborts them
    /// all if dropped before being disarmed.
    pub fn submit(
        &self,
        prefix: &str,
        submission: Submission,
    ) -> Result<(Vec<UnboundedReceiver<Event>>, AbortOnDrop), ApiError> {
        let base = format!("{prefix}-{:032x}", rand::random::<u128>());
        let mut receivers = Vec::with_capacity(submission.prompts.len());
        let mut ids = Vec::with_capacity(submission.prompts.len());
        for (index, prompt) in submission.prompts.into_iter().enumerate() {
            let id = format!("{base}-{index}");
            let receiver = self
                .engine
                .submit(
                    id.clone(),
                    prompt,
                    submission.params.clone(),
                    submission.priority,
                )
                .ok_or_else(|| ApiError::Internal("The engine has stopped.".into()))?;
            ids.push(id);
            receivers.push(receiver);
        }
        Ok((receivers, AbortOnDrop::new(self.engine.clone(), ids)))
    }
}

/// Waits for every request and returns its choices (prompt-major, `n` per prompt) and the summed
/// usage. A failed request fails the whole response with its message.
pub async fn collect(
    receivers: Vec<UnboundedReceiver<Event>>,
    guard: AbortOnDrop,
    n: usize,
) -> Result<(Vec<Choice>, EngineUsage), ApiError> {
    let mut choices = vec![Choice::default(); receivers.len() * n];
    let mut usage = EngineUsage::default();
    for (prompt_index, mut receiver) in receivers.into_iter().enumerate() {
        loop {
            match receiver.recv().await {
                Some(Event::Delta(delta)) => {
                    let slot = prompt_index * n + delta.index;
                    choices
                        .get_mut(slot)
                        .ok_or_else(|| ApiError::Internal(format!("choice {slot} out of range")))?
                        .extend(delta);
                }
                Some(Event::PromptLogprobs(list)) => {
                    for choice in &mut choices[prompt_index * n..(prompt_index + 1) * n] {
                        choice.prompt_logprobs = Some(list.clone());
                    }
                }
                Some(Event::Done(done)) => {
                    usage += done;
                    break;
                }
                Some(Event::Failed(message)) => return Err(ApiError::Internal(message)),
                None => return Err(ApiError::Internal("The engine dropped the request.".into())),
            }
        }
    }
    guard.disarm();
    Ok((choices, usage))
}

/// Applies vLLM's rule for `prompt_logprobs` in a streamed request: a positive count is refused
/// (stream chunks have no field for them), and zero is accepted but nothing is computed.
pub fn streamed_prompt_logprobs(params: &mut SamplingParams, stream: bool) -> Result<(), ApiError> {
    match params.prompt_logprobs {
        Some(k) if stream && k > 0 => Err(ApiError::BadRequest {
            message: "`prompt_logprobs` are not available when `stream=True`.".into(),
            param: Some("prompt_logprobs".into()),
        }),
        Some(0) if stream => {
            params.prompt_logprobs = None;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// vLLM's `prompt_logprobs` of a choice: per prompt token, the actual token then the top-`k`
/// alternatives, each with its logprob (floored for JSON), rank and text.
pub fn prompt_logprobs_json(
    state: &Arc<AppState>,
    list: &PromptLogprobs,
) -> Vec<Option<PromptPositionLogprobs>> {
    let entry = |logprob: f32, rank: usize, token: u32| PromptTokenLogprob {
        logprob: json_logprob(logprob),
        rank,
        decoded_token: token_text(state, token),
    };
    list.iter()
        .map(|position| {
            let position = position.as_ref()?;
            let chosen = &position.chosen;
            let mut tokens = vec![(
                chosen.token,
                entry(chosen.logprob, chosen.rank, chosen.token),
            )];
            for alternative in &position.top {
                if alternative.token == chosen.token {
                    // vLLM's dictionary update: the top-k rank wins, the key stays first.
                    tokens[0].1.rank = alternative.rank;
                } else {
                    let alt = entry(alternative.logprob, alternative.rank, alternative.token);
                    tokens.push((alternative.token, alt));
                }
            }
            Some(PromptPositionLogprobs(tokens))
        })
        .collect()
}

/// The parts of a response shared by its body and every chunk of its stream.
pub struct Envelope {
    id: String,
    created: u64,
    model: String,
}

impl Envelope {
    /// A fresh `{prefix}-<random>` id for a response of `state`'s model, created now.
    pub fn new(prefix: &str, state: &AppState) -> Self {
        Envelope {
            id: format!("{prefix}-{:032x}", rand::random::<u128>()),
            created: super::unix_now(),
            model: state.served_model_name.clone(),
        }
    }

    /// A body of kind `object` with `choices` and `usage`.
    pub fn wrap<C>(
        &self,
        object: &'static str,
        choices: Vec<C>,
        usage: Option<Usage>,
    ) -> ResponseBody<C> {
        ResponseBody {
            id: self.id.clone(),
            object,
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        }
    }
}

impl From<EngineUsage> for Usage {
    fn from(usage: EngineUsage) -> Self {
        Usage::new(
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
        )
    }
}

/// OpenAI's `finish_reason` and vLLM's `stop_reason` of a choice's last message.
pub fn finish_fields(
    finish: Option<(FinishReason, Option<StopReason>)>,
) -> (Option<FinishReason>, Option<StopReason>) {
    match finish {
        Some((reason, stop)) => (Some(reason), stop),
        None => (None, None),
    }
}

/// Streams the requests as chunks of kind `object`: one chunk per delta, whose choice `choice`
/// builds, then (when `include_usage`) a usage-only chunk.
pub fn stream_chunks<C, F>(
    receivers: Vec<UnboundedReceiver<Event>>,
    guard: AbortOnDrop,
    n: usize,
    (envelope, object): (Envelope, &'static str),
    include_usage: bool,
    mut choice: F,
) -> Response
where
    C: Serialize + Send + 'static,
    F: FnMut(StreamDelta) -> C + Send + 'static,
{
    let format = move |item: StreamItem| match item {
        StreamItem::Delta(delta) => vec![envelope.wrap(object, vec![choice(delta)], None)],
        StreamItem::Done(usage) if include_usage => {
            vec![envelope.wrap(object, Vec::new(), Some(usage.into()))]
        }
        StreamItem::Done(_) => Vec::new(),
    };
    sse_response(receivers, guard, n, format)
}

/// What a streamed response formats into SSE payloads.
pub enum StreamItem {
    /// A delta of one choice.
    Delta(StreamDelta),
    /// All requests finished; the usage summed over them.
    Done(EngineUsage),
}

/// A delta of choice `delta.index` (already offset by the prompt's position) as a stream sees it.
pub struct StreamDelta {
    /// The delta.
    pub delta: ChoiceDelta,
    /// This is the choice's first delta (where a chunk puts what comes once: the role, the echo).
    pub first: bool,
    /// The prompt's logprobs, on the choice's first delta when the request computed them.
    pub prompt_logprobs: Option<PromptLogprobs>,
}

/// Streams the events of all `receivers` as SSE: `format` turns each item into zero or more
/// JSON payloads; an error is sent as an `{"error": …}` event; the stream always ends with
/// `data: [DONE]`. If the client goes away, the forwarding task stops and `guard` aborts the
/// requests.
fn sse_response<F, T>(
    receivers: Vec<UnboundedReceiver<Event>>,
    guard: AbortOnDrop,
    n: usize,
    mut format: F,
) -> Response
where
    F: FnMut(StreamItem) -> Vec<T> + Send + 'static,
    T: Serialize + Send,
{
    let (sender, body) = tokio::sync::mpsc::channel::<SseEvent>(64);
    let expected = receivers.len();
    let mut merged = select_all(receivers.into_iter().enumerate().map(|(prompt, receiver)| {
        UnboundedReceiverStream::new(receiver).map(move |event| (prompt, event))
    }));
    tokio::spawn(async move {
        let mut usage = EngineUsage::default();
        let mut finished = 0;
        let mut failure = None;
        // Prompt logprobs (a prompt's event comes before its first delta) and which choices
        // have had a delta yet.
        let mut prompt_lists: Vec<Option<PromptLogprobs>> = vec![None; expected];
        let mut started = vec![false; expected * n];
        while finished < expected {
            let Some((prompt, event)) = merged.next().await else {
                failure = Some("The engine dropped the request.".to_string());
                break;
            };
            let item = match event {
                // Only an echo with logprobs computes them for a stream (see
                // `streamed_prompt_logprobs`).
                Event::PromptLogprobs(list) => {
                    prompt_lists[prompt] = Some(list);
                    continue;
                }
                Event::Delta(mut delta) => {
                    delta.index += prompt * n;
                    let first = started
                        .get_mut(delta.index)
                        .is_some_and(|started| !std::mem::replace(started, true));
                    let prompt_logprobs = first.then(|| prompt_lists[prompt].clone()).flatten();
                    StreamItem::Delta(StreamDelta {
                        delta,
                        first,
                        prompt_logprobs,
                    })
                }
                Event::Done(done) => {
                    usage += done;
                    finished += 1;
                    continue;
                }
                Event::Failed(message) => {
                    failure = Some(message);
                    break;
                }
            };
            if !send_all(&sender, format(item)).await {
                return; // The client is gone: dropping `guard` aborts the requests.
            }
        }
        let succeeded = failure.is_none();
        let sent = match failure {
            Some(message) => {
                let body: ErrorBody = ApiError::Internal(message).body();
                send_all(&sender, vec![body]).await
            }
            None => send_all(&sender, format(StreamItem::Done(usage))).await,
        };
        let closed = sent
            && sender
                .send(SseEvent::default().data("[DONE]"))
                .await
                .is_ok();
        if succeeded && closed {
            guard.disarm();
        }
        // Otherwise dropping `guard` aborts whatever of this submission is still running.
    });
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        Box::pin(ReceiverStream::new(body).map(Ok));
    Sse::new(stream).into_response()
}

async fn send_all<T: Serialize>(
    sender: &tokio::sync::mpsc::Sender<SseEvent>,
    items: Vec<T>,
) -> bool {
    for item in items {
        let json = match serde_json::to_string(&item) {
            Ok(json) => json,
            Err(error) => format!(r#"{{"error":{{"message":"{error}","code":500}}}}"#),
        };
        if sender.send(SseEvent::default().data(json)).await.is_err() {
            return false;
        }
    }
    true
}

/// JSON cannot carry `-inf`: logprobs are floored at vLLM's -9999.
pub fn json_logprob(logprob: f32) -> f32 {
    logprob.max(-9999.0)
}

/// The text of one token, as logprob listings show it.
pub fn token_text(state: &Arc<AppState>, token: u32) -> String {
    state
        .tokenizer
        .tokenizer
        .decode(&[token], false)
        .unwrap_or_default()
}
