//! Parity of the fast CPU kernel (and backend) against the f64 reference on random problems:
//! ragged sequences, shuffled block tables, partially filled last blocks, chunked prefill over
//! cached context, MHA/GQA/MQA, many head and block sizes, sliding windows, ALiBi, all dtypes,
//! every SIMD level of the machine and aggressive work splitting.

use attention_kernels::{
    AttentionBackend, AttnInputs, AttnMetadata, AttnParams, CacheGeometry, Cpu, CpuKernelConfig,
    KvCacheSpec, KvDtype, KvElement, KvPlanes, LayerKvCache, LayerStorage, PlanConfig, Reference,
    SeqAttn, SimdLevel, paged_attention_with, reference_attention, with_planes,
};
use candle_core::{Device, Tensor};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One random attention problem.
#[derive(Debug, Clone)]
struct Case {
    dtype: KvDtype,
    block_size: usize,
    head_size: usize,
    num_kv_heads: usize,
    group: usize,
    /// (query_len, context_len, rows of padding before the sequence)
    seqs: Vec<(usize, usize, usize)>,
    sliding_window: Option<usize>,
    alibi: bool,
    spare_blocks: usize,
    simd: SimdLevel,
    plan: PlanConfig,
    seed: u64,
}

fn seq_strategy() -> impl Strategy<Value = (usize, usize, usize)> {
    (
        1usize..70,
        prop::bool::weighted(0.4),
        0usize..20,
        prop::bool::weighted(0.2),
    )
        .prop_map(|(context, prefill, q, pad)| {
            let query = if prefill { 1 + q % context } else { 1 };
            (query, context, usize::from(pad))
        })
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(vec![KvDtype::F32, KvDtype::F16, KvDtype::Bf16]),
        prop::sample::select(vec![1usize, 3, 8, 16, 32]),
        prop::sample::select(vec![4usize, 17, 64, 80, 96, 112, 128, 256]),
        (1usize..=3, prop::sample::select(vec![1usize, 2, 4])),
        prop::collection::vec(seq_strategy(), 1..5),
        prop::option::weighted(0.3, 1usize..40),
        any::<bool>(),
        0usize..6,
        prop::sample::select(SimdLevel::supported().collect::<Vec<_>>()),
        (1usize..=8, 1usize..=64, 1usize..=64),
        any::<u64>(),
    )
        .prop_map(
            |(
                dtype,
                block_size,
                head_size,
                (num_kv_heads, group),
                seqs,
                sliding_window,
                alibi,
                spare_blocks,
                simd,
                plan,
                seed,
            )| Case {
                dtype,
                block_size,
                head_size,
                num_kv_heads,
                group,
                seqs,
                sliding_window,
                alibi,
                spare_blocks,
                simd,
                plan: PlanConfig {
                    items_per_thread: plan.0,
                    min_partition_len: plan.1,
                    query_tile_vectors: plan.2,
                },
                seed,
            },
        )
}

/// A built problem: metadata, params, cache and packed queries.
struct Built {
    meta: AttnMetadata,
    params: AttnParams,
    layer: LayerKvCache,
    query: Vec<f32>,
    num_heads: usize,
}

/// Builds the case: block tables drawn from a shuffled pool, every slot of a context filled with
/// random values and every other slot poisoned with NaN (a kernel reading past a context fails).
fn build(case: &Case) -> Built {
    let mut rng = ChaCha8Rng::seed_from_u64(case.seed);
    let bs = case.block_size;
    let needed: usize = case.seqs.iter().map(|(_, c, _)| c.div_ceil(bs)).sum();
    let num_blocks = needed + case.spare_blocks;
    let mut ids: Vec<u32> = (0..num_blocks as u32).collect();
    ids.shuffle(&mut rng);
    let mut ids = ids.into_iter();
    let mut row = 0;
    let mut seqs = Vec::new();
    for &(query_len, context_len, pad) in &case.seqs {
        row += pad;
        let block_table: Vec<u32> = ids.by_ref().take(context_len.div_ceil(bs)).collect();
        seqs.push(SeqAttn {
            query_start: row,
            query_len,
            context_len,
            block_table,
        });
        row += query_len;
    }
    let num_tokens = row + usize::from(case.seed.is_multiple_of(3));
    let num_heads = case.num_kv_heads * case.group;
    let spec = KvCacheSpec::new(1, case.num_kv_heads, case.head_size, bs, case.dtype).unwrap();
    let geometry = spec.geometry(num_blocks);
    let mut values = vec![f32::NAN; geometry.plane_len() * 2];
    let plane = geometry.plane_len();
    for seq in &seqs {
        for pos in 0..seq.context_len {
            let slot = seq.block_table[pos / bs] as usize * bs + pos % bs;
            let slot_range = slot * geometry.slot_stride()..(slot + 1) * geometry.slot_stride();
            for i in slot_range {
                values[i] = rng.random_range(-1.0..1.0);
                values[plane + i] = rng.random_range(-1.0..1.0);
            }
        }
    }
    let mut layer = LayerKvCache::zeroed(geometry, case.dtype);
    fill(layer.storage_mut(), &values[..plane], &values[plane..]);
    let query = (0..num_tokens * num_heads * case.head_size)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    let slot_mapping = vec![-1; num_tokens];
    let meta = AttnMetadata::new(bs, slot_mapping, seqs).unwrap();
    let alibi_slopes = case
        .alibi
        .then(|| (0..num_heads).map(|h| 0.5f32.powi(h as i32 + 1)).collect());
    let params = AttnParams {
        scale: 1.0 / (case.head_size as f32).sqrt(),
        num_kv_heads: case.num_kv_heads,
        sliding_window: case.sliding_window,
        alibi_slopes,
    };
    Built {
        meta,
        params,
        layer,
        query,
        num_heads,
    }
}

fn fill(storage: &mut LayerStorage, key: &[f32], value: &[f32]) {
    fn typed<T: KvElement>(planes: &mut KvPlanes<T>, key: &[f32], value: &[f32]) {
        let (k, v) = planes.planes_mut();
        for (dst, src) in k.iter_mut().zip(key).chain(v.iter_mut().zip(value)) {
            *dst = T::from_f32(*src);
        }
    }
    with_planes!(storage, p => typed(p, key, value))
}

/// Runs the fast kernel on a NaN-poisoned output and the reference, returning both.
fn run_both(built: &Built, config: &CpuKernelConfig) -> (Vec<f32>, Vec<f32>) {
    fn typed<T: KvElement>(
        built: &Built,
        planes: &KvPlanes<T>,
        config: &CpuKernelConfig,
    ) -> (Vec<f32>, Vec<f32>) {
        let inputs = AttnInputs {
            query: &built.query,
            num_heads: built.num_heads,
            planes,
            geometry: built.layer.geometry(),
            meta: &built.meta,
            params: &built.params,
        };
        let mut fast = vec![f32::NAN; built.query.len()];
        paged_attention_with(&inputs, &mut fast, config).unwrap();
        let mut slow = vec![f32::NAN; built.query.len()];
        reference_attention(&inputs, &mut slow).unwrap();
        (fast, slow)
    }
    with_planes!(built.layer.storage(), p => typed(built, p, config))
}

fn assert_close(fast: &[f32], slow: &[f32], tolerance: f32) {
    assert_eq!(fast.len(), slow.len());
    for (i, (a, b)) in fast.iter().zip(slow).enumerate() {
        assert!(b.is_finite(), "reference produced {b} at {i}");
        assert!(
            (a - b).abs() <= tolerance * (1.0 + b.abs()),
            "element {i}: fast {a} vs reference {b}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn fast_kernel_matches_reference(case in case_strategy()) {
        let built = build(&case);
        let config = CpuKernelConfig { simd: case.simd, plan: case.plan };
        let (fast, slow) = run_both(&built, &config);
        // Both kernels read the same (already rounded) cache values; only f32 accumulation differs.
        assert_close(&fast, &slow, 2e-5);
    }
}

/// The backend path (tensors in, tensor out) in each dtype, with per-dtype output tolerances.
#[test]
fn backends_agree_through_tensors_in_every_dtype() {
    for (dtype, tolerance) in [
        (KvDtype::F32, 2e-5f32),
        (KvDtype::F16, 2e-3),
        (KvDtype::Bf16, 1.6e-2),
    ] {
        let case = Case {
            dtype,
            block_size: 16,
            head_size: 64,
            num_kv_heads: 2,
            group: 3,
            seqs: vec![(1, 50, 0), (20, 45, 0), (1, 17, 1)],
            sliding_window: None,
            alibi: false,
            spare_blocks: 3,
            simd: SimdLevel::detect(),
            plan: PlanConfig::default(),
            seed: 7,
        };
        let built = build(&case);
        let shape = (built.meta.num_tokens(), built.num_heads, case.head_size);
        let query = Tensor::from_slice(&built.query, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype.to_candle())
            .unwrap();
        let fast = Cpu::new()
            .attend(&query, &built.layer, &built.meta, &built.params)
            .unwrap();
        let slow = Reference
            .attend(&query, &built.layer, &built.meta, &built.params)
            .unwrap();
        assert_eq!(fast.dtype(), dtype.to_candle());
        assert_eq!(fast.dims(), [shape.0, shape.1, shape.2]);
        let fast: Vec<f32> = fast
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let slow: Vec<f32> = slow
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_close(&fast, &slow, tolerance);
    }
}

/// A long decode context split into many key partitions must merge exactly like one pass.
#[test]
fn key_partitions_merge_like_a_single_pass() {
    let case = Case {
        dtype: KvDtype::F32,
        block_size: 16,
        head_size: 128,
        num_kv_heads: 1,
        group: 8,
        seqs: vec![(1, 3000, 0)],
        sliding_window: None,
        alibi: true,
        spare_blocks: 0,
        simd: SimdLevel::detect(),
        plan: PlanConfig {
            items_per_thread: 16,
            min_partition_len: 16,
            query_tile_vectors: 32,
        },
        seed: 11,
    };
    let built = build(&case);
    let split = CpuKernelConfig {
        simd: case.simd,
        plan: case.plan,
    };
    let (fast, slow) = run_both(&built, &split);
    assert_close(&fast, &slow, 2e-5);
}

/// The demo model's prefill shape (12 heads of 64, 512 tokens, block 16) over a shuffled table.
#[test]
fn long_prefill_matches_reference() {
    let case = Case {
        dtype: KvDtype::Bf16,
        block_size: 16,
        head_size: 64,
        num_kv_heads: 2,
        group: 1,
        seqs: vec![(384, 512, 0)],
        sliding_window: Some(200),
        alibi: false,
        spare_blocks: 5,
        simd: SimdLevel::detect(),
        plan: PlanConfig::default(),
        seed: 3,
    };
    let built = build(&case);
    let (fast, slow) = run_both(&built, &CpuKernelConfig::default());
    assert_close(&fast, &slow, 2e-5);
}

#[test]
fn mismatched_inputs_are_errors_not_panics() {
    let case = Case {
        dtype: KvDtype::F16,
        block_size: 8,
        head_size: 4,
        num_kv_heads: 2,
        group: 2,
        seqs: vec![(2, 9, 0)],
        sliding_window: None,
        alibi: false,
        spare_blocks: 0,
        simd: SimdLevel::Portable,
        plan: PlanConfig::default(),
        seed: 1,
    };
    let built = build(&case);
    let query = Tensor::from_slice(&built.query, (2, 4, 4), &Device::Cpu).unwrap();
    let wrong_heads = AttnParams {
        num_kv_heads: 1,
        ..built.params.clone()
    };
    assert!(
        Cpu::new()
            .attend(&query, &built.layer, &built.meta, &wrong_heads)
            .is_err()
    );
    let wrong_shape = Tensor::zeros((3, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(
        Cpu::new()
            .attend(&wrong_shape, &built.layer, &built.meta, &built.params)
            .is_err()
    );
    let ints = Tensor::zeros((2, 4, 4), candle_core::DType::U32, &Device::Cpu).unwrap();
    assert!(
        Cpu::new()
            .attend(&ints, &built.layer, &built.meta, &built.params)
            .is_err()
    );
    let small = LayerKvCache::zeroed(
        CacheGeometry {
            num_blocks: 1,
            ..built.layer.geometry()
        },
        KvDtype::F16,
    );
    assert!(
        Reference
            .attend(&query, &small, &built.meta, &built.params)
            .is_err()
    );
}

/// write_kv through the backend followed by attend sees exactly the rows written.
#[test]
fn write_then_attend_round_trips_through_tensors() {
    let spec = KvCacheSpec::new(1, 1, 8, 4, KvDtype::F32).unwrap();
    let mut layer = LayerKvCache::zeroed(spec.geometry(3), KvDtype::F32);
    // One sequence of 5 tokens in blocks [2, 0]: slots 8, 9, 10, 11, 0.
    let seqs = vec![SeqAttn {
        query_start: 0,
        query_len: 5,
        context_len: 5,
        block_table: vec![2, 0],
    }];
    let meta = AttnMetadata::new(4, vec![8, 9, 10, 11, 0], seqs).unwrap();
    let key = Tensor::ones((5, 1, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    let value = Tensor::arange(0f32, 40.0, &Device::Cpu)
        .unwrap()
        .reshape((5, 1, 8))
        .unwrap();
    Cpu::new()
        .write_kv(&mut layer, &key, &value, &meta)
        .unwrap();
    // Equal keys → uniform attention: row i is the mean of value rows 0..=i.
    let out = Cpu::new()
        .attend(&key, &layer, &meta, &AttnParams::new(1.0, 1))
        .unwrap();
    let out: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
    for i in 0..5 {
        for d in 0..8 {
            let mean = (0..=i).map(|j| (j * 8 + d) as f32).sum::<f32>() / (i + 1) as f32;
            assert!((out[i * 8 + d] - mean).abs() < 1e-4, "row {i} dim {d}");
        }
    }
}

/// Long prefill chunks and GQA decode through the tiled paths: query tiles that do not divide
/// the query count (or the 16 vector lanes), contexts spanning many key chunks and blocks, odd
/// block sizes, head sizes that are not multiples of 16 or are 80/96/112, groups up to 8.
fn tiled_case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(vec![KvDtype::F32, KvDtype::F16, KvDtype::Bf16]),
        prop::sample::select(vec![1usize, 3, 5, 7, 16, 17]),
        prop::sample::select(vec![17usize, 64, 80, 96, 112]),
        (1usize..=2, prop::sample::select(vec![1usize, 3, 4, 8])),
        prop::collection::vec((1usize..200, 0usize..200, any::<bool>()), 1..3),
        prop::option::weighted(0.3, 1usize..90),
        any::<bool>(),
        prop::sample::select(SimdLevel::supported().collect::<Vec<_>>()),
        1usize..=80,
        any::<u64>(),
    )
        .prop_map(
            |(
                dtype,
                block_size,
                head_size,
                (num_kv_heads, group),
                seqs,
                sliding_window,
                alibi,
                simd,
                query_tile_vectors,
                seed,
            )| Case {
                dtype,
                block_size,
                head_size,
                num_kv_heads,
                group,
                seqs: seqs
                    .into_iter()
                    .map(|(context, q, decode)| {
                        (if decode { 1 } else { 1 + q % context }, context, 0)
                    })
                    .collect(),
                sliding_window,
                alibi,
                spare_blocks: 2,
                simd,
                plan: PlanConfig {
                    items_per_thread: 2,
                    min_partition_len: 48,
                    query_tile_vectors,
                },
                seed,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn tiled_paths_match_reference(case in tiled_case_strategy()) {
        let built = build(&case);
        let config = CpuKernelConfig { simd: case.simd, plan: case.plan };
        let (fast, slow) = run_both(&built, &config);
        assert_close(&fast, &slow, 2e-5);
    }
}
