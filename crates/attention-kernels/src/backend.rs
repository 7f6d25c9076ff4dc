//! The [`AttentionBackend`] trait that models call once per layer per step, and the tensor glue
//! shared by its implementations.

use candle_core::{CpuStorage, DType, Storage, Tensor};

use crate::cache::LayerKvCache;
use crate::element::{KvDtype, KvElement};
use crate::error::{KernelError, Result};
use crate::kernels::cache_ops::write_layer_kv;
use crate::kernels::inputs::AttnInputs;
use crate::metadata::{AttnMetadata, AttnParams};
use crate::with_planes;

/// Writes K/V into the paged cache and runs attention over it for one layer of one step.
///
/// Tensors are `[num_tokens, heads, head_size]` (packed rows, any of f32/f16/bf16, any device
/// candle can copy to the host). `attend` returns a tensor of the query's shape, dtype and device.
pub trait AttentionBackend: Send + Sync {
    /// A short name for logs and benchmark tables.
    fn name(&self) -> &'static str;

    /// Scatters row `i` of `key`/`value` (`[num_tokens, num_kv_heads, head_size]`) into slot
    /// `meta.slot_mapping()[i]` of `cache` (slot `-1` skipped), converting to the cache dtype.
    fn write_kv(
        &self,
        cache: &mut LayerKvCache,
        key: &Tensor,
        value: &Tensor,
        meta: &AttnMetadata,
    ) -> Result<()> {
        let g = cache.geometry();
        let rows = |t: &Tensor, f: &mut dyn FnMut(&[f32]) -> Result<()>| {
            with_rows(t, meta.num_tokens(), g.num_kv_heads, g.head_size, f)
        };
        rows(key, &mut |key| {
            rows(value, &mut |value| {
                write_layer_kv(cache, key, value, meta.slot_mapping())
            })
        })
    }

    /// Attention of the packed queries (`[num_tokens, num_heads, head_size]`) against the cache:
    /// each sequence's query rows attend causally to its cached and new keys.
    fn attend(
        &self,
        query: &Tensor,
        cache: &LayerKvCache,
        meta: &AttnMetadata,
        params: &AttnParams,
    ) -> Result<Tensor>;
}

/// A slice-level attention kernel, generic over the cache element type.
pub(crate) trait SliceKernel {
    /// Computes attention into `out` (f32, the query's shape).
    fn run<T: KvElement>(&self, inputs: &AttnInputs<'_, T>, out: &mut [f32]) -> Result<()>;
}

/// Shared body of `attend`: tensor → f32 rows, dtype dispatch, kernel, f32 rows → tensor.
pub(crate) fn attend_with(
    kernel: &impl SliceKernel,
    query: &Tensor,
    cache: &LayerKvCache,
    meta: &AttnMetadata,
    params: &AttnParams,
) -> Result<Tensor> {
    let geometry = cache.geometry();
    let (_, num_heads, _) = query.dims3()?;
    let shape = (meta.num_tokens(), num_heads, geometry.head_size);
    let mut out = vec![0.0f32; shape.0 * shape.1 * shape.2];
    with_rows(query, shape.0, num_heads, shape.2, &mut |rows| {
        with_planes!(cache.storage(), planes => {
            let inputs = AttnInputs { query: rows, num_heads, planes, geometry, meta, params };
            kernel.run(&inputs, &mut out)
        })
    })?;
    Ok(Tensor::from_vec(out, shape, query.device())?.to_dtype(query.dtype())?)
}

/// Calls `f` with the rows of a `[rows, heads, head_size]` tensor as packed f32, after checking
/// shape and dtype. A contiguous f32 tensor on the CPU is lent in place; any other is converted
/// into a copy first.
fn with_rows<R>(
    tensor: &Tensor,
    rows: usize,
    heads: usize,
    head_size: usize,
    f: &mut dyn FnMut(&[f32]) -> Result<R>,
) -> Result<R> {
    if KvDtype::from_candle(tensor.dtype()).is_none() {
        return Err(KernelError::UnsupportedDtype(tensor.dtype()));
    }
    if tensor.dims() != [rows, heads, head_size] {
        return Err(KernelError::InvalidShape(format!(
            "tensor of shape {:?}, expected [{rows}, {heads}, {head_size}]",
            tensor.dims()
        )));
    }
    if let Some(result) = with_f32_slice(tensor, &mut *f) {
        return result;
    }
    let copy = tensor
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    f(&copy)
}

/// Runs `f` on the elements of `tensor`, lent in place, when it is a contiguous f32 tensor on
/// the CPU; `None` (and `f` not called) otherwise. The kernels' backends and the models' own f32
/// loops borrow candle's buffers through this one function.
pub fn with_f32_slice<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = tensor.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) => Some(f(&data[start..end])),
        _ => None,
    }
}
