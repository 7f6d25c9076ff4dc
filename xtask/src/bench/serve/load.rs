//! Driving one load level: a closed loop (a fixed number of workers, each sending its next
//! request when the previous one finishes) or an open loop (requests sent at given arrival
//! offsets, however many are in flight), while a background task scrapes the engine's metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::client::{CompletionRequest, EngineClient};
use super::scrape::LevelMetrics;
use super::stats::RequestOutcome;
use crate::bench::Progress;

/// Time between two metrics scrapes while a level runs.
const SCRAPE_INTERVAL: Duration = Duration::from_millis(250);

/// How requests are released.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// `workers` requests in flight at all times (fewer at the end). Invariant: `workers ≥ 1`.
    Closed {
        /// Number of concurrent workers.
        workers: usize,
    },
    /// Request `i` is sent `offsets[i]` after the level starts. Invariant: one offset per
    /// request, non-decreasing.
    Open {
        /// Send time of each request after the start of the level.
        offsets: Vec<Duration>,
    },
}

/// `count` Poisson arrival offsets at `rate` requests per second (exponential gaps, the first
/// after one gap, as in vLLM's benchmark); the same seed gives the same offsets. `None` unless
/// `rate` is positive and finite.
pub fn poisson_offsets(count: usize, rate: f64, seed: u64) -> Option<Vec<Duration>> {
    let gaps = Exp::new(rate)
        .ok()
        .filter(|_| rate.is_finite() && rate > 0.0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut clock = 0.0;
    Some(
        (0..count)
            .map(|_| {
                clock += gaps.sample(&mut rng);
                Duration::from_secs_f64(clock)
            })
            .collect(),
    )
}

/// What one level measured. Invariant: `outcomes[i]` belongs to request `i`.
#[derive(Clone, Debug)]
pub struct LevelRun {
    /// One outcome per request, in request order.
    pub outcomes: Vec<RequestOutcome>,
    /// Wall-clock time from the start of the level to the end of its last request.
    pub duration: Duration,
    /// Metrics scraped before, during and after the level.
    pub metrics: LevelMetrics,
}

/// Everything a request task needs, shared between tasks.
struct Shared {
    client: EngineClient,
    model: String,
    requests: Vec<CompletionRequest>,
}

/// Runs `requests` against `model` under `schedule`; every finished request advances
/// `progress` by one with `label`. Requests that fail are recorded, not retried.
pub async fn run_level(
    client: &EngineClient,
    model: &str,
    requests: Vec<CompletionRequest>,
    schedule: Schedule,
    progress: &dyn Progress,
    label: &str,
) -> LevelRun {
    let count = requests.len();
    let shared = Arc::new(Shared {
        client: client.clone(),
        model: model.to_string(),
        requests,
    });
    let (stop_scraping, scraper) = start_scraper(client.clone()).await;
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let start = Instant::now();
    match schedule {
        Schedule::Closed { workers } => {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..workers.clamp(1, count.max(1)) {
                tokio::spawn(closed_worker(shared.clone(), next.clone(), sender.clone()));
            }
        }
        Schedule::Open { offsets } => {
            tokio::spawn(open_dispatcher(
                shared.clone(),
                offsets,
                start,
                sender.clone(),
            ));
        }
    }
    drop(sender);
    let mut outcomes: Vec<Option<RequestOutcome>> = vec![None; count];
    while let Some((index, outcome)) = receiver.recv().await {
        outcomes[index] = Some(outcome);
        progress.advance(label);
    }
    let duration = start.elapsed();
    let _ = stop_scraping.send(());
    let metrics = scraper.await.unwrap_or_default();
    let outcomes = outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|| {
                RequestOutcome::failed(0, Duration::ZERO, "the request was never sent".into())
            })
        })
        .collect();
    LevelRun {
        outcomes,
        duration,
        metrics,
    }
}

type Outcomes = mpsc::UnboundedSender<(usize, RequestOutcome)>;

async fn closed_worker(shared: Arc<Shared>, next: Arc<AtomicUsize>, outcomes: Outcomes) {
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(request) = shared.requests.get(index) else {
            return;
        };
        let outcome = shared.client.complete(&shared.model, request).await;
        if outcomes.send((index, outcome)).is_err() {
            return;
        }
    }
}

async fn open_dispatcher(
    shared: Arc<Shared>,
    offsets: Vec<Duration>,
    start: Instant,
    outcomes: Outcomes,
) {
    for (index, offset) in offsets.into_iter().enumerate().take(shared.requests.len()) {
        tokio::time::sleep_until(start + offset).await;
        let (shared, outcomes) = (shared.clone(), outcomes.clone());
        tokio::spawn(async move {
            let outcome = shared
                .client
                .complete(&shared.model, &shared.requests[index])
                .await;
            let _ = outcomes.send((index, outcome));
        });
    }
}

/// Scrapes once now, then every [`SCRAPE_INTERVAL`] until told to stop, then once more; the
/// task returns the level's metrics.
async fn start_scraper(
    client: EngineClient,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<LevelMetrics>) {
    let mut metrics = LevelMetrics::default();
    if let Some(snapshot) = client.metrics().await {
        metrics.record(snapshot);
    }
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                () = tokio::time::sleep(SCRAPE_INTERVAL) => {}
            }
            if let Some(snapshot) = client.metrics().await {
                metrics.record(snapshot);
            }
        }
        if let Some(snapshot) = client.metrics().await {
            metrics.record(snapshot);
        }
        metrics
    });
    (stop, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_offsets_are_seeded_ascending_with_mean_gap_one_over_rate() {
        let offsets = poisson_offsets(4000, 8.0, 3).unwrap();
        assert_eq!(offsets, poisson_offsets(4000, 8.0, 3).unwrap());
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
        let mean_gap = offsets.last().unwrap().as_secs_f64() / offsets.len() as f64;
        assert!((mean_gap - 0.125).abs() < 0.01, "{mean_gap}");
        assert_eq!(poisson_offsets(3, 0.0, 0), None);
        assert_eq!(poisson_offsets(3, f64::INFINITY, 0), None);
    }
}
