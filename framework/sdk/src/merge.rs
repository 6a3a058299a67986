//! The keyed merge that reads a shuffle: each key's values folded into one accumulator.
//!
//! The keys arrive as the first columns of every batch. Keys of fixed-width columns (integers,
//! timestamps, tuples of them: [`Data::FIXED_WIDTH`]) are read as Rust values, hashed and
//! compared as such, and kept in one `Vec`: reading one allocates nothing. Other keys are never
//! decoded into Rust values: each batch's key columns are encoded at once into Arrow's row
//! format, whose bytes are equal exactly when the keys are; a group is found by hashing those
//! bytes, and a new group's key bytes are appended to one arena, which decodes back into key
//! columns in bulk at the end. Against a map of owned keys that saves an allocation per text
//! key and per entry and keeps the hash table at 16 bytes a group; the merge of a rollup with a
//! fresh text key per row is where that shows. Either way the table holds group numbers, and
//! the accumulators sit in one `Vec` in the order the keys appeared.

use std::any::Any;
use std::hash::{BuildHasher, Hash};
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
    groups: Option<Groups<K>>,
    /// Each group's accumulator, by group number; `None` only while it is being folded.
    accumulators: Vec<Option<A>>,
    _types: PhantomData<In>,
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

/// The distinct keys seen, numbered in the order they appeared.
enum Groups<K> {
    Values(ValueGroups<K>),
    Rows(RowGroups),
}

/// Keys of fixed-width columns, as values.
struct ValueGroups<K> {
    /// Every group's key, by group number.
    keys: Vec<K>,
    /// Group numbers, hashed by their keys.
    table: HashTable<u32>,
    hasher: KeyHasher,
}

impl<K: Hash + Eq> ValueGroups<K> {
    /// The group of `key`, made when it is new.
    fn group_of(&mut self, key: K) -> (usize, bool) {
        let hash = self.hasher.hash_one(&key);
        let (keys, hasher) = (&mut self.keys, &self.hasher);
        if let Some(&group) = self.table.find(hash, |&g| keys[g as usize] == key) {
            return (group as usize, false);
        }
        let group = keys.len();
        keys.push(key);
        self.table
            .insert_unique(hash, group as u32, |&g| hasher.hash_one(&keys[g as usize]));
        (group, true)
    }
}

/// Keys of other columns, as Arrow row-format bytes.
struct RowGroups {
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

impl RowGroups {
    fn new(key_columns: Columns<'_>, capacity: usize) -> Result<Self> {
        let sort_fields = key_columns
            .arrays
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect();
        let converter = RowConverter::new(sort_fields)?;
        let (keys, scratch) = (converter.empty_rows(0, 0), converter.empty_rows(0, 0));
        Ok(RowGroups {
            fields: key_columns.fields.to_vec(),
            converter,
            keys,
            table: HashTable::with_capacity(capacity),
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
    K: Data + Hash + Eq,
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
        let key_reader = K::reader(key_columns)?;
        // Sized for each of the first batch's rows to be a group: after a combine, most are
        // (and it is at most one batch's worth too many where they are not).
        let rows = batch.num_rows();
        let groups = match &mut self.groups {
            Some(groups) => groups,
            None if K::FIXED_WIDTH => {
                self.accumulators.reserve(rows);
                self.groups.insert(Groups::Values(ValueGroups {
                    keys: Vec::with_capacity(rows),
                    table: HashTable::with_capacity(rows),
                    hasher: KeyHasher::default(),
                }))
            }
            None => {
                self.accumulators.reserve(rows);
                self.groups
                    .insert(Groups::Rows(RowGroups::new(key_columns, rows)?))
            }
        };
        let reader = In::reader(values)?;
        let (accumulators, init, fold) = (&mut self.accumulators, &self.init, &self.fold);
        let mut add = |(group, new): (usize, bool), value: In| {
            if new {
                accumulators.push(Some(init(value)));
            } else {
                let slot = &mut accumulators[group];
                *slot = slot.take().map(|acc| fold(acc, value));
            }
        };
        enter(self.name);
        match groups {
            Groups::Values(groups) => {
                for row in 0..batch.num_rows() {
                    let key = K::read(&key_reader, row)?;
                    add(groups.group_of(key), In::read(&reader, row)?);
                }
            }
            Groups::Rows(groups) => {
                groups.scratch.clear();
                groups
                    .converter
                    .append(&mut groups.scratch, key_columns.arrays)?;
                for row in 0..batch.num_rows() {
                    add(groups.group_of(row), In::read(&reader, row)?);
                }
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
            let rows = part.accumulators.len();
            let mut columns = match part.keys {
                PartKeys::Columns { arrays, .. } => arrays,
                PartKeys::Values(keys) => {
                    let mut builder = K::builder(rows);
                    for key in keys {
                        K::append(&mut builder, key);
                    }
                    let mut columns = Vec::with_capacity(K::WIDTH + A::WIDTH);
                    K::finish(builder, &mut columns);
                    columns
                }
            };
            let mut builder = A::builder(rows);
            for acc in part.accumulators {
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
            let mut rows: Vec<(K, A)> = match part.keys {
                PartKeys::Values(keys) => keys.into_iter().zip(part.accumulators).collect(),
                PartKeys::Columns { arrays, fields } => {
                    let keys = K::reader(Columns {
                        arrays: &arrays,
                        fields,
                    })?;
                    let mut rows = Vec::with_capacity(part.accumulators.len());
                    for (row, acc) in part.accumulators.into_iter().enumerate() {
                        rows.push((K::read(&keys, row)?, acc));
                    }
                    rows
                }
            };
            each(&mut rows)
        })?;
        Ok(true)
    }
}

/// Groups of a merge that ends: their keys, and their accumulators.
struct Part<'a, K, A> {
    keys: PartKeys<'a, K>,
    accumulators: Vec<A>,
}

enum PartKeys<'a, K> {
    Values(Vec<K>),
    /// Decoded from the row format; with the key columns' fields, for messages.
    Columns {
        arrays: Vec<ArrayRef>,
        fields: &'a [FieldRef],
    },
}

impl<K, In, A, I, F> MergeState<K, In, A, I, F> {
    /// Ends the merge: hands on its groups in the order their keys appeared, at most
    /// [`OUTPUT_BATCH_ROWS`] at a time.
    fn drain(&mut self, each: &mut dyn FnMut(Part<'_, K, A>) -> Result<()>) -> Result<()> {
        let Some(groups) = self.groups.take() else {
            return Ok(());
        };
        let mut accumulators = std::mem::take(&mut self.accumulators).into_iter();
        // A group without its accumulator (a fold that panicked midway) would shift every
        // later key onto another group's value: an error, never a wrong row.
        let mut next = |n: usize| -> Result<Vec<A>> {
            let mut part = Vec::with_capacity(n);
            for acc in accumulators.by_ref().take(n) {
                part.push(acc.ok_or_else(|| JobError::Plan {
                    message: "internal: a merge group lost its accumulator".into(),
                })?);
            }
            Ok(part)
        };
        match groups {
            Groups::Values(groups) => {
                let mut keys = groups.keys.into_iter();
                while keys.len() > 0 {
                    let part: Vec<K> = keys.by_ref().take(OUTPUT_BATCH_ROWS).collect();
                    let accumulators = next(part.len())?;
                    each(Part {
                        keys: PartKeys::Values(part),
                        accumulators,
                    })?;
                }
            }
            Groups::Rows(groups) => {
                let total = groups.keys.num_rows();
                for start in (0..total).step_by(OUTPUT_BATCH_ROWS) {
                    let end = (start + OUTPUT_BATCH_ROWS).min(total);
                    let arrays = groups
                        .converter
                        .convert_rows((start..end).map(|group| groups.keys.row(group)))?;
                    each(Part {
                        keys: PartKeys::Columns {
                            arrays,
                            fields: &groups.fields,
                        },
                        accumulators: next(end - start)?,
                    })?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::dag::{JobArgs, OpKind};
    use crate::data::{Timestamp, from_batch, to_batch};
    use crate::dataset::{JobContext, JobFn};

    /// The batches the operator of `job` that starts with a merge makes of `pairs`, pushed
    /// `chunk` rows at a time.
    fn merged_by<P: Data + Clone>(job: JobFn, pairs: &[P], chunk: usize) -> Vec<RecordBatch> {
        let built = JobContext::build(job, JobArgs::default()).unwrap();
        let op = built
            .dag
            .ops
            .iter()
            .position(|op| matches!(op.kind, OpKind::Merge { .. }))
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

    fn sum_per_fixed_width_key(ctx: &JobContext) -> Result<()> {
        ctx.source::<((Option<i64>, Timestamp), i64)>("t.pairs")
            .reduce_by_key(|a, b| a + b)
            .collect();
        Ok(())
    }

    #[test]
    fn a_merge_of_fixed_width_keys_folds_them_as_values_nulls_included() {
        const { assert!(<(Option<i64>, Timestamp)>::FIXED_WIDTH && !<(i64, String)>::FIXED_WIDTH) };
        // 20,000 keys, each in three batches; every 9th device null.
        let key = |i: i64| ((i % 9 != 0).then_some(i % 5_000), Timestamp(i / 5_000));
        let pairs: Vec<_> = (0..60_000).map(|i| (key(i % 20_000), i)).collect();
        let batches = merged_by(sum_per_fixed_width_key, &pairs, 8192);
        assert!(batches.iter().all(|b| b.num_rows() <= OUTPUT_BATCH_ROWS));
        let merged: Vec<_> = batches
            .iter()
            .flat_map(|b| from_batch::<((Option<i64>, Timestamp), i64)>(b).unwrap())
            .collect();
        let mut expected = BTreeMap::new();
        for (key, value) in &pairs {
            *expected.entry(*key).or_insert(0) += value;
        }
        assert_eq!(merged.len(), expected.len());
        assert_eq!(merged.iter().cloned().collect::<BTreeMap<_, _>>(), expected);
        // Keys come out in the order they first appeared.
        assert_eq!(merged[0].0, key(0));
        assert_eq!(merged[1].0, key(1));
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
