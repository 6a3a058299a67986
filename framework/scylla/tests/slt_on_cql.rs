//! The SQL suite of `framework/sql/tests/slt`, on the ScyllaDB connector: every file runs
//! against a fresh 3-node CQL server (replication 2), reached through the real `scylla` driver,
//! with Quarry's SQL layer on top, once on the vnode ring and once with ScyllaDB's tablets. The
//! files assert the same answers the embedded store gives.
//!
//! Files that test what only the embedded store keeps are listed in [`EMBEDDED_ONLY`], each with
//! the reason; the runner says it skipped them.
//!
//! With `QUARRY_SCYLLA_NODES` set (contact points of a real ScyllaDB or Cassandra cluster), every
//! file also runs there, as engine `quarry-scylla-real`. Name only a disposable cluster: the files
//! create and drop keyspaces such as `iot`, `ks`, `m` and `shop`.

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

/// A fresh 3-node server, on the vnode ring or with `tablets` per table.
async fn connector(tablets: Option<u32>) -> Result<SltDb, DbError> {
    let fail = |e: &dyn std::fmt::Display| DbError(e.to_string());
    let dir = tempfile::tempdir().map_err(|e| fail(&e))?;
    let backing = Arc::new(EmbeddedStore::open(dir.path(), small_options()).map_err(|e| fail(&e))?);
    let server = CqlServer::start(
        backing,
        ServerOptions {
            nodes: 3,
            replication: 2,
            vnodes: 4,
            tablets,
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
        // The files' `onlyif`/`skipif` conditions name the connector, vnodes or tablets.
        name: "quarry-scylla",
    })
}

/// The real cluster of `QUARRY_SCYLLA_NODES`.
async fn real_cluster(nodes: String) -> Result<SltDb, DbError> {
    let store = ScyllaStore::connect(ScyllaOptions {
        nodes: nodes.split(',').map(|n| n.trim().to_string()).collect(),
        ..ScyllaOptions::default()
    })
    .await
    .map_err(|e| DbError(e.to_string()))?;
    let session = QuarrySession::new(Arc::new(store));
    Ok(SltDb {
        execute: Box::new(move |sql| {
            let session = session.clone();
            Box::pin(async move { session.execute(&sql).await.map_err(|e| e.to_string()) })
        }),
        _keep: Box::new(()),
        name: "quarry-scylla-real",
    })
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let all = slt_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/tests/slt"));
    let files: Vec<_> = all
        .iter()
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
        .cloned()
        .collect();
    let (mut passed, mut failed) =
        runtime.block_on(run_suite("slt_scylla", &files, || connector(None)));
    let (p, f) = runtime.block_on(run_suite("slt_scylla_tablets", &files, || {
        connector(Some(8))
    }));
    passed += p;
    failed += f;
    match std::env::var("QUARRY_SCYLLA_NODES") {
        Ok(nodes) if !nodes.trim().is_empty() => {
            let (p, f) = runtime.block_on(run_suite("slt_scylla_real", &all, move || {
                real_cluster(nodes.clone())
            }));
            passed += p;
            failed += f;
        }
        _ => println!(
            "skipped the suite on a real cluster: set QUARRY_SCYLLA_NODES to the contact points \
             of a disposable ScyllaDB or Cassandra cluster to run it there too"
        ),
    }
    println!("\nsqllogictests on the ScyllaDB connector: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
