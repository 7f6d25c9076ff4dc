//! Errors of the per-step sampling work (parameter errors live in [`crate::params`]).

use thiserror::Error;

use crate::{SeqId, TokenId};

/// Why one group's sampling step failed; only that group's request is affected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SampleError {
    /// The logits buffer does not hold `rows × vocab_size` values.
    #[error("expected {rows} logits rows of {vocab_size} values, got {len} values")]
    LogitsShape {
        /// Rows the group needs this step.
        rows: usize,
        /// The model's vocabulary size.
        vocab_size: usize,
        /// Length of the buffer received.
        len: usize,
    },
    /// A logit is NaN or +inf (−inf is allowed and means "masked").
    #[error("logit of token {token} is {value}, expected a finite number or -inf")]
    BadLogit {
        /// Position in the row.
        token: TokenId,
        /// The offending value.
        value: f32,
    },
    /// Penalties or temperature pushed a logit to +inf or NaN.
    #[error("logits overflowed while applying penalties or temperature")]
    Overflow,
    /// Every token of a row is masked, so nothing can be sampled.
    #[error("every token of the row is masked; nothing can be sampled")]
    AllMasked,
    /// A logit-bias entry names a token outside the vocabulary.
    #[error("logit_bias token id {token} is out of vocabulary (size {vocab_size})")]
    TokenOutOfVocab {
        /// The token id.
        token: TokenId,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// `prompt_logprobs` needs one row per prompt token after the first.
    #[error("prompt_logprobs needs {expected} rows for a prompt of {prompt_len} tokens, got {got}")]
    PromptRows {
        /// Rows expected (`prompt_len − 1`).
        expected: usize,
        /// Rows received.
        got: usize,
        /// Prompt length.
        prompt_len: usize,
    },
    /// The tokenizer failed to decode.
    #[error("detokenization failed: {0}")]
    Detokenize(String),
    /// `step` was called on a group that has no running sequence.
    #[error("sequence group is finished; no sequence needs a token")]
    GroupFinished,
    /// The engine's id allocator returned an id already used in this group.
    #[error("sequence id {0} is already used in this group")]
    DuplicateSeqId(SeqId),
}
