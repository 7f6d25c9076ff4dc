//! `cargo xtask bench`: the suites, their options, progress reporting and the one error type.
//!
//! Modules:
//! - [`systems`]: the KV managers under test (vellum's paged manager, the Orca baselines) and
//!   how a suite runs code generic over either.
//! - [`memory`]: KV slot utilisation per system and memory saved by sharing (paper Fig. 2, 15).
//! - [`cost_model`]: the calibrated cost of one GPU step (OPT-13B on one A100-40GB).
//! - [`serving_sim`]: a time-driven executor of the scheduler under that cost model.
//! - [`paper`]: the simulated rate sweep and swap-vs-recompute study (paper Fig. 12, 19).
//! - [`micro`]: the other crates' micro-benchmarks, run as child processes.
//! - [`serve`]: online serving over HTTP against vellum's server or any OpenAI-compatible
//!   engine (throughput, TTFT, TPOT, ITL per load level).

pub mod cost_model;
pub mod memory;
pub mod micro;
pub mod paper;
pub mod serve;
pub mod serving_sim;
pub mod systems;

use std::path::{Path, PathBuf};

use kv_block::KvError;
use scheduler::SchedulerError;
use scheduler::sim::SimError;

use crate::report;

/// A benchmark suite of `cargo xtask bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Suite {
    /// KV slot utilisation per system and memory saved by sharing (simulated steps).
    Memory,
    /// The paper's rate sweep and swap-vs-recompute study under a GPU cost model (simulation).
    Paper,
    /// `attention-kernels` micro-benchmarks.
    Kernels,
    /// `kv-block` micro-benchmarks.
    KvBlock,
    /// `scheduler` micro-benchmarks.
    Scheduler,
    /// `models` forward-pass benchmark.
    Model,
    /// Online serving over HTTP (builds and starts the server unless given a URL).
    Serve,
    /// Every suite above.
    All,
}

impl Suite {
    /// Every concrete suite, in the order `all` runs them.
    pub const CONCRETE: [Suite; 7] = [
        Suite::Memory,
        Suite::Paper,
        Suite::Kernels,
        Suite::KvBlock,
        Suite::Scheduler,
        Suite::Model,
        Suite::Serve,
    ];

    /// The suites to run for a command line: `all` expands to every suite, duplicates are
    /// dropped (first occurrence wins) and an empty list means `all`. Never returns `All`.
    pub fn expand(requested: &[Suite]) -> Vec<Suite> {
        let mut suites: Vec<Suite> = Vec::new();
        let requested = if requested.is_empty() {
            &[Suite::All][..]
        } else {
            requested
        };
        for &suite in requested {
            let members: &[Suite] = if suite == Suite::All {
                &Self::CONCRETE
            } else {
                std::slice::from_ref(&suite)
            };
            for &member in members {
                if !suites.contains(&member) {
                    suites.push(member);
                }
            }
        }
        suites
    }

    /// The suite's name on the command line, also its folder under the results directory.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Memory => "memory",
            Suite::Paper => "paper",
            Suite::Kernels => "kernels",
            Suite::KvBlock => "kv-block",
            Suite::Scheduler => "scheduler",
            Suite::Model => "model",
            Suite::Serve => "serve",
            Suite::All => "all",
        }
    }
}

/// Options shared by every suite.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Small configurations for a smoke run (memory + paper well under two minutes on 2 cores).
    pub quick: bool,
    /// Seed of every synthetic trace and simulation; the same seed gives the same results.
    pub seed: u64,
    /// Results directory; each suite writes into `<out_dir>/<suite>/`.
    pub out_dir: PathBuf,
    /// Options of the `serve` suite (ignored by the others).
    pub serve: serve::config::ServeOptions,
}

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Receives progress while suites run (a progress bar, or nothing in tests).
pub trait Progress {
    /// A stage named `name` with `units` units of work begins.
    fn stage(&self, name: &str, units: u64);
    /// One unit of the current stage finished; `label` says which.
    fn advance(&self, label: &str);
}

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn stage(&self, _name: &str, _units: u64) {}
    fn advance(&self, _label: &str) {}
}

/// Everything a suite can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A suite configuration that cannot run.
    #[error("invalid benchmark configuration: {0}")]
    InvalidConfig(String),
    /// The workload generator refused a trace specification.
    #[error("workload: {0:#}")]
    Workload(anyhow::Error),
    /// A block manager could not be built.
    #[error("block manager: {0}")]
    Kv(#[from] KvError),
    /// The scheduler refused a call.
    #[error("scheduler: {0}")]
    Scheduler(#[from] SchedulerError),
    /// The step simulator failed.
    #[error("simulator: {0}")]
    Sim(#[from] SimError),
    /// A simulation did not finish within its step limit (a livelock or stall).
    #[error("{system}: {unfinished} requests unfinished after {steps} steps")]
    Stalled {
        /// The system that stalled.
        system: String,
        /// Steps run.
        steps: u64,
        /// Requests still unfinished.
        unfinished: usize,
    },
    /// Reading or writing a file, or starting a child process, failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or command concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Talking to an engine, or running its server, failed.
    #[error("serve: {0}")]
    Serve(#[from] serve::ServeError),
    /// Serialising results failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A child benchmark exited unsuccessfully.
    #[error("`{command}` failed ({status}); its output is in {log}")]
    ChildFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Where its output was saved.
        log: String,
    },
}

impl BenchError {
    /// An I/O error about `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// Runs one concrete suite and writes its results under `options.out_dir`; returns the files
/// written. `Suite::All` is a configuration error (expand it with [`Suite::expand`] first).
pub fn run_suite(
    suite: Suite,
    options: &BenchOptions,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>, BenchError> {
    let dir = options.out_dir.join(suite.name());
    let output = match suite {
        Suite::Memory => {
            let config = if options.quick {
                memory::MemoryConfig::quick(options.seed)
            } else {
                memory::MemoryConfig::full(options.seed)
            };
            memory::report(&memory::run(&config, progress)?)?
        }
        Suite::Paper => {
            let config = if options.quick {
                paper::PaperConfig::quick(options.seed)
            } else {
                paper::PaperConfig::full(options.seed)
            };
            paper::report(&paper::run(&config, progress)?)?
        }
        Suite::Kernels | Suite::KvBlock | Suite::Scheduler | Suite::Model => {
            let bench = micro::MicroBench::of(suite).ok_or_else(|| {
                BenchError::InvalidConfig(format!("{} is not a micro-benchmark", suite.name()))
            })?;
            micro::run(bench, options.quick, &dir, progress)?
        }
        Suite::Serve => {
            let config =
                serve::config::ServeConfig::resolve(&options.serve, options.quick, options.seed)?;
            serve::report::report(&serve::run(&config, &dir, progress)?)?
        }
        Suite::All => {
            return Err(BenchError::InvalidConfig(
                "`all` must be expanded into suites before running".into(),
            ));
        }
    };
    report::write(&dir, &output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_once_in_order_and_empty_means_all() {
        assert_eq!(Suite::expand(&[]), Suite::CONCRETE.to_vec());
        assert_eq!(
            Suite::expand(&[Suite::Paper, Suite::All, Suite::Paper]),
            vec![
                Suite::Paper,
                Suite::Memory,
                Suite::Kernels,
                Suite::KvBlock,
                Suite::Scheduler,
                Suite::Model,
                Suite::Serve
            ]
        );
        assert_eq!(
            Suite::expand(&[Suite::KvBlock, Suite::KvBlock]),
            vec![Suite::KvBlock]
        );
    }

    #[test]
    fn all_is_not_runnable_itself() {
        let options = BenchOptions {
            quick: true,
            seed: 0,
            out_dir: std::env::temp_dir(),
            serve: serve::config::ServeOptions::default(),
        };
        assert!(matches!(
            run_suite(Suite::All, &options, &Silent),
            Err(BenchError::InvalidConfig(_))
        ));
    }
}
