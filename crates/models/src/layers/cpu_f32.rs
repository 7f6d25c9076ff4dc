//! Borrowing a candle tensor's elements in place, for the layers' own CPU loops.

use candle_core::{CpuStorage, DType, Storage, Tensor};

/// Runs `f` on the elements of `tensor`, lent in place, when it is a contiguous f32 tensor on
/// the CPU; `None` (and `f` not called) otherwise.
pub(crate) fn with_f32_slice<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if tensor.dtype() != DType::F32 {
        return None;
    }
    let (storage, layout) = tensor.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) => Some(f(&data[start..end])),
        _ => None,
    }
}
