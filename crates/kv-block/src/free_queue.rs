//! An intrusive doubly linked queue over block indices with O(1) push, pop and removal from
//! the middle. The order is the eviction order: the head is reused (evicted) first.

use crate::BlockId;

/// Marks "no neighbour"; never a valid block id because pools hold fewer than `u32::MAX` blocks.
const NIL: BlockId = BlockId::MAX;

/// Doubly linked list threaded through per-block `prev`/`next` arrays.
///
/// Invariants: `in_queue[b]` is true exactly for the blocks reachable from `head`; `len` counts
/// them; the links of a block not in the queue are `NIL`.
#[derive(Debug, Clone)]
pub(crate) struct FreeQueue {
    prev: Vec<BlockId>,
    next: Vec<BlockId>,
    in_queue: Vec<bool>,
    head: BlockId,
    tail: BlockId,
    len: usize,
}

impl FreeQueue {
    /// A queue holding every block `0..num_blocks` in ascending order.
    pub(crate) fn full(num_blocks: usize) -> Self {
        let mut queue = Self {
            prev: vec![NIL; num_blocks],
            next: vec![NIL; num_blocks],
            in_queue: vec![false; num_blocks],
            head: NIL,
            tail: NIL,
            len: 0,
        };
        for block in 0..num_blocks {
            queue.push_back(block as BlockId);
        }
        queue
    }

    /// Number of blocks in the queue.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether `block` is in the queue. The caller guarantees `block` is inside the pool.
    pub(crate) fn contains(&self, block: BlockId) -> bool {
        self.in_queue[block as usize]
    }

    /// Appends `block` at the tail (evicted last). The block must not be in the queue.
    pub(crate) fn push_back(&mut self, block: BlockId) {
        debug_assert!(!self.contains(block));
        let b = block as usize;
        self.prev[b] = self.tail;
        self.next[b] = NIL;
        match self.tail {
            NIL => self.head = block,
            tail => self.next[tail as usize] = block,
        }
        self.tail = block;
        self.in_queue[b] = true;
        self.len += 1;
    }

    /// Prepends `block` at the head (reused first). The block must not be in the queue.
    pub(crate) fn push_front(&mut self, block: BlockId) {
        debug_assert!(!self.contains(block));
        let b = block as usize;
        self.next[b] = self.head;
        self.prev[b] = NIL;
        match self.head {
            NIL => self.tail = block,
            head => self.prev[head as usize] = block,
        }
        self.head = block;
        self.in_queue[b] = true;
        self.len += 1;
    }

    /// Removes and returns the head, if any.
    pub(crate) fn pop_front(&mut self) -> Option<BlockId> {
        let head = self.head;
        if head == NIL {
            return None;
        }
        self.remove(head);
        Some(head)
    }

    /// Unlinks `block` from anywhere in the queue. The block must be in the queue.
    pub(crate) fn remove(&mut self, block: BlockId) {
        debug_assert!(self.contains(block));
        let b = block as usize;
        let (prev, next) = (self.prev[b], self.next[b]);
        match prev {
            NIL => self.head = next,
            p => self.next[p as usize] = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.prev[n as usize] = prev,
        }
        self.prev[b] = NIL;
        self.next[b] = NIL;
        self.in_queue[b] = false;
        self.len -= 1;
    }

    /// The blocks from head (next to be reused) to tail.
    pub(crate) fn iter(&self) -> impl Iterator<Item = BlockId> + '_ {
        std::iter::successors((self.head != NIL).then_some(self.head), |&b| {
            let next = self.next[b as usize];
            (next != NIL).then_some(next)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_full_in_ascending_order() {
        let q = FreeQueue::full(4);
        assert_eq!(q.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(q.len(), 4);
    }

    #[test]
    fn remove_from_head_middle_and_tail_keeps_links() {
        let mut q = FreeQueue::full(5);
        q.remove(2);
        q.remove(0);
        q.remove(4);
        assert_eq!(q.iter().collect::<Vec<_>>(), vec![1, 3]);
        assert!(!q.contains(2));
        q.push_front(4);
        q.push_back(0);
        assert_eq!(q.iter().collect::<Vec<_>>(), vec![4, 1, 3, 0]);
        assert_eq!(q.pop_front(), Some(4));
        assert_eq!(q.pop_front(), Some(1));
        assert_eq!(q.pop_front(), Some(3));
        assert_eq!(q.pop_front(), Some(0));
        assert_eq!(q.pop_front(), None);
        assert_eq!(q.len(), 0);
        q.push_back(2);
        assert_eq!(q.iter().collect::<Vec<_>>(), vec![2]);
    }
}
