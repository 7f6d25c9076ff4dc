//! Chunked prefill (vLLM's tests/core/test_chunked_prefill_scheduler.py, adapted): decodes and
//! prefill chunks share one token budget.

mod common;

use common::*;
use kv_block::PrefixCaching;
use scheduler::{PreemptionMode, Request, SchedulerConfig};

fn chunked(budget: usize, max_seqs: usize) -> SchedulerConfig {
    SchedulerConfig::default()
        .with_chunked_prefill(true)
        .with_max_num_batched_tokens(budget)
        .with_max_num_seqs(max_seqs)
        .with_max_model_len(128)
}

#[test]
fn a_long_prompt_is_prefilled_in_chunks() {
    let mut s = fcfs(chunked(32, 8), paged(4, 64, 0));
    let seq = add(&mut s, "long", 60, 0.0);
    let out = step(&mut s);
    assert_eq!(out.num_batched_tokens, 32);
    assert_eq!(out.scheduled_seqs[0].start, 0);
    assert!(!out.scheduled_seqs[0].needs_logits);
    assert!(
        s.append_token(seq, 1).is_err(),
        "a partial chunk yields no token"
    );
    let out = step(&mut s);
    assert_eq!(out.num_batched_tokens, 28);
    assert_eq!(out.scheduled_seqs[0].start, 32);
    assert!(out.scheduled_seqs[0].needs_logits);
    assert!(out.scheduled_groups[0].is_prefill);
    sample_all(&mut s, &out);
    let out = step(&mut s);
    assert_eq!(out.num_batched_tokens, 1);
    assert!(!out.scheduled_groups[0].is_prefill);
}

#[test]
fn decodes_come_before_new_prefills_in_a_mixed_batch() {
    let mut s = fcfs(chunked(16, 8), paged(4, 64, 0));
    add(&mut s, "a", 4, 0.0);
    add(&mut s, "b", 4, 1.0);
    let out = step(&mut s);
    sample_all(&mut s, &out);
    add(&mut s, "long", 40, 2.0);
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["a", "b", "long"]);
    assert_eq!(out.num_prefill_groups(), 1);
    assert_eq!(out.num_batched_tokens, 16);
    assert_eq!(out.scheduled_seqs[2].num_tokens, 14);
}

#[test]
fn a_running_prefill_leaves_room_for_later_decodes() {
    // "early" arrived first but is still prefilling; "late" decodes. The chunk of "early"
    // may not take the decode token of "late".
    let mut s = fcfs(chunked(8, 8), paged(4, 64, 0));
    add(&mut s, "late-decoder", 2, 5.0);
    let out = step(&mut s);
    sample_all(&mut s, &out);
    s.add_request(Request::new("early", tokens(0, 40), 0.0))
        .unwrap();
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["late-decoder", "early"]);
    sample_all(&mut s, &out);
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["early", "late-decoder"]);
    assert_eq!(out.scheduled_seqs[0].num_tokens, 7);
    assert_eq!(out.num_batched_tokens, 8);
}

#[test]
fn preemption_under_chunking_recomputes_the_latest_group() {
    let config = chunked(64, 8).with_preemption_mode(PreemptionMode::Recompute);
    let mut s = fcfs(config, paged(4, 3, 0));
    add(&mut s, "0", 3, 0.0);
    add(&mut s, "1", 3, 1.0);
    add(&mut s, "2", 3, 2.0);
    for _ in 0..2 {
        let out = step(&mut s);
        sample_all(&mut s, &out);
    }
    let out = step(&mut s);
    assert_eq!(preempted_ids(&out), ["2", "1"]);
    assert_eq!(scheduled_ids(&out), ["0"]);
    // Nothing new is admitted in a step that preempted.
    assert_eq!(s.num_waiting(), 2);
}

#[test]
fn prefix_cache_hits_shorten_the_prefill() {
    let mut s = fcfs(chunked(64, 8), paged_with(4, 64, 0, PrefixCaching::Enabled));
    s.add_request(Request::new("first", tokens(0, 32), 0.0))
        .unwrap();
    let out = step(&mut s);
    assert_eq!(out.num_batched_tokens, 32);
    sample_all(&mut s, &out);
    s.add_request(Request::new("second", tokens(0, 32), 1.0))
        .unwrap();
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["first", "second"]);
    // 7 full blocks hit; the last block is recomputed to produce logits.
    assert_eq!(out.scheduled_seqs[1].start, 28);
    assert_eq!(out.scheduled_seqs[1].num_tokens, 4);
    assert_eq!(out.num_batched_tokens, 5);
}

#[test]
fn recompute_preemption_keeps_full_blocks_in_the_prefix_cache() {
    let config = chunked(64, 8).with_preemption_mode(PreemptionMode::Recompute);
    let mut s = fcfs(config, paged_with(4, 4, 0, PrefixCaching::Enabled));
    add(&mut s, "A", 3, 0.0);
    s.add_request(Request::new("B", tokens(500, 7), 1.0))
        .unwrap();
    for _ in 0..2 {
        let out = step(&mut s);
        sample_all(&mut s, &out);
    }
    // A takes the last free block; B (9 tokens, 2 full blocks) must grow and is preempted.
    let out = step(&mut s);
    assert_eq!(scheduled_ids(&out), ["A"]);
    assert_eq!(preempted_ids(&out), ["B"]);
    sample_all(&mut s, &out);
    s.abort("A").unwrap();
    let out = step(&mut s);
    // B's two full blocks were computed before the preemption: only its last token remains.
    assert_eq!(scheduled_ids(&out), ["B"]);
    assert_eq!(out.scheduled_seqs[0].start, 8);
    assert_eq!(out.num_batched_tokens, 1);
}
