//! The store as a DataFusion catalog: keyspaces are schemas; tables are [`StoreTable`]s and views
//! are DataFusion `ViewTable`s, planned from their SQL each time a statement names them.
//!
//! Lookups go to the store each time, so DDL run through any session is visible at once.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::common::Result;
use datafusion::datasource::{TableProvider, TableType};
use quarry_core::schema::TableName;

use crate::sql_planner::SqlPlanner;
use crate::table::StoreTable;

/// The catalog name under which the store is registered.
pub const CATALOG: &str = "quarry";

/// Keyspaces of a store.
#[derive(Debug)]
pub struct StoreCatalog {
    planner: SqlPlanner,
}

impl StoreCatalog {
    pub(crate) fn new(planner: SqlPlanner) -> Self {
        StoreCatalog { planner }
    }
}

impl CatalogProvider for StoreCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.planner
            .store()
            .keyspaces()
            .into_iter()
            .map(|k| k.name)
            .collect()
    }

    /// Any name resolves, so that a query naming a missing keyspace or table gets the store's
    /// own message (which lists what exists) rather than a bare "not found".
    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        Some(Arc::new(KeyspaceSchema {
            planner: self.planner.clone(),
            keyspace: name.to_string(),
        }))
    }
}

/// Tables and views of one keyspace.
#[derive(Debug)]
pub struct KeyspaceSchema {
    planner: SqlPlanner,
    keyspace: String,
}

impl KeyspaceSchema {
    fn name(&self, name: &str) -> TableName {
        TableName::new(&self.keyspace, name)
    }
}

#[async_trait]
impl SchemaProvider for KeyspaceSchema {
    fn table_names(&self) -> Vec<String> {
        let store = self.planner.store();
        let tables = store.tables(Some(&self.keyspace)).unwrap_or_default();
        let views = store.views(Some(&self.keyspace)).unwrap_or_default();
        let mut names: Vec<String> = tables
            .into_iter()
            .map(|t| t.name)
            .chain(views.into_iter().map(|v| v.name))
            .collect();
        names.sort();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let name = self.name(name);
        let store = self.planner.store();
        if let Ok(def) = store.table(&name) {
            return Ok(Some(Arc::new(StoreTable::new(store.clone(), def))));
        }
        match store.view(&name) {
            Ok(def) => Ok(Some(self.planner.stored_view_table(&def).await?)),
            Err(_) => Ok(None),
        }
    }

    /// Without planning views, for listings such as `information_schema.tables`.
    async fn table_type(&self, name: &str) -> Result<Option<TableType>> {
        let name = self.name(name);
        let store = self.planner.store();
        Ok(if store.table(&name).is_ok() {
            Some(TableType::Base)
        } else if store.view(&name).is_ok() {
            Some(TableType::View)
        } else {
            None
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        let name = self.name(name);
        let store = self.planner.store();
        store.table(&name).is_ok() || store.view(&name).is_ok()
    }
}
