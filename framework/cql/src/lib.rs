//! A CQL native protocol (v4) server over a Quarry [`Store`](quarry_store::Store).
//!
//! `quarry cql-server` serves a data directory to CQL clients (the `scylla` crate, the DataStax
//! drivers, cqlsh, ingestion tools) as a cluster of N nodes on 127.0.0.1, 127.0.0.2, ..., all on
//! one port, each with its own tokens on a Cassandra ring. With one node it lets existing CQL
//! applications write into Quarry; with several it is the cluster Quarry's ScyllaDB connector is
//! tested against, where no ScyllaDB can be installed.
//!
//! ```text
//!   wire    frames and the protocol's notation (requests in, responses out)
//!   parse   the CQL the server reads itself: SELECT, INSERT, BEGIN BATCH, USE
//!   types   column types on the wire, literals as serialized values
//!   system  the ring, and system.local / system.peers / system_schema.* from the catalog
//!   server     nodes, connections, request dispatch, per-node counters
//!   statement  statements resolved against the catalog (PREPARE's metadata)
//!   execute    DDL, writes, system tables, paged scans
//! ```
//!
//! What it serves, and what it refuses with an error that says so: see [`server`].

mod execute;
pub mod parse;
pub mod server;
mod statement;
pub mod system;
pub mod types;
pub mod wire;

pub use server::{CqlServer, NodeStats, ServerOptions, tls_config};
