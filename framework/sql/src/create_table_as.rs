//! `CREATE TABLE ks.t (PRIMARY KEY (...)) AS query`: a table's definition from a query's columns.
//!
//! ```text
//!   query ──plan──▶ Arrow schema ──column_types──▶ TableDef (+ the key as written) ──▶ store
//!                                                         then INSERT INTO ks.t query
//! ```
//!
//! A column keeps the CQL type its field says it has (a `uuid` column read from a table stays a
//! `uuid`); any other takes the CQL type that holds its Arrow type. Types without one (lists,
//! structs, intervals) are refused with the column's name and a hint to cast it.

use arrow::datatypes::{DataType, Schema};
use quarry_core::cql_type::{CQL_TYPE_METADATA_KEY, CqlType};
use quarry_core::schema::{ColumnDef, TableDef, TableName, validate_identifier};

use crate::error::{Error, Result};

/// The definition of table `name` for a query of `schema`: `columns` when the statement listed
/// them (their count must match the query's), else the query's own.
pub(crate) fn table_def(
    name: &TableName,
    columns: Vec<ColumnDef>,
    partition_key: Vec<String>,
    clustering: Vec<String>,
    schema: &Schema,
) -> Result<TableDef> {
    let columns = if columns.is_empty() {
        schema
            .fields()
            .iter()
            .map(|field| {
                validate_identifier("column", field.name()).map_err(|_| Error::Statement {
                    message: format!(
                        "the query's column '{}' cannot name a column of {name}: name it with \
                         AS (lowercase letters, digits and underscores, starting with a letter)",
                        field.name()
                    ),
                })?;
                // A decimal keeps the precision and scale of its values, not plain decimal's.
                let cql_type = field
                    .metadata()
                    .get(CQL_TYPE_METADATA_KEY)
                    .and_then(|t| t.parse::<CqlType>().ok())
                    .filter(|t| !matches!(t, CqlType::Decimal { .. }))
                    .or_else(|| cql_type_of(field.data_type()))
                    .ok_or_else(|| Error::Statement {
                        message: format!(
                            "the query's column '{}' has type {}, which no CQL type holds; cast it \
                             in the query, for example CAST(... AS VARCHAR)",
                            field.name(),
                            field.data_type()
                        ),
                    })?;
                Ok(ColumnDef::new(field.name(), cql_type))
            })
            .collect::<Result<Vec<_>>>()?
    } else if columns.len() != schema.fields().len() {
        return Err(Error::Statement {
            message: format!(
                "CREATE TABLE {name} lists {} columns but its query returns {}; list as many, \
                 or list only the PRIMARY KEY and let the query give the columns",
                columns.len(),
                schema.fields().len()
            ),
        });
    } else {
        columns
    };
    Ok(TableDef::new(
        &name.keyspace,
        &name.table,
        columns,
        partition_key,
        clustering,
    )?)
}

/// The CQL type that holds values of an Arrow type, if there is one. Unsigned integers take the
/// next wider signed type (a `UInt64` takes `bigint`; values past its range fail the insert).
pub(crate) fn cql_type_of(data_type: &DataType) -> Option<CqlType> {
    let name = match data_type {
        DataType::Decimal32(precision, scale)
        | DataType::Decimal64(precision, scale)
        | DataType::Decimal128(precision, scale)
        | DataType::Decimal256(precision, scale) => {
            return CqlType::decimal(*precision, *scale).ok();
        }
        DataType::Boolean => "boolean",
        DataType::Int8 => "tinyint",
        DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "int",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint",
        DataType::Float16 | DataType::Float32 => "float",
        DataType::Float64 => "double",
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "text",
        DataType::Binary
        | DataType::BinaryView
        | DataType::LargeBinary
        | DataType::FixedSizeBinary(_) => "blob",
        DataType::Timestamp(..) => "timestamp",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Time32(_) | DataType::Time64(_) => "time",
        DataType::Dictionary(_, value) => return cql_type_of(value),
        _ => return None,
    };
    // By name, so that this keeps up with the CQL types without naming their variants.
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow::datatypes::{Field, TimeUnit};

    use super::*;

    #[test]
    fn columns_come_from_the_query_with_their_cql_types() {
        let uuid = Field::new("id", DataType::Utf8View, false).with_metadata(HashMap::from([(
            CQL_TYPE_METADATA_KEY.to_string(),
            "uuid".to_string(),
        )]));
        let schema = Schema::new(vec![
            uuid,
            Field::new("n", DataType::Int64, false),
            Field::new("at", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ]);
        let name = TableName::new("ks", "t");
        let def = table_def(&name, Vec::new(), vec!["id".into()], vec![], &schema).unwrap();
        let types: Vec<CqlType> = def.columns.iter().map(|c| c.cql_type).collect();
        assert_eq!(types, [CqlType::Uuid, CqlType::BigInt, CqlType::Timestamp]);

        let bad = Schema::new(vec![Field::new("count(*)", DataType::Int64, false)]);
        let e = table_def(&name, Vec::new(), vec!["x".into()], vec![], &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("column 'count(*)'") && e.contains("AS"), "{e}");

        let list = Schema::new(vec![Field::new(
            "l",
            DataType::new_list(DataType::Int32, true),
            true,
        )]);
        let e = table_def(&name, Vec::new(), vec!["l".into()], vec![], &list)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no CQL type holds"), "{e}");

        let e = table_def(
            &name,
            vec![ColumnDef::new("id", CqlType::Text)],
            vec!["id".into()],
            vec![],
            &schema,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lists 1 columns but its query returns 3"), "{e}");
    }
}
