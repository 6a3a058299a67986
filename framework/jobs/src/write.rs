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
//! re-run elsewhere and stages its part again; what it staged before is never committed. When the
//! statement's plan goes away, the driver discards what it staged and did not publish
//! ([`Store::discard_writes`]): everything when it failed or was cancelled, lost attempts' parts
//! when it committed. Rows upsert by primary key, so running a statement again converges to the
//! same table.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
use futures::FutureExt;
use futures::future::BoxFuture;
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
    // Random, so that statements of drivers that share nothing (restarted, or in containers
    // with the same clock) do not collide.
    uuid::Uuid::new_v4().as_u64_pair().0
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
                let fail = |e: datafusion::error::DataFusionError| {
                    // Every output fails: whichever the task reads first reports it.
                    let e = Arc::new(e);
                    for s in &senders {
                        let _ = s.send(Err(datafusion::error::DataFusionError::Shared(e.clone())));
                    }
                };
                let route_all = async {
                    while let Some(batch) = stream.next().await {
                        for (p, piece) in
                            batch.and_then(|b| split(&b, &target, shards, &route, n))?
                        {
                            let _ = senders[p].send(Ok(piece));
                        }
                    }
                    Ok::<_, datafusion::error::DataFusionError>(())
                };
                // A panic must not look like the end of the rows: the outputs would be cut short.
                match std::panic::AssertUnwindSafe(route_all).catch_unwind().await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => fail(e),
                    Err(_) => fail(exec_datafusion_err!(
                        "routing rows to their shards panicked"
                    )),
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

/// What an operator that consumes its whole input and emits one batch does with the rows.
pub trait WholeInput: fmt::Debug + Send + Sync + 'static {
    const NAME: &'static str;

    /// The schema of the one batch.
    fn schema(&self) -> SchemaRef;

    /// `NAME: ...` as `EXPLAIN` shows it.
    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result;

    /// The one batch, from every batch of the input.
    fn run(self: Arc<Self>, batches: Vec<RecordBatch>) -> BoxFuture<'static, Result<RecordBatch>>;
}

/// An operator that reads every partition of its one input and emits one batch (writes and
/// commits, whose result is a summary). Copies made by plan rewrites share `op`.
#[derive(Debug)]
pub struct WholeInputExec<O: WholeInput> {
    input: Arc<dyn ExecutionPlan>,
    op: Arc<O>,
    properties: Arc<PlanProperties>,
}

impl<O: WholeInput> WholeInputExec<O> {
    fn with_op(input: Arc<dyn ExecutionPlan>, op: Arc<O>) -> Self {
        WholeInputExec {
            properties: properties(op.schema(), 1),
            input,
            op,
        }
    }

    pub fn op(&self) -> &O {
        &self.op
    }
}

impl<O: WholeInput> DisplayAs for WholeInputExec<O> {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.op.describe(f)
    }
}

impl<O: WholeInput> ExecutionPlan for WholeInputExec<O> {
    fn name(&self) -> &str {
        O::NAME
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
        Ok(Arc::new(WholeInputExec::with_op(
            one_child(children, O::NAME)?,
            self.op.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("{} has one partition, not {partition}", O::NAME);
        }
        let streams = (0..self.input.output_partitioning().partition_count())
            .map(|p| self.input.execute(p, context.clone()))
            .collect::<Result<Vec<_>>>()?;
        let op = self.op.clone();
        let batch = async move {
            let batches: Vec<RecordBatch> = futures::stream::iter(streams)
                .flatten_unordered(None)
                .try_collect()
                .await?;
            op.run(batches).await
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.op.schema(),
            futures::stream::once(batch),
        )))
    }
}

/// Writes its input to a table as one staged part of a statement; outputs one row saying what
/// it staged.
pub type StoreWriteExec = WholeInputExec<StageWrite>;

/// The writing of one part: see [`StoreWriteExec`].
#[derive(Debug)]
pub struct StageWrite {
    pub table: TableDef,
    pub statement: u64,
    store: Arc<dyn Store>,
    /// Rows staged so far, for the task's metrics.
    staged: std::sync::atomic::AtomicU64,
}

impl StageWrite {
    /// Rows this writer has staged.
    pub fn rows_staged(&self) -> u64 {
        self.staged.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl StoreWriteExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        table: TableDef,
        statement: u64,
        store: Arc<dyn Store>,
    ) -> Self {
        WholeInputExec::with_op(
            input,
            Arc::new(StageWrite {
                table,
                statement,
                store,
                staged: Default::default(),
            }),
        )
    }
}

impl WholeInput for StageWrite {
    const NAME: &'static str = "StoreWriteExec";

    fn schema(&self) -> SchemaRef {
        part_schema()
    }

    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: table={}", Self::NAME, self.table.table_name())
    }

    fn run(self: Arc<Self>, batches: Vec<RecordBatch>) -> BoxFuture<'static, Result<RecordBatch>> {
        Box::pin(async move {
            let batches = to_table_schema(&self.table, batches)?;
            tracing::debug!(
                table = %self.table.table_name(),
                batches = batches.len(),
                rows = batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
                "staging a part"
            );
            let part = self
                .store
                .stage_write(&self.table.table_name(), self.statement, batches)
                .await
                .map_err(to_datafusion)?;
            self.staged
                .fetch_add(part.rows, std::sync::atomic::Ordering::Relaxed);
            let json = serde_json::to_string(&part)
                .map_err(|e| exec_datafusion_err!("describing a staged part: {e}"))?;
            Ok(RecordBatch::try_new(
                part_schema(),
                vec![
                    Arc::new(UInt64Array::from(vec![part.rows])),
                    Arc::new(StringArray::from(vec![json])),
                ],
            )?)
        })
    }
}

/// Publishes the parts its input describes (the writers' outputs, gathered) and outputs the
/// row count, like DataFusion's `DataSinkExec`. Runs at the driver. When the last copy of it goes
/// away, whatever the statement staged and did not publish is discarded: all of it when the
/// statement failed or was cancelled, the parts of lost writer attempts when it committed.
pub type StoreCommitExec = WholeInputExec<Commit>;

/// One statement's commit: see [`StoreCommitExec`].
#[derive(Debug)]
pub struct Commit {
    table: TableName,
    statement: u64,
    store: Arc<dyn Store>,
    /// The insert's output schema (a single `count` column).
    schema: SchemaRef,
    committed: AtomicBool,
}

impl StoreCommitExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        table: TableName,
        statement: u64,
        store: Arc<dyn Store>,
        schema: SchemaRef,
    ) -> Self {
        WholeInputExec::with_op(
            input,
            Arc::new(Commit {
                table,
                statement,
                store,
                schema,
                committed: AtomicBool::new(false),
            }),
        )
    }
}

impl WholeInput for Commit {
    const NAME: &'static str = "StoreCommitExec";

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: table={}", Self::NAME, self.table)
    }

    fn run(self: Arc<Self>, batches: Vec<RecordBatch>) -> BoxFuture<'static, Result<RecordBatch>> {
        Box::pin(async move {
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
            let summary = self
                .store
                .commit_writes(&self.table, parts)
                .await
                .map_err(to_datafusion)?;
            self.committed.store(true, Ordering::SeqCst);
            Ok(RecordBatch::try_new(
                self.schema.clone(),
                vec![Arc::new(UInt64Array::from(vec![summary.rows]))],
            )?)
        })
    }
}

impl Drop for Commit {
    /// Discards what the statement staged and did not publish: every part when it failed or was
    /// cancelled, the leftovers of lost writer attempts when it committed.
    fn drop(&mut self) {
        match self.store.discard_writes(&self.table, self.statement) {
            Ok(0) => {}
            Ok(parts) => tracing::debug!(
                table = %self.table,
                parts,
                committed = self.committed.load(Ordering::SeqCst),
                "discarded staged files the statement did not publish"
            ),
            Err(e) => {
                tracing::warn!(table = %self.table, error = %e, "could not discard staged files the statement did not publish; they go when the store is next opened")
            }
        }
    }
}
