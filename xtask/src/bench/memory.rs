//! The `memory` suite: how much of the KV memory each system fills with tokens.
//!
//! 1. **Utilisation** (the paper's Fig. 2): one seeded ShareGPT-like trace with Poisson arrivals
//!    is served by `scheduler::sim::Simulator` (requests arrive, run, finish and get preempted;
//!    no model) over vellum's paged manager at several block sizes and over the Orca baselines.
//!    After every step the device's slot accounting is sampled: utilisation = slots holding
//!    tokens ÷ slots allocated, with the waste split into internal fragmentation (empty slots
//!    of blocks holding tokens) and reservation (blocks holding none yet), and the share of the
//!    pool left unallocated while requests wait (what fragmentation and reservations cost in
//!    admissions). Means are over the steps with any slot allocated.
//! 2. **Sharing** (the paper's Fig. 15): an Alpaca-like trace with parallel sampling (n = 2, 4,
//!    6) or beam search (width 2, 4, 6) on vellum (block 16). Saving = 1 − (distinct blocks
//!    referenced) ÷ (blocks the same sequences would hold without sharing), summed over steps.
//!
//! Arrivals are converted from seconds to steps with a nominal step length, so a trace means
//! the same load for every system.

use std::collections::HashSet;

use scheduler::sim::{Outcome, Sampling, SimRequest, Simulator};
use scheduler::{Fcfs, GroupStatus, Scheduler, SchedulerConfig};
use serde::Serialize;

use kv_block::BlockManager;

use super::systems::{KvCapacity, System, WithManager};
use super::{BenchError, Progress};
use crate::report::SuiteOutput;
use crate::report::markdown::Table;
use crate::report::svg::{BarChart, LineChart, Series};
use crate::workload::{self, Dataset, Decoding, TraceRequest, TraceSpec};

/// Vocabulary of the synthetic prompt tokens.
const VOCAB: u32 = 32_000;

/// What the suite runs. Invariants (checked by [`run`]): positive counts, rate and step length,
/// non-empty block sizes and widths.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryConfig {
    /// Seed of the traces and the simulator.
    pub seed: u64,
    /// Requests of the ShareGPT-like utilisation trace.
    pub num_requests: usize,
    /// Requests of each Alpaca-like sharing trace.
    pub sharing_requests: usize,
    /// Poisson arrival rate, requests per second.
    pub rate: f64,
    /// Nominal seconds per engine step, to turn arrival times into steps.
    pub step_s: f64,
    /// KV capacity shared by every system.
    pub capacity: KvCapacity,
    /// Model maximum sequence length (what Orca Max reserves).
    pub max_model_len: usize,
    /// Block sizes of vellum's paged manager.
    pub block_sizes: Vec<usize>,
    /// Parallel-sampling n and beam widths of the sharing study.
    pub sharing_widths: Vec<usize>,
}

impl MemoryConfig {
    fn with(seed: u64, num_requests: usize, sharing_requests: usize) -> Self {
        Self {
            seed,
            num_requests,
            sharing_requests,
            // Above what every system sustains, so the pool is under pressure as in Fig. 2.
            rate: 8.0,
            // About one decode step of the paper cost model at a mid-size batch.
            step_s: 0.025,
            // OPT-13B on one A100-40GB (paper Table 1), swap space of the same size.
            capacity: KvCapacity {
                device_slots: super::cost_model::OPT_13B_A100_KV_SLOTS,
                cpu_slots: super::cost_model::OPT_13B_A100_KV_SLOTS,
            },
            max_model_len: workload::MAX_TOTAL_LEN,
            block_sizes: vec![8, 16, 32, 64, 128],
            sharing_widths: vec![2, 4, 6],
        }
    }

    /// A smoke-run configuration (a few seconds).
    pub fn quick(seed: u64) -> Self {
        Self::with(seed, 300, 200)
    }

    /// The full configuration.
    pub fn full(seed: u64) -> Self {
        Self::with(seed, 2000, 1000)
    }

    /// The systems of the utilisation study: vellum at each block size, then Orca.
    pub fn systems(&self) -> Vec<System> {
        self.block_sizes
            .iter()
            .map(|&block_size| System::Vellum { block_size })
            .chain(System::ORCA)
            .collect()
    }

    fn validate(&self) -> Result<(), BenchError> {
        let problem = if self.num_requests == 0 || self.sharing_requests == 0 {
            "request counts must be positive"
        } else if !(self.rate.is_finite() && self.rate > 0.0) {
            "the rate must be positive"
        } else if !(self.step_s.is_finite() && self.step_s > 0.0) {
            "the step length must be positive"
        } else if self.block_sizes.is_empty() || self.sharing_widths.is_empty() {
            "block sizes and sharing widths must not be empty"
        } else {
            return Ok(());
        };
        Err(BenchError::InvalidConfig(problem.into()))
    }
}

/// Utilisation of one system over the trace. Invariant: `mean_utilization +
/// mean_internal_waste + mean_reserved_waste == 1` (up to rounding) when `sampled_steps > 0`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UtilizationResult {
    /// Stable system key (`vellum_b16`, `orca_max`, ...).
    pub system: String,
    /// Human-readable system name.
    pub label: String,
    /// Slots per allocation unit.
    pub block_size: usize,
    /// Mean fraction of allocated slots holding tokens.
    pub mean_utilization: f64,
    /// Mean fraction of allocated slots empty inside blocks that hold tokens.
    pub mean_internal_waste: f64,
    /// Mean fraction of allocated slots in blocks that hold no token yet.
    pub mean_reserved_waste: f64,
    /// Mean fraction of the device pool left unallocated over the steps with a request waiting.
    pub mean_unallocated_while_waiting: f64,
    /// Mean running requests per step (over sampled steps).
    pub mean_running_requests: f64,
    /// Steps with any slot allocated.
    pub sampled_steps: u64,
    /// Steps until the trace was served.
    pub steps: u64,
    /// Requests that finished.
    pub finished: usize,
    /// Requests the scheduler rejected.
    pub rejected: usize,
    /// Preemptions (swap and recompute).
    pub preemptions: u64,
}

/// Memory saved by sharing for one decoding method (paper Fig. 15).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SharingResult {
    /// `parallel` or `beam`.
    pub decoding: &'static str,
    /// n or beam width.
    pub width: usize,
    /// Σ over steps of the blocks each running sequence's table holds.
    pub blocks_without_sharing: u64,
    /// Σ over steps of the distinct blocks referenced.
    pub blocks_with_sharing: u64,
    /// `1 − with / without` (0 when nothing ran).
    pub saving: f64,
}

/// Everything the suite measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryResults {
    /// What was simulated, in words.
    pub note: &'static str,
    /// The configuration that produced these results.
    pub config: MemoryConfig,
    /// One entry per system, in [`MemoryConfig::systems`] order.
    pub utilization: Vec<UtilizationResult>,
    /// Parallel sampling entries, then beam search, in width order.
    pub sharing: Vec<SharingResult>,
}

const NOTE: &str = "Step simulation without a model: scheduler + block manager driven by \
scheduler::sim over seeded synthetic traces; slot accounting sampled after every step.";

/// Runs the suite.
pub fn run(config: &MemoryConfig, progress: &dyn Progress) -> Result<MemoryResults, BenchError> {
    config.validate()?;
    let systems = config.systems();
    progress.stage(
        "memory",
        (systems.len() + 2 * config.sharing_widths.len()) as u64,
    );
    let sharegpt = trace(config, Dataset::ShareGpt, config.num_requests, 1, false)?;
    let workload = sim_workload(&sharegpt, config.step_s, config.seed);
    let mut utilization = Vec::new();
    for system in systems {
        let job = UtilizationJob {
            config,
            workload: &workload,
            system,
        };
        utilization.push(system.run_with(config.capacity, config.max_model_len, job)?);
        progress.advance(&system.label());
    }
    let mut sharing = Vec::new();
    for beam in [false, true] {
        for &width in &config.sharing_widths {
            let trace = trace(
                config,
                Dataset::Alpaca,
                config.sharing_requests,
                width,
                beam,
            )?;
            let job = SharingJob {
                config,
                workload: &sim_workload(&trace, config.step_s, config.seed),
                beam,
                width,
            };
            let system = System::Vellum { block_size: 16 };
            sharing.push(system.run_with(config.capacity, config.max_model_len, job)?);
            progress.advance(&format!(
                "sharing {} {width}",
                if beam { "beam" } else { "parallel" }
            ));
        }
    }
    Ok(MemoryResults {
        note: NOTE,
        config: config.clone(),
        utilization,
        sharing,
    })
}

fn trace(
    config: &MemoryConfig,
    dataset: Dataset,
    num_requests: usize,
    width: usize,
    beam: bool,
) -> Result<Vec<TraceRequest>, BenchError> {
    let decoding = if beam {
        Decoding::Beam { width }
    } else {
        Decoding::Sample { n: width }
    };
    workload::generate(&TraceSpec {
        dataset,
        num_requests,
        rate: Some(config.rate),
        decoding,
        shared_prefix_len: 0,
        seed: config.seed,
    })
    .map_err(BenchError::Workload)
}

/// The simulator's view of a trace: arrival steps, prompt tokens, sampling shape.
pub fn sim_workload(trace: &[TraceRequest], step_s: f64, seed: u64) -> Vec<SimRequest> {
    trace
        .iter()
        .enumerate()
        .map(|(index, request)| SimRequest {
            request_id: format!("r{index}"),
            arrival_step: (request.arrival_s / step_s).floor() as u64,
            prompt: workload::prompt_tokens(request, index, VOCAB, seed),
            output_len: request.output_len,
            sampling: match request.decoding {
                Decoding::Sample { n: 1 } => Sampling::Single,
                Decoding::Sample { n } => Sampling::Parallel(n),
                Decoding::Beam { width } => Sampling::Beam(width),
            },
            priority: 0,
        })
        .collect()
}

/// Runs `workload` to completion over `manager`, calling `observe` after every step.
fn drive<M: BlockManager>(
    config: &MemoryConfig,
    manager: M,
    workload: &[SimRequest],
    system: &str,
    mut observe: impl FnMut(&Scheduler<M>),
) -> Result<Simulator<M>, BenchError> {
    let scheduler = Scheduler::new(
        SchedulerConfig::default().with_max_model_len(config.max_model_len),
        manager,
        Box::new(Fcfs),
    )?;
    // Even one token per step for one request at a time ends well within this many steps.
    let limit = workload
        .iter()
        .map(|r| (r.prompt.len() + r.output_len) as u64 * r.sampling.width() as u64)
        .sum::<u64>()
        + workload.iter().map(|r| r.arrival_step).max().unwrap_or(0)
        + 1_000;
    let mut sim = Simulator::new(scheduler, workload.to_vec(), config.seed);
    while !sim.is_done() {
        if sim.steps() >= limit {
            return Err(BenchError::Stalled {
                system: system.to_string(),
                steps: sim.steps(),
                unfinished: sim.unfinished().len(),
            });
        }
        sim.step()?;
        observe(sim.scheduler());
    }
    Ok(sim)
}

/// Running sums behind a [`UtilizationResult`].
#[derive(Default)]
struct UtilizationSums {
    sampled: u64,
    utilization: f64,
    internal: f64,
    reserved: f64,
    running: f64,
    waiting_steps: u64,
    unallocated_while_waiting: f64,
}

impl UtilizationSums {
    fn observe<M: BlockManager>(&mut self, scheduler: &Scheduler<M>) {
        let manager = scheduler.block_manager();
        let usage = manager.memory_usage();
        let pool_slots = (manager.usage().device_total * manager.block_size()) as f64;
        if scheduler.num_waiting() > 0 {
            self.waiting_steps += 1;
            self.unallocated_while_waiting += 1.0 - usage.allocated_slots as f64 / pool_slots;
        }
        if usage.allocated_slots == 0 {
            return;
        }
        let allocated = usage.allocated_slots as f64;
        self.sampled += 1;
        self.utilization += usage.token_slots as f64 / allocated;
        self.internal += usage.internal_waste_slots as f64 / allocated;
        self.reserved += usage.reserved_waste_slots as f64 / allocated;
        self.running += scheduler.num_running() as f64;
    }
}

fn mean(sum: f64, count: u64) -> f64 {
    if count == 0 { 0.0 } else { sum / count as f64 }
}

struct UtilizationJob<'a> {
    config: &'a MemoryConfig,
    workload: &'a [SimRequest],
    system: System,
}

impl WithManager for UtilizationJob<'_> {
    type Output = UtilizationResult;

    fn run<M: BlockManager>(self, manager: M) -> Result<UtilizationResult, BenchError> {
        let mut sums = UtilizationSums::default();
        let label = self.system.label();
        let sim = drive(self.config, manager, self.workload, &label, |s| {
            sums.observe(s)
        })?;
        let outcomes = sim.outcomes().values();
        let (finished, rejected) = outcomes.fold((0, 0), |(f, r), outcome| match outcome {
            Outcome::Finished => (f + 1, r),
            Outcome::Rejected(_) => (f, r + 1),
            Outcome::Aborted => (f, r),
        });
        Ok(UtilizationResult {
            system: self.system.key(),
            label,
            block_size: self.system.block_size(),
            mean_utilization: mean(sums.utilization, sums.sampled),
            mean_internal_waste: mean(sums.internal, sums.sampled),
            mean_reserved_waste: mean(sums.reserved, sums.sampled),
            mean_unallocated_while_waiting: mean(
                sums.unallocated_while_waiting,
                sums.waiting_steps,
            ),
            mean_running_requests: mean(sums.running, sums.sampled),
            sampled_steps: sums.sampled,
            steps: sim.steps(),
            finished,
            rejected,
            preemptions: sim.scheduler().stats().preemptions(),
        })
    }
}

struct SharingJob<'a> {
    config: &'a MemoryConfig,
    workload: &'a [SimRequest],
    beam: bool,
    width: usize,
}

impl WithManager for SharingJob<'_> {
    type Output = SharingResult;

    fn run<M: BlockManager>(self, manager: M) -> Result<SharingResult, BenchError> {
        let (mut without, mut with) = (0u64, 0u64);
        let mut distinct = HashSet::new();
        let decoding = if self.beam { "beam" } else { "parallel" };
        drive(self.config, manager, self.workload, decoding, |scheduler| {
            distinct.clear();
            let manager = scheduler.block_manager();
            for group in scheduler.queue(GroupStatus::Running) {
                for seq in group.seqs() {
                    if let Ok(table) = manager.block_table(seq.id()) {
                        without += table.blocks().len() as u64;
                        distinct.extend(table.blocks().iter().copied());
                    }
                }
            }
            with += distinct.len() as u64;
        })?;
        Ok(SharingResult {
            decoding,
            width: self.width,
            blocks_without_sharing: without,
            blocks_with_sharing: with,
            saving: if without == 0 {
                0.0
            } else {
                1.0 - with as f64 / without as f64
            },
        })
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.1}%", 100.0 * fraction)
}

/// The suite's JSON, Markdown summary and plots.
pub fn report(results: &MemoryResults) -> Result<SuiteOutput, BenchError> {
    let config = &results.config;
    let mut md = format!(
        "# memory: KV slot utilisation and sharing\n\n{}\n\nTrace: {} ShareGPT-like requests \
         (seed {}), Poisson {} req/s, one step = {} s; KV capacity {} slots \
         (OPT-13B on one A100-40GB).\n\n",
        results.note,
        config.num_requests,
        config.seed,
        config.rate,
        config.step_s,
        config.capacity.device_slots
    );
    let mut table = Table::new([
        "system",
        "utilisation",
        "internal waste",
        "reserved waste",
        "unallocated while waiting",
        "mean running requests",
        "steps",
        "preemptions",
    ]);
    for r in &results.utilization {
        table.push([
            r.label.clone(),
            percent(r.mean_utilization),
            percent(r.mean_internal_waste),
            percent(r.mean_reserved_waste),
            percent(r.mean_unallocated_while_waiting),
            format!("{:.1}", r.mean_running_requests),
            r.steps.to_string(),
            r.preemptions.to_string(),
        ]);
    }
    md.push_str(&table.render());
    md.push_str(&format!(
        "\nMemory saved by sharing (paper Fig. 15 definition), vellum block 16, {} Alpaca-like \
         requests per run:\n\n",
        config.sharing_requests
    ));
    let mut sharing_table = Table::new(["decoding", "width", "saving"]);
    for s in &results.sharing {
        sharing_table.push([
            s.decoding.to_string(),
            s.width.to_string(),
            percent(s.saving),
        ]);
    }
    md.push_str(&sharing_table.render());

    let categories: Vec<String> = results
        .utilization
        .iter()
        .map(|r| r.label.clone())
        .collect();
    let layer = |name: &str, value: fn(&UtilizationResult) -> f64| {
        (
            name.to_string(),
            results.utilization.iter().map(value).collect::<Vec<f64>>(),
        )
    };
    let layers = [
        layer("token states", |r| r.mean_utilization),
        layer("internal fragmentation", |r| r.mean_internal_waste),
        layer("reserved", |r| r.mean_reserved_waste),
    ];
    let utilization_svg = BarChart {
        title: "KV memory utilisation by system (ShareGPT-like trace)",
        y_label: "fraction of allocated KV slots",
        categories: &categories,
        layers: &layers,
    }
    .to_svg();
    let sharing_series: Vec<Series> = ["parallel", "beam"]
        .into_iter()
        .map(|decoding| Series {
            name: format!("{decoding} (vellum)"),
            points: results
                .sharing
                .iter()
                .filter(|s| s.decoding == decoding)
                .map(|s| (s.width as f64, 100.0 * s.saving))
                .collect(),
        })
        .collect();
    let sharing_svg = LineChart {
        title: "Memory saved by sharing (Alpaca-like trace)",
        x_label: "parallel samples n / beam width",
        y_label: "memory saving (%)",
        series: &sharing_series,
        y_max: None,
        log2_x: false,
    }
    .to_svg();
    SuiteOutput::new(
        results,
        md,
        vec![
            ("memory_utilization.svg".into(), utilization_svg),
            ("sharing_saving.svg".into(), sharing_svg),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Silent;

    fn small(seed: u64) -> MemoryConfig {
        MemoryConfig {
            block_sizes: vec![16, 64],
            ..MemoryConfig::with(seed, 60, 30)
        }
    }

    fn utilization(results: &MemoryResults, key: &str) -> f64 {
        results
            .utilization
            .iter()
            .find(|r| r.system == key)
            .map(|r| r.mean_utilization)
            .unwrap()
    }

    #[test]
    fn orderings_of_the_paper_hold_and_runs_are_deterministic() {
        let results = run(&small(3), &Silent).unwrap();
        let vellum = utilization(&results, "vellum_b16");
        let [max, pow2, oracle] =
            ["orca_max", "orca_pow2", "orca_oracle"].map(|key| utilization(&results, key));
        assert!(
            max < pow2 && pow2 < oracle && oracle < vellum,
            "{results:#?}"
        );
        // Near-zero waste: at most the last block of each sequence is partly empty.
        assert!(vellum > 0.9, "{vellum}");
        assert!(vellum > utilization(&results, "vellum_b64"));
        for r in &results.utilization {
            let total = r.mean_utilization + r.mean_internal_waste + r.mean_reserved_waste;
            assert!((total - 1.0).abs() < 1e-9, "{r:?}");
            assert_eq!(r.finished, 60, "{r:?}");
            assert!(r.sampled_steps > 0 && r.sampled_steps <= r.steps);
        }
        // The paged manager never reserves ahead; Max mostly reserves.
        assert_eq!(results.utilization[0].mean_reserved_waste, 0.0);
        assert!(results.utilization[2].mean_reserved_waste > 0.5);
        // Sharing saves memory, beams more than parallel samples at the same width.
        for s in &results.sharing {
            assert!(s.saving > 0.0 && s.saving < 1.0, "{s:?}");
        }
        let saving = |decoding: &str, width: usize| {
            results
                .sharing
                .iter()
                .find(|s| s.decoding == decoding && s.width == width)
                .unwrap()
                .saving
        };
        assert!(saving("beam", 6) > saving("parallel", 6));
        assert!(saving("parallel", 6) > saving("parallel", 2));
        assert_eq!(results, run(&small(3), &Silent).unwrap());
        assert_ne!(results, run(&small(4), &Silent).unwrap());
    }

    #[test]
    fn report_has_every_system_and_both_plots() {
        let results = MemoryResults {
            note: NOTE,
            config: small(0),
            utilization: vec![UtilizationResult {
                system: "orca_max".into(),
                label: "Orca (Max)".into(),
                block_size: 16,
                mean_utilization: 0.25,
                mean_internal_waste: 0.01,
                mean_reserved_waste: 0.74,
                mean_unallocated_while_waiting: 0.1,
                mean_running_requests: 7.0,
                sampled_steps: 10,
                steps: 12,
                finished: 60,
                rejected: 0,
                preemptions: 0,
            }],
            sharing: vec![],
        };
        let output = report(&results).unwrap();
        assert!(
            output
                .markdown
                .contains("| Orca (Max) | 25.0% | 1.0% | 74.0% |")
        );
        assert_eq!(output.json["utilization"][0]["system"], "orca_max");
        assert_eq!(output.json["config"]["seed"], 0);
        assert_eq!(output.files.len(), 2);
    }

    #[test]
    fn bad_configurations_are_errors() {
        for config in [
            MemoryConfig {
                rate: 0.0,
                ..small(0)
            },
            MemoryConfig {
                block_sizes: vec![],
                ..small(0)
            },
            MemoryConfig {
                num_requests: 0,
                ..small(0)
            },
        ] {
            assert!(matches!(
                run(&config, &Silent),
                Err(BenchError::InvalidConfig(_))
            ));
        }
    }
}
