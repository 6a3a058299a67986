//! What a format reader hands on: rows as the input holds them, not yet in the table's types.

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Value};

use crate::error::Position;
use crate::problem::Problem;

/// A batch of an input's rows with their columns as read (all text for CSV and NDJSON, the file's
/// own types for Parquet), plus the records that could not become rows at all.
#[derive(Debug)]
pub(crate) struct RawChunk {
    /// The input's columns, named as the input names them.
    pub batch: RecordBatch,
    /// For each table column, the index of the column of `batch` that holds it (`None`: NULL).
    pub sources: Vec<Option<usize>>,
    /// Where each row of `batch` is in the input.
    pub positions: Positions,
    /// Records set aside by the reader, in input order.
    pub flawed: Vec<FlawedRecord>,
    /// Records consumed from the input for this chunk: rows plus flawed records.
    pub records: u64,
}

impl RawChunk {
    /// What a live stream that has nothing new yet gives: no records.
    pub fn paused(sources: Vec<Option<usize>>) -> RawChunk {
        RawChunk {
            batch: RecordBatch::new_empty(std::sync::Arc::new(arrow::datatypes::Schema::empty())),
            sources,
            positions: Positions::Lines(Vec::new()),
            flawed: Vec::new(),
            records: 0,
        }
    }
}

/// Where the rows of a [`RawChunk`] are in their input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Positions {
    /// The line of each row (text formats).
    Lines(Vec<u64>),
    /// Consecutive rows, the first being 1-based row `first` (Parquet).
    Rows { first: u64 },
}

impl Positions {
    pub fn get(&self, row: usize) -> Position {
        match self {
            Positions::Lines(lines) => Position::Line(lines[row]),
            Positions::Rows { first } => Position::Row(first + row as u64),
        }
    }
}

/// A record that could not be made into a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FlawedRecord {
    pub position: Position,
    pub problem: Problem,
}

/// Row `row` of `batch` as column name to text (NULL as JSON null), for reject records.
pub(crate) fn record_of(batch: &RecordBatch, row: usize) -> Map<String, Value> {
    let schema = batch.schema();
    schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            let value = if column.is_null(row) {
                Value::Null
            } else {
                Value::String(value_text(column, row))
            };
            (field.name().clone(), value)
        })
        .collect()
}

/// The text of one non-null value, as a message quotes it.
pub(crate) fn value_text(column: &ArrayRef, row: usize) -> String {
    if let Some(strings) = column.as_any().downcast_ref::<StringArray>() {
        return strings.value(row).to_string();
    }
    match ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()) {
        Ok(formatter) => formatter.value(row).to_string(),
        Err(_) => format!("<{} value>", column.data_type()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn records_are_text_by_column_name() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("Name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(Int64Array::from(vec![None, Some(42)])),
            ],
        )
        .unwrap();
        let first = record_of(&batch, 0);
        assert_eq!(first["Name"], Value::String("a".into()));
        assert_eq!(first["n"], Value::Null);
        let second = record_of(&batch, 1);
        assert_eq!(second["n"], Value::String("42".into()));
        assert_eq!(Positions::Rows { first: 11 }.get(2), Position::Row(13));
        assert_eq!(Positions::Lines(vec![2, 5]).get(1), Position::Line(5));
    }
}
