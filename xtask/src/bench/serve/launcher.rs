//! The vellum server as a child process: built with `cargo build --release -p server`, started
//! on a free local port, waited for until `/health` answers, and stopped with SIGTERM (then
//! SIGKILL after a grace period). The child is stopped on every path, drop included.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::ServeError;
use super::client::EngineClient;
use crate::bench::{BenchError, workspace_root};

/// How long a stopped server may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// KV cache memory given to the spawned server.
pub const KV_CACHE_MEMORY: &str = "2GiB";
/// The built-in model served when no model directory is given.
pub const DEMO_SIZE: &str = "95m";

/// Builds the server in release mode (cargo's output goes to `log`) and returns its binary.
pub fn build_server(log: &Path) -> Result<PathBuf, BenchError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let args = [
        "build",
        "--release",
        "-p",
        "server",
        "--message-format=json-render-diagnostics",
    ];
    let shown = format!("cargo {}", args.join(" "));
    let stderr = File::create(log).map_err(|e| BenchError::io(log, e))?;
    let output = Command::new(cargo)
        .args(args)
        .current_dir(workspace_root())
        .stderr(stderr)
        .output()
        .map_err(|e| BenchError::io(&shown, e))?;
    if !output.status.success() {
        return Err(BenchError::ChildFailed {
            command: shown,
            status: output.status.to_string(),
            log: log.display().to_string(),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    server_executable(&stdout).ok_or_else(|| {
        ServeError::Launch(format!("`{shown}` reported no `server` executable")).into()
    })
}

#[derive(Deserialize)]
struct CargoMessage {
    reason: String,
    target: Option<CargoTarget>,
    executable: Option<PathBuf>,
}

#[derive(Deserialize)]
struct CargoTarget {
    name: String,
}

/// The path of the `server` binary in cargo's JSON messages (one per line), if built.
fn server_executable(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<CargoMessage>(line).ok())
        .filter(|m| m.reason == "compiler-artifact")
        .filter(|m| m.target.as_ref().is_some_and(|t| t.name == "server"))
        .find_map(|m| m.executable)
}

/// A free TCP port on the loopback interface (free when asked; another process could take it
/// before the server binds it, which the health wait then reports).
fn free_port() -> Result<u16, BenchError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| BenchError::io("127.0.0.1:0", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| BenchError::io("127.0.0.1:0", e))?
        .port();
    Ok(port)
}

/// A running server child. Invariant: the child is stopped when this is dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    url: String,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `binary` on a free port of 127.0.0.1 serving `model` (a Hugging Face directory)
    /// or the 95M demo model; its output goes to `log`.
    pub fn start(binary: &Path, model: Option<&Path>, log: &Path) -> Result<Self, BenchError> {
        let port = free_port()?;
        let output = File::create(log).map_err(|e| BenchError::io(log, e))?;
        let errors = output.try_clone().map_err(|e| BenchError::io(log, e))?;
        let mut command = Command::new(binary);
        command.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        command.args(["--kv-cache-memory", KV_CACHE_MEMORY]);
        match model {
            Some(dir) => command.arg("--model").arg(dir),
            None => command.args(["--demo-size", DEMO_SIZE]),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .map_err(|e| BenchError::io(binary, e))?;
        Ok(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log: log.to_path_buf(),
        })
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Waits until `/health` answers 200; fails if the child exits or `timeout` passes.
    pub async fn wait_ready(
        &mut self,
        client: &EngineClient,
        timeout: Duration,
    ) -> Result<(), ServeError> {
        let start = Instant::now();
        loop {
            if client.healthy().await {
                return Ok(());
            }
            let log = self.log.display().to_string();
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ServeError::ServerExited {
                    status: status.to_string(),
                    log,
                });
            }
            if start.elapsed() > timeout {
                return Err(ServeError::NotReady {
                    url: self.url.clone(),
                    seconds: timeout.as_secs(),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the child: SIGTERM, then SIGKILL if it has not exited after [`STOP_GRACE`].
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        let deadline = Instant::now() + STOP_GRACE;
        while terminated && Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_server_binary_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"models","kind":["lib"]},"executable":null}
not json
{"reason":"compiler-artifact","target":{"name":"server","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"server","kind":["bin"]},"executable":"/t/release/server"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            server_executable(messages),
            Some(PathBuf::from("/t/release/server"))
        );
        assert_eq!(server_executable("{\"reason\":\"build-finished\"}"), None);
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port().unwrap();
        assert!(port > 0);
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok());
    }

    #[test]
    fn a_child_that_exits_is_reported_and_a_running_one_is_stopped_on_drop() {
        let dir = std::env::temp_dir().join(format!("xtask-launcher-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = EngineClient::new("http://127.0.0.1:9").unwrap();
        // `false` ignores its arguments and exits at once: the wait reports the exit.
        let mut exits = ServerProcess::start(Path::new("false"), None, &dir.join("a.log")).unwrap();
        let waited = runtime.block_on(exits.wait_ready(&client, Duration::from_secs(20)));
        assert!(
            matches!(waited, Err(ServeError::ServerExited { .. })),
            "{waited:?}"
        );
        // `sleep` would run for a minute; dropping the handle terminates and reaps it.
        let process = ServerProcess {
            child: Command::new("sleep").arg("60").spawn().unwrap(),
            url: String::new(),
            log: dir.join("b.log"),
        };
        let pid = process.child.id();
        let started = Instant::now();
        drop(process);
        assert!(started.elapsed() < STOP_GRACE, "SIGTERM ends sleep at once");
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
