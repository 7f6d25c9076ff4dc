//! `generation_config.json`: the end-of-sequence tokens (one or several) and the BOS token.

use std::path::Path;

use crate::error::Result;
use crate::json_file::JsonFile;

/// File name of the generation defaults.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

/// The generation defaults a checkpoint ships with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerationConfig {
    /// Beginning-of-sequence token, if named.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens; empty when the file names none.
    pub eos_token_ids: Vec<u32>,
}

impl GenerationConfig {
    /// Reads `generation_config.json` from `dir`; the defaults (nothing named) when the file is
    /// absent, an error when it exists but is malformed.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        match JsonFile::read_optional(&dir.join(GENERATION_CONFIG_FILE))? {
            None => Ok(Self::default()),
            Some(json) => Ok(Self {
                bos_token_id: json.token_ids("bos_token_id")?.first().copied(),
                eos_token_ids: json.token_ids("eos_token_id")?,
            }),
        }
    }
}
