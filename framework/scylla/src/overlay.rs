//! What Quarry's catalog says beyond CQL's schema, kept in the cluster itself.
//!
//! A CQL schema has no place for a keyspace's shard count, a column's declared position (regular
//! columns come back in alphabetical order), a `decimal(p, s)`'s precision and scale, or a view
//! that is a named SQL query. Quarry keeps those in one table of its own keyspace:
//!
//! ```text
//!   quarry_catalog.objects (keyspace_name, kind, name, definition)   kind: keyspace | table | view
//!                           definition: the JSON Quarry's catalog holds; '' once dropped
//! ```
//!
//! The cluster's schema stays the truth for what exists and for its CQL types: a table's entry
//! is used only while it agrees with the table the cluster has (same columns, keys and CQL types),
//! so a table re-created by another tool is read as the cluster describes it. Dropping writes an
//! empty definition rather than a CQL `DELETE`, so the same statements work on every CQL server.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use quarry_core::schema::{KeyspaceDef, TableDef, TableName, ViewDef};
use quarry_store::Result;
use scylla::client::session::Session;

use crate::catalog::quote;
use crate::errors;

/// Quarry's own keyspace on a cluster; never listed.
pub const CATALOG_KEYSPACE: &str = "quarry_catalog";
const OBJECTS: &str = "objects";

#[derive(Debug, Default, Clone)]
pub struct Overlay {
    pub keyspaces: BTreeMap<String, KeyspaceDef>,
    pub tables: BTreeMap<TableName, TableDef>,
    pub views: BTreeMap<TableName, ViewDef>,
}

/// One kind of catalog object.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Keyspace,
    Table,
    View,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Keyspace => "keyspace",
            Kind::Table => "table",
            Kind::View => "view",
        }
    }
}

impl Overlay {
    /// Reads every entry; an empty overlay when Quarry has not written to this cluster yet.
    pub async fn load(session: &Session) -> Result<Overlay> {
        let state = session.get_cluster_state();
        let exists = state
            .get_keyspace(CATALOG_KEYSPACE)
            .is_some_and(|ks| ks.tables.contains_key(OBJECTS));
        let mut overlay = Overlay::default();
        if !exists {
            return Ok(overlay);
        }
        let text = format!(
            "SELECT keyspace_name, kind, name, definition FROM {CATALOG_KEYSPACE}.{OBJECTS}"
        );
        let what = "reading Quarry's catalog";
        let mut rows = session
            .query_iter(text, &[])
            .await
            .map_err(|e| errors::other(what, e))?
            .rows_stream::<(String, String, String, Option<String>)>()
            .map_err(|e| errors::other(what, e))?;
        while let Some((keyspace, kind, name, definition)) =
            rows.try_next().await.map_err(|e| errors::other(what, e))?
        {
            let Some(definition) = definition.filter(|d| !d.is_empty()) else {
                continue;
            };
            let bad = |e: serde_json::Error| {
                tracing::warn!("ignoring Quarry's catalog entry {kind} {keyspace}.{name}: {e}");
            };
            match kind.as_str() {
                "keyspace" => match serde_json::from_str::<KeyspaceDef>(&definition) {
                    Ok(def) => {
                        overlay.keyspaces.insert(keyspace, def);
                    }
                    Err(e) => bad(e),
                },
                "table" => match serde_json::from_str::<TableDef>(&definition) {
                    Ok(def) => {
                        overlay.tables.insert(def.table_name(), def);
                    }
                    Err(e) => bad(e),
                },
                "view" => match serde_json::from_str::<ViewDef>(&definition) {
                    Ok(def) => {
                        overlay.views.insert(def.view_name(), def);
                    }
                    Err(e) => bad(e),
                },
                _ => {}
            }
        }
        Ok(overlay)
    }

    /// The declared definition of `derived` (the table as the cluster describes it), when the
    /// overlay's entry still describes the same table.
    pub fn table(&self, derived: &TableDef) -> Option<&TableDef> {
        let declared = self.tables.get(&derived.table_name())?;
        let same_keys = declared.partition_key == derived.partition_key
            && declared.clustering == derived.clustering;
        let same_columns = declared.columns.len() == derived.columns.len()
            && declared.columns.iter().all(|c| {
                derived
                    .columns
                    .iter()
                    .any(|d| d.name == c.name && d.cql_type.cql_name() == c.cql_type.cql_name())
            });
        (same_keys && same_columns).then_some(declared)
    }
}

/// Creates Quarry's catalog keyspace and table when missing (`replication` as for any keyspace).
pub async fn ensure(session: &Session, replication: &str) -> Result<()> {
    let state = session.get_cluster_state();
    if state
        .get_keyspace(CATALOG_KEYSPACE)
        .is_some_and(|ks| ks.tables.contains_key(OBJECTS))
    {
        return Ok(());
    }
    for text in [
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {CATALOG_KEYSPACE} WITH replication = {replication}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {CATALOG_KEYSPACE}.{OBJECTS} (keyspace_name text, kind \
             text, name text, definition text, PRIMARY KEY ((keyspace_name), kind, name))"
        ),
    ] {
        session
            .query_unpaged(text.as_str(), &[])
            .await
            .map_err(|e| errors::execution(&format!("running `{text}`"), e))?;
    }
    session
        .await_schema_agreement()
        .await
        .map_err(|e| errors::other("waiting for the cluster to agree on the schema", e))?;
    session
        .refresh_metadata()
        .await
        .map_err(|e| errors::other("reading the cluster's schema", e))?;
    Ok(())
}

/// Writes one entry (`None`: dropped).
pub async fn put(
    session: &Session,
    kind: Kind,
    keyspace: &str,
    name: &str,
    definition: Option<String>,
) -> Result<()> {
    let text = format!(
        "INSERT INTO {CATALOG_KEYSPACE}.{OBJECTS} (keyspace_name, kind, name, definition) VALUES \
         (?, ?, ?, ?)"
    );
    session
        .query_unpaged(
            text,
            (keyspace, kind.name(), name, definition.unwrap_or_default()),
        )
        .await
        .map_err(|e| {
            errors::execution(
                &format!(
                    "recording {} {} in Quarry's catalog",
                    kind.name(),
                    if name.is_empty() {
                        quote(keyspace)
                    } else {
                        format!("{keyspace}.{name}")
                    }
                ),
                e,
            )
        })?;
    Ok(())
}
