//! Parity against a naive reference: with a pool so large that nothing is ever preempted,
//! FCFS single-sequence workloads must be scheduled exactly as a few-line model of
//! continuous batching says (vLLM's default policy without chunking, its chunked-prefill
//! policy with it), step by step: which requests run and how many tokens each computes.

use std::collections::VecDeque;

use kv_block::{BlockManagerConfig, PagedBlockManager, PrefixCaching};
use proptest::prelude::*;
use scheduler::sim::{Sampling, SimRequest, Simulator};
use scheduler::{Fcfs, Scheduler, SchedulerConfig};

#[derive(Debug, Clone)]
struct Job {
    id: String,
    prompt: usize,
    output: usize,
    computed: usize,
    generated: usize,
}

/// The naive model: per step, the scheduled `(request, tokens)` pairs.
struct Reference {
    config: SchedulerConfig,
    arrivals: VecDeque<(u64, Job)>,
    waiting: VecDeque<Job>,
    running: Vec<Job>,
}

impl Reference {
    fn step(&mut self, now: u64) -> Vec<(String, usize)> {
        while self.arrivals.front().is_some_and(|(at, _)| *at <= now) {
            let (_, job) = self.arrivals.pop_front().unwrap();
            self.waiting.push_back(job);
        }
        let mut left = self.config.max_num_batched_tokens;
        let mut plan = Vec::new();
        if self.config.chunked_prefill {
            let mut decodes_left = self
                .running
                .iter()
                .filter(|j| j.computed == j.prompt)
                .count();
            for job in &mut self.running {
                let pending = job.prompt - job.computed;
                let n = if pending == 0 {
                    decodes_left -= 1;
                    left.min(1)
                } else {
                    let n = pending.min(left.saturating_sub(decodes_left));
                    job.computed += n;
                    n
                };
                if n > 0 {
                    plan.push((job.id.clone(), n));
                    left -= n;
                }
            }
            self.admit(&mut left, &mut plan);
        } else {
            self.admit(&mut left, &mut plan);
            if plan.is_empty() {
                for job in &mut self.running {
                    plan.push((job.id.clone(), 1));
                }
            }
        }
        // Sampling: every job whose tokens are all computed gains one token.
        let scheduled: Vec<&String> = plan.iter().map(|(id, _)| id).collect();
        for job in &mut self.running {
            if scheduled.contains(&&job.id) && job.computed == job.prompt {
                job.generated += 1;
            }
        }
        self.running.retain(|j| j.generated < j.output);
        plan
    }

    fn admit(&mut self, left: &mut usize, plan: &mut Vec<(String, usize)>) {
        while let Some(job) = self.waiting.front() {
            if job.prompt > self.config.prompt_limit() {
                self.waiting.pop_front();
                continue;
            }
            let fits = if self.config.chunked_prefill {
                *left > 0
            } else {
                job.prompt <= *left
            };
            if !fits || self.running.len() >= self.config.max_num_seqs {
                break;
            }
            let mut job = self.waiting.pop_front().unwrap();
            let n = job.prompt.min(*left);
            job.computed = n;
            *left -= n;
            plan.push((job.id.clone(), n));
            self.running.push(job);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn fcfs_without_memory_pressure_matches_the_reference(
        chunked in any::<bool>(),
        budget in 4usize..48,
        max_seqs in 1usize..6,
        specs in prop::collection::vec((0u64..12, 1usize..40, 1usize..12), 1..10),
    ) {
        let config = SchedulerConfig::default()
            .with_max_num_batched_tokens(budget)
            .with_max_num_seqs(max_seqs)
            .with_max_model_len(64)
            .with_chunked_prefill(chunked);
        let workload: Vec<SimRequest> = specs
            .iter()
            .enumerate()
            .map(|(i, &(arrival_step, prompt, output))| SimRequest {
                request_id: format!("r{i}"),
                arrival_step,
                prompt: vec![i as u32; prompt],
                output_len: output,
                sampling: Sampling::Single,
                priority: 0,
            })
            .collect();
        let mut arrivals: Vec<(u64, Job)> = workload
            .iter()
            .map(|r| (r.arrival_step, Job {
                id: r.request_id.clone(),
                prompt: r.prompt.len(),
                output: r.output_len,
                computed: 0,
                generated: 0,
            }))
            .collect();
        arrivals.sort_by_key(|(at, _)| *at);
        let mut reference = Reference {
            config,
            arrivals: arrivals.into(),
            waiting: VecDeque::new(),
            running: Vec::new(),
        };
        let manager = PagedBlockManager::new(
            BlockManagerConfig::new(1_024, 0).with_block_size(4).with_watermark(0.0),
            PrefixCaching::Disabled,
        ).unwrap();
        let scheduler = Scheduler::new(config, manager, Box::new(Fcfs)).unwrap();
        let mut sim = Simulator::new(scheduler, workload, 1).with_audit(true);
        while !sim.is_done() {
            prop_assert!(sim.steps() < 1_000);
            let now = sim.steps();
            let out = sim.step().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let actual: Vec<(String, usize)> = out
                .scheduled_groups
                .iter()
                .map(|g| (g.request_id.to_string(), out.seqs(g)[0].num_tokens))
                .collect();
            prop_assert_eq!(actual, reference.step(now), "step {}", now);
            prop_assert_eq!(sim.scheduler().stats().preemptions(), 0);
        }
    }
}
