//! Log-probabilities: the normaliser of a processed row, sampled-token logprobs with ranks, the
//! top-k list, and prompt logprobs.
//!
//! Like vLLM v0, logprobs are taken from the *processed* distribution (after penalties,
//! temperature and truncation; greedy and beam rows are not temperature-scaled), so truncated
//! tokens have logprob `-inf`. Cumulative logprobs sum the same values.

use serde::{Deserialize, Serialize};

use crate::TokenId;
use crate::error::SampleError;
use crate::kernels;
use crate::params::ValidatedParams;
use crate::processors::process_prompt_logits;
use crate::topk::{Scratch, top_indices};

/// The log-softmax normaliser of a row: `logprob(i) = (row[i] − max) − ln(Σ exp(row − max))`.
///
/// Invariant: built from a row with a finite maximum; `weights` in the scratch it was built with
/// hold `exp(row[i] − max)` until the scratch is reused, and `total` is their sum taken block by
/// block, the order [`crate::sampler::draw`] walks them in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalizer {
    max: f32,
    total: f64,
    log_total: f64,
}

impl Normalizer {
    /// Computes the normaliser and stores the unnormalised probabilities in `scratch`.
    pub fn new(row: &[f32], scratch: &mut Scratch) -> Self {
        let max = kernels::max(row);
        let total = kernels::exp_weights(row, max, &mut scratch.weights);
        Normalizer {
            max,
            total,
            log_total: total.ln(),
        }
    }

    /// Sum of the unnormalised weights (`≥ 1`: the maximum contributes exactly 1).
    pub fn total(&self) -> f64 {
        self.total
    }

    /// The log-probability of a token with processed logit `logit`.
    pub fn logprob(&self, logit: f32) -> f32 {
        (f64::from(logit - self.max) - self.log_total) as f32
    }
}

/// One token with its log-probability and 1-based rank in the distribution it came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token id.
    pub token: TokenId,
    /// Its log-probability (`-inf` if it was masked).
    pub logprob: f32,
    /// 1 + the number of tokens with a strictly higher logprob (top-k entries get 1..=k).
    pub rank: usize,
}

/// The logprob details of one position: the chosen token and the top-`k` alternatives.
///
/// Invariant: `top` is best first, has at most `k` entries, and may contain `chosen` too
/// (vLLM's dictionary then holds up to `k + 1` distinct tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionLogprobs {
    /// The sampled (or, for prompts, the actual next) token.
    pub chosen: TokenLogprob,
    /// The `k` most likely tokens, best first.
    pub top: Vec<TokenLogprob>,
}

/// 1 + the number of entries of `row` strictly above `row[token]`.
pub fn rank_of(row: &[f32], token: TokenId) -> usize {
    1 + kernels::count_greater(row, row[token as usize])
}

/// The logprob details of `token` in a processed `row` with `k` alternatives.
pub fn position_logprobs(
    row: &[f32],
    norm: &Normalizer,
    token: TokenId,
    k: usize,
    scratch: &mut Scratch,
) -> PositionLogprobs {
    let top = top_indices(row, k, scratch)
        .into_iter()
        .enumerate()
        .map(|(i, t)| TokenLogprob {
            token: t,
            logprob: norm.logprob(row[t as usize]),
            rank: i + 1,
        })
        .collect();
    PositionLogprobs {
        chosen: TokenLogprob {
            token,
            logprob: norm.logprob(row[token as usize]),
            rank: rank_of(row, token),
        },
        top,
    }
}

/// The logprob details of prompt token `next` from the `row` of logits computed at the position
/// before it, with `k` alternatives. The row is processed in place with temperature,
/// top-k/top-p and min-p (vLLM v0's prompt pipeline). This is the per-row form of
/// [`prompt_logprobs`], for callers that receive a prompt's rows a chunk at a time and keep only
/// the top-`k` of each.
pub fn prompt_position_logprobs(
    params: &ValidatedParams,
    row: &mut [f32],
    next: TokenId,
    k: usize,
    scratch: &mut Scratch,
) -> Result<PositionLogprobs, SampleError> {
    if next as usize >= row.len() {
        return Err(SampleError::TokenOutOfVocab {
            token: next,
            vocab_size: row.len(),
        });
    }
    process_prompt_logits(row, params, scratch)?;
    let norm = Normalizer::new(row, scratch);
    Ok(position_logprobs(row, &norm, next, k, scratch))
}

/// Prompt logprobs: `rows[i]` are the logits computed at prompt position `i` (predicting token
/// `i + 1`), so a prompt of `L` tokens needs `L − 1` rows. Returns `L` entries, the first `None`
/// (vLLM's layout). Rows are processed in place as [`prompt_position_logprobs`] does.
pub fn prompt_logprobs(
    params: &ValidatedParams,
    prompt: &[TokenId],
    rows: &mut [f32],
    vocab_size: usize,
    k: usize,
    scratch: &mut Scratch,
) -> Result<Vec<Option<PositionLogprobs>>, SampleError> {
    let expected = prompt.len().saturating_sub(1);
    let got = rows.len().checked_div(vocab_size).unwrap_or(0);
    if vocab_size == 0 || rows.len() != expected * vocab_size {
        return Err(SampleError::PromptRows {
            expected,
            got,
            prompt_len: prompt.len(),
        });
    }
    let mut out = Vec::with_capacity(prompt.len());
    if prompt.is_empty() {
        return Ok(out);
    }
    out.push(None);
    for (row, &next) in rows.chunks_exact_mut(vocab_size).zip(&prompt[1..]) {
        out.push(Some(prompt_position_logprobs(
            params, row, next, k, scratch,
        )?));
    }
    Ok(out)
}
