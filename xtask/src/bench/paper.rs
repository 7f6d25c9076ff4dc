//! The `paper` suite: a **simulation** of the paper's serving experiments. The real scheduler
//! and block managers serve seeded ShareGPT-like traces while a calibrated cost model of a GPU
//! step ([`GpuCostModel`], OPT-13B on one A100-40GB) advances the clock. Nothing runs on a GPU.
//!
//! 1. **Rate sweep** (the shape of Fig. 12): for each Poisson rate, a trace lasting
//!    `duration_s` is served by vellum (paged, block 16) and by Orca Max / Pow2 / Oracle. The
//!    metric is normalized latency (mean of end-to-end latency ÷ output length, s/token); a
//!    system *sustains* a rate while that stays under `latency_threshold_s`. The sustainable
//!    rate is interpolated linearly between the last swept rate under the threshold and the
//!    first one above it. Every rate uses the same seed, so its trace is the same requests with
//!    arrivals scaled.
//! 2. **Swap vs recompute** (the shape of Fig. 19): vellum at each block size, preempting by
//!    swapping or by recomputation at one loaded rate, plus the cost model's time to swap out
//!    and back in vs recompute 1024 tokens.

use scheduler::{PreemptionMode, SchedulerConfig};
use serde::Serialize;

use kv_block::BlockManager;

use super::cost_model::{GpuCostModel, OPT_13B_A100_KV_SLOTS, OPT_13B_SWAP_SLOTS};
use super::serving_sim::{ServingRun, simulate};
use super::systems::{KvCapacity, System, WithManager};
use super::{BenchError, Progress};
use crate::report::SuiteOutput;
use crate::report::markdown::Table;
use crate::report::svg::{LineChart, Series};
use crate::workload::{self, Dataset, Decoding, TraceRequest, TraceSpec};

/// Tokens of the swap-vs-recompute comparison of the cost model (Fig. 19a's x-axis point).
const MICRO_TOKENS: usize = 1024;

/// What the suite runs. Invariants (checked by [`run`]): positive duration and threshold,
/// rates positive and ascending, non-empty rate and block-size lists.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PaperConfig {
    /// Seed of every trace.
    pub seed: u64,
    /// Simulated seconds of arrivals per rate point (the paper uses one-hour traces).
    pub duration_s: f64,
    /// Poisson rates swept, requests per second, ascending.
    pub rates: Vec<f64>,
    /// Normalized latency (s/token) under which a rate counts as sustained.
    pub latency_threshold_s: f64,
    /// vellum's block size in the rate sweep.
    pub block_size: usize,
    /// KV capacity of the simulated GPU (and its CPU swap space).
    pub capacity: KvCapacity,
    /// Model maximum sequence length (token budget per step too, chunked prefill off).
    pub max_model_len: usize,
    /// Rate of the swap-vs-recompute study.
    pub preemption_rate: f64,
    /// Block sizes of the swap-vs-recompute study.
    pub preemption_block_sizes: Vec<usize>,
    /// The step-time model.
    pub cost_model: GpuCostModel,
}

impl PaperConfig {
    fn with(seed: u64, duration_s: f64, rates: Vec<f64>, block_sizes: Vec<usize>) -> Self {
        Self {
            seed,
            duration_s,
            rates,
            // About 5× the unloaded figure (≈ 0.02 s/token): queueing has taken over.
            latency_threshold_s: 0.1,
            block_size: 16,
            capacity: KvCapacity {
                device_slots: OPT_13B_A100_KV_SLOTS,
                cpu_slots: OPT_13B_SWAP_SLOTS,
            },
            max_model_len: workload::MAX_TOTAL_LEN,
            // Just under vellum's saturation, where preemptions are frequent.
            preemption_rate: 2.25,
            preemption_block_sizes: block_sizes,
            cost_model: GpuCostModel::OPT_13B_A100,
        }
    }

    /// A smoke-run configuration.
    pub fn quick(seed: u64) -> Self {
        Self::with(
            seed,
            300.0,
            vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
            vec![8, 16, 32, 64, 128],
        )
    }

    /// The full configuration.
    pub fn full(seed: u64) -> Self {
        Self::with(
            seed,
            1800.0,
            (1..=16).map(|i| f64::from(i) * 0.25).collect(),
            vec![8, 16, 32, 64, 128, 256],
        )
    }

    /// vellum at the sweep's block size, then the Orca baselines.
    pub fn systems(&self) -> Vec<System> {
        std::iter::once(System::Vellum {
            block_size: self.block_size,
        })
        .chain(System::ORCA)
        .collect()
    }

    fn validate(&self) -> Result<(), BenchError> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let problem = if !positive(self.duration_s) || !positive(self.latency_threshold_s) {
            "duration and latency threshold must be positive"
        } else if self.rates.is_empty() || self.preemption_block_sizes.is_empty() {
            "rates and block sizes must not be empty"
        } else if !self.rates.iter().all(|&r| positive(r))
            || self.rates.windows(2).any(|w| w[0] >= w[1])
            || !positive(self.preemption_rate)
        {
            "rates must be positive and ascending"
        } else {
            return Ok(());
        };
        Err(BenchError::InvalidConfig(problem.into()))
    }

    fn scheduler_config(&self, mode: PreemptionMode) -> SchedulerConfig {
        SchedulerConfig::default()
            .with_max_model_len(self.max_model_len)
            .with_max_num_batched_tokens(self.max_model_len)
            .with_preemption_mode(mode)
    }

    fn trace(&self, rate: f64) -> Result<Vec<TraceRequest>, BenchError> {
        workload::generate(&TraceSpec {
            dataset: Dataset::ShareGpt,
            num_requests: (rate * self.duration_s).ceil().max(1.0) as usize,
            rate: Some(rate),
            decoding: Decoding::Sample { n: 1 },
            shared_prefix_len: 0,
            seed: self.seed,
        })
        .map_err(BenchError::Workload)
    }
}

/// One system at one rate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RatePoint {
    /// Poisson rate, requests per second.
    pub rate: f64,
    /// The run's totals.
    pub run: ServingRun,
}

/// One system over the whole sweep.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SystemSweep {
    /// Stable system key.
    pub system: String,
    /// Human-readable system name.
    pub label: String,
    /// One point per swept rate, ascending.
    pub points: Vec<RatePoint>,
    /// Highest rate sustained under the latency threshold (0 if even the lowest is not).
    pub sustainable_rate: f64,
    /// Whether every swept rate was sustained (then `sustainable_rate` is a lower bound).
    pub sustains_every_rate: bool,
}

/// One (block size, preemption mode) run of the swap-vs-recompute study.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PreemptionPoint {
    /// vellum's block size.
    pub block_size: usize,
    /// `swap` or `recompute`.
    pub mode: &'static str,
    /// Cost model: seconds to swap 1024 tokens out and back in at this block size.
    pub swap_out_in_1024_tokens_s: f64,
    /// Cost model: seconds to recompute 1024 tokens (independent of the block size).
    pub recompute_1024_tokens_s: f64,
    /// The run's totals.
    pub run: ServingRun,
}

/// Everything the suite measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PaperResults {
    /// What was simulated, in words.
    pub note: &'static str,
    /// The configuration (cost model included).
    pub config: PaperConfig,
    /// One sweep per system, in [`PaperConfig::systems`] order.
    pub sweeps: Vec<SystemSweep>,
    /// Swap then recompute for each block size, in block-size order.
    pub preemption: Vec<PreemptionPoint>,
}

const NOTE: &str = "SIMULATION, not a GPU measurement: vellum's real scheduler and block \
managers serve seeded ShareGPT-like traces while a calibrated cost model of an OPT-13B step on \
one A100-40GB (step = 20 ms + 0.17 ms x batch tokens + 0.63 us x context tokens + swap copies) \
advances the clock. It reproduces the shape of the paper's Fig. 12 and Fig. 19, not their \
exact figures.";

/// Serves one trace over the system's manager.
struct ServeJob<'a> {
    config: SchedulerConfig,
    trace: &'a [TraceRequest],
    cost: &'a GpuCostModel,
    system: String,
}

impl WithManager for ServeJob<'_> {
    type Output = ServingRun;

    fn run<M: BlockManager>(self, manager: M) -> Result<ServingRun, BenchError> {
        simulate(manager, self.config, self.trace, self.cost, &self.system)
    }
}

/// Runs the suite.
pub fn run(config: &PaperConfig, progress: &dyn Progress) -> Result<PaperResults, BenchError> {
    config.validate()?;
    let systems = config.systems();
    progress.stage(
        "paper",
        (systems.len() * config.rates.len() + 2 * config.preemption_block_sizes.len()) as u64,
    );
    let serve = |system: System, trace: &[TraceRequest], mode| {
        let job = ServeJob {
            config: config.scheduler_config(mode),
            trace,
            cost: &config.cost_model,
            system: system.label(),
        };
        system.run_with(config.capacity, config.max_model_len, job)
    };
    let traces = config
        .rates
        .iter()
        .map(|&rate| config.trace(rate))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sweeps = Vec::new();
    for system in systems {
        let mut points = Vec::new();
        for (&rate, trace) in config.rates.iter().zip(&traces) {
            let run = serve(system, trace, PreemptionMode::Auto)?;
            progress.advance(&format!("{} at {rate} req/s", system.label()));
            points.push(RatePoint { rate, run });
        }
        let (sustainable_rate, sustains_every_rate) =
            sustainable_rate(&points, config.latency_threshold_s);
        sweeps.push(SystemSweep {
            system: system.key(),
            label: system.label(),
            points,
            sustainable_rate,
            sustains_every_rate,
        });
    }
    let trace = config.trace(config.preemption_rate)?;
    let cost = &config.cost_model;
    let mut preemption = Vec::new();
    for &block_size in &config.preemption_block_sizes {
        for (mode, name) in [
            (PreemptionMode::Swap, "swap"),
            (PreemptionMode::Recompute, "recompute"),
        ] {
            let run = serve(System::Vellum { block_size }, &trace, mode)?;
            progress.advance(&format!("{name} at block {block_size}"));
            preemption.push(PreemptionPoint {
                block_size,
                mode: name,
                swap_out_in_1024_tokens_s: 2.0
                    * cost.swap_s(MICRO_TOKENS.div_ceil(block_size), block_size),
                recompute_1024_tokens_s: cost.recompute_s(MICRO_TOKENS),
                run,
            });
        }
    }
    Ok(PaperResults {
        note: NOTE,
        config: config.clone(),
        sweeps,
        preemption,
    })
}

/// The highest rate sustained under `threshold` (interpolated at the first crossing), and
/// whether every point was under it. Points must be in ascending rate order.
pub fn sustainable_rate(points: &[RatePoint], threshold: f64) -> (f64, bool) {
    let under = |p: &RatePoint| p.run.normalized_latency_s <= threshold && p.run.rejected == 0;
    match points.iter().position(|p| !under(p)) {
        None => (points.last().map_or(0.0, |p| p.rate), true),
        Some(0) => (0.0, false),
        Some(i) => {
            let (a, b) = (&points[i - 1], &points[i]);
            let (la, lb) = (a.run.normalized_latency_s, b.run.normalized_latency_s);
            let t = if lb > la {
                ((threshold - la) / (lb - la)).clamp(0.0, 1.0)
            } else {
                0.0
            };
            (a.rate + t * (b.rate - a.rate), false)
        }
    }
}

/// The suite's JSON, Markdown summary and plots.
pub fn report(results: &PaperResults) -> Result<SuiteOutput, BenchError> {
    let config = &results.config;
    let mut md = format!(
        "# paper: simulated serving (OPT-13B, one A100-40GB, ShareGPT-like)\n\n**{}**\n\n\
         Each rate serves {} s of Poisson arrivals (seed {}); KV capacity {} slots, swap {} \
         slots; sustained = normalized latency ≤ {} s/token.\n\n",
        results.note,
        config.duration_s,
        config.seed,
        config.capacity.device_slots,
        config.capacity.cpu_slots,
        config.latency_threshold_s
    );
    let mut headers = vec!["system".to_string(), "sustainable rate (req/s)".to_string()];
    headers.extend(config.rates.iter().map(|r| format!("{r} req/s")));
    let mut table = Table::new(headers);
    for sweep in &results.sweeps {
        let mut row = vec![
            sweep.label.clone(),
            format!(
                "{}{:.2}",
                if sweep.sustains_every_rate {
                    "≥ "
                } else {
                    ""
                },
                sweep.sustainable_rate
            ),
        ];
        row.extend(
            sweep
                .points
                .iter()
                .map(|p| format!("{:.3}", p.run.normalized_latency_s)),
        );
        table.push(row);
    }
    md.push_str("Normalized latency (s/token) by request rate:\n\n");
    md.push_str(&table.render());
    let mut batch = Table::new(["system", "mean batch (seqs) at the highest sustained rate"]);
    for sweep in &results.sweeps {
        let sustained = sweep
            .points
            .iter()
            .rev()
            .find(|p| p.rate <= sweep.sustainable_rate);
        batch.push([
            sweep.label.clone(),
            sustained.map_or("-".into(), |p| format!("{:.1}", p.run.mean_batch_seqs)),
        ]);
    }
    md.push('\n');
    md.push_str(&batch.render());
    md.push_str(&format!(
        "\nSwap vs recompute (vellum, {} req/s):\n\n",
        config.preemption_rate
    ));
    let mut preemption = Table::new([
        "block size",
        "mode",
        "normalized latency (s/token)",
        "preemptions",
        "blocks swapped",
        "model: swap 1024 tokens out+in (ms)",
        "model: recompute 1024 tokens (ms)",
    ]);
    for p in &results.preemption {
        preemption.push([
            p.block_size.to_string(),
            p.mode.to_string(),
            format!("{:.3}", p.run.normalized_latency_s),
            (p.run.preemptions_by_swap + p.run.preemptions_by_recompute).to_string(),
            p.run.swapped_blocks.to_string(),
            format!("{:.1}", 1e3 * p.swap_out_in_1024_tokens_s),
            format!("{:.1}", 1e3 * p.recompute_1024_tokens_s),
        ]);
    }
    md.push_str(&preemption.render());

    let sweep_series: Vec<Series> = results
        .sweeps
        .iter()
        .map(|s| Series {
            name: s.label.clone(),
            points: s
                .points
                .iter()
                .map(|p| (p.rate, p.run.normalized_latency_s))
                .collect(),
        })
        .collect();
    let rate_svg = LineChart {
        title: "Simulated OPT-13B / A100-40GB, ShareGPT-like: rate vs normalized latency",
        x_label: "request rate (req/s)",
        y_label: "normalized latency (s/token)",
        series: &sweep_series,
        y_max: Some(5.0 * config.latency_threshold_s),
        log2_x: false,
    }
    .to_svg();
    let preemption_series: Vec<Series> = ["swap", "recompute"]
        .into_iter()
        .map(|mode| Series {
            name: mode.to_string(),
            points: results
                .preemption
                .iter()
                .filter(|p| p.mode == mode)
                .map(|p| (p.block_size as f64, p.run.normalized_latency_s))
                .collect(),
        })
        .collect();
    let preemption_svg = LineChart {
        title: "Simulated swap vs recompute by block size",
        x_label: "block size (tokens)",
        y_label: "normalized latency (s/token)",
        series: &preemption_series,
        y_max: None,
        log2_x: true,
    }
    .to_svg();
    SuiteOutput::new(
        results,
        md,
        vec![
            ("rate_vs_latency.svg".into(), rate_svg),
            ("swap_vs_recompute.svg".into(), preemption_svg),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Silent;

    fn point(rate: f64, latency: f64) -> RatePoint {
        RatePoint {
            rate,
            run: ServingRun {
                requests: 1,
                finished: 1,
                rejected: 0,
                normalized_latency_s: latency,
                mean_latency_s: 0.0,
                duration_s: 0.0,
                output_tokens_per_s: 0.0,
                mean_batch_seqs: 0.0,
                steps: 0,
                preemptions_by_swap: 0,
                preemptions_by_recompute: 0,
                swapped_blocks: 0,
            },
        }
    }

    #[test]
    fn sustainable_rate_interpolates_at_the_first_crossing() {
        let points = [
            point(1.0, 0.05),
            point(2.0, 0.08),
            point(3.0, 0.2),
            point(4.0, 0.05),
        ];
        let (rate, all) = sustainable_rate(&points, 0.1);
        assert!((rate - (2.0 + 0.02 / 0.12)).abs() < 1e-12, "{rate}");
        assert!(!all);
        assert_eq!(sustainable_rate(&points[..2], 0.1), (2.0, true));
        assert_eq!(sustainable_rate(&points[2..3], 0.1), (0.0, false));
        assert_eq!(sustainable_rate(&[], 0.1), (0.0, true));
    }

    fn small(seed: u64) -> PaperConfig {
        PaperConfig {
            preemption_rate: 3.0,
            ..PaperConfig::with(seed, 100.0, vec![1.0, 2.0, 3.0, 4.0], vec![16, 64])
        }
    }

    #[test]
    fn vellum_sustains_more_than_every_orca_and_runs_are_deterministic() {
        let results = run(&small(1), &Silent).unwrap();
        let rate = |key: &str| {
            results
                .sweeps
                .iter()
                .find(|s| s.system == key)
                .unwrap()
                .sustainable_rate
        };
        let vellum = rate("vellum_b16");
        for key in ["orca_max", "orca_pow2", "orca_oracle"] {
            assert!(vellum > rate(key), "{key}: {results:#?}");
        }
        assert!(rate("orca_max") <= rate("orca_pow2"));
        assert!(rate("orca_pow2") <= rate("orca_oracle"));
        for sweep in &results.sweeps {
            let latency: Vec<f64> = sweep
                .points
                .iter()
                .map(|p| p.run.normalized_latency_s)
                .collect();
            assert!(latency[0] < latency[latency.len() - 1], "{sweep:?}");
            assert!(
                sweep
                    .points
                    .iter()
                    .all(|p| p.run.finished == p.run.requests)
            );
        }
        // Overloaded, both modes preempt; only swapping moves blocks.
        for p in &results.preemption {
            let preemptions = p.run.preemptions_by_swap + p.run.preemptions_by_recompute;
            assert!(preemptions > 0, "{p:?}");
            assert_eq!(p.run.swapped_blocks > 0, p.mode == "swap", "{p:?}");
        }
        assert_eq!(results, run(&small(1), &Silent).unwrap());
    }

    #[test]
    fn report_tables_and_plots() {
        let results = PaperResults {
            note: NOTE,
            config: small(0),
            sweeps: vec![SystemSweep {
                system: "vellum_b16".into(),
                label: "vellum (block 16)".into(),
                points: vec![point(0.5, 0.04), point(1.0, 0.3)],
                sustainable_rate: 0.6,
                sustains_every_rate: false,
            }],
            preemption: vec![],
        };
        let output = report(&results).unwrap();
        assert!(output.markdown.contains("SIMULATION"));
        assert!(
            output
                .markdown
                .contains("| vellum (block 16) | 0.60 | 0.040 | 0.300 |")
        );
        assert_eq!(output.json["sweeps"][0]["sustainable_rate"], 0.6);
        assert_eq!(output.json["config"]["cost_model"]["step_overhead_s"], 0.02);
        assert_eq!(output.files.len(), 2);
    }

    #[test]
    fn bad_configurations_are_errors() {
        for config in [
            PaperConfig {
                rates: vec![2.0, 1.0],
                ..small(0)
            },
            PaperConfig {
                rates: vec![],
                ..small(0)
            },
            PaperConfig {
                latency_threshold_s: 0.0,
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
