//! Paged attention and KV-cache kernels for vellum, on the CPU.
//!
//! This crate owns the bytes of the KV cache and every kernel that touches them: writing a step's
//! new K/V rows into their slots (`reshape_and_cache`), paged attention for mixed batches of
//! decode tokens and prefill chunks over cached context, copy-on-write block copies
//! (`copy_blocks`) and swapping between the device pool and the CPU swap pool (`swap_blocks`).
//! Models call it through the [`AttentionBackend`] trait with candle tensors; tests and
//! benchmarks drive the slice-level kernels in [`kernels`] directly.
//!
//! **Layout.** Each layer has a K plane and a V plane, each `[num_blocks, block_size,
//! num_kv_heads, head_size]` row-major (NHD) in f32, f16 or bf16. The slot of position `p` of a
//! sequence is `table[p / block_size] × block_size + p % block_size`; slot `-1` is padding. Block
//! id `b` addresses the same rows in every layer.
//!
//! **Modules.**
//! - [`element`]: cache dtypes and their f32 conversions;
//! - [`spec`]: [`KvCacheSpec`] (sizing from a memory budget) and the per-layer [`CacheGeometry`];
//! - [`cache`]: typed storage — [`LayerKvCache`], the pool [`KvCache`], [`KvCachePools`];
//! - [`metadata`]: the packed batch description [`AttnMetadata`] and [`AttnParams`];
//! - [`kernels`]: cache maintenance, the fast paged kernel, its work planner, the f64 reference;
//! - [`backend`] and [`backends`]: the [`AttentionBackend`] trait, [`Reference`] and [`Cpu`]
//!   (and, behind the off-by-default `cuda` feature, the seam for a CUDA backend).
#![deny(missing_docs)]

pub mod backend;
pub mod backends;
pub mod cache;
pub mod element;
pub mod error;
pub mod kernels;
pub mod metadata;
pub mod spec;

pub use backend::{AttentionBackend, with_f32_slice};
pub use backends::cpu::Cpu;
pub use backends::reference::Reference;
pub use cache::{KvCache, KvCachePools, KvPlanes, LayerKvCache, LayerStorage, committed_plane};
pub use element::{KvDtype, KvElement};
pub use error::{KernelError, Result};
pub use kernels::cache_ops::{copy_blocks, reshape_and_cache, swap_blocks, write_layer_kv};
pub use kernels::inputs::AttnInputs;
pub use kernels::paged::{
    CpuKernelConfig, DECODE_LOOKAHEAD, decode_read_order, paged_attention, paged_attention_with,
};
pub use kernels::plan::PlanConfig;
pub use kernels::reference::reference_attention;
pub use kernels::simd::SimdLevel;
pub use kernels::vector_math::{silu_mul, sum_of_squares};
pub use kernels::{LINE_BYTES, prefetch_line};
pub use metadata::{AttnMetadata, AttnParams, SeqAttn};
pub use spec::{CacheGeometry, KvCacheSpec};
