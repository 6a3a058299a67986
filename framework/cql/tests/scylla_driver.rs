//! The real `scylla` driver against a 3-node server with replication 2: it reads the ring and
//! the schema, runs DDL, writes through prepared unlogged batches, and scans every primary token
//! range from its primary node with paging. The answer is checked against the rows written, and
//! the nodes' counters prove the scans were local.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use quarry_cql::{CqlServer, ServerOptions};
use quarry_store::{EmbeddedOptions, EmbeddedStore, ScanRequest, Store};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::{NodeIdentifier, SingleTargetLoadBalancingPolicy};
use scylla::statement::batch::{Batch, BatchType};

async fn cluster(
    nodes: usize,
    replication: usize,
) -> (tempfile::TempDir, Arc<EmbeddedStore>, CqlServer) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let server = CqlServer::start(
        store.clone(),
        ServerOptions {
            nodes,
            replication,
            vnodes: 4,
            port: 0,
            ..ServerOptions::default()
        },
    )
    .await
    .unwrap();
    (dir, store, server)
}

async fn session(server: &CqlServer) -> Session {
    SessionBuilder::new()
        .known_node_addr(server.addresses()[0])
        .build()
        .await
        .unwrap()
}

/// The reference rows: id -> (name, value), with some nulls.
fn reference(n: i64) -> BTreeMap<i64, (String, Option<f64>)> {
    (0..n)
        .map(|i| {
            let value = (i % 7 != 0).then_some(i as f64 * 0.5);
            (i * 7919 - 3_000, (format!("device-{i}"), value))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scylla_driver_writes_in_batches_and_scans_each_range_on_its_primary() {
    let (_dir, store, server) = cluster(3, 2).await;
    let session = session(&server).await;

    session
        .query_unpaged(
            "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2}",
            &[],
        )
        .await
        .unwrap();
    session
        .query_unpaged(
            "CREATE TABLE ks.readings (id bigint PRIMARY KEY, name text, value double)",
            &[],
        )
        .await
        .unwrap();
    session.refresh_metadata().await.unwrap();
    let state = session.get_cluster_state();
    assert_eq!(state.get_nodes_info().len(), 3);
    let ks = state
        .get_keyspace("ks")
        .expect("the driver sees the new keyspace");
    let table = ks.tables.get("readings").expect("and its table");
    assert_eq!(table.partition_key, vec!["id".to_string()]);

    // Prepared unlogged batches, as the Spark connector writes.
    let rows = reference(1000);
    let insert = session
        .prepare("INSERT INTO ks.readings (id, name, value) VALUES (?, ?, ?)")
        .await
        .unwrap();
    let all: Vec<(i64, String, Option<f64>)> = rows
        .iter()
        .map(|(id, (name, value))| (*id, name.clone(), *value))
        .collect();
    for chunk in all.chunks(100) {
        let mut batch = Batch::new(BatchType::Unlogged);
        for _ in chunk {
            batch.append_statement(insert.clone());
        }
        session.batch(&batch, chunk.to_vec()).await.unwrap();
    }
    // The store holds exactly what was written.
    let plan = store
        .plan_scan(&ScanRequest::full(quarry_core::schema::TableName::new(
            "ks", "readings",
        )))
        .unwrap();
    let mut stored = 0;
    for split in plan.splits {
        let batches: Vec<_> = split.source.open().unwrap().try_collect().await.unwrap();
        stored += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    assert_eq!(stored, rows.len());

    // Every primary range, from its primary node, 37 rows a page.
    let mut scan = session
        .prepare("SELECT id, name, value FROM ks.readings WHERE token(id) > ? AND token(id) <= ?")
        .await
        .unwrap();
    scan.set_page_size(37);
    let state = session.get_cluster_state();
    let ring: Vec<(i64, Arc<scylla::cluster::Node>)> = state
        .replica_locator()
        .ring()
        .iter()
        .map(|(t, n)| (t.value(), n.clone()))
        .collect();
    assert_eq!(ring.len(), 12, "3 nodes with 4 tokens each");
    let mut ranges = Vec::new();
    for (i, (end, node)) in ring.iter().enumerate() {
        if i == 0 {
            ranges.push((ring[ring.len() - 1].0, i64::MAX, node.clone()));
            ranges.push((i64::MIN, *end, node.clone()));
        } else {
            ranges.push((ring[i - 1].0, *end, node.clone()));
        }
    }
    let before = server.stats();
    let mut read = BTreeMap::new();
    for (start, end, node) in &ranges {
        let mut statement = scan.clone();
        statement.set_load_balancing_policy(Some(SingleTargetLoadBalancingPolicy::new(
            NodeIdentifier::Node(node.clone()),
            None,
        )));
        let mut stream = session
            .execute_iter(statement, (*start, *end))
            .await
            .unwrap()
            .rows_stream::<(i64, String, Option<f64>)>()
            .unwrap();
        while let Some((id, name, value)) = stream.try_next().await.unwrap() {
            assert!(
                read.insert(id, (name, value)).is_none(),
                "row {id} read twice"
            );
        }
    }
    assert_eq!(read, rows, "every row read exactly once, with its values");
    let after = server.stats();
    for (node, (b, a)) in before.iter().zip(&after).enumerate() {
        let scans = a.local_scans - b.local_scans;
        assert!(
            scans >= 4,
            "node {node} served its own ranges ({scans} scans)"
        );
        assert_eq!(
            a.forwarded_scans, b.forwarded_scans,
            "node {node} forwarded nothing"
        );
    }
    assert_eq!(
        after.iter().map(|s| s.rows_read).sum::<u64>()
            - before.iter().map(|s| s.rows_read).sum::<u64>(),
        rows.len() as u64
    );

    // count(*) and a point read by partition key.
    let (count,): (i64,) = session
        .query_unpaged("SELECT count(*) FROM ks.readings", &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(count, rows.len() as i64);
    let (id, (name, value)) = rows.iter().nth(123).unwrap();
    let point = session
        .prepare("SELECT name, value FROM ks.readings WHERE id = ?")
        .await
        .unwrap();
    let got: (String, Option<f64>) = session
        .execute_unpaged(&point, (*id,))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(&got, &(name.clone(), *value));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_statements_get_cql_errors_and_change_nothing() {
    let (_dir, store, server) = cluster(1, 1).await;
    let session = session(&server).await;
    session
        .query_unpaged("CREATE KEYSPACE ks", &[])
        .await
        .unwrap();
    session
        .query_unpaged(
            "CREATE TABLE ks.t (k int, c int, v text, PRIMARY KEY (k, c))",
            &[],
        )
        .await
        .unwrap();
    let err = |r: Result<_, scylla::errors::ExecutionError>| r.expect_err("an error").to_string();
    // A partial row would lose the missing column's value in a whole-row store.
    let e = err(session
        .query_unpaged("INSERT INTO ks.t (k, c) VALUES (1, 2)", &[])
        .await);
    assert!(e.contains("missing: v"), "{e}");
    let e = err(session.query_unpaged("SELECT * FROM ks.nope", &[]).await);
    assert!(e.contains("ks.nope"), "{e}");
    let e = err(session.query_unpaged("SELEC * FROM ks.t", &[]).await);
    assert!(!e.is_empty());
    let e = err(session
        .query_unpaged("INSERT INTO ks.t (k, c, v) VALUES ('x', 1, 'a')", &[])
        .await);
    assert!(e.contains("int"), "{e}");
    let e = err(session
        .query_unpaged("DELETE FROM ks.t WHERE k = 1", &[])
        .await);
    assert!(e.contains("DELETE"), "{e}");
    // Nothing was written by any of them.
    let plan = store
        .plan_scan(&ScanRequest::full(quarry_core::schema::TableName::new(
            "ks", "t",
        )))
        .unwrap();
    assert!(plan.splits.is_empty() || plan.splits.iter().all(|s| s.estimated_rows == 0));

    // A literal insert and USE work as in cqlsh.
    session
        .query_unpaged("INSERT INTO ks.t (k, c, v) VALUES (1, 2, 'it''s')", &[])
        .await
        .unwrap();
    session.use_keyspace("ks", false).await.unwrap();
    let (v,): (String,) = session
        .query_unpaged("SELECT v FROM t WHERE k = 1 AND c = 2", &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(v, "it's");
}
