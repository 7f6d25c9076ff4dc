//! Sizing of the paged KV cache: the per-model [`KvCacheSpec`] and the per-layer [`CacheGeometry`].

use crate::element::KvDtype;
use crate::error::{KernelError, Result};

/// What one physical block of the KV cache holds, for every layer of a model.
///
/// Invariant (enforced by [`KvCacheSpec::new`]): every count is at least 1 and one block of all
/// layers fits in `usize` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KvCacheSpec {
    num_layers: usize,
    num_kv_heads: usize,
    head_size: usize,
    block_size: usize,
    dtype: KvDtype,
}

impl KvCacheSpec {
    /// Validates and builds a spec. Errors when a count is zero or the block size in bytes overflows.
    pub fn new(
        num_layers: usize,
        num_kv_heads: usize,
        head_size: usize,
        block_size: usize,
        dtype: KvDtype,
    ) -> Result<Self> {
        for (name, value) in [
            ("num_layers", num_layers),
            ("num_kv_heads", num_kv_heads),
            ("head_size", head_size),
            ("block_size", block_size),
        ] {
            if value == 0 {
                return Err(KernelError::InvalidShape(format!(
                    "{name} must be at least 1"
                )));
            }
        }
        let spec = Self {
            num_layers,
            num_kv_heads,
            head_size,
            block_size,
            dtype,
        };
        [
            num_layers,
            num_kv_heads,
            head_size,
            block_size,
            2,
            dtype.size_in_bytes(),
        ]
        .into_iter()
        .try_fold(1usize, usize::checked_mul)
        .ok_or_else(|| KernelError::InvalidShape("block size in bytes overflows".into()))?;
        Ok(spec)
    }

    /// Number of transformer layers (each has its own K and V planes).
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }
    /// Number of key/value heads per layer.
    pub fn num_kv_heads(&self) -> usize {
        self.num_kv_heads
    }
    /// Elements per head vector.
    pub fn head_size(&self) -> usize {
        self.head_size
    }
    /// Token slots per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }
    /// Element type of the cache.
    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// Elements of one block in one plane (K or V) of one layer: `block_size × num_kv_heads × head_size`.
    pub fn elements_per_block_plane(&self) -> usize {
        self.block_size * self.num_kv_heads * self.head_size
    }

    /// Bytes of one physical block across all layers, K and V:
    /// `2 × num_layers × block_size × num_kv_heads × head_size × dtype_bytes`.
    pub fn bytes_per_block(&self) -> usize {
        2 * self.num_layers * self.elements_per_block_plane() * self.dtype.size_in_bytes()
    }

    /// How many whole blocks fit in `budget_bytes` (rounded down; may be 0).
    pub fn blocks_for_budget(&self, budget_bytes: usize) -> usize {
        budget_bytes / self.bytes_per_block()
    }

    /// The geometry of one layer of a pool with `num_blocks` blocks.
    pub fn geometry(&self, num_blocks: usize) -> CacheGeometry {
        CacheGeometry {
            num_blocks,
            block_size: self.block_size,
            num_kv_heads: self.num_kv_heads,
            head_size: self.head_size,
        }
    }
}

/// The shape `[num_blocks, block_size, num_kv_heads, head_size]` of one K or V plane of one layer.
///
/// Element `(block, slot_in_block, head, d)` lives at
/// `((block × block_size + slot_in_block) × num_kv_heads + head) × head_size + d`, so a token's
/// slot `block × block_size + slot_in_block` addresses a contiguous `num_kv_heads × head_size` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheGeometry {
    /// Physical blocks in the plane (may be 0 for an empty pool).
    pub num_blocks: usize,
    /// Token slots per block (≥ 1).
    pub block_size: usize,
    /// Key/value heads (≥ 1).
    pub num_kv_heads: usize,
    /// Elements per head vector (≥ 1).
    pub head_size: usize,
}

impl CacheGeometry {
    /// Elements of one token slot: `num_kv_heads × head_size`.
    pub fn slot_stride(&self) -> usize {
        self.num_kv_heads * self.head_size
    }
    /// Elements of one block: `block_size × slot_stride`.
    pub fn block_stride(&self) -> usize {
        self.block_size * self.slot_stride()
    }
    /// Total slots: `num_blocks × block_size`.
    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }
    /// Total elements of one plane.
    pub fn plane_len(&self) -> usize {
        self.num_blocks * self.block_stride()
    }
    /// Offset of the head vector `(slot, head)`; callers guarantee `slot < num_slots`, `head < num_kv_heads`.
    pub fn row_offset(&self, slot: usize, head: usize) -> usize {
        (slot * self.num_kv_heads + head) * self.head_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_block_follows_the_formula() {
        let spec = KvCacheSpec::new(32, 8, 128, 16, KvDtype::Bf16).unwrap();
        assert_eq!(spec.bytes_per_block(), 2 * 32 * 16 * 8 * 128 * 2);
        assert_eq!(spec.blocks_for_budget(spec.bytes_per_block() * 10 + 1), 10);
        assert_eq!(spec.blocks_for_budget(spec.bytes_per_block() - 1), 0);
    }

    #[test]
    fn zero_counts_are_rejected() {
        assert!(KvCacheSpec::new(0, 8, 128, 16, KvDtype::F32).is_err());
        assert!(KvCacheSpec::new(1, 0, 128, 16, KvDtype::F32).is_err());
        assert!(KvCacheSpec::new(1, 8, 0, 16, KvDtype::F32).is_err());
        assert!(KvCacheSpec::new(1, 8, 128, 0, KvDtype::F32).is_err());
        assert!(KvCacheSpec::new(usize::MAX / 2, 8, 128, 16, KvDtype::F32).is_err());
    }

    #[test]
    fn geometry_offsets_are_row_major_nhd() {
        let geom = KvCacheSpec::new(1, 3, 5, 4, KvDtype::F32)
            .unwrap()
            .geometry(7);
        assert_eq!(geom.slot_stride(), 15);
        assert_eq!(geom.block_stride(), 60);
        assert_eq!(geom.plane_len(), 420);
        assert_eq!(geom.row_offset(9, 2), (9 * 3 + 2) * 5);
    }
}
