//! Distributed `INSERT ... SELECT`: each row goes to the worker beside its target shard, which
//! writes it there; the driver only publishes the statement.
//!
//! ```text
//!   driver       StoreCommitExec ◀─ gather ─ "part" rows (what each writer staged)
//!   write stage  StoreWriteExec, task p on the owner of shard group p
//!                  └─ ExchangeReaderExec: partition p of every producer
//!   producers    ShardRouterExec: partition = the group of the row's target shard
//!                  └─ the SELECT
//! ```
//!
//! Each writer stages its part ([`Store::stage_write`]) under the statement's id; the commit at the
//! driver makes all parts visible together ([`Store::commit_writes`]). A writer that is lost is
//! re-run elsewhere and stages its part again; what it staged before is never committed. A
//! statement that ends without committing (it failed, or was cancelled) discards what it staged
//! ([`Store::discard_writes`]). Rows upsert by primary key, so running a statement again converges
//! to the same table.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_datafusion_err, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use quarry_core::schema::{TableDef, TableName};
use quarry_core::shard_map::ShardMap;
use quarry_core::shard_set::ShardSet;
use quarry_sql::error::to_datafusion;
use quarry_sql::sink::to_table_schema;
use quarry_store::{StagedWrite, Store};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// A new statement id: distinct for every write this process plans, and across restarts.
pub fn new_statement_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

fn properties(schema: SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions.max(1)),
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

/// The one input of a single-input operator being rebuilt with new children.
fn one_child(children: Vec<Arc<dyn ExecutionPlan>>, name: &str) -> Result<Arc<dyn ExecutionPlan>> {
    let [input] =
        <[_; 1]>::try_from(children).map_err(|_| exec_datafusion_err!("{name} takes one input"))?;
    Ok(input)
}

/// Starts every partition of `input`; the future collects all their batches.
fn read_all(
    input: &Arc<dyn ExecutionPlan>,
    context: &Arc<TaskContext>,
) -> Result<impl std::future::Future<Output = Result<Vec<RecordBatch>>> + Send + 'static> {
    let streams = (0..input.output_partitioning().partition_count())
        .map(|p| input.execute(p, context.clone()))
        .collect::<Result<Vec<_>>>()?;
    Ok(futures::stream::iter(streams)
        .flatten_unordered(None)
        .try_collect())
}

/// The output of an operator with one partition that emits the one batch `make` computes.
fn one_batch(
    name: &str,
    partition: usize,
    schema: SchemaRef,
    make: impl std::future::Future<Output = Result<RecordBatch>> + Send + 'static,
) -> Result<SendableRecordBatchStream> {
    if partition != 0 {
        return internal_err!("{name} has one partition, not {partition}");
    }
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::once(make),
    )))
}

/// Partitions rows by the shard they belong to in a target table: output partition `p` holds
/// the rows whose partition key's token falls in a shard of `groups[p]`.
#[derive(Debug)]
pub struct ShardRouterExec {
    input: Arc<dyn ExecutionPlan>,
    target: TableDef,
    shards: ShardMap,
    groups: Vec<ShardSet>,
    /// Output partition of each shard.
    route: Arc<Vec<u32>>,
    properties: Arc<PlanProperties>,
    /// The routed outputs, created when the first partition is executed.
    running: Mutex<Option<Routing>>,
}

#[derive(Debug)]
struct Routing {
    outputs: Vec<Option<mpsc::UnboundedReceiver<Result<RecordBatch>>>>,
    /// Reads the input partitions; dropped (and aborted) with the plan.
    _readers: JoinSet<()>,
}

impl ShardRouterExec {
    /// Routes `input`'s rows (in `target`'s column order) to `groups`, which must cover every
    /// shard of a keyspace of `shard_count` shards exactly once.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        target: TableDef,
        shard_count: u32,
        groups: Vec<ShardSet>,
    ) -> Result<Self> {
        let mut route = vec![u32::MAX; shard_count as usize];
        for (p, group) in groups.iter().enumerate() {
            for shard in group.iter() {
                match route.get_mut(shard.0 as usize) {
                    Some(slot) if *slot == u32::MAX => *slot = p as u32,
                    _ => {
                        return internal_err!(
                            "shard {} of {} is routed twice or is out of range",
                            shard.0,
                            target.table_name()
                        );
                    }
                }
            }
        }
        if let Some(missing) = route.iter().position(|&p| p == u32::MAX) {
            return internal_err!(
                "shard {missing} of {} is in no write group",
                target.table_name()
            );
        }
        let properties = properties(input.schema(), groups.len());
        Ok(ShardRouterExec {
            input,
            target,
            shards: ShardMap::new(shard_count),
            groups,
            route: Arc::new(route),
            properties,
            running: Mutex::new(None),
        })
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    pub fn target(&self) -> &TableDef {
        &self.target
    }

    pub fn shard_count(&self) -> u32 {
        self.shards.shard_count()
    }

    pub fn groups(&self) -> &[ShardSet] {
        &self.groups
    }

    /// Starts reading every input partition into the routed outputs.
    fn start(&self, context: &Arc<TaskContext>) -> Result<Routing> {
        let n = self.groups.len();
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n).map(|_| mpsc::unbounded_channel()).unzip();
        let mut readers = JoinSet::new();
        for partition in 0..self.input.output_partitioning().partition_count() {
            let mut stream = self.input.execute(partition, context.clone())?;
            let senders = senders.clone();
            let (target, shards, route) = (self.target.clone(), self.shards, self.route.clone());
            readers.spawn(async move {
                while let Some(batch) = stream.next().await {
                    let routed = batch.and_then(|b| split(&b, &target, shards, &route, n));
                    match routed {
                        Ok(pieces) => {
                            for (p, piece) in pieces {
                                let _ = senders[p].send(Ok(piece));
                            }
                        }
                        Err(e) => {
                            // Every output fails: whichever the task reads first reports it.
                            let e = Arc::new(e);
                            for s in &senders {
                                let _ = s.send(Err(datafusion::error::DataFusionError::Shared(
                                    e.clone(),
                                )));
                            }
                            return;
                        }
                    }
                }
            });
        }
        Ok(Routing {
            outputs: receivers.into_iter().map(Some).collect(),
            _readers: readers,
        })
    }
}

/// Cuts `batch` into the rows of each output partition.
fn split(
    batch: &RecordBatch,
    target: &TableDef,
    shards: ShardMap,
    route: &[u32],
    partitions: usize,
) -> Result<Vec<(usize, RecordBatch)>> {
    let typed = to_table_schema(target, vec![batch.clone()])?;
    let Some(typed) = typed.first() else {
        return Ok(Vec::new());
    };
    let tokens = quarry_store::row_tokens(target, typed).map_err(to_datafusion)?;
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); partitions];
    for (i, token) in tokens.values().iter().enumerate() {
        let p = route[shards.shard_of(*token).0 as usize] as usize;
        rows[p].push(i as u32);
    }
    let mut pieces = Vec::new();
    for (p, indices) in rows.into_iter().enumerate() {
        if indices.is_empty() {
            continue;
        }
        let piece = if indices.len() == batch.num_rows() {
            batch.clone()
        } else {
            take_record_batch(batch, &UInt32Array::from(indices))?
        };
        pieces.push((p, piece));
    }
    Ok(pieces)
}

impl DisplayAs for ShardRouterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ShardRouterExec: table={}, groups={}",
            self.target.table_name(),
            self.groups.len()
        )
    }
}

impl ExecutionPlan for ShardRouterExec {
    fn name(&self) -> &str {
        "ShardRouterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(ShardRouterExec::try_new(
            one_child(children, self.name())?,
            self.target.clone(),
            self.shards.shard_count(),
            self.groups.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if running.is_none() {
            *running = Some(self.start(&context)?);
        }
        let receiver = running
            .as_mut()
            .and_then(|r| r.outputs.get_mut(partition))
            .and_then(Option::take);
        let Some(mut receiver) = receiver else {
            return internal_err!(
                "partition {partition} of ShardRouterExec was executed twice or does not exist"
            );
        };
        let stream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.input.schema(),
            stream,
        )))
    }
}

/// The schema of a writer's output: one row per task describing the part it staged.
fn part_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("rows", DataType::UInt64, false),
        Field::new("part", DataType::Utf8, false),
    ]))
}

/// Writes its input (all partitions) to a table as one staged part; outputs one row saying what
/// it staged.
#[derive(Debug)]
pub struct StoreWriteExec {
    input: Arc<dyn ExecutionPlan>,
    table: TableDef,
    statement: u64,
    store: Arc<dyn Store>,
    properties: Arc<PlanProperties>,
}

impl StoreWriteExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        table: TableDef,
        statement: u64,
        store: Arc<dyn Store>,
    ) -> Self {
        StoreWriteExec {
            input,
            table,
            statement,
            store,
            properties: properties(part_schema(), 1),
        }
    }

    pub fn table(&self) -> &TableDef {
        &self.table
    }

    pub fn statement(&self) -> u64 {
        self.statement
    }
}

impl DisplayAs for StoreWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StoreWriteExec: table={}", self.table.table_name())
    }
}

impl ExecutionPlan for StoreWriteExec {
    fn name(&self) -> &str {
        "StoreWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(StoreWriteExec::new(
            one_child(children, self.name())?,
            self.table.clone(),
            self.statement,
            self.store.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = read_all(&self.input, &context)?;
        let (table, store, statement) = (self.table.clone(), self.store.clone(), self.statement);
        let write = async move {
            let batches = input.await?;
            let batches = to_table_schema(&table, batches)?;
            let part = store
                .stage_write(&table.table_name(), statement, batches)
                .await
                .map_err(to_datafusion)?;
            let json = serde_json::to_string(&part)
                .map_err(|e| exec_datafusion_err!("describing a staged part: {e}"))?;
            Ok(RecordBatch::try_new(
                part_schema(),
                vec![
                    Arc::new(UInt64Array::from(vec![part.rows])),
                    Arc::new(StringArray::from(vec![json])),
                ],
            )?)
        };
        one_batch(self.name(), partition, part_schema(), write)
    }
}

/// Publishes the parts its input describes (the writers' outputs, gathered) and outputs the
/// row count, like DataFusion's `DataSinkExec`. Runs at the driver. If the last copy of it goes
/// away without having committed (the statement failed or was cancelled), what the statement
/// staged is discarded.
#[derive(Debug)]
pub struct StoreCommitExec {
    input: Arc<dyn ExecutionPlan>,
    commit: Arc<Commit>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

/// One statement's commit, shared by every copy of its plan node.
#[derive(Debug)]
struct Commit {
    table: TableName,
    statement: u64,
    store: Arc<dyn Store>,
    committed: AtomicBool,
}

impl Drop for Commit {
    fn drop(&mut self) {
        if self.committed.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.store.discard_writes(&self.table, self.statement) {
            tracing::warn!(table = %self.table, error = %e, "could not discard the parts of a statement that did not commit; they go when the store is next opened");
        }
    }
}

impl StoreCommitExec {
    /// `schema` is the insert's output schema (a single `count` column).
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        table: TableName,
        statement: u64,
        store: Arc<dyn Store>,
        schema: SchemaRef,
    ) -> Self {
        StoreCommitExec {
            input,
            commit: Arc::new(Commit {
                table,
                statement,
                store,
                committed: AtomicBool::new(false),
            }),
            properties: properties(schema.clone(), 1),
            schema,
        }
    }
}

impl DisplayAs for StoreCommitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StoreCommitExec: table={}", self.commit.table)
    }
}

impl ExecutionPlan for StoreCommitExec {
    fn name(&self) -> &str {
        "StoreCommitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(StoreCommitExec {
            input: one_child(children, self.name())?,
            commit: self.commit.clone(),
            schema: self.schema.clone(),
            properties: self.properties.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = read_all(&self.input, &context)?;
        let (commit, schema) = (self.commit.clone(), self.schema.clone());
        let run = async move {
            let batches = input.await?;
            let mut parts = Vec::new();
            for batch in &batches {
                let column = batch
                    .column_by_name("part")
                    .and_then(|c| c.as_string_opt::<i32>())
                    .ok_or_else(|| exec_datafusion_err!("a writer's output has no part column"))?;
                for i in 0..column.len() {
                    let part: StagedWrite = serde_json::from_str(column.value(i))
                        .map_err(|e| exec_datafusion_err!("a writer's part is malformed: {e}"))?;
                    parts.push(part);
                }
            }
            let summary = commit
                .store
                .commit_writes(&commit.table, parts)
                .await
                .map_err(to_datafusion)?;
            commit.committed.store(true, Ordering::SeqCst);
            Ok(RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(UInt64Array::from(vec![summary.rows]))],
            )?)
        };
        one_batch(self.name(), partition, self.schema.clone(), run)
    }
}
