//! A first-fit allocator of contiguous block ranges, for static reservations: it shows the
//! external fragmentation that paged allocation avoids.

use std::collections::BTreeMap;

use crate::BlockId;

/// Free extents of a pool of `num_blocks` blocks.
///
/// Invariants: extents are disjoint, non-empty and never adjacent (freed neighbours merge);
/// `num_free` is the sum of their lengths.
#[derive(Debug, Clone)]
pub(crate) struct ContiguousArena {
    /// start → length of each free extent.
    free: BTreeMap<BlockId, usize>,
    num_blocks: usize,
    num_free: usize,
}

impl ContiguousArena {
    /// An arena whose blocks are all free.
    pub(crate) fn new(num_blocks: usize) -> Self {
        let mut free = BTreeMap::new();
        if num_blocks > 0 {
            free.insert(0, num_blocks);
        }
        Self {
            free,
            num_blocks,
            num_free: num_blocks,
        }
    }

    pub(crate) fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub(crate) fn num_free(&self) -> usize {
        self.num_free
    }

    /// Reserves `len >= 1` contiguous blocks at the lowest address that fits; returns the start.
    pub(crate) fn reserve(&mut self, len: usize) -> Option<BlockId> {
        let (&start, &extent) = self.free.iter().find(|&(_, &extent)| extent >= len)?;
        self.free.remove(&start);
        if extent > len {
            self.free.insert(start + len as BlockId, extent - len);
        }
        self.num_free -= len;
        Some(start)
    }

    /// Whether every length in `lens` could be reserved one after the other.
    pub(crate) fn can_reserve_all(&self, lens: &[usize]) -> bool {
        let mut trial = self.clone();
        lens.iter().all(|&len| trial.reserve(len).is_some())
    }

    /// Returns the range `start..start + len`, which the caller reserved earlier.
    pub(crate) fn release(&mut self, start: BlockId, len: usize) {
        let mut start = start;
        let mut len = len;
        self.num_free += len;
        if let Some((&prev, &prev_len)) = self.free.range(..start).next_back()
            && prev as usize + prev_len == start as usize
        {
            self.free.remove(&prev);
            start = prev;
            len += prev_len;
        }
        let end = start + len as BlockId;
        if let Some(next_len) = self.free.remove(&end) {
            len += next_len;
        }
        self.free.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_fragments_and_coalesces() {
        let mut arena = ContiguousArena::new(10);
        let a = arena.reserve(4).unwrap();
        let b = arena.reserve(3).unwrap();
        let c = arena.reserve(3).unwrap();
        assert_eq!((a, b, c), (0, 4, 7));
        assert_eq!(arena.reserve(1), None);
        arena.release(a, 4);
        arena.release(c, 3);
        // 7 free blocks, but no extent of 5: external fragmentation.
        assert_eq!(arena.num_free(), 7);
        assert!(!arena.can_reserve_all(&[5]));
        assert!(arena.can_reserve_all(&[4, 3]));
        arena.release(b, 3);
        assert_eq!(arena.reserve(10), Some(0));
        assert_eq!(arena.num_free(), 0);
        assert_eq!(ContiguousArena::new(0).reserve(1), None);
    }
}
