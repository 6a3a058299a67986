//! The keyspace and its eight tables, as Quarry's CQL DDL.

use crate::money::MONEY;

/// The keyspace that holds the TPC-H tables.
pub const KEYSPACE: &str = "tpch";

/// The session setting under which Quarry resolves the queries' unqualified table names
/// (`lineitem`) in [`KEYSPACE`].
pub const DEFAULT_SCHEMA: (&str, &str) = ("datafusion.catalog.default_schema", KEYSPACE);

/// The tables' DDL as the specification types them (money as `decimal(15,2)`).
const TABLES_CQL: &str = include_str!("../tables.cql");

/// The statements that create [`KEYSPACE`] with `shards` shards and the eight tables in it,
/// money columns typed as [`MONEY`] says.
pub fn create_statements(shards: u32) -> Vec<String> {
    let mut statements = vec![format!("CREATE KEYSPACE {KEYSPACE} WITH shards = {shards}")];
    let tables: String = TABLES_CQL
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("decimal(15,2)", MONEY.cql_type());
    statements.extend(
        tables
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    );
    statements
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Table;

    #[test]
    fn there_is_a_keyspace_and_one_table_per_tpch_table() {
        let statements = create_statements(64);
        assert_eq!(statements[0], "CREATE KEYSPACE tpch WITH shards = 64");
        assert_eq!(statements.len(), 1 + Table::ALL.len());
        for table in Table::ALL {
            let create = format!("CREATE TABLE tpch.{} (", table.name());
            assert!(
                statements.iter().any(|s| s.starts_with(&create)),
                "{create}"
            );
        }
        let lineitem = statements.last().unwrap();
        assert!(
            lineitem.contains(&format!("l_extendedprice {},", MONEY.cql_type())),
            "{lineitem}"
        );
        assert!(lineitem.contains("PRIMARY KEY ((l_orderkey), l_linenumber)"));
    }
}
