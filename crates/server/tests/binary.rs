//! The README's run command: the `server` binary starts on the built-in demo model, answers a
//! completion, and exits cleanly on SIGTERM.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_demo_model_and_stops_on_sigterm() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
        .args([
            "--port",
            &port.to_string(),
            "--kv-cache-memory",
            "64MiB",
            "--swap-space",
            "0.01",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.get(format!("{base}/health")).send().await {
            Ok(response) if response.status().is_success() => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => {
                let _ = child.kill();
                panic!("the server did not become healthy within a minute");
            }
        }
    }
    let response: serde_json::Value = client
        .post(format!("{base}/v1/completions"))
        .json(
            &serde_json::json!({"model": "vellum-demo", "prompt": "Hello", "max_tokens": 4,
                                  "ignore_eos": true}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["usage"]["completion_tokens"], 4, "{response}");

    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit status {:?}\n{log}",
        output.status
    );
    assert!(
        log.contains("random weights, output is not meaningful"),
        "the demo model is announced:\n{log}"
    );
    assert!(log.contains("shutting down"), "{log}");
}
