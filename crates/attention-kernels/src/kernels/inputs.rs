//! The slice-level inputs of an attention kernel and their validation, shared by the fast and the
//! reference kernels.

use crate::cache::KvPlanes;
use crate::element::KvElement;
use crate::error::{KernelError, Result};
use crate::metadata::{AttnMetadata, AttnParams};
use crate::spec::CacheGeometry;

/// Everything an attention kernel reads. Kernels call [`AttnInputs::validate`] before touching data.
///
/// `query` is the packed batch `[num_tokens, num_heads, head_size]` in f32 (row-major); the output
/// has the same shape.
#[derive(Debug, Clone, Copy)]
pub struct AttnInputs<'a, T> {
    /// Packed queries, `meta.num_tokens() × num_heads × geometry.head_size` elements.
    pub query: &'a [f32],
    /// Query heads; a multiple of `geometry.num_kv_heads`.
    pub num_heads: usize,
    /// The layer's K and V planes, each `geometry.plane_len()` elements.
    pub planes: &'a KvPlanes<T>,
    /// The layer's plane shape.
    pub geometry: CacheGeometry,
    /// The step's sequences and block tables.
    pub meta: &'a AttnMetadata,
    /// Scale, kv heads, sliding window and ALiBi slopes.
    pub params: &'a AttnParams,
}

impl<T: KvElement> AttnInputs<'_, T> {
    /// Checks every size, id and parameter against each other and against `out_len`.
    pub fn validate(&self, out_len: usize) -> Result<()> {
        if self.geometry.head_size == 0 || self.geometry.num_kv_heads == 0 {
            return Err(KernelError::InvalidShape(
                "head_size and num_kv_heads must be at least 1".into(),
            ));
        }
        self.params.check(self.num_heads, &self.geometry)?;
        self.meta.check_against(&self.geometry)?;
        let plane_len = self.geometry.plane_len();
        if self.planes.key().len() != plane_len || self.planes.value().len() != plane_len {
            return Err(KernelError::InvalidShape(format!(
                "planes hold {} elements, the geometry needs {plane_len}",
                self.planes.key().len()
            )));
        }
        let expected = self.meta.num_tokens() * self.row_len();
        if self.query.len() != expected || out_len != expected {
            return Err(KernelError::InvalidShape(format!(
                "query/output hold {}/{out_len} elements, {} tokens need {expected}",
                self.query.len(),
                self.meta.num_tokens()
            )));
        }
        Ok(())
    }

    /// Elements of one packed row: `num_heads × head_size`.
    pub fn row_len(&self) -> usize {
        self.num_heads * self.geometry.head_size
    }

    /// Query heads per kv head.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.geometry.num_kv_heads
    }
}

/// The range of key positions visible from query position `pos`: `lo..=pos` where
/// `lo = pos + 1 − window` (clamped at 0) with a sliding window, else 0.
pub(crate) fn visible_keys(pos: usize, sliding_window: Option<usize>) -> std::ops::Range<usize> {
    let lo = sliding_window.map_or(0, |w| (pos + 1).saturating_sub(w));
    lo..pos + 1
}
