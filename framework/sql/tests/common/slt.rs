//! The sqllogictest harness shared by the embedded suite (here) and the cluster suites (in the
//! driver crate, which includes this file by path): one database adapter over anything that
//! runs a statement and returns a [`QueryOutput`], value formatting, and the runner loop.
//!
//! Values print as Arrow formats them, NULL as `NULL`. `QUARRY_SLT=name` runs only files whose
//! name contains `name`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use quarry_sql::QueryOutput;
use sqllogictest::{DBOutput, DefaultColumnType};

/// Runs one statement somewhere.
pub type Execute = Box<
    dyn FnMut(String) -> Pin<Box<dyn Future<Output = Result<QueryOutput, String>> + Send>> + Send,
>;

/// A database for the runner; `_keep` holds whatever must live as long as it (a temporary
/// directory, a cluster).
pub struct SltDb {
    pub execute: Execute,
    pub _keep: Box<dyn std::any::Any + Send>,
    pub name: &'static str,
}

#[derive(Debug)]
pub struct DbError(pub String);

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
impl sqllogictest::AsyncDB for SltDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let output = (self.execute)(sql.to_string()).await.map_err(DbError)?;
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
        self.name
    }
}

/// Small store thresholds, so that the suites cross the log, memtable, run and merge paths.
pub fn small_options() -> quarry_store::EmbeddedOptions {
    quarry_store::EmbeddedOptions {
        memtable_flush_rows: 64,
        bulk_write_rows: 32,
        rows_per_group: 16,
        rows_per_file: 64,
        max_runs: 3,
        max_dead_fraction: 0.1,
        background: false,
        compaction_threads: 1,
        raise_compaction_depth: 32,
        idle_step_patience: std::time::Duration::from_secs(30),
    }
}

/// The `.slt` files of `dir`, sorted, filtered by `QUARRY_SLT`.
pub fn slt_files(dir: &Path) -> Vec<PathBuf> {
    let filter = std::env::var("QUARRY_SLT").ok();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the slt directory exists")
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

/// Runs every file on a fresh database from `make`, prints one line per file, and returns
/// (passed, failed).
pub async fn run_suite<F, Fut>(suite: &str, files: &[PathBuf], make: F) -> (usize, usize)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<SltDb, DbError>> + Send + 'static,
{
    let (mut passed, mut failed) = (0, 0);
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let make = make.clone();
        let mut runner = sqllogictest::Runner::new(make);
        match runner.run_file_async(file).await {
            Ok(()) => {
                println!("test {suite}::{name} ... ok");
                passed += 1;
            }
            Err(e) => {
                println!("test {suite}::{name} ... FAILED\n{e}\n");
                failed += 1;
            }
        }
    }
    (passed, failed)
}
