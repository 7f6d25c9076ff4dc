//! Kernel benchmarks: streaming-read bandwidth of the machine, paged decode attention bandwidth
//! (and paged vs contiguous block tables), prefill throughput, copy_blocks and swap_blocks.
//!
//! Run with `cargo bench -p attention-kernels --bench kernels` (add `-- --quick` for a short run).
//! Every decode measurement is cold: a 1 GiB buffer is streamed between iterations so the K/V
//! comes from DRAM, not from the (large) last-level cache.

use std::hint::black_box;
use std::time::{Duration, Instant};

use attention_kernels::{
    AttnInputs, AttnMetadata, AttnParams, CpuKernelConfig, KvCache, KvCacheSpec, KvDtype,
    KvElement, KvPlanes, LayerKvCache, LayerStorage, SeqAttn, SimdLevel, copy_blocks,
    paged_attention_with, swap_blocks,
};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Size of the streaming-read and cache-eviction buffer (f32 elements): 1 GiB.
const STREAM_ELEMS: usize = 1 << 28;

struct Settings {
    quick: bool,
}

impl Settings {
    /// Wall time each measurement aims for.
    fn budget(&self) -> Duration {
        Duration::from_millis(if self.quick { 120 } else { 400 })
    }
}

/// Sums `data` on all threads with 8 independent accumulators per thread.
fn parallel_sum(data: &[f32]) -> f32 {
    data.par_chunks(1 << 20)
        .map(|chunk| {
            let mut acc = [0.0f32; 8];
            let (body, tail) = chunk.as_chunks::<8>();
            for c in body {
                for i in 0..8 {
                    acc[i] += c[i];
                }
            }
            acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
        })
        .sum()
}

/// Best-of-N streaming-read bandwidth in GB/s.
fn streaming_read(buffer: &[f32], runs: usize) -> f64 {
    let bytes = std::mem::size_of_val(buffer) as f64;
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(parallel_sum(black_box(buffer)));
            bytes / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// Median time of `run`, calling `between` (untimed) before each run, within the budget.
fn median_time(settings: &Settings, mut between: impl FnMut(), mut run: impl FnMut()) -> Duration {
    let mut times = Vec::new();
    let deadline = Instant::now() + settings.budget();
    while times.len() < 3 || (Instant::now() < deadline && times.len() < 50) {
        between();
        let start = Instant::now();
        run();
        times.push(start.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// A model shape for attention benchmarks.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    heads: usize,
    kv_heads: usize,
    head_size: usize,
}

const SHAPES: [Shape; 2] = [
    Shape {
        name: "32q/8kv/128",
        heads: 32,
        kv_heads: 8,
        head_size: 128,
    },
    Shape {
        name: "12q/12kv/64",
        heads: 12,
        kv_heads: 12,
        head_size: 64,
    },
];

/// One layer whose every element holds a small non-zero value.
fn filled_layer(
    shape: Shape,
    dtype: KvDtype,
    block_size: usize,
    num_blocks: usize,
) -> LayerKvCache {
    let spec = KvCacheSpec::new(1, shape.kv_heads, shape.head_size, block_size, dtype)
        .expect("valid spec");
    let mut layer = LayerKvCache::zeroed(spec.geometry(num_blocks), dtype);
    fn fill<T: KvElement>(planes: &mut KvPlanes<T>) {
        let (k, v) = planes.planes_mut();
        k.par_iter_mut()
            .chain(v.par_iter_mut())
            .enumerate()
            .for_each(|(i, x)| {
                *x = T::from_f32(((i % 251) as f32 - 125.0) * 0.004);
            });
    }
    match layer.storage_mut() {
        LayerStorage::F32(p) => fill(p),
        LayerStorage::F16(p) => fill(p),
        LayerStorage::Bf16(p) => fill(p),
    }
    layer
}

/// Decode metadata for `batch` sequences of `context` tokens: shuffled or identity block tables.
fn decode_meta(
    batch: usize,
    context: usize,
    block_size: usize,
    num_blocks: usize,
    shuffled: bool,
) -> AttnMetadata {
    let per_seq = context.div_ceil(block_size);
    let mut ids: Vec<u32> = (0..num_blocks as u32).collect();
    if shuffled {
        ids.shuffle(&mut ChaCha8Rng::seed_from_u64(42));
    }
    let seqs = (0..batch)
        .map(|i| SeqAttn {
            query_start: i,
            query_len: 1,
            context_len: context,
            block_table: ids[i * per_seq..(i + 1) * per_seq].to_vec(),
        })
        .collect();
    AttnMetadata::new(block_size, vec![-1; batch], seqs).expect("valid metadata")
}

/// Median time of one attention call over `layer`, cold (cache evicted before each run).
fn time_attention(
    settings: &Settings,
    evict: &[f32],
    layer: &LayerKvCache,
    shape: Shape,
    meta: &AttnMetadata,
) -> Duration {
    let query = vec![0.1f32; meta.num_tokens() * shape.heads * shape.head_size];
    let mut out = vec![0.0f32; query.len()];
    let params = AttnParams::new(1.0 / (shape.head_size as f32).sqrt(), shape.kv_heads);
    let config = CpuKernelConfig::default();
    fn typed<T: KvElement>(
        settings: &Settings,
        evict: &[f32],
        planes: &KvPlanes<T>,
        inputs: (
            &[f32],
            &mut [f32],
            &AttnMetadata,
            &AttnParams,
            Shape,
            &LayerKvCache,
            &CpuKernelConfig,
        ),
    ) -> Duration {
        let (query, out, meta, params, shape, layer, config) = inputs;
        let inputs = AttnInputs {
            query,
            num_heads: shape.heads,
            planes,
            geometry: layer.geometry(),
            meta,
            params,
        };
        median_time(
            settings,
            || {
                black_box(parallel_sum(evict));
            },
            || paged_attention_with(&inputs, out, config).expect("valid inputs"),
        )
    }
    let args = (
        &query[..],
        &mut out[..],
        meta,
        &params,
        shape,
        layer,
        &config,
    );
    match layer.storage() {
        LayerStorage::F32(p) => typed(settings, evict, p, args),
        LayerStorage::F16(p) => typed(settings, evict, p, args),
        LayerStorage::Bf16(p) => typed(settings, evict, p, args),
    }
}

fn decode_table(settings: &Settings, evict: &[f32], stream_gbs: f64) {
    let batches: &[usize] = if settings.quick {
        &[8, 64]
    } else {
        &[8, 32, 64]
    };
    let contexts: &[usize] = &[1024, 4096];
    let block_sizes: &[usize] = if settings.quick { &[16] } else { &[16, 32] };
    println!("\n## Paged decode attention (cold K/V; bytes = K+V rows read)");
    println!(
        "| shape | dtype | block | batch | context | KV MiB | paged GB/s | % stream | contiguous GB/s | paged/contig time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for shape in SHAPES {
        for dtype in [KvDtype::F32, KvDtype::Bf16] {
            for &block_size in block_sizes {
                let max_tokens = batches.iter().max().copied().unwrap_or(0)
                    * contexts.iter().max().copied().unwrap_or(0);
                let num_blocks = max_tokens.div_ceil(block_size);
                let layer = filled_layer(shape, dtype, block_size, num_blocks);
                for &batch in batches {
                    for &context in contexts {
                        let bytes = (2
                            * batch
                            * context
                            * shape.kv_heads
                            * shape.head_size
                            * dtype.size_in_bytes()) as f64;
                        let paged = decode_meta(batch, context, block_size, num_blocks, true);
                        let contiguous = decode_meta(batch, context, block_size, num_blocks, false);
                        let t_paged = time_attention(settings, evict, &layer, shape, &paged);
                        let t_contig = time_attention(settings, evict, &layer, shape, &contiguous);
                        let gbs = bytes / t_paged.as_secs_f64() / 1e9;
                        println!(
                            "| {} | {:?} | {block_size} | {batch} | {context} | {:.0} | {gbs:.1} | {:.0}% | {:.1} | {:.3} |",
                            shape.name,
                            dtype,
                            bytes / (1 << 20) as f64,
                            100.0 * gbs / stream_gbs,
                            bytes / t_contig.as_secs_f64() / 1e9,
                            t_paged.as_secs_f64() / t_contig.as_secs_f64(),
                        );
                    }
                }
            }
        }
    }
}

fn prefill_table(settings: &Settings, evict: &[f32]) {
    println!("\n## Prefill over the paged cache (one sequence, causal, block 16)");
    println!("| shape | dtype | query tokens | context | ms per layer | GFLOP/s (QK+PV) |");
    println!("|---|---|---|---|---|---|");
    let shape = SHAPES[1];
    for dtype in [KvDtype::F32, KvDtype::Bf16] {
        for (query_len, context) in [(512usize, 512usize), (256, 2048)] {
            let num_blocks = context.div_ceil(16);
            let layer = filled_layer(shape, dtype, 16, num_blocks);
            let seqs = vec![SeqAttn {
                query_start: 0,
                query_len,
                context_len: context,
                block_table: (0..num_blocks as u32).collect(),
            }];
            let meta = AttnMetadata::new(16, vec![-1; query_len], seqs).expect("valid metadata");
            let t = time_attention(settings, evict, &layer, shape, &meta);
            let cached = context - query_len;
            let pairs = (query_len * cached + query_len * (query_len + 1) / 2) as f64;
            let flops = 4.0 * pairs * (shape.heads * shape.head_size) as f64;
            println!(
                "| {} | {dtype:?} | {query_len} | {context} | {:.2} | {:.1} |",
                shape.name,
                t.as_secs_f64() * 1e3,
                flops / t.as_secs_f64() / 1e9
            );
        }
    }
}

fn block_ops_table(settings: &Settings) {
    println!(
        "\n## copy_blocks and swap_blocks (bf16, 8 layers, 8 kv heads × 128, block 16; GB/s of blocks copied)"
    );
    println!("| operation | pairs | MiB copied | ms | GB/s |");
    println!("|---|---|---|---|---|");
    let spec = KvCacheSpec::new(8, 8, 128, 16, KvDtype::Bf16).expect("valid spec");
    let mut device = KvCache::new(spec, 2048).expect("pool");
    let mut cpu_swap = KvCache::new(spec, 1024).expect("pool");
    let pairs = 512usize;
    let bytes = (pairs * spec.bytes_per_block()) as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut ids: Vec<u32> = (0..2048).collect();
    ids.shuffle(&mut rng);
    let cow: Vec<(u32, u32)> = (0..pairs).map(|i| (ids[i], ids[pairs + i])).collect();
    let out: Vec<(u32, u32)> = (0..pairs).map(|i| (ids[i], i as u32)).collect();
    let back: Vec<(u32, u32)> = out.iter().map(|(d, s)| (*s, *d)).collect();
    let t_copy = median_time(
        settings,
        || {},
        || copy_blocks(&mut device, &cow).expect("valid mapping"),
    );
    let t_out = median_time(
        settings,
        || {},
        || swap_blocks(&device, &mut cpu_swap, &out).expect("valid mapping"),
    );
    let t_in = median_time(
        settings,
        || {},
        || swap_blocks(&cpu_swap, &mut device, &back).expect("valid mapping"),
    );
    for (name, t) in [
        ("copy_blocks (CoW)", t_copy),
        ("swap_blocks out", t_out),
        ("swap_blocks in", t_in),
    ] {
        println!(
            "| {name} | {pairs} | {:.0} | {:.2} | {:.1} |",
            bytes / (1 << 20) as f64,
            t.as_secs_f64() * 1e3,
            bytes / t.as_secs_f64() / 1e9
        );
    }
}

fn main() {
    let settings = Settings {
        quick: std::env::args().any(|a| a == "--quick"),
    };
    println!(
        "# attention-kernels benchmark ({} threads, SIMD {:?}{})",
        rayon::current_num_threads(),
        SimdLevel::detect(),
        if settings.quick { ", quick" } else { "" }
    );
    let buffer: Vec<f32> = (0..STREAM_ELEMS)
        .into_par_iter()
        .map(|i| (i % 7) as f32)
        .collect();
    let stream_gbs = streaming_read(&buffer, if settings.quick { 3 } else { 8 });
    println!("\nstreaming read (sum of 1 GiB f32, all threads, best run): {stream_gbs:.1} GB/s");
    decode_table(&settings, &buffer, stream_gbs);
    prefill_table(&settings, &buffer);
    block_ops_table(&settings);
}
