//! A Rust job's DAG lowered into the physical plans SQL uses: one plan per sink.
//!
//! ```text
//!   Source          ──▶ the table's scan (columns by name, `where_sql` pushed down), as SQL's
//!   Wasm(op)        ──▶ WasmExec over its input
//!   Shuffle(keys)   ──▶ RepartitionExec, hash on the first `keys` columns
//!   Join / Union / Distinct / count / take ──▶ DataFusion's own operators (through DataFrames)
//!   write_to(table) ──▶ the table's insert sink (upserts), as `INSERT ... SELECT`
//! ```
//!
//! The plans then go wherever SQL's go: run in this process, or cut into stages by the
//! distributed planner and scheduled beside the data. Types are checked here, before anything
//! runs: a source's fields against the table's columns, a written record against its target.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{JoinType, Result as DfResult};
use datafusion::datasource::TableType;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::physical_expr::{Partitioning, PhysicalExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::expressions::{CastExpr, Column};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;
use quarry_core::schema::{TableDef, TableName};
use quarry_sdk::dag::{JobArgs, JobDag, Node, Sink};
use quarry_sdk::data::same_type;
use quarry_sql::QuarrySession;
use quarry_wasm::JobModule;

use crate::error::{Error, Result};
use crate::wasm_exec::WasmExec;

/// One result of a job, ready to run.
#[derive(Debug, Clone)]
pub struct SinkPlan {
    pub sink: Sink,
    pub plan: Arc<dyn ExecutionPlan>,
}

impl SinkPlan {
    /// `write synth.rollup`, `collect`, `count`, `take 10`.
    pub fn describe(&self) -> String {
        describe_sink(&self.sink)
    }
}

pub fn describe_sink(sink: &Sink) -> String {
    match sink {
        Sink::Write { table } => format!("write {table}"),
        Sink::Collect => "collect".to_string(),
        Sink::Count => "count".to_string(),
        Sink::Take { n } => format!("take {n}"),
    }
}

/// What one sink of a job gave: its rows (`collect`, `take`), its count, or the number of rows
/// written (`write_to`: one row, column `count`).
#[derive(Debug, Clone)]
pub struct SinkOutput {
    pub sink: Sink,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// CPU time of the job's operators for it, in nanoseconds, where this process ran them.
    pub wasm_cpu_ns: u64,
}

impl SinkOutput {
    /// The single number of a `count` or `write_to` result.
    pub fn number(&self) -> Option<u64> {
        let batch = self.batches.iter().find(|b| b.num_rows() > 0)?;
        let column = batch.column(0).as_any();
        if let Some(a) = column.downcast_ref::<arrow::array::Int64Array>() {
            return a.values().first().map(|n| *n as u64);
        }
        column
            .downcast_ref::<arrow::array::UInt64Array>()
            .and_then(|a| a.values().first().copied())
    }
}

/// Asks `module` for its DAG with `args`, off the async runtime (it runs the job's code).
pub async fn plan_dag(module: &Arc<JobModule>, args: &JobArgs) -> Result<JobDag> {
    let (module, args) = (module.clone(), args.clone());
    tokio::task::spawn_blocking(move || module.plan(&args))
        .await
        .map_err(|e| job_error(format!("planning the job stopped: {e}")))?
        .map_err(Error::from)
}

/// Plans and runs a job: every sink in order, each as one plan through `session` (in this
/// process, or on the cluster when the session has an executor). `label` names its jobs.
pub async fn run(
    session: &QuarrySession,
    module: &Arc<JobModule>,
    args: &JobArgs,
    label: &str,
) -> Result<Vec<SinkOutput>> {
    let dag = plan_dag(module, args).await?;
    let sinks = lower(session, module, &dag, args).await?;
    let mut outputs = Vec::with_capacity(sinks.len());
    for sink in sinks {
        let schema = sink.plan.schema();
        let stream = session.execute_plan(label, sink.plan.clone()).await?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        outputs.push(SinkOutput {
            sink: sink.sink,
            schema,
            batches,
            wasm_cpu_ns: crate::wasm_exec::cpu_ns_of(&sink.plan),
        });
    }
    Ok(outputs)
}

/// Lowers `dag` (planned by `module` with `args`) into one plan per sink, checking every source
/// and written table against the store's catalog.
pub async fn lower(
    session: &QuarrySession,
    module: &Arc<JobModule>,
    dag: &JobDag,
    args: &JobArgs,
) -> Result<Vec<SinkPlan>> {
    let state = session.context().state();
    let partitions = state.config().target_partitions().max(1);
    let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::with_capacity(dag.nodes.len());
    let mut sinks = Vec::new();
    let input = |plans: &[Arc<dyn ExecutionPlan>], i: u32| -> Result<Arc<dyn ExecutionPlan>> {
        plans.get(i as usize).cloned().ok_or_else(|| {
            job_error(format!(
                "the module's DAG refers to node {i} before defining it"
            ))
        })
    };
    for node in &dag.nodes {
        let plan: Arc<dyn ExecutionPlan> = match node {
            Node::Source {
                table,
                predicate,
                schema,
            } => source(session, table, predicate.as_deref(), schema).await?,
            Node::Wasm { input: i, op } => {
                let info = dag.ops.get(*op as usize).ok_or_else(|| {
                    job_error(format!(
                        "the module's DAG uses operator {op}, which it lacks"
                    ))
                })?;
                let schema = quarry_sdk::ipc::schema_from_bytes(&info.output_schema)
                    .map_err(|e| job_error(format!("operator {op}'s schema: {e}")))?;
                Arc::new(WasmExec::new(
                    input(&plans, *i)?,
                    module.clone(),
                    args.clone(),
                    *op,
                    info.name.clone(),
                    info.kind,
                    schema,
                ))
            }
            Node::Shuffle { input: i, keys } => {
                let input = input(&plans, *i)?;
                if *keys == 0 {
                    Arc::new(CoalescePartitionsExec::new(input))
                } else {
                    let exprs = key_columns(&input.schema(), *keys as usize)?;
                    Arc::new(RepartitionExec::try_new(
                        input,
                        Partitioning::Hash(exprs, partitions),
                    )?)
                }
            }
            Node::Union { inputs } => {
                let mut frames = inputs.iter().map(|i| frame(session, &input(&plans, *i)?));
                let mut union = frames
                    .next()
                    .ok_or_else(|| job_error("a union of no datasets".into()))??;
                for other in frames {
                    union = union.union(other?)?;
                }
                union.create_physical_plan().await?
            }
            Node::Distinct { input: i } => {
                frame(session, &input(&plans, *i)?)?
                    .distinct()?
                    .create_physical_plan()
                    .await?
            }
            Node::Join {
                left,
                right,
                keys,
                left_outer,
                right_marker,
            } => {
                join(
                    session,
                    &input(&plans, *left)?,
                    &input(&plans, *right)?,
                    *keys as usize,
                    *left_outer,
                    *right_marker,
                )
                .await?
            }
            Node::Sink { input: i, sink } => {
                let input = input(&plans, *i)?;
                let mut plan = sink_plan(session, input.clone(), sink).await?;
                // What SQL's planning does last: the distributions operators require (a
                // write reads one partition, a merge its key's), and the usual rewrites.
                for rule in state.physical_optimizers() {
                    plan = rule.optimize(plan, state.config_options())?;
                }
                sinks.push(SinkPlan {
                    sink: sink.clone(),
                    plan,
                });
                input
            }
        };
        plans.push(plan);
    }
    Ok(sinks)
}

fn job_error(message: String) -> Error {
    Error::Job { message }
}

fn key_columns(schema: &SchemaRef, keys: usize) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
    if schema.fields().len() < keys {
        return Err(job_error(format!(
            "a shuffle on {keys} key columns of rows with {} columns",
            schema.fields().len()
        )));
    }
    Ok((0..keys)
        .map(|i| Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>)
        .collect())
}

fn table_def(session: &QuarrySession, table: &str) -> Result<TableDef> {
    let name = TableName::parse(table).map_err(|e| job_error(format!("{table}: {e}")))?;
    session
        .store()
        .table(&name)
        .map_err(|e| job_error(e.to_string()))
}

/// The Rust type that reads or writes an Arrow type, for messages.
fn rust_type(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Boolean => "bool",
        DataType::Int8 => "i8",
        DataType::Int16 => "i16",
        DataType::Int32 => "i32",
        DataType::Int64 => "i64",
        DataType::Float32 => "f32",
        DataType::Float64 => "f64",
        DataType::Utf8 => "String",
        DataType::Binary => "Blob",
        DataType::Timestamp(_, _) => "Timestamp",
        DataType::Date32 => "Date",
        DataType::List(_) => "Vec<_>",
        DataType::Map(..) => "BTreeMap<_, _>",
        _ => "no SDK type yet",
    }
}

fn describe_type(data_type: &DataType) -> String {
    format!("{data_type} ({})", rust_type(data_type))
}

/// Checks a source's fields against the table's columns.
fn check_source(def: &TableDef, fields: &Schema) -> Result<()> {
    let table = def.arrow_schema();
    for field in fields.fields() {
        let Some((_, column)) = table.column_with_name(field.name()) else {
            return Err(job_error(format!(
                "source {}: the field '{}' has no column; the table's columns are {}",
                def.table_name(),
                field.name(),
                def.column_names().join(", ")
            )));
        };
        if !same_type(column.data_type(), field.data_type()) {
            return Err(job_error(format!(
                "source {}: the field '{}' is {}, but the column is {}",
                def.table_name(),
                field.name(),
                describe_type(field.data_type()),
                describe_type(column.data_type()),
            )));
        }
    }
    Ok(())
}

async fn source(
    session: &QuarrySession,
    table: &str,
    predicate: Option<&str>,
    schema: &[u8],
) -> Result<Arc<dyn ExecutionPlan>> {
    let fields = quarry_sdk::ipc::schema_from_bytes(schema)
        .map_err(|e| job_error(format!("the schema of source {table}: {e}")))?;
    let def = table_def(session, table)?;
    check_source(&def, &fields)?;
    let name = def.table_name();
    let mut frame = session
        .context()
        .table(datafusion::common::TableReference::partial(
            name.keyspace.as_str(),
            name.table.as_str(),
        ))
        .await?;
    let columns: Vec<Expr> = fields
        .fields()
        .iter()
        .map(|f| Expr::Column(datafusion::common::Column::new_unqualified(f.name())))
        .collect();
    // The predicate may name columns the job does not read: filter, then project.
    if let Some(predicate) = predicate {
        let expr = frame.parse_sql_expr(predicate).map_err(|e| {
            job_error(format!(
                "the predicate of source {table} ({predicate}) is not valid SQL here: {e}"
            ))
        })?;
        frame = frame.filter(expr)?;
    }
    frame = frame.select(columns)?;
    Ok(frame.create_physical_plan().await?)
}

/// A physical plan as a DataFrame whose columns are named `{prefix}{i}`.
fn frame_named(
    session: &QuarrySession,
    plan: &Arc<dyn ExecutionPlan>,
    prefix: &str,
) -> Result<DataFrame> {
    let table = PlanTable::new(plan.clone(), prefix);
    Ok(session.context().read_table(Arc::new(table))?)
}

fn frame(session: &QuarrySession, plan: &Arc<dyn ExecutionPlan>) -> Result<DataFrame> {
    frame_named(session, plan, "c")
}

async fn join(
    session: &QuarrySession,
    left: &Arc<dyn ExecutionPlan>,
    right: &Arc<dyn ExecutionPlan>,
    keys: usize,
    left_outer: bool,
    right_marker: bool,
) -> Result<Arc<dyn ExecutionPlan>> {
    if keys == 0 {
        return Err(job_error(
            "a join needs a key with at least one column (a key of () joins every row with \
             every row; use a constant key instead)"
                .into(),
        ));
    }
    let left_width = left.schema().fields().len();
    let right_width = right.schema().fields().len();
    let l = frame_named(session, left, "l")?;
    let mut r = frame_named(session, right, "r")?;
    if right_marker {
        let mut columns: Vec<Expr> = (0..keys).map(|i| col(format!("r{i}"))).collect();
        columns.push(lit(true).alias("r_marker"));
        columns.extend((keys..right_width).map(|i| col(format!("r{i}"))));
        r = r.select(columns)?;
    }
    let left_keys: Vec<String> = (0..keys).map(|i| format!("l{i}")).collect();
    let right_keys: Vec<String> = (0..keys).map(|i| format!("r{i}")).collect();
    let left_keys: Vec<&str> = left_keys.iter().map(String::as_str).collect();
    let right_keys: Vec<&str> = right_keys.iter().map(String::as_str).collect();
    let kind = if left_outer {
        JoinType::Left
    } else {
        JoinType::Inner
    };
    let joined = l.join(r, kind, &left_keys, &right_keys, None)?;
    let mut output: Vec<Expr> = (0..left_width).map(|i| col(format!("l{i}"))).collect();
    if right_marker {
        output.push(col("r_marker"));
    }
    output.extend((keys..right_width).map(|i| col(format!("r{i}"))));
    Ok(joined.select(output)?.create_physical_plan().await?)
}

async fn sink_plan(
    session: &QuarrySession,
    input: Arc<dyn ExecutionPlan>,
    sink: &Sink,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(match sink {
        Sink::Collect => input,
        Sink::Take { n } => {
            frame(session, &input)?
                .limit(0, Some(*n as usize))?
                .create_physical_plan()
                .await?
        }
        Sink::Count => {
            frame(session, &input)?
                .aggregate(
                    vec![],
                    vec![datafusion::functions_aggregate::expr_fn::count(lit(1)).alias("count")],
                )?
                .create_physical_plan()
                .await?
        }
        Sink::Write { table } => write(session, input, table).await?,
    })
}

/// Checks a written record against the table and plans the upsert.
async fn write(
    session: &QuarrySession,
    input: Arc<dyn ExecutionPlan>,
    table: &str,
) -> Result<Arc<dyn ExecutionPlan>> {
    let def = table_def(session, table)?;
    let target = def.arrow_schema();
    let rows = input.schema();
    let keys = def.primary_key_indices();
    let name = def.table_name();
    for field in rows.fields() {
        if target.column_with_name(field.name()).is_none() {
            return Err(job_error(format!(
                "write_to {name}: the record's field '{}' has no column; the table's columns \
                 are {} (write_to needs a #[derive(Record)] struct named after the columns)",
                field.name(),
                def.column_names().join(", ")
            )));
        }
    }
    let mut projection = Vec::with_capacity(target.fields().len());
    for (i, column) in target.fields().iter().enumerate() {
        let Some((index, field)) = rows.column_with_name(column.name()) else {
            return Err(job_error(format!(
                "write_to {name}: the record has no field for column '{}' ({}); every column \
                 is written (declare it Option<...> to write nulls)",
                column.name(),
                describe_type(column.data_type())
            )));
        };
        if !same_type(field.data_type(), column.data_type()) {
            return Err(job_error(format!(
                "write_to {name}: the field '{}' is {}, but the column is {}",
                field.name(),
                describe_type(field.data_type()),
                describe_type(column.data_type())
            )));
        }
        if keys.contains(&i) && field.is_nullable() {
            return Err(job_error(format!(
                "write_to {name}: the field '{}' is an Option, but column '{}' is part of the \
                 primary key, which cannot be null",
                field.name(),
                column.name()
            )));
        }
        let value = Arc::new(Column::new(field.name(), index)) as Arc<dyn PhysicalExpr>;
        // A collection's nested fields are named and nullable as the store declares them.
        let value = if field.data_type() == column.data_type() {
            value
        } else {
            Arc::new(CastExpr::new(value, column.data_type().clone(), None))
        };
        projection.push((value, column.name().clone()));
    }
    let input: Arc<dyn ExecutionPlan> = Arc::new(ProjectionExec::try_new(projection, input)?);
    let provider = session
        .context()
        .table_provider(datafusion::common::TableReference::partial(
            name.keyspace.as_str(),
            name.table.as_str(),
        ))
        .await?;
    let state = session.context().state();
    Ok(provider
        .insert_into(&state, input, InsertOp::Append)
        .await?)
}

/// An already planned subtree as a table, for DataFusion's logical operators above it.
struct PlanTable {
    plan: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
}

impl fmt::Debug for PlanTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlanTable")
            .field("schema", &self.schema)
            .finish()
    }
}

impl PlanTable {
    /// Columns renamed `{prefix}0`, `{prefix}1`, ... (a job's column names are positions).
    fn new(plan: Arc<dyn ExecutionPlan>, prefix: &str) -> Self {
        let fields: Vec<Field> = plan
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                Field::new(
                    format!("{prefix}{i}"),
                    f.data_type().clone(),
                    f.is_nullable(),
                )
            })
            .collect();
        PlanTable {
            plan,
            schema: Arc::new(Schema::new(fields)),
        }
    }
}

#[async_trait]
impl TableProvider for PlanTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = self.plan.schema();
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = indices
            .iter()
            .map(|&i| {
                (
                    Arc::new(Column::new(input.field(i).name(), i)) as Arc<dyn PhysicalExpr>,
                    self.schema.field(i).name().clone(),
                )
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, self.plan.clone())?))
    }
}
