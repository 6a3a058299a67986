//! The store as a DataFusion catalog: keyspaces are schemas, tables are [`StoreTable`]s.
//!
//! Lookups go to the store each time, so DDL run through any session is visible at once.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::common::Result;
use datafusion::datasource::TableProvider;
use quarry_core::schema::TableName;
use quarry_store::Store;

use crate::table::StoreTable;

/// The catalog name under which the store is registered.
pub const CATALOG: &str = "quarry";

/// Keyspaces of a store.
#[derive(Debug)]
pub struct StoreCatalog {
    store: Arc<dyn Store>,
}

impl StoreCatalog {
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreCatalog { store }
    }
}

impl CatalogProvider for StoreCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.store.keyspaces().into_iter().map(|k| k.name).collect()
    }

    /// Any name resolves, so that a query naming a missing keyspace or table gets the store's
    /// own message (which lists what exists) rather than a bare "not found".
    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        Some(Arc::new(KeyspaceSchema {
            store: self.store.clone(),
            keyspace: name.to_string(),
        }))
    }
}

/// Tables of one keyspace.
#[derive(Debug)]
pub struct KeyspaceSchema {
    store: Arc<dyn Store>,
    keyspace: String,
}

#[async_trait]
impl SchemaProvider for KeyspaceSchema {
    fn table_names(&self) -> Vec<String> {
        self.store
            .tables(Some(&self.keyspace))
            .map(|tables| tables.into_iter().map(|t| t.name).collect())
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let name = TableName::new(&self.keyspace, name);
        Ok(self.store.table(&name).ok().map(|def| {
            Arc::new(StoreTable::new(self.store.clone(), def)) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.store
            .table(&TableName::new(&self.keyspace, name))
            .is_ok()
    }
}
