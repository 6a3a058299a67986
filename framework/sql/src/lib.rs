//! SQL over Quarry stores, through DataFusion.
//!
//! ```text
//!   text ──ddl::parse_statement──▶ Quarry DDL (CREATE KEYSPACE/TABLE/VIEW, USE, SHOW, DESCRIBE)
//!     │                                 ──▶ Store (views are kept there as name + SQL)
//!     └──────────────────────────▶ anything else ──▶ sql_planner ──▶ DataFusion
//!                                       ──▶ StoreTable (scan, insert) / ViewTable (a view's plan)
//! ```
//!
//! The catalog is the store: `keyspace.table` names resolve through [`catalog`] to one
//! [`StoreTable`](table::StoreTable) per table, which pushes projections, limits and filters
//! (partition-key equalities, `token()` ranges, value comparisons for statistics pruning) into
//! the store's scan, and writes `INSERT` results back with upsert semantics. A view's SQL is
//! planned where a statement names it (`sql_planner.rs`); temporary views live in the session
//! ([`temporary_views`]). Names without a keyspace resolve in the session's keyspace (`USE`).
//! [`token_udf`] is CQL's `token()`. [`checked_aggregates`] replaces DataFusion's `sum` and
//! `avg`, which wrap on overflow, with ones that fail naming the expression;
//! [`checked_arithmetic`] does the same for integer `+`, `-` and `*`.

pub mod access;
pub mod catalog;
pub mod checked_aggregates;
pub mod checked_arithmetic;
mod create_table_as;
pub mod error;
pub mod failure;
pub mod filters;
pub mod memory_pool;
pub mod options;
pub mod runtime;
pub mod scan_exec;
pub mod session;
pub mod sink;
mod sql_planner;
pub mod table;
pub mod temporary_views;
pub mod token_udf;

pub use access::Access;
pub use error::{Error, Result};
pub use runtime::{RuntimeLimits, runtime_env};
pub use session::{KEYSPACE_SETTING, PlanExecutor, QuarrySession, QueryOutput, QueryResult};
