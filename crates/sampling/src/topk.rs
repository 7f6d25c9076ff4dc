//! Selection of the largest entries of a row without sorting the whole row.

use crate::kernels;

/// Reusable per-thread buffers, so a batch allocates vocabulary-sized memory once, not per row.
///
/// Invariant: the contents are meaningless between calls; every user overwrites what it reads.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    pub(crate) indices: Vec<u32>,
    pub(crate) weights: Vec<f32>,
}

impl Scratch {
    /// The unnormalised probabilities `exp(row[i] − max)` written by the last
    /// [`crate::logprobs::Normalizer::new`] on this scratch (input of [`crate::sampler::draw`]).
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }
}

/// Ranks are by value descending, then by token id ascending (a total, deterministic order).
fn ranks_before(values: &[f32], a: u32, b: u32) -> std::cmp::Ordering {
    values[b as usize]
        .total_cmp(&values[a as usize])
        .then(a.cmp(&b))
}

/// Below this `k`, a single pass with a small sorted buffer beats a vocabulary-wide selection.
const SMALL_K: usize = 64;

/// Indices of the `min(k, len)` highest-ranked entries of `values`, best first.
///
/// The order is value descending, ties by index ascending. Runs in `O(len · k)` for `k ≤ 64`
/// without touching `scratch`, and in expected `O(len + k log k)` with `scratch` otherwise.
pub fn top_indices(values: &[f32], k: usize, scratch: &mut Scratch) -> Vec<u32> {
    let k = k.min(values.len());
    if k == 0 {
        return Vec::new();
    }
    if k <= SMALL_K {
        return top_indices_small(values, k);
    }
    let idx = &mut scratch.indices;
    idx.clear();
    idx.extend(0..values.len() as u32);
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| ranks_before(values, a, b));
    }
    let mut top = idx[..k].to_vec();
    top.sort_unstable_by(|&a, &b| ranks_before(values, a, b));
    top
}

/// Chunks whose best entry cannot enter a full top list are skipped after one vectorised pass.
const SKIP_CHUNK: usize = 32;

fn top_indices_small(values: &[f32], k: usize) -> Vec<u32> {
    let mut top: Vec<u32> = Vec::with_capacity(k + 1);
    for (c, chunk) in values.chunks(SKIP_CHUNK).enumerate() {
        if top.len() == k
            && kernels::max_key(chunk) <= kernels::total_key(values[top[k - 1] as usize])
        {
            continue;
        }
        for (o, &v) in chunk.iter().enumerate() {
            if top.len() == k && v.total_cmp(&values[top[k - 1] as usize]).is_le() {
                // Equal values rank after the earlier (smaller) index already kept.
                continue;
            }
            let i = (c * SKIP_CHUNK + o) as u32;
            let pos = top.partition_point(|&t| ranks_before(values, t, i).is_lt());
            top.insert(pos, i);
            top.truncate(k);
        }
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(values: &[f32], k: usize) -> Vec<u32> {
        let mut all: Vec<u32> = (0..values.len() as u32).collect();
        all.sort_by(|&a, &b| ranks_before(values, a, b));
        all.truncate(k);
        all
    }

    #[test]
    fn ties_rank_lower_index_first() {
        let v = [1.0, 3.0, 3.0, f32::NEG_INFINITY, 2.0];
        assert_eq!(top_indices(&v, 3, &mut Scratch::default()), vec![1, 2, 4]);
    }

    proptest! {
        #[test]
        fn matches_full_sort(values in prop::collection::vec(-4i8..4, 0..300), k in 0usize..200) {
            let values: Vec<f32> = values.into_iter().map(f32::from).collect();
            prop_assert_eq!(top_indices(&values, k, &mut Scratch::default()), naive(&values, k));
        }
    }
}
