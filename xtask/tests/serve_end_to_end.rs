//! The `serve` suite end to end against a fake OpenAI-compatible engine written here with
//! tokio: it streams canned chunks with known delays, exports a gauge and a counter under
//! vLLM's names and fails one request, so the suite's request format, timing, metrics scraping,
//! failure accounting and files can be checked without building the real server.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use xtask::bench::serve::config::ServeOptions;
use xtask::bench::{BenchOptions, Silent, Suite, run_suite};
use xtask::workload::Dataset;

/// Delay before the first chunk of every stream.
const FIRST_CHUNK: Duration = Duration::from_millis(40);
/// Delay between later chunks.
const BETWEEN_CHUNKS: Duration = Duration::from_millis(10);
/// The completion request (counting the warm-up as the first) that the engine fails.
const FAILING_REQUEST: usize = 3;

/// What the fake engine saw.
#[derive(Default)]
struct Engine {
    completions: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    bodies: Mutex<Vec<Value>>,
}

/// Starts the fake engine on a thread of its own and returns its base URL.
fn start_engine(engine: Arc<Engine>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                tokio::spawn(serve_connection(socket, engine.clone()));
            }
        });
    });
    url
}

/// Reads one request (head and `Content-Length` body) and answers it, closing the connection.
async fn serve_connection(mut socket: TcpStream, engine: Arc<Engine>) {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
        }
    }
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let body = &bytes[head_end..head_end + length];
    let reply = |status: &str, kind: &str, text: String| {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        )
    };
    let answer = match request_line.split_whitespace().take(2).collect::<Vec<_>>()[..] {
        ["GET", "/health"] => reply("200 OK", "text/plain", String::new()),
        ["GET", "/v1/models"] => reply(
            "200 OK",
            "application/json",
            r#"{"object":"list","data":[{"id":"fake-model","object":"model"}]}"#.into(),
        ),
        ["GET", "/metrics"] => {
            let usage = engine.most_in_flight.load(Ordering::SeqCst) as f64 / 100.0;
            let preemptions = engine.completions.load(Ordering::SeqCst);
            reply(
                "200 OK",
                "text/plain",
                format!(
                    "# TYPE vllm:gpu_cache_usage_perc gauge\n\
                     vllm:gpu_cache_usage_perc{{model_name=\"fake-model\"}} {usage}\n\
                     vllm:num_preemptions_total{{model_name=\"fake-model\"}} {preemptions}\n"
                ),
            )
        }
        ["POST", "/v1/completions"] => {
            let request: Value = serde_json::from_slice(body).unwrap();
            stream_completion(&mut socket, &engine, request).await;
            return;
        }
        _ => reply("404 Not Found", "text/plain", String::new()),
    };
    let _ = socket.write_all(answer.as_bytes()).await;
}

/// Streams one chunk per requested token, a usage-only chunk and `[DONE]`; the
/// [`FAILING_REQUEST`]-th request gets a 500 instead.
async fn stream_completion(socket: &mut TcpStream, engine: &Engine, request: Value) {
    let number = engine.completions.fetch_add(1, Ordering::SeqCst) + 1;
    let max_tokens = request["max_tokens"].as_u64().unwrap_or(0);
    engine.bodies.lock().unwrap().push(request);
    if number == FAILING_REQUEST {
        let body = r#"{"error":{"message":"out of luck","code":500}}"#;
        let _ = socket
            .write_all(
                format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        return;
    }
    let now = engine.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    engine.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let mut ok = socket
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
        )
        .await
        .is_ok();
    for token in 0..max_tokens {
        let delay = if token == 0 {
            FIRST_CHUNK
        } else {
            BETWEEN_CHUNKS
        };
        tokio::time::sleep(delay).await;
        let chunk = format!(
            "data: {{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{{\"index\":0,\"text\":\"t{token}\",\"finish_reason\":null}}]}}\n\n"
        );
        ok &= socket.write_all(chunk.as_bytes()).await.is_ok();
    }
    let usage = format!(
        "data: {{\"id\":\"cmpl-1\",\"choices\":[],\"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":{max_tokens},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
        12 + max_tokens
    );
    if ok {
        let _ = socket.write_all(usage.as_bytes()).await;
    }
    engine.in_flight.fetch_sub(1, Ordering::SeqCst);
}

fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("xtask-serve-e2e-{}", std::process::id()))
}

#[test]
fn measures_a_fake_engine_and_writes_every_result_file() {
    let engine = Arc::new(Engine::default());
    let url = start_engine(engine.clone());
    let out_dir = scratch_dir();
    let options = BenchOptions {
        quick: false,
        seed: 5,
        out_dir: out_dir.clone(),
        serve: ServeOptions {
            url: Some(url.clone()),
            concurrency: vec![1, 3],
            num_requests: Some(4),
            input_len: Some(12),
            output_len: Some(6),
            ..ServeOptions::default()
        },
    };
    let written = run_suite(Suite::Serve, &options, &Silent).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["results.json", "summary.md", "throughput.svg"]);

    // The requests: greedy, ignore_eos, streamed with usage, token-id prompts, distinct.
    let bodies = engine.bodies.lock().unwrap().clone();
    assert_eq!(
        bodies.len(),
        1 + 4 + 4,
        "a warm-up request, then two levels of four"
    );
    assert_eq!(bodies[0]["max_tokens"], 4);
    for body in &bodies {
        assert_eq!(body["model"], "fake-model");
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["ignore_eos"], true);
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["prompt"].as_array().unwrap().len(), 12);
    }
    for (i, a) in bodies.iter().enumerate() {
        for b in &bodies[i + 1..] {
            assert_ne!(
                a["prompt"], b["prompt"],
                "every prompt of a run is distinct"
            );
        }
    }

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("serve/results.json")).unwrap())
            .unwrap();
    assert_eq!(json["engine"]["model"], "fake-model");
    assert_eq!(json["engine"]["url"], url);
    assert_eq!(json["engine"]["spawned"], false);
    let levels = json["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    // The warm-up was request 1, so request 3 (the second of the first level) failed.
    let counts = |level: &Value| (level["completed"].as_u64(), level["failed"].as_u64());
    assert_eq!(counts(&levels[0]), (Some(3), Some(1)));
    assert_eq!(counts(&levels[1]), (Some(4), Some(0)));
    assert!(
        levels[0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("HTTP 500")
    );
    assert!(
        levels[0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("out of luck")
    );
    for level in levels {
        let completed = level["completed"].as_u64().unwrap();
        assert_eq!(level["total_output_tokens"].as_u64(), Some(completed * 6));
        assert_eq!(level["total_input_tokens"].as_u64(), Some(completed * 12));
        let ms = |metric: &str, stat: &str| level[metric][stat].as_f64().unwrap();
        let first = FIRST_CHUNK.as_secs_f64() * 1e3;
        let gap = BETWEEN_CHUNKS.as_secs_f64() * 1e3;
        assert!(ms("ttft_ms", "p50") >= first, "{level}");
        assert!(
            ms("itl_ms", "p50") >= gap * 0.9 && ms("itl_ms", "p50") < first,
            "{level}"
        );
        assert!(
            ms("tpot_ms", "mean") >= gap * 0.9 && ms("tpot_ms", "mean") < first,
            "{level}"
        );
        assert!(ms("e2el_ms", "p50") >= first + 5.0 * gap, "{level}");
        assert!(ms("ttft_ms", "p50") <= ms("ttft_ms", "p99"));
        // Each level sent four completion requests, counted by the fake preemption counter.
        assert_eq!(level["preemptions"], 4.0);
        let throughput = level["output_throughput"].as_f64().unwrap();
        let duration = level["duration_s"].as_f64().unwrap();
        assert!((throughput * duration - (completed * 6) as f64).abs() < 1e-6);
    }
    // One request at a time, then up to three at once.
    assert_eq!(levels[0]["kv_cache_usage_peak"], 0.01);
    let peak = levels[1]["kv_cache_usage_peak"].as_f64().unwrap();
    assert!((0.02..=0.03).contains(&peak), "{peak}");
    assert!(
        levels[1]["request_throughput"].as_f64() > levels[0]["request_throughput"].as_f64(),
        "three workers finish sooner than one"
    );

    let summary = std::fs::read_to_string(out_dir.join("serve/summary.md")).unwrap();
    assert!(summary.contains("| concurrency 1 | 3 / 1 |"), "{summary}");
    assert!(summary.contains("| concurrency 3 | 4 / 0 |"), "{summary}");
    std::fs::remove_dir_all(&out_dir).unwrap();
}

#[test]
fn an_open_loop_sends_every_request_and_draws_no_concurrency_plot() {
    let engine = Arc::new(Engine::default());
    let url = start_engine(engine.clone());
    let out_dir = scratch_dir().join("open");
    let options = BenchOptions {
        quick: true,
        seed: 1,
        out_dir: out_dir.clone(),
        serve: ServeOptions {
            url: Some(url),
            rate: Some(40.0),
            num_requests: Some(5),
            dataset: Some(Dataset::Alpaca),
            ..ServeOptions::default()
        },
    };
    let written = run_suite(Suite::Serve, &options, &Silent).unwrap();
    assert_eq!(
        written.len(),
        2,
        "no throughput plot without concurrency levels"
    );
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&written[0]).unwrap()).unwrap();
    let level = &json["levels"][0];
    assert_eq!(level["rate"], 40.0);
    assert_eq!(level["concurrency"], Value::Null);
    // The engine fails its third completion request; the other four of the level complete.
    assert_eq!(
        (level["completed"].as_u64(), level["failed"].as_u64()),
        (Some(4), Some(1))
    );
    let bodies = engine.bodies.lock().unwrap();
    assert_eq!(bodies.len(), 6);
    let lengths: Vec<usize> = bodies[1..]
        .iter()
        .map(|b| b["prompt"].as_array().unwrap().len())
        .collect();
    assert!(
        lengths.iter().any(|&l| l != lengths[0]),
        "dataset lengths vary: {lengths:?}"
    );
    assert!(
        bodies
            .iter()
            .all(|b| b["max_tokens"].as_u64().unwrap() <= 16)
    );
    std::fs::remove_dir_all(&out_dir).unwrap();
}

#[test]
fn an_unreachable_engine_is_an_error_naming_the_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener); // Nothing listens there any more.
    let options = BenchOptions {
        quick: true,
        seed: 0,
        out_dir: scratch_dir().join("unreachable"),
        serve: ServeOptions {
            url: Some(url),
            ..ServeOptions::default()
        },
    };
    let error = run_suite(Suite::Serve, &options, &Silent).unwrap_err();
    assert!(error.to_string().contains("/v1/models"), "{error}");
}
