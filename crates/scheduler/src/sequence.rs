//! One sequence of a group: its tokens and how far the block manager and the model got.

use kv_block::{SeqId, TokenId};

/// Why a sequence stopped; given by the engine to [`crate::Scheduler::finish_sequence`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop condition matched (EOS, stop token or stop string).
    Stopped,
    /// The output reached `max_tokens`, or the sequence reached `max_model_len`.
    LengthCapped,
    /// Sampling dropped it (a pruned beam, a best_of candidate not returned).
    Discarded,
}

/// A sequence: prompt plus generated tokens, and three cursors over them.
///
/// Invariants, while its group holds blocks: `num_computed <= num_slots <= len()` and
/// `len() - num_slots <= 1` (only the token sampled by the last step lacks a slot). While its
/// group waits, `num_slots == num_computed == 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    id: SeqId,
    tokens: Vec<TokenId>,
    /// Tokens whose KV is computed, or scheduled in the step in flight.
    num_computed: usize,
    /// Tokens reported to the block manager with `mark_computed`.
    num_committed: usize,
    /// Tokens that have a slot in the block manager.
    num_slots: usize,
    /// Whether every token allocated at the last admission has been computed once.
    prefilled: bool,
}

impl Sequence {
    pub(crate) fn new(id: SeqId, tokens: Vec<TokenId>) -> Self {
        Self {
            id,
            tokens,
            num_computed: 0,
            num_committed: 0,
            num_slots: 0,
            prefilled: false,
        }
    }

    /// The sequence id (unique for the scheduler's lifetime).
    pub fn id(&self) -> SeqId {
        self.id
    }

    /// Prompt and generated tokens.
    pub fn tokens(&self) -> &[TokenId] {
        &self.tokens
    }

    /// Number of tokens, prompt included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Never true for a live sequence (a prompt has at least one token).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Tokens whose KV is computed or being computed by the step in flight.
    pub fn num_computed(&self) -> usize {
        self.num_computed
    }

    /// Tokens that hold a slot in the block manager.
    pub fn num_slots(&self) -> usize {
        self.num_slots
    }

    /// Tokens still to compute.
    pub fn num_pending(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    /// Whether the last step computed this sequence's last token, so the engine may append
    /// the token it sampled from those logits.
    pub fn awaits_token(&self) -> bool {
        self.num_computed == self.tokens.len()
    }

    pub(crate) fn prefilled(&self) -> bool {
        self.prefilled
    }

    pub(crate) fn push_token(&mut self, token: TokenId) {
        self.tokens.push(token);
    }

    /// Tokens without a slot yet (appended by the engine since the last step).
    pub(crate) fn unslotted(&self) -> &[TokenId] {
        &self.tokens[self.num_slots..]
    }

    pub(crate) fn slots_appended(&mut self) {
        self.num_slots = self.tokens.len();
    }

    /// After an allocation of every token with `cached` leading tokens already computed.
    pub(crate) fn allocated(&mut self, cached: usize) {
        self.num_slots = self.tokens.len();
        self.num_computed = cached;
        self.num_committed = cached;
        self.prefilled = false;
    }

    /// After its blocks were freed for recompute (or an admission was rolled back).
    pub(crate) fn released(&mut self) {
        self.num_slots = 0;
        self.num_computed = 0;
        self.num_committed = 0;
        self.prefilled = false;
    }

    /// Records that `num_tokens` more tokens are computed by the step being scheduled.
    pub(crate) fn advance(&mut self, num_tokens: usize) {
        self.num_computed += num_tokens;
        if self.num_computed == self.tokens.len() {
            self.prefilled = true;
        }
    }

    /// The computed count to report to the block manager, if a block became full since the
    /// last report (only full blocks matter to the prefix cache).
    pub(crate) fn uncommitted(&self, block_size: usize) -> Option<usize> {
        (self.num_computed / block_size > self.num_committed / block_size)
            .then_some(self.num_computed)
    }

    pub(crate) fn committed(&mut self, num_computed: usize) {
        self.num_committed = num_computed;
    }

    pub(crate) fn fork(&self, child: SeqId) -> Self {
        Self {
            id: child,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_follow_allocation_steps_and_release() {
        let mut seq = Sequence::new(7, vec![1, 2, 3, 4, 5]);
        assert_eq!(seq.num_pending(), 5);
        seq.allocated(4);
        assert_eq!((seq.num_slots(), seq.num_computed()), (5, 4));
        assert!(seq.uncommitted(2).is_none());
        seq.advance(1);
        assert!(seq.awaits_token() && seq.prefilled());
        seq.push_token(6);
        assert_eq!(seq.unslotted(), &[6]);
        assert!(!seq.awaits_token());
        seq.slots_appended();
        seq.advance(1);
        seq.push_token(7);
        seq.slots_appended();
        seq.advance(1);
        assert_eq!(seq.uncommitted(2), Some(7));
        seq.committed(7);
        assert!(seq.uncommitted(2).is_none());
        seq.released();
        assert_eq!((seq.num_slots(), seq.num_computed(), seq.len()), (0, 0, 7));
        assert!(!seq.prefilled());
    }
}
