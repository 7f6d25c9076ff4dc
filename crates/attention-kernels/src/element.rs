//! Element types of the KV cache (f32, f16, bf16) and their conversions to and from f32.
//!
//! Kernels always compute in f32; half-precision rows are widened one row at a time into a small
//! scratch buffer, with branch-free conversions that the compiler vectorises.

use half::{bf16, f16};

/// The element type of a KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvDtype {
    /// IEEE single precision, 4 bytes.
    F32,
    /// IEEE half precision, 2 bytes.
    F16,
    /// bfloat16, 2 bytes.
    Bf16,
}

impl KvDtype {
    /// Bytes per element.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 | KvDtype::Bf16 => 2,
        }
    }

    /// The matching candle dtype.
    pub const fn to_candle(self) -> candle_core::DType {
        match self {
            KvDtype::F32 => candle_core::DType::F32,
            KvDtype::F16 => candle_core::DType::F16,
            KvDtype::Bf16 => candle_core::DType::BF16,
        }
    }

    /// The KV dtype for a candle dtype, or `None` when the cache cannot hold it.
    pub const fn from_candle(dtype: candle_core::DType) -> Option<Self> {
        match dtype {
            candle_core::DType::F32 => Some(KvDtype::F32),
            candle_core::DType::F16 => Some(KvDtype::F16),
            candle_core::DType::BF16 => Some(KvDtype::Bf16),
            _ => None,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// A type that can be stored in the KV cache. Implemented for `f32`, `f16` and `bf16` only.
///
/// Invariant: `from_f32(x.to_f32()) == x` for every non-NaN value `x` (widening is exact).
pub trait KvElement: sealed::Sealed + candle_core::WithDType + Default + std::fmt::Debug {
    /// The runtime tag of this type.
    const KV_DTYPE: KvDtype;
    /// Widens one element to f32 (exact).
    fn to_f32(self) -> f32;
    /// Narrows an f32 with round-to-nearest-even.
    fn from_f32(value: f32) -> Self;
    /// Returns `src` as f32: borrowed unchanged for f32, otherwise widened into `scratch`.
    ///
    /// `scratch` must be at least as long as `src`; the returned slice has `src.len()` elements.
    fn row_f32<'a>(src: &'a [Self], scratch: &'a mut [f32]) -> &'a [f32];
}

impl KvElement for f32 {
    const KV_DTYPE: KvDtype = KvDtype::F32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(value: f32) -> Self {
        value
    }
    #[inline(always)]
    fn row_f32<'a>(src: &'a [f32], _scratch: &'a mut [f32]) -> &'a [f32] {
        src
    }
}

impl KvElement for f16 {
    const KV_DTYPE: KvDtype = KvDtype::F16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16_bits_to_f32(self.to_bits())
    }
    #[inline(always)]
    fn from_f32(value: f32) -> Self {
        f16::from_f32(value)
    }
    #[inline(always)]
    fn row_f32<'a>(src: &'a [f16], scratch: &'a mut [f32]) -> &'a [f32] {
        let dst = &mut scratch[..src.len()];
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f16_bits_to_f32(s.to_bits());
        }
        dst
    }
}

impl KvElement for bf16 {
    const KV_DTYPE: KvDtype = KvDtype::Bf16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16_bits_to_f32(self.to_bits())
    }
    #[inline(always)]
    fn from_f32(value: f32) -> Self {
        bf16::from_f32(value)
    }
    #[inline(always)]
    fn row_f32<'a>(src: &'a [bf16], scratch: &'a mut [f32]) -> &'a [f32] {
        let dst = &mut scratch[..src.len()];
        for (d, s) in dst.iter_mut().zip(src) {
            *d = bf16_bits_to_f32(s.to_bits());
        }
        dst
    }
}

/// Widens bfloat16 bits to f32: bf16 is the upper half of an f32.
#[inline(always)]
pub(crate) fn bf16_bits_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Widens IEEE half bits to f32 without branches (selects only), so loops over it vectorise.
///
/// Normal numbers are re-biased; subnormals are renormalised by a float subtraction; infinities
/// and NaNs keep an all-ones exponent.
#[inline(always)]
pub(crate) fn f16_bits_to_f32(bits: u16) -> f32 {
    const SHIFTED_EXP: u32 = 0x7c00 << 13;
    let magnitude = (u32::from(bits) & 0x7fff) << 13;
    let exp = magnitude & SHIFTED_EXP;
    let rebased = magnitude + ((127 - 15) << 23);
    let inf_nan = rebased + ((128 - 16) << 23);
    let subnormal = (f32::from_bits(rebased + (1 << 23)) - f32::from_bits(113 << 23)).to_bits();
    let widened = if exp == SHIFTED_EXP {
        inf_nan
    } else if exp == 0 {
        subnormal
    } else {
        rebased
    };
    f32::from_bits(widened | ((u32::from(bits) & 0x8000) << 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_widening_matches_half_for_every_bit_pattern() {
        for bits in 0..=u16::MAX {
            let expected = f16::from_bits(bits).to_f32();
            let got = <f16 as KvElement>::to_f32(f16::from_bits(bits));
            if expected.is_nan() {
                assert!(got.is_nan(), "bits {bits:#06x}");
            } else {
                assert_eq!(got.to_bits(), expected.to_bits(), "bits {bits:#06x}");
            }
        }
    }

    #[test]
    fn bf16_widening_matches_half_for_every_bit_pattern() {
        for bits in 0..=u16::MAX {
            let expected = bf16::from_bits(bits).to_f32();
            let got = <bf16 as KvElement>::to_f32(bf16::from_bits(bits));
            assert!(
                got.to_bits() == expected.to_bits() || (got.is_nan() && expected.is_nan()),
                "bits {bits:#06x}"
            );
        }
    }

    #[test]
    fn row_conversion_widens_every_element() {
        let src: Vec<f16> = (0..37)
            .map(|i| f16::from_f32(i as f32 * 0.25 - 3.0))
            .collect();
        let mut scratch = vec![f32::NAN; 64];
        let row = f16::row_f32(&src, &mut scratch);
        assert_eq!(row.len(), 37);
        for (r, s) in row.iter().zip(&src) {
            assert_eq!(*r, s.to_f32());
        }
    }

    #[test]
    fn dtype_round_trips_through_candle() {
        for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Bf16] {
            assert_eq!(KvDtype::from_candle(dtype.to_candle()), Some(dtype));
            assert_eq!(dtype.to_candle().size_in_bytes(), dtype.size_in_bytes());
        }
        assert_eq!(KvDtype::from_candle(candle_core::DType::U8), None);
    }
}
