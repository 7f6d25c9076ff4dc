//! Per-row cost of the sampling pipeline at a realistic vocabulary size (128k).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sampling::logprobs::{Normalizer, position_logprobs};
use sampling::processors::{RowContext, process_logits};
use sampling::sampler::{RequestRng, draw, greedy};
use sampling::{SamplingParams, Scratch};

const VOCAB: usize = 128_000;

fn bench_rows(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let logits: Vec<f32> = (0..VOCAB)
        .map(|_| rng.random_range(-10.0f32..10.0))
        .collect();
    let prompt: Vec<u32> = (0..512).map(|i| i * 7).collect();
    let output: Vec<u32> = (0..256).map(|i| i * 13).collect();
    let ctx = RowContext {
        prompt: &prompt,
        output: &output,
        eos_token_ids: &[2],
    };
    let cases = [
        (
            "greedy",
            SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
        ),
        (
            "random_t0.8",
            SamplingParams {
                temperature: 0.8,
                ..Default::default()
            },
        ),
        (
            "random_penalties_topk50_topp0.9_minp0.05",
            SamplingParams {
                temperature: 0.8,
                top_k: 50,
                top_p: 0.9,
                min_p: 0.05,
                repetition_penalty: 1.1,
                frequency_penalty: 0.2,
                presence_penalty: 0.1,
                ..Default::default()
            },
        ),
        (
            "random_topp0.95",
            SamplingParams {
                temperature: 1.0,
                top_p: 0.95,
                ..Default::default()
            },
        ),
    ];
    let mut scratch = Scratch::default();
    let mut row = logits.clone();
    for (name, params) in cases {
        let params = params.validate().unwrap().0;
        let mut req_rng = RequestRng::new(Some(1), 0);
        let greedy_mode = params.temperature == 0.0;
        c.bench_function(&format!("row_128k/{name}"), |b| {
            b.iter(|| {
                row.copy_from_slice(&logits);
                process_logits(&mut row, &params, &ctx, &mut scratch).unwrap();
                let norm = Normalizer::new(&row, &mut scratch);
                let token = if greedy_mode {
                    greedy(&row)
                } else {
                    draw(scratch.weights(), norm.total(), req_rng.uniform())
                };
                black_box((token, norm.logprob(row[0])))
            })
        });
    }
    let params = SamplingParams::default().validate().unwrap().0;
    c.bench_function("row_128k/logprobs5_with_rank", |b| {
        b.iter(|| {
            row.copy_from_slice(&logits);
            process_logits(&mut row, &params, &ctx, &mut scratch).unwrap();
            let norm = Normalizer::new(&row, &mut scratch);
            black_box(position_logprobs(&row, &norm, 7, 5, &mut scratch))
        })
    });
}

criterion_group!(benches, bench_rows);
criterion_main!(benches);
