//! Seeded synthetic request traces shaped like the paper's datasets (no downloads).
//!
//! A trace is a list of requests, each with an arrival time, a prompt length, an output length and a
//! decoding method. Lengths are drawn from log-normal distributions calibrated so that, after the
//! same filtering vLLM's benchmark applies to ShareGPT (prompt and output at least 4 tokens, prompt at
//! most 1024, prompt + output at most 2048), their means match the paper's Table/Figure 11 figures:
//! ShareGPT ≈ 161 prompt / 338 output tokens, Alpaca ≈ 19 / 58. Arrivals are a Poisson process at a
//! given rate, or all at time zero. The same seed always gives the same trace.

use std::io::{BufRead, Write};

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal};
use serde::{Deserialize, Serialize};

/// Which dataset's length distribution a synthetic trace imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    /// Long conversations: mean ≈ 161 prompt / 338 output tokens, long tails.
    #[value(name = "sharegpt", alias = "share-gpt")]
    ShareGpt,
    /// Short instructions: mean ≈ 19 prompt / 58 output tokens.
    Alpaca,
}

/// Log-normal parameters (of the underlying normal) for prompt and output lengths.
struct LengthModel {
    prompt: (f64, f64),
    output: (f64, f64),
}

impl Dataset {
    /// Calibrated so the filtered means land on the paper's figures (see the tests).
    fn length_model(self) -> LengthModel {
        match self {
            Dataset::ShareGpt => LengthModel {
                prompt: (4.66, 1.05),
                output: (5.545, 0.8),
            },
            Dataset::Alpaca => LengthModel {
                prompt: (2.75, 0.6),
                output: (3.75, 0.8),
            },
        }
    }
}

/// The limits vLLM's `benchmark_serving.py` applies when it samples ShareGPT.
pub const MIN_LEN: usize = 4;
/// Longest prompt a trace request may have.
pub const MAX_PROMPT_LEN: usize = 1024;
/// Longest prompt + output a trace request may have.
pub const MAX_TOTAL_LEN: usize = 2048;

/// How one request decodes; every variant produces `output_len` tokens per sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decoding {
    /// Parallel sampling with `n` sequences (`n == 1` is plain sampling).
    Sample {
        /// Number of sequences sampled from the prompt (≥ 1).
        n: usize,
    },
    /// Beam search with the given width (≥ 1).
    Beam {
        /// Beam width.
        width: usize,
    },
}

impl Decoding {
    /// Number of sequences the request runs in parallel.
    pub fn num_seqs(self) -> usize {
        match self {
            Decoding::Sample { n } => n,
            Decoding::Beam { width } => width,
        }
    }
}

/// One request of a trace. Invariant (for generated traces): `prompt_len ≥ MIN_LEN`,
/// `output_len ≥ MIN_LEN`, `prompt_len ≤ MAX_PROMPT_LEN` and `prompt_len + output_len ≤ MAX_TOTAL_LEN`;
/// `shared_prefix_len ≤ prompt_len`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// Seconds after the start of the run at which the request is sent.
    pub arrival_s: f64,
    /// Prompt length in tokens, the shared prefix included.
    pub prompt_len: usize,
    /// Tokens to generate per sequence.
    pub output_len: usize,
    /// Decoding method.
    pub decoding: Decoding,
    /// Leading prompt tokens common to every request of the trace (a few-shot prefix), 0 if none.
    #[serde(default)]
    pub shared_prefix_len: usize,
}

/// Everything that determines a synthetic trace.
#[derive(Clone, Debug)]
pub struct TraceSpec {
    /// Length distribution.
    pub dataset: Dataset,
    /// Number of requests.
    pub num_requests: usize,
    /// Poisson arrival rate in requests per second; `None` sends everything at time zero.
    pub rate: Option<f64>,
    /// Decoding method of every request.
    pub decoding: Decoding,
    /// Length of a prefix shared by all prompts (e.g. ≈ 80 tokens for 1-shot, ≈ 341 for 5-shot);
    /// it is prepended to each drawn prompt, and the request is redrawn if that breaks the caps.
    pub shared_prefix_len: usize,
    /// Seed of the generator.
    pub seed: u64,
}

/// Length of the 1-shot prefix of the paper's shared-prefix experiment (§6.4).
pub const ONE_SHOT_PREFIX_LEN: usize = 80;
/// Length of the 5-shot prefix of the paper's shared-prefix experiment (§6.4).
pub const FIVE_SHOT_PREFIX_LEN: usize = 341;

/// The shared-prefix length of the paper's few-shot experiment with `shots` examples (1 or 5).
pub fn few_shot_prefix_len(shots: usize) -> Result<usize> {
    match shots {
        0 => Ok(0),
        1 => Ok(ONE_SHOT_PREFIX_LEN),
        5 => Ok(FIVE_SHOT_PREFIX_LEN),
        _ => bail!("the paper's shared-prefix workloads are 1-shot and 5-shot, not {shots}-shot"),
    }
}

/// Generates the trace `spec` describes.
pub fn generate(spec: &TraceSpec) -> Result<Vec<TraceRequest>> {
    if spec.shared_prefix_len + MIN_LEN > MAX_PROMPT_LEN {
        bail!(
            "a shared prefix of {} tokens leaves no room under the {MAX_PROMPT_LEN}-token prompt cap",
            spec.shared_prefix_len
        );
    }
    if spec.decoding.num_seqs() == 0 {
        bail!("a request must run at least one sequence");
    }
    let arrivals = match spec.rate {
        Some(rate) if !(rate.is_finite() && rate > 0.0) => {
            bail!("the request rate must be a positive number, got {rate}")
        }
        Some(rate) => Some(Exp::new(rate).context("arrival distribution")?),
        None => None,
    };
    let model = spec.dataset.length_model();
    let prompt_dist = LogNormal::new(model.prompt.0, model.prompt.1)?;
    let output_dist = LogNormal::new(model.output.0, model.output.1)?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut clock = 0.0;
    let mut trace = Vec::with_capacity(spec.num_requests);
    while trace.len() < spec.num_requests {
        let prompt_len = spec.shared_prefix_len + prompt_dist.sample(&mut rng).round() as usize;
        let output_len = output_dist.sample(&mut rng).round() as usize;
        if !within_caps(prompt_len, output_len) {
            continue;
        }
        if let Some(gap) = &arrivals {
            clock += gap.sample(&mut rng);
        }
        trace.push(TraceRequest {
            arrival_s: clock,
            prompt_len,
            output_len,
            decoding: spec.decoding,
            shared_prefix_len: spec.shared_prefix_len,
        });
    }
    Ok(trace)
}

fn within_caps(prompt_len: usize, output_len: usize) -> bool {
    prompt_len >= MIN_LEN
        && output_len >= MIN_LEN
        && prompt_len <= MAX_PROMPT_LEN
        && prompt_len + output_len <= MAX_TOTAL_LEN
}

/// Deterministic prompt token ids for request `index` of a trace: the shared prefix is the same for
/// every request, the rest differs per request and per seed. Ids are drawn from `1..vocab_size`.
pub fn prompt_tokens(request: &TraceRequest, index: usize, vocab_size: u32, seed: u64) -> Vec<u32> {
    let draw = |rng: &mut ChaCha8Rng, len: usize| -> Vec<u32> {
        (0..len)
            .map(|_| rng.random_range(1..vocab_size.max(2)))
            .collect()
    };
    let mut prefix_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_F00D);
    let mut tokens = draw(&mut prefix_rng, request.shared_prefix_len);
    // One ChaCha stream per request under the run's seed: runs with different seeds share no
    // prompt (seeding with `seed + index` made seed 11's request 0 equal seed 0's request 11,
    // so a second run against the same server hit its prefix cache).
    let mut own_rng = ChaCha8Rng::seed_from_u64(seed);
    own_rng.set_stream(index as u64 + 1);
    tokens.extend(draw(
        &mut own_rng,
        request.prompt_len - request.shared_prefix_len,
    ));
    tokens
}

/// Reads a user trace: one JSON [`TraceRequest`] per line (blank lines ignored).
pub fn read_jsonl(reader: impl BufRead) -> Result<Vec<TraceRequest>> {
    let mut trace = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let request: TraceRequest = serde_json::from_str(&line)
            .with_context(|| format!("trace line {}: not a trace request", number + 1))?;
        if request.shared_prefix_len > request.prompt_len || request.prompt_len == 0 {
            bail!(
                "trace line {}: prompt_len must be positive and at least shared_prefix_len",
                number + 1
            );
        }
        if request.decoding.num_seqs() == 0 || request.output_len == 0 {
            bail!(
                "trace line {}: output_len, n and width must be positive",
                number + 1
            );
        }
        trace.push(request);
    }
    Ok(trace)
}

/// Writes a trace as JSONL, the format [`read_jsonl`] reads.
pub fn write_jsonl(trace: &[TraceRequest], mut writer: impl Write) -> Result<()> {
    for request in trace {
        serde_json::to_writer(&mut writer, request)?;
        writer.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dataset: Dataset) -> TraceSpec {
        TraceSpec {
            dataset,
            num_requests: 20_000,
            rate: Some(4.0),
            decoding: Decoding::Sample { n: 1 },
            shared_prefix_len: 0,
            seed: 7,
        }
    }

    fn mean(values: impl Iterator<Item = usize>) -> f64 {
        let values: Vec<usize> = values.collect();
        values.iter().sum::<usize>() as f64 / values.len() as f64
    }

    fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
        let error = (actual - expected).abs() / expected;
        assert!(
            error <= tolerance,
            "{what}: got {actual:.2}, want {expected} ± {tolerance:.0e}"
        );
    }

    #[test]
    fn sharegpt_lengths_match_the_paper_and_respect_the_caps() {
        let trace = generate(&spec(Dataset::ShareGpt)).unwrap();
        assert_close(
            mean(trace.iter().map(|r| r.prompt_len)),
            161.0,
            0.03,
            "prompt mean",
        );
        assert_close(
            mean(trace.iter().map(|r| r.output_len)),
            338.0,
            0.03,
            "output mean",
        );
        assert!(
            trace
                .iter()
                .all(|r| within_caps(r.prompt_len, r.output_len))
        );
        // A long tail: some prompts near the cap, far above the mean.
        assert!(trace.iter().any(|r| r.prompt_len > 800));
    }

    #[test]
    fn alpaca_lengths_match_the_paper() {
        let trace = generate(&spec(Dataset::Alpaca)).unwrap();
        assert_close(
            mean(trace.iter().map(|r| r.prompt_len)),
            19.0,
            0.03,
            "prompt mean",
        );
        assert_close(
            mean(trace.iter().map(|r| r.output_len)),
            58.0,
            0.03,
            "output mean",
        );
    }

    #[test]
    fn poisson_inter_arrival_mean_is_one_over_rate() {
        let trace = generate(&spec(Dataset::Alpaca)).unwrap();
        let span = trace.last().unwrap().arrival_s;
        assert_close(span / trace.len() as f64, 0.25, 0.03, "inter-arrival mean");
        assert!(trace.windows(2).all(|w| w[0].arrival_s <= w[1].arrival_s));
    }

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        let a = generate(&spec(Dataset::ShareGpt)).unwrap();
        assert_eq!(a, generate(&spec(Dataset::ShareGpt)).unwrap());
        let other = TraceSpec {
            seed: 8,
            ..spec(Dataset::ShareGpt)
        };
        assert_ne!(a, generate(&other).unwrap());
    }

    #[test]
    fn shared_prefix_is_common_to_every_prompt() {
        let spec = TraceSpec {
            num_requests: 50,
            shared_prefix_len: FIVE_SHOT_PREFIX_LEN,
            ..spec(Dataset::Alpaca)
        };
        let trace = generate(&spec).unwrap();
        let prompts: Vec<Vec<u32>> = trace
            .iter()
            .enumerate()
            .map(|(i, r)| prompt_tokens(r, i, 32_000, 1))
            .collect();
        for (request, prompt) in trace.iter().zip(&prompts) {
            assert_eq!(prompt.len(), request.prompt_len);
            assert_eq!(
                prompt[..FIVE_SHOT_PREFIX_LEN],
                prompts[0][..FIVE_SHOT_PREFIX_LEN]
            );
            assert!(prompt.iter().all(|&t| (1..32_000).contains(&t)));
        }
        assert_ne!(
            prompts[0][FIVE_SHOT_PREFIX_LEN..],
            prompts[1][FIVE_SHOT_PREFIX_LEN..]
        );
    }

    /// Two seeds give disjoint prompt sets, whatever the request indices (a second run against
    /// a warm server must not hit its prefix cache).
    #[test]
    fn runs_with_different_seeds_share_no_prompt() {
        let request = TraceRequest {
            arrival_s: 0.0,
            prompt_len: 16,
            output_len: 4,
            decoding: Decoding::Sample { n: 1 },
            shared_prefix_len: 0,
        };
        let prompts = |seed: u64| -> std::collections::HashSet<Vec<u32>> {
            (0..64)
                .map(|i| prompt_tokens(&request, i, 32_000, seed))
                .collect()
        };
        let (first, second) = (prompts(0), prompts(11));
        assert_eq!(first.len(), 64);
        assert!(first.is_disjoint(&second));
    }

    #[test]
    fn jsonl_round_trips_and_rejects_bad_lines() {
        let trace = generate(&TraceSpec {
            num_requests: 5,
            decoding: Decoding::Beam { width: 4 },
            ..spec(Dataset::Alpaca)
        })
        .unwrap();
        let mut bytes = Vec::new();
        write_jsonl(&trace, &mut bytes).unwrap();
        assert_eq!(read_jsonl(bytes.as_slice()).unwrap(), trace);

        let bad = br#"{"arrival_s":0,"prompt_len":3,"output_len":5,"decoding":{"kind":"sample","n":1},"shared_prefix_len":9}"#;
        let error = read_jsonl(bad.as_slice()).unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
        assert!(read_jsonl(&b"not json\n"[..]).is_err());
    }

    #[test]
    fn impossible_specs_are_errors() {
        let too_long_prefix = TraceSpec {
            shared_prefix_len: 1022,
            ..spec(Dataset::Alpaca)
        };
        assert!(generate(&too_long_prefix).is_err());
        let bad_rate = TraceSpec {
            rate: Some(0.0),
            ..spec(Dataset::Alpaca)
        };
        assert!(generate(&bad_rate).is_err());
    }
}
