//! Kernel benchmarks: streaming-read bandwidth of the machine, paged decode attention bandwidth
//! (and paged vs contiguous block tables), prefill throughput, copy_blocks and swap_blocks.
//!
//! Run with `cargo bench -p attention-kernels --bench kernels` (add `-- --quick` for a short run,
//! and any of `decode`, `serving`, `prefill`, `blocks` to run only those tables; `--warm` skips
//! the cache eviction, for profiling the kernels' own work; `--best` reports the fastest run
//! instead of the median, which is steadier on a busy machine; `--simd=avx2` (or `portable`,
//! `avx512`) runs the attention kernels at that instruction-set level instead of the CPU's
//! best).
//! Every decode measurement is cold: a 1 GiB buffer is streamed between iterations so the K/V
//! comes from DRAM, not from the (large) last-level cache. Those passes are streaming reads too:
//! "% stream" compares with the best streaming read seen so far (start-up runs included), so a
//! busy start does not inflate it. "bare paged read" reads the same K/V rows through the same
//! shuffled block tables with no arithmetic (see `time_paged_read`): scattered blocks of 16–32
//! slots stream slower than one long buffer, and this is the ceiling a kernel faces on them.

use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use attention_kernels::{
    AttnInputs, AttnMetadata, AttnParams, CacheGeometry, CpuKernelConfig, DECODE_LOOKAHEAD,
    KvCache, KvCacheSpec, KvDtype, KvElement, KvPlanes, LINE_BYTES, LayerKvCache, SeqAttn,
    SimdLevel, committed_plane, copy_blocks, decode_read_order, paged_attention_with,
    prefetch_line, swap_blocks, with_planes,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Size of the streaming-read and cache-eviction buffer (f32 elements): 1 GiB.
const STREAM_ELEMS: usize = 1 << 28;

struct Settings {
    quick: bool,
    /// Skip the cache eviction between runs.
    warm: bool,
    /// Report the fastest run instead of the median.
    best: bool,
    /// Tables to run (all when empty).
    tables: Vec<String>,
    /// Instruction-set level of the attention kernels.
    simd: SimdLevel,
}

impl Settings {
    /// Wall time each measurement aims for.
    fn budget(&self) -> Duration {
        Duration::from_millis(if self.quick { 120 } else { 400 })
    }

    /// Whether the table `name` was asked for.
    fn wants(&self, name: &str) -> bool {
        self.tables.is_empty() || self.tables.iter().any(|t| t == name)
    }
}

/// The cache-eviction buffer, which also tracks the best streaming-read bandwidth seen.
struct Evictor {
    buffer: Vec<f32>,
    best_gbs: Cell<f64>,
}

impl Evictor {
    /// Streams the whole buffer once (evicting the caches) and records its bandwidth.
    fn evict(&self) {
        let start = Instant::now();
        black_box(parallel_sum(black_box(&self.buffer)));
        let gbs =
            std::mem::size_of_val(&self.buffer[..]) as f64 / start.elapsed().as_secs_f64() / 1e9;
        self.best_gbs.set(self.best_gbs.get().max(gbs));
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

/// Median (or, with `--best`, shortest) time of `run`, calling `between` (untimed) before each
/// run, within the budget.
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
    times[if settings.best { 0 } else { times.len() / 2 }]
}

/// [`median_time`] of `run` with the caches evicted before each run (unless `--warm`).
fn cold_time(settings: &Settings, evictor: &Evictor, run: impl FnMut()) -> Duration {
    median_time(
        settings,
        || {
            if !settings.warm {
                evictor.evict();
            }
        },
        run,
    )
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
    with_planes!(layer.storage_mut(), p => fill(p));
    layer
}

/// Decode metadata for one sequence per entry of `contexts`: shuffled or identity block tables.
fn decode_meta(
    contexts: &[usize],
    block_size: usize,
    num_blocks: usize,
    shuffled: bool,
) -> AttnMetadata {
    let mut ids: Vec<u32> = (0..num_blocks as u32).collect();
    if shuffled {
        ids.shuffle(&mut ChaCha8Rng::seed_from_u64(42));
    }
    let mut next = ids.into_iter();
    let seqs = contexts
        .iter()
        .enumerate()
        .map(|(i, &context)| SeqAttn {
            query_start: i,
            query_len: 1,
            context_len: context,
            block_table: next.by_ref().take(context.div_ceil(block_size)).collect(),
        })
        .collect();
    AttnMetadata::new(block_size, vec![-1; contexts.len()], seqs).expect("valid metadata")
}

/// Bytes of K and V rows a decode batch over `contexts` reads.
fn decode_bytes(contexts: &[usize], shape: Shape, dtype: KvDtype) -> f64 {
    let tokens: usize = contexts.iter().sum();
    (2 * tokens * shape.kv_heads * shape.head_size * dtype.size_in_bytes()) as f64
}

/// Paged and contiguous times of one decode batch, and the table cells shared by the decode
/// tables: `paged GB/s | % stream | bare paged read GB/s | % of it | contiguous GB/s |
/// paged/contig time | the same ratio for the bare read`.
fn decode_cells(
    settings: &Settings,
    evictor: &Evictor,
    layer: &LayerKvCache,
    shape: Shape,
    contexts: &[usize],
) -> (Duration, String) {
    let g = layer.geometry();
    let paged = decode_meta(contexts, g.block_size, g.num_blocks, true);
    let contiguous = decode_meta(contexts, g.block_size, g.num_blocks, false);
    let t_paged = time_attention(settings, evictor, layer, shape, &paged);
    let t_contig = time_attention(settings, evictor, layer, shape, &contiguous);
    let t_read = time_paged_read(settings, evictor, layer, &paged);
    let t_read_contig = time_paged_read(settings, evictor, layer, &contiguous);
    let bytes = decode_bytes(contexts, shape, layer.dtype());
    let gbs = bytes / t_paged.as_secs_f64() / 1e9;
    let read_gbs = bytes / t_read.as_secs_f64() / 1e9;
    let cells = format!(
        "{gbs:.1} | {:.0}% | {read_gbs:.1} | {:.0}% | {:.1} | {:.3} | {:.3}",
        100.0 * gbs / evictor.best_gbs.get(),
        100.0 * gbs / read_gbs,
        bytes / t_contig.as_secs_f64() / 1e9,
        t_paged.as_secs_f64() / t_contig.as_secs_f64(),
        t_read.as_secs_f64() / t_read_contig.as_secs_f64(),
    );
    (t_paged, cells)
}

/// Median time of a bare read of every K and V row `meta` covers, cold, in the decode kernel's
/// order ([`decode_read_order`]: per chunk the K rows, then the same V rows), XORing whole rows
/// as 8-byte words and prefetching each line [`DECODE_LOOKAHEAD`] reads ahead. No arithmetic,
/// so this is what a decode kernel could reach on the same scattered layout.
fn time_paged_read(
    settings: &Settings,
    evictor: &Evictor,
    layer: &LayerKvCache,
    meta: &AttnMetadata,
) -> Duration {
    fn typed<T: KvElement>(planes: &KvPlanes<T>, g: CacheGeometry, meta: &AttnMetadata) -> u64 {
        let row_bytes = g.slot_stride() * std::mem::size_of::<T>();
        assert!(
            row_bytes.is_multiple_of(LINE_BYTES),
            "rows of whole cache lines"
        );
        meta.seqs()
            .par_iter()
            .map(|seq| {
                let byte_offset =
                    |p: usize| g.row_offset(seq.slot(p, g.block_size), 0) * size_of::<T>();
                let (mut rows, mut chunk_lens) = (Vec::new(), Vec::new());
                for chunk in decode_read_order(0..seq.context_len) {
                    chunk_lens.push(chunk.len());
                    rows.extend(chunk.into_iter().map(byte_offset));
                }
                let read = BareRead {
                    planes: [planes.key(), planes.value()].map(|p| p.as_ptr().cast()),
                    rows: &rows,
                    chunk_lens: &chunk_lens,
                    row_bytes,
                };
                // SAFETY: every row lies inside its plane (the metadata is valid for this layer).
                unsafe { read.run() }
            })
            .reduce(|| 0, |a, b| a ^ b)
    }
    cold_time(settings, evictor, || {
        black_box(with_planes!(layer.storage(), p => typed(p, layer.geometry(), meta)));
    })
}

/// One cache line as the 8-byte words the bare read XORs.
type Line = [u64; LINE_BYTES / 8];

/// One sequence's bare read: the K plane's rows of each chunk, then the V plane's.
struct BareRead<'a> {
    /// The K and V planes.
    planes: [*const u8; 2],
    /// Byte offsets of the rows in reading order.
    rows: &'a [usize],
    /// How many of `rows` each chunk takes, in order.
    chunk_lens: &'a [usize],
    /// Bytes per row, whole cache lines.
    row_bytes: usize,
}

impl BareRead<'_> {
    /// The XOR of every 8-byte word read, compiled for AVX-512 (one 64-byte load per line)
    /// where the CPU has it.
    ///
    /// # Safety
    /// Every row must lie inside both planes' allocations.
    unsafe fn run(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512(read: &BareRead<'_>) -> u64 {
                // SAFETY: the caller's contract.
                unsafe { read.body() }
            }
            // SAFETY: the CPU has AVX-512F; the rows are the caller's contract.
            return unsafe { avx512(self) };
        }
        // SAFETY: the caller's contract.
        unsafe { self.body() }
    }

    /// [`BareRead::run`]'s loop, inlined into each instruction-set build.
    #[inline(always)]
    unsafe fn body(&self) -> u64 {
        let mut acc: Line = [0; LINE_BYTES / 8];
        let mut first = 0;
        for &len in self.chunk_lens {
            let chunk = &self.rows[first..first + len];
            for plane in self.planes {
                for (i, &row) in (first..).zip(chunk) {
                    let ahead = self.rows.get(i + DECODE_LOOKAHEAD);
                    for line in (0..self.row_bytes).step_by(LINE_BYTES) {
                        if let Some(&ahead) = ahead {
                            prefetch_line(plane.wrapping_add(ahead + line));
                        }
                        // SAFETY: the line lies inside the row, by the caller's contract.
                        let words: Line =
                            unsafe { plane.add(row + line).cast::<Line>().read_unaligned() };
                        for (a, w) in acc.iter_mut().zip(words) {
                            *a ^= w;
                        }
                    }
                }
            }
            first += len;
        }
        acc.iter().fold(0, |a, b| a ^ b)
    }
}

/// Median time of one attention call over `layer`, cold (cache evicted before each run).
fn time_attention(
    settings: &Settings,
    evictor: &Evictor,
    layer: &LayerKvCache,
    shape: Shape,
    meta: &AttnMetadata,
) -> Duration {
    let query = vec![0.1f32; meta.num_tokens() * shape.heads * shape.head_size];
    let mut out = vec![0.0f32; query.len()];
    let params = AttnParams::new(1.0 / (shape.head_size as f32).sqrt(), shape.kv_heads);
    let config = CpuKernelConfig {
        simd: settings.simd,
        ..CpuKernelConfig::default()
    };
    fn typed<T: KvElement>(
        settings: &Settings,
        evictor: &Evictor,
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
        cold_time(settings, evictor, || {
            paged_attention_with(&inputs, out, config).expect("valid inputs")
        })
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
    with_planes!(layer.storage(), p => typed(settings, evictor, p, args))
}

fn decode_table(settings: &Settings, evictor: &Evictor) {
    let batches: &[usize] = if settings.quick {
        &[8, 64]
    } else {
        &[8, 32, 64]
    };
    let contexts: &[usize] = &[1024, 4096];
    let block_sizes: &[usize] = &[16, 32];
    println!("\n## Paged decode attention (cold K/V; bytes = K+V rows read)");
    println!(
        "| shape | dtype | block | batch | context | KV MiB | paged GB/s | % stream | bare paged read GB/s | % of it | contiguous GB/s | paged/contig time | bare read paged/contig |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for shape in SHAPES {
        for dtype in [KvDtype::F32, KvDtype::Bf16] {
            for &block_size in block_sizes {
                let max_tokens = batches.iter().max().copied().unwrap_or(0)
                    * contexts.iter().max().copied().unwrap_or(0);
                let num_blocks = max_tokens.div_ceil(block_size);
                let layer = filled_layer(shape, dtype, block_size, num_blocks);
                for &batch in batches {
                    for &context in contexts {
                        let contexts = vec![context; batch];
                        let bytes = decode_bytes(&contexts, shape, dtype);
                        let (_, cells) = decode_cells(settings, evictor, &layer, shape, &contexts);
                        println!(
                            "| {} | {dtype:?} | {block_size} | {batch} | {context} | {:.0} | {cells} |",
                            shape.name,
                            bytes / (1 << 20) as f64,
                        );
                    }
                }
            }
        }
    }
}

/// The server's decode step: 32 sequences of 125–260 tokens, 12 heads of 64 (MHA), block 16.
fn serving_table(settings: &Settings, evictor: &Evictor) {
    println!("\n## Serving decode step (32 sequences, contexts 125–260, block 16, cold K/V)");
    println!(
        "| shape | dtype | KV MiB | µs per call | paged GB/s | % stream | bare paged read GB/s | % of it | contiguous GB/s | paged/contig time | bare read paged/contig |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let shape = SHAPES[1];
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let contexts: Vec<usize> = (0..32).map(|_| rng.random_range(125..=260)).collect();
    let num_blocks = contexts.iter().map(|c| c.div_ceil(16)).sum();
    for dtype in [KvDtype::F32, KvDtype::Bf16] {
        let layer = filled_layer(shape, dtype, 16, num_blocks);
        let (t, cells) = decode_cells(settings, evictor, &layer, shape, &contexts);
        println!(
            "| {} | {dtype:?} | {:.1} | {:.0} | {cells} |",
            shape.name,
            decode_bytes(&contexts, shape, dtype) / (1 << 20) as f64,
            t.as_secs_f64() * 1e6,
        );
    }
}

fn prefill_table(settings: &Settings, evictor: &Evictor) {
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
            let t = time_attention(settings, evictor, &layer, shape, &meta);
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
    // One untimed pass of each first: timed straight after the pools were allocated, the CoW
    // copy (the first table row) ran at 7.5 GB/s against 12.7 once every block had been copied
    // once, in either order of the rows.
    copy_blocks(&mut device, &cow).expect("valid mapping");
    swap_blocks(&device, &mut cpu_swap, &out).expect("valid mapping");
    swap_blocks(&cpu_swap, &mut device, &back).expect("valid mapping");
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

/// The level `--simd=NAME` names (case-insensitive), or the CPU's best; panics on an unknown
/// name or one this CPU lacks.
fn simd_level(args: &[String]) -> SimdLevel {
    let Some(name) = args.iter().find_map(|a| a.strip_prefix("--simd=")) else {
        return SimdLevel::detect();
    };
    let level = SimdLevel::ALL
        .into_iter()
        .find(|l| format!("{l:?}").eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("unknown --simd level {name}; one of {:?}", SimdLevel::ALL));
    assert!(level <= SimdLevel::detect(), "this CPU lacks {level:?}");
    level
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = Settings {
        quick: args.iter().any(|a| a == "--quick"),
        warm: args.iter().any(|a| a == "--warm"),
        best: args.iter().any(|a| a == "--best"),
        tables: args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .cloned()
            .collect(),
        simd: simd_level(&args),
    };
    println!(
        "# attention-kernels benchmark ({} threads, SIMD {:?}{})",
        rayon::current_num_threads(),
        settings.simd,
        if settings.quick { ", quick" } else { "" }
    );
    // Allocated like the KV planes (huge pages where Linux grants them), so that the reference
    // streaming read and the kernels read the same kind of memory: on this machine a 4 KiB-page
    // buffer streams at about 29 GB/s and a huge-page one at about 35.
    let mut buffer = committed_plane::<f32>(STREAM_ELEMS);
    buffer
        .par_iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = (i % 7) as f32);
    let evictor = Evictor {
        buffer,
        best_gbs: Cell::new(0.0),
    };
    for _ in 0..if settings.quick { 3 } else { 8 } {
        evictor.evict();
    }
    println!(
        "\nstreaming read (sum of 1 GiB f32, all threads, best run): {:.1} GB/s",
        evictor.best_gbs.get()
    );
    if settings.wants("decode") {
        decode_table(&settings, &evictor);
    }
    if settings.wants("serving") {
        serving_table(&settings, &evictor);
    }
    if settings.wants("prefill") {
        prefill_table(&settings, &evictor);
    }
    if settings.wants("blocks") {
        block_ops_table(&settings);
    }
    println!(
        "\nbest streaming read seen during the run: {:.1} GB/s",
        evictor.best_gbs.get()
    );
}
