//! Where Quarry keeps rows: the [`Store`] interface and its embedded implementation.
//!
//! ```text
//!   SQL / loader ──write──▶ Store ──▶ embedded: log + memtable + Parquet runs (this crate)
//!                ◀─scan───         ──▶ scylla:   a ScyllaDB/Cassandra cluster (later)
//! ```
//!
//! A store has CQL semantics: rows are identified by their primary key and a write replaces the
//! row with the same key. Scans are planned into splits over shard ranges, each readable on its
//! own, all reading one consistent snapshot. Filters are pushed down as [`Predicate`]s, which a
//! store uses to skip shards and row groups.

pub mod conform;
pub mod embedded;
pub mod error;
pub mod names;
pub mod predicate;
pub mod scan_ranges;
pub mod store;

pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use error::{Error, Failure, FailureKind, Result};
pub use predicate::{CmpOp, Predicate};
pub use store::{
    BatchStream, Compaction, ReadCounters, ScanPlan, ScanRequest, ScanSplit, SplitSource,
    StagedWrite, Store, TableStats, WriteSummary, cast_batch, row_tokens, scan_schema,
};
