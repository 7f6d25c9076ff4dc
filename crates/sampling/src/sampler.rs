//! Token choice from a processed row: greedy argmax and inverse-CDF random draws from a
//! per-request ChaCha RNG.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::TokenId;

/// A request's own random stream.
///
/// Invariant: advanced only by that request's draws (one uniform per sampled token), so a seeded
/// request produces the same tokens whatever else shares its batch.
#[derive(Debug, Clone)]
pub struct RequestRng(ChaCha20Rng);

impl RequestRng {
    /// Seeds from the request's `seed`, or from `fallback` (drawn by the engine from its own RNG)
    /// for unseeded requests.
    pub fn new(seed: Option<u64>, fallback: u64) -> Self {
        RequestRng(ChaCha20Rng::seed_from_u64(seed.unwrap_or(fallback)))
    }

    /// A uniform draw in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        self.0.random::<f64>()
    }
}

/// The index of the largest entry (the first one on ties, like `torch.argmax`); `None` if empty.
pub fn greedy(row: &[f32]) -> Option<TokenId> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in row.iter().enumerate() {
        if best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i as TokenId)
}

/// Inverse-CDF draw: the first token whose running weight sum exceeds `u × total`.
///
/// `weights` are unnormalised probabilities whose sum (in this order, in f64) is `total`, and
/// `u ∈ [0, 1)`. Zero-weight (masked) tokens are never returned; `None` only if all are zero.
pub fn draw(weights: &[f32], total: f64, u: f64) -> Option<TokenId> {
    let target = u * total;
    let mut acc = 0.0f64;
    let mut last_positive = None;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            acc += f64::from(w);
            last_positive = Some(i as TokenId);
            if acc > target {
                return last_positive;
            }
        }
    }
    last_positive
}
