//! Reading CSV, NDJSON and Parquet into a Quarry table's Arrow schema, with precise errors for
//! bad input and, on request, a list of rejected rows.
//!
//! `quarry load --table ks.t FILE...` calls [`read_source`] once per input; a live input
//! (`quarry load --follow`, or stdin with periodic commits) goes through [`stream_source`],
//! which hands out rows as they arrive. A format reader
//! turns the input into raw batches whose columns are as the input holds them: all text for CSV
//! (Arrow's CSV decoder on an all-`Utf8` schema built from the header) and NDJSON (Arrow's JSON
//! decoder on an all-`Utf8` schema, numbers and booleans coerced to their text), the file's own
//! types for Parquet. Text formats are cut into chunks of whole records first, so every row keeps
//! the line it came from and records that cannot be rows at all (wrong field count, not UTF-8,
//! not a JSON object) are set aside before decoding. Conversion then works column by column:
//! Arrow's `cast` with `safe` on, or a CQL-specific parser for uuid, timeuuid, inet, ascii, hex
//! blobs and epoch-millisecond timestamps. A value is bad when it was non-null before conversion
//! and is NULL after; a row without a primary-key value is always bad. The first bad row is an
//! error naming input, line, column, value and expected type, or, with
//! [`ReadOptions::keep_rejects`], every bad row becomes a [`Reject`] and is filtered out.
//!
//! ```text
//!  file / stdin ─┬─ csv_source ────┐ raw chunk          convert              SourceData
//!                ├─ ndjson_source ─┼─(input's columns, ─(per column: cast, ─▶ batches (table schema)
//!                └─ parquet_source ┘  line of each row)   uuid, inet, ...)     rejects
//!                                                          bad cells ─▶ Error, or Reject + filter
//! ```

mod column_match;
mod convert;
mod cql_text;
mod csv_source;
pub mod error;
pub mod format;
mod ndjson_source;
mod parquet_source;
mod problem;
mod push_decoder;
mod raw_chunk;
mod read;
mod record_chunker;
pub mod reject;
pub mod source;
mod stream;

pub use error::{Error, KeyKind, Location, Position, Result};
pub use format::Format;
pub use read::{
    DEFAULT_BATCH_SIZE, ReadOptions, SourceData, read_source, read_source_in_parts, read_sources,
    read_sources_in_parts,
};
pub use reject::Reject;
pub use source::Source;
pub use stream::{StreamOptions, stream_source};
