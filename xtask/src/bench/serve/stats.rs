//! Latency statistics with vLLM's `benchmark_serving` definitions, computed from the timings of
//! each request:
//!
//! - **TTFT**: time from sending the request to the first chunk that carries a choice;
//! - **ITL**: every gap between two consecutive such chunks of one request;
//! - **TPOT** (per request with more than one output token): `(e2e − TTFT) / (tokens − 1)`;
//! - **E2EL**: time from sending the request to the end of its stream.
//!
//! Throughputs divide by the wall-clock duration of the whole level. Percentiles interpolate
//! linearly between order statistics (NumPy's default), so the p50 of an even sample is the
//! mean of its two middle values.

use std::time::Duration;

use serde::Serialize;

/// What the client observed about one request. Invariant (for a successful request): `chunks`
/// is non-decreasing and every entry is at most `e2e`.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestOutcome {
    /// Prompt tokens sent.
    pub prompt_tokens: usize,
    /// Time after sending at which each chunk with a choice arrived, in order.
    pub chunks: Vec<Duration>,
    /// Time after sending at which the stream ended.
    pub e2e: Duration,
    /// Generated tokens: the server's `usage.completion_tokens` when it sent one, else the
    /// number of chunks.
    pub output_tokens: usize,
    /// Why the request failed, if it did; failed requests count in no statistic but the
    /// failure count.
    pub error: Option<String>,
}

impl RequestOutcome {
    /// A request that failed with `error` after `e2e`.
    pub fn failed(prompt_tokens: usize, e2e: Duration, error: String) -> Self {
        Self {
            prompt_tokens,
            chunks: Vec::new(),
            e2e,
            output_tokens: 0,
            error: Some(error),
        }
    }

    /// Time to first token, `None` for a failed request or one without chunks.
    pub fn ttft(&self) -> Option<Duration> {
        self.error.is_none().then(|| self.chunks.first().copied())?
    }

    /// Time per output token after the first, `None` unless the request succeeded with more
    /// than one output token.
    pub fn tpot(&self) -> Option<Duration> {
        let ttft = self.ttft()?;
        (self.output_tokens > 1).then(|| {
            let decode = self.e2e.saturating_sub(ttft).as_secs_f64();
            Duration::from_secs_f64(decode / (self.output_tokens - 1) as f64)
        })
    }

    /// The gaps between consecutive chunks (empty for a failed request).
    pub fn itls(&self) -> impl Iterator<Item = Duration> + '_ {
        let chunks = if self.error.is_none() {
            &self.chunks[..]
        } else {
            &[]
        };
        chunks
            .windows(2)
            .map(|pair| pair[1].saturating_sub(pair[0]))
    }

    /// Whether the request counts as completed: no error and at least one chunk (vLLM's
    /// client fails a stream that never carried a choice).
    pub fn succeeded(&self) -> bool {
        self.ttft().is_some()
    }
}

/// The `p`-th percentile (0 ≤ p ≤ 100) of `sorted` (ascending, finite), interpolating
/// linearly between order statistics; `None` for an empty sample.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = p.clamp(0.0, 100.0) / 100.0 * last as f64;
    let below = rank.floor() as usize;
    let above = (below + 1).min(last);
    let fraction = rank - below as f64;
    Some(sorted[below] + (sorted[above] - sorted[below]) * fraction)
}

/// Mean, median and 99th percentile of a sample, in milliseconds. Invariant:
/// `p50 ≤ p99` and both lie within the sample's range, as does the mean.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Summary {
    /// The summary of `durations` in milliseconds, `None` when there are none.
    pub fn of_durations(durations: impl IntoIterator<Item = Duration>) -> Option<Self> {
        let mut millis: Vec<f64> = durations
            .into_iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        millis.sort_by(f64::total_cmp);
        let mean = millis.iter().sum::<f64>() / millis.len().max(1) as f64;
        Some(Self {
            mean,
            p50: percentile(&millis, 50.0)?,
            p99: percentile(&millis, 99.0)?,
        })
    }
}

/// The figures of one load level (one concurrency, or one arrival rate).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelStats {
    /// Requests that completed.
    pub completed: usize,
    /// Requests that failed.
    pub failed: usize,
    /// Wall-clock seconds from the first send to the last stream's end.
    pub duration_s: f64,
    /// Prompt tokens of the completed requests.
    pub total_input_tokens: usize,
    /// Output tokens of the completed requests.
    pub total_output_tokens: usize,
    /// Completed requests per second.
    pub request_throughput: f64,
    /// Output tokens per second.
    pub output_throughput: f64,
    /// Prompt plus output tokens per second.
    pub total_token_throughput: f64,
    /// Time to first token (ms).
    pub ttft_ms: Option<Summary>,
    /// Time per output token after the first (ms).
    pub tpot_ms: Option<Summary>,
    /// Inter-token latency: gaps between streamed chunks (ms).
    pub itl_ms: Option<Summary>,
    /// End-to-end request latency (ms).
    pub e2el_ms: Option<Summary>,
}

impl LevelStats {
    /// The statistics of `outcomes`, a level that ran for `duration` of wall-clock time.
    /// Throughputs are zero for a zero duration.
    pub fn compute(outcomes: &[RequestOutcome], duration: Duration) -> Self {
        let done: Vec<&RequestOutcome> = outcomes.iter().filter(|o| o.succeeded()).collect();
        let total_input_tokens = done.iter().map(|o| o.prompt_tokens).sum();
        let total_output_tokens = done.iter().map(|o| o.output_tokens).sum();
        let seconds = duration.as_secs_f64();
        let rate = |count: usize| {
            if seconds > 0.0 {
                count as f64 / seconds
            } else {
                0.0
            }
        };
        Self {
            completed: done.len(),
            failed: outcomes.len() - done.len(),
            duration_s: seconds,
            total_input_tokens,
            total_output_tokens,
            request_throughput: rate(done.len()),
            output_throughput: rate(total_output_tokens),
            total_token_throughput: rate(total_input_tokens + total_output_tokens),
            ttft_ms: Summary::of_durations(done.iter().filter_map(|o| o.ttft())),
            tpot_ms: Summary::of_durations(done.iter().filter_map(|o| o.tpot())),
            itl_ms: Summary::of_durations(done.iter().flat_map(|o| o.itls())),
            e2el_ms: Summary::of_durations(done.iter().map(|o| o.e2e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    fn ok(prompt_tokens: usize, chunks: &[u64], e2e: u64, output_tokens: usize) -> RequestOutcome {
        RequestOutcome {
            prompt_tokens,
            chunks: ms(chunks),
            e2e: Duration::from_millis(e2e),
            output_tokens,
            error: None,
        }
    }

    fn close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let sorted = [1.0, 2.0, 3.0, 4.0];
        close(percentile(&sorted, 50.0).unwrap(), 2.5);
        close(percentile(&sorted, 99.0).unwrap(), 3.97);
        close(percentile(&sorted, 0.0).unwrap(), 1.0);
        close(percentile(&sorted, 100.0).unwrap(), 4.0);
        close(percentile(&[7.0], 99.0).unwrap(), 7.0);
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn per_request_ttft_tpot_and_itl_follow_vllm() {
        // First chunk at 100 ms, then three more; the stream ends at 400 ms.
        let request = ok(10, &[100, 150, 250, 390], 400, 4);
        assert_eq!(request.ttft(), Some(Duration::from_millis(100)));
        assert_eq!(request.tpot(), Some(Duration::from_millis(100))); // (400 − 100) / 3
        assert_eq!(request.itls().collect::<Vec<_>>(), ms(&[50, 100, 140]));
        // One output token: no TPOT, no ITL.
        let single = ok(10, &[80], 80, 1);
        assert_eq!(single.tpot(), None);
        assert_eq!(single.itls().count(), 0);
        // The server's usage count wins over the chunk count (two tokens in one chunk).
        let merged = ok(10, &[100, 200], 300, 3);
        assert_eq!(merged.tpot(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn failures_and_streams_without_choices_count_only_as_failures() {
        let outcomes = [
            ok(10, &[100, 200, 300], 300, 3),
            ok(20, &[50, 150, 250], 250, 3),
            RequestOutcome::failed(30, Duration::from_millis(5), "HTTP 500".into()),
            ok(40, &[], 90, 0),
        ];
        let stats = LevelStats::compute(&outcomes, Duration::from_secs(2));
        assert_eq!((stats.completed, stats.failed), (2, 2));
        assert_eq!(
            (stats.total_input_tokens, stats.total_output_tokens),
            (30, 6)
        );
        close(stats.request_throughput, 1.0);
        close(stats.output_throughput, 3.0);
        close(stats.total_token_throughput, 18.0);
        let ttft = stats.ttft_ms.unwrap();
        close(ttft.mean, 75.0);
        close(ttft.p50, 75.0);
        close(ttft.p99, 99.5);
        let tpot = stats.tpot_ms.unwrap();
        close(tpot.mean, 100.0); // both requests: 200 ms over 2 tokens
        let itl = stats.itl_ms.unwrap();
        close(itl.mean, 100.0);
        close(itl.p99, 100.0);
        close(stats.e2el_ms.unwrap().mean, 275.0);
    }

    #[test]
    fn an_empty_level_has_no_latencies_and_zero_throughput() {
        let stats = LevelStats::compute(&[], Duration::ZERO);
        assert_eq!(stats.completed, 0);
        assert_eq!(stats.request_throughput, 0.0);
        assert_eq!(stats.ttft_ms, None);
        assert_eq!(stats.itl_ms, None);
    }

    proptest! {
        /// Percentiles are monotone in p, stay within the sample, hit the order statistics at
        /// integer ranks, and at least ⌈q·n⌉-ish values lie at or below them (naive count).
        #[test]
        fn percentile_matches_a_naive_order_statistic_count(
            mut values in proptest::collection::vec(-1e6f64..1e6, 1..60),
            p in 0.0f64..=100.0,
            q in 0.0f64..=100.0,
        ) {
            values.sort_by(f64::total_cmp);
            let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
            let at_lo = percentile(&values, lo).unwrap();
            let at_hi = percentile(&values, hi).unwrap();
            prop_assert!(at_lo <= at_hi + 1e-9);
            prop_assert!(values[0] <= at_lo + 1e-9 && at_hi <= values[values.len() - 1] + 1e-9);
            let rank = lo / 100.0 * (values.len() - 1) as f64;
            let at_or_below = values.iter().filter(|&&v| v <= at_lo + 1e-9).count();
            prop_assert!(at_or_below > rank.floor() as usize);
            let strictly_below = values.iter().filter(|&&v| v < at_lo - 1e-9).count();
            prop_assert!(strictly_below <= rank.ceil() as usize);
            if rank.fract() == 0.0 {
                prop_assert_eq!(at_lo, values[rank as usize]);
            }
        }

        /// The summary's mean is the naive mean and its percentiles bracket the median.
        #[test]
        fn summary_matches_the_naive_mean(millis in proptest::collection::vec(0u64..10_000, 1..50)) {
            let summary = Summary::of_durations(ms(&millis)).unwrap();
            let naive = millis.iter().sum::<u64>() as f64 / millis.len() as f64;
            prop_assert!((summary.mean - naive).abs() < 1e-6);
            prop_assert!(summary.p50 <= summary.p99 + 1e-9);
        }
    }
}
