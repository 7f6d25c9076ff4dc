//! Scheduler + block-manager cost of one steady decode step with 256 running sequences:
//! `schedule()` plus appending one sampled token to each sequence (target ≤ 50 µs).

use std::time::{Duration, Instant};

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use kv_block::{BlockManagerConfig, PagedBlockManager, PrefixCaching, TokenId};
use scheduler::{Fcfs, Request, Scheduler, SchedulerConfig};

const RUNNING: usize = 256;
const PROMPT: usize = 128;
/// Measured steps per freshly built scheduler (bounds the pool the sequences grow into).
const STEPS_PER_SETUP: u64 = 1_000;

/// 256 requests admitted and prefilled, every sequence decoding.
fn steady_state(caching: PrefixCaching) -> Scheduler<PagedBlockManager> {
    let config = SchedulerConfig::default()
        .with_max_num_seqs(RUNNING)
        .with_max_num_batched_tokens(8_192)
        .with_max_model_len(4_096);
    let blocks = RUNNING * (PROMPT + STEPS_PER_SETUP as usize + 64) / 16;
    let manager = PagedBlockManager::new(BlockManagerConfig::new(blocks, 0), caching)
        .expect("valid block-manager configuration");
    let mut scheduler =
        Scheduler::new(config, manager, Box::new(Fcfs)).expect("valid scheduler configuration");
    for i in 0..RUNNING {
        let prompt: Vec<TokenId> = (0..PROMPT as u32)
            .map(|p| p * 7 + i as u32 * 1_000)
            .collect();
        scheduler
            .add_request(Request::new(format!("r{i}"), prompt, i as f64))
            .expect("valid request");
    }
    while scheduler
        .queue(scheduler::GroupStatus::Running)
        .filter(|g| g.is_decoding())
        .count()
        < RUNNING
    {
        step(&mut scheduler);
    }
    scheduler
}

/// One engine step: schedule, then one token for every sequence that produced logits.
fn step(scheduler: &mut Scheduler<PagedBlockManager>) {
    let out = scheduler.schedule().expect("schedule");
    for entry in out.scheduled_seqs.iter().filter(|e| e.needs_logits) {
        scheduler
            .append_token(entry.seq_id, black_box(3))
            .expect("append");
    }
}

fn decode_step(c: &mut Criterion) {
    for (name, caching) in [
        ("prefix caching off", PrefixCaching::Disabled),
        ("prefix caching on", PrefixCaching::Enabled),
    ] {
        c.bench_function(&format!("decode step, 256 running ({name})"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let mut scheduler = steady_state(caching);
                    let n = left.min(STEPS_PER_SETUP);
                    let start = Instant::now();
                    for _ in 0..n {
                        step(&mut scheduler);
                    }
                    total += start.elapsed();
                    left -= n;
                }
                total
            })
        });
    }
}

criterion_group!(benches, decode_step);
criterion_main!(benches);
