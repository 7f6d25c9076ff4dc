//! The `serve` suite: online serving benchmark of an OpenAI-compatible engine over HTTP, with
//! vLLM's `benchmark_serving` metric definitions. Without a URL it builds and starts vellum's
//! server (the 95M demo model, or `--model DIR`) and stops it afterwards; with one it drives that
//! engine (vLLM, say), so two engines can be compared on the same requests.
//!
//! Each load level is a closed loop at one concurrency, or an open loop at a Poisson rate.
//! Requests are token-id prompts, greedy, `ignore_eos`, streamed with usage. Every prompt of a
//! run is distinct, so no level profits from the prefix cache another one filled.
//!
//! Modules: [`config`] (options → levels and request lengths), [`client`] (HTTP), [`sse`]
//! (stream parser), [`stats`] (latency statistics), [`scrape`] (Prometheus metrics), [`load`]
//! (closed and open loops), [`launcher`] (the server child) and [`report`].

pub mod client;
pub mod config;
pub mod launcher;
pub mod load;
pub mod report;
pub mod scrape;
pub mod sse;
pub mod stats;

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use self::client::{CompletionRequest, EngineClient};
use self::config::{LevelSpec, ServeConfig, Target};
use self::launcher::ServerProcess;
use self::load::{LevelRun, Schedule};
use self::stats::LevelStats;
use super::{BenchError, Progress};

/// How long a spawned server may take to answer `/health`.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Distinct error messages kept per level.
const ERRORS_KEPT: usize = 5;
/// Tokens of the warm-up request sent before the first level.
const WARM_UP_TOKENS: usize = 4;

/// What can go wrong talking to an engine or running its server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The request could not be sent or its body not read.
    #[error("{url}: {message}")]
    Http {
        /// The URL requested.
        url: String,
        /// The transport error.
        message: String,
    },
    /// The engine answered with an error status.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The event stream could not be parsed.
    #[error("stream: {0}")]
    Stream(#[from] sse::SseError),
    /// The engine reported an error inside the stream.
    #[error("the engine failed the request mid-stream: {0}")]
    InStream(String),
    /// `/v1/models` listed no model.
    #[error("{url} lists no model")]
    NoModel {
        /// The URL requested.
        url: String,
    },
    /// The spawned server exited before it was ready.
    #[error("the server exited ({status}) before it was ready; its output is in {log}")]
    ServerExited {
        /// Its exit status.
        status: String,
        /// Where its output is.
        log: String,
    },
    /// The spawned server did not answer `/health` in time.
    #[error("{url} was not healthy after {seconds} s; the server's output is in {log}")]
    NotReady {
        /// The server's URL.
        url: String,
        /// Seconds waited.
        seconds: u64,
        /// Where its output is.
        log: String,
    },
    /// The server could not be built or started.
    #[error("launching the server: {0}")]
    Launch(String),
    /// The request sent before the run failed, so the run would measure nothing.
    #[error("the warm-up request failed: {0}")]
    WarmUp(String),
}

impl ServeError {
    /// A transport error of a request to `url`.
    pub fn http(url: &str, error: &reqwest::Error) -> Self {
        Self::Http {
            url: url.to_string(),
            message: error.to_string(),
        }
    }
}

/// The engine a run measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EngineInfo {
    /// Its base URL.
    pub url: String,
    /// The model name `/v1/models` reported, sent in every request.
    pub model: String,
    /// Whether the suite started the server itself.
    pub spawned: bool,
}

/// One measured level. Invariant: `stats.completed + stats.failed == num_requests`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelResult {
    /// How the level was run.
    #[serde(flatten)]
    pub spec: LevelSpec,
    /// Latency and throughput statistics.
    #[serde(flatten)]
    pub stats: LevelStats,
    /// Largest KV cache usage fraction scraped during the level, if the engine exports it.
    pub kv_cache_usage_peak: Option<f64>,
    /// Preemptions during the level, if the engine exports the counter.
    pub preemptions: Option<f64>,
    /// Up to five distinct error messages of failed requests.
    pub errors: Vec<String>,
}

/// The 1, 5 and 15-minute load averages from `/proc/loadavg` (absent on other systems).
pub type LoadAverage = Option<[f64; 3]>;

/// Everything the suite measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServeResults {
    /// The engine measured.
    pub engine: EngineInfo,
    /// The configuration run.
    pub config: ServeConfig,
    /// One result per level, in the configured order.
    pub levels: Vec<LevelResult>,
    /// Machine load when the levels started.
    pub load_average_start: LoadAverage,
    /// Machine load when the levels ended.
    pub load_average_end: LoadAverage,
}

/// The current load averages, if the system exposes them.
pub fn load_average() -> LoadAverage {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// Runs the suite: starts the server unless `config` names a URL (build log and server output go
/// into `dir`), then measures every level.
pub fn run(
    config: &ServeConfig,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<ServeResults, BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("tokio runtime", e))?;
    let mut server: Option<ServerProcess> = None;
    let url = match &config.target {
        Target::Url { url } => {
            progress.stage("connect", 1);
            url.clone()
        }
        Target::Spawn { model } => {
            progress.stage("build", 2);
            let binary = launcher::build_server(&dir.join("build.log"))?;
            progress.advance("cargo build --release -p server");
            let process = ServerProcess::start(&binary, model.as_deref(), &dir.join("server.log"))?;
            let url = process.url().to_string();
            server = Some(process);
            url
        }
    };
    let client = EngineClient::new(&url)?;
    if let Some(process) = server.as_mut() {
        runtime.block_on(process.wait_ready(&client, READY_TIMEOUT))?;
    }
    let results = runtime.block_on(measure(config, &client, server.is_some(), progress));
    drop(server);
    results
}

/// Asks the engine its model, sends the warm-up request, then runs every level.
async fn measure(
    config: &ServeConfig,
    client: &EngineClient,
    spawned: bool,
    progress: &dyn Progress,
) -> Result<ServeResults, BenchError> {
    let model = client.model_name().await?;
    progress.advance(&format!("{} serves {model}", client.base_url()));
    let lengths = config.request_lengths()?;
    let mut next_prompt = 0;
    let mut requests = |count: usize| -> Vec<CompletionRequest> {
        let batch = config.requests(&lengths, next_prompt, count);
        next_prompt += count;
        batch
    };
    let warm_up = CompletionRequest {
        max_tokens: WARM_UP_TOKENS,
        ..requests(1).remove(0)
    };
    let outcome = client.complete(&model, &warm_up).await;
    if let Some(error) = outcome.error {
        return Err(ServeError::WarmUp(error).into());
    }
    let load_average_start = load_average();
    let mut levels = Vec::with_capacity(config.levels.len());
    for spec in &config.levels {
        let label = spec.label();
        progress.stage(&label, spec.num_requests as u64);
        let schedule = match spec.rate {
            Some(rate) => Schedule::Open {
                offsets: load::poisson_offsets(spec.num_requests, rate, config.seed).ok_or_else(
                    || BenchError::InvalidConfig(format!("rate {rate} is not a positive number")),
                )?,
            },
            None => Schedule::Closed {
                workers: spec.concurrency.unwrap_or(1),
            },
        };
        let batch = requests(spec.num_requests);
        let run = load::run_level(client, &model, batch, schedule, progress, &label).await;
        levels.push(level_result(spec.clone(), &run));
    }
    Ok(ServeResults {
        engine: EngineInfo {
            url: client.base_url().to_string(),
            model,
            spawned,
        },
        config: config.clone(),
        levels,
        load_average_start,
        load_average_end: load_average(),
    })
}

fn level_result(spec: LevelSpec, run: &LevelRun) -> LevelResult {
    let mut errors: Vec<String> = Vec::new();
    for error in run.outcomes.iter().filter_map(|o| o.error.as_ref()) {
        if errors.len() < ERRORS_KEPT && !errors.contains(error) {
            errors.push(error.clone());
        }
    }
    LevelResult {
        spec,
        stats: LevelStats::compute(&run.outcomes, run.duration),
        kv_cache_usage_peak: run.metrics.peak_kv_cache_usage(),
        preemptions: run.metrics.preemptions(),
        errors,
    }
}
