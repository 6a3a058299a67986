//! The input types a checked `sum` adds up, and the wider integer each one is added up in.
//!
//! A sum's exact total is kept in a type wide enough that no realistic input can overflow it
//! (an `Int64` sum in an `i128`, a `Decimal128` sum in an `i256`), and checked against its
//! result type once, when it is evaluated. So a sum whose positive and negative parts cancel
//! gives the exact answer whatever order the rows arrive in, and whether a query fails depends
//! only on its data, never on how it was partitioned. `Decimal256` has nothing wider: its sums
//! fail as soon as an addition overflows.

use std::fmt::Debug;

use arrow::array::{Array, ArrowPrimitiveType, PrimitiveArray};
use arrow::compute::DecimalCast;
use arrow::datatypes::{
    ArrowNativeType, ArrowNativeTypeOp, DataType, Decimal32Type, Decimal64Type, Decimal128Type,
    Decimal256Type, DecimalType, DurationMicrosecondType, DurationMillisecondType,
    DurationNanosecondType, DurationSecondType, Int64Type, UInt64Type, i256,
};
use datafusion::common::{Result, internal_err};

/// Checked integer arithmetic, for the wide types totals are kept in.
pub(crate) trait CheckedInt:
    ArrowNativeTypeOp + Ord + DecimalCast + From<i8> + Debug
{
    fn checked_add(self, other: Self) -> Option<Self>;
    fn checked_sub(self, other: Self) -> Option<Self>;
    fn checked_mul(self, other: Self) -> Option<Self>;

    /// The wrapped sum and whether it overflowed: for hot loops, which add without branching
    /// and fail once at the end if any addition overflowed.
    fn overflowing_add(self, other: Self) -> (Self, bool);
}

macro_rules! checked_int {
    ($($native:ty),*) => {$(
        impl CheckedInt for $native {
            #[inline]
            fn checked_add(self, other: Self) -> Option<Self> {
                <$native>::checked_add(self, other)
            }

            #[inline]
            fn checked_sub(self, other: Self) -> Option<Self> {
                <$native>::checked_sub(self, other)
            }

            #[inline]
            fn checked_mul(self, other: Self) -> Option<Self> {
                <$native>::checked_mul(self, other)
            }

            #[inline]
            fn overflowing_add(self, other: Self) -> (Self, bool) {
                <$native>::overflowing_add(self, other)
            }
        }
    )*};
}

checked_int!(i32, i64, i128, i256);

/// Wrapping addition that says which way it wrapped, for the input types' native integers.
pub(crate) trait WrappingAdd: ArrowNativeType + PartialOrd {
    /// The wrapped sum, and `1` when it wrapped past the largest value, `-1` past the smallest,
    /// `0` when it did not wrap.
    fn add_wrapped(self, other: Self) -> (Self, i8);
}

macro_rules! wrapping_add_signed {
    ($($native:ty),*) => {$(
        impl WrappingAdd for $native {
            #[inline]
            fn add_wrapped(self, other: Self) -> (Self, i8) {
                let (sum, wrapped) = self.overflowing_add(other);
                let direction = if other < <$native>::default() { -1 } else { 1 };
                (sum, i8::from(wrapped) * direction)
            }
        }
    )*};
}

wrapping_add_signed!(i32, i64, i128, i256);

impl WrappingAdd for u64 {
    #[inline]
    fn add_wrapped(self, other: Self) -> (Self, i8) {
        let (sum, wrapped) = self.overflowing_add(other);
        (sum, i8::from(wrapped))
    }
}

/// A type `sum` adds up exactly: the input (which is also the result) and the wider decimal
/// type whose integer an exact total is kept in. The partial aggregation state is an array of
/// that wider type, so totals cross the network unnarrowed.
pub(crate) trait SumInput:
    ArrowPrimitiveType<Native: WrappingAdd> + Debug + Send + Sync
{
    /// `Decimal128` (an `i128`) for 32- and 64-bit inputs, `Decimal256` (an `i256`) for
    /// 128- and 256-bit ones.
    type Wide: DecimalType<Native: CheckedInt> + Debug + Send + Sync;

    /// How much a native total that wrapped once is off by (2^64 for an `i64`), in the wide
    /// type; `None` for `Decimal256`, which has no wider type. The wide type is at least 64
    /// bits wider whenever this is `Some`.
    fn wrap() -> Option<Wide<Self>>;

    fn widen(value: Self::Native) -> Wide<Self>;

    /// The exact sum of fewer than 2^32 values; `None` for `Decimal256`, whose sums can
    /// overflow its wide type. Without a check per value: when the wide type is 64 bits wider
    /// than the input, fewer than 2^32 values cannot overflow it.
    fn exact_sum(values: &[Self::Native]) -> Option<Wide<Self>> {
        Self::wrap()?;
        let zero = Wide::<Self>::default();
        Some(
            values
                .iter()
                .fold(zero, |sum, v| sum.add_wrapping(Self::widen(*v))),
        )
    }

    /// The total as the result type, or `None` when it is out of the type's native range
    /// (a decimal's precision is checked separately, by [`SumRange`]).
    fn narrow(total: Wide<Self>) -> Option<Self::Native>;
}

/// The native integer of a sum's running total.
pub(crate) type Wide<T> = <<T as SumInput>::Wide as ArrowPrimitiveType>::Native;

macro_rules! sum_input {
    ($($input:ty => $wide:ty, wraps by $wrap:expr $(, sums with $sum:ident)?);*) => {$(
        impl SumInput for $input {
            type Wide = $wide;

            #[inline]
            fn wrap() -> Option<Wide<Self>> {
                Some($wrap)
            }

            $(
                fn exact_sum(values: &[Self::Native]) -> Option<Wide<Self>> {
                    Some($sum(values))
                }
            )?

            #[inline]
            fn widen(value: Self::Native) -> Wide<Self> {
                value.into()
            }

            #[inline]
            fn narrow(total: Wide<Self>) -> Option<Self::Native> {
                DecimalCast::from_decimal(total)
            }
        }
    )*};
}

sum_input!(
    Int64Type => Decimal128Type, wraps by 1 << 64, sums with exact_sum_i64;
    DurationSecondType => Decimal128Type, wraps by 1 << 64, sums with exact_sum_i64;
    DurationMillisecondType => Decimal128Type, wraps by 1 << 64, sums with exact_sum_i64;
    DurationMicrosecondType => Decimal128Type, wraps by 1 << 64, sums with exact_sum_i64;
    DurationNanosecondType => Decimal128Type, wraps by 1 << 64, sums with exact_sum_i64;
    Decimal32Type => Decimal128Type, wraps by 1 << 32;
    Decimal64Type => Decimal128Type, wraps by 1 << 64, sums with exact_sum_i64;
    Decimal128Type => Decimal256Type, wraps by i256::from_parts(0, 1)
);

/// The exact sum of fewer than 2^32 `i64`s, at the speed of a vectorised `i64` sum: the high
/// and low 32 bits of each value are added up separately, in 64 bits, where fewer than 2^32
/// of them cannot overflow.
fn exact_sum_i64(values: &[i64]) -> i128 {
    let (high, low) = values.iter().fold((0i64, 0u64), |(high, low), v| {
        (
            high.wrapping_add(v >> 32),
            low.wrapping_add(*v as u64 & 0xFFFF_FFFF),
        )
    });
    (i128::from(high) << 32) + i128::from(low)
}

/// As [`exact_sum_i64`], for `u64`s.
fn exact_sum_u64(values: &[u64]) -> i128 {
    let (high, low) = values.iter().fold((0u64, 0u64), |(high, low), v| {
        (
            high.wrapping_add(v >> 32),
            low.wrapping_add(v & 0xFFFF_FFFF),
        )
    });
    (i128::from(high) << 32) + i128::from(low)
}

impl SumInput for UInt64Type {
    type Wide = Decimal128Type;

    #[inline]
    fn wrap() -> Option<i128> {
        Some(1 << 64)
    }

    #[inline]
    fn widen(value: u64) -> i128 {
        i128::from(value)
    }

    fn exact_sum(values: &[u64]) -> Option<i128> {
        Some(exact_sum_u64(values))
    }

    #[inline]
    fn narrow(total: i128) -> Option<u64> {
        u64::try_from(total).ok()
    }
}

impl SumInput for Decimal256Type {
    type Wide = Decimal256Type;

    #[inline]
    fn wrap() -> Option<i256> {
        None
    }

    #[inline]
    fn widen(value: i256) -> i256 {
        value
    }

    #[inline]
    fn narrow(total: i256) -> Option<i256> {
        Some(total)
    }
}

/// Adds the non-null `values` to `total`; `None` when even the wide type overflows.
pub(crate) fn add_values<T: SumInput>(
    total: Wide<T>,
    values: &PrimitiveArray<T>,
) -> Option<Wide<T>> {
    // A batch's sum, exact without a check per value (which is what keeps this near
    // DataFusion's vectorised sum), and checked once.
    let batch = match values.nulls() {
        None if values.len() <= u32::MAX as usize => T::exact_sum(values.values()),
        _ => None,
    };
    match batch {
        Some(batch) => total.checked_add(batch),
        None => values
            .iter()
            .flatten()
            .try_fold(total, |sum, v| sum.checked_add(T::widen(v))),
    }
}

/// Subtracts the non-null `values` from `total` (a sliding window's rows leaving its frame).
pub(crate) fn subtract_values<T: SumInput>(
    total: Wide<T>,
    values: &PrimitiveArray<T>,
) -> Option<Wide<T>> {
    values
        .iter()
        .flatten()
        .try_fold(total, |sum, v| sum.checked_sub(T::widen(v)))
}

/// Adds the non-null partial totals of `partials` to `total`.
pub(crate) fn add_partials<W>(total: W::Native, partials: &PrimitiveArray<W>) -> Option<W::Native>
where
    W: ArrowPrimitiveType<Native: CheckedInt>,
{
    partials
        .iter()
        .flatten()
        .try_fold(total, |sum, v| sum.checked_add(v))
}

/// The totals a sum's result type holds: its native range, and for a decimal its precision
/// (a `Decimal128(38, 2)` holds less than 10^38 in its `i128`).
#[derive(Debug)]
pub(crate) struct SumRange<T: SumInput> {
    min: Wide<T>,
    max: Wide<T>,
    /// The same bounds in the input type, which always holds them.
    native_min: T::Native,
    native_max: T::Native,
}

impl<T: SumInput> SumRange<T> {
    /// The range of `result_type`, the result type of a sum of `T`.
    pub(crate) fn of(result_type: &DataType) -> Result<Self> {
        let (min, max) = match result_type {
            DataType::Decimal32(precision, _)
            | DataType::Decimal64(precision, _)
            | DataType::Decimal128(precision, _)
            | DataType::Decimal256(precision, _) => {
                let max = Decimal256Type::MAX_FOR_EACH_PRECISION
                    .get(usize::from(*precision))
                    .copied()
                    .unwrap_or(i256::MAX);
                (-max, max)
            }
            DataType::UInt64 => (i256::ZERO, i256::from_i128(i128::from(u64::MAX))),
            _ => (i256::from(i64::MIN), i256::from(i64::MAX)),
        };
        let min: Option<Wide<T>> = DecimalCast::from_decimal(min);
        let max: Option<Wide<T>> = DecimalCast::from_decimal(max);
        match (min, max) {
            (Some(min), Some(max)) => match (T::narrow(min), T::narrow(max)) {
                (Some(native_min), Some(native_max)) => Ok(SumRange {
                    min,
                    max,
                    native_min,
                    native_max,
                }),
                _ => internal_err!("a sum of {} cannot return {result_type}", T::DATA_TYPE),
            },
            _ => internal_err!(
                "a sum returning {result_type} cannot be added up in {}",
                T::Wide::PREFIX
            ),
        }
    }

    /// `total` as the result type, or `None` when it does not fit.
    #[inline]
    pub(crate) fn narrow(&self, total: Wide<T>) -> Option<T::Native> {
        if total < self.min || total > self.max {
            return None;
        }
        T::narrow(total)
    }

    /// Whether `total`, in the input type, fits the result type (a decimal's precision may
    /// be less than its native type holds).
    #[inline]
    pub(crate) fn holds(&self, total: T::Native) -> bool {
        total >= self.native_min && total <= self.native_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sums_of_64_bit_integers_are_exact() {
        let signed = [
            i64::MIN,
            i64::MIN,
            i64::MAX,
            -1,
            0,
            1,
            i64::MAX,
            -4_294_967_296,
            12345,
        ];
        let expected: i128 = signed.iter().map(|v| i128::from(*v)).sum();
        assert_eq!(exact_sum_i64(&signed), expected);
        assert_eq!(
            exact_sum_i64(&[i64::MIN; 1000]),
            i128::from(i64::MIN) * 1000
        );
        assert_eq!(
            exact_sum_i64(&[i64::MAX; 1000]),
            i128::from(i64::MAX) * 1000
        );

        let unsigned = [u64::MAX, u64::MAX, 0, 1, 4_294_967_295, 4_294_967_296];
        let expected: i128 = unsigned.iter().map(|v| i128::from(*v)).sum();
        assert_eq!(exact_sum_u64(&unsigned), expected);
    }

    #[test]
    fn a_batch_with_nulls_adds_only_its_values() {
        let values = PrimitiveArray::<Int64Type>::from(vec![Some(i64::MAX), None, Some(i64::MAX)]);
        assert_eq!(
            add_values::<Int64Type>(1, &values),
            Some(i128::from(i64::MAX) * 2 + 1)
        );
    }
}
