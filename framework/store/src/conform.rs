//! What every store checks before it writes: the batches have the table's columns and types,
//! key columns hold no NULLs, and values of text-held CQL types (uuid, timeuuid, inet, ascii) are
//! valid and in canonical form, so every store refuses the same rows with the same message.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use quarry_core::cql_type::{CqlType, canonical_text};
use quarry_core::schema::TableDef;

use crate::error::{Error, Result};

/// Checks that `batches` have the table's columns and types and that key columns hold no NULLs,
/// and puts values of text-held CQL types (uuid, timeuuid, inet, ascii) in canonical form.
pub fn conform_batches(table: &TableDef, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    check_batches(table, &batches)?;
    let text_held: Vec<(usize, CqlType)> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            matches!(
                c.cql_type,
                CqlType::Uuid | CqlType::TimeUuid | CqlType::Inet | CqlType::Ascii
            )
        })
        .map(|(i, c)| (i, c.cql_type))
        .collect();
    if text_held.is_empty() {
        return Ok(batches);
    }
    batches
        .into_iter()
        .map(|batch| {
            let mut columns = batch.columns().to_vec();
            for &(i, cql_type) in &text_held {
                let values = columns[i].as_string::<i32>();
                let mut changed = false;
                let mut out = Vec::with_capacity(values.len());
                for (row, value) in values.iter().enumerate() {
                    out.push(match value {
                        None => None,
                        Some(text) => match canonical_text(cql_type, text) {
                            Ok(Cow::Borrowed(t)) => Some(t.to_string()),
                            Ok(Cow::Owned(t)) => {
                                changed = true;
                                Some(t)
                            }
                            Err(problem) => {
                                return Err(Error::SchemaMismatch {
                                    table: table.table_name().to_string(),
                                    problem: format!(
                                        "column '{}' ({cql_type}) at row {row}: '{text}' {problem}",
                                        table.columns[i].name
                                    ),
                                });
                            }
                        },
                    });
                }
                if changed {
                    columns[i] = Arc::new(StringArray::from(out));
                }
            }
            Ok(RecordBatch::try_new(batch.schema(), columns)?)
        })
        .collect()
}

/// Checks that `batches` have the table's columns and types, and that key columns hold no NULLs.
pub fn check_batches(table: &TableDef, batches: &[RecordBatch]) -> Result<()> {
    let expected = table.arrow_schema();
    let mismatch = |problem: String| Error::SchemaMismatch {
        table: table.table_name().to_string(),
        problem,
    };
    for batch in batches {
        let schema = batch.schema();
        if schema.fields().len() != expected.fields().len() {
            return Err(mismatch(format!(
                "expected {} columns ({}), got {}",
                expected.fields().len(),
                table.column_names().join(", "),
                schema.fields().len()
            )));
        }
        for (got, want) in schema.fields().iter().zip(expected.fields()) {
            if got.name() != want.name() || got.data_type() != want.data_type() {
                return Err(mismatch(format!(
                    "expected column '{}' of type {}, got '{}' of type {}",
                    want.name(),
                    want.data_type(),
                    got.name(),
                    got.data_type()
                )));
            }
        }
        for i in table.primary_key_indices() {
            let column = batch.column(i);
            if column.null_count() > 0 {
                let row = (0..column.len()).find(|&r| column.is_null(r)).unwrap_or(0);
                return Err(mismatch(format!(
                    "primary-key column '{}' is NULL at row {row}; every row needs its full primary key",
                    table.columns[i].name
                )));
            }
        }
    }
    Ok(())
}
