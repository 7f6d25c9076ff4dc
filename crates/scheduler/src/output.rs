//! What one `schedule()` call hands the executor.

use std::ops::Range;

use kv_block::{BlockCopy, SeqId};

use crate::config::PreemptionMode;
use crate::request::RequestId;

/// The tokens one sequence computes this step: positions `start..start + num_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledSeq {
    /// The sequence.
    pub seq_id: SeqId,
    /// Position of the first token computed this step (tokens before it have KV).
    pub start: usize,
    /// Tokens computed this step: a prefill chunk or one decode token; at least 1.
    pub num_tokens: usize,
    /// Whether the last computed token's logits are needed, i.e. the chunk reaches the end
    /// of the sequence and the engine must sample (and then append) one token.
    pub needs_logits: bool,
}

/// A group scheduled this step; its sequences are `SchedulerOutput::seqs(group)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledGroup {
    /// The request.
    pub request_id: RequestId,
    /// Range of its entries in [`SchedulerOutput::scheduled_seqs`].
    pub seqs: Range<usize>,
    /// Whether any of its sequences computes part of a prompt (or, after a recompute
    /// preemption, of prompt plus generated tokens) rather than a decode token.
    pub is_prefill: bool,
}

/// A group evicted this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreemptedGroup {
    /// The request.
    pub request_id: RequestId,
    /// The mode actually used ([`PreemptionMode::Swap`] or [`PreemptionMode::Recompute`];
    /// a swap the CPU pool could not hold is reported as recompute).
    pub mode: PreemptionMode,
}

/// Why a group left the scheduler without running to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// The prompt is longer than the scheduler allows (`max_model_len`, and the token budget
    /// when chunked prefill is off).
    PromptTooLong {
        /// Prompt tokens.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The prompt needs more blocks than the whole device pool (less the watermark) holds.
    PromptExceedsKvCapacity {
        /// Prompt tokens.
        len: usize,
    },
    /// An admitted group cannot continue even alone on the device: its sequences outgrew the
    /// pool (or a static reservation). It ends with the tokens generated so far.
    KvCapacityExhausted,
}

impl std::fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::PromptTooLong { len, limit } => write!(
                f,
                "input prompt ({len} tokens) is too long and exceeds limit of {limit}"
            ),
            Self::PromptExceedsKvCapacity { len } => write!(
                f,
                "input prompt ({len} tokens) exceeds the capacity of the block manager"
            ),
            Self::KvCapacityExhausted => write!(
                f,
                "the sequences outgrew the KV cache and cannot continue even alone"
            ),
        }
    }
}

/// A group removed by the scheduler this step, with its reason. Its blocks are freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredGroup {
    /// The request.
    pub request_id: RequestId,
    /// Why.
    pub reason: IgnoreReason,
}

/// Everything the executor needs for one step.
///
/// Invariants: `num_batched_tokens` is the sum of `scheduled_seqs[..].num_tokens` and at most
/// `max_num_batched_tokens`; a sequence appears at most once; swap-in and swap-out never
/// happen in the same step; copies must run in the order swap out, swap in, copy, before the
/// forward pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerOutput {
    /// Scheduled groups, in serving order.
    pub scheduled_groups: Vec<ScheduledGroup>,
    /// Scheduled sequences, group by group (see [`ScheduledGroup::seqs`]).
    pub scheduled_seqs: Vec<ScheduledSeq>,
    /// CPU → device block copies.
    pub blocks_to_swap_in: Vec<BlockCopy>,
    /// Device → CPU block copies.
    pub blocks_to_swap_out: Vec<BlockCopy>,
    /// Device → device copies: forks of static reservations, then copy-on-write.
    pub blocks_to_copy: Vec<BlockCopy>,
    /// Groups preempted this step.
    pub preempted: Vec<PreemptedGroup>,
    /// Groups rejected or ended by the scheduler this step.
    pub ignored: Vec<IgnoredGroup>,
    /// Tokens computed this step.
    pub num_batched_tokens: usize,
}

impl SchedulerOutput {
    /// The scheduled sequences of `group`.
    pub fn seqs(&self, group: &ScheduledGroup) -> &[ScheduledSeq] {
        &self.scheduled_seqs[group.seqs.clone()]
    }

    /// Scheduled groups that compute prompt tokens.
    pub fn num_prefill_groups(&self) -> usize {
        self.scheduled_groups
            .iter()
            .filter(|g| g.is_prefill)
            .count()
    }

    /// Whether nothing runs this step.
    pub fn is_empty(&self) -> bool {
        self.scheduled_seqs.is_empty()
    }
}
