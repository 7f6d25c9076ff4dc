//! The OpenAI-compatible wire format: request bodies as clients send them (vLLM's extra fields
//! included, unknown fields ignored), response bodies, streaming chunks and error bodies.
//!
//! Only shapes live here; validation of the values belongs to `sampling::SamplingParams` and the
//! request handlers. Every type mirrors what the official `openai` client and vLLM's benchmark
//! client send and parse.

use serde::{Deserialize, Serialize};

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

/// `stop` accepts a single string or a list.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    /// One stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

impl StopInput {
    /// The stop strings as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopInput::One(stop) => vec![stop],
            StopInput::Many(stops) => stops,
        }
    }
}

/// `early_stopping` is a boolean or the string `"never"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum EarlyStoppingInput {
    /// `true` or `false`.
    Bool(bool),
    /// Must be `"never"`; anything else is rejected by validation.
    Word(String),
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

/// Sampling fields common to completions and chat (OpenAI's plus vLLM's extras). Every field is
/// optional; absent fields take `SamplingParams`' defaults.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct SamplingFields {
    /// Number of choices to return.
    pub n: Option<i64>,
    /// Sequences to sample before keeping the best `n`.
    pub best_of: Option<i64>,
    /// Softmax temperature; 0 means greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens (-1 or 0: all).
    pub top_k: Option<i64>,
    /// Minimum probability relative to the most likely token.
    pub min_p: Option<f64>,
    /// OpenAI presence penalty.
    pub presence_penalty: Option<f64>,
    /// OpenAI frequency penalty.
    pub frequency_penalty: Option<f64>,
    /// Multiplicative repetition penalty (1 = off).
    pub repetition_penalty: Option<f64>,
    /// Per-request random seed.
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Option<StopInput>,
    /// Token ids that stop generation.
    pub stop_token_ids: Option<Vec<u32>>,
    /// Keep generating past EOS.
    pub ignore_eos: Option<bool>,
    /// Include the matched stop string in the output text.
    pub include_stop_str_in_output: Option<bool>,
    /// Maximum tokens to generate.
    pub max_tokens: Option<i64>,
    /// Minimum tokens to generate before EOS or stop tokens may end the sequence.
    pub min_tokens: Option<i64>,
    /// Number of prompt-token logprobs to return.
    pub prompt_logprobs: Option<i64>,
    /// Additive logit biases by token id (JSON object keys are strings).
    pub logit_bias: Option<std::collections::BTreeMap<String, f64>>,
    /// Drop special tokens when detokenizing.
    pub skip_special_tokens: Option<bool>,
    /// Use beam search with `n` (or `best_of`) beams.
    pub use_beam_search: Option<bool>,
    /// Beam-search length penalty exponent.
    pub length_penalty: Option<f64>,
    /// Beam-search stopping rule.
    pub early_stopping: Option<EarlyStoppingInput>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Scheduling priority (lower first) under the priority policy.
    pub priority: Option<i64>,
}

/// Body of `POST /v1/completions`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CompletionRequest {
    /// Served model name.
    pub model: String,
    /// The prompt(s).
    pub prompt: PromptInput,
    /// Number of top logprobs per generated token (OpenAI's integer form).
    pub logprobs: Option<i64>,
    /// Prepend the prompt to the returned text.
    #[serde(default)]
    pub echo: bool,
    /// Sampling and streaming fields.
    #[serde(flatten)]
    pub sampling: SamplingFields,
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

/// Body of `POST /v1/chat/completions`.
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
    /// Newer name of `max_tokens`; wins when both are given.
    pub max_completion_tokens: Option<i64>,
    /// End the rendered prompt with the assistant's turn header.
    #[serde(default = "default_true")]
    pub add_generation_prompt: bool,
    /// Sampling and streaming fields.
    #[serde(flatten)]
    pub sampling: SamplingFields,
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
}

impl Usage {
    /// Usage for `prompt_tokens` prompt and `completion_tokens` generated tokens.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Why a choice ended, as OpenAI spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// EOS, a stop string or a stop token.
    Stop,
    /// `max_tokens` or the model's context length.
    Length,
    /// The request was aborted.
    Abort,
}

/// The stop string or token id that ended a choice, if any.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StopReason {
    /// A stop token id (EOS excluded, as in vLLM).
    Token(u32),
    /// A stop string.
    Text(String),
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

/// A `text_completion` response, or one chunk of a stream (`choices` hold deltas then).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompletionResponse {
    /// `cmpl-…`.
    pub id: String,
    /// Always `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Served model name.
    pub model: String,
    /// Choices (empty in the final usage-only chunk).
    pub choices: Vec<CompletionChoice>,
    /// Token counts; absent in chunks unless asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
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
        assert_eq!(request.sampling.max_tokens, Some(128));
        assert_eq!(request.sampling.ignore_eos, Some(true));
        assert!(request.sampling.stream);
        assert!(request.sampling.stream_options.unwrap().include_usage);
        assert_eq!(request.logprobs, None);
    }

    #[test]
    fn chat_content_parts_are_joined() {
        let body = r#"{"model":"m","max_completion_tokens":4,"messages":[
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
            {"role":"assistant","content":"c"}]}"#;
        let request: ChatCompletionRequest = serde_json::from_str(body).unwrap();
        assert_eq!(request.messages[0].content.as_ref().unwrap().text(), "a\nb");
        assert_eq!(request.messages[1].content.as_ref().unwrap().text(), "c");
        assert_eq!(request.max_completion_tokens, Some(4));
        assert!(request.add_generation_prompt);
        let image =
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#;
        assert!(serde_json::from_str::<ChatCompletionRequest>(image).is_err());
    }

    #[test]
    fn responses_serialise_as_openai_does() {
        let response = CompletionResponse {
            id: "cmpl-1".into(),
            object: "text_completion",
            created: 7,
            model: "m".into(),
            choices: vec![CompletionChoice {
                index: 0,
                text: "x".into(),
                logprobs: None,
                finish_reason: Some(FinishReason::Stop),
                stop_reason: Some(StopReason::Token(5)),
            }],
            usage: Some(Usage::new(3, 1)),
        };
        let json = serde_json::to_string(&response).unwrap();
        assert_eq!(
            json,
            r#"{"id":"cmpl-1","object":"text_completion","created":7,"model":"m","choices":[{"index":0,"text":"x","logprobs":null,"finish_reason":"stop","stop_reason":5}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#
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
