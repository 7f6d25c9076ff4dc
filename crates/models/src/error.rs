//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
///
/// Every variant that concerns a file names it, and every variant that concerns a weight names the
/// tensor, so a user can find the broken piece of a checkpoint without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file the loader needs does not exist.
    #[error("missing file {path}")]
    MissingFile {
        /// The path that was looked up.
        path: PathBuf,
    },
    /// A file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON (or not an object where one is required).
    #[error("invalid JSON in {path}: {message}")]
    InvalidJson {
        /// The file that failed to parse.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A configuration key is missing or holds a value of the wrong kind or range.
    #[error("{path}: key `{key}`: {message}")]
    InvalidConfig {
        /// The configuration file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// `config.json` names an architecture this crate does not implement.
    #[error("{path}: unknown architecture `{name}` (supported: Llama, Mistral, Qwen2, OPT, GPT-2)")]
    UnknownArchitecture {
        /// The configuration file.
        path: PathBuf,
        /// The architecture or model type found there.
        name: String,
    },
    /// A tensor the model needs is not in any of the checkpoint files.
    #[error("tensor `{name}` not found in {files}")]
    MissingTensor {
        /// The Hugging Face tensor name.
        name: String,
        /// The checkpoint files that were searched, comma-separated.
        files: String,
    },
    /// A tensor exists but has a different shape from the one the configuration implies.
    #[error("tensor `{name}` in {path}: expected shape {expected:?}, found {actual:?}")]
    ShapeMismatch {
        /// The Hugging Face tensor name.
        name: String,
        /// The file holding the tensor.
        path: PathBuf,
        /// The shape implied by `config.json`.
        expected: Vec<usize>,
        /// The shape stored in the file.
        actual: Vec<usize>,
    },
    /// A checkpoint file could not be opened or decoded as safetensors.
    #[error("cannot load safetensors {path}: {message}")]
    Safetensors {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The tokenizer files could not be loaded.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A requested model shape is unusable (a zero size, heads that do not divide the width).
    #[error("invalid model shape: {0}")]
    InvalidShape(String),
    /// A forward batch is inconsistent (lengths disagree, a token id or row is out of range).
    #[error("invalid forward batch: {0}")]
    InvalidBatch(String),
    /// The attention backend rejected its inputs or failed (cache geometry, metadata, dtype).
    #[error("attention: {0}")]
    Attention(#[from] attention_kernels::KernelError),
    /// A tensor operation failed inside candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, ModelError>;
