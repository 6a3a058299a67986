//! Runs a job natively, in one thread, over rows given in memory: for a job's own `cargo test`.
//!
//! The same operators run as on a cluster (the fused chains, the map-side combine, the merge), fed
//! with the given rows; the host's parts (shuffles, joins, unions, distinct) are done here in
//! memory. Writes are kept per table, as upserts are not known without the table's key: a
//! test compares them as the rows written.
//!
//! ```
//! use quarry_sdk::prelude::*;
//!
//! fn doubled(ctx: &JobContext) -> Result<()> {
//!     ctx.source::<(i64,)>("ks.numbers").map(|(n,)| n * 2).collect();
//!     Ok(())
//! }
//!
//! let output = LocalJob::new(doubled).table("ks.numbers", vec![(1i64,), (2,)]).run().unwrap();
//! let mut values = output.collected::<i64>(0).unwrap();
//! values.sort();
//! assert_eq!(values, vec![2, 4]);
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{Field, Schema, SchemaRef};
use arrow_select::concat::concat_batches;
use arrow_select::take::take;

use crate::dag::{JobArgs, Node, Sink};
use crate::data::{Data, DataError, from_batch, to_batch};
use crate::dataset::{JobContext, JobFn};
use crate::error::{JobError, Result};
use crate::ipc;

/// A job with its arguments and input tables, ready to run in this process.
#[derive(Debug)]
pub struct LocalJob {
    job: JobFn,
    args: Vec<(String, String)>,
    tables: HashMap<String, RecordBatch>,
    prefiltered: HashSet<String>,
    problems: Vec<String>,
}

/// What a local run produced, sink by sink in the order the job declared them.
#[derive(Debug)]
pub struct LocalOutput {
    results: Vec<SinkOutput>,
}

#[derive(Debug)]
enum SinkOutput {
    Rows(Vec<RecordBatch>),
    Count(u64),
    Written {
        table: String,
        rows: Vec<RecordBatch>,
    },
}

impl LocalJob {
    pub fn new(job: JobFn) -> Self {
        LocalJob {
            job,
            args: Vec::new(),
            tables: HashMap::new(),
            prefiltered: HashSet::new(),
            problems: Vec::new(),
        }
    }

    /// `--arg name=value`.
    pub fn arg(mut self, name: &str, value: impl ToString) -> Self {
        self.args.push((name.to_string(), value.to_string()));
        self
    }

    /// The rows of table `table`; sources read the columns they name from them.
    pub fn table<T: Data>(mut self, table: &str, rows: impl IntoIterator<Item = T>) -> Self {
        match to_batch(rows) {
            Ok(batch) => {
                self.tables.insert(table.to_string(), batch);
            }
            Err(e) => self.problems.push(format!("rows of {table}: {e}")),
        }
        self
    }

    /// Declares that `table`'s rows already satisfy the job's `where_sql` predicates (SQL is
    /// evaluated by the store, which a local run does not have).
    pub fn prefiltered(mut self, table: &str) -> Self {
        self.prefiltered.insert(table.to_string());
        self
    }

    pub fn run(self) -> Result<LocalOutput> {
        if !self.problems.is_empty() {
            return Err(JobError::Plan {
                message: self.problems.join("; "),
            });
        }
        let built = JobContext::build(self.job, JobArgs::new(self.args.clone()))?;
        let mut outputs: Vec<Vec<RecordBatch>> = Vec::with_capacity(built.dag.nodes.len());
        let mut results = Vec::new();
        for node in &built.dag.nodes {
            let output = match node {
                Node::Source {
                    table,
                    predicate,
                    schema,
                } => {
                    if let Some(predicate) = predicate
                        && !self.prefiltered.contains(table)
                    {
                        return Err(plan(format!(
                            "the job reads {table} where {predicate}, which a local run cannot \
                             evaluate: give only matching rows and call .prefiltered(\"{table}\")"
                        )));
                    }
                    let schema = ipc::schema_from_bytes(schema)?;
                    vec![self.source(table, &schema)?]
                }
                Node::Wasm { input, op } => {
                    let mut state = built.factories[*op as usize]();
                    let mut out = Vec::new();
                    for batch in &outputs[*input as usize] {
                        out.extend(state.push(batch)?);
                    }
                    out.extend(state.finish()?);
                    out
                }
                Node::Shuffle { input, .. } => outputs[*input as usize].clone(),
                Node::Union { inputs } => {
                    let mut out = Vec::new();
                    let mut schema: Option<SchemaRef> = None;
                    for input in inputs {
                        for batch in &outputs[*input as usize] {
                            let schema = schema.get_or_insert_with(|| batch.schema());
                            out.push(RecordBatch::try_new(
                                schema.clone(),
                                batch.columns().to_vec(),
                            )?);
                        }
                    }
                    out
                }
                Node::Join {
                    left,
                    right,
                    keys,
                    left_outer,
                    right_marker,
                } => join(
                    &outputs[*left as usize],
                    &outputs[*right as usize],
                    *keys as usize,
                    *left_outer,
                    *right_marker,
                )?,
                Node::Distinct { input } => distinct(&outputs[*input as usize])?,
                Node::Sink { input, sink } => {
                    let rows = outputs[*input as usize].clone();
                    results.push(match sink {
                        Sink::Collect => SinkOutput::Rows(rows),
                        Sink::Take { n } => SinkOutput::Rows(take_rows(rows, *n)),
                        Sink::Count => {
                            SinkOutput::Count(rows.iter().map(|b| b.num_rows() as u64).sum::<u64>())
                        }
                        Sink::Write { table } => SinkOutput::Written {
                            table: table.clone(),
                            rows,
                        },
                    });
                    Vec::new()
                }
            };
            outputs.push(output);
        }
        Ok(LocalOutput { results })
    }

    /// The columns of `schema`, by name, from the table's rows.
    fn source(&self, table: &str, schema: &SchemaRef) -> Result<RecordBatch> {
        let rows = self.tables.get(table).ok_or_else(|| {
            plan(format!(
                "the job reads {table}; give its rows with .table(\"{table}\", rows)"
            ))
        })?;
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                let (i, given) = rows
                    .schema_ref()
                    .column_with_name(field.name())
                    .ok_or_else(|| {
                        plan(format!(
                            "the rows given for {table} have no column '{}'",
                            field.name()
                        ))
                    })?;
                if given.data_type() != field.data_type() {
                    return Err(JobError::Data(DataError::Type {
                        column: field.name().clone(),
                        expected: field.data_type().to_string(),
                        found: given.data_type().to_string(),
                    }));
                }
                Ok(rows.column(i).clone())
            })
            .collect::<Result<Vec<_>>>()?;
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &options,
        )?)
    }
}

fn plan(message: String) -> JobError {
    JobError::Plan { message }
}

impl LocalOutput {
    /// The rows of the `index`th sink, a `collect()` or `take(n)`.
    pub fn collected<T: Data>(&self, index: usize) -> Result<Vec<T>> {
        match self.results.get(index) {
            Some(SinkOutput::Rows(batches)) => decode_all(batches),
            _ => Err(plan(format!("result {index} is not a collect() or take()"))),
        }
    }

    /// The number of rows of the `index`th sink, a `count()`.
    pub fn count(&self, index: usize) -> Result<u64> {
        match self.results.get(index) {
            Some(SinkOutput::Count(n)) => Ok(*n),
            _ => Err(plan(format!("result {index} is not a count()"))),
        }
    }

    /// Every row the job wrote to `table`.
    pub fn written<T: Data>(&self, table: &str) -> Result<Vec<T>> {
        let mut rows = Vec::new();
        for result in &self.results {
            if let SinkOutput::Written {
                table: t,
                rows: batches,
            } = result
                && t == table
            {
                rows.extend(decode_all::<T>(batches)?);
            }
        }
        Ok(rows)
    }
}

fn decode_all<T: Data>(batches: &[RecordBatch]) -> Result<Vec<T>> {
    let mut rows = Vec::new();
    for batch in batches {
        rows.extend(from_batch::<T>(batch)?);
    }
    Ok(rows)
}

fn take_rows(batches: Vec<RecordBatch>, n: u64) -> Vec<RecordBatch> {
    let mut left = n as usize;
    let mut out = Vec::new();
    for batch in batches {
        if left == 0 {
            break;
        }
        let rows = batch.num_rows().min(left);
        left -= rows;
        out.push(batch.slice(0, rows));
    }
    out
}

fn concat(batches: &[RecordBatch]) -> Result<Option<RecordBatch>> {
    match batches.first() {
        None => Ok(None),
        Some(first) => Ok(Some(concat_batches(first.schema_ref(), batches)?)),
    }
}

/// Row keys of the first `n` columns, comparable as bytes.
fn row_keys(batch: &RecordBatch, n: usize) -> Result<Vec<Vec<u8>>> {
    let columns = &batch.columns()[..n];
    let converter = RowConverter::new(
        columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(columns)?;
    Ok((0..batch.num_rows())
        .map(|i| rows.row(i).as_ref().to_vec())
        .collect())
}

fn join(
    left: &[RecordBatch],
    right: &[RecordBatch],
    keys: usize,
    left_outer: bool,
    right_marker: bool,
) -> Result<Vec<RecordBatch>> {
    let (Some(left), Some(right)) = (concat(left)?, concat(right)?) else {
        // One side produced no batch at all; an inner join is empty, an outer one would need
        // the right side's schema, which only batches carry here.
        if left_outer && !left.is_empty() {
            return Err(plan(
                "a local left_join needs at least one batch on the right".into(),
            ));
        }
        return Ok(Vec::new());
    };
    let mut by_key: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
    for (i, key) in row_keys(&right, keys)?.into_iter().enumerate() {
        by_key.entry(key).or_default().push(i as u32);
    }
    let mut left_rows = Vec::new();
    let mut right_rows: Vec<Option<u32>> = Vec::new();
    for (i, key) in row_keys(&left, keys)?.iter().enumerate() {
        match by_key.get(key) {
            Some(matches) => {
                for j in matches {
                    left_rows.push(i as u32);
                    right_rows.push(Some(*j));
                }
            }
            None if left_outer => {
                left_rows.push(i as u32);
                right_rows.push(None);
            }
            None => {}
        }
    }
    let left_rows = UInt32Array::from(left_rows);
    let right_rows = UInt32Array::from(right_rows);
    let mut columns: Vec<ArrayRef> = Vec::new();
    for column in left.columns() {
        columns.push(take(column, &left_rows, None)?);
    }
    if right_marker {
        let marker: BooleanArray = right_rows.iter().map(|r| r.map(|_| true)).collect();
        columns.push(Arc::new(marker));
    }
    for column in &right.columns()[keys..] {
        columns.push(take(column, &right_rows, None)?);
    }
    let fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    Ok(vec![RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?])
}

fn distinct(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    let Some(all) = concat(batches)? else {
        return Ok(Vec::new());
    };
    let mut seen = HashSet::new();
    let keep: UInt32Array = row_keys(&all, all.num_columns())?
        .into_iter()
        .enumerate()
        .filter_map(|(i, key)| seen.insert(key).then_some(i as u32))
        .collect();
    let columns = all
        .columns()
        .iter()
        .map(|c| take(c, &keep, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(vec![RecordBatch::try_new(all.schema(), columns)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Timestamp;

    #[derive(Debug, Clone, PartialEq)]
    struct Reading {
        device: i64,
        ts: Timestamp,
        value: f64,
    }

    impl Data for Reading {
        const WIDTH: usize = 3;
        type Builder = <(i64, Timestamp, f64) as Data>::Builder;
        type Reader<'a> = <(i64, Timestamp, f64) as Data>::Reader<'a>;
        fn fields(name: &str, nullable: bool, out: &mut Vec<Field>) {
            i64::fields(&crate::data::child_name(name, "device"), nullable, out);
            Timestamp::fields(&crate::data::child_name(name, "ts"), nullable, out);
            f64::fields(&crate::data::child_name(name, "value"), nullable, out);
        }
        fn builder(capacity: usize) -> Self::Builder {
            <(i64, Timestamp, f64)>::builder(capacity)
        }
        fn append(builder: &mut Self::Builder, v: Self) {
            <(i64, Timestamp, f64)>::append(builder, (v.device, v.ts, v.value))
        }
        fn append_null(builder: &mut Self::Builder) {
            <(i64, Timestamp, f64)>::append_null(builder)
        }
        fn finish(builder: Self::Builder, out: &mut Vec<ArrayRef>) {
            <(i64, Timestamp, f64)>::finish(builder, out)
        }
        fn reader<'a>(
            columns: crate::data::Columns<'a>,
        ) -> std::result::Result<Self::Reader<'a>, DataError> {
            <(i64, Timestamp, f64)>::reader(columns)
        }
        fn read(r: &Self::Reader<'_>, row: usize) -> std::result::Result<Self, DataError> {
            let (device, ts, value) = <(i64, Timestamp, f64)>::read(r, row)?;
            Ok(Reading { device, ts, value })
        }
        fn is_null(_: &Self::Reader<'_>, _: usize) -> bool {
            false
        }
    }

    fn readings() -> Vec<Reading> {
        (0..100)
            .map(|i| Reading {
                device: i % 7,
                ts: Timestamp(i * 600_000),
                value: i as f64,
            })
            .collect()
    }

    fn per_device(ctx: &JobContext) -> Result<()> {
        let min_value: f64 = ctx.arg_or("min", 0.0)?;
        ctx.source::<Reading>("iot.readings")
            .filter(move |r| r.value >= min_value)
            .key_by(|r| r.device)
            .map(|(device, r)| (device, (1i64, r.value)))
            .reduce_by_key(|a, b| (a.0 + b.0, a.1 + b.1))
            .collect();
        ctx.source::<Reading>("iot.readings").count();
        Ok(())
    }

    #[test]
    fn a_keyed_reduction_matches_a_plain_loop() {
        let output = LocalJob::new(per_device)
            .arg("min", 10)
            .table("iot.readings", readings())
            .run()
            .unwrap();
        let mut got = output.collected::<(i64, (i64, f64))>(0).unwrap();
        got.sort_by_key(|r| r.0);
        let mut want: HashMap<i64, (i64, f64)> = HashMap::new();
        for r in readings().into_iter().filter(|r| r.value >= 10.0) {
            let e = want.entry(r.device).or_default();
            e.0 += 1;
            e.1 += r.value;
        }
        let mut want: Vec<_> = want.into_iter().collect();
        want.sort_by_key(|r| r.0);
        assert_eq!(got, want);
        assert_eq!(output.count(1).unwrap(), 100);
    }

    fn joined(ctx: &JobContext) -> Result<()> {
        let names = ctx
            .source::<(i64, String)>("ks.names")
            .key_by(|(id, _)| *id)
            .map(|(k, (_, name))| (k, name));
        let totals = ctx
            .source::<Reading>("iot.readings")
            .key_by(|r| r.device)
            .aggregate_by_key(|| 0.0f64, |acc, r| acc + r.value, |a, b| a + b);
        totals.left_join(names).collect();
        Ok(())
    }

    #[test]
    fn a_left_join_keeps_unmatched_rows_with_none() {
        let output = LocalJob::new(joined)
            .table("iot.readings", readings())
            .table(
                "ks.names",
                vec![(0i64, "zero".to_string()), (3, "three".to_string())],
            )
            .run()
            .unwrap();
        let mut got = output.collected::<(i64, (f64, Option<String>))>(0).unwrap();
        got.sort_by_key(|r| r.0);
        assert_eq!(got.len(), 7);
        assert_eq!(got[0].1.1.as_deref(), Some("zero"));
        assert_eq!(got[1].1.1, None);
        assert_eq!(got[3].1.1.as_deref(), Some("three"));
        let total: f64 = got.iter().map(|r| r.1.0).sum();
        assert_eq!(total, (0..100).sum::<i64>() as f64);
    }

    #[test]
    fn missing_arguments_and_tables_are_named() {
        fn needs_arg(ctx: &JobContext) -> Result<()> {
            let days: i64 = ctx.arg("days")?;
            ctx.source::<(i64,)>("ks.t")
                .map(move |(n,)| n + days)
                .collect();
            Ok(())
        }
        let err = LocalJob::new(needs_arg).run().unwrap_err();
        assert_eq!(
            err.to_string(),
            "job argument 'days': missing; pass --arg days=VALUE"
        );
        let err = LocalJob::new(needs_arg).arg("days", "x").run().unwrap_err();
        assert!(err.to_string().contains("'x' is not a valid i64"), "{err}");
        let err = LocalJob::new(needs_arg).arg("days", 1).run().unwrap_err();
        assert!(
            err.to_string()
                .contains("give its rows with .table(\"ks.t\""),
            "{err}"
        );
    }

    #[test]
    fn where_sql_applies_only_to_a_source() {
        fn misplaced(ctx: &JobContext) -> Result<()> {
            ctx.source::<(i64,)>("ks.t")
                .map(|(n,)| n)
                .where_sql("n > 1")
                .collect();
            Ok(())
        }
        let err = LocalJob::new(misplaced).run().unwrap_err();
        assert!(
            err.to_string()
                .contains("call where_sql right after source()"),
            "{err}"
        );
    }

    #[test]
    fn distinct_union_group_and_take() {
        fn job(ctx: &JobContext) -> Result<()> {
            let a = ctx.source::<(i64,)>("ks.a").map(|(n,)| n % 3);
            let b = ctx.source::<(i64,)>("ks.a").map(|(n,)| n % 5);
            a.union(b).distinct().collect();
            ctx.source::<(i64,)>("ks.a")
                .key_by(|(n,)| n % 2)
                .values()
                .key_by(|(n,)| n % 2)
                .group_by_key()
                .map(|(k, v)| (k, v.len() as i64))
                .collect();
            ctx.source::<(i64,)>("ks.a").take(3);
            Ok(())
        }
        let output = LocalJob::new(job)
            .table("ks.a", (0..10i64).map(|n| (n,)))
            .run()
            .unwrap();
        let mut distinct = output.collected::<i64>(0).unwrap();
        distinct.sort();
        assert_eq!(distinct, vec![0, 1, 2, 3, 4]);
        let mut groups = output.collected::<(i64, i64)>(1).unwrap();
        groups.sort();
        assert_eq!(groups, vec![(0, 5), (1, 5)]);
        assert_eq!(output.collected::<(i64,)>(2).unwrap().len(), 3);
    }
}
