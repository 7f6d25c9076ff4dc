//! Preemption modes, their fallback, and the progress guarantee for groups that outgrow the
//! pool.

mod common;

use common::*;
use kv_block::BlockManager;
use scheduler::{
    GroupStatus, IgnoreReason, Policy, PreemptionMode, Priority, Request, Scheduler,
    SchedulerConfig,
};

fn config(mode: PreemptionMode) -> SchedulerConfig {
    SchedulerConfig::default()
        .with_max_num_batched_tokens(64)
        .with_max_model_len(64)
        .with_preemption_mode(mode)
}

#[test]
fn swap_falls_back_to_recompute_when_the_cpu_pool_is_full() {
    let mut s = fcfs(config(PreemptionMode::Swap), paged(4, 3, 0));
    for i in 0..3 {
        add(&mut s, &i.to_string(), 3, i as f64);
    }
    for _ in 0..2 {
        let out = step(&mut s);
        sample_all(&mut s, &out);
    }
    let out = step(&mut s);
    assert_eq!(preempted_ids(&out), ["2", "1"]);
    assert!(
        out.preempted
            .iter()
            .all(|p| p.mode == PreemptionMode::Recompute)
    );
    assert!(out.blocks_to_swap_out.is_empty());
    assert_eq!(s.stats().swap_fallbacks, 2);
    assert_eq!(s.stats().preemptions_by_recompute, 2);
    assert_eq!(s.stats().preemptions_by_swap, 0);
}

#[test]
fn auto_mode_swaps_multi_sequence_groups() {
    let mut s = fcfs(config(PreemptionMode::Auto), paged(4, 4, 8));
    add(&mut s, "single", 3, 0.0);
    s.add_request(Request::new("pair", tokens(0, 3), 1.0).with_max_parallel_seqs(2))
        .unwrap();
    let out = step(&mut s);
    let pair_parent = out.scheduled_seqs[1].seq_id;
    let child = s.fork(pair_parent).unwrap();
    s.append_token(child, 1).unwrap();
    sample_all(&mut s, &out);
    let out = step(&mut s);
    assert_eq!(
        out.blocks_to_copy.len(),
        1,
        "the pair's shared block is copied"
    );
    sample_all(&mut s, &out);
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["single"]);
    assert_eq!(preempted_ids(&out), ["pair"]);
    assert_eq!(out.preempted[0].mode, PreemptionMode::Swap);
    assert_eq!(out.blocks_to_swap_out.len(), 2);
    assert_eq!(s.group("pair").unwrap().status(), GroupStatus::Swapped);
    assert_eq!(s.stats().preemptions_by_swap, 1);
}

#[test]
fn a_group_that_outgrows_the_whole_pool_ends_instead_of_looping() {
    let mut s = fcfs(config(PreemptionMode::Auto), paged(4, 2, 4));
    let seq = add(&mut s, "big", 7, 0.0);
    let out = step(&mut s);
    sample_all(&mut s, &out);
    let out = step(&mut s);
    sample_all(&mut s, &out);
    assert_eq!(s.sequence(seq).unwrap().len(), 9);
    let out = step(&mut s);
    assert!(out.is_empty());
    assert_eq!(out.ignored.len(), 1);
    assert_eq!(out.ignored[0].reason, IgnoreReason::KvCapacityExhausted);
    assert!(!s.has_unfinished());
    assert_eq!(s.block_manager().usage().device_used(), 0);
}

#[test]
fn the_priority_policy_admits_lower_values_first_and_preempts_higher_ones() {
    let mut s = Scheduler::new(
        config(PreemptionMode::Recompute),
        paged(4, 3, 0),
        Box::new(Priority),
    )
    .unwrap();
    assert_eq!(s.policy_name(), Priority.name());
    for (id, priority) in [("low", 5), ("mid", 1), ("high", 0)] {
        s.add_request(Request::new(id, tokens(0, 3), 0.0).with_priority(priority))
            .unwrap();
    }
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["high", "mid", "low"]);
    sample_all(&mut s, &out);
    let out = step(&mut s);
    sample_all(&mut s, &out);
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["high"]);
    assert_eq!(preempted_ids(&out), ["low", "mid"]);
}
