//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use kv_block::{BlockManagerConfig, PagedBlockManager, PrefixCaching, SeqId, TokenId};
use scheduler::{AppendOutcome, Fcfs, Request, Scheduler, SchedulerConfig, SchedulerOutput};

/// A paged manager with a watermark of 0 and no prefix caching, as in vLLM's unit tests.
pub fn paged(block_size: usize, device: usize, cpu: usize) -> PagedBlockManager {
    paged_with(block_size, device, cpu, PrefixCaching::Disabled)
}

/// A paged manager with a watermark of 0.
pub fn paged_with(
    block_size: usize,
    device: usize,
    cpu: usize,
    caching: PrefixCaching,
) -> PagedBlockManager {
    let config = BlockManagerConfig::new(device, cpu)
        .with_block_size(block_size)
        .with_watermark(0.0);
    PagedBlockManager::new(config, caching).unwrap()
}

/// An FCFS scheduler.
pub fn fcfs(config: SchedulerConfig, manager: PagedBlockManager) -> Scheduler<PagedBlockManager> {
    Scheduler::new(config, manager, Box::new(Fcfs)).unwrap()
}

/// Prompt tokens `start..start + len`.
pub fn tokens(start: u32, len: usize) -> Vec<TokenId> {
    (start..start + len as u32).collect()
}

/// Adds request `id` with a prompt of `len` tokens arriving at `arrival`.
pub fn add<M: kv_block::BlockManager>(
    s: &mut Scheduler<M>,
    id: &str,
    len: usize,
    arrival: f64,
) -> SeqId {
    s.add_request(Request::new(id, tokens(100, len), arrival))
        .unwrap()
}

/// Plays the model: appends token 7 to every sequence whose chunk asked for logits.
pub fn sample_all<M: kv_block::BlockManager>(s: &mut Scheduler<M>, out: &SchedulerOutput) {
    for entry in out.scheduled_seqs.iter().filter(|e| e.needs_logits) {
        assert_eq!(
            s.append_token(entry.seq_id, 7).unwrap(),
            AppendOutcome::Appended
        );
    }
}

/// `schedule()` followed by the audits of output and state.
pub fn step<M: kv_block::BlockManager>(s: &mut Scheduler<M>) -> SchedulerOutput {
    let out = s.schedule().unwrap();
    s.check_output(&out).unwrap();
    s.check_invariants().unwrap();
    out
}

/// Request ids of the scheduled groups, in order.
pub fn scheduled_ids(out: &SchedulerOutput) -> Vec<String> {
    out.scheduled_groups
        .iter()
        .map(|g| g.request_id.to_string())
        .collect()
}

/// Request ids of the preempted groups, in order.
pub fn preempted_ids(out: &SchedulerOutput) -> Vec<String> {
    out.preempted
        .iter()
        .map(|g| g.request_id.to_string())
        .collect()
}
