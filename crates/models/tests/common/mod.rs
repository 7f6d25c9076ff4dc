//! Helpers shared by the integration tests.

use std::path::PathBuf;

use candle_core::{DType, Tensor};
use models::{DecoderModel, LoadOptions, load_model};

/// The committed Hugging Face fixture directory of `family`.
pub fn fixture_dir(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(family)
}

/// The fixture model of `family`, loaded in f32.
pub fn fixture_model(family: &str) -> DecoderModel {
    let options = LoadOptions {
        dtype: Some(DType::F32),
        ..LoadOptions::default()
    };
    load_model(&fixture_dir(family), &options).expect("fixture loads")
}

/// Largest absolute difference between two rows, and the larger of 1 and the reference row's
/// largest magnitude (the scale a relative tolerance is measured against).
pub fn row_error(ours: &[f32], reference: &[f32]) -> (f32, f32) {
    let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
    let worst = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    (worst, scale)
}

/// The rows of a `[rows, vocab]` f32 tensor.
pub fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().expect("f32 matrix")
}
