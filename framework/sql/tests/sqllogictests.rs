//! Runs every `tests/slt/*.slt` file against a fresh embedded store.
//!
//! Values print as Arrow formats them, NULL as `NULL`. `QUARRY_SLT=name` runs only files whose
//! name contains `name`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use quarry_sql::QuarrySession;
use quarry_store::{EmbeddedOptions, EmbeddedStore};
use sqllogictest::{DBOutput, DefaultColumnType};

struct QuarryDb {
    session: QuarrySession,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct DbError(String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
            DefaultColumnType::FloatingPoint
        }
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DbError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DbError(e.to_string()))?;
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| {
                        let s = f.value(row).to_string();
                        if s.is_empty() {
                            "(empty)".to_string()
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

#[async_trait]
impl sqllogictest::AsyncDB for QuarryDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let output = self
            .session
            .execute(sql)
            .await
            .map_err(|e| DbError(e.to_string()))?;
        if output.message.is_some() {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: output
                .schema
                .fields()
                .iter()
                .map(|f| column_type(f.data_type()))
                .collect(),
            rows: rows(&output.batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "quarry-embedded"
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let filter = std::env::var("QUARRY_SLT").ok();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/slt exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            filter
                .as_deref()
                .is_none_or(|f| p.to_string_lossy().contains(f))
        })
        .collect();
    files.sort();
    files
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let (mut passed, mut failed) = (0, 0);
    for file in slt_files() {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let result = runtime.block_on(async {
            let mut runner = sqllogictest::Runner::new(|| async {
                let dir = tempfile::tempdir().map_err(|e| DbError(e.to_string()))?;
                // Small thresholds so that the suites cross the log, memtable, run and merge paths.
                let options = EmbeddedOptions {
                    memtable_flush_rows: 64,
                    bulk_write_rows: 32,
                    rows_per_group: 16,
                    rows_per_file: 64,
                    max_runs: 3,
                    merge_split_shards: 4,
                    background: false,
                };
                let store =
                    EmbeddedStore::open(dir.path(), options).map_err(|e| DbError(e.to_string()))?;
                Ok(QuarryDb {
                    session: QuarrySession::new(Arc::new(store)),
                    _dir: dir,
                })
            });
            runner.run_file_async(&file).await
        });
        match result {
            Ok(()) => {
                println!("test slt::{name} ... ok");
                passed += 1;
            }
            Err(e) => {
                println!("test slt::{name} ... FAILED\n{e}\n");
                failed += 1;
            }
        }
    }
    println!("\nsqllogictests: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
