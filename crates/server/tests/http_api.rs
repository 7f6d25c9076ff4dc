//! The OpenAI-compatible API over real HTTP on 127.0.0.1, with the built-in demo model.

mod common;

use common::{TestServer, direct_greedy, direct_logprob_rows, kv_memory_for_blocks, text};
use serde_json::{Value, json};

const PROMPT: [u32; 6] = [0, 40, 73, 80, 80, 83];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_matches_the_model_crate_and_streaming_matches_whole() {
    let server = TestServer::start(&[]).await;
    let body = json!({"model": "vellum-demo", "prompt": PROMPT, "max_tokens": 12,
                      "temperature": 0, "ignore_eos": true});
    let (status, whole) = server.post("/v1/completions", &body).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(text(&whole), direct_greedy(&PROMPT, 12));
    assert_eq!(
        whole["usage"],
        json!({"prompt_tokens": 6, "completion_tokens": 12, "total_tokens": 18})
    );
    assert_eq!(whole["choices"][0]["finish_reason"], "length");

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let chunks = server.stream("/v1/completions", &streamed).await;
    let joined: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"].get(0))
        .map(|choice| choice["text"].as_str().unwrap())
        .collect();
    assert_eq!(joined, text(&whole));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 12);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_prompts_parallel_sampling_and_beam_search() {
    let server = TestServer::start(&[]).await;
    let total_blocks = server.metric("vellum:kv_cache_free_blocks").await;
    let (status, response) = server
        .post(
            "/v1/completions",
            &json!({"model": "vellum-demo", "prompt": ["Hi", "there"],
            "max_tokens": 5, "n": 3, "seed": 7, "temperature": 1.0, "ignore_eos": true}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    let choices = response["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 6);
    let indices: Vec<u64> = choices
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [0, 1, 2, 3, 4, 5]);
    assert_eq!(response["usage"]["completion_tokens"], 30);

    let seeded = json!({"model": "vellum-demo", "prompt": "Hi", "max_tokens": 6, "seed": 11,
                        "temperature": 0.9, "ignore_eos": true});
    let (_, first) = server.post("/v1/completions", &seeded).await;
    let (_, second) = server.post("/v1/completions", &seeded).await;
    assert_eq!(
        text(&first),
        text(&second),
        "a seeded request is reproducible"
    );

    let beam = json!({"model": "vellum-demo", "prompt": PROMPT, "max_tokens": 6, "n": 2,
                      "best_of": 3, "use_beam_search": true, "temperature": 0,
                      "ignore_eos": true});
    let (status, response) = server.post("/v1/completions", &beam).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["choices"].as_array().unwrap().len(), 2);
    let mut streamed = beam.clone();
    streamed["stream"] = json!(true);
    let chunks = server.stream("/v1/completions", &streamed).await;
    let streamed_texts: Vec<&str> = chunks
        .iter()
        .map(|chunk| chunk["choices"][0]["text"].as_str().unwrap())
        .collect();
    let whole_texts: Vec<&str> = response["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        streamed_texts, whole_texts,
        "beam search streams its final beams"
    );
    server.wait_until_idle(total_blocks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_are_consistent_and_stop_strings_cut_the_text() {
    let server = TestServer::start(&[]).await;
    let (status, response) = server
        .post(
            "/v1/completions",
            &json!({"model": "vellum-demo", "prompt": PROMPT,
            "max_tokens": 8, "temperature": 0, "logprobs": 2, "ignore_eos": true}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    let logprobs = &response["choices"][0]["logprobs"];
    let tokens = logprobs["tokens"].as_array().unwrap();
    let token_logprobs = logprobs["token_logprobs"].as_array().unwrap();
    assert_eq!(tokens.len(), 8);
    assert_eq!(token_logprobs.len(), 8);
    let joined: String = tokens.iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(joined, text(&response));
    for (position, top) in logprobs["top_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let top = top.as_object().unwrap();
        assert!(
            (2..=3).contains(&top.len()),
            "top-2 plus the chosen token: {top:?}"
        );
        let best = top
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        let chosen = token_logprobs[position].as_f64().unwrap();
        assert!(
            (chosen - best).abs() < 1e-6,
            "greedy picks the most likely token"
        );
        assert!(chosen <= 0.0);
    }

    let full = text(&response);
    let stop: String = full.chars().skip(3).take(2).collect();
    let (_, stopped) = server
        .post(
            "/v1/completions",
            &json!({"model": "vellum-demo", "prompt": PROMPT,
            "max_tokens": 8, "temperature": 0, "stop": [stop.clone()], "ignore_eos": true}),
        )
        .await;
    let cut = full.find(&stop).unwrap();
    assert_eq!(text(&stopped), full[..cut]);
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    assert_eq!(stopped["choices"][0]["stop_reason"], json!(stop));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_applies_the_template_and_streams_deltas() {
    let server = TestServer::start(&[]).await;
    let messages = json!([{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]);
    let (status, response) = server
        .post(
            "/v1/chat/completions",
            &json!({"model": "vellum-demo", "messages": messages,
            "max_completion_tokens": 5, "temperature": 0, "ignore_eos": true}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    // The demo tokenizer's template, as its tokenizer_config would render it.
    let tokenized = server
        .tokenize("system: Be brief.\nuser: Hi\nassistant: ")
        .await;
    assert_eq!(response["usage"]["prompt_tokens"], tokenized["count"]);
    assert_eq!(response["object"], "chat.completion");
    let content = response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let prompt_ids: Vec<u32> = serde_json::from_value(tokenized["tokens"].clone()).unwrap();
    assert_eq!(content, direct_greedy(&prompt_ids, 5));

    let chunks = server
        .stream(
            "/v1/chat/completions",
            &json!({"model": "vellum-demo", "messages": messages,
            "max_completion_tokens": 5, "temperature": 0, "ignore_eos": true, "stream": true}),
        )
        .await;
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    let joined: String = chunks
        .iter()
        .map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(joined, content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_status_and_a_message() {
    let server = TestServer::start(&["--max-model-len", "64"]).await;
    let error_of = |status: u16, body: &Value| {
        (
            status,
            body["error"]["message"].as_str().unwrap_or("").to_string(),
        )
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"model": "nope", "prompt": "x"}),
            404,
            "does not exist",
        ),
        (
            json!({"model": "vellum-demo", "prompt": "x", "max_tokens": -1}),
            400,
            "max_tokens",
        ),
        (
            json!({"model": "vellum-demo", "prompt": "x", "temperature": "hot"}),
            400,
            "not valid",
        ),
        (
            json!({"model": "vellum-demo", "prompt": "x", "n": 0}),
            400,
            "n must be",
        ),
        (
            json!({"model": "vellum-demo", "prompt": "x", "top_p": 7}),
            400,
            "top_p",
        ),
        (
            json!({"model": "vellum-demo", "prompt": [], "max_tokens": 1}),
            400,
            "empty",
        ),
        (
            json!({"model": "vellum-demo", "prompt": [999999]}),
            400,
            "out of vocabulary",
        ),
        (
            json!({"model": "vellum-demo", "prompt": "x".repeat(100), "max_tokens": 4}),
            400,
            "maximum context length is 64 tokens",
        ),
        (
            json!({"model": "vellum-demo", "prompt": "x", "max_tokens": 1000}),
            400,
            "maximum context length",
        ),
        (json!({"prompt": "x"}), 400, "model"),
        (
            json!({"model": "vellum-demo", "prompt": "x", "prompt_logprobs": 21}),
            400,
            "Requested prompt logprobs of 21, which is greater than max allowed: 20",
        ),
        (
            json!({"model": "vellum-demo", "prompt": "x", "logprobs": 21}),
            400,
            "Requested sample logprobs of 21, which is greater than max allowed: 20",
        ),
        (
            json!({"model": "vellum-demo", "prompt": "x", "prompt_logprobs": -1}),
            400,
            "prompt_logprobs must be non-negative",
        ),
        (
            json!({"model": "vellum-demo", "prompt": "x", "prompt_logprobs": 1, "stream": true}),
            400,
            "`prompt_logprobs` are not available when `stream=True`.",
        ),
        (
            json!({"model": "vellum-demo", "prompt": "x", "n": 300}),
            400,
            "--max-num-seqs",
        ),
    ];
    for (body, want_status, needle) in cases {
        let (status, response) = server.post("/v1/completions", &body).await;
        let (status, message) = error_of(status, &response);
        assert_eq!(status, want_status, "{body}: {response}");
        assert!(message.contains(needle), "{body}: {message}");
        assert_eq!(response["error"]["code"], want_status);
    }
    let (status, _) = server
        .post_raw("/v1/completions", b"{\"model\": ".to_vec())
        .await;
    assert_eq!(status, 400);
    // The server answers 413 before reading the whole body and closes that connection, so the
    // oversized request gets a client of its own.
    let oversized = reqwest::Client::new()
        .post(format!("{}/v1/completions", server.base))
        .body(vec![b' '; 17 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status().as_u16(), 413);
    let (status, _) = server
        .post(
            "/v1/chat/completions",
            &json!({"model": "vellum-demo", "messages": []}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = server.post("/v1/nothing", &json!({})).await;
    assert_eq!(status, 404);
    // The server is still healthy after all that.
    let health = server.get("/health", None).await;
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_required_on_v1_only() {
    let server = TestServer::start(&["--api-key", "s3cret"]).await;
    let status = |response: reqwest::Response| response.status().as_u16();
    assert_eq!(status(server.get("/v1/models", None).await), 401);
    assert_eq!(status(server.get("/v1/models", Some("s3cre")).await), 401);
    let right = server.get("/v1/models", Some("s3cret")).await;
    assert_eq!(right.status().as_u16(), 200);
    let body: Value = right.json().await.unwrap();
    assert_eq!(body["data"][0]["id"], "vellum-demo");
    assert_eq!(status(server.get("/health", None).await), 200);
    let version: Value = server.get("/version", None).await.json().await.unwrap();
    assert!(version["version"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_prompt_is_served_from_the_prefix_cache() {
    let server = TestServer::start(&[]).await;
    let prompt: Vec<u32> = (0..40).map(|i| 2 + i * 5).collect();
    let body = json!({"model": "vellum-demo", "prompt": prompt, "max_tokens": 3,
                      "temperature": 0, "ignore_eos": true});
    let (_, first) = server.post("/v1/completions", &body).await;
    assert!(
        first["usage"].get("prompt_tokens_details").is_none(),
        "{first}"
    );
    let (_, second) = server.post("/v1/completions", &body).await;
    // Two full 16-token blocks are reused; the rest of the prompt is recomputed.
    assert_eq!(
        second["usage"]["prompt_tokens_details"]["cached_tokens"], 32,
        "{second}"
    );
    assert_eq!(
        text(&first),
        text(&second),
        "cached KV gives the same tokens"
    );
    assert_eq!(
        server.metric("vellum:prefix_cache_queries_total").await,
        80.0
    );
    assert_eq!(server.metric("vellum:prefix_cache_hits_total").await, 32.0);
}

/// Checks a response's `prompt_logprobs` for `prompt` against the model crate's own dense
/// forward: one entry per prompt token, the first null, each later one holding the actual token
/// with its logprob and rank plus the top-`k` alternatives ranked 1..=k.
fn check_prompt_logprobs(list: &Value, prompt: &[u32], reference: &[Vec<f64>], k: usize) {
    let list = list.as_array().expect("prompt_logprobs is a list");
    assert_eq!(list.len(), prompt.len());
    assert!(list[0].is_null(), "the first prompt token has no logprob");
    for (position, entry) in list.iter().enumerate().skip(1) {
        let expected = &reference[position - 1];
        let entry = entry.as_object().unwrap();
        assert!(
            (k..=k + 1).contains(&entry.len()),
            "top-{k} plus the actual token: {entry:?}"
        );
        let actual = prompt[position];
        let token = &entry[&actual.to_string()];
        let logprob = token["logprob"].as_f64().unwrap();
        assert!(
            (logprob - expected[actual as usize]).abs() < 1e-4,
            "{position}: {token}"
        );
        // The rank counts the tokens above it; a tolerance keeps near-ties from flaking.
        let above = |slack: f64| expected.iter().filter(|&&l| l > logprob + slack).count();
        let rank = token["rank"].as_u64().unwrap() as usize;
        assert!(
            (above(1e-4) + 1..=above(-1e-4) + 1).contains(&rank),
            "{position}: {token}"
        );
        assert!(token["decoded_token"].is_string());
        let mut sorted = expected.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mut ranks: Vec<usize> = Vec::new();
        for (id, alternative) in entry {
            let id: usize = id.parse().unwrap();
            let logprob = alternative["logprob"].as_f64().unwrap();
            assert!((logprob - expected[id]).abs() < 1e-4, "{position}: {id}");
            let rank = alternative["rank"].as_u64().unwrap() as usize;
            if id != actual as usize || rank <= k {
                assert!(
                    (logprob - sorted[rank - 1]).abs() < 1e-4,
                    "{position}: {id} rank {rank}"
                );
                ranks.push(rank);
            }
        }
        ranks.sort_unstable();
        assert_eq!(ranks, (1..=k).collect::<Vec<_>>(), "{position}: {entry:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_logprobs_match_the_model_crate_across_chunks_and_the_prefix_cache() {
    // 16-token steps: the 40-token prompt is computed in three chunks.
    let server = TestServer::start(&["--max-num-batched-tokens", "16"]).await;
    let total_blocks = server.metric("vellum:kv_cache_free_blocks").await;
    let prompt: Vec<u32> = (0..40).map(|i| 2 + (i * 37) % 250).collect();
    let reference = direct_logprob_rows(&prompt);
    let body = json!({"model": "vellum-demo", "prompt": prompt, "max_tokens": 3, "n": 2,
                      "seed": 3, "temperature": 1.0, "prompt_logprobs": 3, "ignore_eos": true});
    for attempt in 0..2 {
        let (status, response) = server.post("/v1/completions", &body).await;
        assert_eq!(status, 200, "{response}");
        let choices = response["choices"].as_array().unwrap();
        check_prompt_logprobs(&choices[0]["prompt_logprobs"], &prompt, &reference, 3);
        assert_eq!(choices[0]["prompt_logprobs"], choices[1]["prompt_logprobs"]);
        assert!(
            response["usage"].get("prompt_tokens_details").is_none(),
            "attempt {attempt}: a prompt_logprobs request does not read the prefix cache"
        );
    }

    // Zero alternatives: the actual token alone; the same for every prompt and every beam.
    let (status, response) = server
        .post(
            "/v1/completions",
            &json!({"model": "vellum-demo", "prompt": [prompt.clone(), prompt[..5].to_vec()],
            "max_tokens": 3, "n": 2, "best_of": 2, "use_beam_search": true, "temperature": 0,
            "prompt_logprobs": 0}),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    let choices = response["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    check_prompt_logprobs(&choices[1]["prompt_logprobs"], &prompt, &reference, 0);
    check_prompt_logprobs(&choices[3]["prompt_logprobs"], &prompt[..5], &reference, 0);

    // Without the field it is null, as vLLM writes it; a one-token prompt gets `[null]`.
    let (_, plain) = server
        .post(
            "/v1/completions",
            &json!({"model": "vellum-demo", "prompt": [5], "max_tokens": 1}),
        )
        .await;
    assert_eq!(plain["choices"][0]["prompt_logprobs"], Value::Null);
    let (_, single) = server
        .post(
            "/v1/completions",
            &json!({"model": "vellum-demo", "prompt": [5], "max_tokens": 1, "prompt_logprobs": 2}),
        )
        .await;
    assert_eq!(single["choices"][0]["prompt_logprobs"], json!([null]));

    // Chat puts them at the top level.
    let messages = json!([{"role": "user", "content": "Hi there"}]);
    let (status, chat) = server
        .post(
            "/v1/chat/completions",
            &json!({"model": "vellum-demo", "messages": messages, "max_tokens": 2,
                    "temperature": 0, "prompt_logprobs": 1}),
        )
        .await;
    assert_eq!(status, 200, "{chat}");
    let tokenized = server.tokenize("user: Hi there\nassistant: ").await;
    let chat_prompt: Vec<u32> = serde_json::from_value(tokenized["tokens"].clone()).unwrap();
    check_prompt_logprobs(
        &chat["prompt_logprobs"],
        &chat_prompt,
        &direct_logprob_rows(&chat_prompt),
        1,
    );
    assert!(chat["choices"][0].get("prompt_logprobs").is_none());

    // Streaming accepts zero (vLLM computes nothing for it) and its chunks carry no field.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["prompt_logprobs"] = json!(0);
    let chunks = server.stream("/v1/completions", &streamed).await;
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk["choices"][0].get("prompt_logprobs").is_none())
    );
    server.wait_until_idle(total_blocks).await;
}

/// `echo` with `logprobs` scores the prompt as vLLM does (lm-eval's loglikelihood requests):
/// the legacy logprobs cover the prompt tokens (the first `null`) and then the generated ones,
/// with offsets into the echoed text; `max_tokens: 0` returns the prompt alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_with_logprobs_scores_the_prompt() {
    let server = TestServer::start(&[]).await;
    let total_blocks = server.metric("vellum:kv_cache_free_blocks").await;
    let prompt: Vec<u32> = (0..12).map(|i| 3 + (i * 41) % 250).collect();
    let reference = direct_logprob_rows(&prompt);
    let logprob_of = |position: usize| reference[position - 1][prompt[position] as usize];
    for max_tokens in [0, 2] {
        let body = json!({"model": "vellum-demo", "prompt": prompt, "max_tokens": max_tokens,
                          "temperature": 0, "ignore_eos": true, "echo": true, "logprobs": 1});
        let (status, response) = server.post("/v1/completions", &body).await;
        assert_eq!(status, 200, "{response}");
        let choice = &response["choices"][0];
        let logprobs = &choice["logprobs"];
        let values = logprobs["token_logprobs"].as_array().unwrap();
        assert_eq!(values.len(), prompt.len() + max_tokens, "{logprobs}");
        assert!(values[0].is_null() && logprobs["top_logprobs"][0].is_null());
        for position in 1..prompt.len() {
            let got = values[position].as_f64().unwrap();
            assert!(
                (got - logprob_of(position)).abs() < 1e-4,
                "{position}: {got}"
            );
            let top = logprobs["top_logprobs"][position].as_object().unwrap();
            assert!((1..=2).contains(&top.len()), "{top:?}");
        }
        // Offsets index the echoed text, and the tokens spell it.
        let text = choice["text"].as_str().unwrap();
        let tokens: Vec<&str> = logprobs["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tokens.concat(), text);
        let offsets = logprobs["text_offset"].as_array().unwrap();
        assert_eq!(offsets[0], 0);
        assert_eq!(choice["prompt_logprobs"], Value::Null, "not asked for");
        if max_tokens == 0 {
            assert_eq!(text, tokens[..prompt.len()].concat(), "the prompt alone");
        }

        // Streamed, the first chunk carries the echo and the prompt's positions; the chunks
        // together hold the same logprobs.
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let chunks = server.stream("/v1/completions", &streamed).await;
        let mut all = Vec::new();
        let mut streamed_text = String::new();
        for chunk in &chunks {
            let Some(choice) = chunk["choices"].get(0) else {
                continue;
            };
            streamed_text.push_str(choice["text"].as_str().unwrap());
            if let Some(values) = choice["logprobs"]["token_logprobs"].as_array() {
                all.extend(values.iter().cloned());
            }
        }
        assert_eq!(streamed_text, text);
        assert_eq!(&all, values, "streamed logprobs equal the whole response's");
    }
    server.wait_until_idle(total_blocks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_logprobs_survive_recompute_preemption() {
    // 16 blocks of 16 tokens for six requests of 100 tokens (7 blocks) each: some are preempted
    // and re-prefilled, some in the middle of their chunked prompt.
    let blocks = 16;
    let memory = kv_memory_for_blocks(blocks);
    let server = TestServer::start(&[
        "--kv-cache-memory",
        &memory,
        "--max-model-len",
        "128",
        "--preemption-mode",
        "recompute",
        "--max-num-batched-tokens",
        "16",
    ])
    .await;
    assert_eq!(
        server.metric("vellum:kv_cache_free_blocks").await,
        blocks as f64
    );
    let prompts: Vec<Vec<u32>> = (0..6u32)
        .map(|r| (0..40).map(|i| 2 + (i * 11 + r * 7) % 250).collect())
        .collect();
    let requests = prompts.iter().map(|prompt| {
        let body = json!({"model": "vellum-demo", "prompt": prompt, "max_tokens": 60,
                          "temperature": 0, "prompt_logprobs": 2, "ignore_eos": true});
        let server = &server;
        async move { server.post("/v1/completions", &body).await }
    });
    let responses = futures::future::join_all(requests).await;
    for (prompt, (status, response)) in prompts.iter().zip(responses) {
        assert_eq!(status, 200, "{response}");
        assert_eq!(response["usage"]["completion_tokens"], 60);
        check_prompt_logprobs(
            &response["choices"][0]["prompt_logprobs"],
            prompt,
            &direct_logprob_rows(prompt),
            2,
        );
    }
    // Panics if the counter has no sample, i.e. nothing was preempted.
    assert!(server.metric("vellum:num_preemptions_total").await >= 1.0);
    server.wait_until_idle(blocks as f64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_byte_kv_cache_holds_twice_the_blocks_and_serves() {
    let full = TestServer::start(&[]).await;
    let half = TestServer::start(&["--kv-cache-dtype", "bfloat16"]).await;
    let full_blocks = full.metric("vellum:kv_cache_free_blocks").await;
    let half_blocks = half.metric("vellum:kv_cache_free_blocks").await;
    assert_eq!(half_blocks, 2.0 * full_blocks);
    let body = json!({"model": "vellum-demo", "prompt": PROMPT, "max_tokens": 8,
                      "temperature": 0, "ignore_eos": true});
    let (status, response) = half.post("/v1/completions", &body).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["usage"]["completion_tokens"], 8);
    half.wait_until_idle(half_blocks).await;
}
