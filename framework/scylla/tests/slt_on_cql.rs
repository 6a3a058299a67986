//! The SQL suite of `framework/sql/tests/slt`, on the ScyllaDB connector: every file runs
//! against a fresh 3-node CQL server (replication 2), reached through the real `scylla` driver,
//! with Quarry's SQL layer on top. The files assert the same answers the embedded store gives.
//!
//! Files that test what only the embedded store keeps are listed in [`EMBEDDED_ONLY`], each with
//! the reason; the runner says it skipped them.

#[path = "../../sql/tests/common/slt.rs"]
mod slt;

use std::path::Path;
use std::sync::Arc;

use quarry_cql::{CqlServer, ServerOptions};
use quarry_scylla::{ScyllaOptions, ScyllaStore};
use quarry_sql::QuarrySession;
use quarry_store::EmbeddedStore;
use slt::{DbError, SltDb, run_suite, slt_files, small_options};

/// Files that need what a CQL cluster does not keep, and why.
const EMBEDDED_ONLY: &[(&str, &str)] = &[(
    "aggregate_overflow.slt",
    "it stores decimals with 10 fraction digits; CQL DDL has no precision, and the CQL test \
     server holds a CQL decimal as Quarry's plain decimal(38, 6), so it refuses them (a real \
     cluster's decimal holds them)",
)];

async fn connector() -> Result<SltDb, DbError> {
    let fail = |e: &dyn std::fmt::Display| DbError(e.to_string());
    let dir = tempfile::tempdir().map_err(|e| fail(&e))?;
    let backing = Arc::new(EmbeddedStore::open(dir.path(), small_options()).map_err(|e| fail(&e))?);
    let server = CqlServer::start(
        backing,
        ServerOptions {
            nodes: 3,
            replication: 2,
            vnodes: 4,
            port: 0,
            ..ServerOptions::default()
        },
    )
    .await
    .map_err(|e| fail(&e))?;
    let store = ScyllaStore::connect(ScyllaOptions {
        nodes: vec![server.addresses()[0].to_string()],
        ..ScyllaOptions::default()
    })
    .await
    .map_err(|e| fail(&e))?;
    let session = QuarrySession::new(Arc::new(store));
    Ok(SltDb {
        execute: Box::new(move |sql| {
            let session = session.clone();
            Box::pin(async move { session.execute(&sql).await.map_err(|e| e.to_string()) })
        }),
        _keep: Box::new((server, dir)),
        name: "quarry-scylla",
    })
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let files: Vec<_> = slt_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/tests/slt"))
        .into_iter()
        .filter(|f| {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            match EMBEDDED_ONLY.iter().find(|(file, _)| *file == name) {
                Some((_, why)) => {
                    println!("skipped {name} on the connector: {why}");
                    false
                }
                None => true,
            }
        })
        .collect();
    let (passed, failed) = runtime.block_on(run_suite("slt_scylla", &files, connector));
    println!("\nsqllogictests on the ScyllaDB connector: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
