//! The calls the engine makes between steps: misuse is refused with an error and leaves the
//! scheduler consistent; finishing and aborting free blocks at once.

mod common;

use common::*;
use kv_block::BlockManager;
use scheduler::{
    AppendOutcome, FinishReason, GroupProgress, Request, SchedulerConfig, SchedulerError,
};

fn config() -> SchedulerConfig {
    SchedulerConfig::default()
        .with_max_num_batched_tokens(64)
        .with_max_model_len(8)
        .with_max_num_seqs(4)
}

#[test]
fn append_token_is_refused_unless_the_sequence_just_produced_logits() {
    let mut s = fcfs(config(), paged(4, 16, 0));
    let seq = add(&mut s, "a", 3, 0.0);
    assert_eq!(
        s.append_token(seq, 1),
        Err(SchedulerError::SequenceNotRunning(seq))
    );
    assert_eq!(
        s.append_token(99, 1),
        Err(SchedulerError::UnknownSequence(99))
    );
    step(&mut s);
    assert_eq!(s.append_token(seq, 1), Ok(AppendOutcome::Appended));
    assert_eq!(
        s.append_token(seq, 1),
        Err(SchedulerError::NotAwaitingToken(seq))
    );
    assert_eq!(s.fork(seq), Err(SchedulerError::NotAwaitingToken(seq)));
    s.check_invariants().unwrap();
}

#[test]
fn reaching_max_model_len_finishes_and_retires_the_group() {
    let mut s = fcfs(config(), paged(4, 16, 0));
    let seq = add(&mut s, "a", 6, 0.0);
    step(&mut s);
    assert_eq!(s.append_token(seq, 1), Ok(AppendOutcome::Appended));
    step(&mut s);
    assert_eq!(
        s.append_token(seq, 1),
        Ok(AppendOutcome::LengthCapped(GroupProgress::Retired))
    );
    assert!(!s.has_unfinished());
    assert_eq!(s.block_manager().usage().device_used(), 0);
    assert_eq!(s.stats().finished_length_capped, 1);
    assert_eq!(
        s.append_token(seq, 1),
        Err(SchedulerError::UnknownSequence(seq))
    );
}

#[test]
fn the_last_finished_sequence_retires_its_group() {
    let mut s = fcfs(config(), paged(4, 16, 0));
    let parent = s
        .add_request(Request::new("n2", tokens(0, 5), 0.0).with_max_parallel_seqs(2))
        .unwrap();
    step(&mut s);
    let child = s.fork(parent).unwrap();
    assert_eq!(s.group_of_seq(child).unwrap().seqs().len(), 2);
    s.append_token(child, 1).unwrap();
    s.append_token(parent, 2).unwrap();
    assert_eq!(
        s.finish_sequence(child, FinishReason::Stopped),
        Ok(GroupProgress::Unfinished)
    );
    s.check_invariants().unwrap();
    assert!(s.block_manager().block_table(child).is_err());
    assert_eq!(
        s.finish_sequence(parent, FinishReason::Discarded),
        Ok(GroupProgress::Retired)
    );
    assert!(!s.has_unfinished());
    assert_eq!(s.block_manager().usage().device_used(), 0);
    assert_eq!(
        (s.stats().finished_stopped, s.stats().finished_discarded),
        (1, 1)
    );
}

#[test]
fn bad_requests_and_configurations_are_refused() {
    let mut s = fcfs(config(), paged(4, 16, 0));
    add(&mut s, "a", 3, 0.0);
    assert!(matches!(
        s.add_request(Request::new("a", tokens(0, 3), 1.0)),
        Err(SchedulerError::DuplicateRequest(_))
    ));
    assert!(matches!(
        s.add_request(Request::new("b", Vec::new(), 1.0)),
        Err(SchedulerError::EmptyPrompt(_))
    ));
    assert!(matches!(
        s.add_request(Request::new("c", tokens(0, 3), 1.0).with_max_parallel_seqs(0)),
        Err(SchedulerError::InvalidParallelism { .. })
    ));
    assert_eq!(s.num_unfinished_groups(), 1);
    let invalid = SchedulerConfig::default().with_max_num_seqs(0);
    assert!(
        scheduler::Scheduler::new(invalid, paged(4, 16, 0), Box::new(scheduler::Fcfs)).is_err()
    );
}

#[test]
fn aborting_a_swapped_or_waiting_group_frees_its_blocks() {
    let config = config().with_max_model_len(64);
    let mut s = fcfs(
        config.with_preemption_mode(scheduler::PreemptionMode::Swap),
        paged(4, 2, 8),
    );
    add(&mut s, "A", 3, 0.0);
    add(&mut s, "B", 3, 1.0);
    for _ in 0..2 {
        let out = step(&mut s);
        sample_all(&mut s, &out);
    }
    let out = step(&mut s);
    assert_eq!(preempted_ids(&out), ["B"]);
    assert!(s.block_manager().usage().cpu_used() > 0);
    s.abort("B").unwrap();
    assert_eq!(s.block_manager().usage().cpu_used(), 0);
    s.check_invariants().unwrap();
}
