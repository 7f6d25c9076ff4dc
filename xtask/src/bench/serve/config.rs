//! The suite's configuration: command-line options resolved into an engine target, a source of
//! request lengths and a list of load levels, and the requests of each level.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use serde::Serialize;

use super::client::CompletionRequest;
use crate::bench::BenchError;
use crate::workload::{self, Dataset, Decoding, TraceRequest, TraceSpec};

/// Prompt tokens of the default workload.
pub const DEFAULT_INPUT_LEN: usize = 125;
/// Output tokens of the default workload.
pub const DEFAULT_OUTPUT_LEN: usize = 128;
/// Concurrency levels of a full run.
pub const DEFAULT_CONCURRENCY: [usize; 3] = [1, 8, 32];
/// Concurrency levels of a quick run.
pub const QUICK_CONCURRENCY: [usize; 2] = [1, 8];
/// Longest output of a quick run (unless `--output-len` says otherwise).
pub const QUICK_MAX_OUTPUT_LEN: usize = 16;
/// Prompt token ids are drawn from `1..PROMPT_VOCAB`: valid in any vocabulary of at least 256
/// tokens (a byte-level tokenizer's included), so every engine accepts the same prompts.
pub const PROMPT_VOCAB: u32 = 256;
/// Requests of an open-loop level unless `--num-requests` says otherwise (full, quick).
const OPEN_LOOP_REQUESTS: (usize, usize) = (64, 8);

/// The suite's command-line options; `None` and empty mean "the default".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServeOptions {
    /// Drive the engine at this base URL instead of starting vellum's server.
    pub url: Option<String>,
    /// Hugging Face model directory for the started server (default: the 95M demo model).
    pub model: Option<PathBuf>,
    /// Closed-loop concurrency levels.
    pub concurrency: Vec<usize>,
    /// Open-loop Poisson rate (requests/s) instead of closed-loop levels.
    pub rate: Option<f64>,
    /// Requests per level.
    pub num_requests: Option<usize>,
    /// Fixed prompt length.
    pub input_len: Option<usize>,
    /// Fixed output length.
    pub output_len: Option<usize>,
    /// Draw lengths from a synthetic dataset instead.
    pub dataset: Option<Dataset>,
    /// Take lengths from a JSONL trace instead.
    pub trace: Option<PathBuf>,
}

/// The engine measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// Build and start vellum's server, serving `model` or the 95M demo model.
    Spawn {
        /// Hugging Face model directory; `None` for the demo model.
        model: Option<PathBuf>,
    },
    /// An already running OpenAI-compatible engine.
    Url {
        /// Its base URL.
        url: String,
    },
}

/// Where request lengths come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Prompts {
    /// Every request has the same lengths.
    Fixed {
        /// Prompt tokens.
        input_len: usize,
        /// Output tokens.
        output_len: usize,
    },
    /// Lengths drawn (seeded) from a synthetic dataset's distribution.
    Dataset {
        /// The dataset imitated.
        dataset: Dataset,
    },
    /// Lengths read from a JSONL trace, cycled if the level has more requests.
    Trace {
        /// The trace file.
        path: PathBuf,
    },
}

/// One load level. Invariant: exactly one of `concurrency` (≥ 1) and `rate` (> 0) is set, and
/// `num_requests ≥ 1`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelSpec {
    /// Closed-loop concurrency.
    pub concurrency: Option<usize>,
    /// Open-loop Poisson rate, requests per second.
    pub rate: Option<f64>,
    /// Requests sent in the level.
    pub num_requests: usize,
}

impl LevelSpec {
    /// A short name: `concurrency 8` or `rate 2.5/s`.
    pub fn label(&self) -> String {
        match (self.concurrency, self.rate) {
            (_, Some(rate)) => format!("rate {rate}/s"),
            (concurrency, None) => format!("concurrency {}", concurrency.unwrap_or(1)),
        }
    }
}

/// A resolved configuration. Invariants (established by [`ServeConfig::resolve`]): at least
/// one level, every level valid, fixed lengths positive.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServeConfig {
    /// The engine.
    pub target: Target,
    /// The request lengths.
    pub prompts: Prompts,
    /// The levels, run in order.
    pub levels: Vec<LevelSpec>,
    /// Outputs longer than this are cut to it (quick runs).
    pub max_output_len: Option<usize>,
    /// Seed of prompts, dataset lengths and arrivals.
    pub seed: u64,
}

fn invalid(message: impl Into<String>) -> BenchError {
    BenchError::InvalidConfig(message.into())
}

impl ServeConfig {
    /// Resolves command-line options, filling in the defaults of a full or `quick` run, and
    /// rejects contradictory or empty settings.
    pub fn resolve(options: &ServeOptions, quick: bool, seed: u64) -> Result<Self, BenchError> {
        let target = match (&options.url, &options.model) {
            (Some(_), Some(_)) => return Err(invalid("--model starts a server; --url uses one")),
            (Some(url), None) => Target::Url { url: url.clone() },
            (None, model) => Target::Spawn {
                model: model.clone(),
            },
        };
        let fixed = options.input_len.is_some() || options.output_len.is_some();
        let prompts = match (&options.dataset, &options.trace) {
            (Some(_), Some(_)) => return Err(invalid("choose --dataset or --trace, not both")),
            _ if fixed && (options.dataset.is_some() || options.trace.is_some()) => {
                return Err(invalid(
                    "--input-len/--output-len fix the lengths; --dataset and --trace draw them",
                ));
            }
            (Some(dataset), None) => Prompts::Dataset { dataset: *dataset },
            (None, Some(path)) => Prompts::Trace { path: path.clone() },
            (None, None) => Prompts::Fixed {
                input_len: options.input_len.unwrap_or(DEFAULT_INPUT_LEN),
                output_len: options.output_len.unwrap_or(if quick {
                    QUICK_MAX_OUTPUT_LEN
                } else {
                    DEFAULT_OUTPUT_LEN
                }),
            },
        };
        if matches!(prompts, Prompts::Fixed { input_len, output_len } if input_len == 0 || output_len == 0)
        {
            return Err(invalid("--input-len and --output-len must be positive"));
        }
        if options.num_requests == Some(0) {
            return Err(invalid("--num-requests must be positive"));
        }
        let levels = match options.rate {
            Some(_) if !options.concurrency.is_empty() => {
                return Err(invalid(
                    "--rate runs an open loop; --concurrency closed loops",
                ));
            }
            Some(rate) if !(rate.is_finite() && rate > 0.0) => {
                return Err(invalid(format!("--rate {rate} must be a positive number")));
            }
            Some(rate) => {
                let default = if quick {
                    OPEN_LOOP_REQUESTS.1
                } else {
                    OPEN_LOOP_REQUESTS.0
                };
                vec![LevelSpec {
                    concurrency: None,
                    rate: Some(rate),
                    num_requests: options.num_requests.unwrap_or(default),
                }]
            }
            None => {
                let concurrency = match (&options.concurrency[..], quick) {
                    ([], true) => &QUICK_CONCURRENCY[..],
                    ([], false) => &DEFAULT_CONCURRENCY[..],
                    (given, _) => given,
                };
                if concurrency.contains(&0) {
                    return Err(invalid("concurrency levels must be at least 1"));
                }
                concurrency
                    .iter()
                    .map(|&c| LevelSpec {
                        concurrency: Some(c),
                        rate: None,
                        num_requests: options
                            .num_requests
                            .unwrap_or_else(|| default_closed_loop_requests(c, quick)),
                    })
                    .collect()
            }
        };
        let max_output_len =
            (quick && options.output_len.is_none()).then_some(QUICK_MAX_OUTPUT_LEN);
        Ok(Self {
            target,
            prompts,
            levels,
            max_output_len,
            seed,
        })
    }

    /// The request lengths levels draw from, in order (a level cycles through them). Reads the
    /// trace file or draws the dataset's lengths (as many as the largest level needs).
    pub fn request_lengths(&self) -> Result<Vec<TraceRequest>, BenchError> {
        let single = |prompt_len, output_len| TraceRequest {
            arrival_s: 0.0,
            prompt_len,
            output_len,
            decoding: Decoding::Sample { n: 1 },
            shared_prefix_len: 0,
        };
        let lengths = match &self.prompts {
            Prompts::Fixed {
                input_len,
                output_len,
            } => vec![single(*input_len, *output_len)],
            Prompts::Dataset { dataset } => workload::generate(&TraceSpec {
                dataset: *dataset,
                num_requests: self
                    .levels
                    .iter()
                    .map(|l| l.num_requests)
                    .max()
                    .unwrap_or(1),
                rate: None,
                decoding: Decoding::Sample { n: 1 },
                shared_prefix_len: 0,
                seed: self.seed,
            })
            .map_err(BenchError::Workload)?,
            Prompts::Trace { path } => {
                let file = File::open(path).map_err(|e| BenchError::io(path, e))?;
                workload::read_jsonl(BufReader::new(file)).map_err(BenchError::Workload)?
            }
        };
        if lengths.is_empty() {
            return Err(invalid("the trace has no requests"));
        }
        if lengths.iter().any(|r| r.decoding.num_seqs() != 1) {
            return Err(invalid(
                "the serve suite sends single-sequence requests; the trace asks for n > 1 or beam search",
            ));
        }
        Ok(lengths)
    }

    /// `count` requests whose lengths cycle through `lengths` from its start and whose prompts
    /// are prompts number `first..first + count` of the run (distinct unless a trace shares a
    /// prefix). Outputs are capped at `max_output_len`.
    pub fn requests(
        &self,
        lengths: &[TraceRequest],
        first: usize,
        count: usize,
    ) -> Vec<CompletionRequest> {
        lengths
            .iter()
            .cycle()
            .take(count)
            .enumerate()
            .map(|(k, request)| CompletionRequest {
                prompt: workload::prompt_tokens(request, first + k, PROMPT_VOCAB, self.seed),
                max_tokens: self
                    .max_output_len
                    .map_or(request.output_len, |cap| request.output_len.min(cap)),
            })
            .collect()
    }
}

/// Requests of a closed-loop level: enough for every worker to send several (so the level
/// reaches a steady state), at least a handful at concurrency one.
pub fn default_closed_loop_requests(concurrency: usize, quick: bool) -> usize {
    if quick {
        (2 * concurrency).max(4)
    } else {
        (3 * concurrency).max(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_issues_setting_and_quick_is_smaller() {
        let full = ServeConfig::resolve(&ServeOptions::default(), false, 0).unwrap();
        assert_eq!(full.target, Target::Spawn { model: None });
        assert_eq!(
            full.prompts,
            Prompts::Fixed {
                input_len: 125,
                output_len: 128
            }
        );
        let levels: Vec<(Option<usize>, usize)> = full
            .levels
            .iter()
            .map(|l| (l.concurrency, l.num_requests))
            .collect();
        assert_eq!(levels, [(Some(1), 8), (Some(8), 24), (Some(32), 96)]);
        assert_eq!(full.max_output_len, None);

        let quick = ServeConfig::resolve(&ServeOptions::default(), true, 0).unwrap();
        let concurrency: Vec<Option<usize>> = quick.levels.iter().map(|l| l.concurrency).collect();
        assert_eq!(concurrency, [Some(1), Some(8)]);
        assert_eq!(quick.max_output_len, Some(QUICK_MAX_OUTPUT_LEN));
        assert_eq!(quick.levels[0].label(), "concurrency 1");
    }

    #[test]
    fn open_loop_url_and_explicit_lengths() {
        let options = ServeOptions {
            url: Some("http://gpu-box:8000".into()),
            rate: Some(2.5),
            num_requests: Some(10),
            input_len: Some(7),
            ..ServeOptions::default()
        };
        let config = ServeConfig::resolve(&options, true, 3).unwrap();
        assert_eq!(
            config.levels,
            [LevelSpec {
                concurrency: None,
                rate: Some(2.5),
                num_requests: 10
            }]
        );
        assert_eq!(config.levels[0].label(), "rate 2.5/s");
        assert_eq!(
            config.prompts,
            Prompts::Fixed {
                input_len: 7,
                output_len: QUICK_MAX_OUTPUT_LEN
            }
        );
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["target"]["kind"], "url");
        assert_eq!(json["prompts"]["kind"], "fixed");
    }

    #[test]
    fn contradictions_and_empty_settings_are_rejected() {
        let bad = [
            ServeOptions {
                url: Some("http://x".into()),
                model: Some("m".into()),
                ..ServeOptions::default()
            },
            ServeOptions {
                rate: Some(1.0),
                concurrency: vec![4],
                ..ServeOptions::default()
            },
            ServeOptions {
                rate: Some(-1.0),
                ..ServeOptions::default()
            },
            ServeOptions {
                concurrency: vec![0, 4],
                ..ServeOptions::default()
            },
            ServeOptions {
                num_requests: Some(0),
                ..ServeOptions::default()
            },
            ServeOptions {
                output_len: Some(0),
                ..ServeOptions::default()
            },
            ServeOptions {
                dataset: Some(Dataset::Alpaca),
                input_len: Some(5),
                ..ServeOptions::default()
            },
            ServeOptions {
                dataset: Some(Dataset::Alpaca),
                trace: Some("t.jsonl".into()),
                ..ServeOptions::default()
            },
        ];
        for options in bad {
            assert!(
                matches!(
                    ServeConfig::resolve(&options, false, 0),
                    Err(BenchError::InvalidConfig(_))
                ),
                "{options:?}"
            );
        }
    }

    #[test]
    fn requests_cycle_lengths_cap_outputs_and_never_repeat_a_prompt() {
        let options = ServeOptions {
            dataset: Some(Dataset::ShareGpt),
            concurrency: vec![2],
            num_requests: Some(5),
            ..ServeOptions::default()
        };
        let config = ServeConfig::resolve(&options, true, 1).unwrap();
        let lengths = config.request_lengths().unwrap();
        assert_eq!(lengths.len(), 5);
        let first = config.requests(&lengths, 0, 7);
        let second = config.requests(&lengths, 7, 7);
        for (k, request) in first.iter().enumerate() {
            assert_eq!(request.prompt.len(), lengths[k % 5].prompt_len);
            assert_eq!(
                request.max_tokens,
                lengths[k % 5].output_len.min(QUICK_MAX_OUTPUT_LEN)
            );
            assert!(
                request
                    .prompt
                    .iter()
                    .all(|&t| (1..PROMPT_VOCAB).contains(&t))
            );
        }
        assert_eq!(first[5].prompt.len(), first[0].prompt.len());
        assert_ne!(first[5].prompt, first[0].prompt);
        assert!(
            first
                .iter()
                .all(|a| second.iter().all(|b| a.prompt != b.prompt))
        );
    }

    #[test]
    fn traces_must_be_single_sequence_and_non_empty() {
        let dir = std::env::temp_dir().join(format!("xtask-serve-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_for = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            let options = ServeOptions {
                trace: Some(path),
                ..ServeOptions::default()
            };
            ServeConfig::resolve(&options, false, 0).unwrap()
        };
        let beam =
            r#"{"arrival_s":0,"prompt_len":9,"output_len":5,"decoding":{"kind":"beam","width":4}}"#;
        assert!(config_for("beam.jsonl", beam).request_lengths().is_err());
        assert!(config_for("empty.jsonl", "\n").request_lengths().is_err());
        let single =
            r#"{"arrival_s":0,"prompt_len":9,"output_len":5,"decoding":{"kind":"sample","n":1}}"#;
        let lengths = config_for("ok.jsonl", single).request_lengths().unwrap();
        assert_eq!((lengths[0].prompt_len, lengths[0].output_len), (9, 5));
        let missing = ServeConfig::resolve(
            &ServeOptions {
                trace: Some(dir.join("missing.jsonl")),
                ..ServeOptions::default()
            },
            false,
            0,
        )
        .unwrap();
        assert!(matches!(
            missing.request_lengths(),
            Err(BenchError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
