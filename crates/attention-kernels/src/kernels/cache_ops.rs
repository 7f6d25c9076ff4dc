//! The cache-maintenance kernels: `reshape_and_cache` (scatter new K/V rows into their slots),
//! `copy_blocks` (copy-on-write copies of one step, all layers) and `swap_blocks` (move blocks
//! between the device pool and the CPU swap pool, all layers).

use std::collections::HashSet;

use rayon::prelude::*;

use crate::cache::{KvCache, KvPlanes, LayerKvCache, LayerStorage};
use crate::element::KvElement;
use crate::error::{KernelError, Result};
use crate::spec::CacheGeometry;
use crate::with_planes;

/// Writes row `i` of `key`/`value` (each `[num_tokens, num_kv_heads, head_size]`, f32, packed) to
/// slot `slot_mapping[i]` of the planes, converting to the cache dtype; slot `-1` skips the row.
///
/// Errors (before writing anything) when the row counts disagree or a slot is out of range. When
/// two rows name the same slot, the later row wins.
pub fn reshape_and_cache<T: KvElement>(
    key: &[f32],
    value: &[f32],
    planes: &mut KvPlanes<T>,
    geometry: &CacheGeometry,
    slot_mapping: &[i64],
) -> Result<()> {
    let row = geometry.slot_stride();
    let expected = slot_mapping.len() * row;
    if key.len() != expected || value.len() != expected {
        return Err(KernelError::InvalidShape(format!(
            "key/value hold {}/{} elements, {} rows of {row} need {expected}",
            key.len(),
            value.len(),
            slot_mapping.len()
        )));
    }
    let limit = geometry.num_slots() as u64;
    if let Some(slot) = slot_mapping
        .iter()
        .copied()
        .find(|s| *s < -1 || (*s >= 0 && *s as u64 >= limit))
    {
        return Err(KernelError::OutOfRange {
            what: "slot",
            index: slot as u64,
            limit,
        });
    }
    let (key_plane, value_plane) = planes.planes_mut();
    if key_plane.len() != geometry.plane_len() {
        return Err(KernelError::InvalidShape(
            "planes do not match the geometry".into(),
        ));
    }
    for (token, slot) in slot_mapping.iter().enumerate() {
        let Ok(slot) = usize::try_from(*slot) else {
            continue;
        };
        let src = token * row..(token + 1) * row;
        let dst = slot * row..(slot + 1) * row;
        for (d, s) in key_plane[dst.clone()].iter_mut().zip(&key[src.clone()]) {
            *d = T::from_f32(*s);
        }
        for (d, s) in value_plane[dst].iter_mut().zip(&value[src]) {
            *d = T::from_f32(*s);
        }
    }
    Ok(())
}

/// [`reshape_and_cache`] on a layer cache of any dtype.
pub fn write_layer_kv(
    layer: &mut LayerKvCache,
    key: &[f32],
    value: &[f32],
    slot_mapping: &[i64],
) -> Result<()> {
    let geometry = layer.geometry();
    with_planes!(layer.storage_mut(), planes => {
        reshape_and_cache(key, value, planes, &geometry, slot_mapping)
    })
}

/// Copies block `src` to block `dst` for every `(src, dst)` pair, in the K and V planes of every
/// layer, in one call (rayon-parallel over layers).
///
/// Errors (before copying anything) when a block id is out of range, a destination appears twice,
/// or a destination is also a source (the result would depend on the copy order).
pub fn copy_blocks(cache: &mut KvCache, pairs: &[(u32, u32)]) -> Result<()> {
    cache.check_consistent()?;
    let num_blocks = cache.num_blocks();
    check_mapping(pairs, num_blocks, num_blocks)?;
    let sources: HashSet<u32> = pairs.iter().map(|(s, _)| *s).collect();
    if let Some((_, dst)) = pairs.iter().find(|(_, d)| sources.contains(d)) {
        return Err(KernelError::InvalidMapping(format!(
            "block {dst} is both a source and a destination"
        )));
    }
    cache.layers_mut().par_iter_mut().for_each(|layer| {
        let stride = layer.geometry().block_stride();
        with_planes!(layer.storage_mut(), planes => {
            let (key, value) = planes.planes_mut();
            for plane in [key, value] {
                for (src, dst) in pairs {
                    let start = *src as usize * stride;
                    plane.copy_within(start..start + stride, *dst as usize * stride);
                }
            }
        })
    });
    Ok(())
}

/// Copies block `src` of pool `src` to block `dst` of pool `dst` for every `(src, dst)` pair, in
/// every layer, in one call (rayon-parallel over layers). Use it in both directions: device →
/// CPU swap (swap out) and CPU swap → device (swap in).
///
/// Errors (before copying anything) when the pools' specs differ, a block id is out of range, or
/// a destination appears twice.
pub fn swap_blocks(src: &KvCache, dst: &mut KvCache, mapping: &[(u32, u32)]) -> Result<()> {
    if src.spec() != dst.spec() {
        if src.spec().dtype() != dst.spec().dtype() {
            return Err(KernelError::DtypeMismatch {
                expected: src.spec().dtype(),
                found: dst.spec().dtype(),
            });
        }
        return Err(KernelError::InvalidShape(format!(
            "swap between pools of different specs: {:?} vs {:?}",
            src.spec(),
            dst.spec()
        )));
    }
    src.check_consistent()?;
    dst.check_consistent()?;
    check_mapping(mapping, src.num_blocks(), dst.num_blocks())?;
    src.layers()
        .par_iter()
        .zip(dst.layers_mut().par_iter_mut())
        .try_for_each(|(from, to)| {
            let stride = from.geometry().block_stride();
            match (from.storage(), to.storage_mut()) {
                (LayerStorage::F32(a), LayerStorage::F32(b)) => copy_between(a, b, mapping, stride),
                (LayerStorage::F16(a), LayerStorage::F16(b)) => copy_between(a, b, mapping, stride),
                (LayerStorage::Bf16(a), LayerStorage::Bf16(b)) => {
                    copy_between(a, b, mapping, stride)
                }
                (a, b) => {
                    return Err(KernelError::DtypeMismatch {
                        expected: a.dtype(),
                        found: b.dtype(),
                    });
                }
            }
            Ok(())
        })
}

fn copy_between<T: KvElement>(
    from: &KvPlanes<T>,
    to: &mut KvPlanes<T>,
    mapping: &[(u32, u32)],
    stride: usize,
) {
    let (to_key, to_value) = to.planes_mut();
    for (src_plane, dst_plane) in [(from.key(), to_key), (from.value(), to_value)] {
        for (s, d) in mapping {
            let (s, d) = (*s as usize * stride, *d as usize * stride);
            dst_plane[d..d + stride].copy_from_slice(&src_plane[s..s + stride]);
        }
    }
}

/// Checks ids against the pool sizes and that no destination is written twice.
fn check_mapping(pairs: &[(u32, u32)], src_blocks: usize, dst_blocks: usize) -> Result<()> {
    let mut destinations = HashSet::with_capacity(pairs.len());
    for (src, dst) in pairs {
        for (id, limit) in [(*src, src_blocks), (*dst, dst_blocks)] {
            if id as usize >= limit {
                return Err(KernelError::OutOfRange {
                    what: "block",
                    index: u64::from(id),
                    limit: limit as u64,
                });
            }
        }
        if !destinations.insert(*dst) {
            return Err(KernelError::InvalidMapping(format!(
                "block {dst} is a destination twice"
            )));
        }
    }
    Ok(())
}
