//! Static contiguous reservation per request, as in Orca (the paper's baselines): every
//! sequence reserves one contiguous range of blocks at admission, sized by a
//! [`ReservationPolicy`], and can never grow past it. No sharing: forks and swaps copy.

use std::collections::HashMap;

use crate::accounting::{MemoryUsage, memory_usage};
use crate::api::{
    AllocStatus, Allocation, AllocationRequest, BlockCopy, BlockManager, BlockManagerConfig,
    Location, Usage, ensure_distinct,
};
use crate::arena::ContiguousArena;
use crate::error::KvError;
use crate::table::{BlockTable, blocks_for_tokens};
use crate::{BlockId, SeqId, TokenId};

/// How many token slots a request reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationPolicy {
    /// Orca (Max): the model's maximum sequence length (or the prompt, if longer).
    Max {
        /// Maximum sequence length in tokens.
        max_len: usize,
    },
    /// Orca (Pow2): the prompt plus the output length rounded up to a power of two.
    Pow2,
    /// Orca (Oracle): the prompt plus the true output length.
    Oracle,
}

impl ReservationPolicy {
    /// Token slots reserved for a prompt of `prompt_len` tokens expected to generate
    /// `max_new_tokens` more.
    pub fn reserved_tokens(&self, prompt_len: usize, max_new_tokens: usize) -> usize {
        match *self {
            Self::Max { max_len } => max_len.max(prompt_len),
            Self::Pow2 => prompt_len + max_new_tokens.next_power_of_two(),
            Self::Oracle => prompt_len + max_new_tokens,
        }
    }
}

/// One sequence's reservation.
#[derive(Debug, Clone)]
struct Reservation {
    /// The reserved range as a table: blocks `start..start + len`.
    table: BlockTable,
    location: Location,
}

impl Reservation {
    fn new(
        start: BlockId,
        len: usize,
        block_size: usize,
        num_tokens: usize,
        location: Location,
    ) -> Self {
        let mut table = BlockTable::new(block_size);
        (start..start + len as BlockId).for_each(|b| table.push_block(b));
        table.set_num_tokens(num_tokens);
        Self { table, location }
    }

    fn start(&self) -> BlockId {
        self.table.blocks()[0]
    }

    fn len(&self) -> usize {
        self.table.blocks().len()
    }

    /// Copies of the blocks holding tokens into a range starting at `dst_start`.
    fn copies_to(&self, dst_start: BlockId) -> Vec<BlockCopy> {
        let filled = blocks_for_tokens(self.table.num_tokens(), self.table.block_size());
        (0..filled as BlockId)
            .map(|i| BlockCopy {
                src: self.start() + i,
                dst: dst_start + i,
            })
            .collect()
    }
}

/// Static reservation baseline over a device arena and a CPU swap arena.
///
/// Invariants: reservations never overlap; free + reserved blocks = total in each arena; a
/// sequence's tokens never exceed its reservation. Prefix caching does not exist here, so
/// allocations never report computed tokens.
#[derive(Debug, Clone)]
pub struct StaticReservationManager {
    config: BlockManagerConfig,
    policy: ReservationPolicy,
    device: ContiguousArena,
    cpu: ContiguousArena,
    seqs: HashMap<SeqId, Reservation>,
}

impl StaticReservationManager {
    /// A baseline with the given sizes and reservation policy.
    pub fn new(config: BlockManagerConfig, policy: ReservationPolicy) -> Result<Self, KvError> {
        config.validate()?;
        Ok(Self {
            config,
            policy,
            device: ContiguousArena::new(config.num_device_blocks),
            cpu: ContiguousArena::new(config.num_cpu_blocks),
            seqs: HashMap::new(),
        })
    }

    /// The reservation policy.
    pub fn policy(&self) -> ReservationPolicy {
        self.policy
    }

    fn state_at(&self, seq: SeqId, location: Location) -> Result<&Reservation, KvError> {
        let state = self.seqs.get(&seq).ok_or(KvError::UnknownSequence(seq))?;
        match (state.location, location) {
            (found, wanted) if found == wanted => Ok(state),
            (Location::Cpu, _) => Err(KvError::SequenceSwappedOut(seq)),
            (Location::Device, _) => Err(KvError::SequenceNotSwappedOut(seq)),
        }
    }

    /// Blocks one sequence of `request` reserves.
    fn reservation_blocks(&self, request: &AllocationRequest<'_>) -> usize {
        let tokens = self
            .policy
            .reserved_tokens(request.tokens.len(), request.max_new_tokens);
        blocks_for_tokens(tokens, self.config.block_size)
    }

    /// Reservation lengths of `seqs`, all at `location`.
    fn lengths_at(&self, seqs: &[SeqId], location: Location) -> Result<Vec<usize>, KvError> {
        seqs.iter()
            .map(|&s| self.state_at(s, location).map(Reservation::len))
            .collect()
    }

    /// Admission answer for reserving `lens` on the device.
    fn device_admission(&self, lens: &[usize]) -> AllocStatus {
        let total = lens.iter().sum();
        match self.config.admission(total, total, self.device.num_free()) {
            AllocStatus::Ok if !self.device.can_reserve_all(lens) => AllocStatus::Later,
            status => status,
        }
    }

    fn arena_mut(&mut self, location: Location) -> &mut ContiguousArena {
        match location {
            Location::Device => &mut self.device,
            Location::Cpu => &mut self.cpu,
        }
    }

    fn relocate(
        &mut self,
        seqs: &[SeqId],
        from: Location,
        to: Location,
    ) -> Result<Vec<BlockCopy>, KvError> {
        ensure_distinct(seqs)?;
        let lens = self.lengths_at(seqs, from)?;
        let target = self.arena_mut(to);
        if !target.can_reserve_all(&lens) {
            return Err(KvError::OutOfBlocks {
                needed: lens.iter().sum(),
                free: target.num_free(),
            });
        }
        let mut copies = Vec::new();
        for &seq in seqs {
            let old = self
                .seqs
                .get(&seq)
                .ok_or(KvError::UnknownSequence(seq))?
                .clone();
            let start = self
                .arena_mut(to)
                .reserve(old.len())
                .ok_or(KvError::OutOfBlocks {
                    needed: old.len(),
                    free: self.arena_mut(to).num_free(),
                })?;
            copies.extend(old.copies_to(start));
            self.arena_mut(from).release(old.start(), old.len());
            let moved = Reservation::new(
                start,
                old.len(),
                self.config.block_size,
                old.table.num_tokens(),
                to,
            );
            self.seqs.insert(seq, moved);
        }
        Ok(copies)
    }
}

impl BlockManager for StaticReservationManager {
    fn block_size(&self) -> usize {
        self.config.block_size
    }

    fn can_allocate(&self, request: &AllocationRequest<'_>) -> AllocStatus {
        if request.seq_ids.is_empty() || request.tokens.is_empty() {
            return AllocStatus::Never;
        }
        self.device_admission(&vec![
            self.reservation_blocks(request);
            request.seq_ids.len()
        ])
    }

    fn allocate(&mut self, request: &AllocationRequest<'_>) -> Result<Allocation, KvError> {
        if request.seq_ids.is_empty() || request.tokens.is_empty() {
            return Err(KvError::EmptyAllocation);
        }
        ensure_distinct(request.seq_ids)?;
        if let Some(&seq) = request.seq_ids.iter().find(|s| self.seqs.contains_key(s)) {
            return Err(KvError::SequenceExists(seq));
        }
        let len = self.reservation_blocks(request);
        let lens = vec![len; request.seq_ids.len()];
        if !self.device.can_reserve_all(&lens) {
            return Err(KvError::OutOfBlocks {
                needed: len * lens.len(),
                free: self.device.num_free(),
            });
        }
        for &seq in request.seq_ids {
            let start = self.device.reserve(len).ok_or(KvError::OutOfBlocks {
                needed: len,
                free: self.device.num_free(),
            })?;
            let reservation = Reservation::new(
                start,
                len,
                self.config.block_size,
                request.tokens.len(),
                Location::Device,
            );
            self.seqs.insert(seq, reservation);
        }
        Ok(Allocation {
            num_computed_tokens: 0,
        })
    }

    fn can_append_slots(&self, seqs: &[SeqId], num_new_tokens: usize) -> Result<bool, KvError> {
        let mut fits = true;
        for &seq in seqs {
            let table = &self.state_at(seq, Location::Device)?.table;
            fits &= table.num_tokens() + num_new_tokens <= table.capacity();
        }
        Ok(fits)
    }

    fn append_slots(
        &mut self,
        seq: SeqId,
        new_tokens: &[TokenId],
    ) -> Result<Option<BlockCopy>, KvError> {
        let table = &self.state_at(seq, Location::Device)?.table;
        let needed = table.num_tokens() + new_tokens.len();
        if needed > table.capacity() {
            return Err(KvError::ReservationExceeded {
                seq,
                capacity: table.capacity(),
                needed,
            });
        }
        let state = self
            .seqs
            .get_mut(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        state.table.set_num_tokens(needed);
        Ok(None)
    }

    fn mark_computed(&mut self, seq: SeqId, num_computed_tokens: usize) -> Result<(), KvError> {
        let len = self.block_table(seq)?.num_tokens();
        if num_computed_tokens > len {
            return Err(KvError::ComputedBeyondLength {
                seq,
                computed: num_computed_tokens,
                len,
            });
        }
        Ok(())
    }

    fn fork(&mut self, parent: SeqId, child: SeqId) -> Result<Vec<BlockCopy>, KvError> {
        if self.seqs.contains_key(&child) {
            return Err(KvError::SequenceExists(child));
        }
        let source = self.state_at(parent, Location::Device)?.clone();
        let start = self
            .device
            .reserve(source.len())
            .ok_or(KvError::OutOfBlocks {
                needed: source.len(),
                free: self.device.num_free(),
            })?;
        let copies = source.copies_to(start);
        let reservation = Reservation::new(
            start,
            source.len(),
            self.config.block_size,
            source.table.num_tokens(),
            Location::Device,
        );
        self.seqs.insert(child, reservation);
        Ok(copies)
    }

    fn can_swap_out(&self, seqs: &[SeqId]) -> Result<bool, KvError> {
        Ok(self
            .cpu
            .can_reserve_all(&self.lengths_at(seqs, Location::Device)?))
    }

    fn swap_out(&mut self, seqs: &[SeqId]) -> Result<Vec<BlockCopy>, KvError> {
        self.relocate(seqs, Location::Device, Location::Cpu)
    }

    fn can_swap_in(&self, seqs: &[SeqId]) -> Result<AllocStatus, KvError> {
        Ok(self.device_admission(&self.lengths_at(seqs, Location::Cpu)?))
    }

    fn swap_in(&mut self, seqs: &[SeqId]) -> Result<Vec<BlockCopy>, KvError> {
        self.relocate(seqs, Location::Cpu, Location::Device)
    }

    fn free(&mut self, seq: SeqId) -> Result<(), KvError> {
        let state = self
            .seqs
            .remove(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        self.arena_mut(state.location)
            .release(state.start(), state.len());
        Ok(())
    }

    fn reset(&mut self) {
        self.seqs.clear();
        self.device = ContiguousArena::new(self.config.num_device_blocks);
        self.cpu = ContiguousArena::new(self.config.num_cpu_blocks);
    }

    fn block_table(&self, seq: SeqId) -> Result<&BlockTable, KvError> {
        Ok(&self
            .seqs
            .get(&seq)
            .ok_or(KvError::UnknownSequence(seq))?
            .table)
    }

    fn location(&self, seq: SeqId) -> Result<Location, KvError> {
        Ok(self
            .seqs
            .get(&seq)
            .ok_or(KvError::UnknownSequence(seq))?
            .location)
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
