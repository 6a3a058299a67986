//! Quarry's foundations: the vocabulary every other crate speaks.
//!
//! A row's partition key is serialized the way CQL serializes it and hashed with Murmur3 into a
//! [`Token`](token::Token), exactly as ScyllaDB and Cassandra do. A keyspace cuts the token ring
//! into S equal, contiguous [shards](shard_map::ShardMap); a [placement](placement::Placement)
//! maps every shard to the nodes that own it. The [catalog](schema) describes keyspaces and tables
//! in CQL terms and maps each [CQL type](cql_type::CqlType) to one Arrow type.
//!
//! ```text
//!   row ──partition key──▶ CQL bytes ──Murmur3──▶ token ──ShardMap──▶ shard ──Placement──▶ nodes
//! ```
//!
//! Nothing here knows about files, DataFusion or the network.

pub mod cql_type;
pub mod cql_value;
pub mod ddl;
pub mod error;
pub mod failure;
pub mod ids;
pub mod partition_key;
pub mod placement;
pub mod schema;
pub mod shard_map;
pub mod shard_set;
pub mod statement_split;
pub mod token;

pub use error::{Error, Result};
