//! `POST /v1/completions`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use sampling::PositionLogprobs;

use super::AppState;
use super::generate::{
    Envelope, StreamDelta, collect, finish_fields, json_logprob, prompt_logprobs_json,
    stream_chunks, streamed_prompt_logprobs, token_text,
};
use crate::api_error::{ApiError, ApiJson};
use crate::openai::{
    CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponseChoice, PromptInput,
};

/// Answers a completion request, streamed or whole.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    ApiJson(mut request): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    state.check_model(&request.model)?;
    streamed_prompt_logprobs(&mut request.params, request.stream)?;
    let echo = EchoScoring::of(&mut request);
    let prompts = tokenize_prompts(&state, request.prompt).await?;
    let prompt_ids = if echo.with_logprobs {
        prompts.clone()
    } else {
        Vec::new()
    };
    let echoes: Vec<String> = if request.echo {
        prompts
            .iter()
            .map(|prompt| state.decode(prompt))
            .collect::<Result<_, _>>()?
    } else {
        vec![String::new(); prompts.len()]
    };
    let submission = state.prepare(prompts, request.params, request.priority)?;
    let n = submission.params.n();
    let (receivers, guard) = state.submit("cmpl", submission)?;
    let envelope = Envelope::new("cmpl", &state);

    if !request.stream {
        let (choices, usage) = collect(receivers, guard, n).await?;
        let choices = choices
            .into_iter()
            .enumerate()
            .map(|(index, mut choice)| {
                let echoed = &echoes[index / n];
                if echo.without_generation {
                    // The one token generated to get the prompt computed is not part of the answer.
                    (choice.text, choice.token_ids, choice.logprobs) = Default::default();
                }
                let prompt = choice
                    .prompt_logprobs
                    .as_deref()
                    .filter(|_| echo.with_logprobs)
                    .map(|list| (list, &prompt_ids[index / n][..]));
                let logprobs = choice_logprobs(&state, prompt, &choice.logprobs, &choice.token_ids);
                let (finish_reason, stop_reason) = finish_fields(choice.finish);
                CompletionResponseChoice {
                    choice: CompletionChoice {
                        index,
                        text: format!("{echoed}{}", choice.text),
                        logprobs,
                        finish_reason,
                        stop_reason,
                    },
                    prompt_logprobs: choice
                        .prompt_logprobs
                        .filter(|_| echo.prompt_logprobs_asked)
                        .map(|list| prompt_logprobs_json(&state, &list)),
                }
            })
            .collect();
        let body = envelope.wrap(OBJECT, choices, Some(usage.into()));
        return Ok(Json(body).into_response());
    }

    let include_usage = request
        .stream_options
        .is_some_and(|options| options.include_usage);
    let choice = move |stream: StreamDelta| {
        let mut delta = stream.delta;
        if echo.without_generation {
            (delta.text, delta.token_ids, delta.logprobs) = Default::default();
        }
        // A choice's first chunk carries the echo (empty without `echo`) and, for an echo with
        // logprobs, the prompt's positions.
        let mut text = String::new();
        if stream.first {
            text.push_str(&echoes[delta.index / n]);
        }
        text.push_str(&delta.text);
        let prompt = stream
            .prompt_logprobs
            .as_deref()
            .filter(|_| echo.with_logprobs)
            .map(|list| (list, &prompt_ids[delta.index / n][..]));
        let logprobs = choice_logprobs(&state, prompt, &delta.logprobs, &delta.token_ids);
        let (finish_reason, stop_reason) = finish_fields(delta.finish);
        CompletionChoice {
            index: delta.index,
            text,
            logprobs,
            finish_reason,
            stop_reason,
        }
    };
    Ok(stream_chunks(
        receivers,
        guard,
        n,
        (envelope, OBJECT),
        include_usage,
        choice,
    ))
}

/// The `object` of completion responses and chunks alike.
const OBJECT: &str = "text_completion";

/// How `echo` combines with logprobs, as in vLLM: with `logprobs`, an echo also returns the
/// prompt's logprobs (the first one `null`) before the generated tokens' (streamed: in each
/// choice's first chunk), so a prompt can be scored; with `max_tokens: 0` it generates nothing
/// and returns only the prompt.
struct EchoScoring {
    /// The legacy logprobs list starts with the prompt's positions.
    with_logprobs: bool,
    /// `max_tokens` was 0: one token is generated (to compute the prompt) and left out.
    without_generation: bool,
    /// The request asked for `prompt_logprobs` itself, so the response carries that field.
    prompt_logprobs_asked: bool,
}

impl EchoScoring {
    /// Reads the request's intent and adjusts its sampling parameters to serve it: prompt
    /// logprobs at the `logprobs` depth, and one token instead of zero.
    fn of(request: &mut CompletionRequest) -> Self {
        let params = &mut request.params;
        let prompt_logprobs_asked = params.prompt_logprobs.is_some();
        let without_generation = request.echo && params.max_tokens == Some(0);
        if without_generation {
            params.max_tokens = Some(1);
        }
        let with_logprobs = request.echo && params.logprobs.is_some_and(|k| k >= 0);
        if with_logprobs && !prompt_logprobs_asked {
            params.prompt_logprobs = params.logprobs;
        }
        Self {
            with_logprobs,
            without_generation,
            prompt_logprobs_asked,
        }
    }
}

/// OpenAI's legacy logprobs of a choice (or chunk): with `prompt` (an echo with logprobs: the
/// prompt's positions and tokens), the prompt tokens first, then the generated `positions` of
/// `tokens`; `None` when there are no positions at all.
fn choice_logprobs(
    state: &Arc<AppState>,
    prompt: Option<(&[Option<PositionLogprobs>], &[u32])>,
    positions: &[PositionLogprobs],
    tokens: &[u32],
) -> Option<CompletionLogprobs> {
    let (prompt_positions, prompt_tokens) = prompt.unwrap_or_default();
    if prompt_positions.is_empty() && positions.is_empty() {
        return None;
    }
    let positions = prompt_positions
        .iter()
        .map(Option::as_ref)
        .chain(positions.iter().map(Some));
    let tokens = prompt_tokens.iter().chain(tokens);
    Some(legacy_logprobs(state, positions.zip(tokens)))
}

/// OpenAI's legacy logprobs of `(position, token)` pairs: token texts, their logprobs, top
/// alternatives by text, and each token's character offset from the start of the listed text. A
/// position without logprobs (a prompt's first token) has `null` logprob and alternatives.
fn legacy_logprobs<'a>(
    state: &Arc<AppState>,
    positions: impl Iterator<Item = (Option<&'a PositionLogprobs>, &'a u32)>,
) -> CompletionLogprobs {
    let mut logprobs = CompletionLogprobs::default();
    let mut offset = 0;
    for (entry, &token) in positions {
        let text = token_text(state, token);
        logprobs.text_offset.push(offset);
        offset += text.len();
        logprobs
            .token_logprobs
            .push(entry.map(|entry| json_logprob(entry.chosen.logprob)));
        logprobs.top_logprobs.push(entry.map(|entry| {
            let mut top = BTreeMap::new();
            for alternative in entry.top.iter().chain(std::iter::once(&entry.chosen)) {
                top.insert(
                    token_text(state, alternative.token),
                    json_logprob(alternative.logprob),
                );
            }
            top
        }));
        logprobs.tokens.push(text);
    }
    logprobs
}

/// Token ids of every prompt; texts are tokenized off the async runtime's workers.
async fn tokenize_prompts(
    state: &Arc<AppState>,
    prompt: PromptInput,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let texts = match prompt {
        PromptInput::Tokens(tokens) => return Ok(vec![tokens]),
        PromptInput::TokenLists(lists) if lists.is_empty() => {
            return Err(ApiError::bad_request("`prompt` is an empty list."));
        }
        PromptInput::TokenLists(lists) => return Ok(lists),
        PromptInput::Text(text) => vec![text],
        PromptInput::Texts(texts) if texts.is_empty() => {
            return Err(ApiError::bad_request("`prompt` is an empty list."));
        }
        PromptInput::Texts(texts) => texts,
    };
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        texts
            .iter()
            .map(|text| state.encode(text, true))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|error| ApiError::Internal(format!("tokenizer task failed: {error}")))?
}
