//! Runs the SQL suite of `framework/sql/tests/slt` on a one-worker and a three-worker cluster
//! (driver and workers in this process, on loopback ports), through the same Flight client the
//! CLI uses. Results must equal the embedded run's, which the same files assert.

#[path = "../../framework/sql/tests/common/slt.rs"]
mod slt;

use std::path::Path;
use std::sync::Arc;

use quarry_client::Client;
use quarry_driver::daemon::DriverConfig;
use quarry_driver::daemon::local_cluster::LocalCluster;
use quarry_store::EmbeddedStore;
use slt::{DbError, SltDb, run_suite, slt_files, small_options};

async fn cluster(workers: usize) -> Result<SltDb, DbError> {
    let fail = |e: &dyn std::fmt::Display| DbError(e.to_string());
    let dir = tempfile::tempdir().map_err(|e| fail(&e))?;
    let options = small_options();
    let store = Arc::new(EmbeddedStore::open(dir.path(), options).map_err(|e| fail(&e))?);
    let cluster = LocalCluster::start(store, dir.path(), workers, DriverConfig::default())
        .await
        .map_err(|e| fail(&e))?;
    let driver = Client::connect(&cluster.url, Some(cluster.token()))
        .await
        .map_err(|e| fail(&e))?;
    let driver = Arc::new(tokio::sync::Mutex::new(driver));
    Ok(SltDb {
        execute: Box::new(move |sql| {
            let driver = driver.clone();
            Box::pin(async move {
                let output = driver.lock().await.sql(&sql).await;
                output
                    .map(quarry_driver::remote::sql_output)
                    .map_err(|e| e.to_string())
            })
        }),
        _keep: Box::new((cluster, dir)),
        name: "quarry-cluster",
    })
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let files =
        slt_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../framework/sql/tests/slt"));
    let (mut passed, mut failed) = (0, 0);
    for workers in [1, 3] {
        let suite = format!(
            "slt_{workers}_worker{}",
            if workers == 1 { "" } else { "s" }
        );
        let (p, f) = runtime.block_on(run_suite(&suite, &files, move || cluster(workers)));
        passed += p;
        failed += f;
    }
    println!("\ncluster sqllogictests: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
