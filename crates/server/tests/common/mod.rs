//! A real server on 127.0.0.1 (an ephemeral port) over the built-in demo model, and a client.

#![allow(dead_code)] // Each test binary uses part of this support module.

use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use server::cli::Args;

/// Bytes of one demo-model KV block: 2 layers × (K, V) × 16 tokens × 2 KV heads × 16 × f32.
pub const DEMO_BLOCK_BYTES: usize = 2 * 2 * 16 * 2 * 16 * 4;

/// The `--kv-cache-memory` value that gives the demo model a pool of exactly `blocks` blocks.
pub fn kv_memory_for_blocks(blocks: usize) -> String {
    (blocks * DEMO_BLOCK_BYTES).to_string()
}

/// A running server; shut down when dropped.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client with a timeout.
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with `flags` (plus a small KV cache unless given).
    pub async fn start(flags: &[&str]) -> TestServer {
        let mut argv = vec!["vellum", "--log-interval", "3600", "--swap-space", "0.01"];
        if !flags.contains(&"--kv-cache-memory") {
            argv.extend(["--kv-cache-memory", "64MiB"]);
        }
        argv.extend(flags);
        let args = Args::try_parse_from(argv).expect("test flags parse");
        let started = server::startup::start(&args).expect("server starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(listener, started, async {
                let _ = signal.await;
            })
            .await
            .unwrap();
        });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        TestServer {
            base,
            client,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// GETs `path`, with `key` as the bearer token when given.
    pub async fn get(&self, path: &str, key: Option<&str>) -> reqwest::Response {
        let request = self.client.get(format!("{}{path}", self.base));
        let request = match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        request.send().await.unwrap()
    }

    /// POSTs `body` as JSON to `path`; returns the status and the parsed JSON body (Null if not
    /// JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, serde_json::to_vec(body).unwrap()).await
    }

    /// The `/tokenize` answer for `text` without special tokens (`tokens` and `count`).
    pub async fn tokenize(&self, text: &str) -> Value {
        let body = serde_json::json!({"prompt": text, "add_special_tokens": false});
        let (status, tokenized) = self.post("/tokenize", &body).await;
        assert_eq!(status, 200, "{tokenized}");
        tokenized
    }

    /// POSTs raw bytes to `path`; returns the status and the parsed JSON body (Null if not JSON).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a streaming request and returns the JSON payloads of its `data:` lines, checking
    /// that the stream ends with `data: [DONE]`.
    pub async fn stream(&self, path: &str, body: &Value) -> Vec<Value> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let text = response.text().await.unwrap();
        let lines: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
        assert_eq!(lines.last(), Some(&"data: [DONE]"), "stream: {text}");
        lines[..lines.len() - 1]
            .iter()
            .map(|line| {
                let json = line
                    .strip_prefix("data: ")
                    .expect("every event is one data line");
                serde_json::from_str(json).expect("one-line JSON")
            })
            .collect()
    }

    /// The value of metric `name` (first sample whose line starts with it).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics", None).await.text().await.unwrap();
        text.lines()
            .find(|line| line.starts_with(name) && !line.starts_with('#'))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing in\n{text}"))
    }

    /// Waits until no request runs or waits and every device block is free again.
    pub async fn wait_until_idle(&self, total_blocks: f64) {
        for _ in 0..200 {
            if self.metric("vellum:num_requests_running").await == 0.0
                && self.metric("vellum:num_requests_waiting").await == 0.0
                && self.metric("vellum:kv_cache_free_blocks").await == total_blocks
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the engine did not become idle with all {total_blocks} blocks free");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The completion text of choice 0.
pub fn text(response: &Value) -> String {
    response["choices"][0]["text"]
        .as_str()
        .expect("a text choice")
        .to_string()
}

/// Greedy continuation of `prompt` by the demo model computed directly with the model crate
/// (dense attention, no cache, no server), decoded with the demo tokenizer.
pub fn direct_greedy(prompt: &[u32], max_tokens: usize) -> String {
    let model = models::demo_model(candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let tokenizer = models::demo_tokenizer().unwrap();
    let mut tokens = prompt.to_vec();
    for _ in 0..max_tokens {
        let logits = model.forward_dense(&[&tokens]).unwrap();
        let last = logits
            .get(tokens.len() - 1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let best = last
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .map(|(index, _)| index as u32)
            .unwrap();
        tokens.push(best);
    }
    tokenizer.decode(&tokens[prompt.len()..]).unwrap()
}

/// Log-softmax of the demo model's logits at every position of `prompt`, computed directly with
/// the model crate (dense attention, no cache): row `i` is the distribution of token `i + 1`.
pub fn direct_logprob_rows(prompt: &[u32]) -> Vec<Vec<f64>> {
    let model = models::demo_model(candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let logits = model.forward_dense(&[prompt]).unwrap();
    (0..prompt.len())
        .map(|position| {
            let row: Vec<f64> = logits
                .get(position)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect();
            let max = row.iter().copied().fold(f64::MIN, f64::max);
            let log_total = row.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
            row.iter().map(|l| l - max - log_total).collect()
        })
        .collect()
}
