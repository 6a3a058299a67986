//! Fixtures of the driver's integration tests: clusters in temporary directories, and results
//! as comparable text.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the fixtures"
)]

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use quarry_client::auth::Secret;
use quarry_driver::daemon::local_cluster::LocalCluster;
use quarry_driver::daemon::{DriverConfig, DriverState};
use quarry_sql::QueryOutput;
use quarry_store::{EmbeddedOptions, EmbeddedStore};

/// An in-process cluster over a fresh data directory.
pub struct TestCluster {
    pub cluster: LocalCluster,
    pub store: Arc<EmbeddedStore>,
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    pub async fn start(workers: usize, config: DriverConfig) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
        let cluster = LocalCluster::start(store.clone(), dir.path(), workers, config)
            .await
            .unwrap();
        TestCluster {
            cluster,
            store,
            dir,
        }
    }

    /// The token clients of the cluster send.
    pub fn token(&self) -> &Secret {
        self.cluster.token()
    }

    pub fn driver(&self) -> &Arc<DriverState> {
        &self.cluster.driver
    }

    /// Runs a statement on the cluster; panics with the error.
    pub async fn sql(&self, sql: &str) -> QueryOutput {
        match self.driver().run_statement(sql, &[], "test").await {
            Ok(output) => output,
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    /// Runs a statement and returns its error message.
    pub async fn sql_error(&self, sql: &str) -> String {
        match self.driver().run_statement(sql, &[], "test").await {
            Ok(_) => panic!("{sql} succeeded"),
            Err(e) => e.to_string(),
        }
    }
}

/// A statement's result, run in the driver or through a client.
pub trait Rows {
    fn batches(&self) -> &[RecordBatch];
}

impl Rows for QueryOutput {
    fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }
}

impl Rows for quarry_client::QueryOutput {
    fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }
}

/// Rows as `a|b|c` lines, in result order.
pub fn lines(output: &impl Rows) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in output.batches() {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// A table `k.t` of `rows` rows over `shards` shards: id, g = id % 97, v = id / 10.
pub async fn numbers(cluster: &TestCluster, shards: u32, rows: u64) {
    cluster
        .sql(&format!("CREATE KEYSPACE k WITH shards = {shards}"))
        .await;
    cluster
        .sql("CREATE TABLE k.t (id bigint, g bigint, v double, PRIMARY KEY (id))")
        .await;
    cluster
        .sql(&format!(
            "INSERT INTO k.t SELECT value, value % 97, CAST(value AS DOUBLE) / 10 \
             FROM generate_series(1, {rows}) AS s(value)"
        ))
        .await;
}
