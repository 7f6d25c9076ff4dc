//! The micro-benchmarks other crates define, run in one place: `cargo bench -p <crate> --bench
//! <target>` as a child process from the workspace root, its output saved to `output.txt` in
//! the suite's results folder and echoed into the summary. In quick mode the benchmarks get
//! `--quick` (criterion's short run, and the kernels bench's own short mode; the model bench
//! has no quick mode and runs as it is).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde::Serialize;

use super::{BenchError, Progress, Suite, workspace_root};
use crate::report::SuiteOutput;

/// File (inside the suite's folder) that receives the child's standard output and error.
pub const LOG_FILE: &str = "output.txt";

/// A crate's bench target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MicroBench {
    /// `attention-kernels`, bench `kernels`.
    Kernels,
    /// `kv-block`, bench `kv_block` (criterion).
    KvBlock,
    /// `scheduler`, bench `scheduler` (criterion).
    Scheduler,
    /// `models`, bench `forward`.
    Model,
}

impl MicroBench {
    /// The micro-benchmark behind `suite`, if it is one.
    pub fn of(suite: Suite) -> Option<Self> {
        match suite {
            Suite::Kernels => Some(Self::Kernels),
            Suite::KvBlock => Some(Self::KvBlock),
            Suite::Scheduler => Some(Self::Scheduler),
            Suite::Model => Some(Self::Model),
            Suite::Memory | Suite::Paper | Suite::Serve | Suite::All => None,
        }
    }

    /// The package that defines the bench.
    pub fn package(self) -> &'static str {
        match self {
            Self::Kernels => "attention-kernels",
            Self::KvBlock => "kv-block",
            Self::Scheduler => "scheduler",
            Self::Model => "models",
        }
    }

    /// The bench target's name.
    pub fn target(self) -> &'static str {
        match self {
            Self::Kernels => "kernels",
            Self::KvBlock => "kv_block",
            Self::Scheduler => "scheduler",
            Self::Model => "forward",
        }
    }

    /// Arguments after `cargo`.
    pub fn cargo_args(self, quick: bool) -> Vec<&'static str> {
        let mut args = vec!["bench", "-p", self.package(), "--bench", self.target()];
        if quick && self != Self::Model {
            args.extend(["--", "--quick"]);
        }
        args
    }
}

/// What the suite records about the child run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MicroResult {
    /// The package benchmarked.
    pub package: &'static str,
    /// Its bench target.
    pub bench: &'static str,
    /// The command line run (from the workspace root).
    pub command: String,
    /// Whether the quick mode was requested.
    pub quick: bool,
    /// Wall-clock seconds of the child, compilation included.
    pub seconds: f64,
    /// File holding the child's output, relative to the suite folder.
    pub log: &'static str,
}

/// Runs `bench` and returns its output for the suite's folder `dir` (the log is written there
/// at once, so it survives a failure).
pub fn run(
    bench: MicroBench,
    quick: bool,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<SuiteOutput, BenchError> {
    progress.stage(bench.package(), 1);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let args = bench.cargo_args(quick);
    let mut command = Command::new(cargo);
    command.args(&args).current_dir(workspace_root());
    let shown = format!("cargo {}", args.join(" "));
    let (output, seconds) = execute(command, &shown, dir)?;
    progress.advance(&shown);
    let result = MicroResult {
        package: bench.package(),
        bench: bench.target(),
        command: shown.clone(),
        quick,
        seconds,
        log: LOG_FILE,
    };
    let markdown = format!(
        "# {}: `{}`\n\n{:.1} s (compilation included); full output in `{LOG_FILE}`.\n\n```text\n{}\n```\n",
        bench.package(),
        shown,
        seconds,
        output.trim_end()
    );
    SuiteOutput::new(&result, markdown, Vec::new())
}

/// Runs `command`, saving its standard output then standard error to `dir/output.txt`.
/// Returns the standard output and the wall-clock seconds; a non-zero exit is an error that
/// names the log.
fn execute(mut command: Command, shown: &str, dir: &Path) -> Result<(String, f64), BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    let start = Instant::now();
    let output = command.output().map_err(|e| BenchError::io(shown, e))?;
    let seconds = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let log = dir.join(LOG_FILE);
    let contents = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    std::fs::write(&log, contents).map_err(|e| BenchError::io(&log, e))?;
    if !output.status.success() {
        return Err(BenchError::ChildFailed {
            command: shown.to_string(),
            status: output.status.to_string(),
            log: log.display().to_string(),
        });
    }
    Ok((stdout, seconds))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn every_micro_suite_maps_to_its_crates_bench() {
        let lines: Vec<String> = [
            Suite::Kernels,
            Suite::KvBlock,
            Suite::Scheduler,
            Suite::Model,
        ]
        .into_iter()
        .map(|s| MicroBench::of(s).unwrap().cargo_args(true).join(" "))
        .collect();
        assert_eq!(
            lines,
            [
                "bench -p attention-kernels --bench kernels -- --quick",
                "bench -p kv-block --bench kv_block -- --quick",
                "bench -p scheduler --bench scheduler -- --quick",
                "bench -p models --bench forward",
            ]
        );
        assert_eq!(
            MicroBench::KvBlock.cargo_args(false),
            ["bench", "-p", "kv-block", "--bench", "kv_block"]
        );
        assert_eq!(MicroBench::of(Suite::Memory), None);
        assert!(workspace_root().join("Cargo.toml").exists());
    }

    fn scratch_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("xtask-micro-{name}-{}", std::process::id()))
    }

    #[test]
    fn child_output_is_saved_and_failures_name_the_log() {
        let dir = scratch_dir("ok");
        let mut ok = Command::new("sh");
        ok.args(["-c", "echo measured; echo compiling >&2"]);
        let (stdout, seconds) = execute(ok, "ok", &dir).unwrap();
        assert_eq!(stdout, "measured\n");
        assert!(seconds >= 0.0);
        let log = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap();
        assert_eq!(log, "measured\ncompiling\n");

        let mut failing = Command::new("sh");
        failing.args(["-c", "echo partial; exit 3"]);
        match execute(failing, "failing", &dir) {
            Err(BenchError::ChildFailed { status, log, .. }) => {
                assert!(status.contains('3'), "{status}");
                assert_eq!(std::fs::read_to_string(log).unwrap(), "partial\n");
            }
            other => panic!("expected a child failure, got {other:?}"),
        }
        let missing = Command::new("/nonexistent/cargo");
        assert!(matches!(
            execute(missing, "missing", &dir),
            Err(BenchError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
