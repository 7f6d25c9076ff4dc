//! Stop conditions: EOS, stop token ids, stop strings over the detokenized text, `max_tokens`
//! and `max_model_len`, with vLLM's finish and stop reasons, plus the streaming hold-back.

use serde::{Deserialize, Serialize};

use crate::TokenId;
use crate::params::ValidatedParams;

/// Why a sequence finished, as reported by the API (`finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// EOS, a stop token or a stop string.
    Stop,
    /// `max_tokens` or `max_model_len`.
    Length,
}

/// What stopped a sequence (`stop_reason`): a stop token id or a stop string; EOS has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopReason {
    /// A token of `stop_token_ids`.
    Token(TokenId),
    /// A string of `stop`.
    Text(String),
}

/// How a sequence ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The model's EOS token (kept in the token ids; its text is dropped unless
    /// `include_stop_str_in_output`).
    Eos(TokenId),
    /// A `stop_token_ids` entry (same text rule as EOS).
    StopToken(TokenId),
    /// A stop string; the text is cut before it (or after it with `include_stop_str_in_output`).
    StopString(String),
    /// `max_tokens` or `max_model_len` reached.
    Length,
}

impl Finish {
    /// The API's `finish_reason`.
    pub fn reason(&self) -> FinishReason {
        match self {
            Finish::Length => FinishReason::Length,
            _ => FinishReason::Stop,
        }
    }

    /// The API's `stop_reason` (`None` for EOS and length).
    pub fn stop_reason(&self) -> Option<StopReason> {
        match self {
            Finish::StopToken(t) => Some(StopReason::Token(*t)),
            Finish::StopString(s) => Some(StopReason::Text(s.clone())),
            Finish::Eos(_) | Finish::Length => None,
        }
    }
}

/// The stop rules of one request on one model.
///
/// Invariant: `stop` holds no empty string (guaranteed by validation).
#[derive(Debug, Clone, PartialEq)]
pub struct StopConditions {
    eos_token_ids: Vec<TokenId>,
    ignore_eos: bool,
    stop_token_ids: Vec<TokenId>,
    stop: Vec<String>,
    include_stop_str_in_output: bool,
    min_tokens: usize,
    max_tokens: Option<usize>,
    max_model_len: usize,
}

/// Byte index `≤ i` that is a char boundary of `s`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl StopConditions {
    /// The rules of `params` on a model with these EOS ids and context length.
    pub fn new(params: &ValidatedParams, eos_token_ids: &[TokenId], max_model_len: usize) -> Self {
        StopConditions {
            eos_token_ids: eos_token_ids.to_vec(),
            ignore_eos: params.ignore_eos,
            stop_token_ids: params.stop_token_ids.clone(),
            stop: params.stop.clone(),
            include_stop_str_in_output: params.include_stop_str_in_output,
            min_tokens: params.min_tokens(),
            max_tokens: params.max_tokens(),
            max_model_len,
        }
    }

    /// `true` if `token` is one of the model's EOS ids.
    pub fn is_eos(&self, token: TokenId) -> bool {
        self.eos_token_ids.contains(&token)
    }

    /// The longest total length a sequence of a `prompt_len`-token prompt can reach.
    pub fn max_total_len(&self, prompt_len: usize) -> usize {
        self.max_tokens.map_or(self.max_model_len, |m| {
            (prompt_len + m).min(self.max_model_len)
        })
    }

    /// Checks a sequence after `token` was appended, in vLLM's order (EOS, stop token, stop
    /// string, then length). `text` is the whole output text and `new_from` where this step's
    /// text starts; the text is truncated as the matched condition requires.
    ///
    /// Stop checks are skipped until `min_tokens` tokens exist; length checks always apply
    /// (total length ≥ `max_model_len`, or `max_tokens` generated).
    pub fn check(
        &self,
        token: TokenId,
        output_len: usize,
        total_len: usize,
        text: &mut String,
        new_from: usize,
    ) -> Option<Finish> {
        if output_len >= self.min_tokens {
            let finish = if !self.ignore_eos && self.is_eos(token) {
                Some(Finish::Eos(token))
            } else if self.stop_token_ids.contains(&token) {
                Some(Finish::StopToken(token))
            } else {
                None
            };
            if let Some(finish) = finish {
                if !self.include_stop_str_in_output {
                    text.truncate(new_from);
                }
                return Some(finish);
            }
            if let Some((pos, stop)) = self.find_stop_string(text, new_from) {
                let end = if self.include_stop_str_in_output {
                    pos + stop.len()
                } else {
                    pos
                };
                text.truncate(end);
                return Some(Finish::StopString(stop.to_owned()));
            }
        }
        let length_capped =
            total_len >= self.max_model_len || self.max_tokens.is_some_and(|m| output_len >= m);
        length_capped.then_some(Finish::Length)
    }

    /// The earliest stop-string match that ends in `text[new_from..]` (ties: first listed).
    ///
    /// Deliberately differs from vLLM, which takes the first *listed* string found in the window
    /// even when another one starts earlier.
    pub fn find_stop_string(&self, text: &str, new_from: usize) -> Option<(usize, &str)> {
        let longest = self.stop.iter().map(String::len).max()?;
        let start = floor_char_boundary(text, new_from.saturating_sub(longest - 1).min(text.len()));
        self.stop
            .iter()
            .filter_map(|s| {
                text[start..]
                    .find(s.as_str())
                    .map(|p| (start + p, s.as_str()))
            })
            .min_by_key(|&(p, _)| p)
    }

    /// Bytes at the end of `text` that must not be streamed yet because they could be the start
    /// of a stop string that would be cut from the output (0 with `include_stop_str_in_output`).
    ///
    /// More precise than vLLM's fixed `max(len(stop)) − 1` characters: only a suffix that really
    /// is a proper prefix of some stop string is held.
    pub fn held_back_len(&self, text: &str) -> usize {
        if self.include_stop_str_in_output {
            return 0;
        }
        self.stop
            .iter()
            .flat_map(|s| {
                s.char_indices()
                    .skip(1)
                    .map(|(i, _)| &s[..i])
                    .filter(|prefix| text.ends_with(prefix))
                    .map(str::len)
            })
            .max()
            .unwrap_or(0)
    }
}
