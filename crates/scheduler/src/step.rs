//! `schedule()`: one step of iteration-level scheduling.
//!
//! Order of a step, after reporting the previous step's computed tokens to the block manager
//! and sorting the queues by the policy:
//! - chunked prefill on: running groups (decodes, then prefill chunks, in one token budget;
//!   preempting the policy's victims when blocks run out), then swapped groups if nothing
//!   was preempted, then new prefills chunked to what is left of the budget;
//! - chunked prefill off (the paper): whole new prompts if any can be admitted (a
//!   prefill-only step); otherwise running decodes, then swapped groups.
//!
//! New groups are admitted only while no group is swapped out and nothing was preempted in
//! this step, head of the queue first (a blocked head blocks the rest, keeping the policy's
//! order).

use kv_block::{AllocStatus, AllocationRequest, BlockManager, SeqId};

use crate::group::{GroupStatus, SequenceGroup};
use crate::output::{IgnoreReason, IgnoredGroup, ScheduledGroup, ScheduledSeq, SchedulerOutput};
use crate::registry::GroupKey;
use crate::scheduler::{Scheduler, commit_computed};

/// The budgets and output of the step being built.
pub(crate) struct Step {
    pub(crate) out: SchedulerOutput,
    /// Tokens still available this step.
    pub(crate) tokens_left: usize,
    /// Weights of the groups holding device blocks.
    pub(crate) seq_weight: usize,
    /// Whether a group was preempted this step (then nothing new is admitted or swapped in).
    pub(crate) preempted: bool,
}

/// What became of a waiting group this step.
enum Admission {
    Admitted,
    Rejected(IgnoreReason),
    Blocked,
}

impl<M: BlockManager> Scheduler<M> {
    /// Plans one step: which sequences compute which tokens, which blocks move, which groups
    /// are preempted or rejected. Assumes the previous step's forward pass has completed.
    pub fn schedule(&mut self) -> Result<SchedulerOutput, crate::SchedulerError> {
        self.stats.steps += 1;
        self.commit_running()?;
        self.sort_queues();
        let seq_weight = self
            .running
            .iter()
            .map(|&k| self.registry.group(k).seq_budget_weight())
            .sum();
        let mut out = SchedulerOutput::default();
        out.scheduled_groups.reserve(self.running.len());
        out.scheduled_seqs.reserve(self.running.len());
        let mut step = Step {
            out,
            tokens_left: self.config.max_num_batched_tokens,
            seq_weight,
            preempted: false,
        };
        step.out.blocks_to_copy.append(&mut self.pending_copies);
        if self.config.chunked_prefill {
            self.schedule_running(&mut step)?;
            self.schedule_swapped(&mut step)?;
            self.schedule_waiting(&mut step)?;
        } else {
            self.schedule_waiting(&mut step)?;
            if step.out.scheduled_groups.is_empty() {
                self.schedule_running(&mut step)?;
                self.schedule_swapped(&mut step)?;
            }
        }
        step.out.num_batched_tokens = self.config.max_num_batched_tokens - step.tokens_left;
        Ok(step.out)
    }

    /// Reports the tokens computed by the previous step (forward pass done) for every group
    /// that may have run.
    fn commit_running(&mut self) -> Result<(), crate::SchedulerError> {
        for &key in &self.running {
            for seq in self.registry.group_mut(key).seqs_mut() {
                commit_computed(&mut self.block_manager, seq)?;
            }
        }
        Ok(())
    }

    fn sort_queues(&mut self) {
        let (registry, policy) = (&self.registry, &*self.policy);
        for queue in [&mut self.waiting, &mut self.running, &mut self.swapped] {
            queue.sort_by(|&a, &b| policy.compare(registry.group(a), registry.group(b)));
        }
    }

    /// Whether `group` may be prefilled in chunks: always with chunked prefill, and also when
    /// its pending tokens exceed the whole budget (only a multi-sequence group re-admitted
    /// after recompute can), since it could never run otherwise.
    fn may_chunk(&self, group: &SequenceGroup) -> bool {
        self.config.chunked_prefill
            || group.num_pending_tokens() > self.config.max_num_batched_tokens
    }

    fn schedule_running(&mut self, step: &mut Step) -> Result<(), crate::SchedulerError> {
        let mut queue = std::mem::take(&mut self.running);
        let mut kept = Vec::with_capacity(queue.len());
        // Decode tokens of groups not served yet: prefill chunks leave them room (only
        // chunked prefill mixes the two).
        let mut decode_reserve: usize = if self.config.chunked_prefill {
            queue
                .iter()
                .map(|&k| decode_tokens(self.registry.group(k)))
                .sum()
        } else {
            0
        };
        let mut next = 0;
        while next < queue.len() {
            let key = queue[next];
            next += 1;
            let group = self.registry.group(key);
            let decode = decode_tokens(group);
            decode_reserve = decode_reserve.saturating_sub(decode);
            let limit = if decode > 0 {
                step.tokens_left
            } else {
                step.tokens_left.saturating_sub(decode_reserve)
            };
            let mark = step.out.scheduled_seqs.len();
            let planned = plan_group(
                group,
                limit,
                self.may_chunk(group),
                &mut step.out.scheduled_seqs,
            );
            if planned == 0 {
                kept.push(key);
                continue;
            }
            let fits = loop {
                self.collect_unslotted(key, &step.out.scheduled_seqs[mark..]);
                if self.block_manager.can_append_slots(&self.scratch, 1)? {
                    break true;
                }
                if next == queue.len() {
                    break false;
                }
                let candidates: Vec<&SequenceGroup> = queue[next..]
                    .iter()
                    .map(|&k| self.registry.group(k))
                    .collect();
                let pick = self
                    .policy
                    .select_victim(&candidates)
                    .min(candidates.len() - 1);
                let victim = queue.remove(next + pick);
                decode_reserve =
                    decode_reserve.saturating_sub(decode_tokens(self.registry.group(victim)));
                self.preempt(victim, step)?;
            };
            if !fits {
                step.out.scheduled_seqs.truncate(mark);
                if kept.is_empty() {
                    // Alone on the device and still short of blocks: it can never grow.
                    self.ignore(key, IgnoreReason::KvCapacityExhausted, step)?;
                } else {
                    self.preempt(key, step)?;
                }
                continue;
            }
            self.append_unslotted(key, step)?;
            self.finalize(key, mark, planned, step);
            kept.push(key);
        }
        self.running = kept;
        Ok(())
    }

    fn schedule_swapped(&mut self, step: &mut Step) -> Result<(), crate::SchedulerError> {
        if step.preempted || self.swapped.is_empty() {
            return Ok(());
        }
        let mut queue = std::mem::take(&mut self.swapped).into_iter();
        for key in queue.by_ref() {
            let group = self.registry.group(key);
            let weight = group.seq_budget_weight();
            if step.seq_weight + weight > self.config.max_num_seqs {
                self.swapped.push(key);
                break;
            }
            self.scratch.clear();
            self.scratch.extend(group.seqs().iter().map(|s| s.id()));
            match self.block_manager.can_swap_in(&self.scratch)? {
                AllocStatus::Ok => {}
                AllocStatus::Later => {
                    self.swapped.push(key);
                    break;
                }
                AllocStatus::Never => {
                    self.ignore(key, IgnoreReason::KvCapacityExhausted, step)?;
                    continue;
                }
            }
            let mark = step.out.scheduled_seqs.len();
            let planned = plan_group(
                group,
                step.tokens_left,
                self.may_chunk(group),
                &mut step.out.scheduled_seqs,
            );
            if planned == 0 {
                self.swapped.push(key);
                break;
            }
            let copies = self.block_manager.swap_in(&self.scratch)?;
            step.out.blocks_to_swap_in.extend(copies);
            self.registry
                .group_mut(key)
                .set_status(GroupStatus::Running);
            step.seq_weight += weight;
            self.running.push(key);
            self.collect_unslotted(key, &step.out.scheduled_seqs[mark..]);
            if self.block_manager.can_append_slots(&self.scratch, 1)? {
                self.append_unslotted(key, step)?;
                self.finalize(key, mark, planned, step);
            } else {
                // Back on the device but idle this step; the running pass sorts it out next.
                step.out.scheduled_seqs.truncate(mark);
            }
        }
        self.swapped.extend(queue);
        Ok(())
    }

    fn schedule_waiting(&mut self, step: &mut Step) -> Result<(), crate::SchedulerError> {
        if step.preempted || !self.swapped.is_empty() || self.waiting.is_empty() {
            return Ok(());
        }
        let mut growth_reserve = None;
        let mut queue = std::mem::take(&mut self.waiting).into_iter();
        for key in queue.by_ref() {
            let group = self.registry.group(key);
            let limit = self.config.prompt_limit();
            if !group.was_admitted() && group.prompt_len() > limit {
                let reason = IgnoreReason::PromptTooLong {
                    len: group.prompt_len(),
                    limit,
                };
                self.ignore(key, reason, step)?;
                continue;
            }
            if step.tokens_left == 0
                || step.seq_weight + group.seq_budget_weight() > self.config.max_num_seqs
            {
                self.waiting.push(key);
                break;
            }
            match self.admit(key, step, &mut growth_reserve)? {
                Admission::Admitted => self.running.push(key),
                Admission::Rejected(reason) => self.ignore(key, reason, step)?,
                Admission::Blocked => {
                    self.waiting.push(key);
                    break;
                }
            }
        }
        self.waiting.extend(queue);
        Ok(())
    }

    /// Allocates and schedules the first chunk of waiting group `key`, or says why not.
    /// `growth_reserve` caches the blocks the running sequences need for their next token.
    fn admit(
        &mut self,
        key: GroupKey,
        step: &mut Step,
        growth_reserve: &mut Option<usize>,
    ) -> Result<Admission, crate::SchedulerError> {
        let alone = self.running.is_empty();
        let group = self.registry.group(key);
        let never = if group.was_admitted() {
            IgnoreReason::KvCapacityExhausted
        } else {
            IgnoreReason::PromptExceedsKvCapacity {
                len: group.prompt_len(),
            }
        };
        for seq in group.seqs() {
            let ids = [seq.id()];
            let request = allocation_request(group, &ids, seq.tokens());
            match self.block_manager.can_allocate(&request) {
                AllocStatus::Ok => {}
                AllocStatus::Never => return Ok(Admission::Rejected(never)),
                // On an empty device "later" never comes.
                AllocStatus::Later if alone => return Ok(Admission::Rejected(never)),
                AllocStatus::Later => return Ok(Admission::Blocked),
            }
        }
        if let Err(error) = self.allocate_group(key) {
            return match error {
                crate::SchedulerError::BlockManager(kv_block::KvError::OutOfBlocks { .. })
                    if alone =>
                {
                    Ok(Admission::Rejected(never))
                }
                crate::SchedulerError::BlockManager(kv_block::KvError::OutOfBlocks { .. }) => {
                    Ok(Admission::Blocked)
                }
                other => Err(other),
            };
        }
        let growth = next_token_blocks(self.registry.group(key), self.block_manager.block_size());
        if !alone {
            let reserve = *growth_reserve.get_or_insert_with(|| {
                let block_size = self.block_manager.block_size();
                self.running
                    .iter()
                    .map(|&k| next_token_blocks(self.registry.group(k), block_size))
                    .sum()
            });
            if self.block_manager.usage().device_free < reserve + growth {
                // Admitting it would force a preemption at the very next step.
                self.release_allocation(key, usize::MAX)?;
                return Ok(Admission::Blocked);
            }
        }
        let group = self.registry.group(key);
        let mark = step.out.scheduled_seqs.len();
        let planned = plan_group(
            group,
            step.tokens_left,
            self.may_chunk(group),
            &mut step.out.scheduled_seqs,
        );
        if planned == 0 {
            self.release_allocation(key, usize::MAX)?;
            return Ok(Admission::Blocked);
        }
        if let Some(reserve) = growth_reserve.as_mut() {
            *reserve += growth;
        }
        let group = self.registry.group_mut(key);
        group.set_status(GroupStatus::Running);
        step.seq_weight += group.seq_budget_weight();
        self.finalize(key, mark, planned, step);
        Ok(Admission::Admitted)
    }

    /// Allocates every live sequence of waiting group `key` (each over its own tokens); on
    /// failure frees what was allocated and returns the error.
    fn allocate_group(&mut self, key: GroupKey) -> Result<(), crate::SchedulerError> {
        let group = self.registry.group(key);
        let mut cached = Vec::with_capacity(group.seqs().len());
        for seq in group.seqs() {
            let ids = [seq.id()];
            let request = allocation_request(group, &ids, seq.tokens());
            match self.block_manager.allocate(&request) {
                Ok(allocation) => cached.push(allocation.num_computed_tokens),
                Err(error) => {
                    let done = cached.len();
                    self.release_allocation(key, done)?;
                    return Err(error.into());
                }
            }
        }
        let group = self.registry.group_mut(key);
        for (seq, cached) in group.seqs_mut().iter_mut().zip(cached) {
            seq.allocated(cached);
        }
        Ok(())
    }

    /// Frees the first `count` sequences of waiting group `key` after a failed admission.
    fn release_allocation(
        &mut self,
        key: GroupKey,
        count: usize,
    ) -> Result<(), crate::SchedulerError> {
        let group = self.registry.group_mut(key);
        for seq in group.seqs_mut().iter_mut().take(count) {
            self.block_manager.free(seq.id())?;
            seq.released();
        }
        Ok(())
    }

    /// Fills `scratch` with the planned sequences of group `key` that lack a slot for a
    /// token they compute this step.
    fn collect_unslotted(&mut self, key: GroupKey, planned: &[ScheduledSeq]) {
        let group = self.registry.group(key);
        self.scratch.clear();
        self.scratch.extend(planned.iter().filter_map(|entry| {
            let seq = group.seq(entry.seq_id)?;
            (seq.num_slots() < entry.start + entry.num_tokens).then_some(entry.seq_id)
        }));
    }

    /// Appends slots for the tokens listed in `scratch`, collecting copy-on-write pairs.
    fn append_unslotted(
        &mut self,
        key: GroupKey,
        step: &mut Step,
    ) -> Result<(), crate::SchedulerError> {
        let group = self.registry.group_mut(key);
        for &id in &self.scratch {
            let Some(seq) = group.seq_mut(id) else {
                continue;
            };
            if let Some(copy) = self.block_manager.append_slots(id, seq.unslotted())? {
                step.out.blocks_to_copy.push(copy);
            }
            seq.slots_appended();
        }
        Ok(())
    }

    /// Commits the plan of group `key` (entries from `mark` on): cursors advance, the group
    /// is listed in the output, the budget shrinks.
    fn finalize(&mut self, key: GroupKey, mark: usize, planned: usize, step: &mut Step) {
        let group = self.registry.group_mut(key);
        let mut is_prefill = false;
        for entry in &step.out.scheduled_seqs[mark..] {
            if let Some(seq) = group.seq_mut(entry.seq_id) {
                is_prefill |= !seq.prefilled();
                seq.advance(entry.num_tokens);
            }
        }
        step.out.scheduled_groups.push(ScheduledGroup {
            request_id: group.request_id().clone(),
            seqs: mark..step.out.scheduled_seqs.len(),
            is_prefill,
        });
        step.tokens_left -= planned;
    }

    /// Removes group `key` (already out of every queue) with `reason`, freeing its blocks.
    pub(crate) fn ignore(
        &mut self,
        key: GroupKey,
        reason: IgnoreReason,
        step: &mut Step,
    ) -> Result<(), crate::SchedulerError> {
        let group = self.registry.group(key);
        if group.status() == GroupStatus::Running {
            step.seq_weight -= group.seq_budget_weight();
        }
        step.out.ignored.push(IgnoredGroup {
            request_id: group.request_id().clone(),
            reason,
        });
        self.stats.ignored_groups += 1;
        self.release_and_remove(key)
    }
}

/// The allocation request for `seqs` of `group` over `tokens`.
fn allocation_request<'a>(
    group: &'a SequenceGroup,
    seqs: &'a [SeqId],
    tokens: &'a [kv_block::TokenId],
) -> AllocationRequest<'a> {
    AllocationRequest::new(seqs, tokens)
        .with_extra_keys(group.extra_keys())
        .with_max_new_tokens(group.max_new_tokens())
}

/// Decode tokens of `group` this step: its pending tokens if every sequence is decoding.
fn decode_tokens(group: &SequenceGroup) -> usize {
    if group.is_decoding() {
        group.num_pending_tokens()
    } else {
        0
    }
}

/// Sequences of `group` whose next token starts a new block (a one-step look-ahead of the
/// blocks the group needs; copy-on-write is not foreseen).
fn next_token_blocks(group: &SequenceGroup, block_size: usize) -> usize {
    group
        .seqs()
        .iter()
        .filter(|s| s.num_slots() % block_size == 0)
        .count()
}

/// Plans the tokens `group` computes this step within `limit` tokens, pushing one entry per
/// sequence that computes any; returns the tokens planned (0: nothing pushed).
///
/// If all pending tokens fit, every sequence computes all of them and needs logits.
/// Otherwise, when chunking is allowed, sequences compute chunks that stop short of their
/// last token, so that a group's sequences always sample in the same step.
pub(crate) fn plan_group(
    group: &SequenceGroup,
    limit: usize,
    may_chunk: bool,
    entries: &mut Vec<ScheduledSeq>,
) -> usize {
    let total = group.num_pending_tokens();
    if total == 0 {
        return 0;
    }
    let whole = total <= limit;
    if !whole && !may_chunk {
        return 0;
    }
    let mut left = limit;
    for seq in group.seqs() {
        let pending = seq.num_pending();
        let num_tokens = if whole {
            pending
        } else {
            pending.saturating_sub(1).min(left)
        };
        if num_tokens > 0 {
            entries.push(ScheduledSeq {
                seq_id: seq.id(),
                start: seq.num_computed(),
                num_tokens,
                needs_logits: whole,
            });
            left -= num_tokens;
        }
    }
    limit - left
}
