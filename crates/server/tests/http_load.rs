//! Many concurrent requests through a KV pool too small for them (preemption by swap and by
//! recompute), and clients that disconnect mid-stream: outputs stay exact and no block leaks.

mod common;

use std::time::Duration;

use common::{TestServer, direct_greedy, kv_memory_for_blocks, text};
use futures::StreamExt;
use serde_json::json;

const POOL_BLOCKS: usize = 40;
const REQUESTS: usize = 64;
const MAX_TOKENS: usize = 24;

fn prompt(index: usize) -> Vec<u32> {
    (0..8 + index % 17)
        .map(|i| 2 + ((index * 31 + i * 7) % 250) as u32)
        .collect()
}

async fn run_overloaded(mode: &str) {
    let memory = kv_memory_for_blocks(POOL_BLOCKS);
    let server = TestServer::start(&[
        "--kv-cache-memory",
        &memory,
        "--max-model-len",
        "128",
        "--preemption-mode",
        mode,
        "--max-num-seqs",
        "64",
        "--enable-prefix-caching",
        "false",
    ])
    .await;
    assert_eq!(
        server.metric("vellum:kv_cache_free_blocks").await,
        POOL_BLOCKS as f64
    );
    let requests = (0..REQUESTS).map(|index| {
        let server = &server;
        async move {
            let body = json!({"model": "vellum-demo", "prompt": prompt(index),
                              "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": true});
            let (status, response) = server.post("/v1/completions", &body).await;
            assert_eq!(status, 200, "request {index}: {response}");
            text(&response)
        }
    });
    let outputs = futures::future::join_all(requests).await;
    for (index, output) in outputs.iter().enumerate() {
        assert_eq!(
            output,
            &direct_greedy(&prompt(index), MAX_TOKENS),
            "request {index} ({mode})"
        );
    }
    let preemptions = server.metric("vellum:num_preemptions_total").await;
    assert!(
        preemptions > 0.0,
        "the pool was meant to force preemption ({mode})"
    );
    server.wait_until_idle(POOL_BLOCKS as f64).await;
    assert_eq!(server.metric("vellum:cpu_cache_usage_perc").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_with_recompute_preemption_keeps_greedy_outputs_exact() {
    run_overloaded("recompute").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_with_swap_preemption_keeps_greedy_outputs_exact() {
    run_overloaded("swap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_frees_its_blocks() {
    let server = TestServer::start(&[]).await;
    let total = server.metric("vellum:kv_cache_free_blocks").await;
    let long = json!({"model": "vellum-demo", "prompt": "a long story", "max_tokens": 3000,
                      "ignore_eos": true, "stream": true});
    let response = server
        .client
        .post(format!("{}/v1/completions", server.base))
        .json(&long)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    assert!(
        server.metric("vellum:kv_cache_free_blocks").await < total,
        "it holds blocks"
    );

    let short = json!({"model": "vellum-demo", "prompt": [0, 70, 71], "max_tokens": 6,
                       "temperature": 0, "ignore_eos": true});
    drop(body); // The client goes away mid-stream.
    let (status, response) = server.post("/v1/completions", &short).await;
    assert_eq!(status, 200);
    assert_eq!(
        text(&response),
        direct_greedy(&[0, 70, 71], 6),
        "others are unaffected"
    );
    server.wait_until_idle(total).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let text = server.get("/metrics", None).await.text().await.unwrap();
    assert!(
        text.contains(
            "vellum:request_success_total{finished_reason=\"abort\",model_name=\"vellum-demo\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_outgrows_the_whole_pool_ends_with_length() {
    let blocks = 16;
    let memory = kv_memory_for_blocks(blocks);
    let server = TestServer::start(&["--kv-cache-memory", &memory, "--max-model-len", "256"]).await;
    // Four diverging samples of 200 tokens need ~4 × 13 blocks; the pool has 16.
    let body = json!({"model": "vellum-demo", "prompt": prompt(3), "max_tokens": 200, "n": 4,
                      "seed": 5, "temperature": 1.0, "ignore_eos": true});
    let (status, response) = server.post("/v1/completions", &body).await;
    assert_eq!(status, 200, "{response}");
    let choices = response["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    assert!(
        choices
            .iter()
            .all(|choice| choice["finish_reason"] == "length"),
        "{response}"
    );
    let generated = response["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(generated < 4 * 200, "it ended early: {generated} tokens");
    server.wait_until_idle(blocks as f64).await;
}
