//! What a checked `sum` or `avg` says when its result does not fit its type: the aggregate as
//! the plan names it, the value that did not fit when it is known, and a rewrite that fits.

use std::fmt;

use arrow::compute::DecimalCast;
use arrow::datatypes::{DataType, i256};
use datafusion::common::DataFusionError;
use datafusion::logical_expr::function::AccumulatorArgs;

/// The largest precision of a SQL `decimal(p, s)` held in 128 bits; wider ones take 256.
const DECIMAL128_DIGITS: i32 = 38;
const DECIMAL256_DIGITS: i32 = 76;

/// A decimal value for a message: a total or an average, unscaled, and its scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Value {
    unscaled: i256,
    scale: i8,
}

impl Value {
    /// `unscaled` at `scale`; `None` only for a native type wider than 256 bits.
    pub(crate) fn of(unscaled: impl DecimalCast, scale: i8) -> Option<Self> {
        Some(Value {
            unscaled: unscaled.to_i256()?,
            scale,
        })
    }

    /// How many digits the value has before its decimal point (none for `0.05`).
    fn digits_before_point(&self) -> i32 {
        let digits = if self.unscaled == i256::ZERO {
            0
        } else {
            self.unscaled.to_string().trim_start_matches('-').len() as i32
        };
        (digits - i32::from(self.scale)).max(0)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.unscaled.to_string();
        let (sign, digits) = match text.strip_prefix('-') {
            Some(digits) => ("-", digits),
            None => ("", text.as_str()),
        };
        match usize::try_from(self.scale) {
            Ok(0) => write!(f, "{text}"),
            Ok(scale) if digits.len() > scale => {
                let (whole, fraction) = digits.split_at(digits.len() - scale);
                write!(f, "{sign}{whole}.{fraction}")
            }
            Ok(scale) => write!(f, "{sign}0.{digits:0>scale$}"),
            // A negative scale counts tens: 12 at scale -2 is 1200.
            Err(_) => write!(f, "{text}{}", "0".repeat(self.scale.unsigned_abs().into())),
        }
    }
}

/// Builds the error of one aggregate expression whose result does not fit.
#[derive(Debug, Clone)]
pub(crate) struct Overflow {
    /// `sum` or `avg`.
    function: &'static str,
    /// The aggregate as the plan names it, e.g. `sum(ks.t.price * ks.t.qty)`.
    aggregate: String,
    /// Its argument when it is a column, for the rewrite the message suggests; `None` for an
    /// expression, which the plan prints without its parentheses (`a * (1 - b)` as
    /// `a * Int64(1) - b`), so that pasting it back would compute something else.
    argument: Option<String>,
    distinct: bool,
}

impl Overflow {
    pub(crate) fn new(function: &'static str, args: &AccumulatorArgs) -> Self {
        Overflow::named(function, args.name, args.is_distinct)
    }

    fn named(function: &'static str, aggregate: &str, distinct: bool) -> Self {
        Overflow {
            function,
            aggregate: aggregate.to_string(),
            argument: argument_of(function, aggregate),
            distinct,
        }
    }

    /// The aggregate over its argument cast to `decimal(precision, scale)`.
    fn rewrite(&self, precision: i32, scale: i32) -> String {
        let argument = self.argument.as_deref().unwrap_or("<argument>");
        let distinct = if self.distinct { "DISTINCT " } else { "" };
        format!(
            "{}({distinct}CAST({argument} AS decimal({precision}, {scale})))",
            self.function
        )
    }

    /// A sum whose total does not fit `result_type`; `total` is `None` when it overflowed
    /// even the type it was added up in.
    pub(crate) fn sum(&self, result_type: &DataType, total: Option<Value>) -> DataFusionError {
        let aggregate = &self.aggregate;
        let message = match (decimal_parts(result_type), total) {
            (Some((precision, scale)), Some(total)) => {
                let before_point = total.digits_before_point();
                format!(
                    "{aggregate} overflowed {result_type}: the total {total} has {before_point} \
                     digits before the decimal point, and {result_type} holds {}; {}",
                    precision - scale,
                    self.decimal_fix(before_point, scale, 0)
                )
            }
            (Some(_), None) => format!(
                "{aggregate} overflowed {result_type}: the total passed the largest 256-bit \
                 decimal; cast the argument to fewer decimal places, or add up smaller groups \
                 of rows"
            ),
            (None, total) => {
                let total = total.map_or_else(String::new, |t| format!(" {t}"));
                let fix = match result_type {
                    DataType::Int64 | DataType::UInt64 => format!(
                        "add the values up as decimals instead, e.g. {}",
                        self.rewrite(DECIMAL128_DIGITS, 0)
                    ),
                    _ => "add up the values in a coarser unit".to_string(),
                };
                let range = match result_type {
                    DataType::Int64 => format!(" ({} to {})", i64::MIN, i64::MAX),
                    DataType::UInt64 => format!(" (0 to {})", u64::MAX),
                    _ => String::new(),
                };
                format!(
                    "{aggregate} overflowed {result_type}: the total{total} is outside its \
                     range{range}; {fix}"
                )
            }
        };
        DataFusionError::Execution(message)
    }

    /// An average whose running sum does not fit `sum_type`, the type `avg` adds decimals up in.
    pub(crate) fn avg_sum(&self, sum_type: &DataType) -> DataFusionError {
        let aggregate = &self.aggregate;
        let fix = match sum_type {
            DataType::Decimal256(..) => {
                "cast the argument to fewer decimal places, or average smaller groups of rows"
                    .to_string()
            }
            _ => {
                let scale = decimal_parts(sum_type).map_or(0, |(_, scale)| scale);
                format!(
                    "cast the argument to decimal({DECIMAL128_DIGITS}, {scale}), whose values \
                     avg adds up in 256 bits, e.g. {}",
                    self.rewrite(DECIMAL128_DIGITS, scale)
                )
            }
        };
        DataFusionError::Execution(format!(
            "{aggregate} overflowed: the sum of its values does not fit {sum_type}, which avg \
             adds them up in; {fix}"
        ))
    }

    /// An average that does not fit `result_type`; `average` is the sum divided by the count
    /// at the argument's scale. When that would fit, it was computing the average at the
    /// result's scale from a sum of `sum_type` that overflowed.
    pub(crate) fn avg(
        &self,
        result_type: &DataType,
        sum_type: &DataType,
        average: Option<Value>,
    ) -> DataFusionError {
        let aggregate = &self.aggregate;
        let message = match (decimal_parts(result_type), average) {
            (Some((precision, scale)), Some(average))
                if average.digits_before_point() > precision - scale =>
            {
                let before_point = average.digits_before_point();
                format!(
                    "{aggregate} overflowed {result_type}: the average {average} has \
                     {before_point} digits before the decimal point, and {result_type} holds \
                     {}; {}",
                    precision - scale,
                    // The average is at its argument's scale; avg adds decimal places to it.
                    self.decimal_fix(
                        before_point,
                        i32::from(average.scale),
                        scale - i32::from(average.scale)
                    )
                )
            }
            _ => format!(
                "{aggregate} overflowed {sum_type} while scaling its sum to {result_type} to \
                 divide it; cast the argument to fewer decimal places"
            ),
        };
        DataFusionError::Execution(message)
    }

    /// The cast that makes a result with `before_point` digits before the decimal point fit,
    /// for an argument of `scale` whose result has `extra_scale` more decimal places: a wider
    /// decimal when that suffices, else fewer decimal places.
    fn decimal_fix(&self, before_point: i32, scale: i32, extra_scale: i32) -> String {
        for precision in [DECIMAL128_DIGITS, DECIMAL256_DIGITS] {
            if before_point + scale.max(0) + extra_scale <= precision {
                return format!(
                    "cast the argument to a wider decimal, e.g. {}",
                    self.rewrite(precision, scale)
                );
            }
            let fewer = precision - extra_scale - before_point;
            if fewer >= 0 {
                return format!(
                    "cast the argument to fewer decimal places (rounding its values), e.g. {}",
                    self.rewrite(precision, fewer)
                );
            }
        }
        format!(
            "no decimal type holds {before_point} digits before the decimal point; \
             aggregate smaller groups of rows"
        )
    }
}

/// The precision and scale of a decimal type.
fn decimal_parts(data_type: &DataType) -> Option<(i32, i32)> {
    match data_type {
        DataType::Decimal32(precision, scale)
        | DataType::Decimal64(precision, scale)
        | DataType::Decimal128(precision, scale)
        | DataType::Decimal256(precision, scale) => {
            Some((i32::from(*precision), i32::from(*scale)))
        }
        _ => None,
    }
}

/// The argument of an aggregate named `function(argument)` (followed, for a window function,
/// by its frame): the text inside the first parentheses, without a leading `DISTINCT`.
fn argument_of(function: &str, aggregate: &str) -> Option<String> {
    let rest = aggregate.strip_prefix(function)?.strip_prefix('(')?;
    let mut depth = 0usize;
    for (at, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                let argument = &rest[..at];
                let argument = argument.strip_prefix("DISTINCT ").unwrap_or(argument);
                let column = argument
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '"'));
                return column.then(|| argument.to_string());
            }
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: DataFusionError) -> String {
        match e {
            DataFusionError::Execution(m) => m,
            other => panic!("expected an execution error, got {other}"),
        }
    }

    #[test]
    fn values_print_at_their_scale() {
        let print = |v: i128, scale: i8| Value::of(v, scale).map(|v| v.to_string());
        assert_eq!(print(12345, 2).as_deref(), Some("123.45"));
        assert_eq!(print(-5, 2).as_deref(), Some("-0.05"));
        assert_eq!(print(7, 0).as_deref(), Some("7"));
        assert_eq!(print(12, -2).as_deref(), Some("1200"));
    }

    #[test]
    fn digits_before_the_point_ignore_sign_and_fraction() {
        let digits = |v: i128, scale: i8| Value::of(v, scale).map(|v| v.digits_before_point());
        assert_eq!(digits(12345, 2), Some(3));
        assert_eq!(digits(-12345, 2), Some(3));
        assert_eq!(digits(5, 2), Some(0));
        assert_eq!(digits(0, 0), Some(0));
    }

    #[test]
    fn a_column_argument_is_read_from_the_aggregate_name() {
        assert_eq!(
            argument_of("sum", "sum(t.price * Int64(1) - t.discount)"),
            None
        );
        assert_eq!(
            argument_of("sum", "sum(DISTINCT t.v)").as_deref(),
            Some("t.v")
        );
        assert_eq!(
            argument_of("sum", "sum(t.v) ROWS BETWEEN 1 PRECEDING AND CURRENT ROW").as_deref(),
            Some("t.v")
        );
        assert_eq!(argument_of("sum", "total"), None);
    }

    #[test]
    fn a_decimal_total_at_full_precision_suggests_fewer_decimal_places() {
        let overflow = Overflow::named("sum", "sum(t.v)", false);
        // 10^28 at scale 10: 29 digits before the point, where Decimal128(38, 10) holds 28.
        let total = Value::of(10_i128.pow(38), 10);
        let text = message(overflow.sum(&DataType::Decimal128(38, 10), total));
        assert_eq!(
            text,
            "sum(t.v) overflowed Decimal128(38, 10): the total \
             10000000000000000000000000000.0000000000 has 29 digits before the decimal point, \
             and Decimal128(38, 10) holds 28; cast the argument to fewer decimal places \
             (rounding its values), e.g. sum(CAST(t.v AS decimal(38, 9)))"
        );
    }

    #[test]
    fn a_narrow_decimal_total_suggests_a_wider_decimal() {
        let overflow = Overflow::named("sum", "sum(DISTINCT t.v)", true);
        let total = Value::of(10_i128.pow(20), 2);
        let text = message(overflow.sum(&DataType::Decimal128(20, 2), total));
        assert!(
            text.ends_with(
                "holds 18; cast the argument to a wider decimal, e.g. \
                 sum(DISTINCT CAST(t.v AS decimal(38, 2)))"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_total_beyond_38_digits_suggests_a_256_bit_decimal() {
        let overflow = Overflow::named("sum", "sum(t.v)", false);
        let total = Value::of(
            i256::from_i128(10_i128.pow(30)) * i256::from_i128(10_i128.pow(20)),
            0,
        );
        let text = message(overflow.sum(&DataType::Decimal128(38, 0), total));
        assert!(
            text.ends_with("e.g. sum(CAST(t.v AS decimal(76, 0)))"),
            "{text}"
        );
    }

    #[test]
    fn an_integer_total_names_the_range_and_the_decimal_rewrite() {
        let overflow = Overflow::named("sum", "sum(t.v)", false);
        let total = Value::of(i128::from(i64::MAX) + 1, 0);
        assert_eq!(
            message(overflow.sum(&DataType::Int64, total)),
            "sum(t.v) overflowed Int64: the total 9223372036854775808 is outside its range \
             (-9223372036854775808 to 9223372036854775807); add the values up as decimals \
             instead, e.g. sum(CAST(t.v AS decimal(38, 0)))"
        );
    }

    #[test]
    fn an_average_too_large_for_its_scale_suggests_a_scale_that_fits() {
        let overflow = Overflow::named("avg", "avg(t.v)", false);
        // 10^25 at the argument's scale 10; the result type is Decimal128(38, 14).
        let average = Value::of(10_i128.pow(35), 10);
        let text = message(overflow.avg(
            &DataType::Decimal128(38, 14),
            &DataType::Decimal256(76, 10),
            average,
        ));
        assert!(
            text.contains(
                "has 26 digits before the decimal point, and Decimal128(38, 14) holds 24"
            ) && text.ends_with("e.g. avg(CAST(t.v AS decimal(38, 8)))"),
            "{text}"
        );
    }
}
