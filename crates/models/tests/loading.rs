//! Loading Hugging Face directories: both config spellings, sharded checkpoints, dtype conversion,
//! generation and tokenizer settings, and a clear error for every broken input.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{fixture_dir, fixture_model, row_error, rows};
use models::{
    Family, GenerationConfig, LoadOptions, ModelConfig, ModelError, ModelTokenizer, PositionScheme,
    RopeScaling, demo_tokenizer, load_model,
};

/// A fresh scratch directory holding a copy of the fixture `family` (or nothing).
fn scratch(name: &str, family: Option<&str>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vellum-models-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(family) = family {
        for entry in std::fs::read_dir(fixture_dir(family)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    dir
}

fn f32_options() -> LoadOptions {
    LoadOptions {
        dtype: Some(DType::F32),
        ..LoadOptions::default()
    }
}

fn load_err(dir: &Path) -> ModelError {
    load_model(dir, &f32_options()).expect_err("load should fail")
}

fn tensors_of(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

const OLD_STYLE: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
  "vocab_size": 256, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
  "rope_theta": 500000.0, "torch_dtype": "bfloat16", "eos_token_id": [7, 9],
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 128}
}"#;

const NEW_STYLE: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
  "vocab_size": 256, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
  "dtype": "bfloat16", "eos_token_id": [7, 9],
  "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 128}
}"#;

fn parse(text: &str) -> models::Result<ModelConfig> {
    ModelConfig::from_json_str(Path::new("config.json"), text)
}

#[test]
fn old_and_transformers5_config_keys_give_the_same_config() {
    let old = parse(OLD_STYLE).unwrap();
    let new = parse(NEW_STYLE).unwrap();
    assert_eq!(old, new);
    assert_eq!(old.family, Family::Llama);
    assert_eq!(old.dtype, DType::BF16);
    assert_eq!(
        old.head_dim, 32,
        "explicit head_dim wins over hidden / heads"
    );
    assert_eq!(old.eos_token_ids, vec![7, 9]);
    assert_eq!(
        old.positions,
        PositionScheme::Rotary {
            theta: 500_000.0,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 128,
            }
        }
    );
}

#[test]
fn family_specific_keys_are_normalised() {
    let gpt2 = parse(
        r#"{"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2,
                         "n_positions": 16, "vocab_size": 50}"#,
    )
    .unwrap();
    assert_eq!(gpt2.family, Family::Gpt2);
    assert_eq!(
        gpt2.intermediate_size, 128,
        "n_inner defaults to 4 x n_embd"
    );
    assert!(gpt2.tie_word_embeddings);
    assert_eq!(gpt2.dtype, DType::F32, "no dtype key means f32");
    let mistral = parse(
        r#"{"architectures": ["MistralForCausalLM"], "hidden_size": 32,
                            "intermediate_size": 64, "num_hidden_layers": 1,
                            "num_attention_heads": 4, "vocab_size": 50,
                            "max_position_embeddings": 64, "sliding_window": null,
                            "torch_dtype": "float16"}"#,
    )
    .unwrap();
    assert_eq!(mistral.sliding_window, None);
    assert_eq!(mistral.num_kv_heads, 4, "kv heads default to query heads");
    assert_eq!(mistral.head_dim, 8);
    assert_eq!(mistral.dtype, DType::F16);
    let qwen = parse(&OLD_STYLE.replace("LlamaForCausalLM", "Qwen2ForCausalLM")).unwrap();
    assert!(qwen.qkv_bias && !qwen.o_bias);
}

#[test]
fn bad_configs_are_errors_naming_file_and_key() {
    let cases = [
        (
            OLD_STYLE.replace("LlamaForCausalLM", "FalconForCausalLM"),
            "FalconForCausalLM",
        ),
        (OLD_STYLE.replace("\"hidden_size\": 64,", ""), "hidden_size"),
        (
            OLD_STYLE.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"),
            "num_key_value_heads",
        ),
        (OLD_STYLE.replace("\"bfloat16\"", "\"int8\""), "torch_dtype"),
        (OLD_STYLE.replace("llama3", "yarn"), "rope_type"),
        (
            OLD_STYLE.replace("\"high_freq_factor\": 4.0,", ""),
            "high_freq_factor",
        ),
        (
            OLD_STYLE.replace("\"vocab_size\": 256", "\"vocab_size\": -1"),
            "vocab_size",
        ),
        (OLD_STYLE.replace("[7, 9]", "\"seven\""), "eos_token_id"),
        ("[1, 2]".to_string(), "not an object"),
        ("{not json".to_string(), "invalid JSON"),
    ];
    for (text, needle) in cases {
        let message = parse(&text).expect_err(needle).to_string();
        assert!(
            message.contains(needle),
            "`{message}` should mention `{needle}`"
        );
        assert!(
            message.contains("config.json"),
            "`{message}` should name the file"
        );
    }
}

#[test]
fn unsupported_variants_are_refused_not_misread() {
    let opt350 = r#"{"architectures": ["OPTForCausalLM"], "hidden_size": 64, "ffn_dim": 96,
                     "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 50,
                     "max_position_embeddings": 64, "do_layer_norm_before": false}"#;
    assert!(
        parse(opt350)
            .unwrap_err()
            .to_string()
            .contains("do_layer_norm_before")
    );
    let qwen_window = OLD_STYLE
        .replace("LlamaForCausalLM", "Qwen2ForCausalLM")
        .replace(
            "\"head_dim\": 32,",
            "\"head_dim\": 32, \"use_sliding_window\": true,",
        );
    assert!(
        parse(&qwen_window)
            .unwrap_err()
            .to_string()
            .contains("use_sliding_window")
    );
}

#[test]
fn our_own_sharding_gives_the_single_file_logits() {
    let dir = scratch("shards", Some("llama"));
    let tensors = tensors_of(&dir);
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [("a.safetensors", first), ("b.safetensors", second)] {
        let shard: HashMap<&str, Tensor> = part
            .iter()
            .map(|n| (n.as_str(), tensors[*n].clone()))
            .collect();
        candle_core::safetensors::save(&shard, dir.join(file)).unwrap();
        for n in part {
            weight_map.insert((*n).clone(), file.into());
        }
    }
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let sharded = load_model(&dir, &f32_options()).unwrap();
    let single = fixture_model("llama");
    let tokens: &[u32] = &[3, 1, 4, 1, 5, 9, 2, 6];
    let a = rows(&sharded.forward_dense(&[tokens]).unwrap());
    let b = rows(&single.forward_dense(&[tokens]).unwrap());
    assert_eq!(a, b);

    std::fs::remove_file(dir.join("b.safetensors")).unwrap();
    match load_err(&dir) {
        ModelError::MissingFile { path } => assert!(path.ends_with("b.safetensors")),
        other => panic!("expected a missing shard, got {other}"),
    }
}

#[test]
fn dtype_is_converted_on_load() {
    let dir = fixture_dir("llama");
    let reference = fixture_model("llama");
    let tokens: &[u32] = &[10, 20, 30, 40, 50];
    let expected = rows(&reference.forward_dense(&[tokens]).unwrap());
    for dtype in [DType::F16, DType::BF16] {
        let options = LoadOptions {
            dtype: Some(dtype),
            ..LoadOptions::default()
        };
        let model = load_model(&dir, &options).unwrap();
        assert_eq!(model.spec().dtype, dtype);
        let logits = model.forward_dense(&[tokens]).unwrap();
        assert_eq!(logits.dtype(), DType::F32, "logits are always f32");
        for (ours, theirs) in rows(&logits).iter().zip(&expected) {
            let (worst, scale) = row_error(ours, theirs);
            assert!(worst > 0.0, "{dtype:?} should round the weights");
            assert!(
                worst <= 0.1 * scale,
                "{dtype:?}: error {worst} vs scale {scale}"
            );
        }
    }
    // Without an explicit dtype the checkpoint's own (GPT-2 fixture: float16) is kept.
    let gpt2 = load_model(&fixture_dir("gpt2"), &LoadOptions::default()).unwrap();
    assert_eq!(gpt2.spec().dtype, DType::F16);
}

#[test]
fn missing_files_are_named() {
    let empty = scratch("empty", None);
    match load_err(&empty) {
        ModelError::MissingFile { path } => assert!(path.ends_with("config.json")),
        other => panic!("expected missing config.json, got {other}"),
    }
    let no_weights = scratch("no-weights", Some("opt"));
    std::fs::remove_file(no_weights.join("model.safetensors")).unwrap();
    match load_err(&no_weights) {
        ModelError::MissingFile { path } => assert!(path.ends_with("model.safetensors")),
        other => panic!("expected missing weights, got {other}"),
    }
    let corrupt = scratch("corrupt", Some("opt"));
    std::fs::write(corrupt.join("model.safetensors"), b"not a checkpoint").unwrap();
    assert!(matches!(load_err(&corrupt), ModelError::Safetensors { .. }));
}

#[test]
fn missing_tensor_and_wrong_shape_are_named() {
    let dir = scratch("tensors", Some("gpt2"));
    let mut tensors = tensors_of(&dir);
    let victim = "transformer.h.1.mlp.c_fc.weight";
    tensors.remove(victim);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    match load_err(&dir) {
        ModelError::MissingTensor { name, files } => {
            assert_eq!(name, victim);
            assert!(files.contains("model.safetensors"));
        }
        other => panic!("expected a missing tensor, got {other}"),
    }

    let mut tensors = tensors_of(&scratch("unused", Some("gpt2")));
    let name = "transformer.h.0.attn.c_attn.weight";
    let narrowed = tensors[name]
        .narrow(1, 0, 190)
        .unwrap()
        .contiguous()
        .unwrap();
    tensors.insert(name.to_string(), narrowed);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    match load_err(&dir) {
        ModelError::ShapeMismatch {
            name: found,
            expected,
            actual,
            path,
        } => {
            assert_eq!(found, name);
            assert_eq!(expected, vec![64, 192]);
            assert_eq!(actual, vec![64, 190]);
            assert!(path.ends_with("model.safetensors"));
        }
        other => panic!("expected a shape mismatch, got {other}"),
    }
}

#[test]
fn untied_head_must_be_present_and_base_model_prefixes_are_found() {
    let dir = scratch("prefix", Some("gpt2"));
    // GPT-2 checkpoints on the Hub are often saved without the `transformer.` prefix.
    let tensors: HashMap<String, Tensor> = tensors_of(&dir)
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("transformer.").to_string(), v))
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let unprefixed = load_model(&dir, &f32_options()).unwrap();
    let tokens: &[u32] = &[1, 2, 3];
    assert_eq!(
        rows(&unprefixed.forward_dense(&[tokens]).unwrap()),
        rows(&fixture_model("gpt2").forward_dense(&[tokens]).unwrap())
    );

    let untied = scratch("untied", Some("qwen2"));
    let config = std::fs::read_to_string(untied.join("config.json")).unwrap();
    let config = config.replace(
        "\"tie_word_embeddings\": true",
        "\"tie_word_embeddings\": false",
    );
    std::fs::write(untied.join("config.json"), config).unwrap();
    match load_err(&untied) {
        ModelError::MissingTensor { name, .. } => assert_eq!(name, "lm_head.weight"),
        other => panic!("expected a missing lm_head, got {other}"),
    }
}

#[test]
fn generation_config_supplies_one_or_several_eos_ids() {
    assert_eq!(
        GenerationConfig::from_dir(&fixture_dir("llama"))
            .unwrap()
            .eos_token_ids,
        vec![2, 3]
    );
    assert_eq!(fixture_model("mistral").spec().eos_token_ids, vec![2]);
    let dir = scratch("no-generation-config", Some("opt"));
    std::fs::remove_file(dir.join("generation_config.json")).unwrap();
    assert_eq!(
        GenerationConfig::from_dir(&dir).unwrap(),
        GenerationConfig::default()
    );
    let model = load_model(&dir, &f32_options()).unwrap();
    assert_eq!(
        model.spec().eos_token_ids,
        vec![2],
        "falls back to config.json"
    );
    std::fs::write(
        dir.join("generation_config.json"),
        "{\"eos_token_id\": [1, \"x\"]}",
    )
    .unwrap();
    assert!(load_err(&dir).to_string().contains("eos_token_id"));
}

fn write_tokenizer_dir(name: &str, settings: &str) -> PathBuf {
    let dir = scratch(name, None);
    demo_tokenizer()
        .unwrap()
        .tokenizer
        .save(dir.join("tokenizer.json"), false)
        .unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), settings).unwrap();
    dir
}

#[test]
fn tokenizer_settings_are_read() {
    let dir = write_tokenizer_dir(
        "tokenizer",
        r#"{"bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>",
            "add_bos_token": true, "chat_template": "{{ messages }}"}"#,
    );
    let tokenizer = ModelTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tokenizer.bos.as_ref().map(|t| t.id), Some(0));
    assert_eq!(tokenizer.eos.as_ref().map(|t| t.id), Some(1));
    assert!(tokenizer.add_bos_token);
    assert_eq!(tokenizer.chat_template.as_deref(), Some("{{ messages }}"));
    let ids = tokenizer.encode("hi").unwrap();
    assert_eq!(ids[0], 0, "BOS is prepended");
    assert_eq!(ids.len(), 3);
    assert_eq!(tokenizer.decode(&ids).unwrap(), "hi");

    let named = write_tokenizer_dir(
        "tokenizer-named",
        r#"{"add_bos_token": false, "bos_token": "<s>",
            "chat_template": [{"name": "tool_use", "template": "T"},
                              {"name": "default", "template": "D"}]}"#,
    );
    let tokenizer = ModelTokenizer::from_dir(&named).unwrap();
    assert_eq!(tokenizer.chat_template.as_deref(), Some("D"));
    assert_eq!(
        tokenizer.encode("hi").unwrap().len(),
        2,
        "no BOS when add_bos_token is false"
    );
}

#[test]
fn tokenizer_errors_name_the_file() {
    let missing = scratch("no-tokenizer", None);
    match ModelTokenizer::from_dir(&missing).unwrap_err() {
        ModelError::MissingFile { path } => assert!(path.ends_with("tokenizer.json")),
        other => panic!("expected a missing tokenizer, got {other}"),
    }
    let unknown = write_tokenizer_dir("tokenizer-unknown", r#"{"eos_token": "<|end|>"}"#);
    let message = ModelTokenizer::from_dir(&unknown).unwrap_err().to_string();
    assert!(message.contains("<|end|>") && message.contains("tokenizer_config.json"));
    let broken = scratch("tokenizer-broken", None);
    std::fs::write(broken.join("tokenizer.json"), "{}").unwrap();
    assert!(matches!(
        ModelTokenizer::from_dir(&broken).unwrap_err(),
        ModelError::Tokenizer { .. }
    ));
}
