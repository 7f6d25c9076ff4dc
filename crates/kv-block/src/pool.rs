//! A pool of physical blocks: reference counts, the free queue (also the LRU eviction order of
//! cached blocks) and the pool's prefix-cache index.

use crate::error::KvError;
use crate::free_queue::FreeQueue;
use crate::prefix_cache::PrefixCacheIndex;
use crate::{BlockId, TokenId};

/// `N` physical blocks with reference counts.
///
/// Invariants: a block is in the free queue iff its reference count is 0, so
/// `num_free() + num_used() == num_blocks()`. A free block may still be *cached* (its KV is
/// reusable by a prefix hit) until it is reused; the free queue's head is reused first, so cached
/// blocks are evicted in least-recently-freed order. Misuse (double free, sharing a free block,
/// ids outside the pool) returns an error and changes nothing.
#[derive(Debug, Clone)]
pub struct BlockPool {
    ref_counts: Vec<u32>,
    free: FreeQueue,
    cache: PrefixCacheIndex,
}

impl BlockPool {
    /// A pool of `num_blocks` free blocks, reused in ascending id order at first.
    ///
    /// Fails if `num_blocks` does not fit a [`BlockId`] (ids `0..u32::MAX`).
    pub fn new(num_blocks: usize) -> Result<Self, KvError> {
        if num_blocks >= BlockId::MAX as usize {
            return Err(KvError::InvalidConfig(
                "a pool holds fewer than u32::MAX blocks",
            ));
        }
        Ok(Self {
            ref_counts: vec![0; num_blocks],
            free: FreeQueue::full(num_blocks),
            cache: PrefixCacheIndex::new(num_blocks),
        })
    }

    /// Total number of blocks.
    pub fn num_blocks(&self) -> usize {
        self.ref_counts.len()
    }

    /// Blocks with reference count 0 (cached or not).
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Blocks with a reference count above 0.
    pub fn num_used(&self) -> usize {
        self.num_blocks() - self.num_free()
    }

    /// Number of blocks registered in the prefix cache (in use or free).
    pub fn num_cached(&self) -> usize {
        self.cache.len()
    }

    /// Reference count of `block`.
    pub fn ref_count(&self, block: BlockId) -> Result<u32, KvError> {
        self.check(block)?;
        Ok(self.ref_counts[block as usize])
    }

    /// Whether `block` is in the free queue.
    pub fn is_free(&self, block: BlockId) -> Result<bool, KvError> {
        self.check(block)?;
        Ok(self.free.contains(block))
    }

    /// Token ids stored with `block` if it is registered in the prefix cache.
    pub fn cached_tokens(&self, block: BlockId) -> Result<Option<&[TokenId]>, KvError> {
        self.check(block)?;
        Ok(self.cache.cached_tokens(block))
    }

    /// The free blocks in the order they will be reused (and their cache entries evicted).
    pub fn eviction_order(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.free.iter()
    }

    /// Takes the head of the free queue, evicts its cache entry and gives it reference count 1.
    pub fn allocate(&mut self) -> Result<BlockId, KvError> {
        let block = self
            .free
            .pop_front()
            .ok_or(KvError::OutOfBlocks { needed: 1, free: 0 })?;
        self.cache.evict(block);
        self.ref_counts[block as usize] = 1;
        Ok(block)
    }

    /// Adds one reference to a block somebody already holds.
    pub fn share(&mut self, block: BlockId) -> Result<(), KvError> {
        if self.ref_count(block)? == 0 {
            return Err(KvError::UseAfterFree(block));
        }
        self.ref_counts[block as usize] += 1;
        Ok(())
    }

    /// Drops one reference. At zero the block joins the free queue: at the tail if it is cached
    /// (kept as long as possible), at the head otherwise (reused first).
    pub fn release(&mut self, block: BlockId) -> Result<(), KvError> {
        if self.ref_count(block)? == 0 {
            return Err(KvError::DoubleFree(block));
        }
        let count = &mut self.ref_counts[block as usize];
        *count -= 1;
        if *count == 0 {
            if self.cache.is_cached(block) {
                self.free.push_back(block);
            } else {
                self.free.push_front(block);
            }
        }
        Ok(())
    }

    /// Frees every block and empties the prefix cache.
    pub fn reset(&mut self) {
        *self = Self {
            ref_counts: vec![0; self.num_blocks()],
            free: FreeQueue::full(self.num_blocks()),
            cache: PrefixCacheIndex::new(self.num_blocks()),
        };
    }

    /// Adds one reference to a cached block found by a prefix hit, taking it out of the free
    /// queue if nobody held it. The caller guarantees `block` is inside the pool and cached.
    pub(crate) fn revive(&mut self, block: BlockId) {
        if self.ref_counts[block as usize] == 0 {
            self.free.remove(block);
        }
        self.ref_counts[block as usize] += 1;
    }

    /// The prefix-cache index of this pool.
    pub(crate) fn cache(&self) -> &PrefixCacheIndex {
        &self.cache
    }

    /// The prefix-cache index of this pool, for registration.
    pub(crate) fn cache_mut(&mut self) -> &mut PrefixCacheIndex {
        &mut self.cache
    }

    fn check(&self, block: BlockId) -> Result<(), KvError> {
        if (block as usize) < self.num_blocks() {
            Ok(())
        } else {
            Err(KvError::InvalidBlock {
                block,
                num_blocks: self.num_blocks(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // vllm.md §7.1 case 1: every allocation takes one free block; the next one is out of memory.
    #[test]
    fn allocate_until_out_of_blocks() {
        let mut pool = BlockPool::new(4).unwrap();
        for expected_free in (0..4).rev() {
            let block = pool.allocate().unwrap();
            assert_eq!(pool.num_free(), expected_free);
            assert!(!pool.is_free(block).unwrap());
            assert!(!pool.eviction_order().any(|b| b == block));
            assert_eq!(pool.ref_count(block).unwrap(), 1);
        }
        assert_eq!(
            pool.allocate(),
            Err(KvError::OutOfBlocks { needed: 1, free: 0 })
        );
    }

    // vllm.md §7.1 case 2: each free restores one block; a second free is a double free.
    #[test]
    fn free_restores_blocks_and_double_free_is_an_error() {
        let mut pool = BlockPool::new(4).unwrap();
        let blocks: Vec<_> = (0..4).map(|_| pool.allocate().unwrap()).collect();
        for (i, &block) in blocks.iter().enumerate() {
            pool.release(block).unwrap();
            assert_eq!(pool.num_free(), i + 1);
            assert!(pool.is_free(block).unwrap());
            assert_eq!(pool.release(block), Err(KvError::DoubleFree(block)));
            assert_eq!(pool.num_free(), i + 1);
        }
    }

    #[test]
    fn shared_block_is_freed_by_its_last_holder_and_use_after_free_is_an_error() {
        let mut pool = BlockPool::new(2).unwrap();
        let block = pool.allocate().unwrap();
        pool.share(block).unwrap();
        assert_eq!(pool.ref_count(block).unwrap(), 2);
        pool.release(block).unwrap();
        assert!(!pool.is_free(block).unwrap());
        pool.release(block).unwrap();
        assert!(pool.is_free(block).unwrap());
        assert_eq!(pool.share(block), Err(KvError::UseAfterFree(block)));
        assert_eq!(pool.ref_count(block).unwrap(), 0);
    }

    #[test]
    fn ids_outside_the_pool_are_errors() {
        let mut pool = BlockPool::new(2).unwrap();
        let invalid = KvError::InvalidBlock {
            block: 2,
            num_blocks: 2,
        };
        assert_eq!(pool.release(2), Err(invalid.clone()));
        assert_eq!(pool.share(2), Err(invalid.clone()));
        assert_eq!(pool.ref_count(2), Err(invalid));
        assert!(BlockPool::new(u32::MAX as usize).is_err());
    }

    #[test]
    fn uncached_blocks_are_reused_first_and_reset_frees_everything() {
        let mut pool = BlockPool::new(3).unwrap();
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        pool.release(a).unwrap();
        pool.release(b).unwrap();
        assert_eq!(pool.eviction_order().collect::<Vec<_>>(), vec![b, a, 2]);
        pool.allocate().unwrap();
        pool.reset();
        assert_eq!(pool.num_free(), 3);
        assert_eq!(pool.eviction_order().collect::<Vec<_>>(), vec![0, 1, 2]);
    }
}
