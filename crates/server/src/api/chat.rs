//! `POST /v1/chat/completions`.

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
use crate::chat::TemplateMessage;
use crate::openai::{
    ChatChoice, ChatCompletionRequest, ChatCompletionResponse, ChatLogprobs, ChatMessageOut,
    ChatTokenLogprob,
};

/// Answers a chat request, streamed or whole.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    state.check_model(&request.model)?;
    let template = state.chat_template.as_ref().ok_or_else(|| {
        ApiError::bad_request(
            "This model has no chat template (tokenizer_config.json has no `chat_template`); \
             use /v1/completions instead.",
        )
    })?;
    if request.messages.is_empty() {
        return Err(ApiError::bad_request(
            "`messages` is empty; send at least one message.",
        ));
    }
    let messages: Vec<TemplateMessage> = request
        .messages
        .iter()
        .map(|message| TemplateMessage {
            role: message.role.clone(),
            content: message
                .content
                .as_ref()
                .map(|content| content.text())
                .unwrap_or_default(),
        })
        .collect();
    let prompt_text = template.render(&messages, request.add_generation_prompt)?;
    // The template writes the special tokens itself, as transformers' apply_chat_template.
    let prompt = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || state.encode(&prompt_text, false))
            .await
            .map_err(|error| ApiError::Internal(format!("tokenizer task failed: {error}")))??
    };
    let mut params = request.sampling_params();
    streamed_prompt_logprobs(&mut params, request.stream)?;
    let submission = state.prepare(vec![prompt], params, request.priority)?;
    let n = submission.params.n();
    let (receivers, guard) = state.submit("chatcmpl", submission)?;
    let envelope = Envelope::new("chatcmpl", &state);
    let with_logprobs = request.logprobs;

    if !request.stream {
        let (choices, usage) = collect(receivers, guard, n).await?;
        // One prompt: every choice carries the same list.
        let prompt_logprobs = choices
            .first()
            .and_then(|choice| choice.prompt_logprobs.as_ref())
            .map(|list| prompt_logprobs_json(&state, list));
        let choices = choices
            .into_iter()
            .enumerate()
            .map(|(index, choice)| {
                let logprobs = with_logprobs
                    .then(|| chat_logprobs(&state, &choice.logprobs, &choice.token_ids));
                let (finish_reason, stop_reason) = finish_fields(choice.finish);
                ChatChoice {
                    index,
                    message: Some(ChatMessageOut {
                        role: Some("assistant"),
                        content: Some(choice.text),
                    }),
                    delta: None,
                    logprobs,
                    finish_reason,
                    stop_reason,
                }
            })
            .collect();
        let body = ChatCompletionResponse {
            body: envelope.wrap("chat.completion", choices, Some(usage.into())),
            prompt_logprobs,
        };
        return Ok(Json(body).into_response());
    }

    let include_usage = request
        .stream_options
        .is_some_and(|options| options.include_usage);
    // A chat stream never computes prompt logprobs (see `streamed_prompt_logprobs`).
    let choice = move |StreamDelta { delta, first, .. }: StreamDelta| {
        let logprobs =
            with_logprobs.then(|| chat_logprobs(&state, &delta.logprobs, &delta.token_ids));
        let (finish_reason, stop_reason) = finish_fields(delta.finish);
        ChatChoice {
            index: delta.index,
            message: None,
            delta: Some(ChatMessageOut {
                role: first.then_some("assistant"),
                content: Some(delta.text),
            }),
            logprobs,
            finish_reason,
            stop_reason,
        }
    };
    let stream = (envelope, "chat.completion.chunk");
    Ok(stream_chunks(
        receivers,
        guard,
        n,
        stream,
        include_usage,
        choice,
    ))
}

fn chat_logprobs(
    state: &Arc<AppState>,
    positions: &[PositionLogprobs],
    tokens: &[u32],
) -> ChatLogprobs {
    let entry = |token: u32, logprob: f32, top| {
        let text = token_text(state, token);
        ChatTokenLogprob {
            bytes: text.as_bytes().to_vec(),
            token: text,
            logprob: json_logprob(logprob),
            top_logprobs: top,
        }
    };
    ChatLogprobs {
        content: positions
            .iter()
            .zip(tokens)
            .map(|(position, &token)| {
                let top = position
                    .top
                    .iter()
                    .map(|alt| entry(alt.token, alt.logprob, None))
                    .collect();
                entry(token, position.chosen.logprob, Some(top))
            })
            .collect(),
    }
}
