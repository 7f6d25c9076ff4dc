//! The oracle: gather K/V through the block table and run a dense softmax in f64.
//! Slow and obviously correct; every test of the fast kernel compares against it.

use crate::element::KvElement;
use crate::error::Result;
use crate::kernels::inputs::{AttnInputs, visible_keys};

/// Computes attention for every sequence of `inputs.meta` into `out` (`[num_tokens, num_heads,
/// head_size]`) in f64, one query head and one key at a time. Rows covered by no sequence get zeros.
pub fn reference_attention<T: KvElement>(
    inputs: &AttnInputs<'_, T>,
    out: &mut [f32],
) -> Result<()> {
    inputs.validate(out.len())?;
    let geom = inputs.geometry;
    let d = geom.head_size;
    let group = inputs.group_size();
    let params = inputs.params;
    out.fill(0.0);
    for seq in inputs.meta.seqs() {
        for r in 0..seq.query_len {
            let pos = seq.first_query_position() + r;
            let row = (seq.query_start + r) * inputs.row_len();
            for h in 0..inputs.num_heads {
                let q = &inputs.query[row + h * d..row + (h + 1) * d];
                let kv_head = h / group;
                let slope = params
                    .alibi_slopes
                    .as_ref()
                    .map_or(0.0, |s| f64::from(s[h]));
                let keys: Vec<(usize, f64)> = visible_keys(pos, params.sliding_window)
                    .map(|k| {
                        let offset = geom.row_offset(seq.slot(k, geom.block_size), kv_head);
                        let key = &inputs.planes.key()[offset..offset + d];
                        let dot: f64 = q
                            .iter()
                            .zip(key)
                            .map(|(a, b)| f64::from(*a) * f64::from(b.to_f32()))
                            .sum();
                        (
                            offset,
                            f64::from(params.scale) * dot + slope * (k as f64 - pos as f64),
                        )
                    })
                    .collect();
                let max = keys
                    .iter()
                    .map(|(_, s)| *s)
                    .fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = keys.iter().map(|(_, s)| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                let dst = &mut out[row + h * d..row + (h + 1) * d];
                for (i, o) in dst.iter_mut().enumerate() {
                    let value: f64 = keys
                        .iter()
                        .zip(&weights)
                        .map(|((offset, _), w)| {
                            w * f64::from(inputs.planes.value()[offset + i].to_f32())
                        })
                        .sum();
                    *o = (value / total) as f32;
                }
            }
        }
    }
    Ok(())
}
