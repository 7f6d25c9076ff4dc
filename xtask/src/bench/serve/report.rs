//! The suite's results as files: `results.json` (the [`ServeResults`] serialisation), a
//! Markdown table with one row per level, and `throughput.svg` (output tokens/s against
//! concurrency, drawn when there are closed-loop levels).

use super::stats::Summary;
use super::{LoadAverage, ServeResults};
use crate::bench::BenchError;
use crate::report::SuiteOutput;
use crate::report::markdown::Table;
use crate::report::svg::{LineChart, Series};

/// File name of the throughput plot.
pub const THROUGHPUT_SVG: &str = "throughput.svg";

fn summary_cell(summary: Option<Summary>) -> String {
    summary.map_or("-".into(), |s| {
        format!("{:.1} / {:.1} / {:.1}", s.mean, s.p50, s.p99)
    })
}

fn optional_cell(value: Option<f64>, format: impl Fn(f64) -> String) -> String {
    value.map_or("-".into(), format)
}

fn load_text(load: LoadAverage) -> String {
    load.map_or("unknown".into(), |[one, five, fifteen]| {
        format!("{one:.2} / {five:.2} / {fifteen:.2}")
    })
}

/// The suite's output: JSON, Markdown summary and, when there are closed-loop levels, the plot.
pub fn report(results: &ServeResults) -> Result<SuiteOutput, BenchError> {
    let mut md = format!(
        "# serve: `{}` at {}{}\n\n",
        results.engine.model,
        results.engine.url,
        if results.engine.spawned {
            " (started by the suite)"
        } else {
            ""
        }
    );
    md.push_str(&format!(
        "Prompts: {}; greedy, `ignore_eos`, streamed. Load average (1/5/15 min) {} at the \
         start, {} at the end. Latencies in ms as mean / p50 / p99; TPOT = (e2e − TTFT) / \
         (tokens − 1) per request, ITL = gaps between streamed chunks (vLLM's definitions).\n\n",
        serde_json::to_string(&results.config.prompts)?,
        load_text(results.load_average_start),
        load_text(results.load_average_end),
    ));
    let mut table = Table::new([
        "level",
        "ok / failed",
        "req/s",
        "output tok/s",
        "TTFT ms",
        "TPOT ms",
        "ITL ms",
        "E2E ms",
        "KV peak",
        "preemptions",
    ]);
    for level in &results.levels {
        let stats = &level.stats;
        table.push([
            level.spec.label(),
            format!("{} / {}", stats.completed, stats.failed),
            format!("{:.2}", stats.request_throughput),
            format!("{:.1}", stats.output_throughput),
            summary_cell(stats.ttft_ms),
            summary_cell(stats.tpot_ms),
            summary_cell(stats.itl_ms),
            summary_cell(stats.e2el_ms),
            optional_cell(level.kv_cache_usage_peak, |u| format!("{:.1}%", u * 100.0)),
            optional_cell(level.preemptions, |p| format!("{p}")),
        ]);
    }
    md.push_str(&table.render());
    for level in results.levels.iter().filter(|l| !l.errors.is_empty()) {
        md.push_str(&format!("\nErrors at {}:\n", level.spec.label()));
        for error in &level.errors {
            md.push_str(&format!("- {error}\n"));
        }
    }
    let closed: Vec<(f64, &super::LevelResult)> = results
        .levels
        .iter()
        .filter_map(|l| l.spec.concurrency.map(|c| (c as f64, l)))
        .collect();
    let mut files = Vec::new();
    if !closed.is_empty() {
        let series = [Series {
            name: "output tokens/s".into(),
            points: closed
                .iter()
                .map(|&(c, l)| (c, l.stats.output_throughput))
                .collect(),
        }];
        let title = format!("{}: output throughput vs concurrency", results.engine.model);
        let svg = LineChart {
            title: &title,
            x_label: "concurrent requests (closed loop)",
            y_label: "output tokens/s",
            series: &series,
            y_max: None,
            log2_x: true,
        }
        .to_svg();
        files.push((THROUGHPUT_SVG.to_string(), svg));
        md.push_str(&format!("\nPlot: `{THROUGHPUT_SVG}`.\n"));
    }
    SuiteOutput::new(results, md, files)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::config::{LevelSpec, ServeConfig, ServeOptions};
    use super::super::stats::{LevelStats, RequestOutcome};
    use super::super::{EngineInfo, LevelResult};
    use super::*;

    fn level(concurrency: Option<usize>, rate: Option<f64>) -> LevelResult {
        let outcome = RequestOutcome {
            prompt_tokens: 4,
            chunks: vec![Duration::from_millis(100), Duration::from_millis(300)],
            e2e: Duration::from_millis(300),
            output_tokens: 2,
            error: None,
        };
        LevelResult {
            spec: LevelSpec {
                concurrency,
                rate,
                num_requests: 2,
            },
            stats: LevelStats::compute(
                &[
                    outcome,
                    RequestOutcome::failed(4, Duration::ZERO, "HTTP 503".into()),
                ],
                Duration::from_secs(1),
            ),
            kv_cache_usage_peak: concurrency.map(|_| 0.25),
            preemptions: None,
            errors: vec!["HTTP 503".into()],
        }
    }

    fn results(levels: Vec<LevelResult>) -> ServeResults {
        ServeResults {
            engine: EngineInfo {
                url: "http://127.0.0.1:1".into(),
                model: "vellum-demo".into(),
                spawned: true,
            },
            config: ServeConfig::resolve(&ServeOptions::default(), true, 0).unwrap(),
            levels,
            load_average_start: Some([1.0, 2.0, 3.0]),
            load_average_end: None,
        }
    }

    #[test]
    fn table_json_and_plot_for_closed_loop_levels() {
        let output = report(&results(vec![level(Some(1), None), level(Some(8), None)])).unwrap();
        assert!(output.markdown.contains(
            "| concurrency 8 | 1 / 1 | 1.00 | 2.0 | 100.0 / 100.0 / 100.0 | 200.0 / 200.0 / 200.0 | \
             200.0 / 200.0 / 200.0 | 300.0 / 300.0 / 300.0 | 25.0% | - |"
        ), "{}", output.markdown);
        assert!(
            output
                .markdown
                .contains("1.00 / 2.00 / 3.00 at the start, unknown at the end")
        );
        assert!(output.markdown.contains("- HTTP 503"));
        let json = &output.json;
        assert_eq!(json["engine"]["model"], "vellum-demo");
        assert_eq!(json["levels"][1]["concurrency"], 8);
        assert_eq!(json["levels"][1]["output_throughput"], 2.0);
        assert_eq!(json["levels"][1]["ttft_ms"]["p99"], 100.0);
        assert_eq!(json["levels"][1]["preemptions"], serde_json::Value::Null);
        assert_eq!(json["load_average_start"][2], 3.0);
        assert_eq!(output.files.len(), 1);
        assert_eq!(output.files[0].0, THROUGHPUT_SVG);
        assert_eq!(output.files[0].1.matches("<circle").count(), 2);
    }

    #[test]
    fn an_open_loop_run_has_no_concurrency_plot() {
        let output = report(&results(vec![level(None, Some(2.0))])).unwrap();
        assert!(output.markdown.contains("| rate 2/s | 1 / 1 |"));
        assert!(output.files.is_empty());
    }
}
