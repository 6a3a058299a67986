//! The physical operator that reads a store scan.
//!
//! A planned scan is a list of splits over shard ranges; `StoreScanExec` deals them into
//! DataFusion partitions (largest first, each to the partition with the fewest rows so far) and
//! streams each partition's splits one after another.
//!
//! It keeps the [`ScanRequest`] it was planned from, so that a distributed plan can ship the scan
//! to workers, which plan it again over the shards of their task.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, Statistics};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, Metric, MetricBuilder, MetricValue, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt, stream};
use quarry_core::schema::TableName;
use quarry_store::{ReadCounters, ScanPlan, ScanRequest, ScanSplit};

use crate::error::to_datafusion;

/// Reads a store scan, split by split.
#[derive(Debug)]
pub struct StoreScanExec {
    table: TableName,
    request: ScanRequest,
    target_partitions: usize,
    schema: SchemaRef,
    partitions: Vec<Vec<ScanSplit>>,
    shards_selected: u32,
    shards_total: u32,
    pushed_filters: usize,
    limit: Option<usize>,
    /// Reads every shard wherever it runs, not its task's (see [`Self::replicated`]).
    replicated: bool,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// Where the rows read came from (reported as the metrics [`ROWS_LOCAL`] and
    /// [`ROWS_REMOTE`]).
    reads: Arc<ReadCounters>,
}

/// Rows a scan read from the store node beside its process.
pub const ROWS_LOCAL: &str = "rows_local";
/// Rows a scan read from other store nodes.
pub const ROWS_REMOTE: &str = "rows_remote";

impl StoreScanExec {
    /// A scan of `plan`, which the store planned for `request`. `pushed_filters` counts the
    /// filters the store received (for `EXPLAIN`); the limit is `request`'s.
    pub fn new(
        request: ScanRequest,
        plan: ScanPlan,
        target_partitions: usize,
        pushed_filters: usize,
    ) -> Self {
        let table = request.table.clone();
        let limit = request.limit;
        let partitions = deal(plan.splits, target_partitions.max(1));
        let properties = PlanProperties::new(
            EquivalenceProperties::new(plan.schema.clone()),
            Partitioning::UnknownPartitioning(partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        StoreScanExec {
            table,
            request,
            target_partitions,
            schema: plan.schema,
            partitions,
            shards_selected: plan.shards_selected,
            shards_total: plan.shards_total,
            pushed_filters,
            limit,
            replicated: false,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
            reads: Arc::default(),
        }
    }

    /// This scan marked to read the whole table in every task of a distributed plan, as a small
    /// table beside a join is read, instead of the shards the task was given: each task reads it
    /// from the store rather than from a stage that gathers it first.
    pub fn replicated(&self) -> Self {
        StoreScanExec {
            table: self.table.clone(),
            request: self.request.clone(),
            target_partitions: self.target_partitions,
            schema: self.schema.clone(),
            partitions: self.partitions.clone(),
            shards_selected: self.shards_selected,
            shards_total: self.shards_total,
            pushed_filters: self.pushed_filters,
            limit: self.limit,
            replicated: true,
            properties: self.properties.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
            reads: Arc::default(),
        }
    }

    /// Whether every task reads the whole table ([`Self::replicated`]).
    pub fn is_replicated(&self) -> bool {
        self.replicated
    }

    /// What the scan was planned from.
    pub fn request(&self) -> &ScanRequest {
        &self.request
    }

    /// The partitions the scan was asked to spread its splits over.
    pub fn target_partitions(&self) -> usize {
        self.target_partitions
    }

    /// Filters pushed into the store.
    pub fn pushed_filters(&self) -> usize {
        self.pushed_filters
    }

    /// Shards the scan reads after pruning.
    pub fn shards_selected(&self) -> u32 {
        self.shards_selected
    }

    /// Rows the store read for this scan, wherever they came from: its input, which is more
    /// than its output where the store applied the pushed-down filters itself.
    pub fn rows_read(&self) -> u64 {
        self.reads.local_rows() + self.reads.remote_rows()
    }

    pub fn split_count(&self) -> usize {
        self.partitions.iter().map(Vec::len).sum()
    }
}

/// Deals splits into `n` partitions of similar row counts. There are `n` partitions even when
/// there are fewer splits (some stay empty): the plan's shape then does not depend on how the
/// data happens to be laid out, which matters when the plan is cut for a cluster, where each
/// task re-plans its own scan (a one-partition scan would make DataFusion aggregate in a single
/// step, and the whole table would travel to one place).
fn deal(mut splits: Vec<ScanSplit>, n: usize) -> Vec<Vec<ScanSplit>> {
    let n = n.max(1);
    splits.sort_by_key(|s| std::cmp::Reverse(s.estimated_rows));
    let mut partitions: Vec<(u64, Vec<ScanSplit>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for split in splits {
        if let Some(lightest) = partitions.iter_mut().min_by_key(|(rows, _)| *rows) {
            lightest.0 += split.estimated_rows;
            lightest.1.push(split);
        }
    }
    for (_, p) in partitions.iter_mut() {
        // Read in ring order within a partition.
        p.sort_by_key(|s| *s.shards.start());
    }
    partitions.into_iter().map(|(_, p)| p).collect()
}

impl DisplayAs for StoreScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "StoreScanExec: table={}, shards={}/{}, splits={}, partitions={}",
            self.table,
            self.shards_selected,
            self.shards_total,
            self.split_count(),
            self.partitions.len()
        )?;
        if self.pushed_filters > 0 {
            write!(f, ", pushed_filters={}", self.pushed_filters)?;
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        if self.replicated {
            write!(f, ", replicated")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for StoreScanExec {
    fn name(&self) -> &str {
        "StoreScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        let mut metrics = self.metrics.clone_inner();
        for (name, rows) in [
            (ROWS_LOCAL, self.reads.local_rows()),
            (ROWS_REMOTE, self.reads.remote_rows()),
        ] {
            let count = Count::new();
            count.add(usize::try_from(rows).unwrap_or(usize::MAX));
            metrics.push(Arc::new(Metric::new(
                MetricValue::Count {
                    name: name.into(),
                    count,
                },
                None,
            )));
        }
        Some(metrics)
    }

    /// The store's estimate of the rows the splits read (before filtering), so that DataFusion
    /// picks join build sides and broadcasts small tables as it does over files with statistics.
    /// Never exact: overlapping runs may hold one key twice until merged.
    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        let rows: u64 = match partition {
            Some(p) => self
                .partitions
                .get(p)
                .into_iter()
                .flatten()
                .map(|s| s.estimated_rows)
                .sum(),
            None => self
                .partitions
                .iter()
                .flatten()
                .map(|s| s.estimated_rows)
                .sum(),
        };
        let mut statistics = Statistics::new_unknown(&self.schema);
        statistics.num_rows = Precision::Inexact(usize::try_from(rows).unwrap_or(usize::MAX));
        Ok(Arc::new(statistics))
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let splits = self.partitions.get(partition).cloned().unwrap_or_default();
        let rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let reads = self.reads.clone();
        let batches = stream::iter(splits)
            .map(
                move |split| match split.source.open_counted(reads.clone()) {
                    Ok(batches) => batches.map_err(to_datafusion).boxed(),
                    Err(e) => stream::once(async move { Err(to_datafusion(e)) }).boxed(),
                },
            )
            .flatten()
            .inspect_ok(move |b| rows.add(b.num_rows()));
        // The limit is a hint (a limit operator above still applies it exactly): stop reading
        // splits once enough rows arrived.
        let limited: SendableRecordBatchStream = match self.limit {
            Some(limit) => {
                let mut remaining = limit;
                Box::pin(RecordBatchStreamAdapter::new(
                    self.schema.clone(),
                    batches.try_take_while(move |b| {
                        let go = remaining > 0;
                        remaining = remaining.saturating_sub(b.num_rows());
                        futures::future::ready(Ok(go))
                    }),
                ))
            }
            None => Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches)),
        };
        Ok(limited)
    }
}
