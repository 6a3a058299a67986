//! A SQL session over a store: Quarry's DDL runs against the store's catalog, everything else
//! through DataFusion.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::context::SessionContext;
use datafusion::execution::{SendableRecordBatchStream, SessionState};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use quarry_core::ddl::{Statement, parse_statement, split_statements};
use quarry_core::schema::{TableDef, TableName};
use quarry_store::Store;

use crate::catalog::{CATALOG, StoreCatalog};
use crate::checked_aggregates::{checked_avg_udaf, checked_sum_udaf};
use crate::error::Result;
use crate::options::QuarryOptions;
use crate::token_udf::token_udf;

/// The result of one statement.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// For statements that change things rather than return rows ("created table iot.readings").
    pub message: Option<String>,
}

impl QueryOutput {
    fn message(message: impl Into<String>) -> Self {
        QueryOutput {
            schema: Arc::new(Schema::empty()),
            batches: Vec::new(),
            message: Some(message.into()),
        }
    }

    fn rows(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<Self> {
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(QueryOutput {
            schema,
            batches: vec![batch],
            message: None,
        })
    }

    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Runs the physical plans of queries somewhere other than this process: the driver's
/// distributed runner. DDL, `SET` and catalog statements stay in the session.
#[async_trait::async_trait]
pub trait PlanExecutor: Send + Sync + std::fmt::Debug {
    /// Starts `plan` (of the statement `sql`) and streams its batches as they come.
    async fn execute_stream(
        &self,
        sql: &str,
        plan: Arc<dyn ExecutionPlan>,
        session: &SessionState,
    ) -> Result<SendableRecordBatchStream>;

    /// Runs `plan` to completion and returns its batches.
    async fn execute(
        &self,
        sql: &str,
        plan: Arc<dyn ExecutionPlan>,
        session: &SessionState,
    ) -> Result<Vec<RecordBatch>> {
        let stream = self.execute_stream(sql, plan, session).await?;
        Ok(futures::TryStreamExt::try_collect(stream).await?)
    }

    /// How `plan` would run, for `EXPLAIN`: one text line per row.
    async fn explain(&self, plan: Arc<dyn ExecutionPlan>) -> Result<String>;
}

/// The result of one statement, for callers that stream: a query's rows arrive while it runs.
pub enum QueryResult {
    /// A finished output (DDL, SHOW, INSERT, EXPLAIN, or a query run in this process).
    Done(QueryOutput),
    /// A query running elsewhere; batches arrive as it produces them.
    Stream(SendableRecordBatchStream),
}

impl std::fmt::Debug for QueryResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryResult::Done(output) => f.debug_tuple("Done").field(output).finish(),
            QueryResult::Stream(stream) => f.debug_tuple("Stream").field(&stream.schema()).finish(),
        }
    }
}

/// A SQL session; cheap to clone.
#[derive(Clone)]
pub struct QuarrySession {
    ctx: SessionContext,
    store: Arc<dyn Store>,
    executor: Option<Arc<dyn PlanExecutor>>,
}

impl std::fmt::Debug for QuarrySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuarrySession")
            .field("store", &self.store.kind())
            .finish()
    }
}

impl QuarrySession {
    /// A session over `store` with DataFusion's defaults (one partition per core).
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_config(store, SessionConfig::new())
    }

    pub fn with_config(store: Arc<dyn Store>, config: SessionConfig) -> Self {
        let config = config
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, "default")
            .with_information_schema(true)
            .with_option_extension(QuarryOptions::default());
        let ctx = SessionContext::new_with_config(config);
        ctx.register_catalog(CATALOG, Arc::new(StoreCatalog::new(store.clone())));
        ctx.register_udf(token_udf());
        // In place of DataFusion's, which wrap on overflow; by name, so plans decoded on a
        // worker resolve them too.
        ctx.register_udaf(checked_sum_udaf());
        ctx.register_udaf(checked_avg_udaf());
        QuarrySession {
            ctx,
            store,
            executor: None,
        }
    }

    /// This session with queries run by `executor` instead of in-process.
    pub fn with_executor(mut self, executor: Arc<dyn PlanExecutor>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// The DataFusion context, for callers that build plans themselves.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Runs every statement of a script, in order, stopping at the first error.
    pub async fn execute_script(&self, text: &str) -> Result<Vec<QueryOutput>> {
        let mut outputs = Vec::new();
        for statement in split_statements(text) {
            outputs.push(self.execute(&statement).await?);
        }
        Ok(outputs)
    }

    /// Runs one statement; with an executor, a query's rows stream from it as they come.
    /// Everything else behaves as [`execute`](Self::execute).
    pub async fn execute_streaming(&self, sql: &str) -> Result<QueryResult> {
        if let Some(executor) = &self.executor
            && let Statement::Sql(text) = parse_statement(sql)?
        {
            let is_query = text.split_whitespace().next().is_some_and(|w| {
                w.eq_ignore_ascii_case("select") || w.eq_ignore_ascii_case("with")
            });
            if is_query {
                let plan = self.plan_checked(&text).await?;
                if !matches!(
                    plan,
                    LogicalPlan::Ddl(_)
                        | LogicalPlan::Statement(_)
                        | LogicalPlan::Explain(_)
                        | LogicalPlan::Analyze(_)
                        | LogicalPlan::DescribeTable(_)
                        | LogicalPlan::Copy(_)
                        | LogicalPlan::Dml(_)
                ) {
                    let state = self.ctx.state();
                    let physical = state.create_physical_plan(&plan).await?;
                    return Ok(QueryResult::Stream(
                        executor.execute_stream(sql, physical, &state).await?,
                    ));
                }
            }
        }
        Ok(QueryResult::Done(self.execute(sql).await?))
    }

    /// Runs one statement.
    pub async fn execute(&self, sql: &str) -> Result<QueryOutput> {
        match parse_statement(sql)? {
            Statement::CreateKeyspace { def, if_not_exists } => {
                let name = def.name.clone();
                Ok(QueryOutput::message(
                    if self.store.create_keyspace(def, if_not_exists).await? {
                        format!("created keyspace {name}")
                    } else {
                        format!("keyspace {name} already exists")
                    },
                ))
            }
            Statement::DropKeyspace { name, if_exists } => Ok(QueryOutput::message(
                if self.store.drop_keyspace(&name, if_exists).await? {
                    format!("dropped keyspace {name}")
                } else {
                    format!("keyspace {name} does not exist")
                },
            )),
            Statement::CreateTable { def, if_not_exists } => {
                let name = def.table_name();
                Ok(QueryOutput::message(
                    if self.store.create_table(def, if_not_exists).await? {
                        format!("created table {name}")
                    } else {
                        format!("table {name} already exists")
                    },
                ))
            }
            Statement::DropTable { name, if_exists } => Ok(QueryOutput::message(
                if self.store.drop_table(&name, if_exists).await? {
                    format!("dropped table {name}")
                } else {
                    format!("table {name} does not exist")
                },
            )),
            Statement::ShowKeyspaces => self.show_keyspaces(),
            Statement::ShowTables { keyspace } => self.show_tables(keyspace.as_deref()),
            Statement::DescribeKeyspace { name } => {
                let ks = self.store.keyspace(&name)?;
                let tables = self.store.tables(Some(&name))?;
                let mut text = format!(
                    "CREATE KEYSPACE {} WITH shards = {} AND replication_factor = {}",
                    ks.name, ks.shards, ks.replication_factor
                );
                if let Some(nodes) = ks.nodes {
                    text.push_str(&format!(" AND nodes = {nodes}"));
                }
                text.push(';');
                for t in tables {
                    text.push_str("\n\n");
                    text.push_str(&t.to_cql());
                    text.push(';');
                }
                Ok(QueryOutput::message(text))
            }
            Statement::DescribeTable { name } => self.describe_table(&name),
            Statement::Sql(sql) => self.run_datafusion(&sql).await,
        }
    }

    async fn run_datafusion(&self, sql: &str) -> Result<QueryOutput> {
        let plan = self.plan_checked(sql).await?;
        self.run_planned(sql, plan).await
    }

    /// Plans a DataFusion statement, naming tables that do not exist with the store's message.
    async fn plan_checked(&self, sql: &str) -> Result<LogicalPlan> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        // Name missing tables with the store's message, which says what does exist.
        for reference in state.resolve_table_references(&statement)? {
            if let Some(keyspace) = reference.schema()
                && reference.catalog().is_none_or(|c| c == CATALOG)
                && keyspace != "information_schema"
            {
                self.store
                    .table(&TableName::new(keyspace, reference.table()))?;
            }
        }
        Ok(state.statement_to_plan(statement).await?)
    }

    async fn run_planned(&self, sql: &str, plan: LogicalPlan) -> Result<QueryOutput> {
        let (schema, batches) = match &self.executor {
            Some(executor) => match self.run_elsewhere(executor.as_ref(), sql, plan).await? {
                Ok(output) => return Ok(output),
                Err(result) => result,
            },
            None => {
                let frame = self.ctx.execute_logical_plan(plan).await?;
                let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
                (schema, frame.collect().await?)
            }
        };
        let is_insert = sql
            .split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("insert"));
        if is_insert {
            let count = batches
                .first()
                .filter(|b| b.num_rows() == 1 && b.num_columns() == 1)
                .and_then(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::UInt64Array>()
                        .map(|a| a.value(0))
                })
                .unwrap_or(0);
            return Ok(QueryOutput::message(format!(
                "upserted {count} row{}",
                if count == 1 { "" } else { "s" }
            )));
        }
        Ok(QueryOutput {
            schema,
            batches,
            message: None,
        })
    }

    /// Runs a planned statement through `executor` when it is a query or an insert; other
    /// statements (`SET`, views) run here. `Ok(Err(..))` carries a query's schema and batches on
    /// to the caller's formatting; `Ok(Ok(..))` is a finished output (`EXPLAIN`).
    async fn run_elsewhere(
        &self,
        executor: &dyn PlanExecutor,
        sql: &str,
        plan: LogicalPlan,
    ) -> Result<std::result::Result<QueryOutput, (SchemaRef, Vec<RecordBatch>)>> {
        match plan {
            LogicalPlan::Explain(explain) if !explain.verbose => {
                let state = self.ctx.state();
                let physical = state.create_physical_plan(explain.plan.as_ref()).await?;
                let text = executor.explain(physical).await?;
                let schema = Arc::new(Schema::new(vec![Field::new("plan", DataType::Utf8, false)]));
                Ok(Ok(QueryOutput::rows(
                    schema,
                    vec![Arc::new(StringArray::from_iter_values(
                        text.lines().collect::<Vec<_>>(),
                    ))],
                )?))
            }
            LogicalPlan::Ddl(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Copy(_) => {
                let frame = self.ctx.execute_logical_plan(plan).await?;
                let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
                Ok(Err((schema, frame.collect().await?)))
            }
            plan => {
                let state = self.ctx.state();
                let physical = state.create_physical_plan(&plan).await?;
                let schema = physical.schema();
                let batches = executor.execute(sql, physical, &state).await?;
                Ok(Err((schema, batches)))
            }
        }
    }

    fn show_keyspaces(&self) -> Result<QueryOutput> {
        let keyspaces = self.store.keyspaces();
        let schema = Arc::new(Schema::new(vec![
            Field::new("keyspace", DataType::Utf8, false),
            Field::new("shards", DataType::UInt32, false),
            Field::new("replication_factor", DataType::UInt32, false),
            Field::new("nodes", DataType::Utf8, false),
        ]));
        QueryOutput::rows(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    keyspaces.iter().map(|k| k.name.as_str()),
                )),
                Arc::new(UInt32Array::from_iter_values(
                    keyspaces.iter().map(|k| k.shards),
                )),
                Arc::new(UInt32Array::from_iter_values(
                    keyspaces.iter().map(|k| k.replication_factor),
                )),
                Arc::new(StringArray::from_iter_values(keyspaces.iter().map(|k| {
                    k.nodes.map_or_else(|| "all".to_string(), |n| n.to_string())
                }))),
            ],
        )
    }

    fn show_tables(&self, keyspace: Option<&str>) -> Result<QueryOutput> {
        let tables = self.store.tables(keyspace)?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("keyspace", DataType::Utf8, false),
            Field::new("table", DataType::Utf8, false),
            Field::new("partition_key", DataType::Utf8, false),
            Field::new("clustering", DataType::Utf8, false),
        ]));
        let text = |f: &dyn Fn(&TableDef) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(tables.iter().map(f)))
        };
        QueryOutput::rows(
            schema,
            vec![
                text(&|t| t.keyspace.clone()),
                text(&|t| t.name.clone()),
                text(&|t| t.partition_key.join(", ")),
                text(&|t| t.clustering.join(", ")),
            ],
        )
    }

    fn describe_table(&self, name: &TableName) -> Result<QueryOutput> {
        let def = self.store.table(name)?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("column", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("arrow_type", DataType::Utf8, false),
        ]));
        let kind = |c: &str| {
            if def.partition_key.iter().any(|k| k == c) {
                "partition_key"
            } else if def.clustering.iter().any(|k| k == c) {
                "clustering"
            } else {
                "regular"
            }
        };
        QueryOutput::rows(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    def.columns.iter().map(|c| c.name.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    def.columns.iter().map(|c| c.cql_type.name()),
                )),
                Arc::new(StringArray::from_iter_values(
                    def.columns.iter().map(|c| kind(&c.name)),
                )),
                Arc::new(StringArray::from_iter_values(
                    def.columns
                        .iter()
                        .map(|c| c.cql_type.arrow_type().to_string()),
                )),
            ],
        )
    }
}
