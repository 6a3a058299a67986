//! `avg` that fails instead of wrapping: DataFusion's [`Avg`] with checked accumulators for
//! decimal input.
//!
//! A decimal average is a count and a sum, divided when evaluated. DataFusion adds the sum up
//! in a wider decimal than the input (its state layout, kept here: `[count: UInt64, sum]`)
//! with wrapping addition; these accumulators add with checked addition and divide as
//! DataFusion's `DecimalAverager` does. Integer and float input is averaged as `Float64`,
//! which cannot wrap, and duration input is DataFusion's (whose sums still wrap).

use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of_val;

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use arrow::compute::DecimalCast;
use arrow::datatypes::{
    ArrowNativeType, ArrowNativeTypeOp, DataType, Decimal32Type, Decimal64Type, Decimal128Type,
    Decimal256Type, DecimalType, FieldRef, UInt64Type,
};
use datafusion::common::{
    DataFusionError, Result, ScalarValue, internal_datafusion_err, internal_err,
};
use datafusion::functions_aggregate::average::Avg;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, ReversedUDAF,
    Signature,
};
use datafusion_functions_aggregate_common::utils::{DecimalAverager, GenericDistinctBuffer};

use super::avg_groups::AvgGroupsAccumulator;
use super::overflow::{Overflow, Value};
use super::sum_input::{CheckedInt, add_partials};

/// The `avg` UDAF (and its alias `mean`), ready to register in place of DataFusion's.
pub fn checked_avg_udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(CheckedAvg::default())
}

/// `avg(x)`, erroring when the sum of a decimal argument overflows or the average does not
/// fit its result type, `Decimal(min(38, p + 4), min(38, s + 4))` for `Decimal(p, s)` input.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct CheckedAvg {
    inner: Avg,
}

/// A decimal type `avg` adds up in a (possibly wider) decimal sum type.
pub(crate) trait AvgInput:
    DecimalType<Native: CheckedInt> + fmt::Debug + Send + Sync
{
}

impl<T: DecimalType<Native: CheckedInt> + fmt::Debug + Send + Sync> AvgInput for T {}

/// Instantiates `$make::<Input, Sum>($args)` for every pair of input and sum types DataFusion
/// averages decimals with; `None` for anything else.
macro_rules! decimal_avg_types {
    ($input:expr, $sum:expr, $make:ident, $($arg:expr),*) => {
        match ($input, $sum) {
            (DataType::Decimal32(..), DataType::Decimal64(..)) => {
                Some($make::<Decimal32Type, Decimal64Type>($($arg),*))
            }
            (DataType::Decimal32(..), DataType::Decimal128(..)) => {
                Some($make::<Decimal32Type, Decimal128Type>($($arg),*))
            }
            (DataType::Decimal64(..), DataType::Decimal64(..)) => {
                Some($make::<Decimal64Type, Decimal64Type>($($arg),*))
            }
            (DataType::Decimal64(..), DataType::Decimal128(..)) => {
                Some($make::<Decimal64Type, Decimal128Type>($($arg),*))
            }
            (DataType::Decimal128(..), DataType::Decimal128(..)) => {
                Some($make::<Decimal128Type, Decimal128Type>($($arg),*))
            }
            (DataType::Decimal128(..), DataType::Decimal256(..)) => {
                Some($make::<Decimal128Type, Decimal256Type>($($arg),*))
            }
            (DataType::Decimal256(..), DataType::Decimal256(..)) => {
                Some($make::<Decimal256Type, Decimal256Type>($($arg),*))
            }
            _ => None,
        }
    };
}

impl CheckedAvg {
    /// The decimal type DataFusion adds up `avg`'s argument in: the `sum` field of its state.
    /// `None` unless the argument is a decimal.
    fn decimal_sum_type(&self, args: &AccumulatorArgs) -> Result<Option<DataType>> {
        let decimal = |t: &DataType| {
            matches!(
                t,
                DataType::Decimal32(..)
                    | DataType::Decimal64(..)
                    | DataType::Decimal128(..)
                    | DataType::Decimal256(..)
            )
        };
        let Some(input) = args.expr_fields.first() else {
            return Ok(None);
        };
        if !decimal(input.data_type()) || !decimal(args.return_type()) {
            return Ok(None);
        }
        let state = self.inner.state_fields(StateFieldsArgs {
            name: args.name,
            input_fields: args.expr_fields,
            return_field: args.return_field.clone(),
            ordering_fields: &[],
            is_distinct: false,
        })?;
        match state.get(1) {
            Some(sum) => Ok(Some(sum.data_type().clone())),
            None => internal_err!("avg's state has no sum field: {state:?}"),
        }
    }
}

impl AggregateUDFImpl for CheckedAvg {
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
        let Some(sum_type) = self.decimal_sum_type(&args)? else {
            return self.inner.accumulator(args);
        };
        let input = args.expr_fields[0].data_type();
        let made = if args.is_distinct {
            decimal_avg_types!(input, &sum_type, distinct_avg, &args, &sum_type)
        } else {
            decimal_avg_types!(input, &sum_type, avg, &args, &sum_type)
        };
        made.unwrap_or_else(|| self.inner.accumulator(args))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let Some(sum_type) = self.decimal_sum_type(&args)? else {
            return self.inner.create_groups_accumulator(args);
        };
        let input = args.expr_fields[0].data_type();
        decimal_avg_types!(input, &sum_type, groups_avg, &args, &sum_type)
            .unwrap_or_else(|| self.inner.create_groups_accumulator(args))
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        self.inner.reverse_expr()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

fn avg<I: AvgInput, S: AvgInput>(
    args: &AccumulatorArgs,
    sum_type: &DataType,
) -> Result<Box<dyn Accumulator>>
where
    I::Native: Into<S::Native>,
{
    Ok(Box::new(DecimalAvg {
        sum: None,
        count: 0,
        result: AvgResult::<I, S>::new(args, sum_type)?,
    }))
}

fn distinct_avg<I: AvgInput, S: AvgInput>(
    args: &AccumulatorArgs,
    sum_type: &DataType,
) -> Result<Box<dyn Accumulator>>
where
    I::Native: Into<S::Native>,
{
    let result = AvgResult::<I, S>::new(args, sum_type)?;
    // DataFusion's distinct state: the distinct values, as the input type at the sum's scale.
    let values_type = I::TYPE_CONSTRUCTOR(I::MAX_PRECISION, result.sum_scale);
    Ok(Box::new(DistinctDecimalAvg {
        values: GenericDistinctBuffer::new(values_type),
        result,
    }))
}

fn groups_avg<I: AvgInput, S: AvgInput>(
    args: &AccumulatorArgs,
    sum_type: &DataType,
) -> Result<Box<dyn GroupsAccumulator>>
where
    I::Native: Into<S::Native>,
{
    Ok(Box::new(AvgGroupsAccumulator::new(AvgResult::<I, S>::new(
        args, sum_type,
    )?)))
}

/// What every checked accumulator of one decimal `avg` expression knows: the input type `I`,
/// the type `S` its sum is added up in, and how to divide.
pub(crate) struct AvgResult<I: AvgInput, S: AvgInput> {
    pub(crate) sum_type: DataType,
    pub(crate) result_type: DataType,
    sum_scale: i8,
    averager: DecimalAverager<S>,
    overflow: Overflow,
    _input: PhantomData<I>,
}

impl<I: AvgInput, S: AvgInput> fmt::Debug for AvgResult<I, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AvgResult")
            .field("sum_type", &self.sum_type)
            .field("result_type", &self.result_type)
            .field("overflow", &self.overflow)
            .finish_non_exhaustive()
    }
}

impl<I: AvgInput, S: AvgInput> AvgResult<I, S>
where
    I::Native: Into<S::Native>,
{
    fn new(args: &AccumulatorArgs, sum_type: &DataType) -> Result<Self> {
        let result_type = args.return_type().clone();
        let (
            DataType::Decimal32(_, sum_scale)
            | DataType::Decimal64(_, sum_scale)
            | DataType::Decimal128(_, sum_scale)
            | DataType::Decimal256(_, sum_scale),
            DataType::Decimal32(precision, scale)
            | DataType::Decimal64(precision, scale)
            | DataType::Decimal128(precision, scale)
            | DataType::Decimal256(precision, scale),
        ) = (sum_type, &result_type)
        else {
            return internal_err!("avg of a decimal adds up {sum_type} into {result_type}");
        };
        Ok(AvgResult {
            averager: DecimalAverager::try_new(*sum_scale, *precision, *scale)?,
            sum_scale: *sum_scale,
            sum_type: sum_type.clone(),
            overflow: Overflow::new("avg", args),
            result_type,
            _input: PhantomData,
        })
    }

    /// `sum / count` at the result's scale, or the error that names the aggregate.
    pub(crate) fn average(&self, sum: S::Native, count: u64) -> Result<I::Native> {
        let Some(count) = usize::try_from(count).ok().and_then(S::Native::from_usize) else {
            return internal_err!(
                "avg counted {count} rows, more than {} holds",
                self.sum_type
            );
        };
        self.averager
            .avg(sum, count)
            .ok()
            .and_then(I::Native::from_decimal)
            .ok_or_else(|| {
                let average = Value::of(sum.div_wrapping(count), self.sum_scale);
                self.overflow
                    .avg(&self.result_type, &self.sum_type, average)
            })
    }

    /// The error of a sum that overflowed its type.
    pub(crate) fn sum_overflowed(&self) -> DataFusionError {
        self.overflow.avg_sum(&self.sum_type)
    }

    /// Adds the non-null `values` to `sum`, widened.
    fn add_values(&self, sum: S::Native, values: &PrimitiveArray<I>) -> Result<S::Native> {
        values
            .iter()
            .flatten()
            .try_fold(sum, |sum, v| sum.checked_add(v.into()))
            .ok_or_else(|| self.sum_overflowed())
    }

    fn scalar(&self, sum: Option<S::Native>, count: u64) -> Result<ScalarValue> {
        let average = match (sum, count) {
            (Some(sum), 1..) => Some(self.average(sum, count)?),
            _ => None,
        };
        ScalarValue::new_primitive::<I>(average, &self.result_type)
    }
}

/// The average of one group of rows (or of a window's frame: rows can leave it).
#[derive(Debug)]
struct DecimalAvg<I: AvgInput, S: AvgInput> {
    sum: Option<S::Native>,
    count: u64,
    result: AvgResult<I, S>,
}

impl<I: AvgInput, S: AvgInput> Accumulator for DecimalAvg<I, S>
where
    I::Native: Into<S::Native>,
{
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<I>();
        if values.null_count() == values.len() {
            return Ok(());
        }
        self.count += (values.len() - values.null_count()) as u64;
        self.sum = Some(
            self.result
                .add_values(self.sum.unwrap_or_default(), values)?,
        );
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<I>();
        self.count -= (values.len() - values.null_count()) as u64;
        let sum = values
            .iter()
            .flatten()
            .try_fold(self.sum.unwrap_or_default(), |sum, v| {
                sum.checked_sub(v.into())
            })
            .ok_or_else(|| self.result.sum_overflowed())?;
        self.sum = Some(sum);
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let counts = states[0].as_primitive::<UInt64Type>();
        let partials = states[1].as_primitive::<S>();
        self.count = counts
            .iter()
            .flatten()
            .try_fold(self.count, u64::checked_add)
            .ok_or_else(|| internal_datafusion_err!("avg counted more than {} rows", u64::MAX))?;
        if partials.null_count() < partials.len() {
            let sum = add_partials(self.sum.unwrap_or_default(), partials)
                .ok_or_else(|| self.result.sum_overflowed())?;
            self.sum = Some(sum);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::from(self.count),
            ScalarValue::new_primitive::<S>(self.sum, &self.result.sum_type)?,
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.result.scalar(self.sum, self.count)
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }
}

/// `avg(DISTINCT x)`: DataFusion's set of distinct values (also the state), added up with
/// checked addition when evaluated.
#[derive(Debug)]
struct DistinctDecimalAvg<I: AvgInput, S: AvgInput> {
    values: GenericDistinctBuffer<I>,
    result: AvgResult<I, S>,
}

impl<I: AvgInput, S: AvgInput> Accumulator for DistinctDecimalAvg<I, S>
where
    I::Native: Into<S::Native>,
{
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
        let mut sum = S::Native::default();
        for value in &self.values.values {
            sum = sum
                .checked_add(value.0.into())
                .ok_or_else(|| self.result.sum_overflowed())?;
        }
        let count = self.values.values.len() as u64;
        self.result.scalar(Some(sum), count)
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.values.size()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Decimal128Array, Decimal256Array};
    use arrow::datatypes::{Field, Schema, i256};
    use datafusion::logical_expr::EmitTo;
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::expressions::Column;

    use super::*;

    /// Builds the accumulators of `avg(t.v)` over a column of `input`.
    struct AvgOf {
        udaf: CheckedAvg,
        schema: Schema,
        input: Vec<FieldRef>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        result: FieldRef,
        distinct: bool,
    }

    impl AvgOf {
        fn of(input: DataType) -> Self {
            let udaf = CheckedAvg::default();
            let result = udaf.return_type(std::slice::from_ref(&input)).unwrap();
            let field = Arc::new(Field::new("v", input, true));
            AvgOf {
                udaf,
                schema: Schema::new(vec![field.clone()]),
                input: vec![field],
                exprs: vec![Arc::new(Column::new("v", 0))],
                result: Arc::new(Field::new("avg(t.v)", result, true)),
                distinct: false,
            }
        }

        fn args(&self) -> AccumulatorArgs<'_> {
            AccumulatorArgs {
                return_field: self.result.clone(),
                schema: &self.schema,
                ignore_nulls: false,
                order_bys: &[],
                is_reversed: false,
                name: "avg(t.v)",
                is_distinct: self.distinct,
                exprs: &self.exprs,
                expr_fields: &self.input,
            }
        }

        fn row(&self) -> Box<dyn Accumulator> {
            self.udaf.accumulator(self.args()).unwrap()
        }

        fn groups(&self) -> Box<dyn GroupsAccumulator> {
            self.udaf.create_groups_accumulator(self.args()).unwrap()
        }
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

    #[test]
    fn an_average_of_large_decimals_is_exact_through_partial_and_final() {
        // Quarry's `decimal`: Decimal128(38, 10), averaged as Decimal128(38, 14).
        let avg = AvgOf::of(DataType::Decimal128(38, 10));
        let big = 10_i128.pow(33) - 1; // 99999999999999999999999.9999999999
        let mut last = avg.row();
        for values in [[big, big], [big, -big + 4]] {
            let mut partial = avg.row();
            partial.update_batch(&[decimals(&values, 38, 10)]).unwrap();
            let state: Vec<ArrayRef> = partial
                .state()
                .unwrap()
                .iter()
                .map(|s| s.to_array().unwrap())
                .collect();
            last.merge_batch(&state).unwrap();
        }
        // (2 big + 4) / 4 at scale 14 = (big / 2 + 1) * 10^4.
        assert_eq!(
            last.evaluate().unwrap(),
            ScalarValue::Decimal128(Some((big / 2 + 1) * 10_000 + 5_000), 38, 14)
        );
    }

    #[test]
    fn grouped_averages_are_exact_and_keep_datafusions_state() {
        let avg = AvgOf::of(DataType::Decimal128(38, 10));
        let big = 10_i128.pow(33) - 1;
        let mut partial = avg.groups();
        partial
            .update_batch(&[decimals(&[big, 1, big], 38, 10)], &[0, 1, 0], None, 2)
            .unwrap();
        let state = partial.state(EmitTo::All).unwrap();
        assert_eq!(state[0].data_type(), &DataType::UInt64);
        assert_eq!(state[1].data_type(), &DataType::Decimal256(76, 10));
        let mut last = avg.groups();
        last.merge_batch(&state, &[0, 1], 2).unwrap();
        let averages = last.evaluate(EmitTo::All).unwrap();
        assert_eq!(
            averages.as_primitive::<Decimal128Type>(),
            &Decimal128Array::from(vec![big * 10_000, 10_000])
                .with_precision_and_scale(38, 14)
                .unwrap()
        );
    }

    #[test]
    fn an_average_beyond_its_result_type_fails_naming_a_scale_that_fits() {
        let avg = AvgOf::of(DataType::Decimal128(38, 10));
        // 10^25 at scale 10: 26 digits before the point, where Decimal128(38, 14) holds 24.
        let mut acc = avg.row();
        acc.update_batch(&[decimals(&[10_i128.pow(35)], 38, 10)])
            .unwrap();
        let text = error_text(acc.evaluate());
        assert!(
            text.contains("avg(t.v) overflowed Decimal128(38, 14): the average")
                && text.ends_with("e.g. avg(CAST(t.v AS decimal(38, 8)))"),
            "{text}"
        );
    }

    #[test]
    fn a_256_bit_sum_past_its_integer_fails_naming_the_average() {
        let max = i256::from_string(&"9".repeat(76)).unwrap();
        let values: ArrayRef = Arc::new(
            Decimal256Array::from(vec![max; 6])
                .with_precision_and_scale(76, 0)
                .unwrap(),
        );
        let avg = AvgOf::of(DataType::Decimal256(76, 0));
        let text = error_text(avg.row().update_batch(std::slice::from_ref(&values)));
        assert!(
            text.contains("avg(t.v) overflowed: the sum of its values does not fit Decimal256"),
            "{text}"
        );
        let text = error_text(avg.groups().update_batch(&[values], &[0; 6], None, 1));
        assert!(text.contains("avg(t.v) overflowed"), "{text}");
    }

    #[test]
    fn a_distinct_average_counts_each_value_once() {
        let mut avg = AvgOf::of(DataType::Decimal128(10, 2));
        avg.distinct = true;
        let mut acc = avg.row();
        acc.update_batch(&[decimals(&[100, 100, 300], 10, 2)])
            .unwrap();
        assert_eq!(
            acc.evaluate().unwrap(),
            ScalarValue::Decimal128(Some(2_000_000), 14, 6)
        );
    }

    #[test]
    fn a_window_average_drops_rows_leaving_the_frame() {
        let avg = AvgOf::of(DataType::Decimal128(10, 2));
        let mut acc = avg.row();
        acc.update_batch(&[decimals(&[100, 300], 10, 2)]).unwrap();
        acc.retract_batch(&[decimals(&[100], 10, 2)]).unwrap();
        assert_eq!(
            acc.evaluate().unwrap(),
            ScalarValue::Decimal128(Some(3_000_000), 14, 6)
        );
        acc.retract_batch(&[decimals(&[300], 10, 2)]).unwrap();
        assert_eq!(
            acc.evaluate().unwrap(),
            ScalarValue::Decimal128(None, 14, 6)
        );
    }

    #[test]
    fn float_averages_are_datafusions() {
        let avg = AvgOf::of(DataType::Float64);
        let mut acc = avg.row();
        acc.update_batch(&[Arc::new(arrow::array::Float64Array::from(vec![1.0, 2.0]))])
            .unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(Some(1.5)));
    }
}
