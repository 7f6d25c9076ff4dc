//! Safetensors checkpoints: one file or a sharded set, memory-mapped, with shape-checked loads.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};
use crate::json_file::JsonFile;

/// File name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of a sharded checkpoint's index.
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// The memory-mapped safetensors files of one checkpoint.
///
/// Invariant: `routing` maps every tensor name found in the file headers to the index of the
/// file (in `files` and `maps`) that holds it.
pub struct Checkpoint {
    files: Vec<PathBuf>,
    maps: Vec<MmapedSafetensors>,
    routing: HashMap<String, usize>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("files", &self.files)
            .field("tensors", &self.routing.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens the checkpoint of a Hugging Face directory: the shards listed in
    /// `model.safetensors.index.json` when it exists, else `model.safetensors`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index_path = dir.join(SHARD_INDEX);
        if index_path.exists() {
            let index = JsonFile::read(&index_path)?;
            let map = index
                .get("weight_map")
                .and_then(|v| v.as_object())
                .ok_or_else(|| index.invalid("weight_map", "missing or not an object"))?;
            let mut shards = BTreeSet::new();
            for (tensor, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    index.invalid(
                        "weight_map",
                        format!("`{tensor}` does not map to a file name"),
                    )
                })?;
                shards.insert(dir.join(file));
            }
            Self::open_files(&shards.into_iter().collect::<Vec<_>>())
        } else {
            Self::open_files(&[dir.join(SINGLE_FILE)])
        }
    }

    /// Memory-maps the given safetensors files; a tensor found in several files is taken from
    /// the last one.
    pub fn open_files(files: &[PathBuf]) -> Result<Self> {
        let mut maps = Vec::with_capacity(files.len());
        let mut routing = HashMap::new();
        for (index, path) in files.iter().enumerate() {
            if !path.exists() {
                return Err(ModelError::MissingFile { path: path.clone() });
            }
            // SAFETY: the mapping is read-only; like every memory-mapped loader we rely on the
            // checkpoint file not being truncated or rewritten while the model is loaded.
            let map =
                unsafe { MmapedSafetensors::new(path) }.map_err(|e| ModelError::Safetensors {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            for (name, _) in map.tensors() {
                routing.insert(name, index);
            }
            maps.push(map);
        }
        Ok(Self {
            files: files.to_vec(),
            maps,
            routing,
        })
    }

    /// Whether a tensor of this name exists in any file.
    pub fn contains(&self, name: &str) -> bool {
        self.routing.contains_key(name)
    }

    /// The files of this checkpoint, in load order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Loads `name`, checks that its shape is `shape` and converts it to `dtype` on `device`.
    pub fn load(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let &index = self
            .routing
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                files: self
                    .files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let path = &self.files[index];
        let decode_error = |e: candle_core::Error| ModelError::Safetensors {
            path: path.clone(),
            message: format!("tensor `{name}`: {e}"),
        };
        let view = self.maps[index].get(name).map_err(decode_error)?;
        if view.shape() != shape {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                path: path.clone(),
                expected: shape.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        let tensor = view.load(device).map_err(decode_error)?;
        Ok(tensor.to_dtype(dtype)?)
    }
}
