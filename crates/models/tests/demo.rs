//! The built-in demo model and tokenizer, and the random Llama used by benchmarks.

use candle_core::{DType, Device};
use models::{
    DEMO_BOS_ID, DEMO_EOS_ID, DEMO_MODEL_NAME, DEMO_VOCAB_SIZE, Family, LlamaShape, demo_model,
    demo_tokenizer, random_llama,
};

#[test]
fn demo_model_says_it_is_random_and_is_deterministic() {
    let a = demo_model(DType::F32, &Device::Cpu).unwrap();
    let b = demo_model(DType::F32, &Device::Cpu).unwrap();
    assert_eq!(a.spec().name, DEMO_MODEL_NAME);
    assert!(a.spec().name.contains("not meaningful"));
    assert_eq!(a.spec().family, Family::Llama);
    assert_eq!(a.spec().vocab_size, DEMO_VOCAB_SIZE);
    assert_eq!(a.spec().eos_token_ids, vec![DEMO_EOS_ID]);
    let tokens: &[u32] = &[DEMO_BOS_ID, 72, 101, 108, 108, 111];
    let la: Vec<Vec<f32>> = a.forward_dense(&[tokens]).unwrap().to_vec2().unwrap();
    let lb: Vec<Vec<f32>> = b.forward_dense(&[tokens]).unwrap().to_vec2().unwrap();
    assert_eq!(la, lb);
    assert!(la.iter().flatten().all(|v| v.is_finite()));
    // Different positions of the same input must differ, or attention/positions are broken.
    assert_ne!(la[3], la[4]);
}

#[test]
fn different_seeds_give_different_weights() {
    let shape = LlamaShape::demo();
    let a = random_llama(&shape, 1, DType::F32, &Device::Cpu, "a").unwrap();
    let b = random_llama(&shape, 2, DType::F32, &Device::Cpu, "b").unwrap();
    let tokens: &[u32] = &[5, 6, 7];
    let la: Vec<Vec<f32>> = a.forward_dense(&[tokens]).unwrap().to_vec2().unwrap();
    let lb: Vec<Vec<f32>> = b.forward_dense(&[tokens]).unwrap().to_vec2().unwrap();
    assert_ne!(la, lb);
}

#[test]
fn invalid_shapes_are_errors() {
    let odd_head = LlamaShape {
        hidden_size: 60,
        num_heads: 4,
        ..LlamaShape::demo()
    };
    assert!(random_llama(&odd_head, 0, DType::F32, &Device::Cpu, "x").is_err());
    let zero = LlamaShape {
        num_layers: 0,
        ..LlamaShape::demo()
    };
    assert!(random_llama(&zero, 0, DType::F32, &Device::Cpu, "x").is_err());
}

#[test]
fn bench_shape_has_about_95m_parameters() {
    let count = LlamaShape::bench_95m().parameter_count();
    assert!((94_000_000..96_000_000).contains(&count), "{count}");
}

#[test]
fn demo_tokenizer_round_trips_bytes_and_adds_bos() {
    let tokenizer = demo_tokenizer().unwrap();
    assert_eq!(tokenizer.tokenizer.get_vocab_size(true), DEMO_VOCAB_SIZE);
    assert_eq!(tokenizer.bos.as_ref().map(|t| t.id), Some(DEMO_BOS_ID));
    assert_eq!(tokenizer.eos.as_ref().map(|t| t.id), Some(DEMO_EOS_ID));
    for text in [
        "Hello, world!",
        "  spaces\tand\nnewlines ",
        "ünïcödé ✓ 🚀",
        "",
    ] {
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(ids[0], DEMO_BOS_ID);
        assert_eq!(ids.len(), 1 + text.len(), "one token per byte of {text:?}");
        assert!(ids.iter().all(|&id| (id as usize) < DEMO_VOCAB_SIZE));
        assert_eq!(tokenizer.decode(&ids).unwrap(), text);
    }
    assert_eq!(tokenizer.encode("A").unwrap(), vec![DEMO_BOS_ID, 2 + 65]);
    assert!(tokenizer.chat_template.is_some());
}
