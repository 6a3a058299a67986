//! Runs every `tests/slt/*.slt` file against a fresh embedded store, in this process. The driver
//! crate runs the same files on one- and three-worker clusters.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::slt::{DbError, SltDb, run_suite, slt_files, small_options};
use quarry_sql::QuarrySession;
use quarry_store::EmbeddedStore;

async fn embedded() -> Result<SltDb, DbError> {
    let dir = tempfile::tempdir().map_err(|e| DbError(e.to_string()))?;
    let options = small_options();
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
