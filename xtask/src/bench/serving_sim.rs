//! A time-driven executor: serves a trace with the real scheduler and block manager, with
//! every step's duration given by a [`GpuCostModel`] instead of a model run. Requests join
//! when the simulated clock passes their arrival time; a request ends when its sequence has
//! generated its output length. Only single-sequence requests (`n = 1`) are supported: the
//! paper's rate sweeps (Fig. 12, 19) use basic sampling.

use std::collections::HashMap;

use kv_block::{BlockManager, SeqId};
use scheduler::{
    AppendOutcome, Fcfs, FinishReason, GroupProgress, Request, Scheduler, SchedulerConfig,
    SchedulerOutput,
};
use serde::Serialize;

use super::BenchError;
use super::cost_model::GpuCostModel;
use crate::workload::{Decoding, TraceRequest};

/// Totals of one simulated serving run. Invariant: `finished + rejected == requests`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServingRun {
    /// Requests in the trace.
    pub requests: usize,
    /// Requests that generated their whole output.
    pub finished: usize,
    /// Requests the scheduler rejected or ended early (they count in no latency).
    pub rejected: usize,
    /// Mean over finished requests of end-to-end latency ÷ output tokens, seconds per token.
    pub normalized_latency_s: f64,
    /// Mean end-to-end latency of finished requests, seconds.
    pub mean_latency_s: f64,
    /// Simulated seconds from the first arrival to the last completion.
    pub duration_s: f64,
    /// Generated tokens per simulated second.
    pub output_tokens_per_s: f64,
    /// Mean sequences computed per non-empty step.
    pub mean_batch_seqs: f64,
    /// Scheduler steps run (`schedule()` calls), empty ones included.
    pub steps: u64,
    /// Preemptions by swapping.
    pub preemptions_by_swap: u64,
    /// Preemptions by recompute (swap fallbacks included).
    pub preemptions_by_recompute: u64,
    /// Blocks moved between host and device, both ways.
    pub swapped_blocks: u64,
}

/// A request in flight: its trace index and its remaining target.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    index: usize,
    prompt_len: usize,
    output_len: usize,
}

/// Serves `trace` (sorted by arrival, every request `n = 1`) over `manager` with the costs of
/// `cost`, and returns the run's totals. Fails if a request samples more than one sequence,
/// or if the run makes no progress (a stall) within a generous step limit.
pub fn simulate<M: BlockManager>(
    manager: M,
    config: SchedulerConfig,
    trace: &[TraceRequest],
    cost: &GpuCostModel,
    system: &str,
) -> Result<ServingRun, BenchError> {
    if let Some(r) = trace
        .iter()
        .find(|r| r.decoding != (Decoding::Sample { n: 1 }))
    {
        return Err(BenchError::InvalidConfig(format!(
            "the serving simulation runs single-sequence requests only, not {:?}",
            r.decoding
        )));
    }
    if trace.windows(2).any(|w| w[0].arrival_s > w[1].arrival_s) {
        return Err(BenchError::InvalidConfig(
            "trace arrivals must be sorted".into(),
        ));
    }
    let block_size = manager.block_size();
    let mut scheduler = Scheduler::new(config, manager, Box::new(Fcfs))?;
    // Each step computes at least one token of some request unless it only waits for arrivals.
    let limit: u64 = trace
        .iter()
        .map(|r| 4 * (r.prompt_len + r.output_len) as u64)
        .sum::<u64>()
        + 1_000;
    let mut in_flight: HashMap<SeqId, InFlight> = HashMap::new();
    let mut latencies = vec![None; trace.len()];
    let (mut clock, mut next, mut steps, mut swapped) = (0.0, 0, 0u64, 0u64);
    let (mut busy_steps, mut batch_seqs) = (0u64, 0u64);
    loop {
        while next < trace.len() && trace[next].arrival_s <= clock {
            let r = &trace[next];
            let request = Request::new(request_id(next), prompt(r, next), r.arrival_s)
                .with_max_new_tokens(r.output_len);
            let seq = scheduler.add_request(request)?;
            in_flight.insert(
                seq,
                InFlight {
                    index: next,
                    prompt_len: r.prompt_len,
                    output_len: r.output_len,
                },
            );
            next += 1;
        }
        if !scheduler.has_unfinished() {
            match trace.get(next) {
                Some(r) => {
                    clock = r.arrival_s;
                    continue;
                }
                None => break,
            }
        }
        if steps >= limit {
            return Err(BenchError::Stalled {
                system: system.to_string(),
                steps,
                unfinished: scheduler.num_unfinished_groups() + trace.len() - next,
            });
        }
        let out = scheduler.schedule()?;
        let moved = out.blocks_to_swap_in.len() + out.blocks_to_swap_out.len();
        swapped += moved as u64;
        clock += cost.step_s(
            out.num_batched_tokens,
            context_tokens(&out),
            moved,
            block_size,
        );
        forget_ignored(&out, &mut in_flight);
        steps += 1;
        if out.is_empty() {
            // Nothing computed: the step only rejected, preempted or moved blocks, or nothing
            // can change before the next arrival. With neither, the run is stuck.
            let changed = moved > 0 || !out.ignored.is_empty() || !out.preempted.is_empty();
            match trace.get(next) {
                Some(r) => clock = clock.max(r.arrival_s),
                None if !changed => {
                    return Err(BenchError::Stalled {
                        system: system.to_string(),
                        steps,
                        unfinished: scheduler.num_unfinished_groups(),
                    });
                }
                None => {}
            }
            continue;
        }
        busy_steps += 1;
        batch_seqs += out.scheduled_seqs.len() as u64;
        for seq in out.scheduled_seqs.iter().filter(|s| s.needs_logits) {
            let Some(&request) = in_flight.get(&seq.seq_id) else {
                continue;
            };
            let retired = match scheduler.append_token(seq.seq_id, (steps % 1000) as u32 + 1)? {
                AppendOutcome::LengthCapped(progress) => progress == GroupProgress::Retired,
                AppendOutcome::Appended => {
                    let len = scheduler.sequence(seq.seq_id).map_or(0, |s| s.len());
                    len.saturating_sub(request.prompt_len) >= request.output_len
                        && scheduler.finish_sequence(seq.seq_id, FinishReason::Stopped)?
                            == GroupProgress::Retired
                }
            };
            if retired {
                in_flight.remove(&seq.seq_id);
                latencies[request.index] = Some(clock - trace[request.index].arrival_s);
            }
        }
    }
    let stats = scheduler.stats();
    let finished: Vec<(f64, usize)> = latencies
        .iter()
        .zip(trace)
        .filter_map(|(latency, r)| latency.map(|l| (l, r.output_len)))
        .collect();
    let count = finished.len().max(1) as f64;
    let first_arrival = trace.first().map_or(0.0, |r| r.arrival_s);
    let duration_s = clock - first_arrival;
    let generated: usize = finished.iter().map(|&(_, out)| out).sum();
    Ok(ServingRun {
        requests: trace.len(),
        finished: finished.len(),
        rejected: trace.len() - finished.len(),
        normalized_latency_s: finished.iter().map(|&(l, out)| l / out as f64).sum::<f64>() / count,
        mean_latency_s: finished.iter().map(|&(l, _)| l).sum::<f64>() / count,
        duration_s,
        output_tokens_per_s: if duration_s > 0.0 {
            generated as f64 / duration_s
        } else {
            0.0
        },
        mean_batch_seqs: batch_seqs as f64 / busy_steps.max(1) as f64,
        steps,
        preemptions_by_swap: stats.preemptions_by_swap,
        preemptions_by_recompute: stats.preemptions_by_recompute,
        swapped_blocks: swapped,
    })
}

/// Id of the request at `index` of the trace.
fn request_id(index: usize) -> String {
    format!("r{index}")
}

/// Drops the requests the scheduler rejected this step from the in-flight map.
fn forget_ignored(out: &SchedulerOutput, in_flight: &mut HashMap<SeqId, InFlight>) {
    if out.ignored.is_empty() {
        return;
    }
    let rejected: Vec<usize> = out
        .ignored
        .iter()
        .filter_map(|g| g.request_id.strip_prefix('r')?.parse().ok())
        .collect();
    in_flight.retain(|_, f| !rejected.contains(&f.index));
}

/// Context tokens attended to this step: each scheduled sequence's cached plus new tokens.
fn context_tokens(out: &SchedulerOutput) -> usize {
    out.scheduled_seqs
        .iter()
        .map(|s| s.start + s.num_tokens)
        .sum()
}

/// Prompt token ids of request `index` (their values do not matter: prefix caching is off).
fn prompt(request: &TraceRequest, index: usize) -> Vec<u32> {
    (0..request.prompt_len)
        .map(|p| ((index * 7919 + p) % 31_999) as u32 + 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_block::{BlockManagerConfig, PagedBlockManager, PrefixCaching};

    fn request(arrival_s: f64, prompt_len: usize, output_len: usize) -> TraceRequest {
        TraceRequest {
            arrival_s,
            prompt_len,
            output_len,
            decoding: Decoding::Sample { n: 1 },
            shared_prefix_len: 0,
        }
    }

    fn paged(blocks: usize) -> PagedBlockManager {
        PagedBlockManager::new(BlockManagerConfig::new(blocks, 0), PrefixCaching::Disabled).unwrap()
    }

    const COST: GpuCostModel = GpuCostModel::OPT_13B_A100;

    #[test]
    fn a_lone_request_takes_one_prefill_and_its_decode_steps() {
        let trace = [request(1.0, 100, 10)];
        let run = simulate(paged(100), SchedulerConfig::default(), &trace, &COST, "t").unwrap();
        // Prefill of 100 tokens samples token 1; nine decode steps sample the rest.
        let expected = COST.step_s(100, 100, 0, 16)
            + (101..110).map(|c| COST.step_s(1, c, 0, 16)).sum::<f64>();
        assert_eq!((run.finished, run.rejected, run.steps), (1, 0, 10));
        assert!((run.mean_latency_s - expected).abs() < 1e-12, "{run:?}");
        assert!((run.normalized_latency_s - expected / 10.0).abs() < 1e-12);
        assert!((run.duration_s - expected).abs() < 1e-12);
    }

    #[test]
    fn overload_raises_latency_and_a_tiny_pool_preempts() {
        let trace: Vec<TraceRequest> = (0..40)
            .map(|i| request(i as f64 * 0.05, 200, 100))
            .collect();
        let spaced: Vec<TraceRequest> = (0..40)
            .map(|i| request(i as f64 * 10.0, 200, 100))
            .collect();
        let config = SchedulerConfig::default();
        let busy = simulate(paged(2000), config, &trace, &COST, "t").unwrap();
        let idle = simulate(paged(2000), config, &spaced, &COST, "t").unwrap();
        assert!(busy.normalized_latency_s > idle.normalized_latency_s);
        assert!(busy.mean_batch_seqs > idle.mean_batch_seqs);
        let tight = simulate(paged(60), config, &trace, &COST, "t").unwrap();
        assert_eq!(tight.finished, 40);
        assert!(tight.preemptions_by_recompute > 0, "{tight:?}");
        assert!(tight.normalized_latency_s > busy.normalized_latency_s);
    }

    /// Latency of `r` served alone: its prefill step, then one decode step per further token.
    fn solo_latency(r: &TraceRequest) -> f64 {
        let p = r.prompt_len;
        COST.step_s(p, p, 0, 16)
            + (p + 1..p + r.output_len)
                .map(|c| COST.step_s(1, c, 0, 16))
                .sum::<f64>()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]

        /// Any trace over any pool: every request is accounted for, nothing stalls, a run is
        /// reproducible, and sharing the GPU never makes a request faster than serving it
        /// alone (the naive reference).
        #[test]
        fn requests_are_accounted_and_never_faster_than_alone(
            requests in proptest::collection::vec((1usize..300, 1usize..60, 0.0f64..2.0), 1..25),
            blocks in 8usize..120,
        ) {
            let mut clock = 0.0;
            let trace: Vec<TraceRequest> = requests
                .iter()
                .map(|&(prompt, output, gap)| {
                    clock += gap;
                    request(clock, prompt, output)
                })
                .collect();
            let config = SchedulerConfig::default();
            let run = simulate(paged(blocks), config, &trace, &COST, "p").unwrap();
            proptest::prop_assert_eq!(run.finished + run.rejected, trace.len());
            if run.rejected == 0 {
                let solo = trace.iter().map(solo_latency).sum::<f64>() / trace.len() as f64;
                proptest::prop_assert!(run.mean_latency_s >= solo - 1e-9, "{run:?}");
            }
            let again = simulate(paged(blocks), config, &trace, &COST, "p").unwrap();
            proptest::prop_assert_eq!(run, again);
        }
    }

    #[test]
    fn rejected_and_unsupported_requests() {
        // A prompt above the token budget is rejected and counted, not waited on forever.
        let trace = [request(0.0, 3000, 5), request(0.5, 10, 5)];
        let run = simulate(paged(400), SchedulerConfig::default(), &trace, &COST, "t").unwrap();
        assert_eq!((run.finished, run.rejected), (1, 1));
        let beams = [TraceRequest {
            decoding: Decoding::Beam { width: 2 },
            ..request(0.0, 10, 5)
        }];
        assert!(matches!(
            simulate(paged(400), SchedulerConfig::default(), &beams, &COST, "t"),
            Err(BenchError::InvalidConfig(_))
        ));
    }
}
