//! Per-sequence block tables: logical block `i` of a sequence lives in physical block
//! `blocks()[i]`, and token position `p` lives in slot `blocks()[p / B] * B + p % B`.

use crate::BlockId;
use crate::error::KvError;

/// Number of blocks of `block_size` slots needed to hold `num_tokens` tokens.
pub fn blocks_for_tokens(num_tokens: usize, block_size: usize) -> usize {
    num_tokens.div_ceil(block_size)
}

/// The logical → physical mapping of one sequence.
///
/// Invariants: `num_tokens() <= capacity()`; with the paged manager the table holds exactly
/// `blocks_for_tokens(num_tokens, block_size)` blocks (a new block only when all previous ones
/// are full), while a static reservation may hold more. Block ids refer to the pool the sequence
/// currently lives in (device, or CPU while swapped out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockTable {
    blocks: Vec<BlockId>,
    num_tokens: usize,
    block_size: usize,
}

impl BlockTable {
    /// An empty table for blocks of `block_size` slots.
    pub(crate) fn new(block_size: usize) -> Self {
        Self {
            blocks: Vec::new(),
            num_tokens: 0,
            block_size,
        }
    }

    /// The physical blocks, logical block 0 first.
    pub fn blocks(&self) -> &[BlockId] {
        &self.blocks
    }

    /// Tokens the sequence holds (the slots in use, from position 0).
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }

    /// Slots per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Slots available without a new block.
    pub fn capacity(&self) -> usize {
        self.blocks.len() * self.block_size
    }

    /// Filled slots of the last block holding tokens (`1..=block_size`), 0 for an empty table.
    pub fn last_block_filled(&self) -> usize {
        match self.num_tokens {
            0 => 0,
            n => (n - 1) % self.block_size + 1,
        }
    }

    /// The KV cache slot of token position `position` (`block * block_size + offset`).
    pub fn slot(&self, position: usize) -> Result<usize, KvError> {
        if position >= self.num_tokens {
            return Err(KvError::PositionOutOfRange {
                position,
                len: self.num_tokens,
            });
        }
        let block = self.blocks[position / self.block_size] as usize;
        Ok(block * self.block_size + position % self.block_size)
    }

    /// The slots of every token position in `positions`, in order.
    pub fn slots(&self, positions: std::ops::Range<usize>) -> Result<Vec<usize>, KvError> {
        positions.map(|p| self.slot(p)).collect()
    }

    pub(crate) fn push_block(&mut self, block: BlockId) {
        self.blocks.push(block);
    }

    /// Replaces the last block (copy-on-write); returns the old one.
    pub(crate) fn replace_last(&mut self, block: BlockId) -> Option<BlockId> {
        self.blocks
            .last_mut()
            .map(|last| std::mem::replace(last, block))
    }

    /// Replaces every block id through `map` (swap).
    pub(crate) fn remap(&mut self, mut map: impl FnMut(BlockId) -> BlockId) {
        self.blocks.iter_mut().for_each(|b| *b = map(*b));
    }

    pub(crate) fn set_num_tokens(&mut self, num_tokens: usize) {
        debug_assert!(num_tokens <= self.capacity());
        self.num_tokens = num_tokens;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(blocks: &[BlockId], num_tokens: usize, block_size: usize) -> BlockTable {
        let mut t = BlockTable::new(block_size);
        blocks.iter().for_each(|&b| t.push_block(b));
        t.set_num_tokens(num_tokens);
        t
    }

    // The paper's Fig. 6: a 7-token prompt with B = 4 in physical blocks 7 and 1.
    #[test]
    fn slot_mapping_follows_the_block_table() {
        let t = table(&[7, 1], 7, 4);
        assert_eq!(t.slots(0..7).unwrap(), vec![28, 29, 30, 31, 4, 5, 6]);
        assert_eq!(t.last_block_filled(), 3);
        assert_eq!(
            t.slot(7),
            Err(KvError::PositionOutOfRange {
                position: 7,
                len: 7
            })
        );
        assert_eq!(t.capacity(), 8);
    }

    #[test]
    fn last_block_filled_counts_a_full_block_as_full() {
        assert_eq!(table(&[], 0, 4).last_block_filled(), 0);
        assert_eq!(table(&[3], 4, 4).last_block_filled(), 4);
        assert_eq!(table(&[3, 5], 5, 4).last_block_filled(), 1);
        assert_eq!(blocks_for_tokens(0, 4), 0);
        assert_eq!(blocks_for_tokens(4, 4), 1);
        assert_eq!(blocks_for_tokens(5, 4), 2);
    }
}
