//! Random workloads through the simulated executor (tiny pools forcing both kinds of
//! preemption, parallel sampling, beams, random aborts), audited after every step: budgets
//! hold, no sequence is in two queues, block accounting matches kv-block, every request
//! ends with a reason, all blocks are free at the end, and FCFS admission order holds.

use std::collections::HashMap;

use kv_block::{
    BlockManager, BlockManagerConfig, PagedBlockManager, PrefixCaching, ReservationPolicy,
    StaticReservationManager, TokenId, blocks_for_tokens,
};
use proptest::prelude::*;
use scheduler::sim::{Outcome, Sampling, SimRequest, Simulator};
use scheduler::{Fcfs, PreemptionMode, Scheduler, SchedulerConfig};

#[derive(Debug, Clone)]
struct Setup {
    block_size: usize,
    device_blocks: usize,
    cpu_blocks: usize,
    caching: bool,
    config: SchedulerConfig,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![Just(2usize), Just(4)],
        6usize..20,
        prop_oneof![Just(0usize), 2usize..12],
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(PreemptionMode::Swap),
            Just(PreemptionMode::Recompute),
            Just(PreemptionMode::Auto)
        ],
        8usize..48,
        3usize..8,
    )
        .prop_map(
            |(block_size, device_blocks, cpu_blocks, caching, chunked, mode, budget, seqs)| Setup {
                block_size,
                device_blocks,
                cpu_blocks,
                caching,
                config: SchedulerConfig::default()
                    .with_max_num_batched_tokens(budget)
                    .with_max_num_seqs(seqs)
                    .with_max_model_len(40)
                    .with_chunked_prefill(chunked)
                    .with_preemption_mode(mode),
            },
        )
}

fn sampling() -> impl Strategy<Value = Sampling> {
    prop_oneof![
        3 => Just(Sampling::Single),
        1 => (2usize..=3).prop_map(Sampling::Parallel),
        1 => (2usize..=3).prop_map(Sampling::Beam),
    ]
}

/// Requests with prompts drawn from three families sharing a prefix (prefix-cache hits).
fn workload() -> impl Strategy<Value = Vec<SimRequest>> {
    prop::collection::vec(
        (0u64..15, 0u32..3, 1usize..18, 1usize..16, sampling()),
        1..12,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(
                |(i, (arrival_step, family, prompt_len, output_len, sampling))| {
                    let prompt: Vec<TokenId> = (0..prompt_len as u32)
                        .map(|p| {
                            if p < 8 {
                                family * 100 + p
                            } else {
                                1000 + i as u32 * 50 + p
                            }
                        })
                        .collect();
                    SimRequest {
                        request_id: format!("r{i}"),
                        arrival_step,
                        prompt,
                        output_len,
                        sampling,
                        priority: 0,
                    }
                },
            )
            .collect()
    })
}

fn paged(setup: &Setup) -> PagedBlockManager {
    let config = BlockManagerConfig::new(setup.device_blocks, setup.cpu_blocks)
        .with_block_size(setup.block_size)
        .with_watermark(0.0);
    let caching = if setup.caching {
        PrefixCaching::Enabled
    } else {
        PrefixCaching::Disabled
    };
    PagedBlockManager::new(config, caching).unwrap()
}

/// Runs `workload` to the end with aborts at `(step, pick)` and checks the end state.
fn run<M: BlockManager>(
    manager: M,
    setup: &Setup,
    workload: &[SimRequest],
    aborts: &[(u64, usize)],
) -> Result<Simulator<M>, TestCaseError> {
    let scheduler = Scheduler::new(setup.config, manager, Box::new(Fcfs)).unwrap();
    let mut sim = Simulator::new(scheduler, workload.to_vec(), 7).with_audit(true);
    while !sim.is_done() {
        prop_assert!(sim.steps() < 2_000, "livelock: not done after 2000 steps");
        let now = sim.steps();
        for &(_, pick) in aborts.iter().filter(|(step, _)| *step == now) {
            let unfinished = sim.unfinished();
            if !unfinished.is_empty() {
                sim.abort(&unfinished[pick % unfinished.len()]).unwrap();
            }
        }
        if let Err(error) = sim.step() {
            return Err(TestCaseError::fail(error.to_string()));
        }
    }
    let usage = sim.scheduler().block_manager().usage();
    prop_assert_eq!(usage.device_used(), 0, "device blocks leaked");
    prop_assert_eq!(usage.cpu_used(), 0, "CPU blocks leaked");
    prop_assert_eq!(sim.outcomes().len(), workload.len());
    Ok(sim)
}

/// FCFS: requests are first scheduled in arrival order.
fn check_fcfs_admission(
    workload: &[SimRequest],
    sim: &Simulator<impl BlockManager>,
) -> Result<(), TestCaseError> {
    let mut arrival: Vec<&SimRequest> = workload.iter().collect();
    arrival.sort_by_key(|r| r.arrival_step);
    let rank: HashMap<&str, usize> = arrival
        .iter()
        .enumerate()
        .map(|(i, r)| (r.request_id.as_str(), i))
        .collect();
    let order: Vec<usize> = sim.admission_order().iter().map(|id| rank[&**id]).collect();
    prop_assert!(order.is_sorted(), "admission order {order:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_workloads_finish_within_budgets(
        setup in setup(),
        workload in workload(),
        aborts in prop::collection::vec((0u64..40, any::<usize>()), 0..3),
    ) {
        let sim = run(paged(&setup), &setup, &workload, &aborts)?;
        check_fcfs_admission(&workload, &sim)?;
        // A request that fits the pool even without sharing (plus a spare block per sequence)
        // and whose prompt is within the limit must finish unless aborted.
        for request in &workload {
            let width = request.sampling.width();
            let tokens = request.prompt.len() + request.output_len;
            let fits = width * (blocks_for_tokens(tokens, setup.block_size) + 1) <= setup.device_blocks
                && request.prompt.len() <= setup.config.prompt_limit();
            let outcome = sim.outcomes()[request.request_id.as_str()];
            if fits {
                prop_assert!(
                    matches!(outcome, Outcome::Finished | Outcome::Aborted),
                    "{} ended {:?}", request.request_id, outcome
                );
            }
        }
    }

    #[test]
    fn static_reservations_run_under_the_same_scheduler(
        setup in setup(),
        workload in workload(),
        policy in prop_oneof![
            Just(ReservationPolicy::Max { max_len: 40 }),
            Just(ReservationPolicy::Pow2),
            Just(ReservationPolicy::Oracle),
        ],
    ) {
        let config = BlockManagerConfig::new(setup.device_blocks * 2, setup.cpu_blocks * 2)
            .with_block_size(setup.block_size)
            .with_watermark(0.0);
        let manager = StaticReservationManager::new(config, policy).unwrap();
        run(manager, &setup, &workload, &[])?;
    }
}

#[test]
fn tiny_pools_force_both_kinds_of_preemption() {
    let setup = Setup {
        block_size: 2,
        device_blocks: 16,
        cpu_blocks: 6,
        caching: true,
        config: SchedulerConfig::default()
            .with_max_num_batched_tokens(32)
            .with_max_num_seqs(8)
            .with_max_model_len(40)
            .with_preemption_mode(PreemptionMode::Auto),
    };
    let sampling = [
        Sampling::Parallel(2),
        Sampling::Single,
        Sampling::Beam(2),
        Sampling::Single,
    ];
    let workload: Vec<SimRequest> = (0..12)
        .map(|i| SimRequest {
            request_id: format!("r{i}"),
            arrival_step: i as u64 / 3,
            prompt: (0..3 + i as u32 % 3).collect(),
            output_len: 4 + i % 4,
            sampling: sampling[i % 4],
            priority: 0,
        })
        .collect();
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&Just(()), |()| {
            let sim = run(paged(&setup), &setup, &workload, &[])?;
            let stats = sim.scheduler().stats();
            prop_assert!(stats.preemptions_by_swap > 0, "{stats:?}");
            prop_assert!(stats.preemptions_by_recompute > 0, "{stats:?}");
            prop_assert!(
                sim.outcomes().values().all(|o| *o == Outcome::Finished),
                "{:?}",
                sim.outcomes()
            );
            Ok(())
        })
        .unwrap();
}
