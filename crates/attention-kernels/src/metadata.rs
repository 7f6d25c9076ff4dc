//! Host-side description of one forward step's packed batch ([`AttnMetadata`]) and the attention
//! hyper-parameters of a layer ([`AttnParams`]).

use crate::error::{KernelError, Result};
use crate::spec::CacheGeometry;

/// One scheduled sequence of a packed batch.
///
/// Its query tokens occupy rows `query_start .. query_start + query_len` of the packed batch and
/// are the *last* `query_len` positions of its `context_len` tokens (cached + new), so query row
/// `i` sits at position `context_len - query_len + i`. Decode is `query_len == 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqAttn {
    /// First row of this sequence in the packed batch.
    pub query_start: usize,
    /// Number of query rows (≥ 1).
    pub query_len: usize,
    /// Number of key positions, i.e. cached plus new tokens (≥ `query_len`).
    pub context_len: usize,
    /// Logical → physical block ids; at least `ceil(context_len / block_size)` entries.
    pub block_table: Vec<u32>,
}

impl SeqAttn {
    /// Position of the first query row: `context_len - query_len`.
    pub fn first_query_position(&self) -> usize {
        self.context_len - self.query_len
    }

    /// Physical slot of key position `position` with blocks of `block_size` slots; panics unless
    /// the block table covers the position.
    pub fn slot(&self, position: usize, block_size: usize) -> usize {
        self.block_table[position / block_size] as usize * block_size + position % block_size
    }
}

/// The step-wide attention inputs shared by every layer: block size, slot mapping and sequences.
///
/// Invariants (enforced by [`AttnMetadata::new`]): `block_size ≥ 1`; every slot is `-1` (padding)
/// or non-negative; every sequence has `1 ≤ query_len ≤ context_len`, enough block-table entries,
/// and its query rows lie inside `0..num_tokens` (`num_tokens = slot_mapping.len()`); sequences
/// appear in increasing `query_start` order without overlapping rows. Rows covered by no sequence
/// are padding: attention writes zeros there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttnMetadata {
    block_size: usize,
    slot_mapping: Vec<i64>,
    seqs: Vec<SeqAttn>,
    max_block_id: Option<u32>,
}

impl AttnMetadata {
    /// Validates and builds the metadata (see the type's invariants).
    pub fn new(block_size: usize, slot_mapping: Vec<i64>, seqs: Vec<SeqAttn>) -> Result<Self> {
        let bad = |msg: String| Err(KernelError::InvalidMetadata(msg));
        if block_size == 0 {
            return bad("block_size must be at least 1".into());
        }
        if let Some((row, slot)) = slot_mapping.iter().enumerate().find(|(_, s)| **s < -1) {
            return bad(format!(
                "slot {slot} of row {row} is negative but not the padding value -1"
            ));
        }
        let num_tokens = slot_mapping.len();
        let mut next_free_row = 0usize;
        for (i, seq) in seqs.iter().enumerate() {
            if seq.query_len == 0 {
                return bad(format!("sequence {i} has no query rows"));
            }
            if seq.query_len > seq.context_len {
                return bad(format!(
                    "sequence {i}: query_len {} exceeds context_len {}",
                    seq.query_len, seq.context_len
                ));
            }
            let needed_blocks = seq.context_len.div_ceil(block_size);
            if seq.block_table.len() < needed_blocks {
                return bad(format!(
                    "sequence {i}: context_len {} needs {needed_blocks} blocks, table has {}",
                    seq.context_len,
                    seq.block_table.len()
                ));
            }
            if seq.query_start < next_free_row {
                return bad(format!(
                    "sequence {i}: query rows start at {} but row {} is already taken",
                    seq.query_start,
                    next_free_row - 1
                ));
            }
            let end = seq
                .query_start
                .checked_add(seq.query_len)
                .filter(|end| *end <= num_tokens);
            let Some(end) = end else {
                return bad(format!(
                    "sequence {i}: query rows {}+{} exceed the {num_tokens} packed rows",
                    seq.query_start, seq.query_len
                ));
            };
            next_free_row = end;
        }
        let max_block_id = seqs
            .iter()
            .flat_map(|s| {
                s.block_table[..s.context_len.div_ceil(block_size)]
                    .iter()
                    .copied()
            })
            .max();
        Ok(Self {
            block_size,
            slot_mapping,
            seqs,
            max_block_id,
        })
    }

    /// Token slots per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }
    /// Target slot of every packed row (`-1` = do not write).
    pub fn slot_mapping(&self) -> &[i64] {
        &self.slot_mapping
    }
    /// The scheduled sequences, in packed-row order.
    pub fn seqs(&self) -> &[SeqAttn] {
        &self.seqs
    }
    /// Rows of the packed batch (`slot_mapping.len()`).
    pub fn num_tokens(&self) -> usize {
        self.slot_mapping.len()
    }

    /// Checks that every referenced block and slot exists in a layer of shape `geometry`.
    pub fn check_against(&self, geometry: &CacheGeometry) -> Result<()> {
        if geometry.block_size != self.block_size {
            return Err(KernelError::InvalidMetadata(format!(
                "metadata block_size {} differs from the cache's {}",
                self.block_size, geometry.block_size
            )));
        }
        if let Some(block) = self
            .max_block_id
            .filter(|b| *b as usize >= geometry.num_blocks)
        {
            return Err(KernelError::OutOfRange {
                what: "block",
                index: u64::from(block),
                limit: geometry.num_blocks as u64,
            });
        }
        let limit = geometry.num_slots() as u64;
        match self.slot_mapping.iter().copied().max() {
            Some(slot) if slot >= 0 && slot as u64 >= limit => Err(KernelError::OutOfRange {
                what: "slot",
                index: slot as u64,
                limit,
            }),
            _ => Ok(()),
        }
    }
}

/// Attention hyper-parameters of one layer.
///
/// Score of query head `h` at position `p` against key position `k ≤ p`:
/// `scale · q·k + slope[h] · (k − p)` (ALiBi term only when slopes are given). With a sliding
/// window `w`, only keys with `p − w < k ≤ p` are visible.
#[derive(Debug, Clone, PartialEq)]
pub struct AttnParams {
    /// Multiplier of `q·k` (usually `1/sqrt(head_size)`); must be finite.
    pub scale: f32,
    /// Key/value heads; must divide the number of query heads and match the cache.
    pub num_kv_heads: usize,
    /// Number of most recent positions each query sees (≥ 1), or `None` for full causal attention.
    pub sliding_window: Option<usize>,
    /// One ALiBi slope per query head, or `None`.
    pub alibi_slopes: Option<Vec<f32>>,
}

impl AttnParams {
    /// Plain causal attention with the given scale.
    pub fn new(scale: f32, num_kv_heads: usize) -> Self {
        Self {
            scale,
            num_kv_heads,
            sliding_window: None,
            alibi_slopes: None,
        }
    }

    /// Checks the parameters against `num_heads` query heads and a cache of `geometry`.
    pub fn check(&self, num_heads: usize, geometry: &CacheGeometry) -> Result<()> {
        let bad = |msg: String| Err(KernelError::InvalidParams(msg));
        if !self.scale.is_finite() {
            return bad(format!("scale {} is not finite", self.scale));
        }
        if self.num_kv_heads != geometry.num_kv_heads {
            return bad(format!(
                "num_kv_heads {} differs from the cache's {}",
                self.num_kv_heads, geometry.num_kv_heads
            ));
        }
        if num_heads == 0 || !num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "{num_heads} query heads are not a multiple of {} kv heads",
                self.num_kv_heads
            ));
        }
        if self.sliding_window == Some(0) {
            return bad("sliding_window must be at least 1".into());
        }
        match &self.alibi_slopes {
            Some(slopes) if slopes.len() != num_heads => bad(format!(
                "{} ALiBi slopes for {num_heads} heads",
                slopes.len()
            )),
            Some(slopes) if slopes.iter().any(|s| !s.is_finite()) => {
                bad("ALiBi slopes must be finite".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(query_start: usize, query_len: usize, context_len: usize, blocks: u32) -> SeqAttn {
        SeqAttn {
            query_start,
            query_len,
            context_len,
            block_table: (0..blocks).collect(),
        }
    }

    fn error_of(result: Result<AttnMetadata>) -> String {
        result.expect_err("metadata should be rejected").to_string()
    }

    #[test]
    fn valid_mixed_batch_is_accepted() {
        let meta = AttnMetadata::new(4, vec![0, 1, 2, 9], vec![seq(0, 3, 3, 1), seq(3, 1, 10, 3)])
            .unwrap();
        assert_eq!(meta.num_tokens(), 4);
        assert_eq!(meta.seqs()[1].first_query_position(), 9);
        let geom = CacheGeometry {
            num_blocks: 3,
            block_size: 4,
            num_kv_heads: 1,
            head_size: 2,
        };
        meta.check_against(&geom).unwrap();
        let small = CacheGeometry {
            num_blocks: 2,
            ..geom
        };
        assert!(meta.check_against(&small).is_err());
        let other_block = CacheGeometry {
            block_size: 8,
            ..geom
        };
        assert!(meta.check_against(&other_block).is_err());
    }

    #[test]
    fn inconsistent_metadata_is_rejected_with_a_reason() {
        assert!(error_of(AttnMetadata::new(0, vec![], vec![])).contains("block_size"));
        assert!(error_of(AttnMetadata::new(4, vec![-2], vec![])).contains("padding"));
        assert!(
            error_of(AttnMetadata::new(4, vec![0], vec![seq(0, 0, 1, 1)])).contains("no query")
        );
        assert!(
            error_of(AttnMetadata::new(4, vec![0, 1], vec![seq(0, 2, 1, 1)])).contains("exceeds")
        );
        assert!(error_of(AttnMetadata::new(4, vec![0], vec![seq(0, 1, 5, 1)])).contains("needs 2"));
        assert!(error_of(AttnMetadata::new(4, vec![0], vec![seq(0, 2, 2, 1)])).contains("packed"));
        let overlapping = vec![seq(0, 2, 2, 1), seq(1, 1, 1, 1)];
        assert!(error_of(AttnMetadata::new(4, vec![0; 3], overlapping)).contains("taken"));
    }

    #[test]
    fn slots_beyond_the_cache_are_rejected() {
        let meta = AttnMetadata::new(4, vec![-1, 8], vec![]).unwrap();
        let geom = CacheGeometry {
            num_blocks: 2,
            block_size: 4,
            num_kv_heads: 1,
            head_size: 2,
        };
        assert!(matches!(
            meta.check_against(&geom),
            Err(KernelError::OutOfRange {
                what: "slot",
                index: 8,
                limit: 8
            })
        ));
    }

    #[test]
    fn params_are_checked_against_heads_and_cache() {
        let geom = CacheGeometry {
            num_blocks: 2,
            block_size: 4,
            num_kv_heads: 2,
            head_size: 2,
        };
        AttnParams::new(0.5, 2).check(4, &geom).unwrap();
        assert!(AttnParams::new(f32::NAN, 2).check(4, &geom).is_err());
        assert!(AttnParams::new(0.5, 1).check(4, &geom).is_err());
        assert!(AttnParams::new(0.5, 2).check(3, &geom).is_err());
        let window = AttnParams {
            sliding_window: Some(0),
            ..AttnParams::new(0.5, 2)
        };
        assert!(window.check(4, &geom).is_err());
        let alibi = AttnParams {
            alibi_slopes: Some(vec![0.1; 3]),
            ..AttnParams::new(0.5, 2)
        };
        assert!(alibi.check(4, &geom).is_err());
    }
}
