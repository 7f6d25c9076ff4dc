//! Preemption of a whole group (all-or-nothing) by swap or by recompute.

use kv_block::BlockManager;

use crate::config::PreemptionMode;
use crate::error::SchedulerError;
use crate::group::GroupStatus;
use crate::output::PreemptedGroup;
use crate::registry::GroupKey;
use crate::scheduler::{Scheduler, release_group};
use crate::step::Step;

impl<M: BlockManager> Scheduler<M> {
    /// Evicts running group `key` (already out of the running queue) in the configured mode.
    /// A swap the CPU pool cannot hold falls back to recompute, never to an error.
    pub(crate) fn preempt(&mut self, key: GroupKey, step: &mut Step) -> Result<(), SchedulerError> {
        let group = self.registry.group_mut(key);
        step.seq_weight -= group.seq_budget_weight();
        step.preempted = true;
        group.count_preemption();
        let wants_swap = match self.config.preemption_mode {
            PreemptionMode::Swap => true,
            PreemptionMode::Recompute => false,
            PreemptionMode::Auto => group.seq_budget_weight() > 1,
        };
        let request_id = group.request_id().clone();
        if wants_swap {
            self.scratch.clear();
            self.scratch.extend(group.seqs().iter().map(|s| s.id()));
            if self.block_manager.can_swap_out(&self.scratch)? {
                let copies = self.block_manager.swap_out(&self.scratch)?;
                step.out.blocks_to_swap_out.extend(copies);
                group.set_status(GroupStatus::Swapped);
                self.swapped.push(key);
                self.stats.preemptions_by_swap += 1;
                step.out.preempted.push(PreemptedGroup {
                    request_id,
                    mode: PreemptionMode::Swap,
                });
                return Ok(());
            }
            self.stats.swap_fallbacks += 1;
        }
        release_group(&mut self.block_manager, group)?;
        group.set_status(GroupStatus::Waiting);
        self.waiting.push(key);
        self.stats.preemptions_by_recompute += 1;
        step.out.preempted.push(PreemptedGroup {
            request_id,
            mode: PreemptionMode::Recompute,
        });
        Ok(())
    }
}
