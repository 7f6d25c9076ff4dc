//! Cumulative counters of one scheduler.

use crate::sequence::FinishReason;

/// Counters since the scheduler was created. Invariant: they only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Calls of `schedule()`.
    pub steps: u64,
    /// Groups preempted by swapping to the CPU pool.
    pub preemptions_by_swap: u64,
    /// Groups preempted by recompute (including swap fallbacks).
    pub preemptions_by_recompute: u64,
    /// Swap preemptions that fell back to recompute because the CPU pool was full.
    pub swap_fallbacks: u64,
    /// Groups rejected or ended by the scheduler (see [`crate::IgnoreReason`]).
    pub ignored_groups: u64,
    /// Sequences finished by a stop condition.
    pub finished_stopped: u64,
    /// Sequences finished by a length cap.
    pub finished_length_capped: u64,
    /// Sequences discarded by sampling (pruned beams, unreturned best_of candidates).
    pub finished_discarded: u64,
}

impl SchedulerStats {
    /// Preemptions of either mode.
    pub fn preemptions(&self) -> u64 {
        self.preemptions_by_swap + self.preemptions_by_recompute
    }

    pub(crate) fn count_finish(&mut self, reason: FinishReason) {
        match reason {
            FinishReason::Stopped => self.finished_stopped += 1,
            FinishReason::LengthCapped => self.finished_length_capped += 1,
            FinishReason::Discarded => self.finished_discarded += 1,
        }
    }
}
