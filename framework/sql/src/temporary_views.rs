//! Temporary views: named queries that live as long as one session and are never stored.
//!
//! ```text
//!   CREATE TEMPORARY VIEW v AS q ──▶ TemporaryViews (name, query, keyspace current then)
//!   SELECT * FROM v ──rewrite──▶ SELECT * FROM quarry_session.temporary.v AS v
//!                                      └─▶ TemporaryCatalog ──▶ SqlPlanner plans q ──▶ ViewTable
//! ```
//!
//! A temporary view is named without a keyspace, and only a bare name reaches it: before a
//! statement is planned, every bare table name that is a temporary view (and not a CTE in scope)
//! is rewritten to the session's own catalog. So `v` means the temporary view while `ks.v` still
//! means the stored table or view, whatever the current keyspace. Like Spark's, a temporary view
//! keeps its query as text and is planned where it is used, with the keyspace that was current
//! when it was created and only the temporary views its query meant then (so
//! `CREATE TEMPORARY VIEW readings AS SELECT * FROM readings WHERE ...` narrows the table
//! `readings` instead of referring to itself). Stored views never see temporary views.
//!
//! A session run through a driver lives one statement; the client keeps its temporary views and
//! sends them with each statement as settings (see [`TemporaryView::setting`]).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::common::TableReference;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, Query, TableAlias, TableFactor, VisitMut, VisitorMut,
};
use quarry_core::schema::validate_identifier;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sql_planner::SqlPlanner;

/// The catalog that holds a session's temporary views.
pub const TEMPORARY_CATALOG: &str = "quarry_session";
/// Its one schema.
pub const TEMPORARY_SCHEMA: &str = "temporary";
/// Settings whose key starts with this carry a temporary view to a driver.
pub const TEMPORARY_VIEW_SETTING: &str = "quarry.temporary_view.";

/// One temporary view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemporaryView {
    pub name: String,
    /// The query, as written after `AS`.
    pub sql: String,
    /// The keyspace bare table names in the query resolve in: the one current when the view was
    /// created.
    pub keyspace: Option<String>,
    /// The temporary views the query's names meant when the view was created; other bare names
    /// are tables or views of `keyspace`.
    pub uses: Vec<String>,
}

impl TemporaryView {
    /// The view as a session setting, which a client sends with each statement to a driver.
    pub fn setting(&self) -> (String, String) {
        let value = serde_json::json!({
            "sql": self.sql,
            "keyspace": self.keyspace,
            "uses": self.uses,
        });
        (
            format!("{TEMPORARY_VIEW_SETTING}{}", self.name),
            value.to_string(),
        )
    }

    /// Reads back a [`setting`](Self::setting) whose key had `name` after the prefix.
    pub fn from_setting(name: &str, value: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Value {
            sql: String,
            keyspace: Option<String>,
            #[serde(default)]
            uses: Vec<String>,
        }
        let bad = |problem: String| Error::Statement {
            message: format!(
                "the session setting for temporary view '{name}' is not valid: {problem}"
            ),
        };
        validate_identifier("view", name).map_err(|e| bad(e.to_string()))?;
        let value: Value = serde_json::from_str(value).map_err(|e| bad(e.to_string()))?;
        if let Some(keyspace) = &value.keyspace {
            validate_identifier("keyspace", keyspace).map_err(|e| bad(e.to_string()))?;
        }
        Ok(TemporaryView {
            name: name.to_string(),
            sql: value.sql,
            keyspace: value.keyspace,
            uses: value.uses,
        })
    }
}

/// The temporary views of one session; clones share them.
#[derive(Debug, Clone, Default)]
pub struct TemporaryViews(Arc<Mutex<BTreeMap<String, TemporaryView>>>);

impl TemporaryViews {
    fn views(&self) -> MutexGuard<'_, BTreeMap<String, TemporaryView>> {
        // A panic while holding the lock leaves a plain map behind; it stays usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<TemporaryView> {
        self.views().get(name).cloned()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.views().contains_key(name)
    }

    /// Adds or replaces a view; returns the one it replaced.
    pub fn insert(&self, view: TemporaryView) -> Option<TemporaryView> {
        self.views().insert(view.name.clone(), view)
    }

    pub fn remove(&self, name: &str) -> Option<TemporaryView> {
        self.views().remove(name)
    }

    /// Every view, by name.
    pub fn list(&self) -> Vec<TemporaryView> {
        self.views().values().cloned().collect()
    }

    /// Points every bare table name of `statement` that is a temporary view (and not a CTE in
    /// scope) at [`TEMPORARY_CATALOG`], aliased to the name as written so that columns keep
    /// their qualifier. With `only`, just those views count. Returns the views it pointed at.
    pub(crate) fn rewrite(
        &self,
        statement: &mut DFStatement,
        normalize: bool,
        only: Option<&[String]>,
    ) -> Result<Vec<String>> {
        let names: Vec<String> = self
            .views()
            .keys()
            .filter(|n| only.is_none_or(|only| only.contains(n)))
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut rewriter = Rewriter {
            names,
            ctes_in_scope: Vec::new(),
            normalize,
            used: Vec::new(),
        };
        rewriter.statement(statement)?;
        Ok(rewriter.used)
    }
}

impl Rewriter {
    fn statement(&mut self, statement: &mut DFStatement) -> Result<()> {
        let flow = match statement {
            DFStatement::Statement(statement) => statement.visit(self),
            DFStatement::Explain(explain) => return self.statement(&mut explain.statement),
            DFStatement::CopyTo(copy) => match &mut copy.source {
                CopyToSource::Query(query) => query.visit(self),
                CopyToSource::Relation(_) => ControlFlow::Continue(()),
            },
            DFStatement::CreateExternalTable(_) | DFStatement::Reset(_) => {
                ControlFlow::Continue(())
            }
        };
        match flow {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(e) => Err(e.into()),
        }
    }
}

/// The visitor behind [`TemporaryViews::rewrite`]; CTE scoping follows DataFusion's own
/// `resolve_table_references`.
struct Rewriter {
    names: Vec<String>,
    ctes_in_scope: Vec<TableReference>,
    normalize: bool,
    used: Vec<String>,
}

impl Rewriter {
    fn reference(
        &self,
        name: &ObjectName,
    ) -> Result<TableReference, datafusion::error::DataFusionError> {
        object_name_to_table_reference(name.clone(), self.normalize)
    }
}

impl VisitorMut for Rewriter {
    type Break = datafusion::error::DataFusionError;

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<Self::Break> {
        if let Some(with) = &mut query.with {
            let recursive = with.recursive;
            for cte in &mut with.cte_tables {
                // A non-recursive CTE's own name is not in scope in its body.
                if !recursive {
                    cte.visit(self)?;
                }
                let name = ObjectName::from(vec![cte.alias.name.clone()]);
                match self.reference(&name) {
                    Ok(reference) => self.ctes_in_scope.push(reference),
                    Err(e) => return ControlFlow::Break(e),
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<Self::Break> {
        if let Some(with) = &query.with {
            for _ in &with.cte_tables {
                self.ctes_in_scope.pop();
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<Self::Break> {
        let TableFactor::Table {
            name, alias, args, ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        if args.is_some() || name.0.len() != 1 {
            return ControlFlow::Continue(());
        }
        let reference = match self.reference(name) {
            Ok(reference) => reference,
            Err(e) => return ControlFlow::Break(e),
        };
        if self.ctes_in_scope.contains(&reference)
            || !self.names.iter().any(|n| n == reference.table())
        {
            return ControlFlow::Continue(());
        }
        let written = match name.0.first().and_then(|part| part.as_ident()) {
            Some(ident) => ident.clone(),
            None => return ControlFlow::Continue(()),
        };
        if !self.used.iter().any(|u| u == reference.table()) {
            self.used.push(reference.table().to_string());
        }
        *name = ObjectName::from(vec![
            Ident::new(TEMPORARY_CATALOG),
            Ident::new(TEMPORARY_SCHEMA),
            Ident::with_quote('"', reference.table()),
        ]);
        if alias.is_none() {
            *alias = Some(TableAlias {
                explicit: true,
                name: written,
                columns: Vec::new(),
                at: None,
            });
        }
        ControlFlow::Continue(())
    }
}

/// The catalog of a session's temporary views, under [`TEMPORARY_CATALOG`].
#[derive(Debug)]
pub(crate) struct TemporaryCatalog {
    planner: SqlPlanner,
}

impl TemporaryCatalog {
    pub(crate) fn new(planner: SqlPlanner) -> Self {
        TemporaryCatalog { planner }
    }
}

impl CatalogProvider for TemporaryCatalog {
    fn schema_names(&self) -> Vec<String> {
        vec![TEMPORARY_SCHEMA.to_string()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        (name == TEMPORARY_SCHEMA).then(|| {
            Arc::new(TemporarySchema {
                planner: self.planner.clone(),
            }) as Arc<dyn SchemaProvider>
        })
    }
}

#[derive(Debug)]
struct TemporarySchema {
    planner: SqlPlanner,
}

#[async_trait]
impl SchemaProvider for TemporarySchema {
    fn table_names(&self) -> Vec<String> {
        self.planner
            .temporaries()
            .list()
            .into_iter()
            .map(|v| v.name)
            .collect()
    }

    async fn table(
        &self,
        name: &str,
    ) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        let Some(view) = self.planner.temporaries().get(name) else {
            return Ok(None);
        };
        Ok(Some(self.planner.temporary_view_table(&view).await?))
    }

    async fn table_type(&self, name: &str) -> datafusion::common::Result<Option<TableType>> {
        Ok(self
            .planner
            .temporaries()
            .contains(name)
            .then_some(TableType::View))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.planner.temporaries().contains(name)
    }
}
