//! Exact tests of reshape_and_cache, copy_blocks and swap_blocks against index arithmetic on the
//! `[num_blocks, block_size, num_kv_heads, head_size]` layout.

use attention_kernels::{
    KernelError, KvCache, KvCachePools, KvCacheSpec, KvDtype, KvPlanes, LayerStorage, copy_blocks,
    reshape_and_cache, swap_blocks, write_layer_kv,
};
use half::bf16;
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Value that encodes (layer, plane, flat index) so any misplaced copy is detected exactly.
fn marker(layer: usize, plane: usize, index: usize) -> f32 {
    (layer * 100_000 + plane * 50_000 + index) as f32
}

/// Fills every layer of an f32 pool with markers, offset by `salt` to tell pools apart.
fn marked_pool(spec: KvCacheSpec, num_blocks: usize, salt: usize) -> KvCache {
    let mut cache = KvCache::new(spec, num_blocks).unwrap();
    for (l, layer) in cache.layers_mut().iter_mut().enumerate() {
        let LayerStorage::F32(planes) = layer.storage_mut() else {
            panic!("f32 pool expected")
        };
        let (k, v) = planes.planes_mut();
        for (p, plane) in [k, v].into_iter().enumerate() {
            for (i, x) in plane.iter_mut().enumerate() {
                *x = marker(l + salt, p, i);
            }
        }
    }
    cache
}

fn planes_of(cache: &KvCache, layer: usize) -> &KvPlanes<f32> {
    let LayerStorage::F32(planes) = cache.layers()[layer].storage() else {
        panic!("f32 pool expected")
    };
    planes
}

/// Block `b` of `after` must equal block `source(b)` of `before` in every layer and plane.
fn assert_blocks(after: &KvCache, before: &KvCache, source: impl Fn(usize) -> usize) {
    let stride = after.spec().elements_per_block_plane();
    for l in 0..after.spec().num_layers() {
        let (a, b) = (planes_of(after, l), planes_of(before, l));
        for (pa, pb) in [(a.key(), b.key()), (a.value(), b.value())] {
            for block in 0..after.num_blocks() {
                let src = source(block);
                assert_eq!(
                    pa[block * stride..(block + 1) * stride],
                    pb[src * stride..(src + 1) * stride],
                    "layer {l} block {block}"
                );
            }
        }
    }
}

#[test]
fn reshape_and_cache_writes_each_row_to_its_slot_only() {
    let spec = KvCacheSpec::new(1, 2, 3, 4, KvDtype::Bf16).unwrap();
    let geometry = spec.geometry(3);
    let mut planes = KvPlanes::<bf16>::zeroed(geometry.plane_len());
    let slots = [5i64, -1, 11, 0];
    let row = geometry.slot_stride();
    let key: Vec<f32> = (0..slots.len() * row).map(|i| i as f32 + 1.0).collect();
    let value: Vec<f32> = key.iter().map(|x| -x).collect();
    reshape_and_cache(&key, &value, &mut planes, &geometry, &slots).unwrap();
    for slot in 0..geometry.num_slots() {
        let token = slots.iter().position(|s| *s == slot as i64);
        for h in 0..2 {
            for d in 0..3 {
                // [block, offset, head, d] with block = slot / 4, offset = slot % 4.
                let index = (((slot / 4) * 4 + slot % 4) * 2 + h) * 3 + d;
                let expected = token.map_or(0.0, |t| key[t * row + h * 3 + d]);
                assert_eq!(
                    planes.key()[index].to_f32(),
                    expected,
                    "slot {slot} head {h} dim {d}"
                );
                assert_eq!(planes.value()[index].to_f32(), -expected);
            }
        }
    }
}

#[test]
fn reshape_and_cache_rejects_bad_slots_and_lengths_without_writing() {
    let spec = KvCacheSpec::new(1, 1, 2, 2, KvDtype::F32).unwrap();
    let geometry = spec.geometry(2);
    let mut planes = KvPlanes::<f32>::zeroed(geometry.plane_len());
    let rows = vec![1.0; 4];
    let out_of_range = reshape_and_cache(&rows, &rows, &mut planes, &geometry, &[0, 4]);
    assert!(matches!(
        out_of_range,
        Err(KernelError::OutOfRange {
            what: "slot",
            index: 4,
            limit: 4
        })
    ));
    assert!(reshape_and_cache(&rows, &rows, &mut planes, &geometry, &[0, -2]).is_err());
    assert!(reshape_and_cache(&rows, &rows, &mut planes, &geometry, &[0]).is_err());
    assert!(
        planes.key().iter().all(|x| *x == 0.0),
        "nothing written on error"
    );
}

#[test]
fn write_layer_kv_converts_to_the_cache_dtype() {
    let spec = KvCacheSpec::new(2, 1, 2, 2, KvDtype::F16).unwrap();
    let mut cache = KvCache::new(spec, 2).unwrap();
    write_layer_kv(cache.layer_mut(1).unwrap(), &[0.5, 1.5], &[2.5, 3.5], &[3]).unwrap();
    let LayerStorage::F16(planes) = cache.layer(1).unwrap().storage() else {
        panic!("f16 expected")
    };
    assert_eq!(
        planes.key()[6..8]
            .iter()
            .map(|x| x.to_f32())
            .collect::<Vec<_>>(),
        [0.5, 1.5]
    );
    assert_eq!(
        planes.value()[6..8]
            .iter()
            .map(|x| x.to_f32())
            .collect::<Vec<_>>(),
        [2.5, 3.5]
    );
    assert!(cache.layer(2).is_err());
}

#[test]
fn layer_planes_are_exposed_as_candle_tensors() {
    let spec = KvCacheSpec::new(1, 2, 3, 4, KvDtype::F32).unwrap();
    let cache = marked_pool(spec, 5, 0);
    let key = cache.layers()[0].key_tensor().unwrap();
    assert_eq!(key.dims(), [5, 4, 2, 3]);
    let index = [3usize, 1, 1, 2];
    let flat = ((3 * 4 + 1) * 2 + 1) * 3 + 2;
    let got: f32 = key
        .get(index[0])
        .unwrap()
        .get(index[1])
        .unwrap()
        .get(index[2])
        .unwrap()
        .get(index[3])
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(got, marker(0, 0, flat));
    let value = cache.layers()[0].value_tensor().unwrap();
    assert_eq!(
        value.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        planes_of(&cache, 0).value()
    );
}

#[test]
fn copy_and_swap_reject_ambiguous_or_out_of_range_mappings() {
    let spec = KvCacheSpec::new(2, 1, 4, 2, KvDtype::F32).unwrap();
    let mut cache = marked_pool(spec, 4, 0);
    let before = cache.clone();
    assert!(matches!(
        copy_blocks(&mut cache, &[(0, 4)]),
        Err(KernelError::OutOfRange { .. })
    ));
    assert!(matches!(
        copy_blocks(&mut cache, &[(0, 1), (2, 1)]),
        Err(KernelError::InvalidMapping(_))
    ));
    assert!(matches!(
        copy_blocks(&mut cache, &[(0, 1), (1, 2)]),
        Err(KernelError::InvalidMapping(_))
    ));
    assert_eq!(cache, before, "nothing copied on error");
    let other_dtype =
        KvCache::new(KvCacheSpec::new(2, 1, 4, 2, KvDtype::Bf16).unwrap(), 4).unwrap();
    assert!(matches!(
        swap_blocks(&other_dtype, &mut cache, &[(0, 0)]),
        Err(KernelError::DtypeMismatch { .. })
    ));
    let other_shape = KvCache::new(KvCacheSpec::new(2, 1, 4, 4, KvDtype::F32).unwrap(), 4).unwrap();
    assert!(swap_blocks(&other_shape, &mut cache, &[(0, 0)]).is_err());
    let swap = KvCache::new(spec, 2).unwrap();
    assert!(matches!(
        swap_blocks(&swap, &mut cache, &[(2, 0)]),
        Err(KernelError::OutOfRange { .. })
    ));
}

#[test]
fn pools_are_sized_from_budgets() {
    let spec = KvCacheSpec::new(2, 2, 8, 4, KvDtype::F16).unwrap();
    let per_block = 2 * 2 * 4 * 2 * 8 * 2;
    let pools = KvCachePools::from_budgets(spec, per_block * 10 + 7, per_block * 3).unwrap();
    assert_eq!(
        (pools.device.num_blocks(), pools.cpu_swap.num_blocks()),
        (10, 3)
    );
    assert_eq!(pools.device.layers().len(), 2);
}

/// Random `(src, dst)` pairs with distinct destinations, from a seed.
fn mapping_strategy(
    src_blocks: usize,
    dst_blocks: usize,
) -> impl Strategy<Value = Vec<(u32, u32)>> {
    any::<u64>().prop_map(move |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut dsts: Vec<u32> = (0..dst_blocks as u32).collect();
        dsts.shuffle(&mut rng);
        let count = rng.random_range(0..=src_blocks.min(dst_blocks));
        dsts[..count]
            .iter()
            .map(|d| (rng.random_range(0..src_blocks as u32), *d))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// copy_blocks copies exactly the destination blocks, from the pre-call source contents.
    #[test]
    fn copy_blocks_matches_index_arithmetic(
        (layers, blocks, mapping) in (1usize..4, 2usize..12).prop_flat_map(|(l, b)| (Just(l), Just(b), mapping_strategy(b, b)))
    ) {
        let sources: std::collections::HashSet<u32> = mapping.iter().map(|p| p.0).collect();
        let mapping: Vec<(u32, u32)> = mapping.into_iter().filter(|(s, d)| s != d && !sources.contains(d)).collect();
        let spec = KvCacheSpec::new(layers, 2, 3, 4, KvDtype::F32).unwrap();
        let mut cache = marked_pool(spec, blocks, 0);
        let before = cache.clone();
        copy_blocks(&mut cache, &mapping).unwrap();
        assert_blocks(&cache, &before, |b| mapping.iter().find(|p| p.1 as usize == b).map_or(b, |p| p.0 as usize));
    }

    /// swap_blocks overwrites exactly the mapped destination blocks with the mapped source blocks.
    #[test]
    fn swap_blocks_matches_index_arithmetic(
        (layers, src_n, dst_n, mapping) in (1usize..4, 1usize..10, 1usize..10)
            .prop_flat_map(|(l, s, d)| (Just(l), Just(s), Just(d), mapping_strategy(s, d)))
    ) {
        let spec = KvCacheSpec::new(layers, 1, 5, 3, KvDtype::F32).unwrap();
        let src = marked_pool(spec, src_n, 0);
        let mut dst = marked_pool(spec, dst_n, 7);
        let before = dst.clone();
        swap_blocks(&src, &mut dst, &mapping).unwrap();
        let stride = spec.elements_per_block_plane();
        for l in 0..layers {
            let (a, s, b) = (planes_of(&dst, l), planes_of(&src, l), planes_of(&before, l));
            for (after, from, old) in [(a.key(), s.key(), b.key()), (a.value(), s.value(), b.value())] {
                for block in 0..dst_n {
                    let expected = match mapping.iter().find(|p| p.1 as usize == block) {
                        Some((sb, _)) => &from[*sb as usize * stride..(*sb as usize + 1) * stride],
                        None => &old[block * stride..(block + 1) * stride],
                    };
                    prop_assert_eq!(&after[block * stride..(block + 1) * stride], expected);
                }
            }
        }
    }
}

#[test]
fn replaced_planes_of_the_wrong_size_are_errors_not_panics() {
    let spec = KvCacheSpec::new(2, 1, 4, 2, KvDtype::F32).unwrap();
    let mut cache = marked_pool(spec, 4, 0);
    cache.check_consistent().unwrap();
    *cache.layers_mut()[1].storage_mut() = LayerStorage::F32(KvPlanes::zeroed(3));
    assert!(matches!(
        copy_blocks(&mut cache, &[(0, 1)]),
        Err(KernelError::InvalidShape(_))
    ));
    let healthy = marked_pool(spec, 4, 0);
    assert!(swap_blocks(&healthy, &mut cache, &[(0, 1)]).is_err());
    *cache.layers_mut()[1].storage_mut() = LayerStorage::Bf16(KvPlanes::zeroed(32));
    assert!(matches!(
        cache.check_consistent(),
        Err(KernelError::DtypeMismatch { .. })
    ));
}
