//! Logits processors: hand-computed values, a naive vLLM-literal reference, and invariants.

use std::collections::HashMap;

use proptest::prelude::*;
use sampling::logprobs::Normalizer;
use sampling::processors::{
    Penalties, RowContext, apply_min_p, apply_penalties, apply_temperature, apply_top_k_top_p,
    process_logits,
};
use sampling::sampler::{draw, greedy};
use sampling::{SampleError, SamplingParams, Scratch, TokenId};

const NEG: f32 = f32::NEG_INFINITY;

fn validated(p: SamplingParams) -> sampling::ValidatedParams {
    p.validate().unwrap().0
}

#[test]
fn penalties_match_hand_computed_values() {
    let mut row = vec![2.0, -1.0, 0.5, 3.0, 0.0];
    let p = Penalties {
        repetition: 2.0,
        frequency: 0.5,
        presence: 0.25,
    };
    apply_penalties(&mut row, &[0, 4], &[1, 2, 2], p);
    // token 0 (prompt, positive): 2/2; token 1 (output ×1): -1·2 − 0.5 − 0.25;
    // token 2 (output ×2): 0.5/2 − 1.0 − 0.25; token 3 untouched; token 4 (prompt, 0): 0·2.
    assert_eq!(row, vec![1.0, -2.75, -1.0, 3.0, 0.0]);
}

#[test]
fn repetition_penalty_counts_each_token_once_and_frequency_per_occurrence() {
    let mut row = vec![4.0, 4.0];
    apply_penalties(
        &mut row,
        &[0, 0, 0],
        &[0, 1, 1, 1],
        Penalties {
            repetition: 2.0,
            frequency: 1.0,
            presence: 0.0,
        },
    );
    assert_eq!(row, vec![4.0 / 2.0 - 1.0, 4.0 / 2.0 - 3.0]);
}

#[test]
fn temperature_divides() {
    let mut row = vec![1.0, 2.0, NEG];
    apply_temperature(&mut row, 0.5);
    assert_eq!(row, vec![2.0, 4.0, NEG]);
}

#[test]
fn top_k_keeps_ties_at_the_threshold() {
    let mut row = vec![1.0, 3.0, 3.0, 2.0];
    apply_top_k_top_p(&mut row, Some(1), 1.0, &mut Scratch::default());
    assert_eq!(row, vec![NEG, 3.0, 3.0, NEG]);
    let mut row = vec![1.0, 3.0, 3.0, 2.0];
    apply_top_k_top_p(&mut row, Some(3), 1.0, &mut Scratch::default());
    assert_eq!(row, vec![NEG, 3.0, 3.0, 2.0]);
}

fn ln_row(p: &[f32]) -> Vec<f32> {
    p.iter().map(|x| x.ln()).collect()
}

#[test]
fn top_p_and_min_p_hand_cases() {
    let probs = [0.2, 0.5, 0.3];
    let mut row = ln_row(&probs);
    apply_top_k_top_p(&mut row, None, 0.55, &mut Scratch::default());
    assert_eq!(row[0], NEG);
    assert!(row[1].is_finite() && row[2].is_finite());
    let mut row = ln_row(&probs);
    apply_top_k_top_p(&mut row, None, 0.45, &mut Scratch::default());
    assert_eq!((row[0], row[2]), (NEG, NEG));
    assert!(row[1].is_finite());
    // top-k first, then top-p renormalised over the survivors: {0.5, 0.3} → {0.625, 0.375}.
    let mut row = ln_row(&probs);
    apply_top_k_top_p(&mut row, Some(2), 0.6, &mut Scratch::default());
    assert_eq!((row[0], row[2]), (NEG, NEG));
    let mut row = ln_row(&probs);
    apply_min_p(&mut row, 0.5);
    assert_eq!(row[0], NEG);
    assert!(row[2].is_finite());
}

/// vLLM's `_apply_top_k_top_p` and `_apply_min_p`, transcribed literally in f64: ascending sort
/// (ties: higher id first, i.e. the reverse of the crate's best-first rank order).
fn reference(row: &[f32], top_k: Option<usize>, top_p: f64, min_p: f64) -> Vec<f32> {
    let v = row.len();
    let mut order: Vec<usize> = (0..v).collect();
    order.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)));
    let mut sorted: Vec<f64> = order.iter().map(|&i| f64::from(row[i])).collect();
    if let Some(k) = top_k.filter(|&k| k < v) {
        let threshold = sorted[v - k];
        for x in sorted.iter_mut() {
            if *x < threshold {
                *x = f64::NEG_INFINITY;
            }
        }
    }
    let max = sorted[v - 1];
    let z: f64 = sorted.iter().map(|x| (x - max).exp()).sum();
    let mut cum = 0.0;
    let mut masked = vec![false; v];
    for (j, x) in sorted.iter().enumerate() {
        cum += (x - max).exp() / z;
        masked[j] = cum <= 1.0 - top_p && j != v - 1;
    }
    let mut out = row.to_vec();
    for (j, &i) in order.iter().enumerate() {
        if sorted[j] == f64::NEG_INFINITY || masked[j] {
            out[i] = NEG;
        }
    }
    let m = out.iter().copied().fold(NEG, f32::max);
    for x in out.iter_mut() {
        if (f64::from(*x - m)).exp() < min_p {
            *x = NEG;
        }
    }
    out
}

proptest! {
    #[test]
    fn truncation_matches_reference(
        grid in prop::collection::vec(-12i32..12, 1..200),
        k in prop::option::of(1usize..40),
        p_steps in 1u32..=20,
        min_p_steps in 0u32..10,
    ) {
        let row: Vec<f32> = grid.iter().map(|&g| g as f32 * 0.37).collect();
        let top_p = f64::from(p_steps) / 20.0 - 0.013;
        let top_p = if p_steps == 20 { 1.0 } else { top_p };
        let min_p = f64::from(min_p_steps) / 10.0;
        let mut got = row.clone();
        apply_top_k_top_p(&mut got, k, top_p, &mut Scratch::default());
        apply_min_p(&mut got, min_p);
        prop_assert_eq!(got, reference(&row, k, top_p, min_p));
    }

    #[test]
    fn pipeline_never_nan_keeps_one_and_never_samples_masked(
        row in prop::collection::vec(prop_oneof![9 => -50.0f32..50.0, 1 => Just(NEG)], 2..120),
        output in prop::collection::vec(0u32..120, 0..20),
        rep in 0.1f64..2.0, freq in -2.0f64..2.0, pres in -2.0f64..2.0,
        temperature in prop_oneof![Just(0.0), 0.01f64..3.0],
        top_k in prop_oneof![Just(-1i64), 1i64..10],
        top_p in 0.01f64..=1.0, min_p in 0.0f64..=1.0,
        min_tokens in 0i64..5, bias in -100.0f32..100.0,
        u in 0.0f64..1.0,
    ) {
        let vocab = row.len() as TokenId;
        let mut row = row;
        row[0] = 1.0; // at least one token that is neither masked nor a stop token
        let mut logit_bias = HashMap::new();
        logit_bias.insert(vocab - 1, bias);
        let params = validated(SamplingParams {
            repetition_penalty: rep, frequency_penalty: freq, presence_penalty: pres,
            temperature, top_k, top_p, min_p, min_tokens, logit_bias,
            stop_token_ids: vec![1], max_tokens: Some(10), ..Default::default()
        });
        let output: Vec<TokenId> = output.into_iter().map(|t| t % vocab).collect();
        let masked_on_entry: Vec<bool> = row.iter().map(|&l| l == NEG).collect();
        let ctx = RowContext { prompt: &[0, 2], output: &output, eos_token_ids: &[vocab - 1] };
        let mut scratch = Scratch::default();
        process_logits(&mut row, &params, &ctx, &mut scratch).unwrap();
        prop_assert!(row.iter().all(|l| !l.is_nan() && *l != f32::INFINITY));
        prop_assert!(row.iter().any(|l| l.is_finite()));
        for (l, was_masked) in row.iter().zip(masked_on_entry) {
            prop_assert!(!was_masked || *l == NEG);
        }
        if output.len() < params.min_tokens() {
            prop_assert_eq!(row[1], NEG);
            prop_assert_eq!(row[vocab as usize - 1], NEG);
        }
        let norm = Normalizer::new(&row, &mut scratch);
        let drawn = draw(scratch.weights(), norm.total(), u).unwrap();
        prop_assert!(row[drawn as usize].is_finite());
        let g = greedy(&row).unwrap();
        prop_assert!(row[g as usize].is_finite());
    }
}

#[test]
fn bad_rows_are_errors_not_panics() {
    let params = validated(SamplingParams::default());
    let ctx = RowContext {
        prompt: &[],
        output: &[],
        eos_token_ids: &[],
    };
    let mut s = Scratch::default();
    let mut nan = vec![0.0, f32::NAN];
    assert!(matches!(
        process_logits(&mut nan, &params, &ctx, &mut s),
        Err(SampleError::BadLogit { token: 1, .. })
    ));
    let mut all_masked = vec![NEG; 3];
    assert_eq!(
        process_logits(&mut all_masked, &params, &ctx, &mut s),
        Err(SampleError::AllMasked)
    );
    let hot = validated(SamplingParams {
        temperature: 0.01,
        ..Default::default()
    });
    let mut huge = vec![3.0e38, 0.0];
    assert_eq!(
        process_logits(&mut huge, &hot, &ctx, &mut s),
        Err(SampleError::Overflow)
    );
    let mut bias = SamplingParams::default();
    bias.logit_bias.insert(9, 1.0);
    let mut row = vec![0.0; 3];
    assert_eq!(
        process_logits(&mut row, &validated(bias), &ctx, &mut s),
        Err(SampleError::TokenOutOfVocab {
            token: 9,
            vocab_size: 3
        })
    );
}

#[test]
fn logit_bias_applies_before_min_tokens_mask() {
    let mut p = SamplingParams {
        min_tokens: 2,
        temperature: 0.0,
        ..Default::default()
    };
    p.logit_bias.insert(0, 50.0);
    let params = validated(p);
    let mut row = vec![0.0, 1.0, 0.5];
    let ctx = RowContext {
        prompt: &[],
        output: &[1],
        eos_token_ids: &[0],
    };
    process_logits(&mut row, &params, &ctx, &mut Scratch::default()).unwrap();
    assert_eq!(row, vec![NEG, 1.0, 0.5]);
    let mut row = vec![0.0, 1.0, 0.5];
    let ctx = RowContext {
        prompt: &[],
        output: &[1, 2],
        eos_token_ids: &[0],
    };
    process_logits(&mut row, &params, &ctx, &mut Scratch::default()).unwrap();
    assert_eq!(row, vec![50.0, 1.0, 0.5]);
}
