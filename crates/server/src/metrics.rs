//! Prometheus metrics under vLLM's names with our `vellum:` prefix, so vLLM dashboards need only
//! the prefix changed. The engine thread updates them; `GET /metrics` renders them.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric the server exports, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    /// Requests whose sequences are running.
    pub requests_running: IntGauge,
    /// Requests waiting to be admitted.
    pub requests_waiting: IntGauge,
    /// Requests swapped out to the CPU pool.
    pub requests_swapped: IntGauge,
    /// Fraction of device KV blocks in use (0..1).
    pub kv_cache_usage: Gauge,
    /// Fraction of CPU swap blocks in use (0..1).
    pub cpu_cache_usage: Gauge,
    /// Free device KV blocks.
    pub kv_blocks_free: IntGauge,
    /// Groups preempted so far, by mode.
    pub preemptions: IntCounterVec,
    /// Prompt tokens processed.
    pub prompt_tokens: IntCounter,
    /// Tokens generated.
    pub generation_tokens: IntCounter,
    /// Finished requests by finish reason.
    pub request_success: IntCounterVec,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_cache_queries: IntCounter,
    /// Prompt tokens found in the prefix cache.
    pub prefix_cache_hits: IntCounter,
    /// Time to first token.
    pub time_to_first_token: Histogram,
    /// Time between output tokens.
    pub time_per_output_token: Histogram,
    /// Arrival to last token.
    pub e2e_request_latency: Histogram,
}

const PREFIX: &str = "vellum:";

impl Metrics {
    /// Registers every metric with the `model_name` label fixed to `model_name`.
    pub fn new(model_name: &str) -> Self {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| {
            Opts::new(format!("{PREFIX}{name}"), help).const_label("model_name", model_name)
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let opts = HistogramOpts::new(format!("{PREFIX}{name}"), help)
                .const_label("model_name", model_name)
                .buckets(buckets.to_vec());
            register(&registry, Histogram::with_opts(opts))
        };
        let int_gauge = |name, help| register(&registry, IntGauge::with_opts(opts(name, help)));
        let gauge = |name, help| register(&registry, Gauge::with_opts(opts(name, help)));
        let counter = |name, help| register(&registry, IntCounter::with_opts(opts(name, help)));
        let counter_vec = |name, help, label: &str| {
            register(&registry, IntCounterVec::new(opts(name, help), &[label]))
        };
        Metrics {
            requests_running: int_gauge("num_requests_running", "Requests running on the device."),
            requests_waiting: int_gauge("num_requests_waiting", "Requests waiting to be admitted."),
            requests_swapped: int_gauge("num_requests_swapped", "Requests swapped out to CPU."),
            kv_cache_usage: gauge(
                "kv_cache_usage_perc",
                "Fraction of KV cache blocks used (0-1).",
            ),
            cpu_cache_usage: gauge(
                "cpu_cache_usage_perc",
                "Fraction of CPU swap blocks used (0-1).",
            ),
            kv_blocks_free: int_gauge("kv_cache_free_blocks", "Free device KV cache blocks."),
            preemptions: counter_vec("num_preemptions_total", "Preempted groups.", "mode"),
            prompt_tokens: counter("prompt_tokens_total", "Prefill tokens processed."),
            generation_tokens: counter("generation_tokens_total", "Generated tokens."),
            request_success: counter_vec(
                "request_success_total",
                "Finished requests.",
                "finished_reason",
            ),
            prefix_cache_queries: counter(
                "prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache.",
            ),
            prefix_cache_hits: counter(
                "prefix_cache_hits_total",
                "Prompt tokens served from the prefix cache.",
            ),
            time_to_first_token: histogram(
                "time_to_first_token_seconds",
                "Time to first token in seconds.",
                &[
                    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                    5.0, 7.5, 10.0,
                ],
            ),
            time_per_output_token: histogram(
                "time_per_output_token_seconds",
                "Time per output token in seconds.",
                &[
                    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
                ],
            ),
            e2e_request_latency: histogram(
                "e2e_request_latency_seconds",
                "End-to-end request latency in seconds.",
                &[1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("the text encoder writes to memory and our metric names are valid");
        String::from_utf8(buffer).expect("the text exposition is UTF-8")
    }
}

/// Registers `metric` (whose name and labels are constants of this module, so neither can fail).
fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("metric options are constants of this module");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric name is registered once");
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_vllm_names_under_our_prefix() {
        let metrics = Metrics::new("demo");
        metrics.requests_running.set(3);
        metrics.kv_cache_usage.set(0.5);
        metrics.preemptions.with_label_values(&["swap"]).inc();
        metrics
            .request_success
            .with_label_values(&["stop"])
            .inc_by(2);
        metrics.time_to_first_token.observe(0.03);
        let text = metrics.render();
        for line in [
            "vellum:num_requests_running{model_name=\"demo\"} 3",
            "vellum:kv_cache_usage_perc{model_name=\"demo\"} 0.5",
            "vellum:num_preemptions_total{mode=\"swap\",model_name=\"demo\"} 1",
            "vellum:request_success_total{finished_reason=\"stop\",model_name=\"demo\"} 2",
            "vellum:time_to_first_token_seconds_bucket{model_name=\"demo\",le=\"0.04\"} 1",
            "vellum:time_to_first_token_seconds_count{model_name=\"demo\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
