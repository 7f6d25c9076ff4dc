//! The fast CPU paged-attention kernel: rayon over planned work items, one pass over the K/V rows
//! of each item with all query vectors of its GQA group(s), online softmax in f32, then a merge of
//! key partitions into the packed output.

use std::ops::Range;

use rayon::prelude::*;

use crate::element::KvElement;
use crate::error::{KernelError, Result};
use crate::kernels::inputs::{AttnInputs, visible_keys};
use crate::kernels::plan::{Plan, PlanConfig, WorkItem, plan, split_range};
use crate::kernels::prefetch::prefetch_row;
use crate::kernels::simd::{
    Simd, SimdLevel, SimdTask, exp_non_positive, max_of, run_at, scale, sum_of,
};
use crate::kernels::tile::{Dense, LANES, PlaneRows, dots, gemm};
use crate::metadata::SeqAttn;

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
    merge_into(inputs, &plan, &partials, out, config.simd);
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

/// Keys a prefill tile processes together (one online-softmax step), across block boundaries.
const TILE_CHUNK: usize = 32;

/// Keys a decode item processes together (one online-softmax step), across block boundaries.
const DECODE_CHUNK: usize = 64;

/// Interleaved streams a decode chunk is read as (see [`KeyOrder`]). Each step of the decode
/// kernel reads one slot row of every stream, for all its kv heads (4 keys fill the (4 heads ×
/// 4 keys) blocks of [`dots`]).
const DECODE_STREAMS: usize = 4;

/// How far ahead, in visited slots, decode loads prefetch: two rows on in each stream.
pub const DECODE_LOOKAHEAD: usize = 2 * DECODE_STREAMS;

/// The key positions `keys` of a decode item in the order the CPU kernel reads their K/V rows:
/// chunks of up to 64 positions, each read as 4 interleaved runs of consecutive keys (one run
/// when 4 does not divide the chunk); a chunk's K rows are read in this order, then its V rows,
/// every read prefetching the row [`DECODE_LOOKAHEAD`] reads on. For code that reproduces the
/// kernel's memory access pattern (the kernels bench's bare read).
pub fn decode_read_order(keys: Range<usize>) -> impl Iterator<Item = Vec<usize>> {
    split_range(keys, DECODE_CHUNK)
        .map(|chunk| KeyOrder::positions(chunk, DECODE_STREAMS).collect())
}

/// The order in which a chunk's keys are visited: the chunk is cut into `streams` equal runs of
/// consecutive keys, and the walk takes the next key of each run in turn. Softmax and P·V do
/// not depend on the order of keys, but memory does: on the 2-core CI VM, four interleaved
/// runs of shuffled 64 KiB blocks read at 31–32 GB/s against 26–28 for one run at a time with
/// the same prefetch, and 34 for a linear read (a scratch microbenchmark of bare reads, not
/// kept; the kernels bench's "bare paged read" measures the interleaved order).
/// A chunk whose length `streams` does not divide is visited in place (one run).
#[derive(Debug, Clone, Copy)]
struct KeyOrder {
    streams: usize,
    /// Keys per run.
    run: usize,
}

impl KeyOrder {
    /// The order of a chunk of `len` keys read as `streams` runs (as one unless `streams`
    /// divides `len`).
    fn new(len: usize, streams: usize) -> Self {
        let streams = if len.is_multiple_of(streams) {
            streams
        } else {
            1
        };
        Self {
            streams,
            run: len / streams,
        }
    }

    /// Offset within the chunk of the `t`-th key visited.
    fn key(&self, t: usize) -> usize {
        (t % self.streams) * self.run + t / self.streams
    }

    /// The key positions of `chunk` in the order they are visited as `streams` runs.
    fn positions(chunk: Range<usize>, streams: usize) -> impl Iterator<Item = usize> {
        let order = Self::new(chunk.len(), streams);
        (0..chunk.len()).map(move |t| chunk.start + order.key(t))
    }
}

/// Runs one work item: single-row items (decode) with the multi-head dot product, query tiles
/// (prefill) as small GEMMs with the query vectors in vector lanes.
#[inline(always)]
fn run_item<T: KvElement, S: Simd>(inputs: &AttnInputs<'_, T>, item: &WorkItem) -> Partial {
    let view = ItemView::new(inputs, item);
    if item.q_rows.len() == 1 {
        decode_item::<T, S>(&view)
    } else {
        tile_item::<T, S>(&view)
    }
}

/// What both item kernels need to know about one work item.
struct ItemView<'a, 'b, T> {
    inputs: &'a AttnInputs<'b, T>,
    item: &'a WorkItem,
    seq: &'a SeqAttn,
    /// Query heads per kv head.
    group: usize,
    /// Query vectors per query row: `kv_heads.len() × group`.
    per_row: usize,
    /// Visible key positions of each query row.
    visible: Vec<Range<usize>>,
    /// Keys any row of the item reads.
    keys: Range<usize>,
}

impl<'a, 'b, T: KvElement> ItemView<'a, 'b, T> {
    fn new(inputs: &'a AttnInputs<'b, T>, item: &'a WorkItem) -> Self {
        let seq = &inputs.meta.seqs()[item.seq];
        let group = inputs.group_size();
        let visible: Vec<_> = item
            .q_rows
            .clone()
            .map(|r| visible_keys(seq.first_query_position() + r, inputs.params.sliding_window))
            .collect();
        let start = visible.iter().map(|v| v.start).min().unwrap_or(0);
        let end = visible.iter().map(|v| v.end).max().unwrap_or(0);
        Self {
            inputs,
            item,
            seq,
            group,
            per_row: item.kv_heads.len() * group,
            visible,
            keys: start.max(item.keys.start)..end.min(item.keys.end),
        }
    }

    /// Position of query row `r` of the item.
    fn position(&self, r: usize) -> usize {
        self.seq.first_query_position() + self.item.q_rows.start + r
    }

    /// Query vector of row `r` and (global) query head `head`.
    fn query(&self, r: usize, head: usize) -> &'b [f32] {
        let d = self.inputs.geometry.head_size;
        let row = (self.seq.query_start + self.item.q_rows.start + r) * self.inputs.row_len();
        &self.inputs.query[row + head * d..row + (head + 1) * d]
    }

    /// Appends the plane offsets of the slots of key positions `keys` to `offsets`, in the
    /// visiting order of `streams` runs (see [`KeyOrder`]).
    fn push_offsets(&self, keys: Range<usize>, streams: usize, offsets: &mut Vec<usize>) {
        let geom = &self.inputs.geometry;
        offsets.extend(
            KeyOrder::positions(keys, streams)
                .map(|p| geom.row_offset(self.seq.slot(p, geom.block_size), 0)),
        );
    }

    /// Elements of a slot row the item reads: its kv heads' vectors.
    fn columns(&self) -> Range<usize> {
        let d = self.inputs.geometry.head_size;
        self.item.kv_heads.start * d..self.item.kv_heads.end * d
    }

    /// Starts loading the K and V rows at `offsets` (the prefill tiles' next chunk).
    ///
    /// Rows of 2-byte elements are prefetched line by line; f32 rows only at their first line.
    /// The rule was measured on the decode kernel before it moved to a per-line lookahead (against
    /// a 4 KiB-page streaming read): the hardware streamer kept up with f32 rows on its own once
    /// started (prefetching every line only cost bandwidth, 75–90 % instead of 90–100 %), but not
    /// with half-width rows (40–55 % without, 55–75 % with every line prefetched).
    fn prefetch(&self, offsets: &[usize]) {
        let columns = self.columns();
        let every_line = std::mem::size_of::<T>() < 4;
        let planes = [self.inputs.planes.key(), self.inputs.planes.value()];
        for &offset in offsets {
            for plane in planes {
                prefetch_row(
                    &plane[offset + columns.start..offset + columns.end],
                    every_line,
                );
            }
        }
    }

    /// Widens the K and V rows of `kv_head` at `offsets` into rows of `stride` floats of `k`
    /// and `v` (elements past the head size are left as they are).
    #[inline(always)]
    fn gather(
        &self,
        offsets: &[usize],
        kv_head: usize,
        (k, v): (&mut [f32], &mut [f32]),
        stride: usize,
    ) {
        let d = self.inputs.geometry.head_size;
        let (key_plane, value_plane) = (self.inputs.planes.key(), self.inputs.planes.value());
        for ((&offset, k), v) in offsets
            .iter()
            .zip(k.chunks_exact_mut(stride))
            .zip(v.chunks_exact_mut(stride))
        {
            let offset = offset + kv_head * d;
            for (x, s) in k[..d].iter_mut().zip(&key_plane[offset..offset + d]) {
                *x = s.to_f32();
            }
            for (x, s) in v[..d].iter_mut().zip(&value_plane[offset..offset + d]) {
                *x = s.to_f32();
            }
        }
    }

    /// A walk over the item's keys in chunks of at most `size` positions, each visited as
    /// `streams` interleaved runs.
    fn chunk_walk(&self, size: usize, streams: usize) -> ChunkWalk {
        ChunkWalk {
            keys: self.keys.clone(),
            size,
            streams,
            next: self.keys.start,
            window: Vec::new(),
            current: 0,
        }
    }
}

/// An item's key chunks in order, with the plane offsets of the current chunk's slots followed
/// by the next chunk's (none after the last), each chunk's in its [`KeyOrder`], so rows ahead
/// of the current one can be prefetched while it is computed. Each chunk's offsets are
/// computed once. A plain loop (not a closure over the chunk body) keeps the body inside the
/// caller's `target_feature` function, where the SIMD helpers inline.
struct ChunkWalk {
    /// The item's keys.
    keys: Range<usize>,
    /// Keys per chunk (the last may have fewer).
    size: usize,
    /// Runs each chunk is visited as.
    streams: usize,
    /// First key of the chunk the next [`ChunkWalk::advance`] returns.
    next: usize,
    /// Slot offsets of the current chunk, then of the next one.
    window: Vec<usize>,
    /// How many entries of `window` belong to the current chunk.
    current: usize,
}

impl ChunkWalk {
    /// The chunk starting at key `start`, if any keys are left there.
    fn chunk_at(&self, start: usize) -> Option<Range<usize>> {
        (start < self.keys.end).then(|| start..(start + self.size).min(self.keys.end))
    }

    /// Moves to the next chunk and returns it, with the window moved along.
    #[inline(always)]
    fn advance<T: KvElement>(&mut self, view: &ItemView<'_, '_, T>) -> Option<Range<usize>> {
        let chunk = self.chunk_at(self.next)?;
        if self.next == self.keys.start {
            view.push_offsets(chunk.clone(), self.streams, &mut self.window);
        }
        self.window.drain(..self.current);
        self.current = chunk.len();
        self.next = chunk.end;
        if let Some(following) = self.chunk_at(self.next) {
            view.push_offsets(following, self.streams, &mut self.window);
        }
        Some(chunk)
    }

    /// Slot offsets of the current chunk.
    fn offsets(&self) -> &[usize] {
        &self.window[..self.current]
    }

    /// Slot offsets of the next chunk (empty after the last).
    fn next_offsets(&self) -> &[usize] {
        &self.window[self.current..]
    }

    /// Slot offsets from `rows` past the current chunk's first slot on, into the next chunk.
    fn ahead(&self, rows: usize) -> &[usize] {
        &self.window[rows.min(self.window.len())..]
    }
}

/// Online-softmax update of `probs` (scores on entry, `exp(score − new max)` on exit; −∞ scores
/// give 0) for one query vector with running `max` and `sum`; returns the factor its
/// accumulator must be scaled by.
#[inline(always)]
fn softmax_update<S: Simd>(probs: &mut [f32], max: &mut f32, sum: &mut f32) -> f32 {
    let new_max = max_of(probs, *max);
    let base = if new_max == f32::NEG_INFINITY {
        0.0
    } else {
        new_max
    };
    for s in probs.iter_mut() {
        *s -= base;
    }
    exp_non_positive::<S>(probs);
    let mut correction = [*max - base];
    exp_non_positive::<S>(&mut correction);
    *sum = *sum * correction[0] + sum_of(probs);
    *max = new_max;
    correction[0]
}

/// [`softmax_update`] for every lane of an `n × lanes` score tile at once (lane `l` of each row
/// is one query vector), written as loops over whole rows so that they vectorise.
/// `correction` receives each lane's accumulator factor; `base` is scratch.
#[inline(always)]
fn softmax_lanes<S: Simd>(
    tile: &mut [f32],
    max: &mut [f32],
    sum: &mut [f32],
    (correction, base): (&mut [f32], &mut [f32]),
) {
    let lanes = max.len();
    base.copy_from_slice(max);
    for row in tile.chunks_exact(lanes) {
        for (b, x) in base.iter_mut().zip(row) {
            *b = b.max(*x);
        }
    }
    for ((m, b), c) in max
        .iter_mut()
        .zip(base.iter_mut())
        .zip(correction.iter_mut())
    {
        let new_max = *b;
        *b = if new_max == f32::NEG_INFINITY {
            0.0
        } else {
            new_max
        };
        *c = *m - *b;
        *m = new_max;
    }
    exp_non_positive::<S>(correction);
    for row in tile.chunks_exact_mut(lanes) {
        for (x, b) in row.iter_mut().zip(base.iter()) {
            *x -= b;
        }
    }
    exp_non_positive::<S>(tile);
    for (s, c) in sum.iter_mut().zip(correction.iter()) {
        *s *= c;
    }
    for row in tile.chunks_exact(lanes) {
        for (s, x) in sum.iter_mut().zip(row) {
            *s += x;
        }
    }
}

/// A single query row against its keys, read in place from the planes (widened to f32 in
/// registers). Per chunk, the scores of every query head come from [`dots`] (each key vector
/// loaded once per 4 heads of a GQA group) and P·V runs as a GEMM whose lanes are head
/// dimensions (each value vector loaded once per 4 heads). Both visit the chunk's keys in its
/// [`KeyOrder`], [`DECODE_STREAMS`] at a time (one slot row of each run) through all the item's
/// kv heads, so every run is read front to back, all of them at once.
///
/// Every cache line the two passes load comes with a prefetch of the same line of the slot
/// [`DECODE_LOOKAHEAD`] visits later (into the next chunk where the current one ends), so
/// memory requests stay in flight at a steady rate while the arithmetic runs. Measured on the
/// kernels bench (cold, both shapes, block 16 and 32): four interleaved runs with this
/// lookahead read f32 at 25–28 GB/s and bf16 at 18–24 GB/s, against 22–26 and 16–20 with one
/// run, 16 slots ahead and chunks of 32; eight runs, chunks of 128 or 12 slots ahead did no
/// better.
#[inline(always)]
fn decode_item<T: KvElement, S: Simd>(view: &ItemView<'_, '_, T>) -> Partial {
    if view.inputs.geometry.head_size.is_multiple_of(LANES) {
        decode_rows::<T, S, true>(view)
    } else {
        decode_rows::<T, S, false>(view)
    }
}

/// [`decode_item`] with K/V rows read as [`PlaneRows`] of `WHOLE` vectors (the head size is a
/// multiple of 16) or not.
#[inline(always)]
fn decode_rows<T: KvElement, S: Simd, const WHOLE: bool>(view: &ItemView<'_, '_, T>) -> Partial {
    let inputs = view.inputs;
    let (d, group, per_row) = (inputs.geometry.head_size, view.group, view.per_row);
    let kv_heads = view.item.kv_heads.clone();
    let first_head = kv_heads.start * group;
    let stride = d.next_multiple_of(LANES);
    // Scaled queries and output accumulators, rows of `stride` zero-padded floats, by head.
    let mut queries = vec![0.0f32; per_row * stride];
    for (h, dst) in queries.chunks_exact_mut(stride).enumerate() {
        for (q, s) in dst.iter_mut().zip(view.query(0, first_head + h)) {
            *q = s * inputs.params.scale;
        }
    }
    let mut acc = vec![0.0f32; per_row * stride];
    let mut max = vec![f32::NEG_INFINITY; per_row];
    let mut sum = vec![0.0f32; per_row];
    let mut scores = vec![0.0f32; per_row * DECODE_CHUNK];
    let mut distances = Vec::with_capacity(DECODE_CHUNK);
    let span = inputs.geometry.slot_stride();
    let pos = view.position(0);
    let mut walk = view.chunk_walk(DECODE_CHUNK, DECODE_STREAMS);
    while let Some(chunk) = walk.advance(view) {
        let n = chunk.len();
        let ahead = walk.ahead(DECODE_LOOKAHEAD);
        let keys = PlaneRows::<T, WHOLE>::new(inputs.planes.key(), walk.offsets(), span)
            .with_lookahead(ahead);
        let values = PlaneRows::<T, WHOLE>::new(inputs.planes.value(), walk.offsets(), span)
            .with_lookahead(ahead);
        for t in (0..n).step_by(DECODE_STREAMS) {
            let len = DECODE_STREAMS.min(n - t);
            for (kl, kv_head) in kv_heads.clone().enumerate() {
                let heads = kl * group..(kl + 1) * group;
                dots::<S>(
                    &queries[heads.start * stride..heads.end * stride],
                    &keys.columns(kv_head * d, d).skip(t),
                    (group, len, stride),
                    &mut scores[heads.start * DECODE_CHUNK + t..],
                    DECODE_CHUNK,
                );
            }
        }
        // ALiBi distances of the chunk's keys, in visiting order (empty without ALiBi).
        distances.clear();
        if inputs.params.alibi_slopes.is_some() {
            distances.extend(
                KeyOrder::positions(chunk.clone(), DECODE_STREAMS).map(|p| p as f32 - pos as f32),
            );
        }
        for h in 0..per_row {
            let probs = &mut scores[h * DECODE_CHUNK..][..n];
            if let Some(slopes) = &inputs.params.alibi_slopes {
                let slope = slopes[first_head + h];
                for (s, distance) in probs.iter_mut().zip(&distances) {
                    *s += slope * distance;
                }
            }
            let correction = softmax_update::<S>(probs, &mut max[h], &mut sum[h]);
            if correction != 1.0 {
                scale(&mut acc[h * stride..(h + 1) * stride], correction);
            }
        }
        for t in (0..n).step_by(DECODE_STREAMS) {
            let len = DECODE_STREAMS.min(n - t);
            for (kl, kv_head) in kv_heads.clone().enumerate() {
                let heads = kl * group..(kl + 1) * group;
                gemm::<S>(
                    &scores[heads.start * DECODE_CHUNK + t..],
                    (DECODE_CHUNK, 1),
                    &values.columns(kv_head * d, d).skip(t),
                    &mut acc[heads.start * stride..heads.end * stride],
                    (group, len, stride),
                    true,
                );
            }
        }
    }
    let acc = if stride == d {
        acc
    } else {
        acc.chunks_exact(stride)
            .flat_map(|row| &row[..d])
            .copied()
            .collect()
    };
    Partial { max, sum, acc }
}

/// A tile of query rows against its keys, as small GEMMs: the tile's query vectors of one kv
/// head sit in vector lanes (`Qᵀ`, `head_size × lanes`), so the score tile `Sᵀ = K·Qᵀ` and the
/// update `Oᵀ += Vᵀ·Pᵀ` are register-blocked broadcast-FMAs with no horizontal sums, and the
/// online softmax is lane-wise.
#[inline(always)]
fn tile_item<T: KvElement, S: Simd>(view: &ItemView<'_, '_, T>) -> Partial {
    let inputs = view.inputs;
    let (d, group, per_row) = (inputs.geometry.head_size, view.group, view.per_row);
    let kv_heads = view.item.kv_heads.clone();
    let rows = view.item.q_rows.len();
    // Lane `r · group + h` holds query row `r`, head `h` of the kv head; the rest is padding.
    let used = rows * group;
    let lanes = used.next_multiple_of(LANES);
    let head_len = d * lanes;
    let mut qt = vec![0.0f32; kv_heads.len() * head_len];
    for (kl, kv_head) in kv_heads.clone().enumerate() {
        let qt = &mut qt[kl * head_len..(kl + 1) * head_len];
        for lane in 0..used {
            let q = view.query(lane / group, kv_head * group + lane % group);
            for (k, x) in q.iter().enumerate() {
                qt[k * lanes + lane] = x * inputs.params.scale;
            }
        }
    }
    let lane_keys: Vec<Range<usize>> = (0..lanes)
        .map(|lane| {
            if lane < used {
                view.visible[lane / group].clone()
            } else {
                0..0
            }
        })
        .collect();
    let mut ot = vec![0.0f32; kv_heads.len() * head_len];
    let mut max = vec![f32::NEG_INFINITY; kv_heads.len() * lanes];
    let mut sum = vec![0.0f32; kv_heads.len() * lanes];
    let mut keys = vec![0.0f32; TILE_CHUNK * d];
    let mut values = vec![0.0f32; TILE_CHUNK * d];
    let mut st = vec![0.0f32; TILE_CHUNK * lanes];
    let mut base = vec![0.0f32; lanes];
    let mut correction = vec![0.0f32; lanes];
    let mut walk = view.chunk_walk(TILE_CHUNK, 1);
    while let Some(chunk) = walk.advance(view) {
        let offsets = walk.offsets();
        view.prefetch(walk.next_offsets());
        let n = chunk.len();
        let masked = lane_keys
            .iter()
            .any(|v| v.start > chunk.start || v.end < chunk.end);
        for (kl, kv_head) in kv_heads.clone().enumerate() {
            view.gather(offsets, kv_head, (&mut keys, &mut values), d);
            let qt = Dense::new(&qt[kl * head_len..(kl + 1) * head_len], lanes, d);
            gemm::<S>(&keys, (d, 1), &qt, &mut st, (n, d, lanes), false);
            if let Some(slopes) = &inputs.params.alibi_slopes {
                for (lane, vis) in lane_keys.iter().enumerate().take(used) {
                    let slope = slopes[kv_head * group + lane % group];
                    let pos = view.position(lane / group) as f32;
                    for t in vis.start.max(chunk.start)..vis.end.min(chunk.end) {
                        st[(t - chunk.start) * lanes + lane] += slope * (t as f32 - pos);
                    }
                }
            }
            if masked {
                for (lane, vis) in lane_keys.iter().enumerate() {
                    for t in chunk.clone().filter(|t| !vis.contains(t)) {
                        st[(t - chunk.start) * lanes + lane] = f32::NEG_INFINITY;
                    }
                }
            }
            softmax_lanes::<S>(
                &mut st[..n * lanes],
                &mut max[kl * lanes..(kl + 1) * lanes],
                &mut sum[kl * lanes..(kl + 1) * lanes],
                (&mut correction, &mut base),
            );
            let ot = &mut ot[kl * head_len..(kl + 1) * head_len];
            if correction.iter().any(|c| *c != 1.0) {
                for row in ot.chunks_exact_mut(lanes) {
                    for (x, c) in row.iter_mut().zip(&correction) {
                        *x *= c;
                    }
                }
            }
            let pt = Dense::new(&st, lanes, n);
            gemm::<S>(&values, (1, d), &pt, ot, (d, n, lanes), true);
        }
    }
    // Back to (row, head) order: query vector `r · per_row + kl · group + h` is lane
    // `r · group + h` of kv head `kl`.
    let nq = rows * per_row;
    let mut out = Partial {
        max: vec![f32::NEG_INFINITY; nq],
        sum: vec![0.0; nq],
        acc: vec![0.0; nq * d],
    };
    for kl in 0..kv_heads.len() {
        for lane in 0..used {
            let qi = (lane / group) * per_row + kl * group + lane % group;
            out.max[qi] = max[kl * lanes + lane];
            out.sum[qi] = sum[kl * lanes + lane];
            for k in 0..d {
                out.acc[qi * d + k] = ot[kl * head_len + k * lanes + lane];
            }
        }
    }
    out
}

/// Combines the partial states of every output group into normalised output rows; rows owned by
/// no sequence become zeros.
fn merge_into<T: KvElement>(
    inputs: &AttnInputs<'_, T>,
    plan: &Plan,
    partials: &[Partial],
    out: &mut [f32],
    simd: SimdLevel,
) {
    let row_len = inputs.row_len();
    let mut owner = vec![None; inputs.meta.num_tokens()];
    for (s, seq) in inputs.meta.seqs().iter().enumerate() {
        for r in 0..seq.query_len {
            owner[seq.query_start + r] = Some((s, r));
        }
    }
    out.par_chunks_mut(row_len)
        .zip(owner)
        .for_each(|(dst, owner)| match owner {
            Some((seq, row)) => run_at(
                simd,
                MergeRow {
                    inputs,
                    plan,
                    partials,
                    seq,
                    row,
                    dst,
                },
            ),
            None => dst.fill(0.0),
        });
}

/// Merges the partial states of one output row (`row` of sequence `seq`) into `dst`.
struct MergeRow<'a, 'b, T> {
    inputs: &'a AttnInputs<'b, T>,
    plan: &'a Plan,
    partials: &'a [Partial],
    seq: usize,
    row: usize,
    dst: &'a mut [f32],
}

impl<T: KvElement> SimdTask for MergeRow<'_, '_, T> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self) {
        let d = self.inputs.geometry.head_size;
        let group = self.inputs.group_size();
        let (plan, r) = (self.plan, self.row);
        for g in plan.groups[plan.groups_of_seq[self.seq].clone()]
            .iter()
            .filter(|g| g.q_rows.contains(&r))
        {
            let per_row = g.kv_heads.len() * group;
            let first_head = g.kv_heads.start * group;
            for h in 0..per_row {
                let qi = (r - g.q_rows.start) * per_row + h;
                let parts = &self.partials[g.items.clone()];
                let global_max = parts
                    .iter()
                    .map(|p| p.max[qi])
                    .fold(f32::NEG_INFINITY, f32::max);
                let o = &mut self.dst[(first_head + h) * d..(first_head + h + 1) * d];
                o.fill(0.0);
                let mut total = 0.0f32;
                for p in parts.iter().filter(|p| p.max[qi] > f32::NEG_INFINITY) {
                    let w = (p.max[qi] - global_max).exp();
                    total += w * p.sum[qi];
                    S::axpy(o, w, &p.acc[qi * d..(qi + 1) * d]);
                }
                scale(o, if total > 0.0 { 1.0 / total } else { 0.0 });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_interleaves_equal_runs_and_keeps_uneven_chunks_in_place() {
        let visited = |len, streams| {
            let order = KeyOrder::new(len, streams);
            (0..len).map(|t| order.key(t)).collect::<Vec<_>>()
        };
        assert_eq!(visited(12, 4), [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]);
        assert_eq!(visited(10, 4), (0..10).collect::<Vec<_>>());
        assert_eq!(visited(5, 1), (0..5).collect::<Vec<_>>());
    }

    #[test]
    fn decode_read_order_covers_each_key_once_in_interleaved_chunks() {
        let chunks: Vec<Vec<usize>> = decode_read_order(10..150).collect();
        let lengths: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(lengths, [64, 64, 12]);
        assert_eq!(chunks[0][..5], [10, 26, 42, 58, 11]);
        let mut all: Vec<usize> = chunks.concat();
        all.sort_unstable();
        assert_eq!(all, (10..150).collect::<Vec<_>>());
    }
}
