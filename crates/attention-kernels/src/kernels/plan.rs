//! Splitting one attention call into parallel work items.
//!
//! A work item is (sequence, range of kv heads, range of query rows, range of key positions).
//! Prefill sequences are cut into query tiles per kv head (compute-bound: many items, no merge
//! needed). Decode sequences are memory-bound: each item covers all kv heads of its sequence, so
//! it reads whole (contiguous) slot rows of the NHD planes. They take one item each when there
//! are enough of them; otherwise they are split into key partitions (vLLM v2 style) whose partial
//! softmax states are merged afterwards.

use std::ops::Range;

use crate::metadata::AttnMetadata;

/// Tuning knobs of the CPU kernel. Every value must be at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanConfig {
    /// Work items wanted per rayon thread before splitting decode sequences further.
    pub items_per_thread: usize,
    /// Shortest key partition a decode sequence is split into, in tokens.
    pub min_partition_len: usize,
    /// Query vectors (query rows × heads of a GQA group) a prefill item processes together.
    pub query_tile_vectors: usize,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            items_per_thread: 4,
            min_partition_len: 256,
            query_tile_vectors: 32,
        }
    }
}

/// One unit of parallel work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkItem {
    /// Index into `meta.seqs()`.
    pub seq: usize,
    /// Kv heads handled together (all query heads of their groups).
    pub kv_heads: Range<usize>,
    /// Query rows of the sequence (0-based within the sequence).
    pub q_rows: Range<usize>,
    /// Key positions this item may read (further limited by causality and the window).
    pub keys: Range<usize>,
}

/// Items that together produce one output region; more than one only when keys were split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutputGroup {
    pub kv_heads: Range<usize>,
    pub q_rows: Range<usize>,
    /// Indices into [`Plan::items`].
    pub items: Range<usize>,
}

/// The work items of one call and how their partial results map to output rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub items: Vec<WorkItem>,
    pub groups: Vec<OutputGroup>,
    /// Per sequence, its range in [`Plan::groups`].
    pub groups_of_seq: Vec<Range<usize>>,
}

/// Plans `meta` for `threads` workers, `num_kv_heads` kv heads and `group_size` query heads each.
pub(crate) fn plan(
    meta: &AttnMetadata,
    num_kv_heads: usize,
    group_size: usize,
    threads: usize,
    config: &PlanConfig,
) -> Plan {
    let wanted_items = threads.max(1) * config.items_per_thread.max(1);
    let decode_seqs = meta.seqs().iter().filter(|s| s.query_len == 1).count();
    let partitions = if decode_seqs == 0 {
        1
    } else {
        wanted_items.div_ceil(decode_seqs)
    };
    let tile_rows = (config.query_tile_vectors / group_size).max(1);

    let mut out = Plan {
        items: Vec::new(),
        groups: Vec::new(),
        groups_of_seq: Vec::new(),
    };
    for (seq_index, seq) in meta.seqs().iter().enumerate() {
        let first_group = out.groups.len();
        if seq.query_len == 1 {
            let part_len = partition_len(seq.context_len, partitions, config.min_partition_len);
            let start = out.items.len();
            for keys in split_range(0..seq.context_len, part_len) {
                out.items.push(WorkItem {
                    seq: seq_index,
                    kv_heads: 0..num_kv_heads,
                    q_rows: 0..1,
                    keys,
                });
            }
            out.groups.push(OutputGroup {
                kv_heads: 0..num_kv_heads,
                q_rows: 0..1,
                items: start..out.items.len(),
            });
        } else {
            for kv_head in 0..num_kv_heads {
                for q_rows in split_range(0..seq.query_len, tile_rows) {
                    let start = out.items.len();
                    out.items.push(WorkItem {
                        seq: seq_index,
                        kv_heads: kv_head..kv_head + 1,
                        q_rows: q_rows.clone(),
                        keys: 0..seq.context_len,
                    });
                    out.groups.push(OutputGroup {
                        kv_heads: kv_head..kv_head + 1,
                        q_rows,
                        items: start..start + 1,
                    });
                }
            }
        }
        out.groups_of_seq.push(first_group..out.groups.len());
    }
    out
}

/// Partition length for splitting `context_len` keys into about `partitions` parts of at least
/// `min_len` tokens (a partition may be the whole context).
fn partition_len(context_len: usize, partitions: usize, min_len: usize) -> usize {
    context_len.div_ceil(partitions.max(1)).max(min_len.max(1))
}

/// Consecutive sub-ranges of `range` of length `len` (the last may be shorter). `len ≥ 1`.
pub(crate) fn split_range(range: Range<usize>, len: usize) -> impl Iterator<Item = Range<usize>> {
    range
        .clone()
        .step_by(len)
        .map(move |s| s..(s + len).min(range.end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::SeqAttn;

    fn meta(seqs: &[(usize, usize)]) -> AttnMetadata {
        let mut start = 0;
        let seqs: Vec<SeqAttn> = seqs
            .iter()
            .map(|&(query_len, context_len)| {
                let seq = SeqAttn {
                    query_start: start,
                    query_len,
                    context_len,
                    block_table: vec![0; context_len.div_ceil(16)],
                };
                start += query_len;
                seq
            })
            .collect();
        AttnMetadata::new(16, vec![-1; start], seqs).unwrap()
    }

    /// Every (sequence, query row, kv head, key position) is covered exactly once.
    fn assert_exact_cover(meta: &AttnMetadata, plan: &Plan, kv_heads: usize) {
        for (s, seq) in meta.seqs().iter().enumerate() {
            for r in 0..seq.query_len {
                for h in 0..kv_heads {
                    for k in 0..seq.context_len {
                        let hits = plan.groups[plan.groups_of_seq[s].clone()]
                            .iter()
                            .filter(|g| g.q_rows.contains(&r) && g.kv_heads.contains(&h))
                            .flat_map(|g| plan.items[g.items.clone()].iter())
                            .filter(|i| i.seq == s && i.keys.contains(&k))
                            .count();
                        assert_eq!(hits, 1, "seq {s} row {r} head {h} key {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn large_decode_batches_take_one_item_per_sequence() {
        let m = meta(&[(1, 100); 16]);
        let p = plan(&m, 4, 2, 2, &PlanConfig::default());
        assert_eq!(p.items.len(), 16);
        assert_exact_cover(&m, &p, 4);
    }

    #[test]
    fn small_decode_batches_split_keys_not_heads() {
        let m = meta(&[(1, 2000)]);
        let p = plan(&m, 1, 8, 2, &PlanConfig::default());
        assert_eq!(
            p.items.len(),
            8,
            "2000 keys in 8 partitions of at least 256"
        );
        assert_exact_cover(&m, &p, 1);
        let m = meta(&[(1, 300), (1, 40)]);
        let p = plan(&m, 2, 1, 2, &PlanConfig::default());
        assert!(p.items.iter().all(|i| i.kv_heads == (0..2)));
        assert_exact_cover(&m, &p, 2);
    }

    #[test]
    fn prefill_is_tiled_per_kv_head() {
        let m = meta(&[(70, 90), (1, 5), (3, 3)]);
        let p = plan(
            &m,
            3,
            4,
            2,
            &PlanConfig {
                query_tile_vectors: 32,
                ..PlanConfig::default()
            },
        );
        let prefill_items = p.items.iter().filter(|i| i.seq == 0).count();
        assert_eq!(prefill_items, 3 * 70usize.div_ceil(8));
        assert_exact_cover(&m, &p, 3);
    }
}
