//! Fixtures shared by the integration tests: tables, input files and a way to read cells back.

#![allow(dead_code)] // Each test binary uses a different part of the fixtures.

use std::path::PathBuf;

use arrow::array::Array;
use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use quarry_core::cql_type::CqlType;
use quarry_core::schema::{ColumnDef, TableDef};
use quarry_ingest::{ReadOptions, Result, Source, SourceData, read_source};
use tempfile::TempDir;

/// `iot.readings`: partition key `device_id`, clustering `ts`.
pub fn readings() -> TableDef {
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
    .expect("valid table")
}

/// `test.every_type`: one column of every CQL type; partition key `id` (uuid), clustering `k`.
pub fn every_type() -> TableDef {
    let columns = vec![
        ColumnDef::new("id", CqlType::Uuid),
        ColumnDef::new("k", CqlType::Text),
        ColumnDef::new("b", CqlType::Boolean),
        ColumnDef::new("ti", CqlType::TinyInt),
        ColumnDef::new("si", CqlType::SmallInt),
        ColumnDef::new("i", CqlType::Int),
        ColumnDef::new("bi", CqlType::BigInt),
        ColumnDef::new("f", CqlType::Float),
        ColumnDef::new("d", CqlType::Double),
        ColumnDef::new("dec", CqlType::DECIMAL),
        ColumnDef::new("a", CqlType::Ascii),
        ColumnDef::new("bl", CqlType::Blob),
        ColumnDef::new("ts", CqlType::Timestamp),
        ColumnDef::new("dt", CqlType::Date),
        ColumnDef::new("tm", CqlType::Time),
        ColumnDef::new("tu", CqlType::TimeUuid),
        ColumnDef::new("ip", CqlType::Inet),
    ];
    TableDef::new(
        "test",
        "every_type",
        columns,
        vec!["id".into()],
        vec!["k".into()],
    )
    .expect("valid table")
}

/// A temporary directory holding input files.
pub struct Inputs {
    pub dir: TempDir,
}

impl Inputs {
    pub fn new() -> Self {
        Inputs {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// Writes `contents` to `name` and returns it as a source.
    pub fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> Source {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write input");
        Source::File(path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Reads with default options (rejects not kept).
pub fn read(source: &Source, table: &TableDef) -> Result<SourceData> {
    read_source(source, table, &ReadOptions::default(), &mut |_| {})
}

/// Reads keeping rejects.
pub fn read_keeping_rejects(source: &Source, table: &TableDef) -> Result<SourceData> {
    let options = ReadOptions {
        keep_rejects: true,
        ..ReadOptions::default()
    };
    read_source(source, table, &options, &mut |_| {})
}

/// The error message of a read that must fail.
pub fn error_of(source: &Source, table: &TableDef) -> String {
    match read(source, table) {
        Ok(data) => panic!("expected an error, read {} rows", data.rows),
        Err(e) => e.to_string(),
    }
}

/// All batches as one, checked to be in the table's schema.
pub fn one_batch(data: &SourceData, table: &TableDef) -> RecordBatch {
    let schema = table.arrow_schema();
    for batch in &data.batches {
        assert_eq!(batch.schema(), schema, "batches are in the table's schema");
    }
    concat_batches(&schema, &data.batches).expect("concat")
}

/// Cell `(row, column)` as display text, `NULL` for nulls.
pub fn cell(batch: &RecordBatch, column: &str, row: usize) -> String {
    let array = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("no column {column}"));
    if array.is_null(row) {
        return "NULL".to_string();
    }
    let options = FormatOptions::default();
    let formatter = ArrayFormatter::try_new(array.as_ref(), &options).expect("formatter");
    formatter.value(row).to_string()
}

/// Column `column` of every row as display text.
pub fn cells(batch: &RecordBatch, column: &str) -> Vec<String> {
    (0..batch.num_rows())
        .map(|r| cell(batch, column, r))
        .collect()
}
