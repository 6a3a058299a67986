//! The physical operator that reads a store scan.
//!
//! A planned scan is a list of splits over shard ranges; `StoreScanExec` deals them into
//! DataFusion partitions (largest first, each to the partition with the fewest rows so far) and
//! reads each partition's splits in ring order: one after the other where they do not overlap,
//! together (a batch from whichever has read least far) where they do, as a large run and the
//! fresh runs over it do.
//!
//! It keeps the [`ScanRequest`] it was planned from, so that a distributed plan can ship the scan
//! to workers, which plan it again over the shards of their task.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
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
use futures::stream::BoxStream;
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

/// Deals splits into `n` partitions of similar row counts (largest first, each to the partition
/// with the fewest rows so far), each partition's splits in ring order for [`interleave`]. There
/// are `n` partitions even when there are fewer splits (some stay empty): the plan's shape then
/// does not depend on how the data happens to be laid out, which matters when the plan is cut
/// for a cluster, where each task re-plans its own scan (a one-partition scan would make
/// DataFusion aggregate in a single step, and the whole table would travel to one place).
///
/// Dealing each partition one stretch of the ring instead (cut where the rows so far pass each
/// `n`-th) kept more of a key's runs in one partition, but a cut falls between row groups of
/// half a million rows, and one-run tables read 5-10% slower for the imbalance; through 12
/// overlapping runs it gained (b) no more than this dealing does with [`interleave`].
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
        p.sort_by_key(|s| (*s.shards.start(), *s.shards.end()));
    }
    partitions.into_iter().map(|(_, p)| p).collect()
}

/// The most splits [`interleave`] keeps open at once (each holds a file open, and a page of each
/// column it reads): a table hundreds of runs deep is read a few runs at a time.
const MAX_OPEN: usize = 16;

/// One split of a partition being read by [`interleave`].
struct Cursor {
    split: ScanSplit,
    /// Open once first chosen.
    batches: Option<BoxStream<'static, Result<RecordBatch>>>,
    /// Rows it read so far (before the store's filters).
    reads: Arc<ReadCounters>,
}

impl Cursor {
    /// About which shard the split has read up to: rows are spread evenly over a split's shards
    /// and come in ring order.
    fn position(&self) -> f64 {
        let (start, end) = (*self.split.shards.start(), *self.split.shards.end());
        let read = self.reads.local_rows() + self.reads.remote_rows();
        let done = read as f64 / self.split.estimated_rows.max(1) as f64;
        f64::from(start) + f64::from(end + 1 - start) * done.min(1.0)
    }
}

/// Reads a partition's splits together, in ring order: a batch comes from whichever split has
/// read least far around the ring, so rows of one key from different runs (a large run and the
/// fresh runs over it) arrive close together, and an aggregation keyed by the partition key
/// finds its groups in cache. Splits that do not overlap are read one after the other; only
/// overlapping ones are open at once, at most [`MAX_OPEN`]. Read rows are counted into `reads`.
fn interleave(
    splits: Vec<ScanSplit>,
    reads: Arc<ReadCounters>,
) -> BoxStream<'static, Result<RecordBatch>> {
    let cursors: Vec<Cursor> = splits
        .into_iter()
        .map(|split| Cursor {
            split,
            batches: None,
            reads: Arc::default(),
        })
        .collect();
    stream::unfold(cursors, move |mut cursors| {
        let reads = reads.clone();
        async move {
            loop {
                // Ties go to the split already open, then to the earlier one; past
                // `MAX_OPEN` splits open, to one of those.
                let open = cursors.iter().filter(|c| c.batches.is_some()).count();
                let next = cursors
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| open < MAX_OPEN || c.batches.is_some())
                    .min_by(|(_, a), (_, b)| {
                        a.position()
                            .total_cmp(&b.position())
                            .then(b.batches.is_some().cmp(&a.batches.is_some()))
                    })
                    .map(|(i, _)| i)?;
                let cursor = &mut cursors[next];
                if cursor.batches.is_none() {
                    cursor.batches = Some(
                        match cursor.split.source.open_counted(cursor.reads.clone()) {
                            Ok(batches) => batches.map_err(to_datafusion).boxed(),
                            Err(e) => stream::once(async move { Err(to_datafusion(e)) }).boxed(),
                        },
                    );
                }
                let before = (cursor.reads.local_rows(), cursor.reads.remote_rows());
                let batch = cursor.batches.as_mut()?.next().await;
                reads.add(true, cursor.reads.local_rows() - before.0);
                reads.add(false, cursor.reads.remote_rows() - before.1);
                match batch {
                    Some(batch) => return Some((batch, cursors)),
                    None => {
                        cursors.remove(next);
                    }
                }
            }
        }
    })
    .boxed()
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
        let batches = interleave(splits, reads).inspect_ok(move |b| rows.add(b.num_rows()));
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

#[cfg(test)]
mod tests {
    use std::ops::RangeInclusive;

    use super::*;
    use arrow::array::{Array, AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    /// A split of in-memory batches of one `id` column, counted as they are read.
    #[derive(Debug)]
    struct Rows(Vec<RecordBatch>);

    impl quarry_store::SplitSource for Rows {
        fn open_counted(
            &self,
            reads: Arc<ReadCounters>,
        ) -> quarry_store::Result<quarry_store::BatchStream> {
            let batches = self.0.clone();
            Ok(stream::iter(batches.into_iter().map(move |b| {
                reads.add(true, b.num_rows() as u64);
                Ok(b)
            }))
            .boxed())
        }

        fn describe(&self) -> String {
            "rows".into()
        }
    }

    /// A split over `shards` of `batches` batches of `rows` ids each, numbered from `first`.
    fn split(shards: RangeInclusive<u32>, first: i64, batches: usize, rows: usize) -> ScanSplit {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let estimated_rows = (batches * rows) as u64;
        let batches = (0..batches)
            .map(|b| {
                let start = first + (b * rows) as i64;
                let ids = Int64Array::from_iter_values(start..start + rows as i64);
                RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).unwrap()
            })
            .collect();
        ScanSplit {
            shards,
            estimated_rows,
            source: Arc::new(Rows(batches)),
        }
    }

    async fn read_all(splits: Vec<ScanSplit>, reads: Arc<ReadCounters>) -> Vec<RecordBatch> {
        interleave(splits, reads).try_collect().await.unwrap()
    }

    /// The first id of each batch, which names the split and the batch.
    fn first_ids(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .map(|b| b.column(0).as_primitive::<Int64Type>().value(0))
            .collect()
    }

    #[test]
    fn partitions_balance_rows_and_keep_ring_order() {
        // A large run's eight row groups, and a fresh run's two over half the ring each.
        let mut splits: Vec<ScanSplit> = (0..8)
            .map(|g| split(g * 10..=g * 10 + 9, 0, 10, 10))
            .collect();
        splits.push(split(40..=79, 0, 3, 100));
        splits.push(split(0..=39, 0, 2, 100));
        let partitions = deal(splits, 2);
        let rows = |p: &Vec<ScanSplit>| p.iter().map(|s| s.estimated_rows).sum::<u64>();
        assert_eq!(
            partitions.iter().map(rows).collect::<Vec<_>>(),
            [700, 600],
            "the fresh runs' splits first, then the large run's to the lighter partition"
        );
        for p in &partitions {
            let starts: Vec<u32> = p.iter().map(|s| *s.shards.start()).collect();
            assert!(starts.is_sorted(), "{starts:?}");
        }
        // As many partitions as asked for, even with fewer splits.
        let few = deal(vec![split(0..=9, 0, 1, 1)], 3);
        assert_eq!(few.iter().map(Vec::len).collect::<Vec<_>>(), [1, 0, 0]);
    }

    #[tokio::test]
    async fn overlapping_splits_are_read_together_in_ring_order() {
        // A split of ten batches over shards 0-9 and one of two batches over the same shards:
        // the second's batches come as the first passes the shards they start at.
        let reads = Arc::new(ReadCounters::default());
        let splits = vec![split(0..=9, 0, 10, 10), split(0..=9, 1000, 2, 50)];
        let batches = read_all(splits, reads.clone()).await;
        assert_eq!(
            first_ids(&batches),
            [0, 1000, 10, 20, 30, 40, 50, 1050, 60, 70, 80, 90],
            "batches by the first id they hold"
        );
        let rows: usize = batches.iter().map(|b| b.column(0).len()).sum();
        assert_eq!(rows, 200);
        assert_eq!(reads.local_rows(), 200);

        // Splits that do not overlap are read one after the other.
        let splits = vec![split(0..=4, 0, 3, 10), split(5..=9, 100, 3, 10)];
        let batches = read_all(splits, Arc::default()).await;
        assert_eq!(first_ids(&batches), [0, 10, 20, 100, 110, 120]);

        // More overlapping splits than are kept open at once: every row still comes, once.
        let splits = (0..MAX_OPEN as i64 + 5)
            .map(|s| split(0..=9, s * 1000, 4, 10))
            .collect();
        let batches = read_all(splits, Arc::default()).await;
        let mut ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        ids.sort_unstable();
        let expected: Vec<i64> = (0..MAX_OPEN as i64 + 5)
            .flat_map(|s| s * 1000..s * 1000 + 40)
            .collect();
        assert_eq!(ids, expected);
    }
}
