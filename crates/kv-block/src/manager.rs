//! The paged block manager (PagedAttention): blocks allocated on demand, shared by reference
//! count, copied on write, swapped whole groups at a time, and reused across requests through
//! the prefix cache.

use std::collections::HashMap;
use std::sync::Arc;

use crate::accounting::{MemoryUsage, memory_usage};
use crate::api::{
    AllocStatus, Allocation, AllocationRequest, BlockCopy, BlockManager, BlockManagerConfig,
    Location, Usage, ensure_distinct,
};
use crate::error::KvError;
use crate::hash::{BlockHasher, Sha256BlockHasher};
use crate::pool::BlockPool;
use crate::prefix_cache::{ChainCursor, SequenceBlocks};
use crate::table::{BlockTable, blocks_for_tokens};
use crate::{BlockId, SeqId, TokenId};

/// Whether full computed blocks are reused across requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixCaching {
    /// Cache full computed blocks and reuse them on prefix hits.
    Enabled,
    /// Never cache; every allocation takes fresh blocks.
    Disabled,
}

/// Bookkeeping of one sequence.
#[derive(Debug, Clone)]
struct SeqState {
    table: BlockTable,
    location: Location,
    /// All tokens of the sequence, kept only while prefix caching is enabled (for hashing).
    tokens: Vec<TokenId>,
    num_computed: usize,
    extra_keys: Arc<[u8]>,
    chain: ChainCursor,
}

/// The PagedAttention block manager over a device pool and a CPU swap pool.
///
/// Invariants (checked by the state-machine tests after every operation): in each pool a
/// block's reference count equals the number of block-table entries that point at it; a block
/// is free iff nobody references it; each table holds exactly the blocks its tokens need;
/// only the last block of a table is ever partly filled, so only it can be copied on write.
#[derive(Debug, Clone)]
pub struct PagedBlockManager<H: BlockHasher = Sha256BlockHasher> {
    config: BlockManagerConfig,
    prefix_caching: PrefixCaching,
    hasher: H,
    device: BlockPool,
    cpu: BlockPool,
    seqs: HashMap<SeqId, SeqState>,
}

impl PagedBlockManager<Sha256BlockHasher> {
    /// A manager with SHA-256 block hashes.
    pub fn new(config: BlockManagerConfig, prefix_caching: PrefixCaching) -> Result<Self, KvError> {
        Self::with_hasher(config, prefix_caching, Sha256BlockHasher)
    }
}

impl<H: BlockHasher> PagedBlockManager<H> {
    /// A manager with a custom block hasher (tests inject weak ones).
    pub fn with_hasher(
        config: BlockManagerConfig,
        prefix_caching: PrefixCaching,
        hasher: H,
    ) -> Result<Self, KvError> {
        config.validate()?;
        Ok(Self {
            config,
            prefix_caching,
            hasher,
            device: BlockPool::new(config.num_device_blocks)?,
            cpu: BlockPool::new(config.num_cpu_blocks)?,
            seqs: HashMap::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BlockManagerConfig {
        &self.config
    }

    /// The device pool (read only: reference counts, free queue, cached tokens).
    pub fn device_pool(&self) -> &BlockPool {
        &self.device
    }

    /// The CPU swap pool (read only).
    pub fn cpu_pool(&self) -> &BlockPool {
        &self.cpu
    }

    /// Every live sequence, in no particular order.
    pub fn sequences(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.seqs.keys().copied()
    }

    /// Tokens of `seq` known to have KV (see [`BlockManager::mark_computed`]).
    pub fn num_computed_tokens(&self, seq: SeqId) -> Result<usize, KvError> {
        Ok(self.state(seq)?.num_computed)
    }

    /// Leading tokens of a prompt that a prefix hit would serve now (0 with caching off);
    /// useful to order waiting requests by cached prefix length.
    pub fn cached_prefix_tokens(&self, tokens: &[TokenId], extra_keys: &[u8]) -> usize {
        self.prefix_match(tokens, extra_keys).0.len() * self.config.block_size
    }

    fn state(&self, seq: SeqId) -> Result<&SeqState, KvError> {
        self.seqs.get(&seq).ok_or(KvError::UnknownSequence(seq))
    }

    fn state_at(&self, seq: SeqId, location: Location) -> Result<&SeqState, KvError> {
        let state = self.state(seq)?;
        match (state.location, location) {
            (found, wanted) if found == wanted => Ok(state),
            (Location::Cpu, _) => Err(KvError::SequenceSwappedOut(seq)),
            (Location::Device, _) => Err(KvError::SequenceNotSwappedOut(seq)),
        }
    }

    fn caching(&self) -> bool {
        self.prefix_caching == PrefixCaching::Enabled
    }

    /// Cached blocks serving the longest prefix of `tokens`, never covering the last token.
    fn prefix_match(&self, tokens: &[TokenId], extra_keys: &[u8]) -> (Vec<BlockId>, ChainCursor) {
        if !self.caching() || tokens.is_empty() {
            return (Vec::new(), ChainCursor::start());
        }
        let max_blocks = (tokens.len() - 1) / self.config.block_size;
        self.device.cache().match_prefix(
            &self.hasher,
            self.config.block_size,
            tokens,
            extra_keys,
            max_blocks,
        )
    }

    /// Free blocks needed to append `num_new_tokens` to `state` (copy-on-write included).
    fn append_need(&self, state: &SeqState, num_new_tokens: usize) -> usize {
        if num_new_tokens == 0 {
            return 0;
        }
        let table = &state.table;
        let partly_filled = !table.num_tokens().is_multiple_of(self.config.block_size);
        let shared = table
            .blocks()
            .last()
            .is_some_and(|&b| self.device.ref_count(b).is_ok_and(|rc| rc > 1));
        let new_blocks =
            blocks_for_tokens(table.num_tokens() + num_new_tokens, self.config.block_size)
                - table.blocks().len();
        usize::from(partly_filled && shared) + new_blocks
    }

    /// Distinct blocks referenced by `seqs` (all of which exist).
    fn distinct_blocks(&self, seqs: &[SeqId]) -> Result<usize, KvError> {
        let mut blocks: Vec<BlockId> = seqs
            .iter()
            .map(|&s| self.state(s).map(|st| st.table.blocks()))
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        blocks.sort_unstable();
        blocks.dedup();
        Ok(blocks.len())
    }

    /// Registers the full computed device blocks of `seq` in the prefix cache.
    fn register_computed(&mut self, seq: SeqId) {
        if !self.caching() {
            return;
        }
        let Some(state) = self.seqs.get_mut(&seq) else {
            return;
        };
        if state.location != Location::Device {
            return;
        }
        let full_computed = state.num_computed / self.config.block_size;
        if state.chain.blocks_done() >= full_computed {
            return;
        }
        self.device.cache_mut().register_blocks(
            &self.hasher,
            self.config.block_size,
            &mut state.chain,
            SequenceBlocks {
                tokens: &state.tokens,
                extra_keys: &state.extra_keys,
                blocks: state.table.blocks(),
            },
            full_computed,
        );
    }

    /// Moves `seqs` from one pool to the other, preserving sharing; returns the copies.
    fn relocate(
        &mut self,
        seqs: &[SeqId],
        from: Location,
        to: Location,
    ) -> Result<Vec<BlockCopy>, KvError> {
        ensure_distinct(seqs)?;
        for &seq in seqs {
            self.state_at(seq, from)?;
        }
        let needed = self.distinct_blocks(seqs)?;
        let (source, target) = match to {
            Location::Cpu => (&mut self.device, &mut self.cpu),
            Location::Device => (&mut self.cpu, &mut self.device),
        };
        if needed > target.num_free() {
            return Err(KvError::OutOfBlocks {
                needed,
                free: target.num_free(),
            });
        }
        let mut mapping: HashMap<BlockId, BlockId> = HashMap::new();
        let mut copies = Vec::with_capacity(needed);
        for &seq in seqs {
            let state = self
                .seqs
                .get_mut(&seq)
                .ok_or(KvError::UnknownSequence(seq))?;
            for &src in state.table.blocks() {
                match mapping.get(&src) {
                    Some(&dst) => target.share(dst)?,
                    None => {
                        let dst = target.allocate()?;
                        mapping.insert(src, dst);
                        copies.push(BlockCopy { src, dst });
                    }
                }
            }
            release_in_reverse(source, state.table.blocks())?;
            state.table.remap(|b| mapping[&b]);
            state.location = to;
            state.chain = ChainCursor::start();
        }
        if to == Location::Device {
            seqs.iter().for_each(|&seq| self.register_computed(seq));
        }
        Ok(copies)
    }
}

/// Releases `blocks` last first, so a sequence's tail blocks are evicted before its prefix.
fn release_in_reverse(pool: &mut BlockPool, blocks: &[BlockId]) -> Result<(), KvError> {
    blocks.iter().rev().try_for_each(|&b| pool.release(b))
}

impl<H: BlockHasher> BlockManager for PagedBlockManager<H> {
    fn block_size(&self) -> usize {
        self.config.block_size
    }

    fn can_allocate(&self, request: &AllocationRequest<'_>) -> AllocStatus {
        if request.seq_ids.is_empty() || request.tokens.is_empty() {
            return AllocStatus::Never;
        }
        let total = blocks_for_tokens(request.tokens.len(), self.config.block_size);
        let (hits, _) = self.prefix_match(request.tokens, request.extra_keys);
        let held_hits = hits
            .iter()
            .filter(|&&b| self.device.is_free(b).is_ok_and(|free| !free))
            .count();
        self.config
            .admission(total, total - held_hits, self.device.num_free())
    }

    fn allocate(&mut self, request: &AllocationRequest<'_>) -> Result<Allocation, KvError> {
        if request.seq_ids.is_empty() || request.tokens.is_empty() {
            return Err(KvError::EmptyAllocation);
        }
        ensure_distinct(request.seq_ids)?;
        if let Some(&seq) = request.seq_ids.iter().find(|s| self.seqs.contains_key(s)) {
            return Err(KvError::SequenceExists(seq));
        }
        let block_size = self.config.block_size;
        let total = blocks_for_tokens(request.tokens.len(), block_size);
        let (hits, chain) = self.prefix_match(request.tokens, request.extra_keys);
        let held_hits = hits
            .iter()
            .filter(|&&b| self.device.is_free(b).is_ok_and(|free| !free))
            .count();
        let needed = total - held_hits;
        if needed > self.device.num_free() {
            return Err(KvError::OutOfBlocks {
                needed,
                free: self.device.num_free(),
            });
        }
        let extra_references = request.seq_ids.len() - 1;
        let mut table = BlockTable::new(block_size);
        for &block in &hits {
            self.device.revive(block);
            table.push_block(block);
        }
        for _ in hits.len()..total {
            table.push_block(self.device.allocate()?);
        }
        for &block in table.blocks() {
            (0..extra_references).try_for_each(|_| self.device.share(block))?;
        }
        table.set_num_tokens(request.tokens.len());
        let num_computed = hits.len() * block_size;
        let state = SeqState {
            table,
            location: Location::Device,
            tokens: if self.caching() {
                request.tokens.to_vec()
            } else {
                Vec::new()
            },
            num_computed,
            extra_keys: Arc::from(request.extra_keys),
            chain,
        };
        for &seq in request.seq_ids {
            self.seqs.insert(seq, state.clone());
        }
        Ok(Allocation {
            num_computed_tokens: num_computed,
        })
    }

    fn can_append_slots(&self, seqs: &[SeqId], num_new_tokens: usize) -> Result<bool, KvError> {
        let mut needed = 0;
        for &seq in seqs {
            needed += self.append_need(self.state_at(seq, Location::Device)?, num_new_tokens);
        }
        Ok(needed <= self.device.num_free())
    }

    fn append_slots(
        &mut self,
        seq: SeqId,
        new_tokens: &[TokenId],
    ) -> Result<Option<BlockCopy>, KvError> {
        let state = self.state_at(seq, Location::Device)?;
        let needed = self.append_need(state, new_tokens.len());
        if needed > self.device.num_free() {
            return Err(KvError::OutOfBlocks {
                needed,
                free: self.device.num_free(),
            });
        }
        if new_tokens.is_empty() {
            return Ok(None);
        }
        let block_size = self.config.block_size;
        let caching = self.caching();
        let state = self
            .seqs
            .get_mut(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        let len = state.table.num_tokens();
        let mut copy = None;
        if let Some(&last) = state.table.blocks().last()
            && !len.is_multiple_of(block_size)
            && self.device.ref_count(last)? > 1
        {
            let dst = self.device.allocate()?;
            state.table.replace_last(dst);
            self.device.release(last)?;
            copy = Some(BlockCopy { src: last, dst });
        }
        let new_len = len + new_tokens.len();
        for _ in state.table.blocks().len()..blocks_for_tokens(new_len, block_size) {
            state.table.push_block(self.device.allocate()?);
        }
        state.table.set_num_tokens(new_len);
        if caching {
            state.tokens.extend_from_slice(new_tokens);
        }
        Ok(copy)
    }

    fn mark_computed(&mut self, seq: SeqId, num_computed_tokens: usize) -> Result<(), KvError> {
        let state = self
            .seqs
            .get_mut(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        let len = state.table.num_tokens();
        if num_computed_tokens > len {
            return Err(KvError::ComputedBeyondLength {
                seq,
                computed: num_computed_tokens,
                len,
            });
        }
        state.num_computed = state.num_computed.max(num_computed_tokens);
        self.register_computed(seq);
        Ok(())
    }

    fn fork(&mut self, parent: SeqId, child: SeqId) -> Result<Vec<BlockCopy>, KvError> {
        if self.seqs.contains_key(&child) {
            return Err(KvError::SequenceExists(child));
        }
        let state = self.state_at(parent, Location::Device)?.clone();
        state
            .table
            .blocks()
            .iter()
            .try_for_each(|&b| self.device.share(b))?;
        self.seqs.insert(child, state);
        Ok(Vec::new())
    }

    fn can_swap_out(&self, seqs: &[SeqId]) -> Result<bool, KvError> {
        for &seq in seqs {
            self.state_at(seq, Location::Device)?;
        }
        Ok(self.distinct_blocks(seqs)? <= self.cpu.num_free())
    }

    fn swap_out(&mut self, seqs: &[SeqId]) -> Result<Vec<BlockCopy>, KvError> {
        self.relocate(seqs, Location::Device, Location::Cpu)
    }

    fn can_swap_in(&self, seqs: &[SeqId]) -> Result<AllocStatus, KvError> {
        for &seq in seqs {
            self.state_at(seq, Location::Cpu)?;
        }
        let needed = self.distinct_blocks(seqs)? + seqs.len();
        Ok(self
            .config
            .admission(needed, needed, self.device.num_free()))
    }

    fn swap_in(&mut self, seqs: &[SeqId]) -> Result<Vec<BlockCopy>, KvError> {
        self.relocate(seqs, Location::Cpu, Location::Device)
    }

    fn free(&mut self, seq: SeqId) -> Result<(), KvError> {
        let state = self
            .seqs
            .remove(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        let pool = match state.location {
            Location::Device => &mut self.device,
            Location::Cpu => &mut self.cpu,
        };
        release_in_reverse(pool, state.table.blocks())
    }

    fn reset(&mut self) {
        self.seqs.clear();
        self.device.reset();
        self.cpu.reset();
    }

    fn block_table(&self, seq: SeqId) -> Result<&BlockTable, KvError> {
        Ok(&self.state(seq)?.table)
    }

    fn location(&self, seq: SeqId) -> Result<Location, KvError> {
        Ok(self.state(seq)?.location)
    }

    fn usage(&self) -> Usage {
        Usage {
            device_total: self.device.num_blocks(),
            device_free: self.device.num_free(),
            cpu_total: self.cpu.num_blocks(),
            cpu_free: self.cpu.num_free(),
        }
    }

    fn memory_usage(&self) -> MemoryUsage {
        memory_usage(
            self.seqs
                .values()
                .filter(|s| s.location == Location::Device)
                .map(|s| &s.table),
        )
    }
}
