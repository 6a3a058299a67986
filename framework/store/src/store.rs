//! The `Store` interface: what Quarry needs from a sharded wide-column store.
//!
//! ```text
//!   create/drop keyspace, table ──▶ catalog
//!   create/drop view (name + SQL) ──▶ catalog (the SQL layer plans it; a store only keeps it)
//!   write(table, batches)        ──▶ upsert by primary key, durable when it returns
//!   plan_scan(request)           ──▶ [ScanSplit] (a consistent snapshot, grouped by shard range)
//!   split.open()                 ──▶ stream of Arrow batches in the projected schema
//! ```
//!
//! A scan is planned once and read split by split, so a reader can spread splits over threads (or,
//! later, over workers) while all of them see the same snapshot. Nothing here mentions DataFusion:
//! the SQL layer translates its expressions into [`Predicate`]s.

use std::fmt::Debug;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use futures::Stream;
use quarry_core::ids::NodeId;
use quarry_core::partition_key::{KeyColumn, tokens};
use quarry_core::placement::Placement;
use quarry_core::schema::{KeyspaceDef, TableDef, TableName, ViewDef};
use quarry_core::shard_set::ShardSet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::predicate::Predicate;

/// The schema scans return for a table: the table's Arrow schema with text as `Utf8View`, which
/// Parquet decodes without copying strings and DataFusion filters and groups fastest. Writes take
/// the table's own schema ([`TableDef::arrow_schema`]).
pub fn scan_schema(table: &TableDef) -> SchemaRef {
    as_view_types(&table.arrow_schema())
}

/// The token of each row of `batch`, which has the table's own schema
/// ([`TableDef::arrow_schema`]): Murmur3 of the serialized partition key, as CQL computes it.
pub fn row_tokens(table: &TableDef, batch: &RecordBatch) -> Result<Int64Array> {
    let key: Vec<KeyColumn<'_>> = table
        .partition_key_indices()
        .into_iter()
        .map(|i| KeyColumn {
            name: &table.columns[i].name,
            cql_type: table.columns[i].cql_type,
            values: batch.column(i),
        })
        .collect();
    Ok(tokens(&key, batch.num_rows())?)
}

/// `schema` with every `Utf8` field as `Utf8View`, metadata kept.
pub fn as_view_types(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Casts `batch`'s columns to `schema`'s types where they differ (`Utf8` and `Utf8View`).
pub fn cast_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                arrow::compute::cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

/// A stream of record batches from a scan.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// What to read from one table.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    pub table: TableName,
    /// Indices of the table's columns to return, in this order; all columns when `None`.
    pub projection: Option<Vec<usize>>,
    /// Pruning hints; rows that do not match may still be returned.
    pub filters: Vec<Predicate>,
    /// Stop after this many rows (only meaningful when `filters` is empty or exact).
    pub limit: Option<usize>,
    /// Read only these shards, for a task that reads the shards one node holds; every shard when
    /// `None`. Shards past the keyspace's shard count are ignored. Rows of other shards are never
    /// returned.
    pub shards: Option<ShardSet>,
}

impl ScanRequest {
    /// Every row and column of `table`.
    pub fn full(table: TableName) -> Self {
        ScanRequest {
            table,
            projection: None,
            filters: Vec::new(),
            limit: None,
            shards: None,
        }
    }
}

/// One independently readable piece of a scan.
#[derive(Debug, Clone)]
pub struct ScanSplit {
    /// The shards this split covers.
    pub shards: RangeInclusive<u32>,
    /// Rows the split will read before filtering (an estimate for balancing work).
    pub estimated_rows: u64,
    pub source: Arc<dyn SplitSource>,
}

/// Rows a scan read from the store node its process stands beside, and from other nodes: how
/// much of the work ran beside its data.
#[derive(Debug, Default)]
pub struct ReadCounters {
    local: AtomicU64,
    remote: AtomicU64,
}

impl ReadCounters {
    pub fn add(&self, local: bool, rows: u64) {
        let counter = if local { &self.local } else { &self.remote };
        counter.fetch_add(rows, Ordering::Relaxed);
    }

    pub fn local_rows(&self) -> u64 {
        self.local.load(Ordering::Relaxed)
    }

    pub fn remote_rows(&self) -> u64 {
        self.remote.load(Ordering::Relaxed)
    }
}

/// Opens one split; implemented by each store.
pub trait SplitSource: Send + Sync + Debug {
    /// Starts reading, counting the rows read into `reads` by where they came from (the
    /// embedded store's files are all on this machine: local). Must be called inside a tokio
    /// runtime.
    fn open_counted(&self, reads: Arc<ReadCounters>) -> Result<BatchStream>;

    /// Starts reading, where nobody asks where the rows came from.
    fn open(&self) -> Result<BatchStream> {
        self.open_counted(Arc::default())
    }

    /// A short description for `EXPLAIN` output and logs.
    fn describe(&self) -> String;
}

/// A planned scan: the output schema (see [`scan_schema`]) and the splits, all reading one
/// snapshot.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    pub schema: SchemaRef,
    pub splits: Vec<ScanSplit>,
    /// Shards left after pruning (out of the keyspace's shard count).
    pub shards_selected: u32,
    pub shards_total: u32,
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Rows accepted (after removing earlier rows of the same call with the same primary key).
    pub rows: u64,
}

/// One part of a distributed write: rows a worker wrote with [`Store::stage_write`], durable
/// but, in a store that can hold them back, invisible until [`Store::commit_writes`] publishes
/// every part of the statement at once. It travels from the worker to the driver as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagedWrite {
    pub table: TableName,
    /// Rows written (after removing rows of the same part with the same primary key).
    pub rows: u64,
    /// Files written but not yet listed, relative to the store's data directory (the embedded
    /// store); empty where the rows were written straight to the table.
    pub files: Vec<String>,
    /// The identity of the table the files were written for: a table dropped and re-created
    /// in the meantime refuses them.
    pub table_id: u64,
}

/// A sharded store of keyspaces and tables with CQL semantics.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    /// A short name of the implementation (`embedded`, `scylla`).
    fn kind(&self) -> &'static str;

    fn keyspaces(&self) -> Vec<KeyspaceDef>;

    fn keyspace(&self, name: &str) -> Result<KeyspaceDef>;

    /// Tables of one keyspace, or of all keyspaces.
    fn tables(&self, keyspace: Option<&str>) -> Result<Vec<TableDef>>;

    fn table(&self, name: &TableName) -> Result<TableDef>;

    /// Creates a keyspace; returns false when it existed and `if_not_exists` was set.
    async fn create_keyspace(&self, def: KeyspaceDef, if_not_exists: bool) -> Result<bool>;

    /// Drops a keyspace with its tables, their data and its views; returns false when it did not
    /// exist and `if_exists` was set.
    async fn drop_keyspace(&self, name: &str, if_exists: bool) -> Result<bool>;

    /// Creates a table; returns false when it existed and `if_not_exists` was set. A view of the
    /// same name is always an error.
    async fn create_table(&self, def: TableDef, if_not_exists: bool) -> Result<bool>;

    /// Drops a table and its data. Naming a view is an error that says so.
    async fn drop_table(&self, name: &TableName, if_exists: bool) -> Result<bool>;

    /// Views of one keyspace, or of all keyspaces, ordered by keyspace and name.
    fn views(&self, keyspace: Option<&str>) -> Result<Vec<ViewDef>>;

    /// One view; [`Error::NoSuchView`](crate::Error::NoSuchView) when there is none.
    fn view(&self, name: &TableName) -> Result<ViewDef>;

    /// Keeps a view definition, durably, in the keyspace's catalog; returns true when it replaced
    /// a view. The store does not read the SQL: the SQL layer plans it before calling this. A
    /// name that a table has is refused, and so is one a view has unless `or_replace` is set.
    async fn create_view(&self, def: ViewDef, or_replace: bool) -> Result<bool>;

    /// Drops a view; returns false when it did not exist and `if_exists` was set. Naming a table
    /// is an error that says so.
    async fn drop_view(&self, name: &TableName, if_exists: bool) -> Result<bool>;

    /// Upserts rows: a row whose primary key exists replaces it. The batches must have the
    /// table's Arrow schema. The write is all-or-nothing and durable when this returns.
    async fn write(&self, table: &TableName, batches: Vec<RecordBatch>) -> Result<WriteSummary>;

    /// Writes one part of distributed statement `statement` (an id its planner chose; typically
    /// the rows of a group of shards, from the worker beside them). Durable when it returns;
    /// whether the rows are visible before [`Store::commit_writes`] depends on the store. The
    /// default writes them at once, as ScyllaDB would.
    async fn stage_write(
        &self,
        table: &TableName,
        statement: u64,
        batches: Vec<RecordBatch>,
    ) -> Result<StagedWrite> {
        let _ = statement;
        let summary = self.write(table, batches).await?;
        Ok(StagedWrite {
            table: table.clone(),
            rows: summary.rows,
            files: Vec::new(),
            table_id: 0,
        })
    }

    /// Publishes the parts of one statement together. The default has nothing to publish.
    async fn commit_writes(
        &self,
        table: &TableName,
        parts: Vec<StagedWrite>,
    ) -> Result<WriteSummary> {
        Ok(WriteSummary {
            rows: parts
                .iter()
                .filter(|p| &p.table == table)
                .map(|p| p.rows)
                .sum(),
        })
    }

    /// Forgets what statement `statement` staged and never committed (it failed or was
    /// cancelled); returns how many parts were dropped. The default has nothing held back.
    fn discard_writes(&self, table: &TableName, statement: u64) -> Result<usize> {
        let _ = (table, statement);
        Ok(0)
    }

    /// Plans a scan over one snapshot of the table.
    fn plan_scan(&self, request: &ScanRequest) -> Result<ScanPlan>;

    /// Which nodes hold each shard of `tables` of `keyspace`, primary first (of the keyspace's
    /// tables as a whole when `tables` is empty). The embedded store places a keyspace's shards
    /// on `nodes` (the cluster's store nodes) by consistent hashing, alike for all its tables; a
    /// CQL cluster answers from its ring, or from each table's tablets in a ScyllaDB tablet
    /// keyspace (which has no keyspace-wide placement), naming nodes by their CQL address
    /// (`ip:port`), whatever `nodes` says.
    fn placement(
        &self,
        keyspace: &KeyspaceDef,
        tables: &[TableName],
        nodes: &[NodeId],
    ) -> Result<Placement> {
        let _ = tables;
        Ok(Placement::compute(keyspace, nodes)?)
    }

    /// Makes every acknowledged write visible to readers in other processes, before work that
    /// they run is planned (the embedded store flushes its memtables into runs; a CQL cluster's
    /// writes are visible once acknowledged, so the default has nothing to do).
    async fn publish(&self) -> Result<()> {
        Ok(())
    }

    /// Reads the catalog again from where it is kept, for a process told of a table by another
    /// one before it noticed it itself (a worker given a plan that names a table the driver has
    /// just created). The embedded store's readers find new tables on their own, so the default
    /// has nothing to do; a CQL cluster's schema is otherwise re-read on a timer.
    async fn refresh_catalog(&self) -> Result<()> {
        Ok(())
    }

    /// How the store keeps a table's rows (runs, overlap, bytes, compaction), for `SHOW TABLES
    /// VERBOSE` and `quarry describe`; `None` where the store does not say (a CQL cluster keeps
    /// that to itself).
    fn storage(&self, name: &TableName) -> Result<Option<TableStats>> {
        self.table(name)?;
        Ok(None)
    }

    /// Merges all of a table's rows into one run now, dropping the rows newer writes
    /// superseded (`OPTIMIZE` and `quarry compact`); returns what the compaction did, or `None`
    /// when there was nothing to merge. The default refuses: a CQL cluster compacts on its own
    /// schedule, and a major compaction there is an operator's `nodetool compact`.
    async fn compact(&self, name: &TableName) -> Result<Option<Compaction>> {
        self.table(name)?;
        Err(Error::Unsupported {
            action: format!("compacting {name}"),
            store: self.kind(),
            instead: format!(
                "the cluster compacts tables itself; to force a major compaction run \
                 `nodetool compact {} {}` on each node",
                name.keyspace, name.table
            ),
        })
    }
}

/// Counters describing what the store holds, for tests, `DESCRIBE` and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub runs: usize,
    pub files: usize,
    pub row_groups: usize,
    /// Rows in runs, counting rows newer writes superseded.
    pub run_rows: u64,
    /// Rows of runs that newer writes superseded (in deletion vectors, dropped by compaction).
    pub deleted_rows: u64,
    /// The most runs holding rows of any one shard.
    pub overlap_depth: usize,
    pub memtable_rows: u64,
    /// Bytes of the runs' files on disk (data and deletion vectors).
    pub bytes: u64,
    /// What the last compaction that rewrote runs of the table did.
    pub last_compaction: Option<Compaction>,
}

/// What a compaction did, for `DESCRIBE` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// When it committed, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Runs merged into one.
    pub runs: usize,
    /// Rows read from the merged runs, superseded ones included (absent from reports written
    /// before it was kept): `read_rows - rows` were dropped.
    #[serde(default)]
    pub read_rows: u64,
    /// Live rows written.
    pub rows: u64,
    /// Windows of shards rewritten one at a time.
    pub windows: usize,
    /// Rows read into memory at once: the most rows of any window.
    pub largest_window_rows: u64,
    /// How long it took, reading to commit.
    pub millis: u64,
}
