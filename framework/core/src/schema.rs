//! The catalog's definitions: keyspaces and tables in CQL terms.
//!
//! A table's primary key is its partition key columns (hashed into the token that picks the
//! shard) followed by its clustering columns. Two rows with equal primary keys are one row: the
//! later write wins, as in CQL.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::cql_type::{CQL_TYPE_METADATA_KEY, CqlType};
use crate::error::{Error, Result};

/// The shard count of a keyspace whose DDL does not give one.
pub const DEFAULT_SHARDS: u32 = 800;
/// The replication factor of a keyspace whose DDL does not give one.
pub const DEFAULT_REPLICATION_FACTOR: u32 = 1;

/// A keyspace: a namespace for tables plus how its shards are placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceDef {
    pub name: String,
    /// Number of equal, contiguous token ranges (shards).
    pub shards: u32,
    /// How many nodes hold each shard.
    pub replication_factor: u32,
    /// Place the keyspace on this many of the cluster's nodes (all of them when `None`). The
    /// synthetic keyspace of derived results is a keyspace with a small `nodes`.
    pub nodes: Option<u32>,
}

impl KeyspaceDef {
    /// A keyspace with the defaults: 800 shards, replication 1, on every node.
    pub fn new(name: impl Into<String>) -> Self {
        KeyspaceDef {
            name: name.into(),
            shards: DEFAULT_SHARDS,
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            nodes: None,
        }
    }

    /// Checks the name and the numbers.
    pub fn validate(&self) -> Result<()> {
        validate_identifier("keyspace", &self.name)?;
        if self.shards == 0 || self.shards > 1 << 20 {
            return Err(Error::definition(format!(
                "keyspace '{}': shards must be between 1 and {}, got {}",
                self.name,
                1 << 20,
                self.shards
            )));
        }
        if self.replication_factor == 0 {
            return Err(Error::definition(format!(
                "keyspace '{}': replication_factor must be at least 1",
                self.name
            )));
        }
        if self.nodes == Some(0) {
            return Err(Error::definition(format!(
                "keyspace '{}': nodes must be at least 1 (leave it out to use every node)",
                self.name
            )));
        }
        Ok(())
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub cql_type: CqlType,
}

impl ColumnDef {
    pub fn new(name: impl Into<String>, cql_type: CqlType) -> Self {
        ColumnDef {
            name: name.into(),
            cql_type,
        }
    }
}

/// A table: columns and a primary key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    pub keyspace: String,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Partition key column names, in key order.
    pub partition_key: Vec<String>,
    /// Clustering column names, in key order.
    pub clustering: Vec<String>,
}

/// `keyspace.table`, the name users write.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableName {
    pub keyspace: String,
    pub table: String,
}

impl TableName {
    pub fn new(keyspace: impl Into<String>, table: impl Into<String>) -> Self {
        TableName {
            keyspace: keyspace.into(),
            table: table.into(),
        }
    }

    /// Parses `keyspace.table`; both parts are required.
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once('.') {
            Some((ks, t)) if !ks.is_empty() && !t.is_empty() && !t.contains('.') => {
                Ok(TableName::new(ks, t))
            }
            _ => Err(Error::definition(format!(
                "'{s}' is not a table name; write it as keyspace.table, for example iot.readings"
            ))),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.keyspace, self.table)
    }
}

impl TableDef {
    /// Builds and validates a table definition.
    pub fn new(
        keyspace: impl Into<String>,
        name: impl Into<String>,
        columns: Vec<ColumnDef>,
        partition_key: Vec<String>,
        clustering: Vec<String>,
    ) -> Result<Self> {
        let def = TableDef {
            keyspace: keyspace.into(),
            name: name.into(),
            columns,
            partition_key,
            clustering,
        };
        def.validate()?;
        Ok(def)
    }

    pub fn table_name(&self) -> TableName {
        TableName::new(&self.keyspace, &self.name)
    }

    /// Checks names, duplicates and that the primary key names existing columns of native types.
    pub fn validate(&self) -> Result<()> {
        validate_identifier("keyspace", &self.keyspace)?;
        validate_identifier("table", &self.name)?;
        let full = self.table_name();
        if self.columns.is_empty() {
            return Err(Error::definition(format!("table {full} has no columns")));
        }
        let mut seen = HashSet::new();
        for c in &self.columns {
            validate_identifier("column", &c.name)?;
            if !seen.insert(c.name.as_str()) {
                return Err(Error::definition(format!(
                    "table {full}: column '{}' is defined twice",
                    c.name
                )));
            }
        }
        if self.partition_key.is_empty() {
            return Err(Error::definition(format!(
                "table {full} needs a primary key: add PRIMARY KEY ((partition columns), clustering columns)"
            )));
        }
        let mut key_seen = HashSet::new();
        for name in self.partition_key.iter().chain(&self.clustering) {
            let column = self.column(name)?;
            if column.cql_type.is_collection() {
                return Err(Error::definition(format!(
                    "table {full}: primary-key column '{name}' is a {}; a key column holds one \
                     value of a native type (keep the collection as a regular column)",
                    column.cql_type
                )));
            }
            if !key_seen.insert(name.as_str()) {
                return Err(Error::definition(format!(
                    "table {full}: column '{name}' appears twice in the primary key"
                )));
            }
        }
        Ok(())
    }

    /// The column called `name`, or an error that lists the table's columns.
    pub fn column(&self, name: &str) -> Result<&ColumnDef> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| self.no_such_column(name))
    }

    /// Index of the column called `name` in [`Self::columns`].
    pub fn column_index(&self, name: &str) -> Result<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| self.no_such_column(name))
    }

    fn no_such_column(&self, name: &str) -> Error {
        Error::definition(format!(
            "table {} has no column '{name}'; columns are {}",
            self.table_name(),
            self.column_names().join(", ")
        ))
    }

    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// Indices of the partition-key columns, in key order.
    pub fn partition_key_indices(&self) -> Vec<usize> {
        self.indices_of(&self.partition_key)
    }

    /// Indices of the primary-key columns (partition key, then clustering), in key order.
    pub fn primary_key_indices(&self) -> Vec<usize> {
        let mut all = self.partition_key.clone();
        all.extend(self.clustering.iter().cloned());
        self.indices_of(&all)
    }

    fn indices_of(&self, names: &[String]) -> Vec<usize> {
        let positions: HashMap<&str, usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        // validate() guarantees every key column exists.
        names
            .iter()
            .filter_map(|n| positions.get(n.as_str()).copied())
            .collect()
    }

    /// CQL types of the partition-key columns, in key order.
    pub fn partition_key_types(&self) -> Vec<CqlType> {
        self.partition_key_indices()
            .into_iter()
            .map(|i| self.columns[i].cql_type)
            .collect()
    }

    /// The table's Arrow schema. Key columns are non-nullable; every field carries its CQL type in
    /// its metadata.
    pub fn arrow_schema(&self) -> SchemaRef {
        let key: HashSet<&str> = self
            .partition_key
            .iter()
            .chain(&self.clustering)
            .map(String::as_str)
            .collect();
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| {
                Field::new(
                    &c.name,
                    c.cql_type.arrow_type(),
                    !key.contains(c.name.as_str()),
                )
                .with_metadata(HashMap::from([(
                    CQL_TYPE_METADATA_KEY.to_string(),
                    c.cql_type.name().to_string(),
                )]))
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The `CREATE TABLE` statement that recreates this table.
    pub fn to_cql(&self) -> String {
        let mut out = format!("CREATE TABLE {} (\n", self.table_name());
        for c in &self.columns {
            out.push_str(&format!("    {} {},\n", c.name, c.cql_type));
        }
        let pk = if self.partition_key.len() == 1 {
            self.partition_key[0].clone()
        } else {
            format!("({})", self.partition_key.join(", "))
        };
        let mut key = vec![pk];
        key.extend(self.clustering.iter().cloned());
        out.push_str(&format!("    PRIMARY KEY ({})\n)", key.join(", ")));
        out
    }
}

/// A view: a named query, planned each time a statement names it, so it always reads the current
/// rows and tables. Table names in its query that have no keyspace are looked up in the view's own
/// keyspace. A view shares its keyspace's names with tables: no table and view have the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    pub keyspace: String,
    pub name: String,
    /// The query (`SELECT ...`), as written after `AS`.
    pub sql: String,
}

impl ViewDef {
    /// A checked view definition; the query is not planned here (the SQL layer does that).
    pub fn new(
        keyspace: impl Into<String>,
        name: impl Into<String>,
        sql: impl Into<String>,
    ) -> Result<Self> {
        let def = ViewDef {
            keyspace: keyspace.into(),
            name: name.into(),
            sql: sql.into(),
        };
        def.validate()?;
        Ok(def)
    }

    pub fn view_name(&self) -> TableName {
        TableName::new(&self.keyspace, &self.name)
    }

    /// Checks the names and that there is a query.
    pub fn validate(&self) -> Result<()> {
        validate_identifier("keyspace", &self.keyspace)?;
        validate_identifier("view", &self.name)?;
        if self.sql.trim().is_empty() {
            return Err(Error::definition(format!(
                "view {} has no query; write CREATE VIEW {} AS SELECT ...",
                self.view_name(),
                self.view_name()
            )));
        }
        Ok(())
    }

    /// The statement that creates this view.
    pub fn to_sql(&self) -> String {
        format!("CREATE VIEW {} AS {}", self.view_name(), self.sql)
    }
}

/// Identifiers are ASCII letters, digits and underscores, starting with a letter, as unquoted
/// CQL identifiers are; Quarry keeps them lowercase.
pub fn validate_identifier(kind: &str, name: &str) -> Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 48;
    if ok {
        Ok(())
    } else {
        Err(Error::definition(format!(
            "'{name}' is not a valid {kind} name: use at most 48 lowercase letters, digits and \
             underscores, starting with a letter"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_check_their_names_and_query() {
        let v = ViewDef::new("iot", "hot", "SELECT * FROM readings").unwrap();
        assert_eq!(v.view_name(), TableName::new("iot", "hot"));
        assert_eq!(v.to_sql(), "CREATE VIEW iot.hot AS SELECT * FROM readings");
        let e = ViewDef::new("iot", "Hot", "SELECT 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'Hot' is not a valid view name"), "{e}");
        let e = ViewDef::new("iot", "hot", "  ").unwrap_err().to_string();
        assert!(e.contains("has no query"), "{e}");
    }

    fn readings() -> TableDef {
        TableDef::new(
            "iot",
            "readings",
            vec![
                ColumnDef::new("device_id", CqlType::BigInt),
                ColumnDef::new("ts", CqlType::Timestamp),
                ColumnDef::new("sensor", CqlType::Text),
                ColumnDef::new("value", CqlType::Double),
            ],
            vec!["device_id".into()],
            vec!["ts".into(), "sensor".into()],
        )
        .unwrap()
    }

    #[test]
    fn key_indices_follow_key_order() {
        let t = readings();
        assert_eq!(t.partition_key_indices(), vec![0]);
        assert_eq!(t.primary_key_indices(), vec![0, 1, 2]);
        let schema = t.arrow_schema();
        assert!(!schema.field(0).is_nullable());
        assert!(schema.field(3).is_nullable());
        assert_eq!(
            schema
                .field(3)
                .metadata()
                .get(CQL_TYPE_METADATA_KEY)
                .unwrap(),
            "double"
        );
    }

    #[test]
    fn bad_definitions_say_what_is_wrong() {
        let err = TableDef::new(
            "iot",
            "t",
            vec![ColumnDef::new("a", CqlType::Int)],
            vec!["b".into()],
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("no column 'b'") && err.contains("columns are a"),
            "{err}"
        );

        let err = TableDef::new(
            "iot",
            "t",
            vec![ColumnDef::new("a", CqlType::Int)],
            vec!["a".into()],
            vec!["a".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("appears twice in the primary key"), "{err}");

        assert!(validate_identifier("table", "Readings").is_err());
        assert!(TableName::parse("readings").is_err());
        assert_eq!(
            TableName::parse("iot.readings").unwrap(),
            TableName::new("iot", "readings")
        );
    }

    #[test]
    fn cql_text_lists_the_primary_key() {
        let cql = readings().to_cql();
        assert!(cql.contains("PRIMARY KEY (device_id, ts, sensor)"), "{cql}");
    }
}
