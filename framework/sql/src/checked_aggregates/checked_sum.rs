//! `sum` that fails instead of wrapping: DataFusion's [`Sum`] with exact accumulators for
//! integer, decimal and duration input.
//!
//! ```text
//!   rows ──update──▶ exact totals ──state──▶ partial totals, wide: Decimal128(38, 0) for
//!                                            integers, Decimal256(76, s) for Decimal128(p, s)
//!   partial totals ──merge──▶ exact totals ──evaluate──▶ fits the result type? value : error
//! ```
//!
//! Everything else (the signature and coercion, floats, intervals, statistics) is
//! DataFusion's own, except its rewrite of `sum(x + 1)`, which would add outside the sum.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::mem::size_of_val;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use arrow::datatypes::{
    DataType, Decimal32Type, Decimal64Type, Decimal128Type, Decimal256Type, DecimalType,
    DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType, DurationSecondType,
    Field, FieldRef, Int64Type, TimeUnit, UInt64Type,
};
use datafusion::common::{Result, ScalarValue};
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, Expr, GroupsAccumulator, Operator,
    ReversedUDAF, SetMonotonicity, Signature, StatisticsArgs,
};
use datafusion_functions_aggregate_common::utils::GenericDistinctBuffer;

use super::overflow::{Overflow, Value};
use super::sum_groups::SumGroupsAccumulator;
use super::sum_input::{
    CheckedInt, SumInput, SumRange, Wide, add_partials, add_values, subtract_values,
};

/// The `sum` UDAF, ready to register in place of DataFusion's.
pub fn checked_sum_udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(CheckedSum::default())
}

/// `sum(x)`, erroring when the total does not fit its result type.
///
/// The result type is DataFusion's (`Int64` for signed integers, `UInt64` for unsigned ones,
/// `Decimal128(min(38, p + 10), s)` for decimals), and so are the input types it accepts.
/// For integer, decimal and duration input the total is kept exact (in a wider integer once
/// the input type cannot hold it) and checked against the result type, a decimal's precision
/// included, when it is evaluated: by the final aggregation, and at every row of a window.
/// Float sums (which overflow to infinity, not to a wrong number) and interval sums are
/// DataFusion's; interval sums still wrap.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct CheckedSum {
    inner: Sum,
}

/// Instantiates `$make::<T>($args)` for every result type whose sum is checked here; `None`
/// for the types left to DataFusion.
macro_rules! checked_sum_type {
    ($result_type:expr, $make:ident, $($arg:expr),*) => {
        match $result_type {
            DataType::Int64 => Some($make::<Int64Type>($($arg),*)),
            DataType::UInt64 => Some($make::<UInt64Type>($($arg),*)),
            DataType::Decimal32(..) => Some($make::<Decimal32Type>($($arg),*)),
            DataType::Decimal64(..) => Some($make::<Decimal64Type>($($arg),*)),
            DataType::Decimal128(..) => Some($make::<Decimal128Type>($($arg),*)),
            DataType::Decimal256(..) => Some($make::<Decimal256Type>($($arg),*)),
            DataType::Duration(TimeUnit::Second) => Some($make::<DurationSecondType>($($arg),*)),
            DataType::Duration(TimeUnit::Millisecond) => {
                Some($make::<DurationMillisecondType>($($arg),*))
            }
            DataType::Duration(TimeUnit::Microsecond) => {
                Some($make::<DurationMicrosecondType>($($arg),*))
            }
            DataType::Duration(TimeUnit::Nanosecond) => {
                Some($make::<DurationNanosecondType>($($arg),*))
            }
            _ => None,
        }
    };
}

/// The scale of a decimal type; 0 for anything else.
fn scale_of(data_type: &DataType) -> i8 {
    match data_type {
        DataType::Decimal32(_, scale)
        | DataType::Decimal64(_, scale)
        | DataType::Decimal128(_, scale)
        | DataType::Decimal256(_, scale) => *scale,
        _ => 0,
    }
}

/// The type of the partial totals of a sum returning `result_type`: the widest decimal of
/// its running total's integer, at the result's scale.
fn state_type<T: SumInput>(result_type: &DataType) -> DataType {
    T::Wide::TYPE_CONSTRUCTOR(T::Wide::MAX_PRECISION, scale_of(result_type))
}

/// What every checked accumulator of one `sum` expression knows about its result.
#[derive(Debug)]
pub(crate) struct SumResult<T: SumInput> {
    pub(crate) result_type: DataType,
    pub(crate) state_type: DataType,
    range: SumRange<T>,
    overflow: Overflow,
}

impl<T: SumInput> SumResult<T> {
    pub(crate) fn new(args: &AccumulatorArgs) -> Result<Self> {
        let result_type = args.return_type().clone();
        Ok(SumResult {
            state_type: state_type::<T>(&result_type),
            range: SumRange::of(&result_type)?,
            overflow: Overflow::new("sum", args),
            result_type,
        })
    }

    /// `total` as the result, or the error that names the aggregate.
    #[inline]
    pub(crate) fn narrow(&self, total: Wide<T>) -> Result<T::Native> {
        self.range.narrow(total).ok_or_else(|| {
            self.overflow.sum(
                &self.result_type,
                Value::of(total, scale_of(&self.result_type)),
            )
        })
    }

    /// `total`, already in the input type, checked against the result type.
    #[inline]
    pub(crate) fn check(&self, total: T::Native) -> Result<()> {
        if self.range.holds(total) {
            Ok(())
        } else {
            self.narrow(T::widen(total)).map(|_| ())
        }
    }

    /// The error of a running total that overflowed even its wide type.
    pub(crate) fn overflowed(&self) -> datafusion::error::DataFusionError {
        self.overflow.sum(&self.result_type, None)
    }

    fn scalar(&self, total: Option<Wide<T>>) -> Result<ScalarValue> {
        let value = total.map(|total| self.narrow(total)).transpose()?;
        ScalarValue::new_primitive::<T>(value, &self.result_type)
    }

    fn state_scalar(&self, total: Option<Wide<T>>) -> Result<ScalarValue> {
        ScalarValue::new_primitive::<T::Wide>(total, &self.state_type)
    }
}

impl AggregateUDFImpl for CheckedSum {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let made = if args.is_distinct {
            checked_sum_type!(args.return_type(), distinct_sum, &args)
        } else {
            checked_sum_type!(args.return_type(), sum, &args)
        };
        made.unwrap_or_else(|| self.inner.accumulator(args))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        // A distinct sum's state is its distinct values, as DataFusion's.
        let state_type = if args.is_distinct {
            None
        } else {
            checked_sum_type!(args.return_type(), state_type, args.return_type())
        };
        match state_type {
            Some(state_type) => Ok(vec![Arc::new(Field::new(
                format_state_name(args.name, "sum"),
                state_type,
                true,
            ))]),
            None => self.inner.state_fields(args),
        }
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        checked_sum_type!(args.return_type(), groups_sum, &args)
            .unwrap_or_else(|| self.inner.create_groups_accumulator(args))
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let made = match (args.is_distinct, args.return_type()) {
            (true, DataType::Int64) => Some(
                SumResult::<Int64Type>::new(&args)
                    .map(|result| Box::new(SlidingDistinctSum::new(result)) as _),
            ),
            // DataFusion has no sliding distinct sum of other types; it says so.
            (true, _) => None,
            (false, result_type) => checked_sum_type!(result_type, sliding_sum, &args),
        };
        made.unwrap_or_else(|| self.inner.create_sliding_accumulator(args))
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        self.inner.reverse_expr()
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.set_monotonicity(data_type)
    }

    /// Not DataFusion's `sum(x + c)` → `sum(x) + c * count(x)` (a speed-up for many such
    /// sums of one column): DataFusion's `+` and `*` wrap, so the rewritten total would wrap
    /// where this sum fails. `sum(x + c)` is summed as written.
    fn simplify_expr_op_literal(
        &self,
        _agg_function: &AggregateFunction,
        _arg: &Expr,
        _op: Operator,
        _lit: &Expr,
        _arg_is_left: bool,
    ) -> Result<Option<Expr>> {
        Ok(None)
    }

    /// A sum read from exact statistics, when it fits the result's precision (statistics add
    /// decimals with checked native arithmetic, which does not check precision).
    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner
            .value_from_stats(statistics_args)
            .filter(|value| match value {
                ScalarValue::Decimal32(Some(v), precision, _) => {
                    Decimal32Type::is_valid_decimal_precision(*v, *precision)
                }
                ScalarValue::Decimal64(Some(v), precision, _) => {
                    Decimal64Type::is_valid_decimal_precision(*v, *precision)
                }
                ScalarValue::Decimal128(Some(v), precision, _) => {
                    Decimal128Type::is_valid_decimal_precision(*v, *precision)
                }
                ScalarValue::Decimal256(Some(v), precision, _) => {
                    Decimal256Type::is_valid_decimal_precision(*v, *precision)
                }
                _ => true,
            })
    }
}

fn sum<T: SumInput>(args: &AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
    Ok(Box::new(SumAccumulator {
        total: None,
        result: SumResult::<T>::new(args)?,
    }))
}

fn distinct_sum<T: SumInput>(args: &AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
    Ok(Box::new(DistinctSum {
        values: GenericDistinctBuffer::new(args.return_type().clone()),
        result: SumResult::<T>::new(args)?,
    }))
}

fn sliding_sum<T: SumInput>(args: &AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
    Ok(Box::new(SlidingSum {
        total: Wide::<T>::default(),
        count: 0,
        result: SumResult::<T>::new(args)?,
    }))
}

fn groups_sum<T: SumInput>(args: &AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
    Ok(Box::new(SumGroupsAccumulator::new(SumResult::<T>::new(
        args,
    )?)))
}

/// The sum of one group of rows (an aggregate without `GROUP BY`, or a window's growing frame).
#[derive(Debug)]
struct SumAccumulator<T: SumInput> {
    /// `None` until a non-null value arrives: the sum of no values is NULL.
    total: Option<Wide<T>>,
    result: SumResult<T>,
}

impl<T: SumInput> Accumulator for SumAccumulator<T> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<T>();
        if values.null_count() == values.len() {
            return Ok(());
        }
        let total = self.total.unwrap_or_default();
        self.total = Some(add_values(total, values).ok_or_else(|| self.result.overflowed())?);
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let partials = states[0].as_primitive::<T::Wide>();
        if partials.null_count() == partials.len() {
            return Ok(());
        }
        let total = self.total.unwrap_or_default();
        self.total = Some(add_partials(total, partials).ok_or_else(|| self.result.overflowed())?);
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.result.state_scalar(self.total)?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.result.scalar(self.total)
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }
}

/// The sum of a sliding window's frame: rows enter and leave it.
#[derive(Debug)]
struct SlidingSum<T: SumInput> {
    total: Wide<T>,
    /// Non-null values in the frame; the sum of none is NULL.
    count: u64,
    result: SumResult<T>,
}

impl<T: SumInput> Accumulator for SlidingSum<T> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<T>();
        self.total = add_values(self.total, values).ok_or_else(|| self.result.overflowed())?;
        self.count += (values.len() - values.null_count()) as u64;
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<T>();
        self.total = subtract_values(self.total, values).ok_or_else(|| self.result.overflowed())?;
        self.count -= (values.len() - values.null_count()) as u64;
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let partials = states[0].as_primitive::<T::Wide>();
        self.total = add_partials(self.total, partials).ok_or_else(|| self.result.overflowed())?;
        self.count += (partials.len() - partials.null_count()) as u64;
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let total = (self.count != 0).then_some(self.total);
        Ok(vec![self.result.state_scalar(total)?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.result.scalar((self.count != 0).then_some(self.total))
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }
}

/// `sum(DISTINCT x)`: DataFusion's set of distinct values (which is also the state), added
/// up exactly when evaluated.
#[derive(Debug)]
struct DistinctSum<T: SumInput> {
    values: GenericDistinctBuffer<T>,
    result: SumResult<T>,
}

impl<T: SumInput> Accumulator for DistinctSum<T> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.values.update_batch(values)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.values.merge_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.values.state()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.values.values.is_empty() {
            return self.result.scalar(None);
        }
        let mut total = Wide::<T>::default();
        for value in &self.values.values {
            total = total
                .checked_add(T::widen(value.0))
                .ok_or_else(|| self.result.overflowed())?;
        }
        self.result.scalar(Some(total))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.values.size()
    }
}

/// `sum(DISTINCT x) OVER (... ROWS BETWEEN ...)` of `bigint`s: how many times each value is
/// in the frame, and the sum of the distinct ones.
#[derive(Debug)]
struct SlidingDistinctSum {
    counts: HashMap<i64, usize>,
    total: i128,
    result: SumResult<Int64Type>,
}

impl SlidingDistinctSum {
    fn new(result: SumResult<Int64Type>) -> Self {
        SlidingDistinctSum {
            counts: HashMap::new(),
            total: 0,
            result,
        }
    }

    fn enter(&mut self, values: &PrimitiveArray<Int64Type>) -> Result<()> {
        for value in values.iter().flatten() {
            let count = self.counts.entry(value).or_insert(0);
            if *count == 0 {
                self.total = self
                    .total
                    .checked_add(i128::from(value))
                    .ok_or_else(|| self.result.overflowed())?;
            }
            *count += 1;
        }
        Ok(())
    }
}

impl Accumulator for SlidingDistinctSum {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.enter(values[0].as_primitive::<Int64Type>())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for value in values[0].as_primitive::<Int64Type>().iter().flatten() {
            if let Entry::Occupied(mut count) = self.counts.entry(value) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                    self.total -= i128::from(value);
                }
            }
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for list in states[0].as_list::<i32>().iter().flatten() {
            self.enter(list.as_primitive::<Int64Type>())?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values: Vec<ScalarValue> = self
            .counts
            .keys()
            .map(|v| ScalarValue::Int64(Some(*v)))
            .collect();
        Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(
            &values,
            &DataType::Int64,
        ))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.result
            .scalar((!self.counts.is_empty()).then_some(self.total))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.counts.capacity() * size_of_val(&(0i64, 0usize))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{BooleanArray, Decimal128Array, Decimal256Array, Int64Array};
    use arrow::datatypes::{Schema, i256};
    use datafusion::logical_expr::EmitTo;
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::expressions::Column;

    use super::*;

    /// Builds the accumulators of `sum(t.v)` over a column of `input`.
    struct SumOf {
        udaf: CheckedSum,
        schema: Schema,
        input: Vec<FieldRef>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        result: FieldRef,
        distinct: bool,
    }

    impl SumOf {
        fn of(input: DataType) -> Self {
            let udaf = CheckedSum::default();
            let result = udaf.return_type(std::slice::from_ref(&input)).unwrap();
            let field = Arc::new(Field::new("v", input, true));
            SumOf {
                udaf,
                schema: Schema::new(vec![field.clone()]),
                input: vec![field],
                exprs: vec![Arc::new(Column::new("v", 0))],
                result: Arc::new(Field::new("sum(t.v)", result, true)),
                distinct: false,
            }
        }

        fn distinct(mut self) -> Self {
            self.distinct = true;
            self
        }

        fn args(&self) -> AccumulatorArgs<'_> {
            AccumulatorArgs {
                return_field: self.result.clone(),
                schema: &self.schema,
                ignore_nulls: false,
                order_bys: &[],
                is_reversed: false,
                name: if self.distinct {
                    "sum(DISTINCT t.v)"
                } else {
                    "sum(t.v)"
                },
                is_distinct: self.distinct,
                exprs: &self.exprs,
                expr_fields: &self.input,
            }
        }

        fn row(&self) -> Box<dyn Accumulator> {
            self.udaf.accumulator(self.args()).unwrap()
        }

        fn sliding(&self) -> Box<dyn Accumulator> {
            self.udaf.create_sliding_accumulator(self.args()).unwrap()
        }

        fn groups(&self) -> Box<dyn GroupsAccumulator> {
            self.udaf.create_groups_accumulator(self.args()).unwrap()
        }
    }

    fn ints(values: &[i64]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    fn decimals(values: &[i128], precision: u8, scale: i8) -> ArrayRef {
        Arc::new(
            Decimal128Array::from(values.to_vec())
                .with_precision_and_scale(precision, scale)
                .unwrap(),
        )
    }

    fn error_text(result: Result<impl std::fmt::Debug>) -> String {
        match result {
            Ok(value) => panic!("expected an overflow, got {value:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Every row's partial state, merged into one final accumulator.
    fn partial_then_final(sum: &SumOf, partitions: &[ArrayRef]) -> Box<dyn Accumulator> {
        let mut last = sum.row();
        for values in partitions {
            let mut partial = sum.row();
            partial.update_batch(std::slice::from_ref(values)).unwrap();
            let state: Vec<ArrayRef> = partial
                .state()
                .unwrap()
                .into_iter()
                .map(|s| s.to_array().unwrap())
                .collect();
            last.merge_batch(&state).unwrap();
        }
        last
    }

    #[test]
    fn a_bigint_sum_past_the_largest_bigint_fails_naming_the_aggregate() {
        let sum = SumOf::of(DataType::Int64);
        let mut acc = sum.row();
        acc.update_batch(&[ints(&[i64::MAX, 1])]).unwrap();
        let text = error_text(acc.evaluate());
        assert!(
            text.contains("sum(t.v) overflowed Int64: the total 9223372036854775808 is outside"),
            "{text}"
        );
    }

    #[test]
    fn partial_totals_beyond_the_result_type_cancel_exactly_in_the_final_sum() {
        let sum = SumOf::of(DataType::Int64);
        let mut acc = partial_then_final(
            &sum,
            &[
                ints(&[i64::MAX, i64::MAX]),
                ints(&[-i64::MAX, -i64::MAX + 5]),
            ],
        );
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(Some(5)));
    }

    #[test]
    fn a_sum_of_no_values_is_null() {
        let sum = SumOf::of(DataType::Int64);
        let mut acc = partial_then_final(&sum, &[Arc::new(Int64Array::from(vec![None, None]))]);
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(None));
    }

    #[test]
    fn a_decimal_sum_fits_its_precision_exactly_or_fails() {
        let max = 10_i128.pow(38) - 1;
        let sum = SumOf::of(DataType::Decimal128(38, 0));
        let mut exact =
            partial_then_final(&sum, &[decimals(&[max - 1], 38, 0), decimals(&[1], 38, 0)]);
        assert_eq!(
            exact.evaluate().unwrap(),
            ScalarValue::Decimal128(Some(max), 38, 0)
        );

        // 10^38 fits an i128 (DataFusion returns it, with 39 digits in a 38-digit type); twice
        // that wraps. Both fail here.
        for values in [[max, 1], [max, max]] {
            let mut acc = partial_then_final(&sum, &[decimals(&values, 38, 0)]);
            let text = error_text(acc.evaluate());
            assert!(
                text.contains("sum(t.v) overflowed Decimal128(38, 0)")
                    && text.contains("has 39 digits before the decimal point"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_decimal_sum_checks_a_precision_below_38() {
        // decimal(5, 2) sums to decimal(15, 2): 10^13 does not fit it, though an i128 holds it.
        // It takes 10^10 rows; a partial state from elsewhere stands in for them.
        let sum = SumOf::of(DataType::Decimal128(5, 2));
        let mut acc = sum.row();
        let partial: ArrayRef = Arc::new(
            Decimal256Array::from(vec![i256::from_i128(10_i128.pow(15))])
                .with_precision_and_scale(76, 2)
                .unwrap(),
        );
        acc.merge_batch(&[partial]).unwrap();
        let text = error_text(acc.evaluate());
        assert!(
            text.contains("overflowed Decimal128(15, 2): the total 10000000000000.00 has 14")
                && text.contains("wider decimal"),
            "{text}"
        );
    }

    #[test]
    fn a_256_bit_sum_past_its_integer_fails_while_adding() {
        let max = i256::from_string(&"9".repeat(76)).unwrap();
        let values: ArrayRef = Arc::new(
            Decimal256Array::from(vec![max; 6])
                .with_precision_and_scale(76, 0)
                .unwrap(),
        );
        let sum = SumOf::of(DataType::Decimal256(76, 0));
        let text = error_text(sum.row().update_batch(&[values]));
        assert!(
            text.contains("passed the largest 256-bit decimal"),
            "{text}"
        );
    }

    #[test]
    fn grouped_sums_are_checked_per_group_through_partial_and_final() {
        let sum = SumOf::of(DataType::Int64);
        let mut partial = sum.groups();
        partial
            .update_batch(&[ints(&[i64::MAX, 3, i64::MAX, 4])], &[0, 1, 0, 1], None, 2)
            .unwrap();
        let state = partial.state(EmitTo::All).unwrap();
        assert_eq!(state[0].data_type(), &DataType::Decimal128(38, 0));

        let mut last = sum.groups();
        last.merge_batch(&state, &[0, 1], 2).unwrap();
        let text = error_text(last.evaluate(EmitTo::All));
        assert!(text.contains("the total 18446744073709551614"), "{text}");

        // The same partial state, with the other half of group 0 cancelling it.
        let mut last = sum.groups();
        last.merge_batch(&state, &[0, 1], 2).unwrap();
        let other = sum
            .groups()
            .convert_to_state(&[ints(&[-i64::MAX, -i64::MAX, 7])], None)
            .unwrap();
        last.merge_batch(&other, &[0, 0, 2], 3).unwrap();
        let sums = last.evaluate(EmitTo::All).unwrap();
        assert_eq!(
            sums.as_primitive::<Int64Type>(),
            &Int64Array::from(vec![0, 7, 7])
        );
    }

    /// One group's sum, through a groups accumulator fed one batch per slice.
    fn grouped(sum: &SumOf, batches: &[ArrayRef]) -> Result<ArrayRef> {
        let mut acc = sum.groups();
        for values in batches {
            acc.update_batch(
                std::slice::from_ref(values),
                &vec![0; values.len()],
                None,
                1,
            )?;
        }
        acc.evaluate(EmitTo::All)
    }

    #[test]
    fn grouped_totals_that_wrap_their_native_type_are_corrected_exactly() {
        let sum = SumOf::of(DataType::Int64);
        // Wraps three times up and three times down, within one batch and across two.
        let sums = grouped(
            &sum,
            &[
                ints(&[i64::MAX, i64::MAX, i64::MAX]),
                ints(&[-i64::MAX, -i64::MAX, -i64::MAX + 1]),
            ],
        )
        .unwrap();
        assert_eq!(sums.as_primitive::<Int64Type>().value(0), 1);
        let sums = grouped(&sum, &[ints(&[i64::MIN, -1, 1])]).unwrap();
        assert_eq!(sums.as_primitive::<Int64Type>().value(0), i64::MIN);

        let unsigned = SumOf::of(DataType::UInt64);
        let values: ArrayRef = Arc::new(arrow::array::UInt64Array::from(vec![u64::MAX, 1]));
        let text = error_text(grouped(&unsigned, &[values]));
        assert!(text.contains("the total 18446744073709551616"), "{text}");

        let max = 10_i128.pow(38) - 1;
        let decimal = SumOf::of(DataType::Decimal128(38, 0));
        let sums = grouped(&decimal, &[decimals(&[max, max, -max], 38, 0)]).unwrap();
        assert_eq!(sums.as_primitive::<Decimal128Type>().value(0), max);
    }

    #[test]
    fn grouped_partial_totals_that_wrap_when_merged_are_corrected_exactly() {
        let sum = SumOf::of(DataType::Int64);
        let partial = |v: i64| {
            let mut acc = sum.groups();
            acc.update_batch(&[ints(&[v])], &[0], None, 1).unwrap();
            acc.state(EmitTo::All).unwrap()
        };
        let mut last = sum.groups();
        for v in [i64::MAX, i64::MAX, -i64::MAX] {
            last.merge_batch(&partial(v), &[0], 1).unwrap();
        }
        let sums = last.evaluate(EmitTo::All).unwrap();
        assert_eq!(sums.as_primitive::<Int64Type>().value(0), i64::MAX);
    }

    #[test]
    fn a_grouped_256_bit_sum_past_its_integer_fails_while_adding() {
        let max = i256::from_string(&"9".repeat(76)).unwrap();
        let values: ArrayRef = Arc::new(
            Decimal256Array::from(vec![max; 6])
                .with_precision_and_scale(76, 0)
                .unwrap(),
        );
        let sum = SumOf::of(DataType::Decimal256(76, 0));
        let text = error_text(grouped(&sum, &[values]));
        assert!(
            text.contains("passed the largest 256-bit decimal"),
            "{text}"
        );
    }

    #[test]
    fn grouped_sums_keep_groups_without_values_null() {
        let sum = SumOf::of(DataType::Int64);
        let mut acc = sum.groups();
        let filter = BooleanArray::from(vec![true, false, true]);
        acc.update_batch(&[ints(&[1, 2, 3])], &[0, 1, 0], Some(&filter), 2)
            .unwrap();
        let sums = acc.evaluate(EmitTo::All).unwrap();
        assert_eq!(
            sums.as_primitive::<Int64Type>(),
            &Int64Array::from(vec![Some(4), None])
        );
    }

    #[test]
    fn a_sliding_window_sum_is_checked_for_each_frame() {
        let sum = SumOf::of(DataType::Int64);
        let mut acc = sum.sliding();
        acc.update_batch(&[ints(&[i64::MAX])]).unwrap();
        acc.update_batch(&[ints(&[1])]).unwrap();
        assert!(acc.evaluate().is_err());
        acc.retract_batch(&[ints(&[i64::MAX])]).unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(Some(1)));
        acc.retract_batch(&[ints(&[1])]).unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(None));
    }

    #[test]
    fn a_distinct_sum_adds_each_value_once_and_is_checked() {
        let sum = SumOf::of(DataType::Int64).distinct();
        let mut acc = sum.row();
        acc.update_batch(&[ints(&[5, 5, 6])]).unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(Some(11)));
        acc.update_batch(&[ints(&[i64::MAX])]).unwrap();
        let text = error_text(acc.evaluate());
        assert!(
            text.contains("sum(DISTINCT t.v) overflowed Int64"),
            "{text}"
        );

        let mut sliding = sum.sliding();
        sliding
            .update_batch(&[ints(&[i64::MAX, i64::MAX])])
            .unwrap();
        assert_eq!(
            sliding.evaluate().unwrap(),
            ScalarValue::Int64(Some(i64::MAX))
        );
        sliding.update_batch(&[ints(&[1])]).unwrap();
        assert!(sliding.evaluate().is_err());
    }

    #[test]
    fn float_sums_are_datafusions() {
        let sum = SumOf::of(DataType::Float64);
        let state = sum
            .udaf
            .state_fields(StateFieldsArgs {
                name: "sum(t.v)",
                input_fields: &sum.input,
                return_field: sum.result.clone(),
                ordering_fields: &[],
                is_distinct: false,
            })
            .unwrap();
        assert_eq!(state[0].data_type(), &DataType::Float64);
    }
}
