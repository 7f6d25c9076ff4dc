//! Memory accounting for the paper's waste figure: of the slots allocated, how many hold tokens.

use std::collections::HashMap;

use crate::BlockId;
use crate::table::BlockTable;

/// Slot counts over the distinct blocks referenced by a set of block tables.
///
/// Invariant: `allocated_slots == token_slots + internal_waste_slots + reserved_waste_slots`.
/// A block shared by several tables counts once, with the most tokens any of them keeps in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Slots of every distinct referenced block.
    pub allocated_slots: usize,
    /// Slots that hold a token.
    pub token_slots: usize,
    /// Empty slots inside blocks that hold at least one token (internal fragmentation).
    pub internal_waste_slots: usize,
    /// Slots of blocks that hold no token yet (reserved ahead of use).
    pub reserved_waste_slots: usize,
}

impl MemoryUsage {
    /// Allocated slots that hold no token.
    pub fn waste_slots(&self) -> usize {
        self.internal_waste_slots + self.reserved_waste_slots
    }

    /// Fraction of allocated slots that hold tokens, in `0..=1` (1 when nothing is allocated).
    pub fn utilization(&self) -> f64 {
        if self.allocated_slots == 0 {
            1.0
        } else {
            self.token_slots as f64 / self.allocated_slots as f64
        }
    }
}

/// Accounts the distinct blocks of `tables`, which must all live in the same pool.
pub fn memory_usage<'a>(tables: impl IntoIterator<Item = &'a BlockTable>) -> MemoryUsage {
    let mut filled: HashMap<BlockId, usize> = HashMap::new();
    let mut block_size = 0;
    for table in tables {
        block_size = table.block_size();
        for (index, &block) in table.blocks().iter().enumerate() {
            let tokens = table
                .num_tokens()
                .saturating_sub(index * block_size)
                .min(block_size);
            let entry = filled.entry(block).or_default();
            *entry = (*entry).max(tokens);
        }
    }
    let mut usage = MemoryUsage {
        allocated_slots: filled.len() * block_size,
        ..MemoryUsage::default()
    };
    for tokens in filled.into_values() {
        usage.token_slots += tokens;
        if tokens == 0 {
            usage.reserved_waste_slots += block_size;
        } else {
            usage.internal_waste_slots += block_size - tokens;
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(blocks: &[BlockId], num_tokens: usize) -> BlockTable {
        let mut t = BlockTable::new(4);
        blocks.iter().for_each(|&b| t.push_block(b));
        t.set_num_tokens(num_tokens);
        t
    }

    #[test]
    fn counts_tokens_internal_and_reserved_waste() {
        // 6 tokens in 4 reserved blocks: 4 + 2 tokens, 2 internal, 8 reserved.
        let usage = memory_usage([&table(&[0, 1, 2, 3], 6)]);
        assert_eq!(
            usage,
            MemoryUsage {
                allocated_slots: 16,
                token_slots: 6,
                internal_waste_slots: 2,
                reserved_waste_slots: 8
            }
        );
        assert_eq!(usage.waste_slots(), 10);
        assert!((usage.utilization() - 6.0 / 16.0).abs() < 1e-12);
    }

    #[test]
    fn shared_blocks_count_once_with_their_fullest_use() {
        // Parent and forked child share block 0 (full) and differ in their last blocks.
        let usage = memory_usage([&table(&[0, 1], 5), &table(&[0, 2], 7)]);
        assert_eq!(usage.allocated_slots, 12);
        assert_eq!(usage.token_slots, 4 + 1 + 3);
        assert_eq!(usage.internal_waste_slots, 3 + 1);
        assert_eq!(memory_usage([]).utilization(), 1.0);
    }
}
