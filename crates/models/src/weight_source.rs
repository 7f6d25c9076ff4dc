//! Where weights come from: a checkpoint on disk or a deterministic random initialisation.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::Checkpoint;
use crate::error::Result;

/// How a weight is initialised when it is not read from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Init {
    /// Uniform noise with mean 0 and the given standard deviation.
    Noise(f64),
    /// All ones (norm scales).
    Ones,
    /// All zeros (biases).
    Zeros,
}

/// A provider of named weights of known shape, already in the model's dtype and on its device.
pub(crate) trait WeightSource {
    /// The tensor `name` of shape `shape`; `init` is used only by sources that invent weights.
    fn tensor(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor>;

    /// Whether the source has `name` (random sources have every name).
    fn contains(&self, name: &str) -> bool;
}

/// Weights read from a checkpoint and converted to `dtype` on `device`.
pub(crate) struct CheckpointSource<'a> {
    pub(crate) checkpoint: &'a Checkpoint,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
}

impl WeightSource for CheckpointSource<'_> {
    fn tensor(&self, name: &str, shape: &[usize], _init: Init) -> Result<Tensor> {
        self.checkpoint.load(name, shape, self.dtype, &self.device)
    }

    fn contains(&self, name: &str) -> bool {
        self.checkpoint.contains(name)
    }
}

/// Deterministic pseudo-random weights: each tensor's values depend only on the seed and the
/// tensor's name, never on the order in which tensors are requested.
pub(crate) struct RandomSource {
    pub(crate) seed: u64,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
}

impl WeightSource for RandomSource {
    fn tensor(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let count: usize = shape.iter().product();
        let tensor = match init {
            Init::Ones => Tensor::ones(shape, DType::F32, &self.device)?,
            Init::Zeros => Tensor::zeros(shape, DType::F32, &self.device)?,
            Init::Noise(std) => {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ fnv1a(name));
                // A uniform distribution on [-a, a] has standard deviation a / sqrt(3).
                let half_width = (std * 3f64.sqrt()) as f32;
                let values: Vec<f32> = (0..count)
                    .map(|_| rng.random_range(-half_width..=half_width))
                    .collect();
                Tensor::from_vec(values, shape, &self.device)?
            }
        };
        Ok(tensor.to_dtype(self.dtype)?)
    }

    fn contains(&self, _name: &str) -> bool {
        true
    }
}

/// 64-bit FNV-1a, a stable hash (unlike `DefaultHasher`, fixed across Rust releases).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
