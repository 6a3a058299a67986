//! [`WasmExec`]: one operator of a Rust job's module over the batches of its input partition.
//!
//! Each partition runs a fresh instance of the module (a task's sandbox: its own memory, epoch
//! deadline and CPU time), pushes its input batches through the operator and ends it, so a keyed
//! operator emits its rows when its input ends. The instance is synchronous; like every
//! DataFusion operator it runs inside the stream's poll, on whichever CPU runtime executes the
//! plan (never the network runtime of a daemon).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties,
};
use futures::StreamExt;
use quarry_sdk::dag::{JobArgs, OpKind};
use quarry_wasm::{JobModule, ModuleHash, OpInstance};

/// A module's operator over its input.
pub struct WasmExec {
    input: Arc<dyn ExecutionPlan>,
    module: Arc<JobModule>,
    args: JobArgs,
    op: u32,
    /// The closures it runs, for messages and EXPLAIN.
    name: String,
    kind: OpKind,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for WasmExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmExec")
            .field("module", &self.module.hash().to_string())
            .field("op", &self.op)
            .field("name", &self.name)
            .finish()
    }
}

impl WasmExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        module: Arc<JobModule>,
        args: JobArgs,
        op: u32,
        name: String,
        kind: OpKind,
        schema: SchemaRef,
    ) -> Self {
        let partitions = input.output_partitioning().partition_count();
        let emission = match kind {
            OpKind::Map => EmissionType::Incremental,
            OpKind::Combine | OpKind::Merge { .. } => EmissionType::Final,
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            emission,
            Boundedness::Bounded,
        ));
        WasmExec {
            input,
            module,
            args,
            op,
            name,
            kind,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn module(&self) -> &Arc<JobModule> {
        &self.module
    }

    pub fn args(&self) -> &JobArgs {
        &self.args
    }

    pub fn op(&self) -> u32 {
        self.op
    }

    pub fn op_name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> OpKind {
        self.kind
    }
}

impl DisplayAs for WasmExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let kind = match self.kind {
            OpKind::Map => "map".to_string(),
            OpKind::Combine => "combine".to_string(),
            OpKind::Merge { keys } => format!("merge on {keys} key columns"),
        };
        write!(
            f,
            "WasmExec: module={}, op={} ({kind}): {}",
            &self.module.hash().to_string()[..12],
            self.op,
            self.name
        )
    }
}

impl ExecutionPlan for WasmExec {
    fn name(&self) -> &str {
        "WasmExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        match self.kind {
            OpKind::Merge { keys: 0 } => vec![Distribution::SinglePartition],
            OpKind::Merge { keys } => {
                let schema = self.input.schema();
                vec![Distribution::KeyPartitioned(
                    (0..keys as usize)
                        .map(|i| {
                            Arc::new(Column::new(schema.field(i).name(), i))
                                as Arc<dyn PhysicalExpr>
                        })
                        .collect(),
                )]
            }
            OpKind::Map | OpKind::Combine => vec![Distribution::UnspecifiedDistribution],
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("WasmExec has one input".into()))?;
        Ok(Arc::new(WasmExec::new(
            input,
            self.module.clone(),
            self.args.clone(),
            self.op,
            self.name.clone(),
            self.kind,
            self.schema.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition >= self.properties.partitioning.partition_count() {
            return internal_err!("WasmExec has no partition {partition}");
        }
        let input = self.input.execute(partition, context)?;
        let instance = self
            .module
            .start(self.op, &self.name, &self.args)
            .map_err(wasm_error)?;
        let state = RunState {
            input,
            instance,
            pending: VecDeque::new(),
            done: false,
            cpu_time: MetricBuilder::new(&self.metrics).subset_time(CPU_TIME, partition),
            cpu_recorded: Duration::ZERO,
            rows: MetricBuilder::new(&self.metrics).output_rows(partition),
        };
        let schema = self.schema.clone();
        let stream = futures::stream::unfold(state, move |mut state| {
            let schema = schema.clone();
            async move {
                let item = state.next(&schema).await?;
                Some((item, state))
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// The metric of the CPU time a WASM operator's calls into its module took.
pub const CPU_TIME: &str = "wasm_cpu_time";

/// The CPU time, in nanoseconds, every [`WasmExec`] of an executed plan took: its Rust
/// operators' CPU cost.
pub fn cpu_ns_of(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let own = match plan.downcast_ref::<WasmExec>() {
        Some(wasm) => wasm
            .metrics
            .clone_inner()
            .sum_by_name(CPU_TIME)
            .map_or(0, |v| v.as_usize() as u64),
        None => 0,
    };
    own + plan.children().into_iter().map(cpu_ns_of).sum::<u64>()
}

/// The modules a plan's [`WasmExec`]s run, each once.
pub fn modules_of(plan: &Arc<dyn ExecutionPlan>) -> Vec<ModuleHash> {
    let mut modules = Vec::new();
    let mut stack = vec![plan.clone()];
    while let Some(plan) = stack.pop() {
        if let Some(wasm) = plan.downcast_ref::<WasmExec>() {
            let hash = wasm.module.hash();
            if !modules.contains(&hash) {
                modules.push(hash);
            }
        }
        stack.extend(plan.children().into_iter().cloned());
    }
    modules
}

/// A module's failure as DataFusion carries it; the worker and driver classify it by type.
pub fn wasm_error(e: quarry_wasm::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

struct RunState {
    input: SendableRecordBatchStream,
    instance: OpInstance,
    pending: VecDeque<RecordBatch>,
    done: bool,
    cpu_time: Time,
    /// The instance's CPU time already added to `cpu_time`.
    cpu_recorded: Duration,
    rows: Count,
}

impl RunState {
    async fn next(&mut self, schema: &SchemaRef) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                self.rows.add(batch.num_rows());
                // The module's batches carry its own field names; the plan's are the same types.
                return Some(
                    RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
                        .map_err(Into::into),
                );
            }
            if self.done {
                return None;
            }
            let output = match self.input.next().await {
                Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                Some(Ok(batch)) => match plain_types(batch) {
                    Ok(batch) => self.instance.push(&batch),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    self.instance.finish()
                }
            };
            // After every call, so that a stream dropped early (a `take`) still reports the
            // CPU its calls took.
            let used = self.instance.cpu_time();
            self.cpu_time
                .add_duration(used.saturating_sub(self.cpu_recorded));
            self.cpu_recorded = used;
            match output {
                Ok(batches) => self.pending.extend(batches),
                Err(e) => {
                    self.done = true;
                    return Some(Err(wasm_error(e)));
                }
            }
        }
    }
}

/// The batch with view types as the plain types the SDK reads (DataFusion scans and string
/// functions produce `Utf8View`; a job's `String` is `Utf8`).
fn plain_types(batch: RecordBatch) -> Result<RecordBatch> {
    let plain = |t: &DataType| match t {
        DataType::Utf8View | DataType::LargeUtf8 => Some(DataType::Utf8),
        DataType::BinaryView | DataType::LargeBinary => Some(DataType::Binary),
        _ => None,
    };
    if !batch
        .schema_ref()
        .fields()
        .iter()
        .any(|f| plain(f.data_type()).is_some())
    {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        match plain(field.data_type()) {
            Some(to) => {
                columns.push(arrow::compute::cast(column, &to)?);
                fields.push(field.as_ref().clone().with_data_type(to));
            }
            None => {
                columns.push(column.clone());
                fields.push(field.as_ref().clone());
            }
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
    )?)
}
