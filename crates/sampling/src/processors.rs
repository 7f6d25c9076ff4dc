//! Logits processors, applied in place to one vocabulary-sized row in vLLM's v0 order:
//! logit bias → min_tokens mask → penalties → temperature → top-k/top-p → min-p.
//!
//! A masked token is set to `-inf`. Every processor keeps at least one token that was unmasked
//! on entry; [`process_logits`] rejects NaN/+inf input and rows that end with nothing sampleable.

use std::collections::HashMap;

use crate::TokenId;
use crate::error::SampleError;
use crate::params::{SamplingType, ValidatedParams};
use crate::topk::{Scratch, top_indices};

/// What the processors need to know about the sequence whose row is processed.
#[derive(Debug, Clone, Copy)]
pub struct RowContext<'a> {
    /// The request's prompt tokens (repetition penalty).
    pub prompt: &'a [TokenId],
    /// This sequence's generated tokens so far (penalties, min_tokens).
    pub output: &'a [TokenId],
    /// The model's EOS ids, masked with the stop token ids until `min_tokens`.
    pub eos_token_ids: &'a [TokenId],
}

/// Rejects NaN and +inf logits (−inf is a valid "masked" value).
pub fn check_logits(row: &[f32]) -> Result<(), SampleError> {
    match row.iter().position(|v| v.is_nan() || *v == f32::INFINITY) {
        Some(i) => Err(SampleError::BadLogit {
            token: i as TokenId,
            value: row[i],
        }),
        None => Ok(()),
    }
}

/// Adds each bias to its token's logit. Fails if a token id is outside the row.
pub fn apply_logit_bias(row: &mut [f32], bias: &HashMap<TokenId, f32>) -> Result<(), SampleError> {
    let vocab_size = row.len();
    for (&token, &b) in bias {
        let slot = row
            .get_mut(token as usize)
            .ok_or(SampleError::TokenOutOfVocab { token, vocab_size })?;
        *slot += b;
    }
    Ok(())
}

/// Masks `tokens` (ids outside the row are ignored: they cannot be sampled anyway).
pub fn mask_tokens(row: &mut [f32], tokens: &[TokenId]) {
    for &t in tokens {
        if let Some(slot) = row.get_mut(t as usize) {
            *slot = f32::NEG_INFINITY;
        }
    }
}

/// vLLM's three penalties, already validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalties {
    /// `> 0`; divides positive and multiplies non-positive logits of prompt and output tokens.
    pub repetition: f32,
    /// Subtracted once per occurrence of a token in the output.
    pub frequency: f32,
    /// Subtracted once from every token present in the output.
    pub presence: f32,
}

impl Penalties {
    /// `true` when applying them would change nothing.
    pub fn is_neutral(&self) -> bool {
        self.repetition == 1.0 && self.frequency == 0.0 && self.presence == 0.0
    }
}

/// Applies vLLM's penalties in f32, exactly as `_apply_penalties`:
/// `l = l > 0 ? l / rep : l * rep` for tokens of the prompt or the output, then
/// `l -= frequency × count_in_output` and `l -= presence × [count_in_output > 0]`.
///
/// Allocates `O(prompt + output)`, never a vocabulary-sized buffer.
pub fn apply_penalties(row: &mut [f32], prompt: &[TokenId], output: &[TokenId], p: Penalties) {
    if p.is_neutral() {
        return;
    }
    if p.repetition != 1.0 {
        let mut seen: Vec<TokenId> = prompt.iter().chain(output).copied().collect();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            if let Some(l) = row.get_mut(t as usize) {
                *l = if *l > 0.0 {
                    *l / p.repetition
                } else {
                    *l * p.repetition
                };
            }
        }
    }
    if p.frequency != 0.0 || p.presence != 0.0 {
        let mut sorted = output.to_vec();
        sorted.sort_unstable();
        for run in sorted.chunk_by(|a, b| a == b) {
            if let Some(l) = row.get_mut(run[0] as usize) {
                *l -= p.frequency * run.len() as f32;
                *l -= p.presence;
            }
        }
    }
}

/// Divides every logit by `temperature` (callers skip this for greedy and beam search, where
/// vLLM divides by 1).
pub fn apply_temperature(row: &mut [f32], temperature: f32) {
    if temperature != 1.0 {
        for l in row.iter_mut() {
            *l /= temperature;
        }
    }
}

fn max_logit(row: &[f32]) -> f32 {
    row.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Top-k then top-p over one row, with vLLM's and Hugging Face's semantics:
///
/// - top-k keeps every token whose logit is ≥ the k-th largest (ties at the threshold survive);
/// - top-p renormalises over the survivors and keeps the smallest best-first prefix whose
///   preceding mass is below `top_p` (the ascending `cumsum ≤ 1 − p` rule of vLLM), so the best
///   token always survives. Ties are ranked by token id (lower id first).
///
/// Sorts only a growing best-first prefix of the row, not the whole vocabulary.
pub fn apply_top_k_top_p(row: &mut [f32], top_k: Option<usize>, top_p: f64, scratch: &mut Scratch) {
    let vocab = row.len();
    if let Some(k) = top_k.filter(|&k| k > 0 && k < vocab) {
        let kth = top_indices(row, k, scratch)[k - 1] as usize;
        let threshold = row[kth];
        for l in row.iter_mut() {
            if *l < threshold {
                *l = f32::NEG_INFINITY;
            }
        }
    }
    if top_p >= 1.0 || vocab == 0 {
        return;
    }
    let max = max_logit(row);
    let total: f64 = row.iter().map(|&l| f64::from((l - max).exp())).sum();
    let mut prefix = vocab.min(64);
    loop {
        let order = top_indices(row, prefix, scratch);
        let mut mass = 0.0f64;
        let cut = order.iter().position(|&i| {
            let reached = mass >= top_p;
            mass += f64::from((row[i as usize] - max).exp()) / total;
            reached
        });
        if let Some(pos) = cut {
            mask_from_rank(row, order[pos]);
            return;
        }
        if prefix == vocab {
            return;
        }
        prefix = vocab.min(prefix * 4);
    }
}

/// Masks `pivot` and every token ranked after it (value descending, then id ascending).
fn mask_from_rank(row: &mut [f32], pivot: u32) {
    let pv = row[pivot as usize];
    for (i, l) in row.iter_mut().enumerate() {
        if *l < pv || (*l == pv && i as u32 >= pivot) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// Masks tokens whose probability is below `min_p` × the top probability (vLLM `_apply_min_p`),
/// i.e. `exp(l − max) < min_p`. The top token always survives since `min_p ≤ 1`.
pub fn apply_min_p(row: &mut [f32], min_p: f64) {
    if min_p <= 0.0 {
        return;
    }
    let max = max_logit(row);
    for l in row.iter_mut() {
        if f64::from((*l - max).exp()) < min_p {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// Fails unless the row has a finite maximum (something sampleable, no overflow).
fn check_sampleable(row: &[f32]) -> Result<(), SampleError> {
    let max = max_logit(row);
    if max.is_nan() || row.iter().any(|l| l.is_nan()) || max == f32::INFINITY {
        Err(SampleError::Overflow)
    } else if max == f32::NEG_INFINITY {
        Err(SampleError::AllMasked)
    } else {
        Ok(())
    }
}

/// The temperature the row is divided by: 1 for greedy and beam search (vLLM's convention).
fn effective_temperature(params: &ValidatedParams) -> f32 {
    match params.sampling_type() {
        SamplingType::Greedy | SamplingType::Beam => 1.0,
        SamplingType::Random | SamplingType::RandomSeeded => params.temperature as f32,
    }
}

/// Temperature, top-k/top-p and min-p: the part of the pipeline shared with prompt logprobs.
fn apply_distribution_shaping(
    row: &mut [f32],
    params: &ValidatedParams,
    scratch: &mut Scratch,
) -> Result<(), SampleError> {
    apply_temperature(row, effective_temperature(params));
    check_sampleable(row)?;
    apply_top_k_top_p(row, params.top_k(), params.top_p, scratch);
    apply_min_p(row, params.min_p);
    Ok(())
}

/// Runs the whole pipeline on the row of one sequence with its own request's parameters.
///
/// On success the row holds processed logits with at least one finite entry, no NaN and no +inf.
pub fn process_logits(
    row: &mut [f32],
    params: &ValidatedParams,
    ctx: &RowContext<'_>,
    scratch: &mut Scratch,
) -> Result<(), SampleError> {
    check_logits(row)?;
    apply_logit_bias(row, &params.logit_bias)?;
    if ctx.output.len() < params.min_tokens() {
        mask_tokens(row, &params.stop_token_ids);
        mask_tokens(row, ctx.eos_token_ids);
    }
    apply_penalties(
        row,
        ctx.prompt,
        ctx.output,
        Penalties {
            repetition: params.repetition_penalty as f32,
            frequency: params.frequency_penalty as f32,
            presence: params.presence_penalty as f32,
        },
    );
    apply_distribution_shaping(row, params, scratch)
}

/// The pipeline vLLM v0 runs on prompt-logprob rows: temperature, top-k/top-p and min-p only
/// (no logit bias, no min_tokens mask, no penalties).
pub fn process_prompt_logits(
    row: &mut [f32],
    params: &ValidatedParams,
    scratch: &mut Scratch,
) -> Result<(), SampleError> {
    check_logits(row)?;
    apply_distribution_shaping(row, params, scratch)
}
