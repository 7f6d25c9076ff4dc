//! Scheduler cases mirroring vLLM's tests/core/test_scheduler.py (reference §7.2), adapted to
//! real block managers instead of mocks: block size 4, tiny pools, watermark 0.

mod common;

use common::*;
use kv_block::BlockManager;
use scheduler::{GroupStatus, IgnoreReason, PreemptionMode, Request, SchedulerConfig};

fn config(budget: usize, max_seqs: usize, max_len: usize) -> SchedulerConfig {
    SchedulerConfig::default()
        .with_max_num_batched_tokens(budget)
        .with_max_num_seqs(max_seqs)
        .with_max_model_len(max_len)
}

#[test]
fn add_and_abort_empty_every_queue_and_free_every_block() {
    let mut s = fcfs(config(64, 64, 64), paged(4, 16, 0));
    for i in 0..4 {
        add(&mut s, &i.to_string(), 4, i as f64);
    }
    assert_eq!(s.num_unfinished_groups(), 4);
    let out = step(&mut s);
    assert_eq!(out.scheduled_groups.len(), 4);
    assert!(s.block_manager().usage().device_used() > 0);
    for i in 0..4 {
        s.abort(&i.to_string()).unwrap();
    }
    assert!(!s.has_unfinished());
    assert_eq!(
        (s.num_waiting(), s.num_running(), s.num_swapped()),
        (0, 0, 0)
    );
    assert_eq!(s.block_manager().usage().device_used(), 0);
    assert!(s.abort("0").is_err());
    s.check_invariants().unwrap();
}

#[test]
fn schedule_simple_prefills_all_then_decodes_all() {
    let mut s = fcfs(config(64, 64, 64), paged(4, 16, 0));
    for i in 0..4 {
        add(&mut s, &i.to_string(), 4, i as f64);
    }
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["0", "1", "2", "3"]);
    assert_eq!(out.num_batched_tokens, 16);
    assert_eq!(out.num_prefill_groups(), 4);
    assert!(out.blocks_to_swap_in.is_empty() && out.blocks_to_swap_out.is_empty());
    assert!(out.blocks_to_copy.is_empty());
    sample_all(&mut s, &out);
    let out = step(&mut s);
    assert_eq!(out.num_batched_tokens, 4);
    assert_eq!(out.num_prefill_groups(), 0);
    assert!(
        out.scheduled_seqs
            .iter()
            .all(|e| e.num_tokens == 1 && e.start == 4)
    );
}

#[test]
fn a_new_prefill_runs_alone_without_chunking() {
    let mut s = fcfs(config(64, 64, 64), paged(4, 64, 0));
    add(&mut s, "0", 4, 0.0);
    let out = step(&mut s);
    sample_all(&mut s, &out);
    let out = step(&mut s);
    assert_eq!(out.num_prefill_groups(), 0);
    sample_all(&mut s, &out);
    add(&mut s, "1", 30, 1.0);
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["1"]);
    assert_eq!(out.num_batched_tokens, 30);
    sample_all(&mut s, &out);
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["0", "1"]);
    assert_eq!(out.num_batched_tokens, 2);
}

#[test]
fn preemption_then_abort_recomputes_the_victim_with_its_generated_tokens() {
    // Two 3-token prompts fill the 2-block pool; the third step needs a new block for both.
    let mut s = fcfs(config(64, 64, 64), paged(4, 2, 0));
    add(&mut s, "A", 3, 0.0);
    add(&mut s, "B", 3, 1.0);
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["A", "B"]);
    sample_all(&mut s, &out);
    let out = step(&mut s);
    assert_eq!(out.num_batched_tokens, 2);
    sample_all(&mut s, &out);
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["A"]);
    assert_eq!(preempted_ids(&out), ["B"]);
    assert_eq!(out.preempted[0].mode, PreemptionMode::Recompute);
    assert_eq!(s.group("B").unwrap().status(), GroupStatus::Waiting);
    sample_all(&mut s, &out);
    s.abort("A").unwrap();
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["B"]);
    assert_eq!(out.num_batched_tokens, 5);
    assert_eq!(out.scheduled_seqs[0].start, 0);
    assert!(out.scheduled_groups[0].is_prefill);
    assert_eq!(s.stats().preemptions_by_recompute, 1);
}

#[test]
fn max_num_seqs_limits_admission() {
    let mut s = fcfs(config(64, 2, 64), paged(4, 64, 0));
    add(&mut s, "0", 4, 0.0);
    let out = step(&mut s);
    sample_all(&mut s, &out);
    add(&mut s, "1", 4, 1.0);
    add(&mut s, "2", 4, 2.0);
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["1"]);
    assert_eq!(s.num_waiting(), 1);
}

#[test]
fn parallel_requests_weigh_their_width_against_max_num_seqs() {
    let mut s = fcfs(config(64, 3, 64), paged(4, 64, 0));
    s.add_request(Request::new("wide", tokens(0, 4), 0.0).with_max_parallel_seqs(2))
        .unwrap();
    add(&mut s, "1", 4, 1.0);
    add(&mut s, "2", 4, 2.0);
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["wide", "1"]);
    let too_wide = Request::new("x", tokens(0, 4), 3.0).with_max_parallel_seqs(4);
    assert!(s.add_request(too_wide).is_err());
}

#[test]
fn an_overlong_prompt_is_ignored_without_using_the_budget() {
    let mut s = fcfs(config(64, 64, 30), paged(4, 64, 0));
    add(&mut s, "long", 60, 0.0);
    let out = step(&mut s);
    assert_eq!(out.ignored.len(), 1);
    assert_eq!(
        out.ignored[0].reason,
        IgnoreReason::PromptTooLong { len: 60, limit: 30 }
    );
    assert_eq!(
        out.ignored[0].reason.to_string(),
        "input prompt (60 tokens) is too long and exceeds limit of 30"
    );
    assert_eq!(out.num_batched_tokens, 0);
    assert_eq!(s.num_waiting(), 0);
    assert!(!s.has_unfinished());
}

#[test]
fn the_token_budget_limits_whole_prompts() {
    let mut s = fcfs(config(60, 64, 60), paged(4, 64, 0));
    add(&mut s, "0", 60, 0.0);
    add(&mut s, "1", 60, 1.0);
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["0"]);
    assert_eq!(s.num_waiting(), 1);

    let mut s = fcfs(config(60, 64, 60), paged(4, 64, 0));
    add(&mut s, "0", 30, 0.0);
    add(&mut s, "1", 60, 1.0);
    assert_eq!(scheduled_ids(&step(&mut s)), ["0"]);

    let mut s = fcfs(config(90, 64, 60), paged(4, 64, 0));
    add(&mut s, "0", 30, 0.0);
    add(&mut s, "1", 60, 1.0);
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["0", "1"]);
    assert_eq!(out.num_batched_tokens, 90);
}

#[test]
fn max_num_seqs_limits_a_step() {
    let mut s = fcfs(config(64, 2, 64), paged(4, 64, 0));
    for i in 0..3 {
        add(&mut s, &i.to_string(), 4, i as f64);
    }
    assert_eq!(scheduled_ids(&step(&mut s)), ["0", "1"]);
}

#[test]
fn block_capacity_later_waits_and_never_is_ignored() {
    // Later: 9-token prompts need 3 blocks; a 4-block pool holds one at a time.
    let mut s = fcfs(config(64, 64, 64), paged(4, 4, 0));
    for i in 0..3 {
        add(&mut s, &i.to_string(), 9, i as f64);
    }
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["0"]);
    assert_eq!(s.num_waiting(), 2);
    assert!(out.ignored.is_empty());

    // Never: 20-token prompts need 5 blocks, more than the pool.
    let mut s = fcfs(config(64, 64, 64), paged(4, 4, 0));
    for i in 0..3 {
        add(&mut s, &i.to_string(), 20, i as f64);
    }
    let out = step(&mut s);
    assert!(out.is_empty());
    assert_eq!(out.ignored.len(), 3);
    assert!(
        out.ignored
            .iter()
            .all(|g| g.reason == IgnoreReason::PromptExceedsKvCapacity { len: 20 })
    );
    assert!(!s.has_unfinished());
}

#[test]
fn decode_preemption_takes_the_latest_then_the_group_itself() {
    let mut s = fcfs(config(64, 64, 64), paged(4, 3, 0));
    for i in 0..3 {
        add(&mut s, &i.to_string(), 3, i as f64);
    }
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["0", "1", "2"]);
    sample_all(&mut s, &out);
    let out = step(&mut s);
    sample_all(&mut s, &out);
    // Every group now needs a fresh block and none is free.
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["0"]);
    assert_eq!(preempted_ids(&out), ["2", "1"]);
    assert!(out.blocks_to_swap_out.is_empty());
    assert!(
        out.preempted
            .iter()
            .all(|p| p.mode == PreemptionMode::Recompute)
    );
    assert_eq!(out.num_batched_tokens, 1);
}

#[test]
fn copy_on_write_pairs_reach_the_output() {
    let mut s = fcfs(config(64, 64, 64), paged(4, 16, 0));
    s.add_request(Request::new("beam", tokens(0, 3), 0.0).with_max_parallel_seqs(2))
        .unwrap();
    let out = step(&mut s);
    let parent = out.scheduled_seqs[0].seq_id;
    let child = s.fork(parent).unwrap();
    s.append_token(child, 1).unwrap();
    s.append_token(parent, 2).unwrap();
    let shared = s.block_manager().block_table(parent).unwrap().blocks()[0];
    let out = step(&mut s);
    assert_eq!(out.blocks_to_copy.len(), 1);
    assert_eq!(out.blocks_to_copy[0].src, shared);
    assert_ne!(out.blocks_to_copy[0].dst, shared);
    assert_eq!(out.scheduled_seqs.len(), 2);
}

#[test]
fn swapped_groups_wait_for_blocks_and_block_admission() {
    // Two 2-sequence groups on a 4-block pool; the CPU pool takes a swapped group.
    let swap = config(64, 64, 64).with_preemption_mode(PreemptionMode::Swap);
    let mut s = fcfs(swap, paged(4, 4, 8));
    for id in ["A", "B"] {
        s.add_request(Request::new(id, tokens(0, 3), 0.0).with_max_parallel_seqs(2))
            .unwrap();
    }
    let out = step(&mut s);
    for entry in out.scheduled_seqs.clone() {
        let child = s.fork(entry.seq_id).unwrap();
        s.append_token(child, 1).unwrap();
        s.append_token(entry.seq_id, 2).unwrap();
    }
    // Copy-on-write needs 4 fresh blocks and only 2 are free: B is swapped out.
    let out = step(&mut s);
    assert_eq!(preempted_ids(&out), ["B"]);
    assert_eq!(out.preempted[0].mode, PreemptionMode::Swap);
    assert!(!out.blocks_to_swap_out.is_empty());
    assert_eq!(s.group("B").unwrap().status(), GroupStatus::Swapped);
    sample_all(&mut s, &out);
    add(&mut s, "C", 1, 1.0);
    // A holds the device: B cannot come back, and C may not be admitted meanwhile.
    let out = step(&mut s);
    assert!(out.blocks_to_swap_in.is_empty());
    assert_eq!(scheduled_ids(&out), ["A"]);
    assert_eq!(s.group("C").unwrap().status(), GroupStatus::Waiting);
    sample_all(&mut s, &out);
    s.abort("A").unwrap();
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["B"]);
    assert!(!out.blocks_to_swap_in.is_empty());
    assert_eq!(out.num_batched_tokens, 2);
    assert_eq!(s.stats().preemptions_by_swap, 1);
}
