//! Shared test fixtures: a byte-level tokenizer built in code and a deterministic toy model.
#![allow(dead_code)]

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sampling::{ModelContext, SamplingParams, TokenId, ValidatedParams};
use tokenizers::Tokenizer;

/// GPT-2's byte → printable-char table used by byte-level BPE vocabularies.
fn byte_to_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        char::from(b)
    } else {
        let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + rank).expect("valid char")
    }
}

fn byte_level(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_char(b)).collect()
}

/// The pieces of the test vocabulary, as raw bytes; id = position. Multi-byte characters are
/// split across tokens: "é" = [C3][A9], "😀" = [F0 9F][98 80].
pub const PIECES: &[&[u8]] = &[
    b"Hello",    // 0
    b" world",   // 1
    b" ST",      // 2
    b"OP",       // 3
    b"!",        // 4
    b" caf",     // 5
    b"\xC3",     // 6
    b"\xA9",     // 7
    b"\xF0\x9F", // 8
    b"\x98\x80", // 9
    b" STOP",    // 10
    b" more",    // 11
    b"a",        // 12
    b"b",        // 13
];

/// Id of the special EOS token (an added token after the pieces).
pub const EOS: TokenId = PIECES.len() as TokenId + 1;
/// Id of the unknown token.
pub const UNK: TokenId = PIECES.len() as TokenId;
/// Vocabulary size of the toy model (tokenizer vocabulary).
pub const VOCAB: usize = PIECES.len() + 2;

pub fn tokenizer() -> Arc<Tokenizer> {
    let mut vocab = serde_json::Map::new();
    for (id, piece) in PIECES.iter().enumerate() {
        vocab.insert(byte_level(piece), serde_json::json!(id));
    }
    vocab.insert("<unk>".into(), serde_json::json!(UNK));
    vocab.insert("</s>".into(), serde_json::json!(EOS));
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{
            "id": EOS, "content": "</s>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }],
        "normalizer": null,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    Arc::new(json.to_string().parse().expect("tokenizer json"))
}

pub fn model(vocab_size: usize, eos: &[TokenId], max_model_len: usize) -> Arc<ModelContext> {
    Arc::new(ModelContext {
        tokenizer: tokenizer(),
        eos_token_ids: eos.to_vec(),
        max_model_len,
        vocab_size,
    })
}

pub fn validated(params: SamplingParams) -> ValidatedParams {
    params.validate().expect("valid params").0
}

/// A deterministic "model": logits are a pure function of the whole token sequence.
pub fn toy_logits(seq: &[TokenId], vocab: usize, salt: u64) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for &t in seq {
        h = (h ^ u64::from(t)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(h);
    (0..vocab).map(|_| rng.random_range(-3.0f32..3.0)).collect()
}

/// Sequential engine ids starting at `first`.
pub fn id_counter(first: u64) -> impl FnMut() -> u64 {
    let mut next = first;
    move || {
        next += 1;
        next - 1
    }
}
