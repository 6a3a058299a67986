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
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use quarry_core::schema::TableDef;

use crate::embedded::threads::yield_to_queries;
use crate::error::{Error, Result};

/// From this many rows, sorting is spread over the machine's cores.
const PARALLEL_SORT_ROWS: usize = 100_000;

/// About how many rows a parallel sort sorts between two checkpoints
/// ([`yield_to_queries`]).
const SORT_SLICE_ROWS: usize = 65_536;

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
pub fn sort_dedup(table: &TableDef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let schema = batches
        .first()
        .map_or_else(|| stored_schema(table), RecordBatch::schema);
    let all = concat_batches(&schema, batches)?;
    let n = all.num_rows();
    if n == 0 {
        return Ok(all);
    }
    let token_index = table.columns.len();
    let token_values = all
        .column(token_index)
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| Error::Internal("the token column is not Int64".into()))?
        .values()
        .clone();
    let key_indices = table.primary_key_indices();
    let converter = RowConverter::new(
        key_indices
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect(),
    )?;
    let key_columns: Vec<ArrayRef> = key_indices.iter().map(|&i| all.column(i).clone()).collect();
    let rows = converter.convert_columns(&key_columns)?;

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
    yield_to_queries();
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
    let mut keep = Vec::with_capacity(n);
    for (pos, &row) in order.iter().enumerate() {
        let superseded = order.get(pos + 1).is_some_and(|&next| {
            token_values[next as usize] == token_values[row as usize]
                && rows.row(next as usize) == rows.row(row as usize)
        });
        if !superseded {
            keep.push(row);
        }
    }
    if keep.len() == n && keep.iter().enumerate().all(|(i, &r)| i as u32 == r) {
        return Ok(all);
    }
    yield_to_queries();
    Ok(take_record_batch(&all, &UInt32Array::from(keep))?)
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
