//! Parity with Hugging Face transformers: the committed tiny random-weight checkpoints of each
//! family (see `fixtures/make_fixtures.py`) must give transformers' FP32 logits within 1e-4
//! (relative to each row's largest logit) and exactly its greedy tokens.

mod common;

use candle_core::DType;
use common::{fixture_dir, fixture_model, row_error, rows};
use serde::Deserialize;

/// `reference.json`: prompts, their greedy continuations, and the logits of every position of
/// each full sequence.
#[derive(Deserialize)]
struct Reference {
    prompts: Vec<Vec<u32>>,
    sequences: Vec<Vec<u32>>,
    logits: Vec<Vec<Vec<f32>>>,
}

const TOLERANCE: f32 = 1e-4;

fn reference(family: &str) -> Reference {
    let text = std::fs::read_to_string(fixture_dir(family).join("reference.json"))
        .expect("reference exists");
    serde_json::from_str(&text).expect("reference parses")
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

fn check_family(family: &str) {
    let model = fixture_model(family);
    let reference = reference(family);
    for ((prompt, sequence), logits) in reference
        .prompts
        .iter()
        .zip(&reference.sequences)
        .zip(&reference.logits)
    {
        let ours = rows(&model.forward_dense(&[sequence]).expect("forward"));
        assert_eq!(ours.len(), logits.len(), "{family}: row count");
        for (position, (a, b)) in ours.iter().zip(logits).enumerate() {
            let (worst, scale) = row_error(a, b);
            assert!(
                worst <= TOLERANCE * scale,
                "{family}: position {position}: error {worst} exceeds {TOLERANCE} x {scale}"
            );
        }

        let mut tokens = prompt.clone();
        while tokens.len() < sequence.len() {
            let logits = rows(&model.forward_dense(&[&tokens]).expect("forward"));
            tokens.push(argmax(&logits[tokens.len() - 1]));
        }
        assert_eq!(&tokens, sequence, "{family}: greedy continuation");
    }
}

#[test]
fn llama_matches_transformers() {
    check_family("llama");
}

#[test]
fn mistral_with_sliding_window_matches_transformers() {
    check_family("mistral");
}

#[test]
fn qwen2_sharded_matches_transformers() {
    check_family("qwen2");
}

#[test]
fn opt_matches_transformers() {
    check_family("opt");
}

#[test]
fn gpt2_from_float16_matches_transformers() {
    check_family("gpt2");
}

#[test]
fn fixture_specs_reflect_their_configs() {
    let llama = fixture_model("llama");
    assert_eq!(llama.spec().eos_token_ids, vec![2, 3]);
    assert_eq!(llama.spec().bos_token_id, Some(1));
    let mistral = fixture_model("mistral");
    assert_eq!(mistral.spec().sliding_window, Some(4));
    assert_eq!(mistral.spec().num_kv_heads, 2);
    let gpt2 = fixture_model("gpt2");
    assert_eq!(gpt2.spec().dtype, DType::F32);
    assert_eq!(gpt2.config().dtype, DType::F16);
}
