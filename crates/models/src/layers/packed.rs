//! The f32 matrix product of the linear layers on x86-64 CPUs with AVX-512F.
//!
//! candle's CPU matmul (the `gemm` crate, AVX2 on stable) repacks the weight on every call and
//! splits even a decode step's few rows across its thread pools, which on a small machine costs
//! more than it gains. Here a weight `[out, in]` is packed once, at load, into column panels of
//! [`PANEL`] outputs stored `[in][PANEL]`, so that a product streams each panel exactly once from
//! memory while a register tile of up to [`TILE_ROWS`] rows × [`PANEL`] columns accumulates
//! with AVX-512 FMAs over the whole inner dimension. Panels are shared out over rayon's pool,
//! which the attention kernels use too, so no second pool spins while the other works.
//!
//! With few rows (decode) a product is bound by streaming the weight from memory: the first tile
//! of a panel would wait on DRAM while the later ones run from L2. So while the tiles of one panel
//! compute, they prefetch the next panel into L2, spread evenly over all their iterations, which
//! overlaps the stream with the arithmetic (a 32-row decode step ran 1.3× faster on this
//! machine). With many rows the product is compute-bound, and with one tile (batch ≤ 6) there is
//! no arithmetic to hide the stream behind: both leave the prefetches out.

use std::arch::x86_64::{
    __m512, _MM_HINT_T1, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_mask_storeu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};
use std::sync::Arc;

use attention_kernels::with_f32_slice;
use candle_core::{DType, Device, Tensor};
use rayon::iter::{IntoParallelIterator, ParallelIterator};

use crate::error::Result;

/// Output columns per packed panel: four AVX-512 vectors of f32.
const PANEL: usize = 64;
/// AVX-512 f32 lanes.
const LANES: usize = 16;
/// Rows of the register tile: `TILE_ROWS × 4` accumulators plus four panel vectors fit in the 32
/// vector registers.
const TILE_ROWS: usize = 6;
/// f32 per cache line: a panel row of [`PANEL`] f32 is four lines.
const LINE: usize = 16;
/// Largest row count whose products prefetch the next panel (above it they are compute-bound);
/// the smallest is `TILE_ROWS + 1`.
const PREFETCH_MAX_ROWS: usize = 96;
/// Inner-dimension iterations between two batches of prefetches.
const PREFETCH_CHUNK: usize = 16;

/// A weight `[n, k]` packed for [`PackedWeight::matmul`]: panel `p` holds outputs
/// `p·PANEL .. p·PANEL + PANEL` as `data[(p·k + i)·PANEL + c] = weight[p·PANEL + c, i]`, with the
/// columns past `n` in the last panel zero.
///
/// Invariant: `data.len() == n.div_ceil(PANEL) · k · PANEL`; built only when the CPU has AVX-512F.
#[derive(Debug, Clone)]
pub(crate) struct PackedWeight {
    data: Arc<[f32]>,
    n: usize,
    k: usize,
}

impl PackedWeight {
    /// Packs `weight: [n, k]` when it is f32 on the CPU and this CPU has AVX-512F; `None`
    /// otherwise (the caller keeps candle's product).
    pub(crate) fn new(weight: &Tensor) -> Result<Option<Self>> {
        if weight.dtype() != DType::F32
            || !weight.device().is_cpu()
            || !std::arch::is_x86_feature_detected!("avx512f")
        {
            return Ok(None);
        }
        let (n, k) = weight.dims2()?;
        let rows = weight.to_vec2::<f32>()?;
        let panels = n.div_ceil(PANEL);
        let mut data = vec![0.0f32; panels * k * PANEL];
        for (j, row) in rows.iter().enumerate() {
            let (panel, column) = (j / PANEL, j % PANEL);
            let base = panel * k * PANEL + column;
            for (i, &w) in row.iter().enumerate() {
                data[base + i * PANEL] = w;
            }
        }
        Ok(Some(Self {
            data: data.into(),
            n,
            k,
        }))
    }

    /// `x · weightᵀ (+ bias)` for `x: [m, k]` f32 on the CPU, giving `[m, n]`.
    pub(crate) fn matmul(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (m, k) = x.dims2()?;
        if k != self.k || x.dtype() != DType::F32 {
            return Err(candle_core::Error::Msg(format!(
                "packed product of a {:?} {:?} input with a [{}, {}] f32 weight",
                x.dtype(),
                x.dims(),
                self.n,
                self.k
            ))
            .into());
        }
        let bias = match bias {
            Some(b) => Some(b.to_vec1::<f32>()?),
            None => None,
        };
        let x = x.contiguous()?;
        let out = with_f32_slice(&x, |a| self.product(a, m, bias.as_deref()))
            .ok_or_else(|| candle_core::Error::Msg("packed product of a non-CPU input".into()))?;
        Ok(Tensor::from_vec(out, (m, self.n), &Device::Cpu)?)
    }

    /// The `[m, n]` rows of `a · weightᵀ (+ bias)` for `a: [m, k]`.
    fn product(&self, a: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
        // Left uninitialised: the tiles write every element (all rows of every panel, the last
        // panel's tail columns by masked stores), so zeroing it first would be a wasted pass.
        let mut out: Vec<f32> = Vec::with_capacity(m * self.n);
        let out_addr = out.as_mut_ptr() as usize;
        let panels = self.n.div_ceil(PANEL);
        // One contiguous run of panels per worker, so each panel's successor is prefetched by the
        // thread that will use it; a worker that finishes early takes a slow one's run. The runs
        // go to rayon's pool, the one the attention kernels use, so no second pool spins while
        // the other works.
        let runs = rayon::current_num_threads().min(panels);
        (0..runs).into_par_iter().for_each(|run| {
            let own = run * panels / runs..(run + 1) * panels / runs;
            for panel in own.clone() {
                let prefetch_next = m > TILE_ROWS && m <= PREFETCH_MAX_ROWS && panel + 1 < own.end;
                // SAFETY: panels write disjoint columns of `out`, which outlives this call, and
                // `PackedWeight` exists only on CPUs with AVX-512F.
                unsafe { self.panel(a, m, panel, bias, out_addr as *mut f32, prefetch_next) };
            }
        });
        // SAFETY: every one of the `m · n` elements was written above (see the allocation).
        unsafe { out.set_len(m * self.n) };
        out
    }

    /// Computes columns `panel·PANEL ..` (at most `PANEL`, fewer in the last panel) of all `m`
    /// rows of `out: [m, n]` from `a: [m, k]`; with `prefetch_next`, the tiles also bring panel
    /// `panel + 1` (which must exist) into L2.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a.len() == m·k`; `out` points to `m·n` writable f32 that no other
    /// thread writes in these columns.
    unsafe fn panel(
        &self,
        a: &[f32],
        m: usize,
        panel: usize,
        bias: Option<&[f32]>,
        out: *mut f32,
        prefetch_next: bool,
    ) {
        let (n, k) = (self.n, self.k);
        let columns = (n - panel * PANEL).min(PANEL);
        let b = &self.data[panel * k * PANEL..(panel + 1) * k * PANEL];
        let bias = bias.map(|b| &b[panel * PANEL..panel * PANEL + columns]);
        let tiles = m.div_ceil(TILE_ROWS);
        let next_lines = k * PANEL / LINE;
        // Rows are dealt evenly over the tiles (32 rows: 6, 6, 5, 5, 5, 5 rather than a 2-row
        // tail tile that would stream the whole panel again for little work).
        for tile_index in 0..tiles {
            let row = tile_index * m / tiles;
            let rows = (tile_index + 1) * m / tiles - row;
            let prefetch = prefetch_next.then(|| Prefetch {
                next: &self.data[(panel + 1) * k * PANEL..(panel + 2) * k * PANEL],
                lines: tile_index * next_lines / tiles..(tile_index + 1) * next_lines / tiles,
            });
            let tile = Tile {
                a: &a[row * k..(row + rows) * k],
                b,
                k,
                bias,
                // SAFETY: row < m and panel·PANEL < n keep the offset inside `out`.
                out: unsafe { out.add(row * n + panel * PANEL) },
                ldc: n,
                columns,
                prefetch,
            };
            // SAFETY: forwarded from the caller.
            unsafe {
                match rows {
                    6 => tile.run::<6>(),
                    5 => tile.run::<5>(),
                    4 => tile.run::<4>(),
                    3 => tile.run::<3>(),
                    2 => tile.run::<2>(),
                    _ => tile.run::<1>(),
                }
            }
        }
    }
}

/// One register tile: `R` rows of `a` against one packed panel `b`, written to `out`.
struct Tile<'a> {
    a: &'a [f32],
    b: &'a [f32],
    k: usize,
    bias: Option<&'a [f32]>,
    out: *mut f32,
    ldc: usize,
    columns: usize,
    prefetch: Option<Prefetch<'a>>,
}

/// Cache lines of the next panel a tile brings into L2 while it computes, spread evenly over its
/// `k` iterations. Invariant: `lines.end · LINE <= next.len()`.
struct Prefetch<'a> {
    next: &'a [f32],
    lines: std::ops::Range<usize>,
}

impl Tile<'_> {
    /// `out[r][c] = Σᵢ a[r·k + i] · b[i·PANEL + c] (+ bias[c])` for `r < R`, `c < columns`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a.len() == R·k`, `b.len() == k·PANEL`; `out` row `r` (at
    /// `r·ldc`) has `columns` writable f32.
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const R: usize>(&self) {
        debug_assert!(self.a.len() == R * self.k && self.b.len() == self.k * PANEL);
        let mut acc = [[_mm512_setzero_ps(); PANEL / LANES]; R];
        // The k iterations run in chunks of `PREFETCH_CHUNK`; before each chunk its share of the
        // prefetch lines is issued, which keeps the FMA loop itself free of bookkeeping.
        let chunks = self.k.div_ceil(PREFETCH_CHUNK);
        for chunk in 0..chunks {
            if let Some(p) = &self.prefetch {
                let share = |c: usize| p.lines.start + c * p.lines.len() / chunks;
                for line in share(chunk)..share(chunk + 1) {
                    // SAFETY: `line < lines.end`, so it is inside the next panel (Prefetch's
                    // invariant).
                    unsafe { _mm_prefetch::<_MM_HINT_T1>(p.next.as_ptr().add(line * LINE).cast()) };
                }
            }
            for i in chunk * PREFETCH_CHUNK..self.k.min((chunk + 1) * PREFETCH_CHUNK) {
                // SAFETY: i < k, so the panel row `i` and `a[r·k + i]` are in bounds (checked
                // above).
                unsafe {
                    let row = self.b.as_ptr().add(i * PANEL);
                    let b: [__m512; PANEL / LANES] =
                        std::array::from_fn(|v| _mm512_loadu_ps(row.add(v * LANES)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let a = _mm512_set1_ps(*self.a.get_unchecked(r * self.k + i));
                        for (acc, b) in acc.iter_mut().zip(b) {
                            *acc = _mm512_fmadd_ps(a, b, *acc);
                        }
                    }
                }
            }
        }
        // The epilogue indexes rows and vectors at run time; reading a copy keeps `acc` itself
        // in registers through the loop above (LLVM otherwise stores it on every iteration).
        let sums = acc;
        for (r, acc) in sums.iter().enumerate() {
            for (v, &sum) in acc.iter().enumerate() {
                let column = v * LANES;
                if column >= self.columns {
                    break;
                }
                let lanes = (self.columns - column).min(LANES);
                // SAFETY: `lanes` columns from `column` are inside the row (caller's contract);
                // the bias slice has `columns` entries.
                unsafe {
                    let sum = match self.bias {
                        Some(bias) => {
                            let mut b = [0.0f32; LANES];
                            b[..lanes].copy_from_slice(&bias[column..column + lanes]);
                            _mm512_add_ps(sum, _mm512_loadu_ps(b.as_ptr()))
                        }
                        None => sum,
                    };
                    let dst = self.out.add(r * self.ldc + column);
                    if lanes == LANES {
                        _mm512_storeu_ps(dst, sum);
                    } else {
                        _mm512_mask_storeu_ps(dst, ((1u32 << lanes) - 1) as u16, sum);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed product matches candle's for ragged shapes (tile and panel tails), with and
    /// without bias.
    #[test]
    fn packed_product_matches_candle() -> Result<()> {
        let device = Device::Cpu;
        for (m, n, k) in [
            (1, 5, 3),
            (7, 64, 16),
            (13, 100, 33),
            (32, 300, 50),
            (70, 130, 40),
        ] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &device)?;
            let x = Tensor::randn(0f32, 1.0, (m, k), &device)?;
            let bias = Tensor::randn(0f32, 1.0, n, &device)?;
            let Some(packed) = PackedWeight::new(&w)? else {
                return Ok(());
            };
            for bias in [None, Some(&bias)] {
                let mut want = x.matmul(&w.t()?)?;
                if let Some(b) = bias {
                    want = want.broadcast_add(b)?;
                }
                let got = packed.matmul(&x, bias)?;
                let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff <= 1e-4, "m {m} n {n} k {k}: max difference {diff}");
            }
        }
        Ok(())
    }
}
