//! Token choice from a processed row: greedy argmax and inverse-CDF random draws from a
//! per-request ChaCha RNG.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::TokenId;
use crate::kernels;

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
/// A NaN first entry wins (nothing compares greater); later NaNs are ignored.
pub fn greedy(row: &[f32]) -> Option<TokenId> {
    if row.first()?.is_nan() {
        return Some(0);
    }
    let max = kernels::max(row);
    kernels::first_equal(row, max).map(|i| i as TokenId)
}

/// Inverse-CDF draw: the first token whose running weight sum exceeds `u × total`.
///
/// `weights` are unnormalised probabilities and `u ∈ [0, 1)`; `total` is their sum as
/// [`crate::logprobs::Normalizer`] takes it, block by block in order. The draw skips whole blocks
/// whose sum keeps the running sum at or below the target and walks the block that crosses it,
/// so it costs one vectorised pass at most. Zero-weight (masked) tokens are never returned;
/// `None` only if all are zero.
pub fn draw(weights: &[f32], total: f64, u: f64) -> Option<TokenId> {
    let target = u * total;
    let mut acc = 0.0f64;
    for (b, block) in weights.chunks(kernels::BLOCK).enumerate() {
        let sum = kernels::block_sum(block);
        if acc + sum > target {
            let mut run = acc;
            for (i, &w) in block.iter().enumerate() {
                if w > 0.0 {
                    run += f64::from(w);
                    if run > target {
                        return Some((b * kernels::BLOCK + i) as TokenId);
                    }
                }
            }
        }
        acc += sum;
    }
    weights.iter().rposition(|&w| w > 0.0).map(|i| i as TokenId)
}
