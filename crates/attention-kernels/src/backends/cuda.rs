//! The seam for a CUDA backend (feature `cuda`, off by default).
//!
//! A later issue fills this module, when a GPU is available to test on, with:
//! - a `Cuda` type implementing [`crate::AttentionBackend`] whose layer caches live in device
//!   memory in the same `[num_blocks, block_size, num_kv_heads, head_size]` layout;
//! - kernels for `reshape_and_cache`, paged decode (v1/v2 partitioned) and prefill over cached
//!   context, `copy_blocks` (one launch for all layers and pairs) and `swap_blocks`
//!   (host ↔ device copies), launched on candle's stream through its re-exported cudarc;
//! - parity tests against [`crate::Reference`] identical to the CPU backend's.
//!
//! Until then the feature compiles only [`cuda_backend`], which reports that no CUDA kernels exist.

use crate::backend::AttentionBackend;
use crate::error::{KernelError, Result};

/// The CUDA attention backend. Currently always [`KernelError::BackendUnavailable`].
pub fn cuda_backend() -> Result<Box<dyn AttentionBackend>> {
    Err(KernelError::BackendUnavailable(
        "the CUDA kernels are not built yet",
    ))
}
