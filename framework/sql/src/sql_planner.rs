//! SQL text to DataFusion logical plans, with Quarry's name resolution: temporary views first for
//! bare names, then the session's keyspace (`USE`); stored views are planned where they are used.
//!
//! ```text
//!   SELECT ... FROM v, ks.w
//!     │ parse; bare temporary view names ──▶ quarry_session.temporary.v   (temporary_views.rs)
//!     │ check every other name exists: a missing one gets the store's message (what exists)
//!     ▼ DataFusion plans; the catalog finds ks.w is a view ──▶ SqlPlanner::plan_view(ks.w)
//!          a snapshot of the session's state, default schema = ks, catalogs that remember ks.w
//!          ──▶ the view's LogicalPlan ──▶ ViewTable, which DataFusion inlines into the query
//! ```
//!
//! The planner holds the session's state only weakly (the session's catalogs hold the planner),
//! and every view being planned is on its stack, so a view that refers to itself, directly or
//! through others, is an error naming the cycle instead of a stack overflow.

use std::sync::Arc;

use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
use datafusion::datasource::{TableProvider, ViewTable};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::{
    Ident, Insert, ObjectName, Statement as SqlStatement, TableObject,
};
use quarry_core::schema::{TableName, ViewDef};
use quarry_store::Store;

use crate::catalog::{CATALOG, StoreCatalog};
use crate::error::{Error, Result};
use crate::temporary_views::{
    TEMPORARY_CATALOG, TEMPORARY_SCHEMA, TemporaryCatalog, TemporaryView, TemporaryViews,
};

/// DataFusion's default schema while the session has no keyspace: no keyspace has this name.
pub const NO_KEYSPACE: &str = "";

/// Views nest at most this deep.
const MAX_VIEW_DEPTH: usize = 32;

/// The session's keyspace as DataFusion's config holds it (`datafusion.catalog.default_schema`).
pub fn current_keyspace(state: &SessionState) -> Option<String> {
    let schema = &state.config().options().catalog.default_schema;
    (schema != NO_KEYSPACE).then(|| schema.clone())
}

/// Which temporary views the names of a statement may mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope<'a> {
    /// A statement of the session: any temporary view.
    Session,
    /// The query of a temporary view: the ones it used when it was created.
    TemporaryView(&'a [String]),
    /// The query of a stored view: none, since it outlives the session.
    StoredView,
}

/// A copy of the session's current state, or `None` once the session is gone.
type Snapshot = Arc<dyn Fn() -> Option<SessionState> + Send + Sync>;

/// Plans statements and views of one session; see the module docs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SqlPlanner {
    store: Arc<dyn Store>,
    session: Snapshot,
    temporaries: TemporaryViews,
    /// The views being planned, outermost first.
    stack: Vec<String>,
}

impl std::fmt::Debug for SqlPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlPlanner")
            .field("store", &self.store.kind())
            .field("stack", &self.stack)
            .finish()
    }
}

impl SqlPlanner {
    pub(crate) fn new(store: Arc<dyn Store>, ctx: &SessionContext) -> Self {
        let weak = ctx.state_weak_ref();
        SqlPlanner {
            store,
            session: Arc::new(move || weak.upgrade().map(|state| state.read().clone())),
            temporaries: TemporaryViews::default(),
            stack: Vec::new(),
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn temporaries(&self) -> &TemporaryViews {
        &self.temporaries
    }

    /// Plans one statement in `state` (whose default schema is the current keyspace). Returns the
    /// plan and the temporary views its names meant.
    pub(crate) async fn plan_statement(
        &self,
        state: &SessionState,
        scope: Scope<'_>,
        sql: &str,
        query_only: bool,
    ) -> Result<(LogicalPlan, Vec<String>)> {
        let options = state.config().options();
        let dialect = options.sql_parser.dialect;
        let mut statement = state.sql_to_statement(sql, &dialect)?;
        if query_only && !is_query(&statement) {
            let first = sql.split_whitespace().next().unwrap_or_default();
            return Err(Error::Statement {
                message: format!(
                    "a view or CREATE TABLE ... AS needs a query (SELECT, WITH or VALUES) after AS, \
                     not {first}"
                ),
            });
        }
        let normalize = options.sql_parser.enable_ident_normalization;
        let keyspace = current_keyspace(state);
        if let Some(name) = show_columns_table(&mut statement)
            && let [part] = name.0.as_slice()
            && let Some(ident) = part.as_ident()
        {
            // DataFusion matches a bare name in every schema; it means one table here.
            let table = object_name_to_table_reference(name.clone(), normalize)?;
            if scope == Scope::Session && self.temporaries.contains(table.table()) {
                *name = ObjectName::from(vec![
                    Ident::new(TEMPORARY_CATALOG),
                    Ident::new(TEMPORARY_SCHEMA),
                    ident.clone(),
                ]);
            } else if let Some(keyspace) = &keyspace {
                *name = ObjectName::from(vec![Ident::with_quote('"', keyspace), ident.clone()]);
            }
        }
        if let Some(target) = insert_target(&statement) {
            let target = object_name_to_table_reference(target.clone(), normalize)?;
            let view = match (target.schema(), keyspace.as_deref()) {
                (None, _) if self.temporaries.contains(target.table()) => {
                    Some(format!("temporary view {}", target.table()))
                }
                (Some(schema), _) | (None, Some(schema)) => {
                    let name = TableName::new(schema, target.table());
                    self.store.view(&name).ok().map(|_| format!("view {name}"))
                }
                (None, None) => None,
            };
            if let Some(view) = view {
                return Err(Error::Statement {
                    message: format!(
                        "cannot INSERT INTO {view}: a view has no rows of its own; insert into \
                         the tables it reads"
                    ),
                });
            }
        }
        let used = match scope {
            Scope::Session => self.temporaries.rewrite(&mut statement, normalize, None)?,
            Scope::TemporaryView(used) => {
                self.temporaries
                    .rewrite(&mut statement, normalize, Some(used))?
            }
            Scope::StoredView => Vec::new(),
        };
        for reference in state.resolve_table_references(&statement)? {
            if reference.catalog().is_some_and(|c| c != CATALOG)
                || reference.schema() == Some("information_schema")
            {
                continue;
            }
            let in_keyspace = match (reference.schema(), &keyspace) {
                (Some(schema), _) => schema,
                // A table function such as generate_series is not a table.
                (None, _) if state.table_functions().contains_key(reference.table()) => continue,
                (None, Some(keyspace)) => keyspace,
                (None, None) => {
                    return Err(Error::Statement {
                        message: format!(
                            "table name '{}' has no keyspace; write keyspace.table, for example \
                             iot.readings, or choose a keyspace first with USE keyspace",
                            reference.table()
                        ),
                    });
                }
            };
            let name = TableName::new(in_keyspace, reference.table());
            let Err(missing) = self.store.table(&name) else {
                continue;
            };
            if self.store.view(&name).is_ok() {
                continue;
            }
            if scope == Scope::StoredView
                && reference.schema().is_none()
                && self.temporaries.contains(reference.table())
            {
                return Err(Error::Statement {
                    message: format!(
                        "'{}' is a temporary view, which a stored view cannot use (it ends with \
                         the session); use a stored view or a table, or make this view temporary",
                        reference.table()
                    ),
                });
            }
            return Err(missing.into());
        }
        Ok((state.statement_to_plan(statement).await?, used))
    }

    /// Plans the query of a view named `name` (for messages and cycles) in a snapshot of the
    /// session whose keyspace is `keyspace`. Returns the plan and the temporary views it used.
    pub(crate) async fn plan_view(
        &self,
        name: &str,
        keyspace: Option<&str>,
        sql: &str,
        scope: Scope<'_>,
    ) -> Result<(LogicalPlan, Vec<String>)> {
        if self.stack.iter().any(|v| v == name) {
            let mut cycle = self.stack.clone();
            cycle.push(name.to_string());
            return Err(Error::Statement {
                message: format!("view {name} refers to itself: {}", cycle.join(" -> ")),
            });
        }
        if self.stack.len() >= MAX_VIEW_DEPTH {
            return Err(Error::Statement {
                message: format!(
                    "views nest more than {MAX_VIEW_DEPTH} deep: {} -> {name}",
                    self.stack.join(" -> ")
                ),
            });
        }
        let planned = self.plan_view_query(name, keyspace, sql, scope).await;
        planned.map_err(|source| Error::View {
            name: name.to_string(),
            source: Box::new(source),
        })
    }

    async fn plan_view_query(
        &self,
        name: &str,
        keyspace: Option<&str>,
        sql: &str,
        scope: Scope<'_>,
    ) -> Result<(LogicalPlan, Vec<String>)> {
        let Some(mut state) = (self.session)() else {
            return Err(Error::Statement {
                message: "the session it was used in has ended".into(),
            });
        };
        state.config_mut().options_mut().catalog.default_schema =
            keyspace.unwrap_or(NO_KEYSPACE).to_string();
        let mut nested = self.clone();
        nested.stack.push(name.to_string());
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(
            CATALOG.to_string(),
            Arc::new(StoreCatalog::new(nested.clone())),
        );
        catalogs.register_catalog(
            TEMPORARY_CATALOG.to_string(),
            Arc::new(TemporaryCatalog::new(nested.clone())),
        );
        let state = SessionStateBuilder::new_from_existing(state)
            .with_catalog_list(Arc::new(catalogs))
            .build();
        nested.plan_statement(&state, scope, sql, true).await
    }

    /// A stored view as a table provider, planned now.
    pub(crate) async fn stored_view_table(
        &self,
        def: &ViewDef,
    ) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        let name = def.view_name().to_string();
        let (plan, _) = self
            .plan_view(&name, Some(&def.keyspace), &def.sql, Scope::StoredView)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Arc::new(ViewTable::new(plan, Some(def.to_sql()))))
    }

    /// A temporary view as a table provider, planned now.
    pub(crate) async fn temporary_view_table(
        &self,
        view: &TemporaryView,
    ) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        let (plan, _) = self
            .plan_view(
                &view.name,
                view.keyspace.as_deref(),
                &view.sql,
                Scope::TemporaryView(&view.uses),
            )
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let definition = format!("CREATE TEMPORARY VIEW {} AS {}", view.name, view.sql);
        Ok(Arc::new(ViewTable::new(plan, Some(definition))))
    }
}

/// The table of `SHOW COLUMNS FROM table`, if that is the statement.
fn show_columns_table(statement: &mut DFStatement) -> Option<&mut ObjectName> {
    let DFStatement::Statement(statement) = statement else {
        return None;
    };
    let SqlStatement::ShowColumns { show_options, .. } = statement.as_mut() else {
        return None;
    };
    show_options.show_in.as_mut()?.parent_name.as_mut()
}

/// The table an `INSERT` writes to, if that is the statement.
fn insert_target(statement: &DFStatement) -> Option<&ObjectName> {
    let DFStatement::Statement(statement) = statement else {
        return None;
    };
    match statement.as_ref() {
        SqlStatement::Insert(Insert {
            table: TableObject::TableName(name),
            ..
        }) => Some(name),
        _ => None,
    }
}

/// Whether `statement` is a query (`SELECT`, `WITH`, `VALUES`, a set operation).
fn is_query(statement: &DFStatement) -> bool {
    matches!(statement, DFStatement::Statement(s) if matches!(**s, SqlStatement::Query(_)))
}
