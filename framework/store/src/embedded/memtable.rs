//! Rows acknowledged through the log but not yet in a run.
//!
//! Each write becomes one immutable chunk (sorted and de-duplicated, in stored form). A newer
//! write replaces older chunks by copies without the rows it supersedes, so the chunks never
//! hold one key twice. A scan takes the chunks it finds; a flush freezes them, writes them as a
//! run and swaps the run in for them in one step, so a scan sees either the chunks or the run,
//! never both and never neither.

use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, Int64Array, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::Int64Type;
use quarry_core::schema::TableDef;
use quarry_core::token::Token;

use crate::embedded::keys::{append_key_column, key_hashes};
use crate::error::Result;

/// One acknowledged write.
#[derive(Debug)]
pub struct MemChunk {
    pub seq: u64,
    /// Stored form: table columns then the token column, sorted by token.
    pub rows: RecordBatch,
    /// The key hash of each row.
    pub hashes: Vec<i64>,
    pub min_token: Token,
    pub max_token: Token,
}

impl MemChunk {
    /// Wraps rows in stored form (sorted by token); `None` when there are none.
    pub fn new(table: &TableDef, seq: u64, rows: RecordBatch) -> Result<Option<MemChunk>> {
        if rows.num_rows() == 0 {
            return Ok(None);
        }
        let hashes = key_hashes(table, &rows)?.values().to_vec();
        Ok(Some(MemChunk::from_parts(seq, rows, hashes)))
    }

    /// Wraps rows in stored form (sorted by token) with their key hashes.
    pub fn from_parts(seq: u64, rows: RecordBatch, hashes: Vec<i64>) -> MemChunk {
        let tokens = rows
            .column(rows.num_columns() - 1)
            .as_primitive::<Int64Type>()
            .values();
        let (min_token, max_token) = match (tokens.first(), tokens.last()) {
            (Some(first), Some(last)) => (*first, *last),
            _ => (Token::MAX, Token::MIN),
        };
        MemChunk {
            seq,
            rows,
            hashes,
            min_token,
            max_token,
        }
    }

    /// A copy without the rows `drop` (sorted, unique); it may be empty.
    pub fn without(&self, drop: &[u32]) -> Result<MemChunk> {
        let mut keep = vec![true; self.num_rows()];
        for &row in drop {
            keep[row as usize] = false;
        }
        let hashes = self
            .hashes
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(h, _)| *h)
            .collect();
        let rows = filter_record_batch(&self.rows, &BooleanArray::from(keep))?;
        Ok(MemChunk::from_parts(self.seq, rows, hashes))
    }

    /// The chunk's rows with their key hashes after the token column
    /// ([`crate::embedded::keys::KEY_COLUMN`]), as flushes write them.
    pub fn rows_with_hashes(&self) -> Result<RecordBatch> {
        let hashes = Arc::new(Int64Array::from(self.hashes.clone()));
        append_key_column(&self.rows, hashes)
    }

    pub fn num_rows(&self) -> usize {
        self.rows.num_rows()
    }
}
