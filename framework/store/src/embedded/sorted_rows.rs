//! Turning written rows into the store's sorted, de-duplicated form.
//!
//! Every row gets its token appended as a hidden last column ([`TOKEN_COLUMN`]); rows are then
//! sorted by token, partition key and clustering key, and of rows with equal primary keys only the
//! last one written survives (CQL's last-write-wins). Runs, memtable chunks and log records all
//! hold rows in this form; flushes and compactions sort rows that also carry their key hashes
//! after the token (`keys.rs`), which go along with them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{interleave, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use quarry_core::schema::TableDef;

use crate::embedded::threads::yield_to_queries;
use crate::error::{Error, Result};

/// From this many rows, sorting is spread over the machine's cores.
const PARALLEL_SORT_ROWS: usize = 100_000;

/// About how many rows a parallel sort sorts between two checkpoints
/// ([`yield_to_queries`]).
const SORT_SLICE_ROWS: usize = 16_384;

/// The hidden column that holds each row's token, after the table's own columns.
pub const TOKEN_COLUMN: &str = "_token";

/// The table's schema plus the token column.
pub fn stored_schema(table: &TableDef) -> SchemaRef {
    let table_schema = table.arrow_schema();
    let mut fields: Vec<Field> = table_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(TOKEN_COLUMN, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// The stored schema as scans read it (text as `Utf8View`).
pub fn read_stored_schema(table: &TableDef) -> SchemaRef {
    crate::store::as_view_types(&stored_schema(table))
}

/// Appends the token column to rows in the table's schema.
pub fn with_tokens(table: &TableDef, batch: &RecordBatch) -> Result<RecordBatch> {
    let token_values = crate::store::row_tokens(table, batch)?;
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(token_values));
    Ok(RecordBatch::try_new(stored_schema(table), columns)?)
}

/// Sorts rows in stored form (the table's columns, then the token column, then any further
/// hidden columns, such as key hashes, carried along) by token and primary key, keeping only the
/// last row of each primary key. `batches` share one schema and are in write order: later rows
/// win.
///
/// In the idle class (flushes and compactions) the work is cut into pieces with a checkpoint
/// between them ([`yield_to_queries`]): the keys are encoded and sorted a slice at a time, and
/// the output is gathered a column at a time, straight from the input batches (they are never
/// concatenated first).
pub fn sort_dedup(table: &TableDef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let schema = batches
        .first()
        .map_or_else(|| stored_schema(table), RecordBatch::schema);
    let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if n == 0 {
        return Ok(RecordBatch::new_empty(schema));
    }
    if u32::try_from(n).is_err() {
        return Err(Error::Internal(format!(
            "{n} rows are too many to sort at once (at most {})",
            u32::MAX
        )));
    }
    let token_index = table.columns.len();
    let mut token_values: Vec<i64> = Vec::with_capacity(n);
    for batch in batches {
        let tokens = batch
            .column(token_index)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| Error::Internal("the token column is not Int64".into()))?;
        token_values.extend_from_slice(tokens.values());
    }
    let key_indices = table.primary_key_indices();
    let converter = RowConverter::new(
        key_indices
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect(),
    )?;
    // Sized from the first rows' encoding, so that many rows are not copied as they grow.
    let mut rows = if n <= SORT_SLICE_ROWS {
        converter.empty_rows(n, 0)
    } else {
        let batch = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .unwrap_or(&batches[0]);
        let sample_len = batch.num_rows().min(1_024);
        let sample = converter.convert_columns(
            &key_indices
                .iter()
                .map(|&i| batch.column(i).slice(0, sample_len))
                .collect::<Vec<_>>(),
        )?;
        let sample_bytes: usize = sample.iter().map(|row| row.as_ref().len()).sum();
        let per_row = sample_bytes.div_ceil(sample_len.max(1));
        converter.empty_rows(n, n * per_row + n / 8 * per_row)
    };
    for batch in batches {
        let mut at = 0;
        while at < batch.num_rows() {
            let len = SORT_SLICE_ROWS.min(batch.num_rows() - at);
            let key_columns: Vec<ArrayRef> = key_indices
                .iter()
                .map(|&i| batch.column(i).slice(at, len))
                .collect();
            converter.append(&mut rows, &key_columns)?;
            at += len;
            yield_to_queries();
        }
    }

    // Ties on the whole key keep write order, so the last of an equal run is the newest row.
    // The sorts are Rust's stable sort although the order is total: it finds the sorted runs
    // already in its input and merges them, and flushes and compactions sort the concatenation
    // of sorted chunks and runs, which it then merges in O(n log k) for k of them.
    let compare = |a: &u32, b: &u32| {
        token_values[*a as usize]
            .cmp(&token_values[*b as usize])
            .then_with(|| rows.row(*a as usize).cmp(&rows.row(*b as usize)))
            .then_with(|| a.cmp(b))
    };
    let threads = crate::embedded::threads::cores();
    let order: Vec<u32> = if threads > 1 && n >= PARALLEL_SORT_ROWS {
        // Tokens are uniform over the ring: cut it into equal slices of about `SORT_SLICE_ROWS`
        // rows (at least one per thread), sort them on every core and concatenate them (equal
        // keys share a token, so a slice). A thread takes the next slice once it sorted one,
        // and in the idle class first lets a query that is reading go ahead.
        let pieces = (n / SORT_SLICE_ROWS).max(threads);
        let width = u64::MAX / pieces as u64 + 1;
        let slice_of = |t: i64| (((t as u64) ^ (1 << 63)) / width) as usize;
        let mut slices: Vec<Vec<u32>> = vec![Vec::with_capacity(n / pieces + 1); pieces];
        for (i, t) in token_values.iter().enumerate() {
            slices[slice_of(*t)].push(i as u32);
        }
        let slices: Vec<Mutex<Vec<u32>>> = slices.into_iter().map(Mutex::new).collect();
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        yield_to_queries();
                        let Some(slice) = slices.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        crate::embedded::lock(slice).sort_by(compare);
                    }
                });
            }
        });
        slices
            .into_iter()
            .flat_map(|slice| slice.into_inner().unwrap_or_else(|p| p.into_inner()))
            .collect()
    } else {
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(compare);
        order
    };
    yield_to_queries();
    let mut keep = Vec::with_capacity(n);
    for (pos, &row) in order.iter().enumerate() {
        if pos % SORT_SLICE_ROWS == SORT_SLICE_ROWS - 1 {
            yield_to_queries();
        }
        let superseded = order.get(pos + 1).is_some_and(|&next| {
            token_values[next as usize] == token_values[row as usize]
                && rows.row(next as usize) == rows.row(row as usize)
        });
        if !superseded {
            keep.push(row);
        }
    }
    drop(order);
    drop(rows);
    yield_to_queries();
    gather(&schema, batches, keep)
}

/// The rows of `batches` at `positions` (numbered across all of them, in order), one column at a
/// time with a checkpoint between columns. A single batch whose rows all stay in place is
/// handed back as it is.
fn gather(schema: &SchemaRef, batches: &[RecordBatch], positions: Vec<u32>) -> Result<RecordBatch> {
    if let [batch] = batches {
        if positions.len() == batch.num_rows()
            && positions.iter().enumerate().all(|(i, &p)| i as u32 == p)
        {
            return Ok(batch.clone());
        }
        let positions = UInt32Array::from(positions);
        let mut columns = Vec::with_capacity(batch.num_columns());
        for column in batch.columns() {
            columns.push(take(column, &positions, None)?);
            yield_to_queries();
        }
        return Ok(RecordBatch::try_new(schema.clone(), columns)?);
    }
    // Each position as (batch, row within it), as `interleave` takes them.
    let starts: Vec<usize> = batches
        .iter()
        .scan(0, |at, b| {
            let start = *at;
            *at += b.num_rows();
            Some(start)
        })
        .collect();
    let mut located = Vec::with_capacity(positions.len());
    let mut batch = 0;
    for (i, p) in positions.into_iter().enumerate() {
        if i % SORT_SLICE_ROWS == SORT_SLICE_ROWS - 1 {
            yield_to_queries();
        }
        let p = p as usize;
        // Positions mostly ascend within a stretch: look from the last batch before searching.
        if !(starts[batch] <= p && p < starts[batch] + batches[batch].num_rows()) {
            batch = starts.partition_point(|&s| s <= p) - 1;
        }
        located.push((batch, p - starts[batch]));
    }
    yield_to_queries();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for i in 0..schema.fields().len() {
        let sources: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
        columns.push(interleave(&sources, &located)?);
        yield_to_queries();
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Int32Array, StringArray};
    use arrow::datatypes::Int32Type;
    use quarry_core::cql_type::CqlType;
    use quarry_core::schema::ColumnDef;

    use super::*;

    fn table() -> TableDef {
        TableDef::new(
            "ks",
            "t",
            vec![
                ColumnDef::new("id", CqlType::Int),
                ColumnDef::new("c", CqlType::Text),
                ColumnDef::new("v", CqlType::Int),
            ],
            vec!["id".into()],
            vec!["c".into()],
        )
        .unwrap()
    }

    fn rows(ids: Vec<i32>, cs: Vec<&str>, vs: Vec<i32>) -> RecordBatch {
        RecordBatch::try_new(
            table().arrow_schema(),
            vec![
                Arc::new(Int32Array::from(ids)),
                Arc::new(StringArray::from(cs)),
                Arc::new(Int32Array::from(vs)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn the_last_write_of_a_key_wins_and_rows_come_out_in_token_order() {
        let t = table();
        let first = with_tokens(
            &t,
            &rows(vec![1, 2, 1], vec!["a", "a", "b"], vec![10, 20, 30]),
        )
        .unwrap();
        let second = with_tokens(&t, &rows(vec![1, 3], vec!["a", "a"], vec![11, 40])).unwrap();
        let out = sort_dedup(&t, &[first, second]).unwrap();
        assert_eq!(out.num_rows(), 4);
        let tokens = out.column(3).as_primitive::<arrow::datatypes::Int64Type>();
        assert!(tokens.values().windows(2).all(|w| w[0] <= w[1]));
        let ids = out.column(0).as_primitive::<Int32Type>();
        let cs = out.column(1).as_string::<i32>();
        let vs = out.column(2).as_primitive::<Int32Type>();
        let v_of = |id: i32, c: &str| {
            (0..out.num_rows())
                .find(|&r| ids.value(r) == id && cs.value(r) == c)
                .map(|r| vs.value(r))
        };
        assert_eq!(v_of(1, "a"), Some(11));
        assert_eq!(v_of(1, "b"), Some(30));
        assert_eq!(v_of(2, "a"), Some(20));
        assert_eq!(v_of(3, "a"), Some(40));
    }

    #[test]
    fn the_parallel_sort_agrees_with_the_sequential_one() {
        let t = table();
        let n = PARALLEL_SORT_ROWS as i32 + 5_000;
        // Every key twice; the second copy (written later) carries the larger value.
        let ids: Vec<i32> = (0..n).map(|i| i % (n / 2)).collect();
        let cs: Vec<String> = (0..n).map(|i| format!("c{}", i % 7)).collect();
        let vs: Vec<i32> = (0..n).collect();
        let batch =
            with_tokens(&t, &rows(ids, cs.iter().map(String::as_str).collect(), vs)).unwrap();
        let big = sort_dedup(&t, std::slice::from_ref(&batch)).unwrap();
        let small: Vec<RecordBatch> = (0..n as usize)
            .step_by(10_000)
            .map(|start| batch.slice(start, 10_000.min(n as usize - start)))
            .collect();
        // Small batches each sort sequentially; sorting their concatenation again must agree.
        let sequential: Vec<RecordBatch> = small
            .iter()
            .map(|b| sort_dedup(&t, std::slice::from_ref(b)).unwrap())
            .collect();
        let merged = sort_dedup(&t, &sequential).unwrap();
        assert_eq!(big.num_rows(), merged.num_rows());
        assert_eq!(big, merged);
        let tokens = big.column(3).as_primitive::<arrow::datatypes::Int64Type>();
        assert!(tokens.values().windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn rows_gathered_from_several_batches_match_the_rows_sorted_at_once() {
        let t = table();
        let n = 3 * SORT_SLICE_ROWS as i32 + 7;
        let ids: Vec<i32> = (0..n).collect();
        let cs: Vec<String> = (0..n).map(|i| format!("c{}", i % 5)).collect();
        let vs: Vec<i32> = (0..n).map(|i| -i).collect();
        let batch =
            with_tokens(&t, &rows(ids, cs.iter().map(String::as_str).collect(), vs)).unwrap();
        let at_once = sort_dedup(&t, std::slice::from_ref(&batch)).unwrap();
        // An empty batch first, then uneven pieces of the unsorted rows.
        let mut pieces = vec![batch.slice(0, 0)];
        let mut start = 0;
        for len in [1, 999, 40_000, 5] {
            pieces.push(batch.slice(start, len));
            start += len;
        }
        pieces.push(batch.slice(start, n as usize - start));
        let gathered = sort_dedup(&t, &pieces).unwrap();
        assert_eq!(
            gathered.num_rows(),
            n as usize,
            "no key repeats, so no row goes"
        );
        assert_eq!(gathered, at_once);
        // Sorted rows in sorted pieces come back as they are.
        let sorted_pieces = vec![at_once.slice(0, 10), at_once.slice(10, n as usize - 10)];
        assert_eq!(sort_dedup(&t, &sorted_pieces).unwrap(), at_once);
    }

    #[test]
    fn null_keys_and_wrong_schemas_are_refused() {
        let t = table();
        let bad = RecordBatch::try_new(
            t.arrow_schema(),
            vec![
                Arc::new(Int32Array::from(vec![1])),
                Arc::new(StringArray::from(vec!["x"])),
                Arc::new(Int32Array::from(vec![1])),
            ],
        )
        .unwrap();
        assert!(crate::conform::check_batches(&t, &[bad]).is_ok());
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let err = crate::conform::check_batches(&t, &[other])
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected 3 columns"), "{err}");
    }
}
