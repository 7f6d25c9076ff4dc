//! A sequence group: one request and the sequences it runs together (gang-scheduled).

use kv_block::SeqId;

use crate::request::{Request, RequestId};
use crate::sequence::Sequence;

/// Which queue a group is in. Finished groups leave the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStatus {
    /// Not holding blocks: new, or preempted by recompute.
    Waiting,
    /// Holding device blocks; scheduled whenever the budgets allow.
    Running,
    /// Its blocks are in the CPU pool.
    Swapped,
}

/// One request's sequences and the facts policies order by.
///
/// Invariants: at least one live sequence (a group whose last sequence finishes leaves the
/// scheduler); every live sequence shares the group's status; the group's weight against
/// `max_num_seqs` is [`SequenceGroup::seq_budget_weight`].
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceGroup {
    request_id: RequestId,
    arrival_time: f64,
    arrival_order: u64,
    priority: i64,
    prompt_len: usize,
    max_parallel_seqs: usize,
    max_new_tokens: usize,
    extra_keys: Box<[u8]>,
    seqs: Vec<Sequence>,
    status: GroupStatus,
    admitted: bool,
    num_preemptions: u32,
    num_finished_seqs: usize,
}

impl SequenceGroup {
    pub(crate) fn new(request: Request, first_seq: SeqId, arrival_order: u64) -> Self {
        Self {
            prompt_len: request.prompt.len(),
            request_id: request.request_id,
            arrival_time: request.arrival_time,
            arrival_order,
            priority: request.priority,
            max_parallel_seqs: request.max_parallel_seqs,
            max_new_tokens: request.max_new_tokens,
            extra_keys: request.extra_keys.into_boxed_slice(),
            seqs: vec![Sequence::new(first_seq, request.prompt)],
            status: GroupStatus::Waiting,
            admitted: false,
            num_preemptions: 0,
            num_finished_seqs: 0,
        }
    }

    /// The request id.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// Arrival time in seconds.
    pub fn arrival_time(&self) -> f64 {
        self.arrival_time
    }

    /// Insertion order among all requests (ties of `arrival_time` break on it).
    pub fn arrival_order(&self) -> u64 {
        self.arrival_order
    }

    /// Priority (lower is served first by [`crate::Priority`]).
    pub fn priority(&self) -> i64 {
        self.priority
    }

    /// Tokens of the original prompt.
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// Sequences the group may run at once.
    pub fn max_parallel_seqs(&self) -> usize {
        self.max_parallel_seqs
    }

    /// The output-length hint for static reservations.
    pub fn max_new_tokens(&self) -> usize {
        self.max_new_tokens
    }

    /// Prefix-cache extra keys.
    pub fn extra_keys(&self) -> &[u8] {
        &self.extra_keys
    }

    /// Live (unfinished) sequences, oldest first.
    pub fn seqs(&self) -> &[Sequence] {
        &self.seqs
    }

    /// The queue the group is in.
    pub fn status(&self) -> GroupStatus {
        self.status
    }

    /// Whether the group has been admitted at least once (it may be waiting again after a
    /// recompute preemption).
    pub fn was_admitted(&self) -> bool {
        self.admitted
    }

    /// Times the group was preempted (either mode).
    pub fn num_preemptions(&self) -> u32 {
        self.num_preemptions
    }

    /// Sequences of the group that finished so far.
    pub fn num_finished_seqs(&self) -> usize {
        self.num_finished_seqs
    }

    /// Sequences the group counts against `max_num_seqs`: the larger of its live sequences
    /// and `max_parallel_seqs`, so forks after the first sample never overflow the budget.
    pub fn seq_budget_weight(&self) -> usize {
        self.seqs.len().max(self.max_parallel_seqs)
    }

    /// Tokens still to compute, over all live sequences.
    pub fn num_pending_tokens(&self) -> usize {
        self.seqs.iter().map(Sequence::num_pending).sum()
    }

    /// Whether every live sequence is past its prefill (at most one token to compute each).
    pub fn is_decoding(&self) -> bool {
        self.seqs.iter().all(|s| s.num_pending() <= 1)
    }

    /// The live sequence `seq`.
    pub fn seq(&self, seq: SeqId) -> Option<&Sequence> {
        self.seqs.iter().find(|s| s.id() == seq)
    }

    pub(crate) fn seq_mut(&mut self, seq: SeqId) -> Option<&mut Sequence> {
        self.seqs.iter_mut().find(|s| s.id() == seq)
    }

    pub(crate) fn seqs_mut(&mut self) -> &mut [Sequence] {
        &mut self.seqs
    }

    pub(crate) fn push_seq(&mut self, seq: Sequence) {
        self.seqs.push(seq);
    }

    /// Removes the live sequence `seq`, counting it finished; `None` if it is not live.
    pub(crate) fn remove_seq(&mut self, seq: SeqId) -> Option<Sequence> {
        let index = self.seqs.iter().position(|s| s.id() == seq)?;
        self.num_finished_seqs += 1;
        Some(self.seqs.remove(index))
    }

    pub(crate) fn set_status(&mut self, status: GroupStatus) {
        if status == GroupStatus::Running {
            self.admitted = true;
        }
        self.status = status;
    }

    pub(crate) fn count_preemption(&mut self) {
        self.num_preemptions += 1;
    }
}
