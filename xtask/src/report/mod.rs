//! Writing a suite's results: `results.json` (stable keys), `summary.md` (a Markdown table a
//! person reads at a glance) and extra files (SVG plots, logs of child benchmarks).
//!
//! Modules: [`markdown`] (tables) and [`svg`] (line and bar charts, no font or system
//! dependency).

pub mod markdown;
pub mod svg;

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bench::BenchError;

/// Everything one suite writes. Invariant: `files` names are plain file names (no directory
/// part) other than `results.json` and `summary.md`.
#[derive(Clone, Debug)]
pub struct SuiteOutput {
    /// Machine-readable results, written pretty-printed to `results.json`.
    pub json: serde_json::Value,
    /// Human-readable summary, written to `summary.md`.
    pub markdown: String,
    /// Extra files as (file name, contents): plots and logs.
    pub files: Vec<(String, String)>,
}

impl SuiteOutput {
    /// An output whose JSON is the serialisation of `results`.
    pub fn new(
        results: &impl Serialize,
        markdown: String,
        files: Vec<(String, String)>,
    ) -> Result<Self, BenchError> {
        Ok(Self {
            json: serde_json::to_value(results)?,
            markdown,
            files,
        })
    }
}

/// File name of the JSON results inside a suite's folder.
pub const JSON_FILE: &str = "results.json";
/// File name of the Markdown summary inside a suite's folder.
pub const MARKDOWN_FILE: &str = "summary.md";

/// Writes `output` into `dir` (created if missing) and returns the paths written, JSON first.
/// Rejects extra file names that would escape `dir` or overwrite the JSON or the summary.
pub fn write(dir: &Path, output: &SuiteOutput) -> Result<Vec<PathBuf>, BenchError> {
    for (name, _) in &output.files {
        let plain = Path::new(name)
            .file_name()
            .is_some_and(|n| n == name.as_str());
        if !plain || name == JSON_FILE || name == MARKDOWN_FILE {
            return Err(BenchError::InvalidConfig(format!(
                "{name:?} is not a valid extra result file name"
            )));
        }
    }
    fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    let mut json = serde_json::to_string_pretty(&output.json)?;
    json.push('\n');
    let files = [
        (JSON_FILE, json.as_str()),
        (MARKDOWN_FILE, output.markdown.as_str()),
    ]
    .into_iter()
    .chain(output.files.iter().map(|(n, c)| (n.as_str(), c.as_str())));
    let mut written = Vec::new();
    for (name, contents) in files {
        let path = dir.join(name);
        fs::write(&path, contents).map_err(|e| BenchError::io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-report-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn writes_json_summary_and_extra_files() {
        let dir = scratch_dir("ok");
        let output = SuiteOutput::new(
            &serde_json::json!({"b": 1, "a": [1.5]}),
            "# title\n".into(),
            vec![("plot.svg".into(), "<svg/>".into())],
        )
        .unwrap();
        let written = write(&dir, &output).unwrap();
        assert_eq!(written.len(), 3);
        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join(JSON_FILE)).unwrap()).unwrap();
        assert_eq!(json, output.json);
        assert_eq!(fs::read_to_string(dir.join("plot.svg")).unwrap(), "<svg/>");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_names_that_escape_or_clobber() {
        let dir = scratch_dir("bad");
        for name in ["../x.svg", "a/b.svg", JSON_FILE, ""] {
            let output = SuiteOutput {
                json: serde_json::Value::Null,
                markdown: String::new(),
                files: vec![(name.into(), String::new())],
            };
            assert!(
                matches!(write(&dir, &output), Err(BenchError::InvalidConfig(_))),
                "{name}"
            );
        }
        assert!(!dir.exists());
    }
}
