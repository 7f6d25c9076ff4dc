//! A policy written outside the scheduler crate (this test crate), using only its public API:
//! shortest prompt first, ties by arrival. Plugged into an unchanged `Scheduler`, it changes
//! the admission order and the preemption victim.

mod common;

use std::cmp::Ordering;

use common::*;
use scheduler::policy::by_arrival;
use scheduler::{Fcfs, Policy, Request, Scheduler, SchedulerConfig, SequenceGroup};

/// Serves the shortest prompt first; so preempts the longest first.
struct ShortestPromptFirst;

impl Policy for ShortestPromptFirst {
    fn name(&self) -> &'static str {
        "shortest-prompt-first"
    }

    fn compare(&self, a: &SequenceGroup, b: &SequenceGroup) -> Ordering {
        a.prompt_len()
            .cmp(&b.prompt_len())
            .then_with(|| by_arrival(a, b))
    }
}

fn config() -> SchedulerConfig {
    SchedulerConfig::default()
        .with_max_num_seqs(2)
        .with_max_num_batched_tokens(64)
        .with_max_model_len(64)
}

/// Admission order of three requests when only two fit the first step.
fn admission_order(policy: Box<dyn Policy>) -> Vec<String> {
    let mut s = Scheduler::new(config(), paged(4, 64, 0), policy).unwrap();
    for (id, len, arrival) in [("long", 30, 0.0), ("medium", 12, 1.0), ("short", 3, 2.0)] {
        s.add_request(Request::new(id, tokens(0, len), arrival))
            .unwrap();
    }
    scheduled_ids(&step(&mut s))
}

#[test]
fn an_external_policy_changes_the_admission_order() {
    assert_eq!(admission_order(Box::new(Fcfs)), ["long", "medium"]);
    assert_eq!(
        admission_order(Box::new(ShortestPromptFirst)),
        ["short", "medium"]
    );
}

/// Scheduled and preempted groups of the first step that runs out of blocks: "two" (2-token
/// prompt, arrived first) and "one" (1 token) share a 2-block pool until both need a block.
fn first_preemption(policy: Box<dyn Policy>) -> (Vec<String>, Vec<String>) {
    let mut s = Scheduler::new(config(), paged(4, 2, 0), policy).unwrap();
    s.add_request(Request::new("two", tokens(0, 2), 0.0))
        .unwrap();
    s.add_request(Request::new("one", tokens(50, 1), 1.0))
        .unwrap();
    loop {
        let out = step(&mut s);
        if !out.preempted.is_empty() {
            return (scheduled_ids(&out), preempted_ids(&out));
        }
        sample_all(&mut s, &out);
    }
}

#[test]
fn an_external_policy_picks_the_preemption_victim() {
    let (scheduled, preempted) = first_preemption(Box::new(Fcfs));
    assert_eq!(
        (scheduled, preempted),
        (vec!["two".to_string()], vec!["one".to_string()])
    );
    let (scheduled, preempted) = first_preemption(Box::new(ShortestPromptFirst));
    assert_eq!(
        (scheduled, preempted),
        (vec!["one".to_string()], vec!["two".to_string()])
    );
}
