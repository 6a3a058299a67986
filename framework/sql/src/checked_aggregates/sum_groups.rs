//! `sum` with `GROUP BY`: one exact running total per group, the hot path of every grouped
//! query.
//!
//! ```text
//!   Native(Vec<i64>)  ── an addition wraps, or a partial total does not fit i64 ──▶  Wide(Vec<i128>)
//!   (as compact as DataFusion's; every total exact)                (every total exact)
//! ```
//!
//! Totals start in the input's own type, with DataFusion's memory footprint: with many groups,
//! twice the bytes per total costs as much as the addition. Each addition reports whether it
//! wrapped; the first one that does, in any group, moves every total to the wide type (the
//! wrapped one corrected), where they stay. Sums near the type's limits pay for the wide type;
//! all others never do. [`NullState`] tracks which groups saw a value, and [`evaluate`] checks
//! each group's total against the result type.
//!
//! [`evaluate`]: GroupsAccumulator::evaluate

use std::mem::size_of;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, PrimitiveArray};
use datafusion::common::{Result, internal_err};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::accumulate::NullState;
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::nulls::{
    filtered_null_mask, set_nulls,
};

use super::checked_sum::SumResult;
use super::sum_input::{CheckedInt, SumInput, Wide, WrappingAdd};

/// The running totals of every group.
#[derive(Debug)]
enum Totals<T: SumInput> {
    /// Every total so far fits the input type.
    Native(Vec<T::Native>),
    /// Some total has left the input type's range (and may come back into it).
    Wide(Vec<Wide<T>>),
}

/// Per-group sums of one `sum` expression.
#[derive(Debug)]
pub(crate) struct SumGroupsAccumulator<T: SumInput> {
    /// Zero for a group that has seen no value yet.
    totals: Totals<T>,
    null_state: NullState,
    result: SumResult<T>,
}

impl<T: SumInput> SumGroupsAccumulator<T> {
    pub(crate) fn new(result: SumResult<T>) -> Self {
        SumGroupsAccumulator {
            totals: Totals::Native(Vec::new()),
            null_state: NullState::new(),
            result,
        }
    }

    /// Moves the native totals to the wide type, correcting those that wrapped (`wraps`: a
    /// group and the direction it wrapped in, once per wrap).
    fn widen(&mut self, wraps: &[(usize, i8)]) -> Result<()> {
        let Totals::Native(totals) = &self.totals else {
            return Ok(());
        };
        // Decimal256 has no wider type: any wrap is the overflow.
        let wrap = T::wrap().ok_or_else(|| self.result.overflowed())?;
        let mut wide: Vec<Wide<T>> = totals.iter().map(|v| T::widen(*v)).collect();
        for &(group, direction) in wraps {
            wide[group] = Wide::<T>::from(direction)
                .checked_mul(wrap)
                .and_then(|correction| wide[group].checked_add(correction))
                .ok_or_else(|| self.result.overflowed())?;
        }
        self.totals = Totals::Wide(wide);
        Ok(())
    }
}

/// Adds `value` to the wide `total`, remembering whether it overflowed (the total is then
/// wrapped, and the batch fails).
#[inline]
fn add<W: CheckedInt>(total: &mut W, value: W, overflowed: &mut bool) {
    let (sum, overflow) = total.overflowing_add(value);
    *total = sum;
    *overflowed |= overflow;
}

/// Adds `value` to the native `total`, remembering the group when it wrapped.
#[inline]
fn add_native<N: WrappingAdd>(total: &mut N, value: N, group: usize, wraps: &mut Vec<(usize, i8)>) {
    let (sum, wrapped) = total.add_wrapped(value);
    *total = sum;
    if wrapped != 0 {
        wraps.push((group, wrapped));
    }
}

impl<T: SumInput> GroupsAccumulator for SumGroupsAccumulator<T> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let values = values[0].as_primitive::<T>();
        match &mut self.totals {
            Totals::Native(totals) => {
                totals.resize(total_num_groups, T::Native::default());
                let mut wraps = Vec::new();
                self.null_state.accumulate(
                    group_indices,
                    values,
                    opt_filter,
                    total_num_groups,
                    |group, value| add_native(&mut totals[group], value, group, &mut wraps),
                );
                if wraps.is_empty() {
                    Ok(())
                } else {
                    self.widen(&wraps)
                }
            }
            Totals::Wide(totals) => {
                totals.resize(total_num_groups, Wide::<T>::default());
                let mut overflowed = false;
                self.null_state.accumulate(
                    group_indices,
                    values,
                    opt_filter,
                    total_num_groups,
                    |group, value| add(&mut totals[group], T::widen(value), &mut overflowed),
                );
                if overflowed {
                    Err(self.result.overflowed())
                } else {
                    Ok(())
                }
            }
        }
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let partials = values[0].as_primitive::<T::Wide>();
        match &mut self.totals {
            Totals::Native(totals) => {
                totals.resize(total_num_groups, T::Native::default());
                let (mut wraps, mut too_wide) = (Vec::new(), Vec::new());
                self.null_state.accumulate(
                    group_indices,
                    partials,
                    None,
                    total_num_groups,
                    |group, partial| match T::narrow(partial) {
                        Some(partial) => add_native(&mut totals[group], partial, group, &mut wraps),
                        None => too_wide.push((group, partial)),
                    },
                );
                if wraps.is_empty() && too_wide.is_empty() {
                    return Ok(());
                }
                self.widen(&wraps)?;
                // Partial totals beyond the input type, added now that the totals are wide.
                let Totals::Wide(totals) = &mut self.totals else {
                    return internal_err!("sum's totals are still narrow after widening them");
                };
                let mut overflowed = false;
                for (group, partial) in too_wide {
                    add(&mut totals[group], partial, &mut overflowed);
                }
                if overflowed {
                    Err(self.result.overflowed())
                } else {
                    Ok(())
                }
            }
            Totals::Wide(totals) => {
                totals.resize(total_num_groups, Wide::<T>::default());
                let mut overflowed = false;
                self.null_state.accumulate(
                    group_indices,
                    partials,
                    None,
                    total_num_groups,
                    |group, partial| add(&mut totals[group], partial, &mut overflowed),
                );
                if overflowed {
                    Err(self.result.overflowed())
                } else {
                    Ok(())
                }
            }
        }
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let nulls = self.null_state.build(emit_to);
        let sums = match &mut self.totals {
            Totals::Native(totals) => {
                let sums = emit_to.take_needed(totals);
                for sum in &sums {
                    self.result.check(*sum)?;
                }
                sums
            }
            Totals::Wide(totals) => emit_to
                .take_needed(totals)
                .into_iter()
                .map(|total| self.result.narrow(total))
                .collect::<Result<Vec<_>>>()?,
        };
        // A group without values has a zero total, which fits every result type.
        let sums = PrimitiveArray::<T>::new(sums.into(), nulls)
            .with_data_type(self.result.result_type.clone());
        Ok(Arc::new(sums))
    }

    /// The partial totals, unchecked: a partial total outside the result type may still
    /// come back into it when the other partitions' totals are added.
    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let nulls = self.null_state.build(emit_to);
        let totals: Vec<Wide<T>> = match &mut self.totals {
            Totals::Native(totals) => emit_to
                .take_needed(totals)
                .into_iter()
                .map(T::widen)
                .collect(),
            Totals::Wide(totals) => emit_to.take_needed(totals),
        };
        let totals = PrimitiveArray::<T::Wide>::new(totals.into(), nulls)
            .with_data_type(self.result.state_type.clone());
        Ok(vec![Arc::new(totals)])
    }

    /// Each row as a partial total of its own, for when partial aggregation is not reducing
    /// the rows enough to be worth it.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let values = values[0].as_primitive::<T>();
        let totals: PrimitiveArray<T::Wide> = values.unary(T::widen);
        let totals = set_nulls(totals, filtered_null_mask(opt_filter, values))
            .with_data_type(self.result.state_type.clone());
        Ok(vec![Arc::new(totals)])
    }

    fn size(&self) -> usize {
        let totals = match &self.totals {
            Totals::Native(totals) => totals.capacity() * size_of::<T::Native>(),
            Totals::Wide(totals) => totals.capacity() * size_of::<Wide<T>>(),
        };
        totals + self.null_state.size()
    }
}
