//! Vectorisable passes over vocabulary-sized rows: maxima, argmax, the exponential of a row and
//! its blockwise sum, threshold counts. Each loop keeps `LANES` independent accumulators so the
//! compiler can turn it into SIMD code without reassociating floating-point sums on its own.
//! The hottest passes are compiled three times, for the baseline target, AVX2 and AVX-512 (picked
//! at run time); Rust never fuses or reorders floating-point operations, so all give identical
//! bits.

/// Defines `pub(crate) fn $name` that runs `$body` compiled for AVX-512 or AVX2 when the CPU has
/// it and for the baseline target otherwise.
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn body($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
                fn avx512($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU supports these AVX-512 subsets, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// Independent accumulators per pass (two SSE or one AVX register of `f32`).
const LANES: usize = 8;

/// Width of the blocks whose weight sums make up a row's total (see [`block_sum`]).
pub(crate) const BLOCK: usize = 256;

/// `a` if it is greater than `b`, else `b` (a NaN `a` never wins).
#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

multiversion! {
/// The largest non-NaN entry (`-inf` for an empty or all-NaN row) and whether any entry is NaN.
fn max_and_nan(row: &[f32]) -> (f32, bool) {
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut nan = [false; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            max[j] = larger(c[j], max[j]);
            nan[j] |= c[j].is_nan();
        }
    }
    let mut m = max.into_iter().fold(f32::NEG_INFINITY, |a, b| larger(b, a));
    let mut any_nan = nan.contains(&true);
    for &v in tail {
        m = larger(v, m);
        any_nan |= v.is_nan();
    }
    (m, any_nan)
}
}

/// The largest non-NaN entry of `row` (`-inf` if there is none).
pub(crate) fn max(row: &[f32]) -> f32 {
    max_and_nan(row).0
}

/// The first index holding NaN or `+inf`, if any.
pub(crate) fn first_bad(row: &[f32]) -> Option<usize> {
    let ok = |v: f32| v < f32::INFINITY;
    let mut start = 0;
    for c in row.chunks(4 * LANES) {
        if !c.iter().fold(true, |acc, &v| acc & ok(v)) {
            return c.iter().position(|&v| !ok(v)).map(|i| start + i);
        }
        start += c.len();
    }
    None
}

/// The first index whose entry equals `v`.
pub(crate) fn first_equal(row: &[f32], v: f32) -> Option<usize> {
    let mut start = 0;
    for c in row.chunks(4 * LANES) {
        if c.iter().fold(false, |acc, &l| acc | (l == v)) {
            return c.iter().position(|&l| l == v).map(|i| start + i);
        }
        start += c.len();
    }
    None
}

/// Number of entries strictly greater than `v` (rows are indexed by `u32` token ids, so the
/// `u32` lanes cannot overflow).
pub(crate) fn count_greater(row: &[f32], v: f32) -> usize {
    let mut counts = [0u32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            counts[j] += u32::from(c[j] > v);
        }
    }
    counts.iter().map(|&c| c as usize).sum::<usize>() + tail.iter().filter(|&&l| l > v).count()
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split so that `n × LN2_HI` is exact for the `n` used here.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `1.5 × 2^23`: adding it rounds to an integer held in the low mantissa bits.
const SHIFT: f32 = 12_582_912.0;

/// `e^x` in `f32` within a few ulp of the correctly rounded value (Cephes' `expf` polynomial),
/// branch-free so that loops over it vectorise. `-inf` and anything below `-104` give `0`,
/// results in the subnormal range are kept, NaN propagates; inputs above 88 saturate.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-120.0, 88.0);
    let t = x * LOG2E + SHIFT;
    let n = t - SHIFT;
    let ni = (t.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    // 2^n as two factors so that n down to -173 stays exact (subnormal results).
    let a = ni >> 1;
    let b = ni.wrapping_sub(a);
    let scale = |e: i32| f32::from_bits((e.wrapping_add(127) as u32) << 23);
    y * scale(a) * scale(b)
}

/// The sum of a block of weights in `f64`, in a fixed order (`LANES` partial sums, then the
/// tail). Totals of rows are sums of consecutive [`BLOCK`]-sized block sums, so a draw that
/// walks the blocks reaches exactly the total.
#[inline(always)]
pub(crate) fn block_sum(block: &[f32]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = block.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            acc[j] += f64::from(c[j]);
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &w in tail {
        s += f64::from(w);
    }
    s
}

/// Writes `exp(row[i] − max)` into `weights` (resized to the row) and returns their total as
/// the sum of the [`BLOCK`] sums, in order.
pub(crate) fn exp_weights(row: &[f32], max: f32, weights: &mut Vec<f32>) -> f64 {
    weights.clear();
    weights.resize(row.len(), 0.0);
    exp_into(row, max, weights)
}

multiversion! {
/// The body of [`exp_weights`], over a `weights` slice as long as the row.
fn exp_into(row: &[f32], max: f32, weights: &mut [f32]) -> f64 {
    let mut total = 0.0f64;
    for (w, l) in weights.chunks_mut(BLOCK).zip(row.chunks(BLOCK)) {
        for (w, &l) in w.iter_mut().zip(l) {
            *w = exp(l - max);
        }
        total += block_sum(w);
    }
    total
}
}

multiversion! {
/// The weight sums of the entries above `hi` and of those in `[lo, hi]`.
fn band_masses(row: &[f32], weights: &[f32], hi: f32, lo: f32) -> (f64, f64) {
    let mut above = [0.0f64; LANES];
    let mut band = [0.0f64; LANES];
    let rows = row.chunks_exact(LANES);
    let tail = rows.remainder();
    for (c, w) in rows.zip(weights.chunks_exact(LANES)) {
        for j in 0..LANES {
            let wj = f64::from(w[j]);
            above[j] += if c[j] > hi { wj } else { 0.0 };
            band[j] += if c[j] >= lo && c[j] <= hi { wj } else { 0.0 };
        }
    }
    let (mut a, mut b) = (above.iter().sum::<f64>(), band.iter().sum::<f64>());
    let start = row.len() - tail.len();
    for (&l, &w) in tail.iter().zip(&weights[start..]) {
        if l > hi {
            a += f64::from(w);
        } else if l >= lo {
            b += f64::from(w);
        }
    }
    (a, b)
}
}

/// The rank key of `v` under `f32::total_cmp`, as an `i32` ordered the same way.
#[inline(always)]
pub(crate) fn total_key(v: f32) -> i32 {
    let bits = v.to_bits() as i32;
    bits ^ ((((bits >> 31) as u32) >> 1) as i32)
}

/// The largest [`total_key`] of a chunk (`i32::MIN` if empty).
pub(crate) fn max_key(chunk: &[f32]) -> i32 {
    let mut m = [i32::MIN; LANES];
    let lanes = chunk.chunks_exact(LANES);
    let tail = lanes.remainder();
    for c in lanes {
        for j in 0..LANES {
            m[j] = m[j].max(total_key(c[j]));
        }
    }
    let m = m.into_iter().max().unwrap_or(i32::MIN);
    tail.iter().map(|&v| total_key(v)).fold(m, i32::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_and_exact_at_the_edges() {
        let mut worst = 0;
        let mut x = -110.0f32;
        while x <= 0.0 {
            let want = (f64::from(x)).exp() as f32;
            if want >= f32::MIN_POSITIVE {
                worst = worst.max(ulps(exp(x), want));
            } else {
                assert!((exp(x) - want).abs() <= 2.0 * f32::from_bits(1), "{x}");
            }
            x += 0.000_731;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-200.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    proptest! {
        #[test]
        fn passes_match_scalar_definitions(
            row in prop::collection::vec(
                prop_oneof![8 => -30.0f32..30.0, 1 => Just(f32::NEG_INFINITY),
                            1 => Just(0.0f32), 1 => Just(-0.0f32)],
                0..700),
            pick in any::<prop::sample::Index>(),
        ) {
            let (m, nan) = max_and_nan(&row);
            prop_assert_eq!(m, row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
            prop_assert!(!nan);
            prop_assert_eq!(first_bad(&row), None);
            if !row.is_empty() {
                let v = row[pick.index(row.len())];
                prop_assert_eq!(count_greater(&row, v), row.iter().filter(|&&l| l > v).count());
                let mut bad = row.clone();
                let at = pick.index(row.len());
                bad[at] = f32::INFINITY;
                prop_assert_eq!(first_bad(&bad), Some(at));
                bad[at] = f32::NAN;
                prop_assert!(max_and_nan(&bad).1);
                let want = row.iter().map(|&v| total_key(v)).max().unwrap();
                prop_assert_eq!(max_key(&row), want);
            }
        }

        #[test]
        fn total_key_orders_like_total_cmp(a in any::<f32>(), b in any::<f32>()) {
            prop_assert_eq!(total_key(a).cmp(&total_key(b)), a.total_cmp(&b));
        }
    }
}
