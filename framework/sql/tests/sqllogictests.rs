//! Runs every `tests/slt/*.slt` file against a fresh embedded store, in this process. The driver
//! crate runs the same files on one- and three-worker clusters.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::slt::{DbError, SltDb, run_suite, slt_files};
use quarry_sql::QuarrySession;
use quarry_store::{EmbeddedOptions, EmbeddedStore};

async fn embedded() -> Result<SltDb, DbError> {
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
    let store = EmbeddedStore::open(dir.path(), options).map_err(|e| DbError(e.to_string()))?;
    let session = QuarrySession::new(Arc::new(store));
    Ok(SltDb {
        execute: Box::new(move |sql| {
            let session = session.clone();
            Box::pin(async move { session.execute(&sql).await.map_err(|e| e.to_string()) })
        }),
        _keep: Box::new(dir),
        name: "quarry-embedded",
    })
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let files = slt_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt"));
    let (passed, failed) = runtime.block_on(run_suite("slt", &files, embedded));
    println!("\nsqllogictests: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
