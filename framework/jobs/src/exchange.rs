//! Exchanges: how one stage's output reaches the stages that read it.
//!
//! ```text
//!   producer task ──executes its plan──▶ output partitions, kept by its worker
//!                                              │ Arrow Flight DoGet (ExchangeClient)
//!   consumer task ◀── ExchangeReaderExec ◀─────┘  hash: partition p of every producer task
//!                                                 gather: every partition of every task
//! ```
//!
//! A stage whose root is a hash `RepartitionExec` produces `n` partitions per task, and consumer
//! task `p` reads partition `p` of every producer task. Any other stage is gathered: each output
//! partition of each task is one stream, read whole by the driver (for the final result) or by
//! every task of a join (a broadcast).

use std::fmt::{self, Debug};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use crate::ids::{StageId, TaskId};

/// How a stage hands its output to the stage that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Rows are hash-partitioned into `partitions`; consumer task `p` reads partition `p` of
    /// every producer task.
    Hash { partitions: usize },
    /// Every output partition of every producer task is one stream, read whole by each consumer.
    Gather,
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeKind::Hash { partitions } => write!(f, "hash({partitions})"),
            ExchangeKind::Gather => f.write_str("gather"),
        }
    }
}

/// Where a finished task keeps its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutput {
    pub task: TaskId,
    /// The Arrow Flight endpoint of the worker that holds it (`http://host:port`).
    pub endpoint: String,
    /// Output partitions the task produced.
    pub partitions: u32,
}

/// One output partition of one finished task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLocation {
    pub task: TaskId,
    pub endpoint: String,
    pub partition: u32,
}

/// Fetches exchange partitions from the workers that keep them (Arrow Flight in the worker crate).
pub trait ExchangeClient: Send + Sync + Debug {
    /// Streams one partition. Connecting happens lazily, when the stream is first polled; a
    /// failure to reach the worker is an error of the stream, marked as external (retryable).
    fn fetch(
        &self,
        location: &PartitionLocation,
        schema: SchemaRef,
    ) -> Result<SendableRecordBatchStream>;
}

/// The partitions a bound reader streams, each a list of locations read one after another.
#[derive(Debug, Clone)]
struct Binding {
    partitions: Vec<Vec<PartitionLocation>>,
    client: Arc<dyn ExchangeClient>,
}

/// Reads the output of an input stage. The planner leaves it unbound (it only knows the stage
/// and the schema); before it runs it is bound to the locations of the input stage's finished
/// tasks, for the hash partitions the running task owns.
#[derive(Debug)]
pub struct ExchangeReaderExec {
    stage: StageId,
    kind: ExchangeKind,
    schema: SchemaRef,
    binding: Option<Binding>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// The metric an exchange reader counts the bytes it read under.
pub const BYTES_READ: &str = "bytes_read";

fn properties(schema: &SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema.clone()),
        Partitioning::UnknownPartitioning(partitions.max(1)),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

impl ExchangeReaderExec {
    /// An unbound reader of `stage`'s output.
    pub fn new(stage: StageId, kind: ExchangeKind, schema: SchemaRef) -> Self {
        let partitions = match kind {
            ExchangeKind::Hash { partitions } => partitions,
            ExchangeKind::Gather => 1,
        };
        ExchangeReaderExec {
            stage,
            kind,
            properties: properties(&schema, partitions),
            schema,
            binding: None,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// This reader bound to `outputs` (every finished task of the input stage). A hash reader
    /// reads `hash_partitions` (one output partition each); a gather reader reads every output
    /// partition of every task.
    pub fn bind(
        &self,
        outputs: &[TaskOutput],
        hash_partitions: &[u32],
        client: Arc<dyn ExchangeClient>,
    ) -> Self {
        let location = |o: &TaskOutput, partition: u32| PartitionLocation {
            task: o.task,
            endpoint: o.endpoint.clone(),
            partition,
        };
        let partitions: Vec<Vec<PartitionLocation>> = match self.kind {
            ExchangeKind::Hash { .. } => hash_partitions
                .iter()
                .map(|&p| outputs.iter().map(|o| location(o, p)).collect())
                .collect(),
            ExchangeKind::Gather => outputs
                .iter()
                .flat_map(|o| (0..o.partitions).map(move |p| vec![location(o, p)]))
                .collect(),
        };
        ExchangeReaderExec {
            stage: self.stage,
            kind: self.kind,
            schema: self.schema.clone(),
            properties: properties(&self.schema, partitions.len()),
            binding: Some(Binding { partitions, client }),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn stage(&self) -> StageId {
        self.stage
    }

    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn is_bound(&self) -> bool {
        self.binding.is_some()
    }
}

impl DisplayAs for ExchangeReaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ExchangeReaderExec: stage={}, {}", self.stage, self.kind)?;
        if let Some(b) = &self.binding {
            let locations: usize = b.partitions.iter().map(Vec::len).sum();
            write!(f, ", locations={locations}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ExchangeReaderExec {
    fn name(&self) -> &str {
        "ExchangeReaderExec"
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
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(binding) = &self.binding else {
            return internal_err!(
                "the exchange reader of stage {} ran before it was bound to its input's outputs",
                self.stage
            );
        };
        let locations = binding
            .partitions
            .get(partition)
            .cloned()
            .unwrap_or_default();
        let streams = locations
            .iter()
            .map(|l| binding.client.fetch(l, self.schema.clone()))
            .collect::<Result<Vec<_>>>()?;
        // Read the producers of one partition concurrently; order within a partition carries no
        // meaning for a hash exchange, and a gather partition has one location.
        let rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let bytes = MetricBuilder::new(&self.metrics).counter(BYTES_READ, partition);
        let merged = futures::stream::iter(streams)
            .flatten_unordered(8)
            .inspect_ok(move |b| {
                rows.add(b.num_rows());
                bytes.add(b.get_array_memory_size());
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            merged,
        )))
    }
}

/// Reading an exchange partition failed: its worker is gone, or no longer has the output. The
/// driver recomputes what that worker held and retries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not read the output of task {task} from the worker at {endpoint}: {message}")]
pub struct ExchangeFetchError {
    pub task: TaskId,
    pub endpoint: String,
    pub message: String,
}
