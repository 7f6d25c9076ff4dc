//! Paged vs naive: a schedule of mixed prefill chunks and decode steps through the paged path
//! (shuffled block tables, several block sizes, both backends) gives the logits of a plain
//! full-recompute forward of the same weights, for every family.

mod common;

use attention_kernels::{
    AttentionBackend, AttnMetadata, Cpu, KvCache, KvCacheSpec, KvDtype, Reference, SeqAttn,
};
use candle_core::{DType, Device};
use common::{fixture_model, row_error, rows};
use models::{CausalLm, DecoderModel, ForwardBatch, demo_model};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// One sequence of a scenario: its tokens and how they are split into scheduled chunks.
#[derive(Debug, Clone)]
struct ScheduledSeq {
    tokens: Vec<u32>,
    chunks: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Scenario {
    seqs: Vec<ScheduledSeq>,
    block_size: usize,
    shuffle_seed: u64,
    use_reference_backend: bool,
}

fn scheduled_seq(vocab: u32) -> impl Strategy<Value = ScheduledSeq> {
    (1usize..=14).prop_flat_map(move |len| {
        (
            proptest::collection::vec(0..vocab, len),
            proptest::collection::vec(any::<bool>(), len - 1),
        )
            .prop_map(|(tokens, cuts)| {
                // A cut after token i ends a chunk there; runs of cuts become decode steps.
                let mut chunks = vec![];
                let mut current = 1;
                for cut in cuts {
                    if cut {
                        chunks.push(current);
                        current = 1;
                    } else {
                        current += 1;
                    }
                }
                chunks.push(current);
                ScheduledSeq { tokens, chunks }
            })
    })
}

fn scenario(vocab: u32) -> impl Strategy<Value = Scenario> {
    (
        proptest::collection::vec(scheduled_seq(vocab), 1..=3),
        prop_oneof![Just(1usize), Just(2), Just(4), Just(16)],
        any::<u64>(),
        proptest::bool::weighted(0.25),
    )
        .prop_map(
            |(seqs, block_size, shuffle_seed, use_reference_backend)| Scenario {
                seqs,
                block_size,
                shuffle_seed,
                use_reference_backend,
            },
        )
}

/// Runs the scenario through the paged path and checks every row against the dense forward.
fn check(model: &DecoderModel, scenario: &Scenario) -> Result<(), TestCaseError> {
    let spec = model.spec();
    let bs = scenario.block_size;
    // Shuffled block tables: the blocks of all sequences, in random physical order, plus spares.
    let needed: Vec<usize> = scenario
        .seqs
        .iter()
        .map(|s| s.tokens.len().div_ceil(bs))
        .collect();
    let num_blocks = needed.iter().sum::<usize>() + 3;
    let mut physical: Vec<u32> = (0..num_blocks as u32).collect();
    physical.shuffle(&mut ChaCha8Rng::seed_from_u64(scenario.shuffle_seed));
    let mut tables = vec![];
    let mut next = 0;
    for n in &needed {
        tables.push(physical[next..next + n].to_vec());
        next += n;
    }

    let cache_spec = KvCacheSpec::new(
        spec.num_layers,
        spec.num_kv_heads,
        spec.head_dim,
        bs,
        KvDtype::F32,
    )
    .unwrap();
    let mut cache = KvCache::new(cache_spec, num_blocks).unwrap();
    let backend: &dyn AttentionBackend = if scenario.use_reference_backend {
        &Reference
    } else {
        &Cpu::new()
    };
    let dense: Vec<Vec<Vec<f32>>> = scenario
        .seqs
        .iter()
        .map(|s| rows(&model.forward_dense(&[&s.tokens]).unwrap()))
        .collect();

    let steps = scenario.seqs.iter().map(|s| s.chunks.len()).max().unwrap();
    let mut done = vec![0usize; scenario.seqs.len()];
    for step in 0..steps {
        let (mut tokens, mut positions, mut slots, mut seqs, mut expected) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (i, seq) in scenario.seqs.iter().enumerate() {
            let Some(&len) = seq.chunks.get(step) else {
                continue;
            };
            seqs.push(SeqAttn {
                query_start: tokens.len(),
                query_len: len,
                context_len: done[i] + len,
                block_table: tables[i].clone(),
            });
            for p in done[i]..done[i] + len {
                tokens.push(seq.tokens[p]);
                positions.push(p as u32);
                slots.push(i64::from(tables[i][p / bs]) * bs as i64 + (p % bs) as i64);
                expected.push(&dense[i][p]);
            }
            done[i] += len;
        }
        let rows_wanted = (0..tokens.len() as u32).collect();
        let meta = AttnMetadata::new(bs, slots, seqs).unwrap();
        let batch = ForwardBatch::new(tokens, positions, meta, rows_wanted).unwrap();
        let logits = model.forward(&batch, cache.layers_mut(), backend).unwrap();
        for (row, (ours, reference)) in rows(&logits).iter().zip(&expected).enumerate() {
            let (worst, scale) = row_error(ours, reference);
            prop_assert!(
                worst <= 1e-4 * scale,
                "step {step} row {row}: error {worst} vs scale {scale}"
            );
        }
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 32,
        ..ProptestConfig::default()
    }
}

macro_rules! family_test {
    ($name:ident, $family:literal) => {
        proptest! {
            #![proptest_config(config())]
            #[test]
            fn $name(s in scenario(256)) {
                let model = fixture_model($family);
                check(&model, &s)?;
            }
        }
    };
}

family_test!(llama_paged_matches_dense, "llama");
family_test!(mistral_sliding_window_paged_matches_dense, "mistral");
family_test!(qwen2_paged_matches_dense, "qwen2");
family_test!(opt_paged_matches_dense, "opt");
family_test!(gpt2_paged_matches_dense, "gpt2");

proptest! {
    #![proptest_config(config())]
    #[test]
    fn demo_model_paged_matches_dense(s in scenario(models::DEMO_VOCAB_SIZE as u32)) {
        let model = demo_model(DType::F32, &Device::Cpu).unwrap();
        check(&model, &s)?;
    }
}
