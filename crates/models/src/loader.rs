//! Loading a Hugging Face model directory: `config.json`, `generation_config.json` and the
//! safetensors weights (single or sharded), converted to the requested dtype.

use std::path::Path;

use candle_core::{DType, Device};

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::generation_config::GenerationConfig;
use crate::model::DecoderModel;
use crate::weight_source::CheckpointSource;

/// File name of the model configuration.
pub const CONFIG_FILE: &str = "config.json";

/// How to load a checkpoint.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The dtype to convert the weights to; `None` keeps the checkpoint's `dtype`/`torch_dtype`.
    pub dtype: Option<DType>,
    /// Where the weights live.
    pub device: Device,
}

impl Default for LoadOptions {
    /// The checkpoint's own dtype, on the CPU.
    fn default() -> Self {
        Self {
            dtype: None,
            device: Device::Cpu,
        }
    }
}

/// Loads the model in `dir`. The model's name is the directory's name; its EOS tokens come from
/// `generation_config.json` when that names any, else from `config.json` (likewise the BOS token).
pub fn load_model(dir: &Path, options: &LoadOptions) -> Result<DecoderModel> {
    let mut config = ModelConfig::from_file(&dir.join(CONFIG_FILE))?;
    let generation = GenerationConfig::from_dir(dir)?;
    if generation.bos_token_id.is_some() {
        config.bos_token_id = generation.bos_token_id;
    }
    let checkpoint = Checkpoint::open_dir(dir)?;
    let dtype = options.dtype.unwrap_or(config.dtype);
    let source = CheckpointSource {
        checkpoint: &checkpoint,
        dtype,
        device: options.device.clone(),
    };
    let eos_token_ids = if generation.eos_token_ids.is_empty() {
        config.eos_token_ids.clone()
    } else {
        generation.eos_token_ids
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    DecoderModel::build(&source, config, name, eos_token_ids, dtype, &options.device)
}
