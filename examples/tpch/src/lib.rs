//! TPC-H for Quarry's tests and benchmarks: the eight tables generated at any scale factor
//! (the `tpchgen` crates, straight to Arrow), their CQL DDL, the 22 queries, and a comparison
//! of answers that tells a real difference from float rounding or an unspecified row order.
//!
//! ```text
//!  scale factor ─Table::generate─▶ RecordBatch, … ─┬─▶ write_parquet ─▶ tpch/lineitem/part-1.parquet …
//!                 (money: money.rs)                 │                     └─ quarry load path ─▶ Quarry
//!                                                   └─▶ MemTable / the same Parquet ─▶ plain DataFusion
//!  QUERIES (queries/q01.sql … q22.sql) run on both ──▶ Answer::from_batches ──▶ compare(expected, actual)
//! ```
//!
//! The tables live in keyspace [`KEYSPACE`] ([`create_statements`] makes it); the queries name
//! tables without a keyspace, so Quarry runs them with [`DEFAULT_SCHEMA`] set to it.

mod answer;
mod error;
mod money;
mod parquet_files;
mod query;
mod schema;
mod table;

pub use answer::{Answer, Cell, Difference, Order, compare};
pub use error::{Error, Result};
pub use money::{MONEY, Money};
pub use parquet_files::write_parquet;
pub use query::{QUERIES, Query};
pub use schema::{DEFAULT_SCHEMA, KEYSPACE, create_statements};
pub use table::Table;
