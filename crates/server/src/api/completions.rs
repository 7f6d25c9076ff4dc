//! `POST /v1/completions`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use sampling::PositionLogprobs;

use super::AppState;
use super::generate::{
    Envelope, collect, finish_fields, json_logprob, prompt_logprobs_json, stream_chunks,
    streamed_prompt_logprobs, token_text,
};
use crate::api_error::{ApiError, ApiJson};
use crate::engine::ChoiceDelta;
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
    let prompts = tokenize_prompts(&state, request.prompt).await?;
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
            .map(|(index, choice)| {
                let echo = &echoes[index / n];
                let logprobs = (!choice.logprobs.is_empty()).then(|| {
                    legacy_logprobs(&state, &choice.logprobs, &choice.token_ids, echo.len())
                });
                let (finish_reason, stop_reason) = finish_fields(choice.finish);
                CompletionResponseChoice {
                    choice: CompletionChoice {
                        index,
                        text: format!("{echo}{}", choice.text),
                        logprobs,
                        finish_reason,
                        stop_reason,
                    },
                    prompt_logprobs: choice
                        .prompt_logprobs
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
    let mut echo_pending: Vec<bool> = vec![request.echo; echoes.len() * n];
    let choice = move |delta: ChoiceDelta| {
        let mut text = String::new();
        if std::mem::take(&mut echo_pending[delta.index]) {
            text.push_str(&echoes[delta.index / n]);
        }
        text.push_str(&delta.text);
        let logprobs = (!delta.logprobs.is_empty())
            .then(|| legacy_logprobs(&state, &delta.logprobs, &delta.token_ids, 0));
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

/// OpenAI's legacy logprobs: token texts, their logprobs, top alternatives by text, and each
/// token's character offset (starting at `offset`).
fn legacy_logprobs(
    state: &Arc<AppState>,
    positions: &[PositionLogprobs],
    tokens: &[u32],
    offset: usize,
) -> CompletionLogprobs {
    let mut logprobs = CompletionLogprobs::default();
    let mut position = offset;
    for (entry, &token) in positions.iter().zip(tokens) {
        let text = token_text(state, token);
        logprobs.text_offset.push(position);
        position += text.len();
        logprobs
            .token_logprobs
            .push(Some(json_logprob(entry.chosen.logprob)));
        let mut top = BTreeMap::new();
        for alternative in entry.top.iter().chain(std::iter::once(&entry.chosen)) {
            top.insert(
                token_text(state, alternative.token),
                json_logprob(alternative.logprob),
            );
        }
        logprobs.top_logprobs.push(Some(top));
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
