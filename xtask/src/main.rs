//! `cargo xtask`: project tasks for vellum.
//!
//! - `cargo xtask trace`: write a seeded synthetic request trace (ShareGPT-like or Alpaca-like
//!   lengths, Poisson arrivals, parallel sampling or beam search, shared prefix) as JSONL.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
        #[arg(long, value_enum, default_value = "share-gpt")]
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
    }
}
