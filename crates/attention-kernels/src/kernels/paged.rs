//! The fast CPU paged-attention kernel: rayon over planned work items, one pass over the K/V rows
//! of each item with all query vectors of its GQA group(s), online softmax in f32, then a merge of
//! key partitions into the packed output.

use rayon::prelude::*;

use crate::element::KvElement;
use crate::error::{KernelError, Result};
use crate::kernels::inputs::{AttnInputs, visible_keys};
use crate::kernels::plan::{Plan, PlanConfig, WorkItem, plan};
use crate::kernels::prefetch::prefetch_slice;
use crate::kernels::simd::{Simd, SimdLevel, SimdTask, exp_non_positive, run_at, scale};

/// Configuration of the fast CPU kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuKernelConfig {
    /// Instruction set to compile the inner loops for; must not exceed [`SimdLevel::detect`].
    pub simd: SimdLevel,
    /// How work is split across threads.
    pub plan: PlanConfig,
}

impl Default for CpuKernelConfig {
    fn default() -> Self {
        Self {
            simd: SimdLevel::detect(),
            plan: PlanConfig::default(),
        }
    }
}

/// Paged attention over `inputs` into `out` (`[num_tokens, num_heads, head_size]`, f32) with the
/// default configuration. Rows covered by no sequence get zeros.
pub fn paged_attention<T: KvElement>(inputs: &AttnInputs<'_, T>, out: &mut [f32]) -> Result<()> {
    paged_attention_with(inputs, out, &CpuKernelConfig::default())
}

/// [`paged_attention`] with an explicit configuration.
pub fn paged_attention_with<T: KvElement>(
    inputs: &AttnInputs<'_, T>,
    out: &mut [f32],
    config: &CpuKernelConfig,
) -> Result<()> {
    inputs.validate(out.len())?;
    if config.simd > SimdLevel::detect() {
        return Err(KernelError::BackendUnavailable(
            "requested SIMD level not supported by this CPU",
        ));
    }
    let group = inputs.group_size();
    let plan = plan(
        inputs.meta,
        inputs.geometry.num_kv_heads,
        group,
        rayon::current_num_threads(),
        &config.plan,
    );
    let partials: Vec<Partial> = plan
        .items
        .par_iter()
        .map(|item| run_at(config.simd, ItemTask { inputs, item }))
        .collect();
    merge_into(inputs, &plan, &partials, out);
    Ok(())
}

/// Online-softmax state of every query vector of one work item, ordered (query row, query head).
struct Partial {
    /// Running maximum score (−∞ when no key was visible).
    max: Vec<f32>,
    /// Running sum of `exp(score − max)`.
    sum: Vec<f32>,
    /// Running `Σ exp(score − max) · v`, `head_size` per query vector.
    acc: Vec<f32>,
}

struct ItemTask<'a, 'b, T> {
    inputs: &'a AttnInputs<'b, T>,
    item: &'a WorkItem,
}

impl<T: KvElement> SimdTask for ItemTask<'_, '_, T> {
    type Output = Partial;

    #[inline(always)]
    fn run<S: Simd>(self) -> Partial {
        run_item::<T, S>(self.inputs, self.item)
    }
}

#[inline(always)]
fn run_item<T: KvElement, S: Simd>(inputs: &AttnInputs<'_, T>, item: &WorkItem) -> Partial {
    let geom = inputs.geometry;
    let (d, bs, group) = (geom.head_size, geom.block_size, inputs.group_size());
    let seq = &inputs.meta.seqs()[item.seq];
    let params = inputs.params;
    let heads = item.kv_heads.start * group..item.kv_heads.end * group;
    let per_row = heads.len();
    let rows = item.q_rows.len();
    let nq = rows * per_row;

    // Query vectors, pre-multiplied by the scale, ordered (row, head).
    let mut queries = vec![0.0f32; nq * d];
    for (r, dst) in item
        .q_rows
        .clone()
        .zip(queries.chunks_exact_mut(per_row * d))
    {
        let row = (seq.query_start + r) * inputs.row_len();
        let src = &inputs.query[row + heads.start * d..row + heads.end * d];
        for (q, s) in dst.iter_mut().zip(src) {
            *q = s * params.scale;
        }
    }
    let position = |r: usize| seq.first_query_position() + r;
    let visible: Vec<_> = item
        .q_rows
        .clone()
        .map(|r| visible_keys(position(r), params.sliding_window))
        .collect();
    let first_key = visible
        .iter()
        .map(|v| v.start)
        .min()
        .unwrap_or(0)
        .max(item.keys.start);
    let end_key = visible
        .iter()
        .map(|v| v.end)
        .max()
        .unwrap_or(0)
        .min(item.keys.end);

    let mut max = vec![f32::NEG_INFINITY; nq];
    let mut sum = vec![0.0f32; nq];
    let mut acc = vec![0.0f32; nq * d];
    let mut scores = vec![0.0f32; nq * bs];
    let mut scratch = vec![0.0f32; d];
    let (key_plane, value_plane) = (inputs.planes.key(), inputs.planes.value());
    let head_span = |slot: usize| {
        geom.row_offset(slot, item.kv_heads.start)..geom.row_offset(slot, item.kv_heads.end - 1) + d
    };

    let mut block_start = first_key;
    while block_start < end_key {
        let logical = block_start / bs;
        let block_end = ((logical + 1) * bs).min(end_key);
        let n = block_end - block_start;
        let base_slot = seq.block_table[logical] as usize * bs + block_start % bs;
        if block_end < end_key {
            let next = seq.block_table[logical + 1] as usize * bs;
            let next_n = bs.min(end_key - block_end);
            for slot in next..next + next_n {
                prefetch_slice(&key_plane[head_span(slot)]);
                prefetch_slice(&value_plane[head_span(slot)]);
            }
        }
        for kv_head in item.kv_heads.clone() {
            let local = (kv_head - item.kv_heads.start) * group
                ..(kv_head - item.kv_heads.start + 1) * group;
            // Scores of every query vector of this kv head against the block's keys.
            for t in 0..n {
                let offset = geom.row_offset(base_slot + t, kv_head);
                let key = T::row_f32(&key_plane[offset..offset + d], &mut scratch);
                for r in 0..rows {
                    for qi in local.clone().map(|h| r * per_row + h) {
                        scores[qi * bs + t] = S::dot(&queries[qi * d..(qi + 1) * d], key);
                    }
                }
            }
            // Mask, ALiBi and the online-softmax update; scores become probabilities.
            for (r, vis) in visible.iter().enumerate() {
                let lo = vis.start.clamp(block_start, block_end) - block_start;
                let hi = vis.end.clamp(block_start, block_end) - block_start;
                for h in local.clone() {
                    let qi = r * per_row + h;
                    let probs = &mut scores[qi * bs..qi * bs + n];
                    if lo >= hi {
                        probs.fill(0.0);
                        continue;
                    }
                    if let Some(slopes) = &params.alibi_slopes {
                        let slope = slopes[heads.start + h];
                        let pos = position(item.q_rows.start + r) as f32;
                        for (t, s) in probs.iter_mut().enumerate().take(hi).skip(lo) {
                            *s += slope * ((block_start + t) as f32 - pos);
                        }
                    }
                    let block_max = probs[lo..hi]
                        .iter()
                        .fold(f32::NEG_INFINITY, |a, b| a.max(*b));
                    let new_max = max[qi].max(block_max);
                    for s in &mut probs[lo..hi] {
                        *s -= new_max;
                    }
                    exp_non_positive::<S>(&mut probs[lo..hi]);
                    probs[..lo].fill(0.0);
                    probs[hi..].fill(0.0);
                    let mut correction = [max[qi] - new_max];
                    exp_non_positive::<S>(&mut correction);
                    if correction[0] != 1.0 {
                        scale(&mut acc[qi * d..(qi + 1) * d], correction[0]);
                    }
                    sum[qi] = sum[qi] * correction[0] + probs[lo..hi].iter().sum::<f32>();
                    max[qi] = new_max;
                }
            }
            // Accumulate probability-weighted values.
            for t in 0..n {
                let offset = geom.row_offset(base_slot + t, kv_head);
                let value = T::row_f32(&value_plane[offset..offset + d], &mut scratch);
                for r in 0..rows {
                    for qi in local.clone().map(|h| r * per_row + h) {
                        let p = scores[qi * bs + t];
                        if p != 0.0 {
                            S::axpy(&mut acc[qi * d..(qi + 1) * d], p, value);
                        }
                    }
                }
            }
        }
        block_start = block_end;
    }
    Partial { max, sum, acc }
}

/// Combines the partial states of every output group into normalised output rows; rows owned by
/// no sequence become zeros.
fn merge_into<T: KvElement>(
    inputs: &AttnInputs<'_, T>,
    plan: &Plan,
    partials: &[Partial],
    out: &mut [f32],
) {
    let d = inputs.geometry.head_size;
    let group = inputs.group_size();
    let row_len = inputs.row_len();
    let mut owner = vec![None; inputs.meta.num_tokens()];
    for (s, seq) in inputs.meta.seqs().iter().enumerate() {
        for r in 0..seq.query_len {
            owner[seq.query_start + r] = Some((s, r));
        }
    }
    out.par_chunks_mut(row_len)
        .zip(owner)
        .for_each(|(dst, owner)| {
            let Some((s, r)) = owner else {
                dst.fill(0.0);
                return;
            };
            for g in plan.groups[plan.groups_of_seq[s].clone()]
                .iter()
                .filter(|g| g.q_rows.contains(&r))
            {
                let per_row = g.kv_heads.len() * group;
                let first_head = g.kv_heads.start * group;
                for h in 0..per_row {
                    let qi = (r - g.q_rows.start) * per_row + h;
                    let parts = &partials[g.items.clone()];
                    let global_max = parts
                        .iter()
                        .map(|p| p.max[qi])
                        .fold(f32::NEG_INFINITY, f32::max);
                    let o = &mut dst[(first_head + h) * d..(first_head + h + 1) * d];
                    o.fill(0.0);
                    let mut total = 0.0f32;
                    for p in parts.iter().filter(|p| p.max[qi] > f32::NEG_INFINITY) {
                        let w = (p.max[qi] - global_max).exp();
                        total += w * p.sum[qi];
                        for (x, a) in o.iter_mut().zip(&p.acc[qi * d..(qi + 1) * d]) {
                            *x += w * a;
                        }
                    }
                    let inv = if total > 0.0 { 1.0 / total } else { 0.0 };
                    for x in o.iter_mut() {
                        *x *= inv;
                    }
                }
            }
        });
}
