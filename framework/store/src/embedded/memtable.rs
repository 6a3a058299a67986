//! Rows acknowledged through the log but not yet in a run.
//!
//! Each write becomes one immutable chunk (sorted and de-duplicated, in stored form). A scan takes
//! the chunks it finds; a flush freezes them, writes them as a run and swaps the run in for them
//! in one step, so a scan sees either the chunks or the run, never both and never neither.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use quarry_core::token::Token;

/// One acknowledged write.
#[derive(Debug)]
pub struct MemChunk {
    pub seq: u64,
    /// Stored form: table columns then the token column, sorted by token.
    pub rows: RecordBatch,
    pub min_token: Token,
    pub max_token: Token,
}

impl MemChunk {
    /// Wraps rows in stored form (sorted by token, at least one row).
    pub fn new(seq: u64, rows: RecordBatch) -> Option<MemChunk> {
        let tokens = rows
            .column(rows.num_columns() - 1)
            .as_primitive::<Int64Type>()
            .values();
        let (min_token, max_token) = (*tokens.first()?, *tokens.last()?);
        Some(MemChunk {
            seq,
            rows,
            min_token,
            max_token,
        })
    }

    pub fn num_rows(&self) -> usize {
        self.rows.num_rows()
    }
}
