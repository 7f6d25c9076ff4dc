//! Implementations of [`crate::AttentionBackend`].

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod reference;
