//! The prefix-cache index of a pool: which full blocks hold KV for which verified prefix.
//!
//! Lookups go by chained [`BlockHash`], but a hash is never trusted on its own. Each cached block
//! stores its token ids and a *parent link*: the extra keys for the first block of a sequence,
//! otherwise the cache id of the block whose KV preceded it when it was computed. A hit at block
//! `i` is accepted only if the stored tokens equal the request's and the stored parent link is
//! the block matched at `i - 1` (or the same extra keys at `i = 0`). By induction a hit chain
//! therefore reproduces the request's exact token prefix, whatever the hasher's collisions.
//! Cache ids are never reused, so a link to an evicted parent simply stops matching.

use std::collections::HashMap;
use std::sync::Arc;

use crate::hash::{BlockHash, BlockHasher};
use crate::{BlockId, TokenId};

/// Identity of one registration of a block in the cache; unique for the pool's lifetime.
pub(crate) type CacheId = u64;

/// What a cached block's KV was computed after.
#[derive(Debug, Clone)]
enum CacheParent {
    /// The first block of a sequence with these extra keys.
    Root(Arc<[u8]>),
    /// The block registered under this cache id.
    Block(CacheId),
}

/// A registered block: its hash, its tokens and its parent link.
#[derive(Debug, Clone)]
struct CacheEntry {
    id: CacheId,
    hash: BlockHash,
    tokens: Box<[TokenId]>,
    parent: CacheParent,
}

/// Where a sequence's walk along its hash chain stands.
#[derive(Debug, Clone)]
pub(crate) struct ChainCursor {
    /// Leading blocks already walked (registered, found equal in the cache, or matched).
    blocks_done: usize,
    /// Hash of the last walked block.
    last_hash: Option<BlockHash>,
    /// The verified parent link for the next block.
    link: ChainLink,
}

/// The parent link the next block of a chain must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChainLink {
    /// The next block is the first one: its parent is the sequence's extra keys.
    Root,
    /// The next block follows the block registered under this id.
    After(CacheId),
    /// The chain met a hash collision; no later block of this sequence can be cached.
    Broken,
}

impl ChainCursor {
    /// A cursor before the first block.
    pub(crate) fn start() -> Self {
        Self {
            blocks_done: 0,
            last_hash: None,
            link: ChainLink::Root,
        }
    }

    /// Leading blocks already walked.
    pub(crate) fn blocks_done(&self) -> usize {
        self.blocks_done
    }

    fn advance(&mut self, hash: BlockHash, id: CacheId) {
        self.blocks_done += 1;
        self.last_hash = Some(hash);
        self.link = ChainLink::After(id);
    }
}

impl CacheEntry {
    /// Whether this entry holds exactly `tokens` computed after `link` (with `extra_keys` at the root).
    fn holds(&self, tokens: &[TokenId], link: ChainLink, extra_keys: &[u8]) -> bool {
        let parent_matches = match (&self.parent, link) {
            (CacheParent::Root(keys), ChainLink::Root) => **keys == *extra_keys,
            (CacheParent::Block(parent), ChainLink::After(expected)) => *parent == expected,
            _ => false,
        };
        parent_matches && *self.tokens == *tokens
    }
}

/// The parts of a sequence that registration reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SequenceBlocks<'a> {
    /// Every token of the sequence.
    pub(crate) tokens: &'a [TokenId],
    /// The sequence's extra keys (parent link of its first block).
    pub(crate) extra_keys: &'a Arc<[u8]>,
    /// The sequence's block table.
    pub(crate) blocks: &'a [BlockId],
}

/// Hash → block map plus the per-block entries that make every hit verifiable.
///
/// Invariant: `entries[b]` is `Some(e)` iff `map[e.hash] == b`; at most one block per hash.
#[derive(Debug, Clone)]
pub(crate) struct PrefixCacheIndex {
    map: HashMap<BlockHash, BlockId>,
    entries: Vec<Option<CacheEntry>>,
    next_id: CacheId,
}

impl PrefixCacheIndex {
    /// An empty index for a pool of `num_blocks` blocks.
    pub(crate) fn new(num_blocks: usize) -> Self {
        Self {
            map: HashMap::new(),
            entries: vec![None; num_blocks],
            next_id: 0,
        }
    }

    /// Stored token ids of `block` if it is cached.
    pub(crate) fn cached_tokens(&self, block: BlockId) -> Option<&[TokenId]> {
        self.entries[block as usize].as_ref().map(|e| &*e.tokens)
    }

    /// Whether `block` is registered.
    pub(crate) fn is_cached(&self, block: BlockId) -> bool {
        self.entries[block as usize].is_some()
    }

    /// Number of registered blocks.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Forgets `block` (it is about to hold other tokens).
    pub(crate) fn evict(&mut self, block: BlockId) {
        if let Some(entry) = self.entries[block as usize].take() {
            self.map.remove(&entry.hash);
        }
    }

    /// The cached block verified to hold `tokens` after `link`, looked up by `hash`.
    fn verified(
        &self,
        hash: &BlockHash,
        tokens: &[TokenId],
        link: ChainLink,
        extra_keys: &[u8],
    ) -> Option<(BlockId, CacheId)> {
        let &block = self.map.get(hash)?;
        let entry = self.entries[block as usize].as_ref()?;
        entry
            .holds(tokens, link, extra_keys)
            .then_some((block, entry.id))
    }

    /// The longest run of leading full blocks of `tokens` whose KV is cached, at most
    /// `max_blocks` long, and the cursor positioned after it.
    pub(crate) fn match_prefix(
        &self,
        hasher: &impl BlockHasher,
        block_size: usize,
        tokens: &[TokenId],
        extra_keys: &[u8],
        max_blocks: usize,
    ) -> (Vec<BlockId>, ChainCursor) {
        let mut cursor = ChainCursor::start();
        let mut hits = Vec::new();
        for chunk in tokens.chunks_exact(block_size).take(max_blocks) {
            let keys = if cursor.blocks_done == 0 {
                extra_keys
            } else {
                &[]
            };
            let hash = hasher.hash_block(cursor.last_hash.as_ref(), chunk, keys);
            let Some((block, id)) = self.verified(&hash, chunk, cursor.link, extra_keys) else {
                break;
            };
            hits.push(block);
            cursor.advance(hash, id);
        }
        (hits, cursor)
    }

    /// Walks `cursor` forward over the full blocks `seq.blocks[cursor.blocks_done..upto_blocks]`,
    /// registering each block whose hash is not cached yet. A block equal to an already cached
    /// one continues the chain through that one; a hash collision breaks the chain for good.
    pub(crate) fn register_blocks(
        &mut self,
        hasher: &impl BlockHasher,
        block_size: usize,
        cursor: &mut ChainCursor,
        seq: SequenceBlocks<'_>,
        upto_blocks: usize,
    ) {
        let SequenceBlocks {
            tokens,
            extra_keys,
            blocks,
        } = seq;
        while cursor.blocks_done < upto_blocks && cursor.link != ChainLink::Broken {
            let index = cursor.blocks_done;
            let chunk = &tokens[index * block_size..(index + 1) * block_size];
            let keys: &[u8] = if index == 0 { extra_keys } else { &[] };
            let hash = hasher.hash_block(cursor.last_hash.as_ref(), chunk, keys);
            if self.map.contains_key(&hash) {
                match self.verified(&hash, chunk, cursor.link, extra_keys) {
                    Some((_, id)) => cursor.advance(hash, id),
                    None => cursor.link = ChainLink::Broken,
                }
                continue;
            }
            let block = blocks[index];
            debug_assert!(
                self.entries[block as usize].is_none(),
                "a full block is registered once"
            );
            let parent = match cursor.link {
                ChainLink::After(id) => CacheParent::Block(id),
                _ => CacheParent::Root(Arc::clone(extra_keys)),
            };
            let id = self.next_id;
            self.next_id += 1;
            self.entries[block as usize] = Some(CacheEntry {
                id,
                hash,
                tokens: chunk.into(),
                parent,
            });
            self.map.insert(hash, block);
            cursor.advance(hash, id);
        }
    }
}
