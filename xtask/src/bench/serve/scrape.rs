//! Reading the engine's Prometheus text exposition (`GET /metrics`) for the two figures the
//! suite reports beside latencies: KV cache usage and preemptions. Names are matched after the
//! engine's prefix (`vellum:`, `vllm:` or none), so the same scraper reads vLLM; a metric an
//! engine does not export is simply absent.

/// Metric names (after the prefix) whose value is the fraction of KV cache blocks in use;
/// `gpu_cache_usage_perc` is vLLM's name before v0.8.
const KV_USAGE_NAMES: [&str; 2] = ["kv_cache_usage_perc", "gpu_cache_usage_perc"];
/// Counter of preempted requests (summed over its `mode` label where there is one).
const PREEMPTIONS_NAME: &str = "num_preemptions_total";

/// The figures read from one scrape. Invariant: a field is `Some` only when the exposition had
/// at least one sample of that metric.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Fraction (0..1) of KV cache blocks in use; the largest sample when there are several.
    pub kv_cache_usage: Option<f64>,
    /// Preemptions so far, summed over every label set.
    pub preemptions: Option<f64>,
}

impl MetricsSnapshot {
    /// Reads a Prometheus text exposition; lines it does not understand are skipped.
    ///
    /// A labelled counter has no sample before its first increment (vellum's preemption
    /// counter is labelled by mode), so an exposition that declares the counter (`# TYPE`) or
    /// carries the KV usage gauge but has no preemption sample reports zero preemptions.
    pub fn parse(text: &str) -> Self {
        let mut snapshot = Self::default();
        let declares_preemptions = text.lines().any(|line| {
            line.strip_prefix("# TYPE ")
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|name| bare_name(name) == PREEMPTIONS_NAME)
        });
        for (name, value) in text.lines().filter_map(sample) {
            let bare = bare_name(name);
            if KV_USAGE_NAMES.contains(&bare) {
                snapshot.kv_cache_usage =
                    Some(snapshot.kv_cache_usage.map_or(value, |v| v.max(value)));
            } else if bare == PREEMPTIONS_NAME {
                snapshot.preemptions = Some(snapshot.preemptions.unwrap_or(0.0) + value);
            }
        }
        if snapshot.preemptions.is_none()
            && (declares_preemptions || snapshot.kv_cache_usage.is_some())
        {
            snapshot.preemptions = Some(0.0);
        }
        snapshot
    }
}

/// A metric name without the engine's prefix (`vellum:`, `vllm:`).
fn bare_name(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, bare)| bare)
}

/// The metric name and value of a sample line (`name{labels} value [timestamp]`); `None` for
/// comments, blank lines and unparsable values.
fn sample(line: &str) -> Option<(&str, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].find('}')? + open;
            (&line[..open], &line[close + 1..])
        }
        None => line.split_once(char::is_whitespace)?,
    };
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    value.is_finite().then_some((name.trim(), value))
}

/// Tracks one level's figures across scrapes: the peak KV usage seen and the preemptions
/// between the first and the last scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LevelMetrics {
    first: MetricsSnapshot,
    last: MetricsSnapshot,
    peak_kv_cache_usage: Option<f64>,
    scrapes: usize,
}

impl LevelMetrics {
    /// Records one scrape, in time order.
    pub fn record(&mut self, snapshot: MetricsSnapshot) {
        if self.scrapes == 0 {
            self.first = snapshot;
        }
        self.last = snapshot;
        self.scrapes += 1;
        if let Some(usage) = snapshot.kv_cache_usage {
            self.peak_kv_cache_usage =
                Some(self.peak_kv_cache_usage.map_or(usage, |p| p.max(usage)));
        }
    }

    /// The largest KV usage fraction scraped, if the engine exports it.
    pub fn peak_kv_cache_usage(&self) -> Option<f64> {
        self.peak_kv_cache_usage
    }

    /// Preemptions between the first and the last scrape, if the engine exports the counter
    /// in both (a counter reset counts as zero).
    pub fn preemptions(&self) -> Option<f64> {
        Some((self.last.preemptions? - self.first.preemptions?).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VELLUM: &str = "\
# HELP vellum:kv_cache_usage_perc Fraction of KV cache blocks used (0-1).
# TYPE vellum:kv_cache_usage_perc gauge
vellum:kv_cache_usage_perc{model_name=\"vellum-demo\"} 0.375
vellum:num_preemptions_total{mode=\"recompute\",model_name=\"vellum-demo\"} 2
vellum:num_preemptions_total{mode=\"swap\",model_name=\"vellum-demo\"} 3
vellum:num_requests_running{model_name=\"vellum-demo\"} 8
vellum:time_to_first_token_seconds_bucket{model_name=\"vellum-demo\",le=\"+Inf\"} 9
";

    #[test]
    fn reads_usage_and_sums_preemptions_over_modes() {
        let snapshot = MetricsSnapshot::parse(VELLUM);
        assert_eq!(snapshot.kv_cache_usage, Some(0.375));
        assert_eq!(snapshot.preemptions, Some(5.0));
    }

    #[test]
    fn reads_vllm_names_and_unlabelled_samples() {
        let text = "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5 1712000000\n\
                    vllm:num_preemptions_total 4\n\
                    other_metric 7\n\
                    broken_line{a=\"b\" 3\n";
        let snapshot = MetricsSnapshot::parse(text);
        assert_eq!(snapshot.kv_cache_usage, Some(0.5));
        assert_eq!(snapshot.preemptions, Some(4.0));
    }

    #[test]
    fn a_declared_or_kv_reporting_engine_without_preemption_samples_has_zero() {
        let declared = "# TYPE vellum:num_preemptions_total counter\n";
        assert_eq!(MetricsSnapshot::parse(declared).preemptions, Some(0.0));
        let gauge_only = "vellum:kv_cache_usage_perc{model_name=\"m\"} 0.25\n";
        let snapshot = MetricsSnapshot::parse(gauge_only);
        assert_eq!(snapshot.kv_cache_usage, Some(0.25));
        assert_eq!(snapshot.preemptions, Some(0.0));
    }

    #[test]
    fn absent_metrics_are_none() {
        let snapshot = MetricsSnapshot::parse("# nothing here\nup 1\n");
        assert_eq!(snapshot, MetricsSnapshot::default());
        let mut level = LevelMetrics::default();
        level.record(snapshot);
        assert_eq!(level.peak_kv_cache_usage(), None);
        assert_eq!(level.preemptions(), None);
    }

    #[test]
    fn a_level_keeps_the_peak_and_the_preemption_delta() {
        let mut level = LevelMetrics::default();
        for (usage, preemptions) in [(0.1, 4.0), (0.6, 4.0), (0.3, 9.0)] {
            level.record(MetricsSnapshot {
                kv_cache_usage: Some(usage),
                preemptions: Some(preemptions),
            });
        }
        assert_eq!(level.peak_kv_cache_usage(), Some(0.6));
        assert_eq!(level.preemptions(), Some(5.0));
    }
}
