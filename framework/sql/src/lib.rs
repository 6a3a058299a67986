//! SQL over Quarry stores, through DataFusion.
//!
//! ```text
//!   text ──ddl::parse_statement──▶ Quarry DDL (CREATE KEYSPACE/TABLE, SHOW, DESCRIBE) ──▶ Store
//!     └──────────────────────────▶ anything else ──▶ DataFusion ──▶ StoreTable (scan, insert)
//! ```
//!
//! The catalog is the store: `keyspace.table` names resolve through [`catalog`] to one
//! [`StoreTable`](table::StoreTable) per table, which pushes projections, limits and filters
//! (partition-key equalities, `token()` ranges, value comparisons for statistics pruning) into
//! the store's scan, and writes `INSERT` results back with upsert semantics. [`token_udf`] is
//! CQL's `token()`. [`checked_aggregates`] replaces DataFusion's `sum` and `avg`, which wrap
//! on overflow, with ones that fail naming the expression.

pub mod catalog;
pub mod checked_aggregates;
pub mod error;
pub mod filters;
pub mod options;
pub mod scan_exec;
pub mod session;
pub mod sink;
pub mod table;
pub mod token_udf;

pub use error::{Error, Result};
pub use session::{PlanExecutor, QuarrySession, QueryOutput, QueryResult};
