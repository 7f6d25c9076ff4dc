//! An audit of the scheduler's state against its block manager (O(sequences + blocks)), run
//! by the tests and the simulator after every step.

use std::collections::HashSet;

use kv_block::{BlockId, BlockManager, Location};

use crate::group::GroupStatus;
use crate::scheduler::Scheduler;

impl<M: BlockManager> Scheduler<M> {
    /// Checks every structural invariant and describes the first violation:
    /// - each live group is in exactly one queue, the one its status names;
    /// - the sequence index covers exactly the live sequences;
    /// - running sequences live on the device with exactly their slotted tokens, at most one
    ///   token unslotted, `computed <= slots`; swapped ones live in the CPU pool; waiting ones
    ///   hold no blocks;
    /// - the running groups' weights fit `max_num_seqs`;
    /// - the blocks referenced by the sequences are exactly the used blocks of each pool.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for (status, queue) in [
            (GroupStatus::Waiting, &self.waiting),
            (GroupStatus::Running, &self.running),
            (GroupStatus::Swapped, &self.swapped),
        ] {
            for &key in queue {
                if !seen.insert(key) {
                    return Err(format!("group key {key} is queued twice"));
                }
                let group = self.registry.group(key);
                if group.status() != status {
                    return Err(format!(
                        "{} is {:?} but queued as {status:?}",
                        group.request_id(),
                        group.status()
                    ));
                }
            }
        }
        if seen.len() != self.registry.len() {
            return Err(format!(
                "{} groups queued, {} live",
                seen.len(),
                self.registry.len()
            ));
        }
        let mut device_blocks: HashSet<BlockId> = HashSet::new();
        let mut cpu_blocks: HashSet<BlockId> = HashSet::new();
        let mut live_seqs = 0;
        let mut running_weight = 0;
        for (key, group) in self.registry.groups() {
            if !seen.contains(&key) {
                return Err(format!("{} is in no queue", group.request_id()));
            }
            if group.seqs().is_empty() {
                return Err(format!("{} has no live sequence", group.request_id()));
            }
            if group.status() == GroupStatus::Running {
                running_weight += group.seq_budget_weight();
            }
            for seq in group.seqs() {
                live_seqs += 1;
                let id = seq.id();
                if self.registry.key_of_seq(id) != Some(key) {
                    return Err(format!("sequence {id} is not indexed to its group"));
                }
                let expected = match group.status() {
                    GroupStatus::Waiting => {
                        if self.block_manager.location(id).is_ok() || seq.num_slots() != 0 {
                            return Err(format!("waiting sequence {id} holds blocks"));
                        }
                        continue;
                    }
                    GroupStatus::Running => Location::Device,
                    GroupStatus::Swapped => Location::Cpu,
                };
                let location = self.block_manager.location(id).map_err(|e| e.to_string())?;
                if location != expected {
                    return Err(format!(
                        "sequence {id} is in {location:?}, not {expected:?}"
                    ));
                }
                let table = self
                    .block_manager
                    .block_table(id)
                    .map_err(|e| e.to_string())?;
                if table.num_tokens() != seq.num_slots()
                    || seq.len() - seq.num_slots() > 1
                    || seq.num_computed() > seq.num_slots()
                {
                    return Err(format!(
                        "sequence {id}: {} tokens, {} slots ({} in the table), {} computed",
                        seq.len(),
                        seq.num_slots(),
                        table.num_tokens(),
                        seq.num_computed()
                    ));
                }
                let blocks = match location {
                    Location::Device => &mut device_blocks,
                    Location::Cpu => &mut cpu_blocks,
                };
                blocks.extend(table.blocks());
            }
        }
        if live_seqs != self.registry.num_indexed_seqs() {
            return Err(format!(
                "{live_seqs} live sequences, {} indexed",
                self.registry.num_indexed_seqs()
            ));
        }
        if running_weight > self.config.max_num_seqs {
            return Err(format!(
                "running groups weigh {running_weight} sequences, limit {}",
                self.config.max_num_seqs
            ));
        }
        let usage = self.block_manager.usage();
        if device_blocks.len() != usage.device_used() || cpu_blocks.len() != usage.cpu_used() {
            return Err(format!(
                "sequences reference {} device and {} CPU blocks; the manager uses {} and {}",
                device_blocks.len(),
                cpu_blocks.len(),
                usage.device_used(),
                usage.cpu_used()
            ));
        }
        Ok(())
    }
}

impl<M: BlockManager> Scheduler<M> {
    /// Checks one step's output against the budgets and the scheduler's state right after
    /// `schedule()`: tokens add up and fit the budget, no sequence appears twice or beyond
    /// its tokens, at most `max_num_seqs` sequences run, swap-in and swap-out never share a
    /// step, and exactly the chunks that reach a sequence's end ask for logits.
    pub fn check_output(&self, out: &crate::SchedulerOutput) -> Result<(), String> {
        let total: usize = out.scheduled_seqs.iter().map(|s| s.num_tokens).sum();
        if total != out.num_batched_tokens || total > self.config.max_num_batched_tokens {
            return Err(format!(
                "{total} tokens scheduled, {} reported, budget {}",
                out.num_batched_tokens, self.config.max_num_batched_tokens
            ));
        }
        if out.scheduled_seqs.len() > self.config.max_num_seqs {
            return Err(format!(
                "{} sequences scheduled, limit {}",
                out.scheduled_seqs.len(),
                self.config.max_num_seqs
            ));
        }
        if !out.blocks_to_swap_in.is_empty() && !out.blocks_to_swap_out.is_empty() {
            return Err("swap-in and swap-out in the same step".into());
        }
        let mut seen = HashSet::new();
        for group in &out.scheduled_groups {
            for entry in out.seqs(group) {
                if !seen.insert(entry.seq_id) {
                    return Err(format!("sequence {} scheduled twice", entry.seq_id));
                }
                let seq = self
                    .sequence(entry.seq_id)
                    .ok_or_else(|| format!("scheduled sequence {} is not live", entry.seq_id))?;
                let end = entry.start + entry.num_tokens;
                if entry.num_tokens == 0
                    || seq.num_computed() != end
                    || entry.needs_logits != (end == seq.len())
                {
                    return Err(format!(
                        "sequence {}: chunk {}..{end} (logits {}) over {} tokens",
                        entry.seq_id,
                        entry.start,
                        entry.needs_logits,
                        seq.len()
                    ));
                }
            }
        }
        Ok(())
    }
}
