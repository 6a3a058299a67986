//! The keyed merge that reads a shuffle: each key's values folded into one accumulator.
//!
//! The keys arrive as the first columns of every batch, and the merge never decodes them into
//! Rust values. Each batch's key columns are encoded at once into Arrow's row format, whose bytes
//! are equal exactly when the keys are; a group is found by hashing those bytes, and a new
//! group's key bytes are appended to one arena. At the end the arena decodes back into key
//! columns in bulk. Against a map of owned keys this saves an allocation per text key and per
//! entry, keeps the hash table at 16 bytes a group, and rehashes without touching the keys;
//! the merge of a rollup with a fresh key per row is where that shows.

use std::any::Any;
use std::hash::BuildHasher;
use std::marker::PhantomData;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::FieldRef;
use hashbrown::HashTable;

use crate::data::{Columns, Data, schema_of};
use crate::dataset::{KeyHasher, OUTPUT_BATCH_ROWS, OpState, enter};
use crate::error::{JobError, Result};

/// Rows with equal keys (a `K`'s columns) folded into one `A` each.
pub(crate) struct MergeState<K, In, A, I, F> {
    pub(crate) name: &'static str,
    /// The job's closures, as type parameters so that the per-row loop inlines them.
    pub(crate) init: I,
    pub(crate) fold: F,
    /// Made from the first batch's key columns.
    groups: Option<Groups>,
    /// Each group's accumulator, by group number; `None` only while it is being folded.
    accumulators: Vec<Option<A>>,
    _types: PhantomData<(K, In)>,
}

/// The distinct keys seen, numbered in the order they appeared.
struct Groups {
    /// The key columns' fields, for reading the keys back.
    fields: Vec<FieldRef>,
    converter: RowConverter,
    /// Every group's key bytes, by group number.
    keys: Rows,
    /// (hash of the key bytes, group number).
    table: HashTable<(u64, u32)>,
    hasher: KeyHasher,
    /// The keys of the batch being folded.
    scratch: Rows,
}

impl<K, In, A, I, F> MergeState<K, In, A, I, F> {
    pub(crate) fn new(name: &'static str, init: I, fold: F) -> Self {
        MergeState {
            name,
            init,
            fold,
            groups: None,
            accumulators: Vec::new(),
            _types: PhantomData,
        }
    }
}

impl Groups {
    fn new(key_columns: Columns<'_>) -> Result<Self> {
        let sort_fields = key_columns
            .arrays
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect();
        let converter = RowConverter::new(sort_fields)?;
        let (keys, scratch) = (converter.empty_rows(0, 0), converter.empty_rows(0, 0));
        Ok(Groups {
            fields: key_columns.fields.to_vec(),
            converter,
            keys,
            table: HashTable::new(),
            hasher: KeyHasher::default(),
            scratch,
        })
    }

    /// The group of row `row` of the scratch keys, made when it is new.
    fn group_of(&mut self, row: usize) -> (usize, bool) {
        let key = self.scratch.row(row);
        let bytes = key.as_ref();
        let hash = self.hasher.hash_one(bytes);
        let keys = &self.keys;
        if let Some(&(_, group)) = self.table.find(hash, |&(h, group)| {
            h == hash && keys.row(group as usize).as_ref() == bytes
        }) {
            return (group as usize, false);
        }
        let group = self.keys.num_rows();
        self.keys.push(key);
        self.table
            .insert_unique(hash, (hash, group as u32), |&(h, _)| h);
        (group, true)
    }
}

impl<K, In, A, I, F> OpState for MergeState<K, In, A, I, F>
where
    K: Data,
    In: Data,
    A: Data,
    I: Fn(In) -> A,
    F: Fn(A, In) -> A,
{
    fn push(&mut self, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let (key_columns, values) = Columns::of(batch).split(K::WIDTH)?;
        // Checks the key columns' types once, as a decode would.
        K::reader(key_columns)?;
        let groups = match &mut self.groups {
            Some(groups) => groups,
            None => self.groups.insert(Groups::new(key_columns)?),
        };
        groups.scratch.clear();
        groups
            .converter
            .append(&mut groups.scratch, key_columns.arrays)?;
        let reader = In::reader(values)?;
        let (init, fold) = (&self.init, &self.fold);
        enter(self.name);
        for row in 0..batch.num_rows() {
            let value = In::read(&reader, row)?;
            let (group, new) = groups.group_of(row);
            if new {
                self.accumulators.push(Some(init(value)));
            } else {
                let slot = &mut self.accumulators[group];
                *slot = slot.take().map(|acc| fold(acc, value));
            }
        }
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        self.finish_each(&mut |batch| {
            batches.push(batch);
            Ok(())
        })?;
        Ok(batches)
    }

    /// Every group's key and accumulator, in the order the keys appeared, a batch at a time.
    fn finish_each(&mut self, each: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        let schema = schema_of::<(K, A)>();
        self.drain(&mut |part| {
            let (mut columns, accumulators) = (part.keys, part.accumulators);
            let rows = accumulators.len();
            let mut builder = A::builder(rows);
            for acc in accumulators {
                A::append(&mut builder, acc);
            }
            A::finish(builder, &mut columns);
            let options = RecordBatchOptions::new().with_row_count(Some(rows));
            each(RecordBatch::try_new_with_options(
                schema.clone(),
                columns,
                &options,
            )?)
        })
    }

    /// Every group as a `(K, A)` row, in the order the keys appeared, a `Vec` at a time.
    fn finish_rows(&mut self, each: &mut dyn FnMut(&mut dyn Any) -> Result<()>) -> Result<bool> {
        self.drain(&mut |part| {
            let keys = K::reader(Columns {
                arrays: &part.keys,
                fields: part.fields,
            })?;
            let mut rows: Vec<(K, A)> = Vec::with_capacity(part.accumulators.len());
            for (row, acc) in part.accumulators.into_iter().enumerate() {
                rows.push((K::read(&keys, row)?, acc));
            }
            each(&mut rows)
        })?;
        Ok(true)
    }
}

/// Groups of a merge that ends: their keys as columns, and their accumulators.
struct Part<'a, A> {
    /// The key columns' fields, for messages.
    fields: &'a [FieldRef],
    keys: Vec<ArrayRef>,
    accumulators: Vec<A>,
}

impl<K, In, A, I, F> MergeState<K, In, A, I, F> {
    /// Ends the merge: hands on its groups in the order their keys appeared, at most
    /// [`OUTPUT_BATCH_ROWS`] at a time.
    fn drain(&mut self, each: &mut dyn FnMut(Part<'_, A>) -> Result<()>) -> Result<()> {
        let Some(groups) = self.groups.take() else {
            return Ok(());
        };
        let mut accumulators = std::mem::take(&mut self.accumulators).into_iter();
        let total = groups.keys.num_rows();
        for start in (0..total).step_by(OUTPUT_BATCH_ROWS) {
            let end = (start + OUTPUT_BATCH_ROWS).min(total);
            let columns = groups
                .converter
                .convert_rows((start..end).map(|group| groups.keys.row(group)))?;
            // A group without its accumulator (a fold that panicked midway) would shift every
            // later key onto another group's value: an error, never a wrong row.
            let part = accumulators
                .by_ref()
                .take(end - start)
                .map(|acc| {
                    acc.ok_or_else(|| JobError::Plan {
                        message: "internal: a merge group lost its accumulator".into(),
                    })
                })
                .collect::<Result<Vec<A>>>()?;
            each(Part {
                fields: &groups.fields,
                keys: columns,
                accumulators: part,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::dag::{JobArgs, OpKind};
    use crate::data::{from_batch, to_batch};
    use crate::dataset::{JobContext, JobFn};

    /// The batches the operator of `job` that starts with a one-column merge makes of `pairs`,
    /// pushed `chunk` rows at a time.
    fn merged_by(job: JobFn, pairs: &[(Option<String>, i64)], chunk: usize) -> Vec<RecordBatch> {
        let built = JobContext::build(job, JobArgs::default()).unwrap();
        let op = built
            .dag
            .ops
            .iter()
            .position(|op| matches!(op.kind, OpKind::Merge { keys: 1 }))
            .unwrap();
        let mut state = built.factories[op]();
        for rows in pairs.chunks(chunk) {
            let out = state
                .push(&to_batch(rows.iter().cloned()).unwrap())
                .unwrap();
            assert!(out.is_empty(), "a merge emits only at the end");
        }
        state.finish().unwrap()
    }

    fn sum_per_key(ctx: &JobContext) -> Result<()> {
        ctx.source::<(Option<String>, i64)>("t.pairs")
            .reduce_by_key(|a, b| a + b)
            .collect();
        Ok(())
    }

    #[test]
    fn a_merge_folds_equal_keys_across_batches_nulls_included_in_order_of_appearance() {
        // 20,000 keys, each in three batches; every 7th key null (one group of its own).
        let key = |i: i64| (i % 7 != 0).then(|| format!("device-{i}"));
        let pairs: Vec<(Option<String>, i64)> = (0..60_000).map(|i| (key(i % 20_000), i)).collect();
        let batches = merged_by(sum_per_key, &pairs, 8192);
        assert!(batches.iter().all(|b| b.num_rows() <= OUTPUT_BATCH_ROWS));
        let merged: Vec<(Option<String>, i64)> = batches
            .iter()
            .flat_map(|b| from_batch::<(Option<String>, i64)>(b).unwrap())
            .collect();
        let mut expected = BTreeMap::new();
        for (key, value) in &pairs {
            *expected.entry(key.clone()).or_insert(0) += value;
        }
        assert_eq!(merged.len(), expected.len());
        assert_eq!(merged.iter().cloned().collect::<BTreeMap<_, _>>(), expected);
        // Keys come out in the order they first appeared.
        assert_eq!(merged[0].0, None);
        assert_eq!(merged[1].0.as_deref(), Some("device-1"));
    }

    fn sum_per_key_then_map(ctx: &JobContext) -> Result<()> {
        ctx.source::<(Option<String>, i64)>("t.pairs")
            .reduce_by_key(|a, b| a + b)
            .map(|(key, sum)| (key.unwrap_or_else(|| "none".into()), sum * 2))
            .collect();
        Ok(())
    }

    #[test]
    fn the_chain_after_a_merge_gets_every_group_once_in_batches_of_bounded_size() {
        // 15,000 keys (two output batches' worth), each in two batches; every 5th key null.
        let key = |i: i64| (i % 5 != 0).then(|| format!("k{i}"));
        let pairs: Vec<(Option<String>, i64)> = (0..30_000).map(|i| (key(i % 15_000), i)).collect();
        let batches = merged_by(sum_per_key_then_map, &pairs, 4096);
        assert!(batches.len() >= 2);
        assert!(batches.iter().all(|b| b.num_rows() <= OUTPUT_BATCH_ROWS));
        let mapped: Vec<(String, i64)> = batches
            .iter()
            .flat_map(|b| from_batch::<(String, i64)>(b).unwrap())
            .collect();
        let mut expected = BTreeMap::new();
        for (key, value) in &pairs {
            let key = key.clone().unwrap_or_else(|| "none".into());
            *expected.entry(key).or_insert(0) += 2 * value;
        }
        assert_eq!(mapped.len(), expected.len(), "each group once");
        assert_eq!(mapped.into_iter().collect::<BTreeMap<_, _>>(), expected);
    }
}
