//! A SQL session over a store: Quarry's DDL runs against the store's catalog, everything else
//! through DataFusion.
//!
//! A session has state of its own: `SET` values, the current keyspace (`USE`) and temporary
//! views. A driver builds a session per statement, so [`QuarrySession::settings`] exports that
//! state as key/value settings, which a client sends back with its next statement and the driver
//! restores with [`QuarrySession::apply_settings`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::context::SessionContext;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SendableRecordBatchStream, SessionState};
use datafusion::logical_expr::{LogicalPlan, Statement as PlanStatement};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use quarry_core::ddl::{ObjectName, Statement, parse_statement_in, split_statements};
use quarry_core::schema::{ColumnDef, TableName, ViewDef, validate_identifier};
use quarry_store::Store;

use crate::access::Access;
use crate::catalog::{CATALOG, StoreCatalog};
use crate::checked_aggregates::{checked_avg_udaf, checked_sum_udaf};
use crate::checked_arithmetic::CheckedIntegerArithmetic;
use crate::create_table_as;
use crate::error::{Error, Result};
use crate::options::QuarryOptions;
use crate::sql_planner::{NO_KEYSPACE, Scope, SqlPlanner};
use crate::temporary_views::{
    TEMPORARY_CATALOG, TEMPORARY_VIEW_SETTING, TemporaryCatalog, TemporaryView,
};
use crate::token_udf::token_udf;

/// The setting that holds the session's keyspace (`USE ks` sets it).
pub const KEYSPACE_SETTING: &str = "datafusion.catalog.default_schema";

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

/// A SQL session; cheap to clone (clones share the session's state).
#[derive(Clone)]
pub struct QuarrySession {
    ctx: SessionContext,
    store: Arc<dyn Store>,
    executor: Option<Arc<dyn PlanExecutor>>,
    planner: SqlPlanner,
    /// Settings made in this session (`SET`, `USE`, and those applied by
    /// [`apply_settings`](Self::apply_settings)), by key.
    settings: Arc<Mutex<BTreeMap<String, String>>>,
    /// What the session may do beyond the store.
    access: Access,
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

    /// A session over `store` with `config`; it starts without a keyspace.
    pub fn with_config(store: Arc<dyn Store>, config: SessionConfig) -> Self {
        Self::with_runtime(store, config, Arc::new(RuntimeEnv::default()))
    }

    /// A session over `store` with `config`, running its queries in `runtime` (whose memory pool
    /// it shares with the other sessions of the process; see [`crate::runtime_env`]).
    pub fn with_runtime(
        store: Arc<dyn Store>,
        mut config: SessionConfig,
        runtime: Arc<RuntimeEnv>,
    ) -> Self {
        // `1.5` is an exact decimal, as in SQL, CQL and Spark, not a binary float: money and
        // rates compare and add up exactly (`0.06 + 0.01 = 0.07`).
        config.options_mut().sql_parser.parse_float_as_decimal = true;
        let config = config
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, NO_KEYSPACE)
            .with_information_schema(true)
            .with_option_extension(QuarryOptions::default());
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let planner = SqlPlanner::new(store.clone(), &ctx);
        ctx.register_catalog(CATALOG, Arc::new(StoreCatalog::new(planner.clone())));
        ctx.register_catalog(
            TEMPORARY_CATALOG,
            Arc::new(TemporaryCatalog::new(planner.clone())),
        );
        ctx.register_udf(token_udf());
        // In place of DataFusion's, which wrap on overflow; by name, so plans decoded on a
        // worker resolve them too.
        ctx.register_udaf(checked_sum_udaf());
        ctx.register_udaf(checked_avg_udaf());
        ctx.add_analyzer_rule(Arc::new(CheckedIntegerArithmetic));
        QuarrySession {
            ctx,
            store,
            executor: None,
            planner,
            settings: Arc::default(),
            access: Access::Local,
        }
    }

    /// This session serving `access` (a daemon's client: allow-listed settings, files only if
    /// its operator allowed them).
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
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

    /// The current keyspace (`USE`), in which names without a keyspace resolve.
    pub fn keyspace(&self) -> Option<String> {
        let keyspace = self
            .ctx
            .copied_config()
            .options()
            .catalog
            .default_schema
            .clone();
        (keyspace != NO_KEYSPACE).then_some(keyspace)
    }

    /// This session's state as settings: `SET` values, the keyspace, and one setting per
    /// temporary view. A client of a driver sends them with its next statement.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut settings: Vec<(String, String)> = self
            .recorded()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        settings.extend(
            self.planner
                .temporaries()
                .list()
                .iter()
                .map(TemporaryView::setting),
        );
        settings
    }

    /// Restores state that [`settings`](Self::settings) exported, checking each setting: an
    /// unknown option, a keyspace or view name that is not an identifier, or a view setting that
    /// cannot be read is an error.
    pub fn apply_settings(&self, settings: &[(String, String)]) -> Result<()> {
        for (key, value) in settings {
            self.access.check_setting(key, value)?;
            if let Some(name) = key.strip_prefix(TEMPORARY_VIEW_SETTING) {
                self.planner
                    .temporaries()
                    .insert(TemporaryView::from_setting(name, value)?);
                continue;
            }
            if key == KEYSPACE_SETTING && value != NO_KEYSPACE {
                validate_identifier("keyspace", value)?;
            }
            self.ctx
                .state_ref()
                .write()
                .config_mut()
                .options_mut()
                .set(key, value)?;
            self.recorded().insert(key.clone(), value.clone());
        }
        Ok(())
    }

    /// The settings DataFusion itself reads (what workers need to run a plan the same way):
    /// `settings` without the session's temporary views.
    pub fn engine_settings(settings: &[(String, String)]) -> Vec<(String, String)> {
        settings
            .iter()
            .filter(|(key, _)| !key.starts_with(TEMPORARY_VIEW_SETTING))
            .cloned()
            .collect()
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // A panic while holding the lock leaves a plain map behind; it stays usable.
        self.settings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
            && let Statement::Sql(text) = parse_statement_in(sql, self.keyspace().as_deref())?
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

    /// Runs a physical plan planned in this session (a Rust job's sink): on the executor when
    /// there is one, else in this process. `label` names the job.
    pub async fn execute_plan(
        &self,
        label: &str,
        plan: Arc<dyn ExecutionPlan>,
    ) -> Result<SendableRecordBatchStream> {
        let state = self.ctx.state();
        match &self.executor {
            Some(executor) => executor.execute_stream(label, plan, &state).await,
            None => Ok(datafusion::physical_plan::execute_stream(
                plan,
                state.task_ctx(),
            )?),
        }
    }

    /// Runs one statement.
    pub async fn execute(&self, sql: &str) -> Result<QueryOutput> {
        let keyspace = self.keyspace();
        match parse_statement_in(sql, keyspace.as_deref())? {
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
            Statement::CreateTableAs {
                name,
                if_not_exists,
                columns,
                partition_key,
                clustering,
                query,
            } => {
                self.create_table_as(
                    name,
                    if_not_exists,
                    columns,
                    (partition_key, clustering),
                    &query,
                )
                .await
            }
            Statement::CreateView {
                name,
                query,
                or_replace,
                temporary,
                if_not_exists,
            } => {
                if temporary {
                    self.create_temporary_view(name.name, query, or_replace, if_not_exists)
                        .await
                } else {
                    self.create_view(name, query, or_replace, if_not_exists)
                        .await
                }
            }
            Statement::DropView { name, if_exists } => self.drop_view(name, if_exists).await,
            Statement::Use { keyspace } => {
                self.store.keyspace(&keyspace)?;
                self.ctx
                    .state_ref()
                    .write()
                    .config_mut()
                    .options_mut()
                    .catalog
                    .default_schema = keyspace.clone();
                self.recorded()
                    .insert(KEYSPACE_SETTING.to_string(), keyspace.clone());
                Ok(QueryOutput::message(format!("using keyspace {keyspace}")))
            }
            Statement::ShowKeyspaces => self.show_keyspaces(),
            Statement::ShowTables {
                keyspace: shown,
                verbose,
            } => self.show_tables(shown.as_deref().or(keyspace.as_deref()), verbose),
            Statement::DescribeKeyspace { name } => {
                let ks = self.store.keyspace(&name)?;
                let tables = self.store.tables(Some(&name))?;
                let views = self.store.views(Some(&name))?;
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
                for v in views {
                    text.push_str("\n\n");
                    text.push_str(&v.to_sql());
                    text.push(';');
                }
                Ok(QueryOutput::message(text))
            }
            Statement::DescribeTable { name } => self.describe(&name).await,
            Statement::Optimize { name } => self.optimize(&name).await,
            Statement::Sql(sql) => self.run_datafusion(&sql).await,
        }
    }

    async fn run_datafusion(&self, sql: &str) -> Result<QueryOutput> {
        let plan = self.plan_checked(sql).await?;
        // The session keeps what SET and RESET change, for settings().
        let setting = match &plan {
            LogicalPlan::Statement(PlanStatement::SetVariable(set)) => {
                self.access.check_setting(&set.variable, &set.value)?;
                if set.variable == KEYSPACE_SETTING && set.value != NO_KEYSPACE {
                    // As USE does: a session's keyspace is one that exists.
                    self.store.keyspace(&set.value)?;
                }
                Some((set.variable.clone(), Some(set.value.clone())))
            }
            LogicalPlan::Statement(PlanStatement::ResetVariable(reset)) => {
                Some((reset.variable.clone(), None))
            }
            _ => None,
        };
        let output = self.run_planned(sql, plan).await?;
        match setting {
            Some((key, Some(value))) => {
                self.recorded().insert(key, value);
            }
            Some((key, None)) => {
                self.recorded().remove(&key);
            }
            None => {}
        }
        Ok(output)
    }

    /// Plans a DataFusion statement: temporary views and the current keyspace resolve names,
    /// and a table that does not exist is named with the store's message.
    async fn plan_checked(&self, sql: &str) -> Result<LogicalPlan> {
        let state = self.ctx.state();
        let (plan, _) = self
            .planner
            .plan_statement(&state, Scope::Session, sql, false)
            .await?;
        self.access.check_plan(&plan)?;
        Ok(plan)
    }

    /// `CREATE TABLE name (..., PRIMARY KEY (...)) AS query`: creates the table, then inserts
    /// the query's rows; a failed insert drops the table again.
    async fn create_table_as(
        &self,
        name: TableName,
        if_not_exists: bool,
        columns: Vec<ColumnDef>,
        (partition_key, clustering): (Vec<String>, Vec<String>),
        query: &str,
    ) -> Result<QueryOutput> {
        if if_not_exists && self.store.table(&name).is_ok() {
            return Ok(QueryOutput::message(format!("table {name} already exists")));
        }
        let state = self.ctx.state();
        let (plan, _) = self
            .planner
            .plan_statement(&state, Scope::Session, query, true)
            .await?;
        let def = create_table_as::table_def(
            &name,
            columns,
            partition_key,
            clustering,
            plan.schema().as_arrow(),
        )?;
        self.store.create_table(def, false).await?;
        let insert = format!("INSERT INTO {name} {query}");
        match self.run_datafusion(&insert).await {
            Ok(output) => Ok(QueryOutput::message(format!(
                "created table {name}; {}",
                output.message.unwrap_or_default()
            ))),
            Err(e) => {
                if let Err(dropped) = self.store.drop_table(&name, true).await {
                    tracing::warn!(table = %name, error = %dropped, "could not drop the table of a failed CREATE TABLE ... AS");
                }
                Err(e)
            }
        }
    }

    async fn create_view(
        &self,
        name: ObjectName,
        query: String,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<QueryOutput> {
        let name = self.stored_name(&name, "view")?;
        if if_not_exists && self.store.view(&name).is_ok() {
            return Ok(QueryOutput::message(format!("view {name} already exists")));
        }
        let def = ViewDef::new(&name.keyspace, &name.table, query)?;
        let (plan, _) = self
            .planner
            .plan_view(
                &name.to_string(),
                Some(&def.keyspace),
                &def.sql,
                Scope::StoredView,
            )
            .await?;
        unique_columns(&name.to_string(), &plan)?;
        let replaced = self.store.create_view(def, or_replace).await?;
        Ok(QueryOutput::message(format!(
            "{} view {name}",
            if replaced { "replaced" } else { "created" }
        )))
    }

    async fn create_temporary_view(
        &self,
        name: String,
        query: String,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<QueryOutput> {
        let temporaries = self.planner.temporaries();
        if temporaries.contains(&name) {
            if if_not_exists {
                return Ok(QueryOutput::message(format!(
                    "temporary view {name} already exists"
                )));
            }
            if !or_replace {
                return Err(Error::Statement {
                    message: format!(
                        "temporary view {name} already exists; CREATE OR REPLACE TEMPORARY VIEW \
                         replaces it"
                    ),
                });
            }
        }
        let keyspace = self.keyspace();
        let (plan, uses) = self
            .planner
            .plan_view(&name, keyspace.as_deref(), &query, Scope::Session)
            .await?;
        unique_columns(&name, &plan)?;
        let replaced = temporaries.insert(TemporaryView {
            name: name.clone(),
            sql: query,
            keyspace,
            uses,
        });
        Ok(QueryOutput::message(format!(
            "{} temporary view {name}",
            if replaced.is_some() {
                "replaced"
            } else {
                "created"
            }
        )))
    }

    /// `DROP VIEW`: a bare name drops the temporary view of that name if there is one, as in
    /// Spark; otherwise the stored view in its keyspace.
    async fn drop_view(&self, name: ObjectName, if_exists: bool) -> Result<QueryOutput> {
        if name.keyspace.is_none() && self.planner.temporaries().remove(&name.name).is_some() {
            return Ok(QueryOutput::message(format!(
                "dropped temporary view {}",
                name.name
            )));
        }
        if name.keyspace.is_none() && self.keyspace().is_none() && if_exists {
            return Ok(QueryOutput::message(format!("view {name} does not exist")));
        }
        let name = self.stored_name(&name, "view")?;
        Ok(QueryOutput::message(
            if self.store.drop_view(&name, if_exists).await? {
                format!("dropped view {name}")
            } else {
                format!("view {name} does not exist")
            },
        ))
    }

    /// `keyspace.name` for a stored table or view: the name's own keyspace, else the session's.
    fn stored_name(&self, name: &ObjectName, kind: &str) -> Result<TableName> {
        name.in_keyspace(self.keyspace().as_deref())
            .ok_or_else(|| Error::Statement {
                message: format!(
                    "{kind} name '{name}' has no keyspace, and there is no temporary view of \
                     that name; write keyspace.{kind}, for example iot.{name}, or choose a \
                     keyspace first with USE keyspace"
                ),
            })
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
            LogicalPlan::Analyze(_) => Err(Error::Statement {
                message: "EXPLAIN ANALYZE is not available on a cluster: it would run the query \
                          in the driver alone and report that run's metrics, not the job's. Use \
                          EXPLAIN for the distributed plan, run the query, and see its stages and \
                          tasks with `quarry job ID` (`quarry jobs` lists the ids)"
                    .into(),
            }),
            LogicalPlan::Ddl(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Explain(_)
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

    /// Tables and views of `keyspace` (or of every keyspace), and the session's temporary views;
    /// `verbose` adds how the store keeps each table.
    fn show_tables(&self, keyspace: Option<&str>, verbose: bool) -> Result<QueryOutput> {
        let tables = self.store.tables(keyspace)?;
        let views = self.store.views(keyspace)?;
        // keyspace, name, kind, partition key, clustering
        let mut rows: Vec<[String; 5]> = tables
            .iter()
            .map(|t| {
                [
                    t.keyspace.clone(),
                    t.name.clone(),
                    "table".to_string(),
                    t.partition_key.join(", "),
                    t.clustering.join(", "),
                ]
            })
            .chain(views.iter().map(|v| {
                [
                    v.keyspace.clone(),
                    v.name.clone(),
                    "view".to_string(),
                    String::new(),
                    String::new(),
                ]
            }))
            .chain(self.planner.temporaries().list().into_iter().map(|v| {
                [
                    String::new(),
                    v.name,
                    "temporary view".to_string(),
                    String::new(),
                    String::new(),
                ]
            }))
            .collect();
        rows.sort();
        let schema = Arc::new(Schema::new(vec![
            Field::new("keyspace", DataType::Utf8, false),
            Field::new("table", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("partition_key", DataType::Utf8, false),
            Field::new("clustering", DataType::Utf8, false),
        ]));
        let column = |i: usize| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r[i])))
        };
        let columns: Vec<ArrayRef> = (0..5).map(column).collect();
        if !verbose {
            return QueryOutput::rows(schema, columns);
        }
        let stats = rows
            .iter()
            .map(|r| match r[2].as_str() {
                "table" => self.store.storage(&TableName::new(&r[0], &r[1])),
                _ => Ok(None),
            })
            .collect::<quarry_store::Result<Vec<_>>>()?;
        storage_columns(&schema, columns, &stats)
    }

    /// `DESCRIBE name`: a temporary view (for a bare name), else a table or view of the name's
    /// keyspace or the session's.
    async fn describe(&self, name: &ObjectName) -> Result<QueryOutput> {
        if name.keyspace.is_none()
            && let Some(view) = self.planner.temporaries().get(&name.name)
        {
            let (plan, _) = self
                .planner
                .plan_view(
                    &view.name,
                    view.keyspace.as_deref(),
                    &view.sql,
                    Scope::TemporaryView(&view.uses),
                )
                .await?;
            return describe_view(&plan, &view.sql);
        }
        let name = self.stored_name(name, "table")?;
        match self.store.table(&name) {
            Ok(_) => self.describe_table(&name),
            Err(missing) => {
                let Ok(view) = self.store.view(&name) else {
                    return Err(missing.into());
                };
                let (plan, _) = self
                    .planner
                    .plan_view(
                        &name.to_string(),
                        Some(&view.keyspace),
                        &view.sql,
                        Scope::StoredView,
                    )
                    .await?;
                describe_view(&plan, &view.sql)
            }
        }
    }

    /// `OPTIMIZE`: compacts the table now, and says in one row what that changed.
    async fn optimize(&self, name: &TableName) -> Result<QueryOutput> {
        let started = std::time::Instant::now();
        let before = self.store.storage(name)?;
        let compaction = self.store.compact(name).await?;
        let after = self.store.storage(name)?;
        let seconds = started.elapsed().as_secs_f64();
        let measure = |stats: &Option<quarry_store::TableStats>,
                       f: fn(&quarry_store::TableStats) -> u64| {
            Arc::new(UInt64Array::from(vec![stats.as_ref().map(f)])) as ArrayRef
        };
        let runs = |s: &quarry_store::TableStats| s.runs as u64;
        let bytes = |s: &quarry_store::TableStats| s.bytes;
        let schema = Arc::new(Schema::new(vec![
            Field::new("table", DataType::Utf8, false),
            Field::new("runs_merged", DataType::UInt64, false),
            Field::new("runs_after", DataType::UInt64, true),
            Field::new("rows_written", DataType::UInt64, false),
            Field::new("superseded_rows_dropped", DataType::UInt64, false),
            Field::new("bytes_before", DataType::UInt64, true),
            Field::new("bytes_after", DataType::UInt64, true),
            Field::new("seconds", DataType::Float64, false),
        ]));
        // The memtable is flushed into a run first, so a compaction may merge more runs than
        // the table had before it.
        let (merged, written, dropped) = compaction.map_or((0, 0, 0), |c| {
            (c.runs as u64, c.rows, c.read_rows.saturating_sub(c.rows))
        });
        QueryOutput::rows(
            schema,
            vec![
                Arc::new(StringArray::from(vec![name.to_string()])),
                Arc::new(UInt64Array::from(vec![merged])),
                measure(&after, runs),
                Arc::new(UInt64Array::from(vec![written])),
                Arc::new(UInt64Array::from(vec![dropped])),
                measure(&before, bytes),
                measure(&after, bytes),
                Arc::new(Float64Array::from(vec![seconds])),
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
                    def.columns.iter().map(|c| c.cql_type.to_string()),
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

/// `SHOW TABLES VERBOSE`'s columns after the plain listing's: how the store keeps each table
/// (null where the store does not say, and for views).
fn storage_columns(
    listing: &Schema,
    mut columns: Vec<ArrayRef>,
    stats: &[Option<quarry_store::TableStats>],
) -> Result<QueryOutput> {
    type Measure = fn(&quarry_store::TableStats) -> u64;
    let measures: [(&str, Measure); 7] = [
        ("runs", |s| s.runs as u64),
        ("overlap_depth", |s| s.overlap_depth as u64),
        ("files", |s| s.files as u64),
        ("bytes", |s| s.bytes),
        // Memtable rows may update rows of runs, so the two are not added up.
        ("run_rows", |s| s.run_rows - s.deleted_rows),
        ("superseded_rows", |s| s.deleted_rows),
        ("memtable_rows", |s| s.memtable_rows),
    ];
    let mut fields: Vec<Field> = listing
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for (name, measure) in measures {
        fields.push(Field::new(name, DataType::UInt64, true));
        columns.push(Arc::new(UInt64Array::from_iter(
            stats.iter().map(|s| s.as_ref().map(measure)),
        )));
    }
    fields.push(Field::new("last_compaction", DataType::Utf8, true));
    columns.push(Arc::new(StringArray::from_iter(stats.iter().map(|s| {
        let at = s.as_ref()?.last_compaction?.at_ms;
        arrow::temporal_conversions::timestamp_ms_to_datetime(at)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    }))));
    QueryOutput::rows(Arc::new(Schema::new(fields)), columns)
}

/// `DESCRIBE` of a view: its columns as a table's are shown (`kind` is `view`; the CQL type is
/// the one a `CREATE TABLE ... AS` would give the column), then one row of kind `query` whose
/// `type` is the view's query.
fn describe_view(plan: &LogicalPlan, sql: &str) -> Result<QueryOutput> {
    let fields = plan.schema().fields();
    let schema = Arc::new(Schema::new(vec![
        Field::new("column", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("arrow_type", DataType::Utf8, false),
    ]));
    let type_name = |t: &DataType| {
        create_table_as::cql_type_of(t).map_or_else(|| t.to_string(), |c| c.name().to_string())
    };
    let text = |values: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(values)) };
    let mut columns: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
    let mut types: Vec<String> = fields.iter().map(|f| type_name(f.data_type())).collect();
    let mut kinds: Vec<String> = vec!["view".to_string(); fields.len()];
    let mut arrow_types: Vec<String> = fields.iter().map(|f| f.data_type().to_string()).collect();
    columns.push(String::new());
    types.push(sql.to_string());
    kinds.push("query".to_string());
    arrow_types.push(String::new());
    QueryOutput::rows(
        schema,
        vec![text(columns), text(types), text(kinds), text(arrow_types)],
    )
}

/// Refuses a view whose columns share a name (`SELECT a.id, b.id ...`): a view's columns are
/// named by their names alone.
fn unique_columns(view: &str, plan: &LogicalPlan) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for field in plan.schema().fields() {
        if !seen.insert(field.name()) {
            return Err(Error::Statement {
                message: format!(
                    "view {view} would have two columns named '{}'; name them apart with AS",
                    field.name()
                ),
            });
        }
    }
    Ok(())
}
