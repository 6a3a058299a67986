//! The cluster's schema as Quarry's catalog, and Quarry's DDL as CQL.
//!
//! CQL types map to Arrow by the same table as the embedded store ([`CqlType`]). A column of a
//! type Quarry cannot hold yet (tuples, UDTs, vectors, collections of collections, counters,
//! varint, duration) makes its table unreadable with an error naming the column; the other tables
//! are unaffected.

use quarry_core::cql_type::CqlType;
use quarry_core::schema::{ColumnDef, KeyspaceDef, TableDef};
use scylla::cluster::metadata::{CollectionType, ColumnType, NativeType, Strategy, Table};

use crate::ScyllaOptions;

/// Keyspaces of the cluster itself, never listed.
pub fn is_system_keyspace(name: &str) -> bool {
    name.starts_with("system")
        || name == "dse_system"
        || name == "dse_security"
        || name == crate::overlay::CATALOG_KEYSPACE
}

/// Quarry's view of a cluster keyspace: its shards are Quarry's cut of the ring (the unit of
/// pruning and scheduling), its replication the strategy's factor (in the local datacenter, when
/// one is configured).
pub fn keyspace_def(name: &str, strategy: &Strategy, options: &ScyllaOptions) -> KeyspaceDef {
    let replication_factor = match strategy {
        Strategy::SimpleStrategy { replication_factor } => *replication_factor,
        Strategy::NetworkTopologyStrategy {
            datacenter_repfactors,
        } => match &options.local_dc {
            Some(dc) => datacenter_repfactors.get(dc).copied().unwrap_or(0),
            None => datacenter_repfactors.values().sum(),
        },
        _ => 1,
    };
    KeyspaceDef {
        name: name.to_string(),
        shards: options.shards,
        replication_factor: replication_factor.max(1) as u32,
        nodes: None,
    }
}

/// The CQL type Quarry holds a cluster column as, or why it cannot.
fn cql_type(t: &ColumnType<'_>) -> Result<CqlType, String> {
    let native = match t {
        ColumnType::Native(n) => n,
        // A frozen collection reads as the collection it freezes.
        ColumnType::Collection { typ, .. } => {
            let element = |e: &ColumnType<'_>| match e {
                ColumnType::Native(_) => cql_type(e),
                other => Err(format!(
                    "is a collection of {other:?}; Quarry reads collections of native types only"
                )),
            };
            let collection = match typ {
                CollectionType::List(e) => CqlType::list(element(e)?),
                CollectionType::Set(e) => CqlType::set(element(e)?),
                CollectionType::Map(k, v) => CqlType::map(element(k)?, element(v)?),
                other => {
                    return Err(format!(
                        "has a collection type Quarry does not know: {other:?}"
                    ));
                }
            };
            return collection.map_err(|e| format!("cannot be read: {e}"));
        }
        other => {
            return Err(format!(
                "has a tuple, vector or user-defined type ({other:?}), which Quarry cannot read yet"
            ));
        }
    };
    Ok(match native {
        NativeType::Ascii => CqlType::Ascii,
        NativeType::Boolean => CqlType::Boolean,
        NativeType::Blob => CqlType::Blob,
        NativeType::Date => CqlType::Date,
        // CQL decimals carry their own scale; Quarry holds them at plain `decimal`'s, and a value
        // with more fraction digits is an error when read, never rounded.
        NativeType::Decimal => CqlType::DECIMAL,
        NativeType::Double => CqlType::Double,
        NativeType::Float => CqlType::Float,
        NativeType::Int => CqlType::Int,
        NativeType::BigInt => CqlType::BigInt,
        NativeType::Text => CqlType::Text,
        NativeType::Timestamp => CqlType::Timestamp,
        NativeType::Inet => CqlType::Inet,
        NativeType::SmallInt => CqlType::SmallInt,
        NativeType::TinyInt => CqlType::TinyInt,
        NativeType::Time => CqlType::Time,
        NativeType::Timeuuid => CqlType::TimeUuid,
        NativeType::Uuid => CqlType::Uuid,
        other => {
            return Err(format!(
                "has CQL type {other:?}, which Quarry cannot hold (counter, varint and duration \
                 have no Arrow type in Quarry yet)"
            ));
        }
    })
}

/// A cluster table as a Quarry table: partition key, then clustering columns, then the others by
/// name (the order CQL's `SELECT *` returns).
pub fn table_def(keyspace: &str, name: &str, table: &Table) -> Result<TableDef, String> {
    let mut names: Vec<&String> = table.partition_key.iter().collect();
    names.extend(&table.clustering_key);
    let mut regular: Vec<&String> = table
        .columns
        .keys()
        .filter(|c| !names.contains(c))
        .collect();
    regular.sort();
    names.extend(regular);
    let columns = names
        .into_iter()
        .map(|c| {
            let t = cql_type(&table.columns[c].typ)
                .map_err(|problem| format!("column {c} of {keyspace}.{name} {problem}"))?;
            Ok(ColumnDef::new(c.clone(), t))
        })
        .collect::<Result<Vec<_>, String>>()?;
    TableDef::new(
        keyspace,
        name,
        columns,
        table.partition_key.clone(),
        table.clustering_key.clone(),
    )
    .map_err(|e| format!("{keyspace}.{name}: {e}"))
}

/// `"name"`, with quotes doubled: every identifier Quarry sends is quoted, so case survives.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `CREATE KEYSPACE` for a keyspace definition: SimpleStrategy, or NetworkTopologyStrategy in
/// the local datacenter when one is configured.
pub fn create_keyspace_cql(
    def: &KeyspaceDef,
    if_not_exists: bool,
    options: &ScyllaOptions,
) -> String {
    let replication = match &options.local_dc {
        Some(dc) => format!(
            "{{'class': 'NetworkTopologyStrategy', '{}': {}}}",
            dc.replace('\'', "''"),
            def.replication_factor
        ),
        None => format!(
            "{{'class': 'SimpleStrategy', 'replication_factor': {}}}",
            def.replication_factor
        ),
    };
    format!(
        "CREATE KEYSPACE {}{} WITH replication = {replication}",
        if if_not_exists { "IF NOT EXISTS " } else { "" },
        quote(&def.name)
    )
}

/// `CREATE TABLE` in plain CQL (a `decimal(p, s)` column is a CQL `decimal`).
pub fn create_table_cql(def: &TableDef, if_not_exists: bool) -> String {
    let columns: Vec<String> = def
        .columns
        .iter()
        .map(|c| format!("{} {}", quote(&c.name), c.cql_type.cql_name()))
        .collect();
    let partition: Vec<String> = def.partition_key.iter().map(|c| quote(c)).collect();
    let mut key = vec![format!("({})", partition.join(", "))];
    key.extend(def.clustering.iter().map(|c| quote(c)));
    format!(
        "CREATE TABLE {}{}.{} ({}, PRIMARY KEY ({}))",
        if if_not_exists { "IF NOT EXISTS " } else { "" },
        quote(&def.keyspace),
        quote(&def.name),
        columns.join(", "),
        key.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_is_plain_cql_with_quoted_names() {
        let def = TableDef::new(
            "shop",
            "orders",
            vec![
                ColumnDef::new("customer", CqlType::BigInt),
                ColumnDef::new("ts", CqlType::Timestamp),
                ColumnDef::new("amount", CqlType::decimal(15, 2).unwrap()),
                ColumnDef::new(
                    "tags",
                    CqlType::map(CqlType::Text, CqlType::DECIMAL).unwrap(),
                ),
            ],
            vec!["customer".into()],
            vec!["ts".into()],
        )
        .unwrap();
        assert_eq!(
            create_table_cql(&def, true),
            "CREATE TABLE IF NOT EXISTS \"shop\".\"orders\" (\"customer\" bigint, \"ts\" \
             timestamp, \"amount\" decimal, \"tags\" map<text, decimal>, PRIMARY KEY ((\"customer\"), \"ts\"))"
        );
        let options = ScyllaOptions {
            local_dc: Some("analytics".into()),
            ..ScyllaOptions::default()
        };
        let mut ks = KeyspaceDef::new("synth");
        ks.replication_factor = 2;
        assert_eq!(
            create_keyspace_cql(&ks, false, &options),
            "CREATE KEYSPACE \"synth\" WITH replication = {'class': \
             'NetworkTopologyStrategy', 'analytics': 2}"
        );
    }
}
