//! The building blocks of the shared decoder: each file is one layer kind.

pub(crate) mod attention;
pub(crate) mod block;
pub(crate) mod embedding;
pub(crate) mod linear;
pub(crate) mod mlp;
pub(crate) mod norm;
#[cfg(target_arch = "x86_64")]
pub(crate) mod packed;
pub(crate) mod rotary;
