//! `cargo xtask`: project tasks for vellum.
//!
//! - `cargo xtask trace`: write a seeded synthetic request trace (ShareGPT-like or Alpaca-like
//!   lengths, Poisson arrivals, parallel sampling or beam search, shared prefix) as JSONL.
//! - `cargo xtask bench [SUITE ...] [--quick] [--seed N] [--out DIR]`: run benchmark suites
//!   (`memory`, `paper`, `kernels`, `kv-block`, `scheduler`, `model`, `serve`, `all`) and write
//!   JSON, Markdown and SVG results under `DIR/<suite>/`. The `serve` suite takes `--url`,
//!   `--model`, `--concurrency`, `--rate`, `--num-requests` and `--input-len`/`--output-len`,
//!   `--dataset` or `--trace`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use xtask::bench::serve::config::ServeOptions;
use xtask::bench::{self, BenchOptions, Progress, Suite};
use xtask::workload::{self, Dataset, Decoding, TraceSpec};

#[derive(Parser)]
#[command(about = "Project tasks for vellum")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a seeded synthetic request trace as JSONL (one request per line).
    Trace {
        /// Length distribution to imitate.
        #[arg(long, value_enum, default_value = "sharegpt")]
        dataset: Dataset,
        /// Number of requests.
        #[arg(long, default_value_t = 1000)]
        num_requests: usize,
        /// Poisson arrival rate (requests/s); without it every request arrives at time zero.
        #[arg(long)]
        rate: Option<f64>,
        /// Parallel sampling: sequences per request.
        #[arg(long, default_value_t = 1, conflicts_with = "beam_width")]
        n: usize,
        /// Beam search with this width instead of sampling.
        #[arg(long)]
        beam_width: Option<usize>,
        /// Prepend the paper's few-shot prefix shared by every prompt: 1 (≈ 80 tokens) or 5
        /// (≈ 341 tokens) examples.
        #[arg(long, default_value_t = 0)]
        shots: usize,
        /// Seed of the generator.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output file; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run benchmark suites and write their results (JSON, Markdown, SVG).
    Bench {
        /// Suites to run (default: all).
        #[arg(value_enum)]
        suites: Vec<Suite>,
        /// Small configurations for a smoke run.
        #[arg(long)]
        quick: bool,
        /// Seed of every synthetic trace and simulation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Results directory; each suite writes into DIR/<suite>/.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

/// Options of the `serve` suite.
#[derive(clap::Args)]
#[command(next_help_heading = "serve suite")]
struct ServeArgs {
    /// Drive this OpenAI-compatible engine (e.g. http://host:8000) instead of building and
    /// starting vellum's server.
    #[arg(long, conflicts_with = "model")]
    url: Option<String>,
    /// Hugging Face model directory for the started server (default: the 95M demo model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Closed-loop concurrency levels (default 1,8,32; quick 1,8).
    #[arg(long, value_delimiter = ',', conflicts_with = "rate")]
    concurrency: Vec<usize>,
    /// Open loop: Poisson arrivals at this many requests per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Requests per level (default: 3 per concurrent request, at least 8; open loop 64).
    #[arg(long)]
    num_requests: Option<usize>,
    /// Prompt tokens of every request (default 125).
    #[arg(long, conflicts_with_all = ["dataset", "trace"])]
    input_len: Option<usize>,
    /// Output tokens of every request (default 128; quick 16).
    #[arg(long, conflicts_with_all = ["dataset", "trace"])]
    output_len: Option<usize>,
    /// Draw lengths from a synthetic dataset's distribution.
    #[arg(long, value_enum, conflicts_with = "trace")]
    dataset: Option<Dataset>,
    /// Take lengths from a JSONL trace (`cargo xtask trace` writes one).
    #[arg(long)]
    trace: Option<PathBuf>,
}

impl From<ServeArgs> for ServeOptions {
    fn from(args: ServeArgs) -> Self {
        Self {
            url: args.url,
            model: args.model,
            concurrency: args.concurrency,
            rate: args.rate,
            num_requests: args.num_requests,
            input_len: args.input_len,
            output_len: args.output_len,
            dataset: args.dataset,
            trace: args.trace,
        }
    }
}

/// A terminal progress bar: one bar per stage, reset when the next stage begins.
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix:>10} [{bar:30}] {pos}/{len} {elapsed_precise} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Self(bar)
    }
}

impl Progress for Bar {
    fn stage(&self, name: &str, units: u64) {
        self.0.reset();
        self.0.set_length(units);
        self.0.set_prefix(name.to_string());
        self.0.set_message("");
    }

    fn advance(&self, label: &str) {
        self.0.set_message(label.to_string());
        self.0.inc(1);
    }
}

fn run_bench(suites: &[Suite], options: &BenchOptions) -> Result<()> {
    let bar = Bar::new();
    for suite in Suite::expand(suites) {
        let written = bench::run_suite(suite, options, &bar);
        match written {
            Ok(paths) => {
                bar.0.suspend(|| {
                    for path in paths {
                        println!("wrote {}", path.display());
                    }
                });
            }
            Err(error) => {
                bar.0.abandon();
                return Err(error.into());
            }
        }
    }
    bar.0.finish_and_clear();
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Trace {
            dataset,
            num_requests,
            rate,
            n,
            beam_width,
            shots,
            seed,
            out,
        } => {
            let decoding = match beam_width {
                Some(width) => Decoding::Beam { width },
                None => Decoding::Sample { n },
            };
            let shared_prefix_len = workload::few_shot_prefix_len(shots)?;
            let spec = TraceSpec {
                dataset,
                num_requests,
                rate,
                decoding,
                shared_prefix_len,
                seed,
            };
            let trace = workload::generate(&spec)?;
            let writer: Box<dyn Write> = match out {
                Some(path) => Box::new(BufWriter::new(File::create(path)?)),
                None => Box::new(std::io::stdout().lock()),
            };
            workload::write_jsonl(&trace, writer)
        }
        Command::Bench {
            suites,
            quick,
            seed,
            out,
            serve,
        } => run_bench(
            &suites,
            &BenchOptions {
                quick,
                seed,
                out_dir: out,
                serve: serve.into(),
            },
        ),
    }
}
