//! Throughput of the block manager's bookkeeping: allocate/free, append, fork, and one engine
//! step with 256 running sequences (append one token each and mark it computed).

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use kv_block::{
    AllocationRequest, BlockManager, BlockManagerConfig, PagedBlockManager, PrefixCaching, TokenId,
};

const PROMPT: usize = 512;
const RUNNING: u64 = 256;

fn manager(caching: PrefixCaching) -> PagedBlockManager {
    PagedBlockManager::new(BlockManagerConfig::new(16_384, 1_024), caching).unwrap()
}

fn prompt(seed: u32) -> Vec<TokenId> {
    (0..PROMPT as u32)
        .map(|i| i.wrapping_mul(2_654_435_761).wrapping_add(seed))
        .collect()
}

fn allocate_free(c: &mut Criterion) {
    for (name, caching) in [
        ("uncached", PrefixCaching::Disabled),
        ("cached", PrefixCaching::Enabled),
    ] {
        let mut m = manager(caching);
        let tokens = prompt(7);
        c.bench_function(&format!("allocate+free 512-token prompt ({name})"), |b| {
            b.iter(|| {
                let hit = m
                    .allocate(&AllocationRequest::new(&[1], black_box(&tokens)))
                    .unwrap();
                m.mark_computed(1, tokens.len()).unwrap();
                m.free(1).unwrap();
                hit
            })
        });
    }
}

fn append(c: &mut Criterion) {
    let mut m = manager(PrefixCaching::Enabled);
    c.bench_function("allocate, append 256 tokens one by one, free", |b| {
        b.iter(|| {
            m.allocate(&AllocationRequest::new(&[1], &[1])).unwrap();
            for token in 0..256 {
                m.append_slots(1, black_box(&[token])).unwrap();
            }
            m.free(1).unwrap();
        })
    });
}

fn fork_free(c: &mut Criterion) {
    let mut m = manager(PrefixCaching::Disabled);
    m.allocate(&AllocationRequest::new(&[1], &prompt(3)))
        .unwrap();
    c.bench_function("fork+free 512-token sequence", |b| {
        b.iter(|| {
            m.fork(1, 2).unwrap();
            m.free(2).unwrap();
        })
    });
}

fn engine_step(c: &mut Criterion) {
    for (name, caching) in [
        ("uncached", PrefixCaching::Disabled),
        ("cached", PrefixCaching::Enabled),
    ] {
        let mut m = manager(caching);
        for seq in 0..RUNNING {
            let tokens = prompt(seq as u32);
            m.allocate(&AllocationRequest::new(&[seq], &tokens[..PROMPT / 4]))
                .unwrap();
            m.mark_computed(seq, PROMPT / 4).unwrap();
        }
        let seqs: Vec<u64> = (0..RUNNING).collect();
        let mut step = 0u32;
        c.bench_function(
            &format!("engine step, 256 running sequences ({name})"),
            |b| {
                b.iter(|| {
                    step += 1;
                    assert!(m.can_append_slots(&seqs, 1).unwrap());
                    for &seq in &seqs {
                        m.append_slots(seq, &[step]).unwrap();
                        let len = m.block_table(seq).unwrap().num_tokens();
                        m.mark_computed(seq, len).unwrap();
                    }
                    // Keep the sequences short so the pool never runs dry.
                    if step.is_multiple_of(256) {
                        for &seq in &seqs {
                            m.free(seq).unwrap();
                            m.allocate(&AllocationRequest::new(
                                &[seq],
                                &prompt(seq as u32)[..PROMPT / 4],
                            ))
                            .unwrap();
                        }
                    }
                })
            },
        );
    }
}

criterion_group!(benches, allocate_free, append, fork_free, engine_step);
criterion_main!(benches);
