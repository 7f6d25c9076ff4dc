//! The OpenAI-compatible wire format: request bodies as clients send them (vLLM's extra fields
//! included, unknown fields ignored), response bodies, streaming chunks and error bodies.
//!
//! Only shapes live here; validation of the values belongs to `sampling::SamplingParams` and the
//! request handlers. Every type mirrors what the official `openai` client and vLLM's benchmark
//! client send and parse.

use sampling::SamplingParams;
pub use sampling::{FinishReason, StopReason};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

/// `prompt` of `/v1/completions`: text, several texts, token ids, or several lists of token ids.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    /// One text prompt.
    Text(String),
    /// Several text prompts; each becomes its own choice(s).
    Texts(Vec<String>),
    /// One prompt given as token ids.
    Tokens(Vec<u32>),
    /// Several prompts given as token ids.
    TokenLists(Vec<Vec<u32>>),
}

/// `stream_options` of a streaming request.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct StreamOptions {
    /// Send one final chunk with `usage` and no choices.
    #[serde(default)]
    pub include_usage: bool,
    /// Put `usage` into every chunk.
    #[serde(default)]
    pub continuous_usage_stats: bool,
}

/// Body of `POST /v1/completions`. Sampling fields (OpenAI's, vLLM's extras, and the integer
/// `logprobs`) are read straight into [`SamplingParams`]; unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CompletionRequest {
    /// Served model name.
    pub model: String,
    /// The prompt(s).
    pub prompt: PromptInput,
    /// Prepend the prompt to the returned text.
    #[serde(default)]
    pub echo: bool,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Scheduling priority (lower first) under the priority policy.
    #[serde(default)]
    pub priority: i64,
    /// Everything else that steers decoding.
    #[serde(flatten)]
    pub params: SamplingParams,
}

/// One part of a chat message's content given as a list.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// A text part; the only kind a text model accepts.
    Text {
        /// The text.
        text: String,
    },
}

/// A chat message's content: a string, or a list of parts.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// A list of content parts, concatenated in order.
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of the message, parts joined with newlines (as vLLM does).
    pub fn text(&self) -> String {
        match self {
            MessageContent::Text(text) => text.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .map(|ContentPart::Text { text }| text.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The content; absent or null content is empty text.
    pub content: Option<MessageContent>,
}

/// Body of `POST /v1/chat/completions`. Fields whose chat form differs from
/// [`SamplingParams`] (`logprobs` as a boolean, `max_tokens` without a default) are read here;
/// [`ChatCompletionRequest::sampling_params`] merges them.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ChatCompletionRequest {
    /// Served model name.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Return logprobs of the generated tokens.
    #[serde(default)]
    pub logprobs: bool,
    /// Number of top logprobs per token when `logprobs` is true.
    pub top_logprobs: Option<i64>,
    /// Tokens to generate at most; absent means up to the context length.
    pub max_tokens: Option<i64>,
    /// Newer name of `max_tokens`; wins when both are given.
    pub max_completion_tokens: Option<i64>,
    /// End the rendered prompt with the assistant's turn header.
    #[serde(default = "default_true")]
    pub add_generation_prompt: bool,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Scheduling priority (lower first) under the priority policy.
    #[serde(default)]
    pub priority: i64,
    /// Everything else that steers decoding.
    #[serde(flatten)]
    pub params: SamplingParams,
}

impl ChatCompletionRequest {
    /// The sampling parameters with the chat-specific fields merged in.
    pub fn sampling_params(&self) -> SamplingParams {
        SamplingParams {
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            logprobs: self.logprobs.then(|| self.top_logprobs.unwrap_or(0)),
            ..self.params.clone()
        }
    }
}

fn default_true() -> bool {
    true
}

/// Token counts of a response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens over all choices.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
    /// Prompt tokens served from the prefix cache, when any were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// OpenAI's breakdown of the prompt tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

impl Usage {
    /// Usage for `prompt_tokens` prompt tokens (of which `cached_tokens` came from the prefix
    /// cache) and `completion_tokens` generated tokens.
    pub fn new(prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: (cached_tokens > 0)
                .then_some(PromptTokensDetails { cached_tokens }),
        }
    }
}

/// OpenAI's legacy logprobs object of a completion choice.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CompletionLogprobs {
    /// Character offset of each token in the choice's text.
    pub text_offset: Vec<usize>,
    /// Logprob of each token.
    pub token_logprobs: Vec<Option<f32>>,
    /// Text of each token.
    pub tokens: Vec<String>,
    /// Top alternatives of each position, token text → logprob.
    pub top_logprobs: Vec<Option<std::collections::BTreeMap<String, f32>>>,
}

/// One choice of a completion response or chunk.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompletionChoice {
    /// Position of the choice (per prompt × n).
    pub index: usize,
    /// Text (the whole text, or this chunk's delta when streaming).
    pub text: String,
    /// Logprobs, when asked for.
    pub logprobs: Option<CompletionLogprobs>,
    /// Set on the choice's last message.
    pub finish_reason: Option<FinishReason>,
    /// Set with `finish_reason` when a stop string or stop token ended the choice.
    pub stop_reason: Option<StopReason>,
}

/// One choice of a whole (not streamed) completion response: the chunk fields plus vLLM's
/// `prompt_logprobs` (`null` unless asked for, as vLLM writes it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompletionResponseChoice {
    /// The fields a streamed choice has too.
    #[serde(flatten)]
    pub choice: CompletionChoice,
    /// Logprobs of the choice's prompt, when asked for.
    pub prompt_logprobs: Option<Vec<Option<PromptPositionLogprobs>>>,
}

/// vLLM's `Logprob` of one token in `prompt_logprobs`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PromptTokenLogprob {
    /// Its log-probability (at least -9999: JSON has no -inf).
    pub logprob: f32,
    /// 1-based rank in the position's distribution.
    pub rank: usize,
    /// The token's text.
    pub decoded_token: String,
}

/// One position of `prompt_logprobs`: a JSON object from token id (a string key) to its
/// [`PromptTokenLogprob`], in vLLM's order: the actual prompt token first, then the top-`k`
/// alternatives best first (so `k` or `k + 1` keys).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromptPositionLogprobs(pub Vec<(u32, PromptTokenLogprob)>);

impl Serialize for PromptPositionLogprobs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (token, logprob) in &self.0 {
            map.serialize_entry(&token.to_string(), logprob)?;
        }
        map.end()
    }
}

/// A response body, or one chunk of a stream (`choices` hold deltas then): the envelope shared
/// by completions (`C` = [`CompletionChoice`]) and chat (`C` = [`ChatChoice`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResponseBody<C> {
    /// `cmpl-…` or `chatcmpl-…`.
    pub id: String,
    /// `text_completion`, `chat.completion` or `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Served model name.
    pub model: String,
    /// Choices (empty in the final usage-only chunk).
    pub choices: Vec<C>,
    /// Token counts; absent in chunks unless asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A whole (not streamed) chat response: the shared envelope plus vLLM's top-level
/// `prompt_logprobs` (`null` unless asked for, as vLLM writes it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatCompletionResponse {
    /// Envelope, choices and usage.
    #[serde(flatten)]
    pub body: ResponseBody<ChatChoice>,
    /// Logprobs of the prompt, when asked for.
    pub prompt_logprobs: Option<Vec<Option<PromptPositionLogprobs>>>,
}

/// One token of a chat choice's logprobs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatTokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability (at least -9999: JSON has no -inf).
    pub logprob: f32,
    /// The UTF-8 bytes of the token's text.
    pub bytes: Vec<u8>,
    /// The most likely alternatives at this position (empty for an alternative itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<Vec<ChatTokenLogprob>>,
}

/// Logprobs of a chat choice.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Vec<ChatTokenLogprob>,
}

/// The assistant's message (whole, or a streamed delta).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChatMessageOut {
    /// `assistant` in a whole message and in a choice's first delta, absent later.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// The text (or this chunk's part of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a chat response or chunk.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatChoice {
    /// Position of the choice.
    pub index: usize,
    /// The whole message (responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<ChatMessageOut>,
    /// This chunk's delta (chunks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<ChatMessageOut>,
    /// Logprobs, when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// Set on the choice's last message.
    pub finish_reason: Option<FinishReason>,
    /// Set with `finish_reason` when a stop string or stop token ended the choice.
    pub stop_reason: Option<StopReason>,
}

/// OpenAI's error body, wrapped as `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorDetail {
    /// Human-readable message saying what was wrong and how to fix it.
    pub message: String,
    /// `BadRequestError`, `NotFoundError`, `AuthenticationError`, ...
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The offending parameter, when known.
    pub param: Option<String>,
    /// The HTTP status code.
    pub code: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_accepts_all_four_openai_forms() {
        let parse = |json: &str| serde_json::from_str::<PromptInput>(json).unwrap();
        assert_eq!(parse(r#""hi""#), PromptInput::Text("hi".into()));
        assert_eq!(
            parse(r#"["a","b"]"#),
            PromptInput::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse("[1,2]"), PromptInput::Tokens(vec![1, 2]));
        assert_eq!(
            parse("[[1],[2,3]]"),
            PromptInput::TokenLists(vec![vec![1], vec![2, 3]])
        );
        assert!(serde_json::from_str::<PromptInput>("[1.5]").is_err());
    }

    #[test]
    fn benchmark_client_body_parses_with_extras_and_unknown_fields() {
        let body = r#"{"model":"m","prompt":"hello","temperature":0.0,"repetition_penalty":1.0,
            "max_tokens":128,"logprobs":null,"stream":true,"stream_options":{"include_usage":true},
            "ignore_eos":true,"best_of":1,"use_beam_search":false,"some_future_field":{"x":1}}"#;
        let request: CompletionRequest = serde_json::from_str(body).unwrap();
        assert_eq!(request.params.max_tokens, Some(128));
        assert_eq!(request.params.temperature, 0.0);
        assert!(request.params.ignore_eos);
        assert!(request.stream);
        assert!(request.stream_options.unwrap().include_usage);
        assert_eq!(request.params.logprobs, None);
        let defaults: CompletionRequest =
            serde_json::from_str(r#"{"model":"m","prompt":[1,2],"logprobs":2,"stop":"x"}"#)
                .unwrap();
        assert_eq!(defaults.params.max_tokens, Some(16));
        assert_eq!(defaults.params.logprobs, Some(2));
        assert_eq!(defaults.params.stop, vec!["x".to_string()]);
    }

    #[test]
    fn chat_content_parts_are_joined() {
        let body = r#"{"model":"m","max_completion_tokens":4,"messages":[
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
            {"role":"assistant","content":"c"}]}"#;
        let request: ChatCompletionRequest = serde_json::from_str(body).unwrap();
        assert_eq!(request.messages[0].content.as_ref().unwrap().text(), "a\nb");
        assert_eq!(request.messages[1].content.as_ref().unwrap().text(), "c");
        assert_eq!(request.sampling_params().max_tokens, Some(4));
        assert!(request.add_generation_prompt);
        let chat = r#"{"model":"m","messages":[],"logprobs":true,"top_logprobs":3}"#;
        let params = serde_json::from_str::<ChatCompletionRequest>(chat)
            .unwrap()
            .sampling_params();
        assert_eq!((params.max_tokens, params.logprobs), (None, Some(3)));
        let image =
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#;
        assert!(serde_json::from_str::<ChatCompletionRequest>(image).is_err());
    }

    #[test]
    fn responses_serialise_as_openai_does() {
        let choice = CompletionChoice {
            index: 0,
            text: "x".into(),
            logprobs: None,
            finish_reason: Some(FinishReason::Stop),
            stop_reason: Some(StopReason::Token(5)),
        };
        let response = ResponseBody {
            id: "cmpl-1".into(),
            object: "text_completion",
            created: 7,
            model: "m".into(),
            choices: vec![choice.clone()],
            usage: Some(Usage::new(3, 1, 0)),
        };
        let json = serde_json::to_string(&response).unwrap();
        assert_eq!(
            json,
            r#"{"id":"cmpl-1","object":"text_completion","created":7,"model":"m","choices":[{"index":0,"text":"x","logprobs":null,"finish_reason":"stop","stop_reason":5}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#
        );
        let entry = |logprob, rank, text: &str| PromptTokenLogprob {
            logprob,
            rank,
            decoded_token: text.into(),
        };
        let whole = CompletionResponseChoice {
            choice,
            prompt_logprobs: Some(vec![
                None,
                Some(PromptPositionLogprobs(vec![
                    (12, entry(-2.5, 3, "b")),
                    (7, entry(-0.5, 1, "a")),
                ])),
            ]),
        };
        assert_eq!(
            serde_json::to_string(&whole).unwrap(),
            r#"{"index":0,"text":"x","logprobs":null,"finish_reason":"stop","stop_reason":5,"prompt_logprobs":[null,{"12":{"logprob":-2.5,"rank":3,"decoded_token":"b"},"7":{"logprob":-0.5,"rank":1,"decoded_token":"a"}}]}"#
        );
        let error = ErrorBody {
            error: ErrorDetail {
                message: "bad".into(),
                kind: "BadRequestError",
                param: None,
                code: 400,
            },
        };
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"error":{"message":"bad","type":"BadRequestError","param":null,"code":400}}"#
        );
    }
}
