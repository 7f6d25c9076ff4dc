//! The block-manager trait: the seam between the scheduler and every allocation strategy.
//!
//! # Protocol (what the scheduler does, and in which order)
//!
//! 1. **Admission.** `can_allocate(req)` answers [`AllocStatus::Ok`] (admit now),
//!    [`AllocStatus::Later`] (wait for blocks) or [`AllocStatus::Never`] (the request can never
//!    fit; reject it). `allocate(req)` gives every sequence of a fresh group a block table over
//!    the same prompt blocks and returns how many leading tokens already have KV thanks to the
//!    prefix cache ([`Allocation::num_computed_tokens`], never the whole prompt). A sequence
//!    re-admitted after recompute preemption is allocated the same way with its prompt *and*
//!    generated tokens; in a multi-sequence group each sequence is re-admitted on its own.
//!    With chunked prefill the whole prompt is allocated at admission and computed in chunks.
//! 2. **Computed tokens.** After each forward pass the scheduler calls
//!    `mark_computed(seq, n)`: the first `n` tokens of `seq` now have KV. Only then can full
//!    blocks enter the prefix cache, so the cache never serves KV that was not written.
//! 3. **Decode.** `can_append_slots(seqs, k)` says whether every listed sequence can take `k`
//!    more tokens; `append_slots(seq, tokens)` adds them and may return a copy-on-write
//!    [`BlockCopy`] (only the last block is ever copied) that the kernels must perform before
//!    the forward pass.
//! 4. **Sampling.** `fork(parent, child)` makes `child` share all of `parent`'s blocks (the paged
//!    manager allocates nothing; a static reservation returns the copies it needs).
//! 5. **Preemption by swap.** `can_swap_out` / `swap_out` and `can_swap_in` / `swap_in` move
//!    whole groups between the device and the CPU pool, sharing preserved, and return the block
//!    copies for `swap_blocks`. Preemption by recompute is `free` plus a later `allocate`.
//! 6. **End.** `free(seq)` on every path (finish, abort, error). `reset` drops everything.
//!
//! Every method reports misuse (unknown sequence, wrong location, double free, ...) as a
//! [`KvError`] and leaves the manager unchanged when it fails.

use crate::accounting::MemoryUsage;
use crate::error::KvError;
use crate::table::BlockTable;
use crate::{BlockId, SeqId, TokenId};

/// Answer of an admission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocStatus {
    /// Enough free blocks now (above the watermark).
    Ok,
    /// Not now; it fits the pool once other sequences release blocks.
    Later,
    /// It can never fit the pool (minus the watermark); the caller should reject it.
    Never,
}

/// A request to allocate one sequence group: every sequence gets the same tokens.
#[derive(Debug, Clone, Copy)]
pub struct AllocationRequest<'a> {
    /// The sequences of the group; at least one, all distinct and new.
    pub seq_ids: &'a [SeqId],
    /// Tokens whose slots are allocated now (prompt, or prompt + generated after recompute
    /// preemption); at least one.
    pub tokens: &'a [TokenId],
    /// Opaque keys mixed into the prefix-cache identity (for example a per-tenant salt):
    /// requests with different keys never share cached KV.
    pub extra_keys: &'a [u8],
    /// Tokens the sequence is expected to generate: only static reservations use it
    /// (Max ignores it, Pow2 rounds it up to a power of two, Oracle reserves it exactly).
    pub max_new_tokens: usize,
}

impl<'a> AllocationRequest<'a> {
    /// A request for `seq_ids` over `tokens`, without extra keys or output-length hint.
    pub fn new(seq_ids: &'a [SeqId], tokens: &'a [TokenId]) -> Self {
        Self {
            seq_ids,
            tokens,
            extra_keys: &[],
            max_new_tokens: 0,
        }
    }

    /// The same request with prefix-cache extra keys.
    pub fn with_extra_keys(self, extra_keys: &'a [u8]) -> Self {
        Self { extra_keys, ..self }
    }

    /// The same request with an output-length hint for static reservations.
    pub fn with_max_new_tokens(self, max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            ..self
        }
    }
}

/// Result of a successful allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// Leading tokens whose KV is already cached: a multiple of the block size, always less
    /// than the number of tokens (the last token is recomputed to produce logits).
    pub num_computed_tokens: usize,
}

/// One block's bytes to copy from `src` to `dst` (copy-on-write or fork inside the device
/// pool; for swaps `src` is in the source pool and `dst` in the destination pool).
/// Invariant: for copies inside one pool, `src != dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockCopy {
    /// Block to read.
    pub src: BlockId,
    /// Block to write.
    pub dst: BlockId,
}

/// Where a sequence's blocks live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// On the device: it can run.
    Device,
    /// Swapped out to the CPU pool.
    Cpu,
}

/// Block counts of both pools. Invariant: `*_free <= *_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Blocks in the device pool.
    pub device_total: usize,
    /// Free device blocks (cached but unreferenced blocks count as free).
    pub device_free: usize,
    /// Blocks in the CPU swap pool.
    pub cpu_total: usize,
    /// Free CPU blocks.
    pub cpu_free: usize,
}

impl Usage {
    /// Device blocks referenced by some sequence.
    pub fn device_used(&self) -> usize {
        self.device_total - self.device_free
    }

    /// CPU blocks referenced by some sequence.
    pub fn cpu_used(&self) -> usize {
        self.cpu_total - self.cpu_free
    }

    /// Fraction of device blocks in use, in `0..=1` (0 for an empty pool).
    pub fn device_usage(&self) -> f64 {
        fraction(self.device_used(), self.device_total)
    }

    /// Fraction of CPU blocks in use, in `0..=1` (0 for an empty pool).
    pub fn cpu_usage(&self) -> f64 {
        fraction(self.cpu_used(), self.cpu_total)
    }
}

fn fraction(part: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 / total as f64
    }
}

/// Sizes shared by every block manager.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockManagerConfig {
    /// Token slots per block (default 16); at least 1.
    pub block_size: usize,
    /// Blocks in the device pool; at least 1.
    pub num_device_blocks: usize,
    /// Blocks in the CPU swap pool (0 disables swapping).
    pub num_cpu_blocks: usize,
    /// Fraction of device blocks that admission keeps free, in `0..1` (default 0.01).
    pub watermark: f64,
}

impl BlockManagerConfig {
    /// Default block size in tokens.
    pub const DEFAULT_BLOCK_SIZE: usize = 16;
    /// Default admission watermark.
    pub const DEFAULT_WATERMARK: f64 = 0.01;

    /// A configuration with the default block size and watermark.
    pub fn new(num_device_blocks: usize, num_cpu_blocks: usize) -> Self {
        Self {
            block_size: Self::DEFAULT_BLOCK_SIZE,
            num_device_blocks,
            num_cpu_blocks,
            watermark: Self::DEFAULT_WATERMARK,
        }
    }

    /// The same configuration with another block size.
    pub fn with_block_size(self, block_size: usize) -> Self {
        Self { block_size, ..self }
    }

    /// The same configuration with another watermark.
    pub fn with_watermark(self, watermark: f64) -> Self {
        Self { watermark, ..self }
    }

    /// Device blocks admission keeps free: `floor(watermark * num_device_blocks)`.
    pub fn watermark_blocks(&self) -> usize {
        (self.watermark * self.num_device_blocks as f64) as usize
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), KvError> {
        if self.block_size == 0 {
            return Err(KvError::InvalidConfig("block_size must be at least 1"));
        }
        if self.num_device_blocks == 0 {
            return Err(KvError::InvalidConfig(
                "num_device_blocks must be at least 1",
            ));
        }
        if !(0.0..1.0).contains(&self.watermark) {
            return Err(KvError::InvalidConfig("watermark must be in [0, 1)"));
        }
        Ok(())
    }

    /// Admission answer for a request that needs `total_blocks` device blocks in all, of which
    /// `from_free` must come out of the `free` blocks now.
    pub(crate) fn admission(
        &self,
        total_blocks: usize,
        from_free: usize,
        free: usize,
    ) -> AllocStatus {
        let watermark = self.watermark_blocks();
        if total_blocks + watermark > self.num_device_blocks {
            AllocStatus::Never
        } else if free >= from_free + watermark {
            AllocStatus::Ok
        } else {
            AllocStatus::Later
        }
    }
}

/// Checks that `seqs` names no sequence twice.
pub(crate) fn ensure_distinct(seqs: &[SeqId]) -> Result<(), KvError> {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    match sorted.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(KvError::DuplicateSequence(w[0])),
        None => Ok(()),
    }
}

/// The operations the scheduler needs from a block manager; object safe, so a scheduler can
/// hold a `Box<dyn BlockManager>` over the paged manager or a static-reservation baseline.
/// See the module documentation for the calling protocol.
pub trait BlockManager {
    /// Token slots per block.
    fn block_size(&self) -> usize;

    /// Whether `request` can be allocated now, later, or never. Infallible: a malformed
    /// request (no sequence or no token) answers [`AllocStatus::Never`].
    fn can_allocate(&self, request: &AllocationRequest<'_>) -> AllocStatus;

    /// Allocates the group's block tables: all sequences share the same blocks. Fails with
    /// [`KvError::OutOfBlocks`] if the blocks are not free (the watermark is not applied here).
    fn allocate(&mut self, request: &AllocationRequest<'_>) -> Result<Allocation, KvError>;

    /// Whether each of `seqs` (all on the device) can take `num_new_tokens` more tokens, with
    /// the worst case of one copy-on-write each. The watermark is not applied.
    fn can_append_slots(&self, seqs: &[SeqId], num_new_tokens: usize) -> Result<bool, KvError>;

    /// Appends `new_tokens` to `seq` (on the device). Returns the copy-on-write pair if the
    /// last block was shared and partly filled: the sequence now owns `dst`, and `src` lost
    /// one reference.
    fn append_slots(
        &mut self,
        seq: SeqId,
        new_tokens: &[TokenId],
    ) -> Result<Option<BlockCopy>, KvError>;

    /// Records that the first `num_computed_tokens` tokens of `seq` have KV (cumulative, never
    /// above the sequence's length; a smaller value than before changes nothing). Full blocks
    /// inside that range become prefix-cache entries.
    fn mark_computed(&mut self, seq: SeqId, num_computed_tokens: usize) -> Result<(), KvError>;

    /// Creates `child` (new id) as a copy of `parent` (on the device). Returns the block copies
    /// the kernels must perform first (none for the paged manager, which shares blocks).
    fn fork(&mut self, parent: SeqId, child: SeqId) -> Result<Vec<BlockCopy>, KvError>;

    /// Whether `seqs` (on the device) fit the CPU pool.
    fn can_swap_out(&self, seqs: &[SeqId]) -> Result<bool, KvError>;

    /// Moves `seqs` (distinct, on the device) to the CPU pool. Blocks shared among them are
    /// copied once and stay shared. Returns device → CPU copies.
    fn swap_out(&mut self, seqs: &[SeqId]) -> Result<Vec<BlockCopy>, KvError>;

    /// Whether `seqs` (swapped out) fit the device again, keeping one spare block per sequence
    /// for its next token and the watermark.
    fn can_swap_in(&self, seqs: &[SeqId]) -> Result<AllocStatus, KvError>;

    /// Moves `seqs` (distinct, swapped out) back to the device, sharing preserved. Returns
    /// CPU → device copies.
    fn swap_in(&mut self, seqs: &[SeqId]) -> Result<Vec<BlockCopy>, KvError>;

    /// Releases every block of `seq` and forgets it; unknown sequences are an error.
    fn free(&mut self, seq: SeqId) -> Result<(), KvError>;

    /// Forgets every sequence and frees every block (the prefix cache too).
    fn reset(&mut self);

    /// The block table of `seq` (ids in the pool given by [`BlockManager::location`]).
    fn block_table(&self, seq: SeqId) -> Result<&BlockTable, KvError>;

    /// Where `seq` lives.
    fn location(&self, seq: SeqId) -> Result<Location, KvError>;

    /// Free and used blocks of both pools.
    fn usage(&self) -> Usage;

    /// Slot accounting over the device blocks of all sequences.
    fn memory_usage(&self) -> MemoryUsage;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_applies_the_watermark() {
        let config = BlockManagerConfig::new(4, 0)
            .with_block_size(4)
            .with_watermark(0.25);
        assert_eq!(config.watermark_blocks(), 1);
        assert_eq!(config.admission(1, 1, 2), AllocStatus::Ok);
        assert_eq!(config.admission(1, 1, 1), AllocStatus::Later);
        assert_eq!(config.admission(4, 1, 4), AllocStatus::Never);
        assert_eq!(config.admission(3, 3, 4), AllocStatus::Ok);
    }

    #[test]
    fn config_validation_rejects_out_of_range_values() {
        assert!(BlockManagerConfig::new(4, 0).validate().is_ok());
        assert!(BlockManagerConfig::new(0, 0).validate().is_err());
        assert!(
            BlockManagerConfig::new(4, 0)
                .with_block_size(0)
                .validate()
                .is_err()
        );
        assert!(
            BlockManagerConfig::new(4, 0)
                .with_watermark(1.0)
                .validate()
                .is_err()
        );
        assert!(
            BlockManagerConfig::new(4, 0)
                .with_watermark(-0.1)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn usage_fractions_and_duplicates() {
        let usage = Usage {
            device_total: 4,
            device_free: 1,
            cpu_total: 0,
            cpu_free: 0,
        };
        assert_eq!(usage.device_used(), 3);
        assert_eq!(usage.device_usage(), 0.75);
        assert_eq!(usage.cpu_usage(), 0.0);
        assert_eq!(
            ensure_distinct(&[3, 1, 3]),
            Err(KvError::DuplicateSequence(3))
        );
        assert_eq!(ensure_distinct(&[3, 1, 2]), Ok(()));
    }
}
