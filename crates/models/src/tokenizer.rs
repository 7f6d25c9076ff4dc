//! `tokenizer.json` plus `tokenizer_config.json`: special tokens, `add_bos_token` and the chat
//! template.

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{ModelError, Result};
use crate::json_file::JsonFile;

/// File name of the fast-tokenizer definition.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// File name of the tokenizer settings.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// A special token by text and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialToken {
    /// The token's text, e.g. `<s>`.
    pub text: String,
    /// Its id in the vocabulary.
    pub id: u32,
}

/// A tokenizer with the settings the server needs around it.
///
/// Invariant: `bos` and `eos`, when present, are tokens of `tokenizer`'s vocabulary.
#[derive(Clone)]
pub struct ModelTokenizer {
    /// The Hugging Face fast tokenizer.
    pub tokenizer: Tokenizer,
    /// Beginning-of-sequence token, if configured.
    pub bos: Option<SpecialToken>,
    /// End-of-sequence token, if configured.
    pub eos: Option<SpecialToken>,
    /// Whether prompts start with the BOS token.
    pub add_bos_token: bool,
    /// The Jinja chat template, if the checkpoint ships one.
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for ModelTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTokenizer")
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos_token", &self.add_bos_token)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish()
    }
}

impl ModelTokenizer {
    /// Loads `tokenizer.json` (required) and `tokenizer_config.json` (optional) from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.exists() {
            return Err(ModelError::MissingFile { path });
        }
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let settings = JsonFile::read_optional(&dir.join(TOKENIZER_CONFIG_FILE))?;
        Self::with_settings(tokenizer, settings.as_ref())
    }

    /// Combines a tokenizer with the parsed `tokenizer_config.json`, if any.
    pub(crate) fn with_settings(tokenizer: Tokenizer, settings: Option<&JsonFile>) -> Result<Self> {
        let Some(settings) = settings else {
            return Ok(Self {
                tokenizer,
                bos: None,
                eos: None,
                add_bos_token: false,
                chat_template: None,
            });
        };
        let special = |key: &str| -> Result<Option<SpecialToken>> {
            let Some(text) = token_text(settings, key)? else {
                return Ok(None);
            };
            let id = tokenizer.token_to_id(&text).ok_or_else(|| {
                settings.invalid(key, format!("`{text}` is not in the vocabulary"))
            })?;
            Ok(Some(SpecialToken { text, id }))
        };
        let bos = special("bos_token")?;
        let eos = special("eos_token")?;
        Ok(Self {
            add_bos_token: settings.bool("add_bos_token")?.unwrap_or(bos.is_some()),
            chat_template: chat_template(settings)?,
            bos,
            eos,
            tokenizer,
        })
    }

    /// Encodes `text` with the tokenizer's own special-token handling, then makes sure the ids
    /// start with BOS exactly when `add_bos_token` is set and a BOS token is known.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer {
                path: TOKENIZER_FILE.into(),
                message: e.to_string(),
            })?;
        let mut ids = encoding.get_ids().to_vec();
        if let (true, Some(bos)) = (self.add_bos_token, &self.bos)
            && ids.first() != Some(&bos.id)
        {
            ids.insert(0, bos.id);
        }
        Ok(ids)
    }

    /// Decodes `ids` to text, dropping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer {
                path: TOKENIZER_FILE.into(),
                message: e.to_string(),
            })
    }
}

/// A special token written either as a string or as an `AddedToken` object with `content`.
fn token_text(settings: &JsonFile, key: &str) -> Result<Option<String>> {
    match settings.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Object(token)) => match token.get("content") {
            Some(Value::String(text)) => Ok(Some(text.clone())),
            _ => Err(settings.invalid(key, "token object without a `content` string")),
        },
        Some(other) => Err(settings.invalid(key, format!("expected a token, found {other}"))),
    }
}

/// `chat_template` as a string, or the `default` entry (else the first) of a list of named
/// templates.
fn chat_template(settings: &JsonFile) -> Result<Option<String>> {
    const KEY: &str = "chat_template";
    match settings.get(KEY) {
        None => Ok(None),
        Some(Value::String(template)) => Ok(Some(template.clone())),
        Some(Value::Array(named)) => {
            let chosen = named
                .iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| named.first())
                .and_then(|entry| entry.get("template"))
                .and_then(Value::as_str);
            chosen
                .map(|t| Some(t.to_string()))
                .ok_or_else(|| settings.invalid(KEY, "no usable template in the list"))
        }
        Some(other) => Err(settings.invalid(KEY, format!("expected a string, found {other}"))),
    }
}
