//! Decimal `avg` with `GROUP BY`: a count and a checked running sum per group, in
//! DataFusion's state layout (`[count: UInt64, sum]`).

use std::mem::size_of;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, PrimitiveArray, UInt64Array};
use arrow::datatypes::UInt64Type;
use datafusion::common::Result;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::accumulate::NullState;
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::nulls::{
    filtered_null_mask, set_nulls,
};

use super::checked_avg::{AvgInput, AvgResult};
use super::sum_input::CheckedInt;

/// Per-group counts and sums of one decimal `avg` expression.
#[derive(Debug)]
pub(crate) struct AvgGroupsAccumulator<I: AvgInput, S: AvgInput> {
    counts: Vec<u64>,
    sums: Vec<S::Native>,
    null_state: NullState,
    result: AvgResult<I, S>,
}

impl<I: AvgInput, S: AvgInput> AvgGroupsAccumulator<I, S>
where
    I::Native: Into<S::Native>,
{
    pub(crate) fn new(result: AvgResult<I, S>) -> Self {
        AvgGroupsAccumulator {
            counts: Vec::new(),
            sums: Vec::new(),
            null_state: NullState::new(),
            result,
        }
    }
}

impl<I: AvgInput, S: AvgInput> GroupsAccumulator for AvgGroupsAccumulator<I, S>
where
    I::Native: Into<S::Native>,
{
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let values = values[0].as_primitive::<I>();
        self.counts.resize(total_num_groups, 0);
        self.sums.resize(total_num_groups, S::Native::default());
        let (counts, sums) = (&mut self.counts, &mut self.sums);
        let mut overflowed = false;
        self.null_state.accumulate(
            group_indices,
            values,
            opt_filter,
            total_num_groups,
            |group, value| {
                let (sum, overflow) = sums[group].overflowing_add(value.into());
                sums[group] = sum;
                overflowed |= overflow;
                counts[group] += 1;
            },
        );
        if overflowed {
            Err(self.result.sum_overflowed())
        } else {
            Ok(())
        }
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let partial_counts = values[0].as_primitive::<UInt64Type>();
        let partial_sums = values[1].as_primitive::<S>();
        self.counts.resize(total_num_groups, 0);
        self.sums.resize(total_num_groups, S::Native::default());
        let (counts, sums) = (&mut self.counts, &mut self.sums);
        self.null_state.accumulate(
            group_indices,
            partial_counts,
            None,
            total_num_groups,
            |group, count| counts[group] += count,
        );
        let mut overflowed = false;
        self.null_state.accumulate(
            group_indices,
            partial_sums,
            None,
            total_num_groups,
            |group, partial| {
                let (sum, overflow) = sums[group].overflowing_add(partial);
                sums[group] = sum;
                overflowed |= overflow;
            },
        );
        if overflowed {
            Err(self.result.sum_overflowed())
        } else {
            Ok(())
        }
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let counts = emit_to.take_needed(&mut self.counts);
        let sums = emit_to.take_needed(&mut self.sums);
        let nulls = self.null_state.build(emit_to);
        let averages = sums
            .into_iter()
            .zip(counts)
            .enumerate()
            .map(|(group, (sum, count))| {
                let seen = nulls.as_ref().is_none_or(|n| n.is_valid(group));
                match (seen, count) {
                    (true, 1..) => self.result.average(sum, count).map(Some),
                    _ => Ok(None),
                }
            })
            .collect::<Result<PrimitiveArray<I>>>()?
            .with_data_type(self.result.result_type.clone());
        Ok(Arc::new(averages))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let nulls = self.null_state.build(emit_to);
        let counts = UInt64Array::new(emit_to.take_needed(&mut self.counts).into(), nulls.clone());
        let sums = PrimitiveArray::<S>::new(emit_to.take_needed(&mut self.sums).into(), nulls)
            .with_data_type(self.result.sum_type.clone());
        Ok(vec![Arc::new(counts), Arc::new(sums)])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let values = values[0].as_primitive::<I>();
        let nulls = filtered_null_mask(opt_filter, values);
        let counts = set_nulls(UInt64Array::from_value(1, values.len()), nulls.clone());
        let sums: PrimitiveArray<S> = values.unary(Into::into);
        let sums = set_nulls(sums, nulls).with_data_type(self.result.sum_type.clone());
        Ok(vec![Arc::new(counts), Arc::new(sums)])
    }

    fn size(&self) -> usize {
        self.counts.capacity() * size_of::<u64>()
            + self.sums.capacity() * size_of::<S::Native>()
            + self.null_state.size()
    }
}
