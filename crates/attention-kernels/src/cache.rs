//! KV cache storage: typed per-layer K/V planes in the `[num_blocks, block_size, num_kv_heads,
//! head_size]` layout, whole-model pools, and the device + CPU swap pool pair.

use candle_core::{Device, Tensor};
use half::{bf16, f16};

use crate::element::{KvDtype, KvElement};
use crate::error::{KernelError, Result};
use crate::spec::{CacheGeometry, KvCacheSpec};

/// The K and V planes of one layer, both of length `geometry.plane_len()`, each starting on a
/// cache-line boundary.
#[derive(Debug)]
pub struct KvPlanes<T> {
    key: AlignedPlane<T>,
    value: AlignedPlane<T>,
}

impl<T: KvElement> KvPlanes<T> {
    /// Zero-filled planes of `len` elements each, their memory committed (see [`committed_plane`]).
    pub fn zeroed(len: usize) -> Self {
        Self {
            key: AlignedPlane::zeroed(len),
            value: AlignedPlane::zeroed(len),
        }
    }
    /// The key plane.
    pub fn key(&self) -> &[T] {
        self.key.as_slice()
    }
    /// The value plane.
    pub fn value(&self) -> &[T] {
        self.value.as_slice()
    }
    /// Both planes, mutably (key, value).
    pub fn planes_mut(&mut self) -> (&mut [T], &mut [T]) {
        (self.key.as_mut_slice(), self.value.as_mut_slice())
    }
}

/// Bytes a plane's first element is aligned to: one cache line, so that the kernels' 64-byte
/// loads of whole row pieces never straddle two lines (a split load costs two cache accesses;
/// a plain allocation of this size starts 16 bytes into a page).
const PLANE_ALIGN: usize = 64;

/// The elements of a committed zeroed buffer from its first [`PLANE_ALIGN`] boundary, all but
/// the [`AlignedPlane::PAD`] allocated to make room for that start.
#[derive(Debug)]
struct AlignedPlane<T> {
    buffer: Vec<T>,
    /// Index of the first element in `buffer`, below [`AlignedPlane::PAD`].
    start: usize,
}

impl<T: KvElement> AlignedPlane<T> {
    /// Elements allocated beyond the plane's length: one cache line's worth.
    const PAD: usize = PLANE_ALIGN / std::mem::size_of::<T>();

    fn zeroed(len: usize) -> Self {
        let buffer = committed_plane::<T>(len + Self::PAD);
        // The allocation is aligned to at least the element size, so the gap is whole elements.
        let address = buffer.as_ptr() as usize;
        let start = (address.next_multiple_of(PLANE_ALIGN) - address) / std::mem::size_of::<T>();
        Self { buffer, start }
    }

    fn len(&self) -> usize {
        self.buffer.len() - Self::PAD
    }

    fn as_slice(&self) -> &[T] {
        &self.buffer[self.start..self.start + self.len()]
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        let range = self.start..self.start + self.len();
        &mut self.buffer[range]
    }
}

impl<T: KvElement> Clone for AlignedPlane<T> {
    fn clone(&self) -> Self {
        let mut copy = Self::zeroed(self.len());
        copy.as_mut_slice().copy_from_slice(self.as_slice());
        copy
    }
}

impl<T: KvElement> Clone for KvPlanes<T> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            value: self.value.clone(),
        }
    }
}

/// Planes are equal when their elements are (wherever each buffer happens to start).
impl<T: KvElement> PartialEq for KvPlanes<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key() && self.value() == other.value()
    }
}

/// A zero-filled plane of `len` elements whose memory is committed now: every page has been
/// written once. A fresh allocation is mapped lazily, so otherwise the serving steps that first
/// wrote each block paid the page faults (about 5 % of a serving run's CPU time), and a budget the
/// machine cannot back would fail mid-request rather than here. On Linux the plane asks for
/// transparent huge pages first, which commits it about three times faster (and streams faster:
/// benchmarks that compare with a streaming read allocate their buffer here too).
pub fn committed_plane<T: KvElement>(len: usize) -> Vec<T> {
    const PAGE_BYTES: usize = 4096;
    let mut plane = vec![T::default(); len];
    advise_huge_pages(&mut plane);
    let step = (PAGE_BYTES / std::mem::size_of::<T>()).max(1);
    for element in plane.iter_mut().step_by(step) {
        // SAFETY: `element` is a valid, aligned, exclusive reference into the plane. The store is
        // volatile because the compiler may otherwise drop it: the allocation is known zeroed.
        unsafe { std::ptr::write_volatile(element, T::default()) };
    }
    plane
}

/// Asks Linux to back the whole 2 MiB-aligned pages inside `plane` with transparent huge pages:
/// a hint, without effect where THP is off (or on other systems).
fn advise_huge_pages<T>(plane: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE_PAGE: usize = 2 << 20;
        let start = plane.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(plane);
        let first = start.next_multiple_of(HUGE_PAGE);
        let len = end.saturating_sub(first) / HUGE_PAGE * HUGE_PAGE;
        if len > 0 {
            // SAFETY: the range lies inside `plane`'s allocation; MADV_HUGEPAGE changes how the
            // kernel backs it, never its contents. A failure only means no huge pages.
            unsafe { libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = plane;
}

/// The typed storage of one layer; the variant is the cache dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerStorage {
    /// f32 planes.
    F32(KvPlanes<f32>),
    /// f16 planes.
    F16(KvPlanes<f16>),
    /// bf16 planes.
    Bf16(KvPlanes<bf16>),
}

/// Runs `$body` with `$planes` bound to the typed planes of a [`LayerStorage`] (by reference or
/// mutable reference, following the expression given), once per dtype: the one place that
/// matches the three variants for code generic over [`KvElement`].
///
/// ```
/// use attention_kernels::{KvDtype, LayerKvCache, KvCacheSpec, with_planes};
/// let spec = KvCacheSpec::new(1, 2, 64, 16, KvDtype::Bf16).unwrap();
/// let layer = LayerKvCache::zeroed(spec.geometry(4), KvDtype::Bf16);
/// let len = with_planes!(layer.storage(), planes => planes.key().len());
/// assert_eq!(len, 4 * 16 * 2 * 64);
/// ```
#[macro_export]
macro_rules! with_planes {
    ($storage:expr, $planes:ident => $body:expr) => {
        match $storage {
            $crate::LayerStorage::F32($planes) => $body,
            $crate::LayerStorage::F16($planes) => $body,
            $crate::LayerStorage::Bf16($planes) => $body,
        }
    };
}

impl LayerStorage {
    fn zeroed(dtype: KvDtype, len: usize) -> Self {
        match dtype {
            KvDtype::F32 => LayerStorage::F32(KvPlanes::zeroed(len)),
            KvDtype::F16 => LayerStorage::F16(KvPlanes::zeroed(len)),
            KvDtype::Bf16 => LayerStorage::Bf16(KvPlanes::zeroed(len)),
        }
    }

    /// The element type of the planes.
    pub fn dtype(&self) -> KvDtype {
        match self {
            LayerStorage::F32(_) => KvDtype::F32,
            LayerStorage::F16(_) => KvDtype::F16,
            LayerStorage::Bf16(_) => KvDtype::Bf16,
        }
    }
}

/// One layer's K and V cache. Invariant: both planes hold exactly `geometry().plane_len()` elements.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerKvCache {
    geometry: CacheGeometry,
    storage: LayerStorage,
}

impl LayerKvCache {
    /// A zero-filled layer cache of the given geometry and dtype.
    pub fn zeroed(geometry: CacheGeometry, dtype: KvDtype) -> Self {
        Self {
            geometry,
            storage: LayerStorage::zeroed(dtype, geometry.plane_len()),
        }
    }
    /// The plane shape.
    pub fn geometry(&self) -> CacheGeometry {
        self.geometry
    }
    /// The element type.
    pub fn dtype(&self) -> KvDtype {
        self.storage.dtype()
    }
    /// The typed planes.
    pub fn storage(&self) -> &LayerStorage {
        &self.storage
    }
    /// The typed planes, mutably. Replacing them with planes of another length or dtype is caught
    /// by [`Self::check_consistent`], which every kernel calls before touching the layer.
    pub fn storage_mut(&mut self) -> &mut LayerStorage {
        &mut self.storage
    }

    /// Checks that both planes hold `geometry().plane_len()` elements of `dtype`.
    pub fn check_consistent(&self, dtype: KvDtype) -> Result<()> {
        if self.dtype() != dtype {
            return Err(KernelError::DtypeMismatch {
                expected: dtype,
                found: self.dtype(),
            });
        }
        let expected = self.geometry.plane_len();
        let lengths = with_planes!(&self.storage, p => (p.key().len(), p.value().len()));
        if lengths != (expected, expected) {
            return Err(KernelError::InvalidShape(format!(
                "planes hold {lengths:?} elements, the geometry needs {expected}"
            )));
        }
        Ok(())
    }

    /// Copies the key plane into a candle tensor `[num_blocks, block_size, num_kv_heads, head_size]`
    /// of the cache dtype on the CPU.
    pub fn key_tensor(&self) -> Result<Tensor> {
        with_planes!(&self.storage, planes => plane_tensor(planes.key(), self.geometry))
    }

    /// Copies the value plane into a candle tensor of the same shape as [`Self::key_tensor`].
    pub fn value_tensor(&self) -> Result<Tensor> {
        with_planes!(&self.storage, planes => plane_tensor(planes.value(), self.geometry))
    }
}

fn plane_tensor<T: KvElement>(plane: &[T], g: CacheGeometry) -> Result<Tensor> {
    let shape = (g.num_blocks, g.block_size, g.num_kv_heads, g.head_size);
    Ok(Tensor::from_slice(plane, shape, &Device::Cpu)?)
}

/// A pool of `num_blocks` physical blocks for every layer of a model (the device pool or the CPU
/// swap pool: both are this type). Block id `b` addresses the same rows in every layer.
#[derive(Debug, Clone, PartialEq)]
pub struct KvCache {
    spec: KvCacheSpec,
    num_blocks: usize,
    layers: Vec<LayerKvCache>,
}

impl KvCache {
    /// A zero-filled pool of `num_blocks` blocks. Errors when the pool's element count overflows.
    pub fn new(spec: KvCacheSpec, num_blocks: usize) -> Result<Self> {
        let geometry = spec.geometry(num_blocks);
        num_blocks
            .checked_mul(geometry.block_stride())
            .ok_or_else(|| {
                KernelError::InvalidShape(format!("a pool of {num_blocks} blocks overflows"))
            })?;
        let layers = (0..spec.num_layers())
            .map(|_| LayerKvCache::zeroed(geometry, spec.dtype()))
            .collect();
        Ok(Self {
            spec,
            num_blocks,
            layers,
        })
    }

    /// Checks every layer with [`LayerKvCache::check_consistent`] against this pool's spec.
    pub fn check_consistent(&self) -> Result<()> {
        let geometry = self.spec.geometry(self.num_blocks);
        if self.layers.len() != self.spec.num_layers() {
            return Err(KernelError::InvalidShape(
                "layer count differs from the spec".into(),
            ));
        }
        self.layers.iter().try_for_each(|layer| {
            if layer.geometry != geometry {
                return Err(KernelError::InvalidShape(
                    "layer geometry differs from the pool".into(),
                ));
            }
            layer.check_consistent(self.spec.dtype())
        })
    }

    /// A pool holding as many blocks as fit in `budget_bytes` (K and V of all layers).
    pub fn with_budget(spec: KvCacheSpec, budget_bytes: usize) -> Result<Self> {
        Self::new(spec, spec.blocks_for_budget(budget_bytes))
    }

    /// The model-level spec.
    pub fn spec(&self) -> &KvCacheSpec {
        &self.spec
    }
    /// Number of physical blocks.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }
    /// All layers, in model order.
    pub fn layers(&self) -> &[LayerKvCache] {
        &self.layers
    }
    /// All layers, mutably.
    pub fn layers_mut(&mut self) -> &mut [LayerKvCache] {
        &mut self.layers
    }
    /// One layer, or an error when `index` is out of range.
    pub fn layer(&self, index: usize) -> Result<&LayerKvCache> {
        self.layers.get(index).ok_or(KernelError::OutOfRange {
            what: "layer",
            index: index as u64,
            limit: self.layers.len() as u64,
        })
    }
    /// One layer mutably, or an error when `index` is out of range.
    pub fn layer_mut(&mut self, index: usize) -> Result<&mut LayerKvCache> {
        let limit = self.layers.len() as u64;
        self.layers.get_mut(index).ok_or(KernelError::OutOfRange {
            what: "layer",
            index: index as u64,
            limit,
        })
    }
}

/// The device pool and the CPU swap pool of one engine, sized from two memory budgets.
///
/// Both pools share one spec, so [`crate::swap_blocks`] can move blocks between them.
#[derive(Debug, Clone, PartialEq)]
pub struct KvCachePools {
    /// The pool attention reads from.
    pub device: KvCache,
    /// The pool preempted sequences are swapped out to.
    pub cpu_swap: KvCache,
}

impl KvCachePools {
    /// Sizes both pools: `device_budget_bytes / bytes_per_block` and `swap_budget_bytes / bytes_per_block` blocks.
    pub fn from_budgets(
        spec: KvCacheSpec,
        device_budget_bytes: usize,
        swap_budget_bytes: usize,
    ) -> Result<Self> {
        Ok(Self {
            device: KvCache::with_budget(spec, device_budget_bytes)?,
            cpu_swap: KvCache::with_budget(spec, swap_budget_bytes)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_aligned<T: KvElement>(planes: &KvPlanes<T>) {
        for plane in [planes.key(), planes.value()] {
            assert_eq!(plane.as_ptr() as usize % PLANE_ALIGN, 0);
        }
    }

    #[test]
    fn planes_start_on_a_cache_line_and_clone_by_value() {
        for len in [1, 1000, 1 << 20] {
            let mut planes = KvPlanes::<bf16>::zeroed(len);
            assert_eq!(planes.key().len(), len);
            assert_eq!(planes.value().len(), len);
            assert_aligned(&planes);
            planes.planes_mut().1[len - 1] = bf16::ONE;
            let copy = planes.clone();
            assert_aligned(&copy);
            assert_eq!(copy, planes);
            assert_eq!(copy.value()[len - 1], bf16::ONE);
            assert_ne!(copy, KvPlanes::zeroed(len));
        }
        assert_aligned(&KvPlanes::<f32>::zeroed(4096));
    }
}
