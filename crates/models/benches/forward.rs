//! Forward throughput of the ~95 M-parameter Llama-shaped model (hidden 768, 12 layers, 12 heads,
//! intermediate 2048) in f32 and bf16: decode steps at batch 1, 8 and 32 over a 128-token cached
//! context, and a 512-token prefill, against the throughput of candle's own matrix product on
//! this machine (the model's f32 linear layers use a faster packed product, so f32 can exceed it).
//!
//! Run with `cargo bench -p models --bench forward`. Achieved GFLOP/s counts the linear layers
//! (2 × parameters per token, output projection included, for the rows that need logits only)
//! plus attention (4 × context × hidden per token per layer).

use std::time::{Duration, Instant};

use attention_kernels::{AttnMetadata, Cpu, KvCache, KvCacheSpec, KvDtype, SeqAttn};
use candle_core::{DType, Device, Tensor};
use models::{CausalLm, DecoderModel, ForwardBatch, LlamaShape, random_llama};

const BLOCK_SIZE: usize = 16;
const CONTEXT: usize = 128;
const DECODE_STEPS: usize = 4;
const PREFILL: usize = 512;

/// Best-of-ten GFLOP/s of candle's `[m, k] × [k, n]` after a warm-up, with shapes like the
/// model's MLP.
fn candle_matmul(dtype: DType) -> f64 {
    let (m, k, n) = (1024, 768, 2048);
    let a = Tensor::ones((m, k), dtype, &Device::Cpu).unwrap();
    let b = Tensor::ones((k, n), dtype, &Device::Cpu).unwrap();
    let mut best = Duration::MAX;
    std::hint::black_box(a.matmul(&b).unwrap());
    for _ in 0..10 {
        let start = Instant::now();
        let c = a.matmul(&b).unwrap();
        std::hint::black_box(c);
        best = best.min(start.elapsed());
    }
    2.0 * (m * k * n) as f64 / best.as_secs_f64() / 1e9
}

fn kv_dtype(dtype: DType) -> KvDtype {
    KvDtype::from_candle(dtype).expect("a cache dtype")
}

/// One sequence's step: `len` new tokens after `done` cached ones, in block table `table`.
fn seq_step(
    tokens: &mut Vec<u32>,
    positions: &mut Vec<u32>,
    slots: &mut Vec<i64>,
    table: &[u32],
    done: usize,
    len: usize,
) -> SeqAttn {
    let start = tokens.len();
    for p in done..done + len {
        tokens.push((p * 7 % 1000) as u32);
        positions.push(p as u32);
        slots.push(i64::from(table[p / BLOCK_SIZE]) * BLOCK_SIZE as i64 + (p % BLOCK_SIZE) as i64);
    }
    SeqAttn {
        query_start: start,
        query_len: len,
        context_len: done + len,
        block_table: table.to_vec(),
    }
}

/// A batch where each sequence `i` adds `lens[i]` tokens after `done[i]` cached ones; logits for
/// the last row of each sequence.
fn batch(tables: &[Vec<u32>], done: &[usize], lens: &[usize]) -> ForwardBatch {
    let (mut tokens, mut positions, mut slots, mut seqs, mut rows) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..tables.len() {
        let seq = seq_step(
            &mut tokens,
            &mut positions,
            &mut slots,
            &tables[i],
            done[i],
            lens[i],
        );
        rows.push((seq.query_start + seq.query_len - 1) as u32);
        seqs.push(seq);
    }
    let meta = AttnMetadata::new(BLOCK_SIZE, slots, seqs).unwrap();
    ForwardBatch::new(tokens, positions, meta, rows).unwrap()
}

fn flops(shape: &LlamaShape, new_tokens: usize, logit_rows: usize, mean_context: f64) -> f64 {
    let head_flops = 2 * shape.vocab_size * shape.hidden_size;
    let body = (shape.linear_flops_per_token() - head_flops) as f64;
    let attention = 4.0 * mean_context * (shape.hidden_size * shape.num_layers) as f64;
    new_tokens as f64 * (body + attention) + (logit_rows * head_flops) as f64
}

/// Prints throughput over `steps` timed steps that processed `tokens` tokens and `flop` FLOPs.
fn report(label: &str, steps: usize, tokens: usize, flop: f64, elapsed: Duration, candle: f64) {
    let seconds = elapsed.as_secs_f64();
    let gflops = flop / seconds / 1e9;
    println!(
        "{label:<24} {:>9.1} tok/s {:>9.2} ms/step {:>7.1} GFLOP/s {:>5.1}% of candle's matmul",
        tokens as f64 / seconds,
        seconds * 1e3 / steps as f64,
        gflops,
        100.0 * gflops / candle
    );
}

fn bench_dtype(model: &DecoderModel, shape: &LlamaShape, dtype: DType, candle: f64) {
    let backend = Cpu::new();
    let spec = model.spec();
    let blocks_per_seq = (CONTEXT + DECODE_STEPS).div_ceil(BLOCK_SIZE);
    let cache_spec = KvCacheSpec::new(
        spec.num_layers,
        spec.num_kv_heads,
        spec.head_dim,
        BLOCK_SIZE,
        kv_dtype(dtype),
    )
    .unwrap();
    for batch_size in [1usize, 8, 32] {
        let mut cache = KvCache::new(cache_spec, batch_size * blocks_per_seq).unwrap();
        let tables: Vec<Vec<u32>> = (0..batch_size)
            .map(|i| ((i * blocks_per_seq) as u32..((i + 1) * blocks_per_seq) as u32).collect())
            .collect();
        let warm = batch(&tables, &vec![0; batch_size], &vec![CONTEXT; batch_size]);
        model.forward(&warm, cache.layers_mut(), &backend).unwrap();
        let mut elapsed = Duration::ZERO;
        let mut flop = 0.0;
        for step in 0..DECODE_STEPS {
            let done = vec![CONTEXT + step; batch_size];
            let decode = batch(&tables, &done, &vec![1; batch_size]);
            let start = Instant::now();
            let logits = model
                .forward(&decode, cache.layers_mut(), &backend)
                .unwrap();
            std::hint::black_box(logits);
            elapsed += start.elapsed();
            flop += flops(shape, batch_size, batch_size, (CONTEXT + step + 1) as f64);
        }
        let label = format!("{dtype:?} decode batch {batch_size}");
        report(
            &label,
            DECODE_STEPS,
            batch_size * DECODE_STEPS,
            flop,
            elapsed,
            candle,
        );
    }
    let blocks = PREFILL.div_ceil(BLOCK_SIZE);
    let mut cache = KvCache::new(cache_spec, blocks).unwrap();
    let tables = vec![(0..blocks as u32).collect::<Vec<_>>()];
    let prefill = batch(&tables, &[0], &[PREFILL]);
    let start = Instant::now();
    let logits = model
        .forward(&prefill, cache.layers_mut(), &backend)
        .unwrap();
    std::hint::black_box(logits);
    let elapsed = start.elapsed();
    let flop = flops(shape, PREFILL, 1, (PREFILL + 1) as f64 / 2.0);
    report(
        &format!("{dtype:?} prefill {PREFILL}"),
        1,
        PREFILL,
        flop,
        elapsed,
        candle,
    );
}

fn main() {
    let shape = LlamaShape::bench_95m();
    println!(
        "random Llama: {:.1} M parameters, {} threads",
        shape.parameter_count() as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for dtype in [DType::F32, DType::BF16] {
        let candle = candle_matmul(dtype);
        println!("{dtype:?} candle matmul [1024x768]x[768x2048]: {candle:.1} GFLOP/s");
        let model = random_llama(&shape, 7, dtype, &Device::Cpu, "bench").unwrap();
        bench_dtype(&model, &shape, dtype, candle);
    }
}
