//! The error type of every fallible operation in the crate.

use crate::element::KvDtype;

/// Everything that can go wrong when sizing, writing or reading the paged KV cache.
///
/// Kernels validate their inputs up front and report the first violation; they never panic on
/// bad input and never write partial results after an error is detected.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A shape or size parameter is zero or otherwise unusable.
    #[error("invalid shape: {0}")]
    InvalidShape(String),
    /// The attention metadata contradicts itself (lengths, tables, ranges).
    #[error("invalid attention metadata: {0}")]
    InvalidMetadata(String),
    /// A block id or slot points outside the cache it is used with.
    #[error("{what} {index} is out of range (limit {limit})")]
    OutOfRange {
        /// What was indexed (block, slot, layer ...).
        what: &'static str,
        /// The offending index.
        index: u64,
        /// The exclusive upper bound.
        limit: u64,
    },
    /// Two caches (or a cache and a tensor) disagree on their element type.
    #[error("dtype mismatch: expected {expected:?}, found {found:?}")]
    DtypeMismatch {
        /// The dtype required by the operation.
        expected: KvDtype,
        /// The dtype supplied.
        found: KvDtype,
    },
    /// A tensor has a dtype that the KV cache cannot hold.
    #[error("unsupported tensor dtype {0:?} (f32, f16 and bf16 are supported)")]
    UnsupportedDtype(candle_core::DType),
    /// A block mapping for copy or swap is ambiguous (a destination written twice or read as a source).
    #[error("invalid block mapping: {0}")]
    InvalidMapping(String),
    /// The attention parameters are unusable (scale, head counts, window, ALiBi slopes).
    #[error("invalid attention parameters: {0}")]
    InvalidParams(String),
    /// The requested backend is not compiled in or not available on this machine.
    #[error("backend unavailable: {0}")]
    BackendUnavailable(&'static str),
    /// An error raised by candle while converting tensors.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, KernelError>;
