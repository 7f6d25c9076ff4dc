//! The scheduler's state and the calls the engine makes between steps: add a request, apply
//! sampled tokens, fork and finish sequences, abort requests. [`Scheduler::schedule`] itself
//! lives in the private `step` module.

use kv_block::{BlockCopy, BlockManager, SeqId, TokenId};

use crate::config::SchedulerConfig;
use crate::error::SchedulerError;
use crate::group::{GroupStatus, SequenceGroup};
use crate::policy::Policy;
use crate::registry::{GroupKey, Registry};
use crate::request::Request;
use crate::sequence::{FinishReason, Sequence};
use crate::stats::SchedulerStats;

/// Whether a group still has live sequences after a sequence finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupProgress {
    /// Other sequences of the group are still live.
    Unfinished,
    /// That was the group's last sequence: the group left the scheduler, every block freed.
    Retired,
}

/// What [`Scheduler::append_token`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The token was appended; the sequence runs on.
    Appended,
    /// The token was appended and the sequence reached `max_model_len`, so it finished
    /// ([`FinishReason::LengthCapped`]) and its blocks were freed.
    LengthCapped(GroupProgress),
}

/// The iteration-level scheduler over a block manager `M`.
///
/// Invariants (audited by [`Scheduler::check_invariants`]): every live group is in exactly
/// the queue its status names; running groups' sequences live on the device of `M` with
/// exactly their slotted tokens, swapped ones in its CPU pool, waiting ones nowhere; the
/// running groups' weights never exceed `max_num_seqs`. Every path that ends a sequence
/// (finish, abort, rejection) frees its blocks at once.
///
/// Engine contract: call [`Scheduler::schedule`] once per step, run the forward pass it
/// describes, then report results ([`Scheduler::append_token`], [`Scheduler::fork`],
/// [`Scheduler::finish_sequence`]) and aborts before the next `schedule()`.
pub struct Scheduler<M: BlockManager> {
    pub(crate) config: SchedulerConfig,
    pub(crate) block_manager: M,
    pub(crate) policy: Box<dyn Policy>,
    pub(crate) registry: Registry,
    pub(crate) waiting: Vec<GroupKey>,
    pub(crate) running: Vec<GroupKey>,
    pub(crate) swapped: Vec<GroupKey>,
    /// Fork copies (static reservations) to hand out with the next step.
    pub(crate) pending_copies: Vec<BlockCopy>,
    pub(crate) stats: SchedulerStats,
    /// Reused buffer of sequence ids for block-manager calls.
    pub(crate) scratch: Vec<SeqId>,
    next_seq_id: SeqId,
    next_arrival_order: u64,
}

impl<M: BlockManager> Scheduler<M> {
    /// A scheduler over an empty block manager.
    pub fn new(
        config: SchedulerConfig,
        block_manager: M,
        policy: Box<dyn Policy>,
    ) -> Result<Self, SchedulerError> {
        config.validate()?;
        Ok(Self {
            config,
            block_manager,
            policy,
            registry: Registry::default(),
            waiting: Vec::new(),
            running: Vec::new(),
            swapped: Vec::new(),
            pending_copies: Vec::new(),
            stats: SchedulerStats::default(),
            scratch: Vec::new(),
            next_seq_id: 0,
            next_arrival_order: 0,
        })
    }

    /// Queues a request; returns the id of its first sequence (the one its prompt is
    /// prefilled on). Rejects empty prompts, duplicate ids and parallelism the budgets can
    /// never run; over-long prompts are rejected by the next `schedule()` with a reason.
    pub fn add_request(&mut self, request: Request) -> Result<SeqId, SchedulerError> {
        if self.registry.contains_request(&request.request_id) {
            return Err(SchedulerError::DuplicateRequest(
                request.request_id.to_string(),
            ));
        }
        if request.prompt.is_empty() {
            return Err(SchedulerError::EmptyPrompt(request.request_id.to_string()));
        }
        let limit = self
            .config
            .max_num_seqs
            .min(self.config.max_num_batched_tokens);
        if !(1..=limit).contains(&request.max_parallel_seqs) {
            return Err(SchedulerError::InvalidParallelism {
                request_id: request.request_id.to_string(),
                requested: request.max_parallel_seqs,
                limit,
            });
        }
        let seq = self.allocate_seq_id();
        let group = SequenceGroup::new(request, seq, self.next_arrival_order);
        self.next_arrival_order += 1;
        let key = self.registry.insert(group);
        self.waiting.push(key);
        Ok(seq)
    }

    /// Removes a request from whichever queue holds it and frees its blocks at once.
    pub fn abort(&mut self, request_id: &str) -> Result<(), SchedulerError> {
        let key = self
            .registry
            .key_of_request(request_id)
            .ok_or_else(|| SchedulerError::UnknownRequest(request_id.to_string()))?;
        self.retire(key)
    }

    /// Appends the token sampled for `seq` from the logits of the step just run. Only valid
    /// for a running sequence whose last scheduled chunk reached its end
    /// ([`crate::ScheduledSeq::needs_logits`]), once per step. A sequence reaching
    /// `max_model_len` finishes here.
    pub fn append_token(
        &mut self,
        seq: SeqId,
        token: TokenId,
    ) -> Result<AppendOutcome, SchedulerError> {
        let sequence = self.awaiting_seq_mut(seq)?;
        sequence.push_token(token);
        if sequence.len() < self.config.max_model_len {
            return Ok(AppendOutcome::Appended);
        }
        self.finish_sequence(seq, FinishReason::LengthCapped)
            .map(AppendOutcome::LengthCapped)
    }

    /// Creates a new sequence of `parent`'s group as a copy of `parent` (same tokens, sharing
    /// its blocks) and returns its id. `parent` must be running and waiting for this step's
    /// token: fork first, then append each sequence's own token.
    pub fn fork(&mut self, parent: SeqId) -> Result<SeqId, SchedulerError> {
        self.awaiting_seq_mut(parent)?;
        let child = self.next_seq_id;
        let copies = self.block_manager.fork(parent, child)?;
        self.next_seq_id += 1;
        self.pending_copies.extend(copies);
        let key = self
            .registry
            .key_of_seq(parent)
            .ok_or(SchedulerError::UnknownSequence(parent))?;
        let group = self.registry.group_mut(key);
        let forked = group
            .seq(parent)
            .map(|p| p.fork(child))
            .ok_or(SchedulerError::UnknownSequence(parent))?;
        group.push_seq(forked);
        self.registry.link_seq(child, key);
        Ok(child)
    }

    /// Finishes `seq` and frees its blocks; when it was the group's last live sequence the
    /// group leaves the scheduler.
    pub fn finish_sequence(
        &mut self,
        seq: SeqId,
        reason: FinishReason,
    ) -> Result<GroupProgress, SchedulerError> {
        let key = self
            .registry
            .key_of_seq(seq)
            .ok_or(SchedulerError::UnknownSequence(seq))?;
        let group = self.registry.group_mut(key);
        if group.seqs().len() == 1 {
            self.retire(key)?;
            self.stats.count_finish(reason);
            return Ok(GroupProgress::Retired);
        }
        let status = group.status();
        if let Some(sequence) = group.seq_mut(seq) {
            release_seq(&mut self.block_manager, sequence, status)?;
        }
        group.remove_seq(seq);
        self.registry.unlink_seq(seq);
        self.stats.count_finish(reason);
        Ok(GroupProgress::Unfinished)
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The block manager (block tables for the executor, usage figures).
    pub fn block_manager(&self) -> &M {
        &self.block_manager
    }

    /// The policy's name.
    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// Cumulative counters.
    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    /// The live group of `request_id`.
    pub fn group(&self, request_id: &str) -> Option<&SequenceGroup> {
        self.registry
            .key_of_request(request_id)
            .map(|k| self.registry.group(k))
    }

    /// The live group owning sequence `seq`.
    pub fn group_of_seq(&self, seq: SeqId) -> Option<&SequenceGroup> {
        self.registry
            .key_of_seq(seq)
            .map(|k| self.registry.group(k))
    }

    /// The live sequence `seq`.
    pub fn sequence(&self, seq: SeqId) -> Option<&Sequence> {
        self.group_of_seq(seq).and_then(|g| g.seq(seq))
    }

    /// The groups of one queue, in the order the last `schedule()` left it (policy order,
    /// plus groups queued since at the end).
    pub fn queue(&self, status: GroupStatus) -> impl Iterator<Item = &SequenceGroup> {
        let keys = match status {
            GroupStatus::Waiting => &self.waiting,
            GroupStatus::Running => &self.running,
            GroupStatus::Swapped => &self.swapped,
        };
        keys.iter().map(|&k| self.registry.group(k))
    }

    /// Groups waiting for admission (new or preempted by recompute).
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Groups holding device blocks.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Groups swapped out to the CPU pool.
    pub fn num_swapped(&self) -> usize {
        self.swapped.len()
    }

    /// Groups not finished yet (all queues).
    pub fn num_unfinished_groups(&self) -> usize {
        self.registry.len()
    }

    /// Whether any request is still queued or running.
    pub fn has_unfinished(&self) -> bool {
        self.registry.len() > 0
    }

    fn allocate_seq_id(&mut self) -> SeqId {
        let id = self.next_seq_id;
        self.next_seq_id += 1;
        id
    }

    /// The running sequence `seq`, if it waits for this step's token.
    fn awaiting_seq_mut(&mut self, seq: SeqId) -> Result<&mut Sequence, SchedulerError> {
        let key = self
            .registry
            .key_of_seq(seq)
            .ok_or(SchedulerError::UnknownSequence(seq))?;
        let group = self.registry.group_mut(key);
        if group.status() != GroupStatus::Running {
            return Err(SchedulerError::SequenceNotRunning(seq));
        }
        let sequence = group
            .seq_mut(seq)
            .ok_or(SchedulerError::UnknownSequence(seq))?;
        if !sequence.awaits_token() {
            return Err(SchedulerError::NotAwaitingToken(seq));
        }
        Ok(sequence)
    }

    /// Removes group `key` from its queue and the registry, freeing every block it holds.
    pub(crate) fn retire(&mut self, key: GroupKey) -> Result<(), SchedulerError> {
        let status = self.registry.group(key).status();
        let queue = match status {
            GroupStatus::Waiting => &mut self.waiting,
            GroupStatus::Running => &mut self.running,
            GroupStatus::Swapped => &mut self.swapped,
        };
        if let Some(position) = queue.iter().position(|&k| k == key) {
            queue.remove(position);
        }
        self.release_and_remove(key)
    }

    /// Frees every block of group `key` and drops it from the registry (not from queues).
    pub(crate) fn release_and_remove(&mut self, key: GroupKey) -> Result<(), SchedulerError> {
        release_group(&mut self.block_manager, self.registry.group_mut(key))?;
        self.registry.remove(key);
        Ok(())
    }
}

/// Frees the blocks of every live sequence of `group` (after reporting their computed
/// tokens, so full blocks stay in the prefix cache) and resets their cursors.
pub(crate) fn release_group<M: BlockManager>(
    block_manager: &mut M,
    group: &mut SequenceGroup,
) -> Result<(), SchedulerError> {
    let status = group.status();
    group
        .seqs_mut()
        .iter_mut()
        .try_for_each(|seq| release_seq(block_manager, seq, status))
}

/// Frees `seq`'s blocks if its group (in `status`) holds any, reporting computed tokens first.
pub(crate) fn release_seq<M: BlockManager>(
    block_manager: &mut M,
    seq: &mut Sequence,
    status: GroupStatus,
) -> Result<(), SchedulerError> {
    match status {
        GroupStatus::Waiting => {}
        GroupStatus::Running => {
            commit_computed(block_manager, seq)?;
            block_manager.free(seq.id())?;
        }
        GroupStatus::Swapped => block_manager.free(seq.id())?,
    }
    seq.released();
    Ok(())
}

/// Reports `seq`'s computed tokens to the block manager if a block became full since the
/// last report (the protocol's `mark_computed`, batched by block).
pub(crate) fn commit_computed<M: BlockManager>(
    block_manager: &mut M,
    seq: &mut Sequence,
) -> Result<(), SchedulerError> {
    if let Some(computed) = seq.uncommitted(block_manager.block_size()) {
        block_manager.mark_computed(seq.id(), computed)?;
        seq.committed(computed);
    }
    Ok(())
}
