//! Slice-level kernels: they read and write plain typed memory so that backends, tests and
//! benchmarks can all drive them directly.

pub mod cache_ops;
pub mod inputs;
pub mod paged;
pub mod plan;
mod prefetch;
pub use prefetch::{LINE_BYTES, prefetch_line};
pub mod reference;
pub mod simd;
mod tile;
pub mod vector_math;
