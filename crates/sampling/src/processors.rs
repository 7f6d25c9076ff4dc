//! Logits processors, applied in place to one vocabulary-sized row in vLLM's v0 order:
//! logit bias → min_tokens mask → penalties → temperature → top-k/top-p → min-p.
//!
//! A masked token is set to `-inf`. Every processor keeps at least one token that was unmasked
//! on entry; [`process_logits`] rejects NaN/+inf input and rows that end with nothing sampleable.

use std::collections::HashMap;

use crate::TokenId;
use crate::error::SampleError;
use crate::kernels;
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
    match kernels::first_bad(row) {
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

/// Top-k then top-p over one row, with vLLM's and Hugging Face's semantics:
///
/// - top-k keeps every token whose logit is ≥ the k-th largest (ties at the threshold survive);
/// - top-p renormalises over the survivors and keeps the smallest best-first prefix whose
///   preceding mass is below `top_p` (the ascending `cumsum ≤ 1 − p` rule of vLLM), so the best
///   token always survives. Ties are ranked by token id (lower id first).
///
/// Never sorts the row: top-k is a partial selection and top-p a mass-guided selection whose
/// cost is a few linear passes even on flat distributions.
pub fn apply_top_k_top_p(row: &mut [f32], top_k: Option<usize>, top_p: f64, scratch: &mut Scratch) {
    let vocab = row.len();
    let mut kept_by_top_k = None;
    if let Some(k) = top_k.filter(|&k| k > 0 && k < vocab) {
        let kth = top_indices(row, k, scratch)[k - 1] as usize;
        let threshold = row[kth];
        for l in row.iter_mut() {
            *l = if *l < threshold {
                f32::NEG_INFINITY
            } else {
                *l
            };
        }
        kept_by_top_k = (k <= vocab / 4).then_some(threshold);
    }
    if top_p >= 1.0 || vocab == 0 {
        return;
    }
    // After a small top-k, top-p only needs the survivors (in id order, so ranks are kept).
    let mut ids = Vec::new();
    let survivors: Vec<f32> = match kept_by_top_k {
        Some(threshold) => {
            compact_row(row, &mut ids, |l| l >= threshold);
            ids.iter().map(|&i| row[i as usize]).collect()
        }
        None => Vec::new(),
    };
    let values: &[f32] = if kept_by_top_k.is_some() {
        &survivors
    } else {
        row
    };
    let max = kernels::max(values);
    if max == f32::NEG_INFINITY {
        return;
    }
    let total = kernels::exp_weights(values, max, &mut scratch.weights);
    let pivot = top_p_pivot(
        values,
        &scratch.weights,
        total,
        top_p * total,
        &mut scratch.indices,
    );
    if let Some(pivot) = pivot {
        let pivot = if kept_by_top_k.is_some() {
            ids[pivot as usize]
        } else {
            pivot
        };
        mask_from_rank(row, pivot);
    }
}

/// Which tokens rank right after the current top-p candidates: those with a logit `≤ v`
/// (`AtMost`) or `< v` (`Below`); the first of them is the best one.
#[derive(Debug, Clone, Copy)]
enum After {
    AtMost(f32),
    Below(f32),
}

impl After {
    fn admits(self, l: f32) -> bool {
        match self {
            After::AtMost(v) => l <= v,
            After::Below(v) => l < v,
        }
    }
}

/// Candidate sets at most this large are sorted and walked.
const SORT_BELOW: usize = 64;
/// Values sampled from the candidates to place the next split.
const SAMPLES: usize = 128;
/// Half-width, in samples, of the band expected to hold the top-p boundary.
const BAND: usize = 8;

/// The part of the candidates a top-p round keeps, by logit.
#[derive(Debug, Clone, Copy)]
enum Part {
    Above(f32),
    Within(f32, f32),
    Below(f32),
}

impl Part {
    fn holds(self, l: f32) -> bool {
        match self {
            Part::Above(hi) => l > hi,
            Part::Within(lo, hi) => lo <= l && l <= hi,
            Part::Below(lo) => l < lo,
        }
    }
}

/// The top-p pivot: the best-ranked token (value descending, then id ascending) whose preceding
/// mass `Σ weights` reaches `target`, or `None` if no token does.
///
/// `weights[i] = exp(row[i] − max)` and `total` is their sum. The candidates are always the
/// tokens of one value interval, in id order. Each round samples them and splits them into the
/// tokens above a band, in it and below it (the band is placed where the sampled mass reaches
/// the target, or is the single median value when the previous round shrank the candidates by
/// less than half), adds up the masses of the parts and keeps the part holding the pivot. Ties
/// are walked in id order; small candidate sets are sorted. If every candidate of the last part
/// is kept, the pivot is the best token ranked after that part.
fn top_p_pivot(
    row: &[f32],
    weights: &[f32],
    total: f64,
    target: f64,
    idx: &mut Vec<u32>,
) -> Option<u32> {
    let mut before = 0.0f64;
    let mut mass = total;
    let mut after: Option<After> = None;
    let mut whole = true;
    let mut median = false;
    let value = |i: u32| row[i as usize];
    let weight = |i: u32| f64::from(weights[i as usize]);
    loop {
        let len = if whole { row.len() } else { idx.len() };
        if len == 0 {
            break;
        }
        if !whole && len <= SORT_BELOW {
            idx.sort_unstable_by(|&a, &b| value(b).total_cmp(&value(a)).then(a.cmp(&b)));
            for &i in idx.iter() {
                if before >= target {
                    return Some(i);
                }
                before += weight(i);
            }
            break;
        }
        let at = |k: usize| if whole { k as u32 } else { idx[k] };
        let samples = SAMPLES.min(len);
        let (hi, lo) = split_values(
            (0..samples).map(|s| at(s * len / samples)),
            &value,
            &weight,
            ((target - before) / mass).clamp(0.0, 1.0),
            median,
        );
        let (m_hi, m_band) = if whole {
            kernels::band_masses(row, weights, hi, lo)
        } else {
            idx.iter().fold((0.0, 0.0), |(a, b), &i| {
                let l = value(i);
                if l > hi {
                    (a + weight(i), b)
                } else if l >= lo {
                    (a, b + weight(i))
                } else {
                    (a, b)
                }
            })
        };
        let part = if before + m_hi >= target {
            after = Some(After::AtMost(hi));
            mass = m_hi;
            Part::Above(hi)
        } else if before + m_hi + m_band >= target {
            before += m_hi;
            after = Some(After::Below(lo));
            if hi == lo {
                for i in (0..len).map(at).filter(|&i| value(i) == hi) {
                    if before >= target {
                        return Some(i);
                    }
                    before += weight(i);
                }
                break;
            }
            mass = m_band;
            Part::Within(lo, hi)
        } else {
            before += m_hi + m_band;
            mass = (mass - m_hi - m_band).max(f64::MIN_POSITIVE);
            Part::Below(lo)
        };
        if whole {
            match part {
                Part::Above(hi) => compact_row(row, idx, |l| l > hi),
                Part::Within(lo, hi) => compact_row(row, idx, |l| lo <= l && l <= hi),
                Part::Below(lo) => compact_row(row, idx, |l| l < lo),
            }
            whole = false;
        } else {
            idx.retain(|&i| part.holds(value(i)));
        }
        median = idx.len() * 2 > len;
    }
    let after = after?;
    let mut best: Option<usize> = None;
    for (i, &l) in row.iter().enumerate() {
        if after.admits(l) && best.is_none_or(|b| l > row[b]) {
            best = Some(i);
        }
    }
    best.map(|i| i as u32)
}

/// The band `(hi, lo)` of the next top-p round, from sampled candidates: the sampled values
/// `BAND` places either side of where the sampled mass reaches `fraction` of the sample's
/// mass, or the median value twice when `median` is set.
fn split_values(
    sample: impl Iterator<Item = u32>,
    value: &impl Fn(u32) -> f32,
    weight: &impl Fn(u32) -> f64,
    fraction: f64,
    median: bool,
) -> (f32, f32) {
    let mut s: Vec<(f32, f64)> = sample.map(|i| (value(i), weight(i))).collect();
    s.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let last = s.len() - 1;
    if median {
        return (s[last / 2].0, s[last / 2].0);
    }
    let goal = fraction * s.iter().map(|x| x.1).sum::<f64>();
    let mut cum = 0.0;
    let at = s
        .iter()
        .position(|x| {
            cum += x.1;
            cum >= goal
        })
        .unwrap_or(last);
    (s[at.saturating_sub(BAND)].0, s[(at + BAND).min(last)].0)
}

/// Sets `idx` to the indices of the row entries that satisfy `keep`, ascending, without a
/// branch per entry.
fn compact_row(row: &[f32], idx: &mut Vec<u32>, keep: impl Fn(f32) -> bool) {
    idx.clear();
    idx.resize(row.len() + 1, 0);
    let mut n = 0;
    for (i, &l) in row.iter().enumerate() {
        idx[n] = i as u32;
        n += usize::from(keep(l));
    }
    idx.truncate(n);
}

/// Masks `pivot` and every token ranked after it (value descending, then id ascending).
fn mask_from_rank(row: &mut [f32], pivot: u32) {
    let pv = row[pivot as usize];
    let (before, tied) = row.split_at_mut(pivot as usize);
    for l in before {
        *l = if *l < pv { f32::NEG_INFINITY } else { *l };
    }
    for l in tied {
        *l = if *l <= pv { f32::NEG_INFINITY } else { *l };
    }
}

/// Masks tokens whose probability is below `min_p` × the top probability (vLLM `_apply_min_p`),
/// i.e. `exp(l − max) < min_p`. The top token always survives since `min_p ≤ 1`.
///
/// Compares `l − max` with `ln(min_p)` and calls `exp` only for logits within a hair of the
/// threshold, so the result is the same as evaluating `exp` everywhere.
pub fn apply_min_p(row: &mut [f32], min_p: f64) {
    if min_p <= 0.0 {
        return;
    }
    let max = kernels::max(row);
    let ln_min_p = min_p.ln();
    let (below, above) = (ln_min_p - 1e-4, ln_min_p + 1e-4);
    for l in row.iter_mut() {
        let d = *l - max;
        let x = f64::from(d);
        if x < below || (x <= above && f64::from(d.exp()) < min_p) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// Fails unless the row has a finite maximum (something sampleable, no overflow).
fn check_sampleable(row: &[f32]) -> Result<(), SampleError> {
    let (max, nan) = kernels::max_and_nan(row);
    if nan || max == f32::INFINITY {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: walk the whole row best first and stop at the first token whose
    /// preceding mass reaches the target.
    fn naive_pivot(row: &[f32], weights: &[f32], target: f64) -> Option<u32> {
        let mut order: Vec<u32> = (0..row.len() as u32).collect();
        order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
        let mut before = 0.0f64;
        order.into_iter().find(|&i| {
            let reached = before >= target;
            before += f64::from(weights[i as usize]);
            reached
        })
    }

    /// Integer weights that grow with the logit, so every partial sum is exact and the
    /// selection must agree with the walk exactly.
    fn weights_of(row: &[f32]) -> Vec<f32> {
        row.iter()
            .map(|&l| {
                if l == f32::NEG_INFINITY {
                    0.0
                } else {
                    ((l + 60.0) * 64.0).floor()
                }
            })
            .collect()
    }

    fn check(row: Vec<f32>, fraction: f64) -> Result<(), TestCaseError> {
        let weights = weights_of(&row);
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        // A half-integer target never ties with an exact integer partial sum.
        let target = (fraction * total).floor() + 0.5;
        let got = top_p_pivot(&row, &weights, total, target, &mut Vec::new());
        prop_assert_eq!(got, naive_pivot(&row, &weights, target));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn top_p_pivot_matches_the_walk_with_heavy_ties(
            grid in prop::collection::vec(prop_oneof![12 => -12i32..12, 1 => Just(i32::MIN)],
                                          1..3000),
            fraction in 0.0f64..1.0,
        ) {
            let row = grid
                .iter()
                .map(|&g| if g == i32::MIN { f32::NEG_INFINITY } else { g as f32 * 0.5 })
                .collect();
            check(row, fraction)?;
        }

        #[test]
        fn top_p_pivot_matches_the_walk_on_spread_values(
            row in prop::collection::vec(-50.0f32..50.0, 1..3000),
            skew in 0u32..4,
            fraction in 0.0f64..1.0,
        ) {
            // Powers sharpen the distribution from flat to peaked.
            let row = row.into_iter().map(|l| l.signum() * l.abs().powi(skew as i32 + 1)
                / 50f32.powi(skew as i32)).collect();
            check(row, fraction)?;
        }
    }

    #[test]
    fn top_p_on_a_flat_row_keeps_the_best_prefix() {
        let mut row = vec![0.0f32; 10_000];
        row[7] = 1.0;
        apply_top_k_top_p(&mut row, None, 0.5, &mut Scratch::default());
        let kept: Vec<usize> = (0..row.len()).filter(|&i| row[i].is_finite()).collect();
        // Mass of token 7 is e/(e + 9999); the rest tie and are kept in id order.
        let w = 1.0 / (std::f64::consts::E + 9_999.0);
        let need = ((0.5 - std::f64::consts::E * w) / w).ceil() as usize;
        assert_eq!(kept.len(), need + 1);
        assert_eq!(kept[0], 0);
        assert!(kept.contains(&7));
    }
}
