//! Reading a JSON object from disk with typed accessors whose errors name the file and the key.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{ModelError, Result};

/// A parsed JSON object together with the path it came from.
///
/// Invariant: `object` is the top-level object of the file at `path`.
#[derive(Debug, Clone)]
pub(crate) struct JsonFile {
    path: PathBuf,
    object: Map<String, Value>,
}

impl JsonFile {
    /// Reads and parses `path`, which must hold a JSON object.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let text = read_text(path)?;
        Self::parse(path, &text)
    }

    /// Reads `path` if it exists; `Ok(None)` when it does not.
    pub(crate) fn read_optional(path: &Path) -> Result<Option<Self>> {
        if path.exists() {
            Self::read(path).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Parses `text` as the contents of `path`.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| ModelError::InvalidJson {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        match value {
            Value::Object(object) => Ok(Self {
                path: path.to_path_buf(),
                object,
            }),
            _ => Err(ModelError::InvalidJson {
                path: path.to_path_buf(),
                message: "the top level is not an object".into(),
            }),
        }
    }

    /// The file this object was read from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The raw value of `key`, treating JSON `null` as absent.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.object.get(key).filter(|v| !v.is_null())
    }

    /// An error about `key` in this file.
    pub(crate) fn invalid(&self, key: &str, message: impl Into<String>) -> ModelError {
        ModelError::InvalidConfig {
            path: self.path.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// The first of `keys` that is present, as a non-negative integer.
    pub(crate) fn usize_any(&self, keys: &[&str]) -> Result<Option<usize>> {
        for key in keys {
            if let Some(v) = self.get(key) {
                return value_as_usize(v).map(Some).ok_or_else(|| {
                    self.invalid(key, format!("expected a non-negative integer, found {v}"))
                });
            }
        }
        Ok(None)
    }

    /// The first of `keys` that is present, as a positive integer; an error naming the first key
    /// when none is present or the value is zero.
    pub(crate) fn required_positive(&self, keys: &[&str]) -> Result<usize> {
        match self.usize_any(keys)? {
            Some(0) => Err(self.invalid(keys[0], "must be positive")),
            Some(v) => Ok(v),
            None => Err(self.invalid(keys[0], "missing")),
        }
    }

    /// `key` as a number, if present.
    pub(crate) fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.invalid(key, format!("expected a number, found {v}")))
            })
            .transpose()
    }

    /// `key` as a boolean, if present.
    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.invalid(key, format!("expected a boolean, found {v}")))
            })
            .transpose()
    }

    /// `key` as a string, if present.
    pub(crate) fn str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.invalid(key, format!("expected a string, found {v}")))
            })
            .transpose()
    }

    /// `key` as one token id or a list of token ids (the two forms Hugging Face uses for
    /// `eos_token_id`); empty when absent.
    pub(crate) fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        let bad =
            |v: &Value| self.invalid(key, format!("expected a token id or a list, found {v}"));
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| value_as_u32(v).ok_or_else(|| bad(v)))
                .collect(),
            Some(v) => value_as_u32(v).map(|id| vec![id]).ok_or_else(|| bad(v)),
        }
    }

    /// A nested object under `key`, if present.
    pub(crate) fn object(&self, key: &str) -> Result<Option<JsonFile>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(object)) => Ok(Some(JsonFile {
                path: self.path.clone(),
                object: object.clone(),
            })),
            Some(v) => Err(self.invalid(key, format!("expected an object, found {v}"))),
        }
    }
}

/// Reads a whole text file, mapping a missing file and other I/O errors to [`ModelError`].
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| io_error(path, source))
}

/// Maps an I/O error on `path` to [`ModelError::MissingFile`] or [`ModelError::Io`].
pub(crate) fn io_error(path: &Path, source: std::io::Error) -> ModelError {
    if source.kind() == std::io::ErrorKind::NotFound {
        ModelError::MissingFile {
            path: path.to_path_buf(),
        }
    } else {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn value_as_usize(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|n| usize::try_from(n).ok())
}

fn value_as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}
