//! The token ring of the served nodes, and the system tables drivers read: `system.local`,
//! `system.peers` and `system_schema.*`, built from the ring and the store's catalog (and
//! Cassandra 4's `system_virtual_schema.*`, empty). Also the server-side `DESCRIBE` that cqlsh
//! sends to a Cassandra 4 node.
//!
//! The ring is Cassandra's: every node owns `vnodes` tokens, spread evenly and dealt round-robin,
//! and a token range `(previous token, token]` is replicated on the node owning `token` and the
//! next distinct nodes clockwise (SimpleStrategy).

use std::net::IpAddr;

use quarry_core::cql_type::CqlType;
use quarry_core::ddl::Statement;
use quarry_core::schema::{KeyspaceDef, TableDef, TableName};
use quarry_store::Store;
use sha2::{Digest, Sha256};

use crate::server::NodeStats;
use crate::types::{TEXT, WireType, collection_cell, map_cell, tuple_cell};

/// What this server calls its data center and rack.
pub const DATA_CENTER: &str = "datacenter1";
pub const RACK: &str = "rack1";
/// The Cassandra release the server presents (drivers pick their schema queries by it).
pub const RELEASE_VERSION: &str = "4.0.11";
pub const CQL_VERSION: &str = "3.4.5";

/// One served node.
#[derive(Debug, Clone)]
pub struct RingNode {
    pub address: IpAddr,
    pub host_id: uuid::Uuid,
    pub tokens: Vec<i64>,
}

/// The nodes, their tokens, the replication of every keyspace, and (ScyllaDB's tablets) how each
/// table's rows are spread.
#[derive(Debug, Clone)]
pub struct Ring {
    pub nodes: Vec<RingNode>,
    /// `(token, node)`, sorted by token.
    ring: Vec<(i64, usize)>,
    pub replication: usize,
    /// Tablets per table when every keyspace is tablet-based (as ScyllaDB's with tablets on),
    /// instead of the vnode ring.
    pub tablets: Option<u32>,
    /// CPU shards per node, when the nodes present themselves as sharded ScyllaDB nodes.
    pub shards: Option<u16>,
}

impl Ring {
    pub fn new(addresses: &[IpAddr], vnodes: usize, replication: usize) -> Ring {
        let n = addresses.len().max(1);
        let total = (n * vnodes.max(1)) as i128;
        let span = 1i128 << 64;
        let mut nodes: Vec<RingNode> = addresses
            .iter()
            .enumerate()
            .map(|(i, address)| RingNode {
                address: *address,
                host_id: uuid::Uuid::from_u128(
                    0x5155_4152_5259_4000_8000_0000_0000_0000 | i as u128,
                ),
                tokens: Vec::new(),
            })
            .collect();
        let mut ring = Vec::new();
        for k in 0..total {
            let token = (i64::MIN as i128 + (k + 1) * span / total - 1) as i64;
            let node = (k as usize) % n;
            nodes[node].tokens.push(token);
            ring.push((token, node));
        }
        Ring {
            nodes,
            ring,
            replication: replication.clamp(1, n),
            tablets: None,
            shards: None,
        }
    }

    /// This ring with nodes of `count` CPU shards each.
    pub fn with_shards(mut self, count: u16) -> Ring {
        self.shards = Some(count.max(1));
        self
    }

    /// The CPU shard of `node` that holds the tablet ending at `last` of `table` (0 on nodes
    /// without shards), as `system.tablets` lists it.
    pub fn tablet_shard(&self, table: &TableName, last: i64, node: usize) -> u16 {
        let Some(shards) = self.shards else {
            return 0;
        };
        let digest = Sha256::digest(format!("{table}/{last}/{node}"));
        (u16::from(digest[0]) << 8 | u16::from(digest[1])) % shards
    }

    /// The CPU shard of `node` that holds every token of `(start, end]` of `table`: the shard of
    /// its tablet, when the range lies in one tablet the node holds; `None` otherwise (a vnode
    /// table's range spreads over every shard).
    pub fn shard_holding(
        &self,
        table: &TableName,
        node: usize,
        start: i64,
        end: i64,
    ) -> Option<u16> {
        self.shards?;
        let tablets = self.tablets(table)?;
        if start >= end {
            return None;
        }
        let first = tablets.partition_point(|(last, _)| *last <= start);
        let last = tablets.partition_point(|(last, _)| *last < end);
        if first != last {
            return None;
        }
        let (last_token, replicas) = tablets.get(first)?;
        replicas
            .contains(&node)
            .then(|| self.tablet_shard(table, *last_token, node))
    }

    /// This ring with every keyspace tablet-based, `count` tablets per table.
    pub fn with_tablets(mut self, count: u32) -> Ring {
        self.tablets = Some(count.max(1));
        self
    }

    /// The token ranges `(start, end]` node `node` is the primary replica of on the vnode ring
    /// (the ranges ending at its tokens), in token order; the first range of the ring wraps
    /// around its start.
    pub fn primary_ranges(&self, node: usize) -> Vec<(i64, i64)> {
        self.ring
            .iter()
            .enumerate()
            .filter(|(_, (_, owner))| *owner == node)
            .map(|(i, (end, _))| {
                let start = if i == 0 {
                    self.ring[self.ring.len() - 1].0
                } else {
                    self.ring[i - 1].0
                };
                (start, *end)
            })
            .collect()
    }

    /// Index in `ring` of the token range holding `token`.
    fn range_index(&self, token: i64) -> usize {
        let i = self.ring.partition_point(|(t, _)| *t < token);
        if i == self.ring.len() { 0 } else { i }
    }

    fn replicas_at(&self, index: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.replication);
        for k in 0..self.ring.len() {
            let node = self.ring[(index + k) % self.ring.len()].1;
            if !out.contains(&node) {
                out.push(node);
                if out.len() == self.replication {
                    break;
                }
            }
        }
        out
    }

    /// The tablets of `table`, `(last token, replicas)` in token order: tablet `i` holds
    /// `(last[i - 1], last[i]]` (the first from the ring's start). Tablets cut the ring evenly,
    /// as ScyllaDB's do when a table is created; a tablet's replicas are consecutive nodes from
    /// one picked by hashing the table and the tablet, so they differ from table to table and
    /// from the vnode ring.
    /// `None` without tablets.
    pub fn tablets(&self, table: &TableName) -> Option<Vec<(i64, Vec<usize>)>> {
        let count = i128::from(self.tablets?);
        let n = self.nodes.len();
        Some(
            (0..count)
                .map(|i| {
                    let last = (i64::MIN as i128 + (i + 1) * (1i128 << 64) / count - 1) as i64;
                    let digest = Sha256::digest(format!("{table}/{i}"));
                    let first = (usize::from(digest[0]) << 8 | usize::from(digest[1])) % n;
                    let replicas = (0..self.replication).map(|k| (first + k) % n).collect();
                    (last, replicas)
                })
                .collect(),
        )
    }

    /// The nodes holding `token` of `table`, primary first.
    pub fn replicas(&self, table: &TableName, token: i64) -> Vec<usize> {
        match self.tablets(table) {
            Some(tablets) => {
                let i = tablets.partition_point(|(last, _)| *last < token);
                tablets[i.min(tablets.len() - 1)].1.clone()
            }
            None => self.replicas_at(self.range_index(token)),
        }
    }

    /// Whether `node` holds every token of `(start, end]` of `table` (the whole ring when
    /// `start >= end` wraps).
    pub fn holds(&self, table: &TableName, node: usize, start: i64, end: i64) -> bool {
        if start >= end {
            return (start == i64::MAX || self.holds(table, node, start, i64::MAX))
                && (end == i64::MIN || self.holds(table, node, i64::MIN, end));
        }
        if let Some(tablets) = self.tablets(table) {
            let first = tablets.partition_point(|(last, _)| *last <= start);
            let last = tablets.partition_point(|(last, _)| *last < end);
            return tablets[first..=last.min(tablets.len() - 1)]
                .iter()
                .all(|(_, replicas)| replicas.contains(&node));
        }
        let first = self.range_index(start.saturating_add(1));
        let last = self.range_index(end);
        let mut i = first;
        loop {
            if !self.replicas_at(i).contains(&node) {
                return false;
            }
            if i == last {
                return true;
            }
            i = (i + 1) % self.ring.len();
        }
    }
}

/// Columns of column types as a system table declares them.
fn wire(columns: Vec<(&'static str, CqlType)>) -> Vec<(&'static str, WireType)> {
    columns.into_iter().map(|(n, t)| (n, t.into())).collect()
}

/// A system table's columns and rows (serialized cells).
#[derive(Debug, Clone)]
pub struct SystemTable {
    pub keyspace: &'static str,
    pub name: &'static str,
    pub columns: Vec<(&'static str, WireType)>,
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
}

fn text(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

fn inet(a: IpAddr) -> Option<Vec<u8>> {
    Some(match a {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    })
}

fn uuid(u: uuid::Uuid) -> Option<Vec<u8>> {
    Some(u.as_bytes().to_vec())
}

fn int(v: i32) -> Option<Vec<u8>> {
    Some(v.to_be_bytes().to_vec())
}

fn double(v: f64) -> Option<Vec<u8>> {
    Some(v.to_bits().to_be_bytes().to_vec())
}

fn text_map(entries: &[(&str, &str)]) -> Option<Vec<u8>> {
    let pairs: Vec<(&[u8], &[u8])> = entries
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    Some(map_cell(&pairs))
}

fn text_set(items: &[String]) -> Option<Vec<u8>> {
    let elements: Vec<&[u8]> = items.iter().map(|s| s.as_bytes()).collect();
    Some(collection_cell(&elements))
}

/// A stable id for a table (`system_schema.tables.id`).
fn table_id(def: &TableDef) -> uuid::Uuid {
    table_id_of(&def.keyspace, &def.name)
}

fn table_id_of(keyspace: &str, name: &str) -> uuid::Uuid {
    let digest = Sha256::digest(format!("{keyspace}.{name}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The schema version every node reports: a digest of the catalog, so that it changes with
/// every DDL statement and agrees across nodes.
pub fn schema_version(store: &dyn Store) -> uuid::Uuid {
    let mut hasher = Sha256::new();
    for ks in store.keyspaces() {
        hasher.update(format!("{ks:?}"));
    }
    if let Ok(tables) = store.tables(None) {
        for t in tables {
            hasher.update(format!("{t:?}"));
        }
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The `replication` map a keyspace reports: every keyspace is served with the ring's
/// replication, whatever its DDL asked for (the data is kept once, in the store).
fn replication(ring: &Ring) -> Vec<(&'static str, String)> {
    vec![
        (
            "class",
            "org.apache.cassandra.locator.SimpleStrategy".into(),
        ),
        ("replication_factor", ring.replication.to_string()),
    ]
}

/// What of a system table to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// Its columns only (rows drawn from the catalog are left out): what preparing a statement
    /// and listing the table in `system_schema.columns` need.
    Columns,
    /// Its columns and rows.
    Rows,
}

/// The system table `keyspace.name` as node `node` serves it, or `None` when there is no such
/// table (drivers take "unconfigured table" for "not Cassandra 3 / not Scylla").
#[allow(clippy::too_many_arguments)]
pub fn table(
    keyspace: &str,
    name: &str,
    node: usize,
    ring: &Ring,
    store: &dyn Store,
    cluster_name: &str,
    stats: &NodeStats,
    build: Build,
) -> Option<SystemTable> {
    let version = schema_version(store);
    // What the catalog-drawn rows come from: nothing when only the columns are wanted.
    let (keyspaces, tables, system_tables) = match build {
        Build::Rows => (
            store.keyspaces(),
            store.tables(None).unwrap_or_default(),
            served_system_tables(ring),
        ),
        Build::Columns => (Vec::new(), Vec::new(), Vec::new()),
    };
    let node_tokens = |i: usize| {
        text_set(
            &ring.nodes[i]
                .tokens
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>(),
        )
    };
    let t = match (keyspace, name) {
        ("system", "local") => {
            let me = &ring.nodes[node];
            SystemTable {
                keyspace: "system",
                name: "local",
                columns: wire(vec![
                    ("key", TEXT),
                    ("bootstrapped", TEXT),
                    ("broadcast_address", CqlType::Inet),
                    ("cluster_name", TEXT),
                    ("cql_version", TEXT),
                    ("data_center", TEXT),
                    ("host_id", CqlType::Uuid),
                    ("listen_address", CqlType::Inet),
                    ("native_protocol_version", TEXT),
                    ("partitioner", TEXT),
                    ("rack", TEXT),
                    ("release_version", TEXT),
                    ("rpc_address", CqlType::Inet),
                    ("schema_version", CqlType::Uuid),
                    ("tokens", CqlType::Set(&TEXT)),
                ]),
                rows: vec![vec![
                    text("local"),
                    text("COMPLETED"),
                    inet(me.address),
                    text(cluster_name),
                    text(CQL_VERSION),
                    text(DATA_CENTER),
                    uuid(me.host_id),
                    inet(me.address),
                    text("4"),
                    text("org.apache.cassandra.dht.Murmur3Partitioner"),
                    text(RACK),
                    text(RELEASE_VERSION),
                    inet(me.address),
                    uuid(version),
                    node_tokens(node),
                ]],
            }
        }
        // What this node served so far (Quarry's own table, for tests and operators).
        ("system", "quarry_stats") => {
            let count = |v: u64| Some((v as i64).to_be_bytes().to_vec());
            let bigint = CqlType::BigInt;
            SystemTable {
                keyspace: "system",
                name: "quarry_stats",
                columns: wire(vec![
                    ("address", CqlType::Inet),
                    ("requests", bigint),
                    ("local_scans", bigint),
                    ("forwarded_scans", bigint),
                    ("shard_local_scans", bigint),
                    ("cross_shard_scans", bigint),
                    ("full_scans", bigint),
                    ("rows_read", bigint),
                    ("local_writes", bigint),
                    ("forwarded_writes", bigint),
                ]),
                rows: vec![vec![
                    inet(ring.nodes[node].address),
                    count(stats.requests),
                    count(stats.local_scans),
                    count(stats.forwarded_scans),
                    count(stats.shard_local_scans),
                    count(stats.cross_shard_scans),
                    count(stats.full_scans),
                    count(stats.rows_read),
                    count(stats.local_writes),
                    count(stats.forwarded_writes),
                ]],
            }
        }
        ("system", "peers") => SystemTable {
            keyspace: "system",
            name: "peers",
            columns: wire(vec![
                ("peer", CqlType::Inet),
                ("data_center", TEXT),
                ("host_id", CqlType::Uuid),
                ("preferred_ip", CqlType::Inet),
                ("rack", TEXT),
                ("release_version", TEXT),
                ("rpc_address", CqlType::Inet),
                ("schema_version", CqlType::Uuid),
                ("tokens", CqlType::Set(&TEXT)),
            ]),
            rows: (0..ring.nodes.len())
                .filter(|&i| i != node)
                .map(|i| {
                    let peer = &ring.nodes[i];
                    vec![
                        inet(peer.address),
                        text(DATA_CENTER),
                        uuid(peer.host_id),
                        inet(peer.address),
                        text(RACK),
                        text(RELEASE_VERSION),
                        inet(peer.address),
                        uuid(version),
                        node_tokens(i),
                    ]
                })
                .collect(),
        },
        ("system_schema", "keyspaces") => SystemTable {
            keyspace: "system_schema",
            name: "keyspaces",
            columns: wire(vec![
                ("keyspace_name", TEXT),
                ("durable_writes", CqlType::Boolean),
                ("replication", CqlType::Map(&TEXT, &TEXT)),
            ]),
            rows: keyspaces
                .iter()
                .map(|ks: &KeyspaceDef| {
                    let r = replication(ring);
                    let entries: Vec<(&str, &str)> =
                        r.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    vec![text(&ks.name), Some(vec![1]), text_map(&entries)]
                })
                // The keyspaces the server answers itself, node-local as in Cassandra, so that
                // clients (cqlsh) know their tables.
                .chain(["system", "system_schema"].map(|ks| {
                    vec![
                        text(ks),
                        Some(vec![1]),
                        text_map(&[("class", "org.apache.cassandra.locator.LocalStrategy")]),
                    ]
                }))
                .collect(),
        },
        ("system_schema", "tables") => SystemTable {
            keyspace: "system_schema",
            name: "tables",
            columns: wire(vec![
                ("keyspace_name", TEXT),
                ("table_name", TEXT),
                ("bloom_filter_fp_chance", CqlType::Double),
                ("caching", CqlType::Map(&TEXT, &TEXT)),
                ("comment", TEXT),
                ("compaction", CqlType::Map(&TEXT, &TEXT)),
                ("compression", CqlType::Map(&TEXT, &TEXT)),
                ("crc_check_chance", CqlType::Double),
                ("dclocal_read_repair_chance", CqlType::Double),
                ("default_time_to_live", CqlType::Int),
                ("extensions", CqlType::Map(&TEXT, &CqlType::Blob)),
                ("flags", CqlType::Set(&TEXT)),
                ("gc_grace_seconds", CqlType::Int),
                ("id", CqlType::Uuid),
                ("max_index_interval", CqlType::Int),
                ("memtable_flush_period_in_ms", CqlType::Int),
                ("min_index_interval", CqlType::Int),
                ("read_repair_chance", CqlType::Double),
                ("speculative_retry", TEXT),
            ]),
            rows: tables
                .iter()
                .map(|t| (t.keyspace.as_str(), t.name.as_str()))
                .chain(system_tables.iter().copied())
                .map(|(keyspace, name)| {
                    vec![
                        text(keyspace),
                        text(name),
                        double(0.01),
                        text_map(&[("keys", "ALL"), ("rows_per_partition", "NONE")]),
                        text("a Quarry table"),
                        text_map(&[(
                            "class",
                            "org.apache.cassandra.db.compaction.SizeTieredCompactionStrategy",
                        )]),
                        text_map(&[]),
                        double(1.0),
                        double(0.0),
                        int(0),
                        text_map(&[]),
                        text_set(&["compound".to_string()]),
                        int(864_000),
                        uuid(table_id_of(keyspace, name)),
                        int(2048),
                        int(0),
                        int(128),
                        double(0.0),
                        text("99PERCENTILE"),
                    ]
                })
                .collect(),
        },
        ("system_schema", "columns") => SystemTable {
            keyspace: "system_schema",
            name: "columns",
            columns: wire(COLUMNS_COLUMNS.to_vec()),
            rows: tables
                .iter()
                .flat_map(|t| {
                    t.columns.iter().map(move |c| {
                        let (kind, position, order) =
                            if let Some(p) = t.partition_key.iter().position(|k| k == &c.name) {
                                ("partition_key", p as i32, "none")
                            } else if let Some(p) = t.clustering.iter().position(|k| k == &c.name) {
                                ("clustering", p as i32, "asc")
                            } else {
                                ("regular", -1, "none")
                            };
                        vec![
                            text(&t.keyspace),
                            text(&t.name),
                            text(&c.name),
                            text(order),
                            Some(c.name.as_bytes().to_vec()),
                            text(kind),
                            int(position),
                            text(&c.cql_type.cql_name()),
                        ]
                    })
                })
                .chain(system_tables.iter().flat_map(|&(keyspace, name)| {
                    table(
                        keyspace,
                        name,
                        node,
                        ring,
                        store,
                        cluster_name,
                        stats,
                        Build::Columns,
                    )
                    .map(|t| t.columns)
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                    .map(move |(i, (column, t))| {
                        // The first column is the key, as near enough for clients
                        // that only read these tables.
                        let (kind, position) = if i == 0 {
                            ("partition_key", 0)
                        } else {
                            ("regular", -1)
                        };
                        vec![
                            text(keyspace),
                            text(name),
                            text(column),
                            text("none"),
                            Some(column.as_bytes().to_vec()),
                            text(kind),
                            int(position),
                            text(&t.cql_name()),
                        ]
                    })
                }))
                .collect(),
        },
        // ScyllaDB's keyspace flags: which keyspaces are tablet-based (served only with
        // tablets, so that a driver takes a vnode server for Cassandra, as before).
        ("system_schema", "scylla_keyspaces") if ring.tablets.is_some() => SystemTable {
            keyspace: "system_schema",
            name: "scylla_keyspaces",
            columns: wire(vec![
                ("keyspace_name", TEXT),
                ("initial_tablets", CqlType::Int),
            ]),
            rows: keyspaces
                .iter()
                .map(|ks| vec![text(&ks.name), int(0)])
                .collect(),
        },
        ("system_schema", other) => {
            let columns: Vec<(&'static str, CqlType)> = match other {
                "types" => vec![
                    ("keyspace_name", TEXT),
                    ("type_name", TEXT),
                    ("field_names", CqlType::List(&TEXT)),
                    ("field_types", CqlType::List(&TEXT)),
                ],
                "views" => vec![
                    ("keyspace_name", TEXT),
                    ("view_name", TEXT),
                    ("base_table_id", CqlType::Uuid),
                    ("base_table_name", TEXT),
                    ("include_all_columns", CqlType::Boolean),
                    ("where_clause", TEXT),
                ],
                "functions" => vec![
                    ("keyspace_name", TEXT),
                    ("function_name", TEXT),
                    ("argument_names", CqlType::List(&TEXT)),
                    ("argument_types", CqlType::List(&TEXT)),
                    ("body", TEXT),
                    ("called_on_null_input", CqlType::Boolean),
                    ("language", TEXT),
                    ("return_type", TEXT),
                ],
                "aggregates" => vec![
                    ("keyspace_name", TEXT),
                    ("aggregate_name", TEXT),
                    ("argument_types", CqlType::List(&TEXT)),
                    ("final_func", TEXT),
                    ("initcond", TEXT),
                    ("return_type", TEXT),
                    ("state_func", TEXT),
                    ("state_type", TEXT),
                ],
                "triggers" => vec![
                    ("keyspace_name", TEXT),
                    ("table_name", TEXT),
                    ("trigger_name", TEXT),
                    ("options", CqlType::Map(&TEXT, &TEXT)),
                ],
                "indexes" => vec![
                    ("keyspace_name", TEXT),
                    ("table_name", TEXT),
                    ("index_name", TEXT),
                    ("kind", TEXT),
                    ("options", CqlType::Map(&TEXT, &TEXT)),
                ],
                _ => return None,
            };
            let name = match other {
                "types" => "types",
                "views" => "views",
                "functions" => "functions",
                "aggregates" => "aggregates",
                "triggers" => "triggers",
                _ => "indexes",
            };
            SystemTable {
                keyspace: "system_schema",
                name,
                columns: wire(columns),
                rows: Vec::new(),
            }
        }
        // What a Cassandra node estimates of each table, for the ranges it is primary for: here
        // the table's live rows and bytes spread evenly over the ring (Murmur3 spreads
        // partitions evenly), as the connector's split sizing reads them.
        ("system", "size_estimates") => {
            let ranges = ring.primary_ranges(node);
            let mut rows = Vec::new();
            let mut tables = tables.clone();
            tables.sort_by(|a, b| (&a.keyspace, &a.name).cmp(&(&b.keyspace, &b.name)));
            for def in &tables {
                let Ok(Some(stats)) = store.storage(&def.table_name()) else {
                    continue;
                };
                let in_runs = stats.run_rows.saturating_sub(stats.deleted_rows);
                let live = in_runs + stats.memtable_rows;
                // Rows still in memory are taken to be the size of those on disk.
                let mean_size = stats.bytes.checked_div(in_runs).unwrap_or(0);
                for &(start, end) in &ranges {
                    let width = end.wrapping_sub(start) as u64;
                    let width = if width == 0 { u64::MAX } else { width };
                    let partitions = ((u128::from(live) * u128::from(width)) >> 64) as i64;
                    rows.push(vec![
                        text(&def.keyspace),
                        text(&def.name),
                        text(&start.to_string()),
                        text(&end.to_string()),
                        Some((mean_size as i64).to_be_bytes().to_vec()),
                        Some(partitions.to_be_bytes().to_vec()),
                    ]);
                }
            }
            SystemTable {
                keyspace: "system",
                name: "size_estimates",
                columns: wire(vec![
                    ("keyspace_name", TEXT),
                    ("table_name", TEXT),
                    ("range_start", TEXT),
                    ("range_end", TEXT),
                    ("mean_partition_size", CqlType::BigInt),
                    ("partitions_count", CqlType::BigInt),
                ]),
                rows,
            }
        }
        // ScyllaDB's tablet map: a row per tablet of every table, with its replicas as
        // (host id, shard) pairs.
        ("system", "tablets") if ring.tablets.is_some() => {
            let mut rows = Vec::new();
            for def in &tables {
                let tablets = ring.tablets(&def.table_name()).unwrap_or_default();
                for (last, replicas) in &tablets {
                    let pairs: Vec<Vec<u8>> = replicas
                        .iter()
                        .map(|&r| {
                            let shard = i32::from(ring.tablet_shard(&def.table_name(), *last, r));
                            tuple_cell(&[
                                Some(ring.nodes[r].host_id.as_bytes()),
                                Some(&shard.to_be_bytes()),
                            ])
                        })
                        .collect();
                    let pairs: Vec<&[u8]> = pairs.iter().map(Vec::as_slice).collect();
                    rows.push(vec![
                        uuid(table_id(def)),
                        Some(last.to_be_bytes().to_vec()),
                        text(&def.keyspace),
                        text(&def.name),
                        int(tablets.len() as i32),
                        Some(collection_cell(&pairs)),
                    ]);
                }
            }
            SystemTable {
                keyspace: "system",
                name: "tablets",
                columns: vec![
                    ("table_id", CqlType::Uuid.into()),
                    ("last_token", CqlType::BigInt.into()),
                    ("keyspace_name", TEXT.into()),
                    ("table_name", TEXT.into()),
                    ("tablet_count", CqlType::Int.into()),
                    (
                        "replicas",
                        WireType::TupleList(&[CqlType::Uuid, CqlType::Int]),
                    ),
                ],
                rows,
            }
        }
        // Cassandra 4's virtual tables, which drivers read beside the schema: there are none.
        ("system_virtual_schema", other) => {
            let (name, columns): (&'static str, Vec<(&'static str, CqlType)>) = match other {
                "keyspaces" => ("keyspaces", vec![("keyspace_name", TEXT)]),
                "tables" => (
                    "tables",
                    vec![
                        ("keyspace_name", TEXT),
                        ("table_name", TEXT),
                        ("comment", TEXT),
                    ],
                ),
                "columns" => ("columns", COLUMNS_COLUMNS.to_vec()),
                _ => return None,
            };
            SystemTable {
                keyspace: "system_virtual_schema",
                name,
                columns: wire(columns),
                rows: Vec::new(),
            }
        }
        _ => return None,
    };
    Some(t)
}

/// The tables of the keyspaces the server answers itself that it lists in `system_schema` (the
/// empty ones drivers probe for are left out).
fn served_system_tables(ring: &Ring) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![
        ("system", "local"),
        ("system", "peers"),
        ("system", "quarry_stats"),
        ("system", "size_estimates"),
        ("system_schema", "keyspaces"),
        ("system_schema", "tables"),
        ("system_schema", "columns"),
    ];
    if ring.tablets.is_some() {
        out.extend([("system", "tablets"), ("system_schema", "scylla_keyspaces")]);
    }
    out
}

/// Whether `keyspace` is one the server answers itself.
pub fn is_system_keyspace(keyspace: &str) -> bool {
    matches!(
        keyspace,
        "system" | "system_schema" | "system_virtual_schema"
    )
}

/// The rows of a server-side `DESCRIBE` (as Cassandra 4 answers it, and cqlsh prints it): a
/// listing of keyspaces or tables, or the CQL that creates a keyspace (with its tables) or a
/// table. `None` for statements that are not a DESCRIBE.
pub fn describe(
    statement: &Statement,
    session: Option<&str>,
    ring: &Ring,
    store: &dyn Store,
) -> Option<Result<SystemTable, String>> {
    let listing = |rows: Vec<Vec<Option<Vec<u8>>>>| SystemTable {
        keyspace: "system",
        name: "describe",
        columns: wire(DESCRIBE_LISTING.to_vec()),
        rows,
    };
    let element = |rows: Vec<Vec<Option<Vec<u8>>>>| SystemTable {
        keyspace: "system",
        name: "describe",
        columns: wire(DESCRIBE_ELEMENT.to_vec()),
        rows,
    };
    let keyspace_row = |name: &str| {
        vec![
            text(name),
            text("keyspace"),
            text(name),
            text(&create_keyspace_cql(name, ring)),
        ]
    };
    let table_row = |def: &TableDef| {
        vec![
            text(&def.keyspace),
            text("table"),
            text(&def.name),
            text(&create_table_cql(def)),
        ]
    };
    let tables_of = |keyspace: Option<&str>| -> Result<Vec<TableDef>, String> {
        let mut tables = store.tables(keyspace).map_err(|e| e.to_string())?;
        tables.sort_by(|a, b| (&a.keyspace, &a.name).cmp(&(&b.keyspace, &b.name)));
        Ok(tables)
    };
    let describe_keyspace = |name: &str| -> Result<SystemTable, String> {
        store
            .keyspace(name)
            .map_err(|_| format!("'{name}' not found in keyspaces"))?;
        let mut rows = vec![keyspace_row(name)];
        rows.extend(tables_of(Some(name))?.iter().map(table_row));
        Ok(element(rows))
    };
    Some(match statement {
        Statement::ShowKeyspaces => {
            let mut names: Vec<String> = store.keyspaces().into_iter().map(|k| k.name).collect();
            names.sort();
            Ok(listing(
                names
                    .iter()
                    .map(|n| vec![text(n), text("keyspace"), text(n)])
                    .collect(),
            ))
        }
        Statement::ShowTables { keyspace, .. } => {
            tables_of(keyspace.as_deref().or(session)).map(|tables| {
                listing(
                    tables
                        .iter()
                        .map(|t| vec![text(&t.keyspace), text("table"), text(&t.name)])
                        .collect(),
                )
            })
        }
        Statement::DescribeKeyspace { name } => describe_keyspace(name),
        Statement::DescribeTable { name } => {
            let keyspace = name.keyspace.as_deref().or(session);
            let table = keyspace.and_then(|k| store.table(&TableName::new(k, &name.name)).ok());
            match (table, &name.keyspace) {
                (Some(def), _) => Ok(element(vec![table_row(&def)])),
                // `DESCRIBE name` names a keyspace when no table of the session's has that name.
                (None, None) if store.keyspace(&name.name).is_ok() => describe_keyspace(&name.name),
                (None, _) => Err(match keyspace {
                    Some(k) => format!("'{}' not found in keyspace '{k}'", name.name),
                    None => format!(
                        "'{}' not found: no keyspace is in use; write keyspace.table",
                        name.name
                    ),
                }),
            }
        }
        _ => return None,
    })
}

/// The columns of `system_schema.columns` (and of Cassandra 4's virtual-table twin).
const COLUMNS_COLUMNS: [(&str, CqlType); 8] = [
    ("keyspace_name", TEXT),
    ("table_name", TEXT),
    ("column_name", TEXT),
    ("clustering_order", TEXT),
    ("column_name_bytes", CqlType::Blob),
    ("kind", TEXT),
    ("position", CqlType::Int),
    ("type", TEXT),
];

/// The columns of a `DESCRIBE KEYSPACES` or `DESCRIBE TABLES` result.
pub const DESCRIBE_LISTING: [(&str, CqlType); 3] =
    [("keyspace_name", TEXT), ("type", TEXT), ("name", TEXT)];

/// The columns of a `DESCRIBE` of one keyspace or table.
pub const DESCRIBE_ELEMENT: [(&str, CqlType); 4] = [
    ("keyspace_name", TEXT),
    ("type", TEXT),
    ("name", TEXT),
    ("create_statement", TEXT),
];

/// Whether `statement` lists names (rather than printing CQL).
pub fn describe_lists(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::ShowKeyspaces | Statement::ShowTables { .. }
    )
}

fn quote_name(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn create_keyspace_cql(name: &str, ring: &Ring) -> String {
    let replication: Vec<String> = replication(ring)
        .iter()
        .map(|(k, v)| format!("'{k}': '{v}'"))
        .collect();
    format!(
        "CREATE KEYSPACE {} WITH replication = {{{}}}  AND durable_writes = true;",
        quote_name(name),
        replication.join(", ")
    )
}

/// A table's `CREATE TABLE` as a CQL cluster would print it (column types as CQL names them).
fn create_table_cql(def: &TableDef) -> String {
    let mut lines: Vec<String> = def
        .columns
        .iter()
        .map(|c| format!("    {} {}", quote_name(&c.name), c.cql_type.cql_name()))
        .collect();
    let partition: Vec<String> = def.partition_key.iter().map(|c| quote_name(c)).collect();
    let partition = if partition.len() == 1 {
        partition[0].clone()
    } else {
        format!("({})", partition.join(", "))
    };
    let mut key = vec![partition];
    key.extend(def.clustering.iter().map(|c| quote_name(c)));
    lines.push(format!("    PRIMARY KEY ({})", key.join(", ")));
    let mut cql = format!(
        "CREATE TABLE {}.{} (\n{}\n)",
        quote_name(&def.keyspace),
        quote_name(&def.name),
        lines.join(",\n")
    );
    if !def.clustering.is_empty() {
        let order: Vec<String> = def
            .clustering
            .iter()
            .map(|c| format!("{} ASC", quote_name(c)))
            .collect();
        cql.push_str(&format!(" WITH CLUSTERING ORDER BY ({})", order.join(", ")));
    }
    cql.push(';');
    cql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_replicated_on_consecutive_distinct_nodes() {
        let addresses: Vec<IpAddr> = (1..=3)
            .map(|i| format!("127.0.0.{i}").parse().unwrap())
            .collect();
        let ring = Ring::new(&addresses, 4, 2);
        let t1 = TableName::new("ks", "t1");
        assert_eq!(ring.ring.len(), 12);
        for node in &ring.nodes {
            assert_eq!(node.tokens.len(), 4);
        }
        // Every token is held by exactly two distinct nodes.
        for t in [i64::MIN + 1, -5, 0, 17, i64::MAX] {
            let r = ring.replicas(&t1, t);
            assert_eq!(r.len(), 2);
            assert_ne!(r[0], r[1]);
        }
        // A node holds its own primary range and the one before it.
        let (t0, n0) = ring.ring[5];
        let prev = ring.ring[4].0;
        assert!(ring.holds(&t1, n0, prev, t0));
        assert_eq!(ring.replicas(&t1, t0)[0], n0);
        // Over the whole ring, with replication 2 of 3, no node holds everything.
        assert!(!(0..3).any(|n| ring.holds(&t1, n, i64::MIN, i64::MAX)));
        let full = Ring::new(&addresses, 4, 3);
        assert!((0..3).all(|n| full.holds(&t1, n, 0, 0)));
    }

    #[test]
    fn tablets_cut_the_ring_evenly_and_each_table_places_its_own() {
        let addresses: Vec<IpAddr> = (1..=3)
            .map(|i| format!("127.0.0.{i}").parse().unwrap())
            .collect();
        let ring = Ring::new(&addresses, 4, 2).with_tablets(8);
        let names: Vec<TableName> = (0..6)
            .map(|i| TableName::new("ks", format!("t{i}")))
            .collect();
        let maps: Vec<Vec<(i64, Vec<usize>)>> =
            names.iter().map(|t| ring.tablets(t).unwrap()).collect();
        for map in &maps {
            assert_eq!(map.len(), 8);
            assert_eq!(map[7].0, i64::MAX);
            // Ascending, evenly spaced last tokens; two distinct replicas each.
            for w in map.windows(2) {
                assert_eq!(w[1].0 as i128 - w[0].0 as i128, 1i128 << 61);
            }
            for (_, replicas) in map {
                assert_eq!(replicas.len(), 2);
                assert_ne!(replicas[0], replicas[1]);
            }
        }
        // Tables are placed apart: not every table has the first table's replicas.
        assert!(maps.iter().any(|m| m[0].1 != maps[0][0].1));
        // A token's replicas are those of the tablet holding it, boundaries included.
        let t = &names[0];
        let map = &maps[0];
        assert_eq!(ring.replicas(t, map[2].0), map[2].1);
        assert_eq!(ring.replicas(t, map[2].0 + 1), map[3].1);
        assert_eq!(ring.replicas(t, i64::MIN), map[0].1);
        // A node holds a range when it replicates every tablet the range touches.
        let node = map[3].1[0];
        assert!(ring.holds(t, node, map[2].0, map[3].0));
        let other = (0..3).find(|n| !map[4].1.contains(n)).unwrap();
        assert!(!ring.holds(t, other, map[2].0, map[4].0));
        assert_eq!(
            ring.holds(t, other, map[2].0, map[3].0),
            map[3].1.contains(&other)
        );
    }
}
