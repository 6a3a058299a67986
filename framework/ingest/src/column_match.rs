//! Matching an input's column names to a table's columns.
//!
//! A name matches a table column exactly, or else ignoring ASCII case and surrounding spaces
//! (`Device_ID` loads into `device_id`). A name that matches nothing is an error that lists the
//! table's columns, because a misspelt column would otherwise load as NULLs.

use quarry_core::schema::TableDef;

use crate::error::{Error, KeyKind, Location, Result};

/// Which table column `name` stands for, if any.
pub(crate) fn table_column_for(table: &TableDef, name: &str) -> Option<usize> {
    let trimmed = name.trim();
    table
        .columns
        .iter()
        .position(|c| c.name == trimmed)
        .or_else(|| {
            table
                .columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(trimmed))
        })
}

/// For each table column, the index of the input column that holds it (`None`: the input lacks
/// it and it loads as NULL).
///
/// Fails on an input column the table lacks, on two input columns naming one table column and,
/// when `require_keys`, on a primary-key column the input lacks.
pub(crate) fn match_columns(
    at: &Location,
    names: &[&str],
    table: &TableDef,
    require_keys: bool,
) -> Result<Vec<Option<usize>>> {
    let mut sources: Vec<Option<usize>> = vec![None; table.columns.len()];
    for (i, name) in names.iter().enumerate() {
        let Some(column) = table_column_for(table, name) else {
            return Err(unknown_column(at.clone(), name, table));
        };
        if let Some(first) = sources[column] {
            return Err(Error::DuplicateColumn {
                at: at.clone(),
                column: table.columns[column].name.clone(),
                first: names[first].to_string(),
                second: name.to_string(),
            });
        }
        sources[column] = Some(i);
    }
    if require_keys {
        for (column, kind) in key_columns(table) {
            if sources[column].is_none() {
                return Err(Error::MissingKeyColumn {
                    input: at.input.clone(),
                    column: table.columns[column].name.clone(),
                    kind,
                    table: table.table_name().to_string(),
                });
            }
        }
    }
    Ok(sources)
}

/// The error for an input column the table does not have.
pub(crate) fn unknown_column(at: Location, name: &str, table: &TableDef) -> Error {
    Error::UnknownColumn {
        at,
        column: name.to_string(),
        table: table.table_name().to_string(),
        columns: table.column_names().join(", "),
    }
}

/// The primary-key columns' indices with their kind, in key order.
pub(crate) fn key_columns(table: &TableDef) -> Vec<(usize, KeyKind)> {
    let partition = table.partition_key_indices();
    let all = table.primary_key_indices();
    all.into_iter()
        .map(|i| {
            let kind = if partition.contains(&i) {
                KeyKind::PartitionKey
            } else {
                KeyKind::Clustering
            };
            (i, kind)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use quarry_core::cql_type::CqlType;
    use quarry_core::schema::ColumnDef;

    use super::*;

    fn readings() -> TableDef {
        TableDef::new(
            "iot",
            "readings",
            vec![
                ColumnDef::new("device_id", CqlType::BigInt),
                ColumnDef::new("ts", CqlType::Timestamp),
                ColumnDef::new("sensor", CqlType::Text),
                ColumnDef::new("value", CqlType::Double),
                ColumnDef::new("status", CqlType::Text),
            ],
            vec!["device_id".into()],
            vec!["ts".into()],
        )
        .unwrap()
    }

    #[test]
    fn names_match_exactly_then_ignoring_case() {
        let at = Location::input("r.csv");
        let m = match_columns(&at, &["value", "TS", " Device_ID "], &readings(), true).unwrap();
        assert_eq!(m, vec![Some(2), Some(1), None, Some(0), None]);
    }

    #[test]
    fn unknown_columns_list_the_table_columns() {
        let at = Location::input("readings.csv");
        let err = match_columns(&at, &["device_id", "ts", "temprature"], &readings(), true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "readings.csv: column 'temprature' is not in table iot.readings; columns are \
             device_id, ts, sensor, value, status"
        );
    }

    #[test]
    fn missing_key_columns_and_duplicates_are_errors() {
        let at = Location::input("r.csv");
        let err = match_columns(&at, &["device_id", "value"], &readings(), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no column 'ts', a clustering column"), "{err}");
        assert!(match_columns(&at, &["device_id", "value"], &readings(), false).is_ok());

        let err = match_columns(&at, &["value", "VALUE"], &readings(), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'value' and 'VALUE' both name column 'value'"),
            "{err}"
        );
    }
}
