//! Inconsistent batches and caches are errors, never panics.

use attention_kernels::{AttnMetadata, Cpu, KvCache, KvCacheSpec, KvDtype, SeqAttn};
use candle_core::{DType, Device};
use models::{CausalLm, DecoderModel, ForwardBatch, ModelError, demo_model};

fn model() -> DecoderModel {
    demo_model(DType::F32, &Device::Cpu).unwrap()
}

fn cache(model: &DecoderModel, block_size: usize, blocks: usize) -> KvCache {
    let spec = model.spec();
    let cache_spec = KvCacheSpec::new(
        spec.num_layers,
        spec.num_kv_heads,
        spec.head_dim,
        block_size,
        KvDtype::F32,
    )
    .unwrap();
    KvCache::new(cache_spec, blocks).unwrap()
}

fn prefill(tokens: Vec<u32>, block_size: usize) -> (Vec<u32>, AttnMetadata) {
    let n = tokens.len();
    let meta = AttnMetadata::new(
        block_size,
        (0..n as i64).collect(),
        vec![SeqAttn {
            query_start: 0,
            query_len: n,
            context_len: n,
            block_table: (0..n.div_ceil(block_size) as u32).collect(),
        }],
    )
    .unwrap();
    ((0..n as u32).collect(), meta)
}

#[test]
fn batch_construction_checks_lengths_positions_and_rows() {
    let (positions, meta) = prefill(vec![1, 2, 3], 4);
    assert!(ForwardBatch::new(vec![1, 2, 3], positions.clone(), meta.clone(), vec![2]).is_ok());
    let cases = [
        ForwardBatch::new(vec![1, 2], positions.clone(), meta.clone(), vec![]),
        ForwardBatch::new(vec![1, 2, 3], vec![0, 1, 5], meta.clone(), vec![]),
        ForwardBatch::new(vec![1, 2, 3], positions, meta, vec![3]),
    ];
    for case in cases {
        assert!(matches!(case, Err(ModelError::InvalidBatch(_))));
    }
}

#[test]
fn forward_rejects_bad_tokens_caches_and_metadata() {
    let model = model();
    let mut kv = cache(&model, 4, 4);
    let (positions, meta) = prefill(vec![1, 2, 3], 4);

    let batch = ForwardBatch::new(vec![1, 2, 3], positions.clone(), meta.clone(), vec![2]).unwrap();
    let logits = model.forward(&batch, kv.layers_mut(), &Cpu::new()).unwrap();
    assert_eq!(logits.dims(), [1, model.spec().vocab_size]);

    let out_of_vocab =
        ForwardBatch::new(vec![1, 9999, 3], positions.clone(), meta.clone(), vec![]).unwrap();
    let err = model
        .forward(&out_of_vocab, kv.layers_mut(), &Cpu::new())
        .unwrap_err();
    assert!(err.to_string().contains("9999"), "{err}");

    let err = model
        .forward(&batch, &mut kv.layers_mut()[..1], &Cpu::new())
        .unwrap_err();
    assert!(matches!(err, ModelError::InvalidBatch(_)), "{err}");

    // A cache too small for the block table is reported by the attention backend.
    let mut tiny = cache(&model, 4, 0);
    let err = model
        .forward(&batch, tiny.layers_mut(), &Cpu::new())
        .unwrap_err();
    assert!(matches!(err, ModelError::Attention(_)), "{err}");

    // A cache with another block size is rejected too.
    let mut other = cache(&model, 8, 4);
    let err = model
        .forward(&batch, other.layers_mut(), &Cpu::new())
        .unwrap_err();
    assert!(matches!(err, ModelError::Attention(_)), "{err}");
}

#[test]
fn dense_forward_rejects_positions_beyond_the_model() {
    let model = model();
    let too_long = vec![2u32; model.spec().max_position_embeddings + 1];
    assert!(matches!(
        model.forward_dense(&[&too_long]),
        Err(ModelError::InvalidBatch(_))
    ));
    assert!(matches!(
        model.forward_dense(&[]),
        Err(ModelError::InvalidBatch(_))
    ));
}
