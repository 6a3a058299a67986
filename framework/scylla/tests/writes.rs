//! Writes through the connector stay under the size at which a node refuses a batch: the CQL
//! server refuses batches over 1 MiB of values, as ScyllaDB does by default, and rows of 20 KiB
//! each (2 MiB in a batch of 100 rows) still land, every one of them, in batches the connector
//! cuts by bytes as well as by rows.

use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int64Type};
use futures::TryStreamExt;
use quarry_core::cql_type::CqlType;
use quarry_core::schema::{ColumnDef, KeyspaceDef, TableDef, TableName};
use quarry_cql::{CqlServer, ServerOptions};
use quarry_scylla::{ScyllaOptions, ScyllaStore};
use quarry_store::{EmbeddedOptions, EmbeddedStore, ScanRequest, Store};

const ROWS: i64 = 300;
const PAYLOAD: usize = 20 * 1024;

fn rows(def: &TableDef) -> RecordBatch {
    let ids: Vec<i64> = (0..ROWS).collect();
    let payloads: Vec<String> = ids
        .iter()
        .map(|i| {
            char::from(b'a' + (i % 26) as u8)
                .to_string()
                .repeat(PAYLOAD)
        })
        .collect();
    RecordBatch::try_new(
        def.arrow_schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(payloads)),
        ],
    )
    .unwrap()
}

/// A one-node CQL server over a fresh data directory (kept while the directory lives).
async fn one_node_server() -> (tempfile::TempDir, CqlServer) {
    let dir = tempfile::tempdir().unwrap();
    let backing = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let server = CqlServer::start(
        backing,
        ServerOptions {
            port: 0,
            ..ServerOptions::default()
        },
    )
    .await
    .unwrap();
    (dir, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_rows_are_written_in_batches_a_node_accepts() {
    let (_dir, server) = one_node_server().await;
    let nodes: Vec<String> = server.addresses().iter().map(|a| a.to_string()).collect();
    let store = ScyllaStore::connect(ScyllaOptions {
        nodes: nodes.clone(),
        ..ScyllaOptions::default()
    })
    .await
    .unwrap();
    store
        .create_keyspace(KeyspaceDef::new("ks"), false)
        .await
        .unwrap();
    let def = TableDef::new(
        "ks",
        "blobs",
        vec![
            ColumnDef::new("id", CqlType::BigInt),
            ColumnDef::new("payload", CqlType::Text),
        ],
        vec!["id".into()],
        vec![],
    )
    .unwrap();
    store.create_table(def.clone(), false).await.unwrap();
    let name = TableName::new("ks", "blobs");

    // Cut by rows only, a batch of 100 such rows is refused, naming the limit.
    let rows_only = ScyllaStore::connect(ScyllaOptions {
        nodes,
        batch_bytes: usize::MAX,
        ..ScyllaOptions::default()
    })
    .await
    .unwrap();
    let err = rows_only
        .write(&name, vec![rows(&def)])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Batch too large"), "{err}");

    assert_eq!(
        store.write(&name, vec![rows(&def)]).await.unwrap().rows,
        ROWS as u64
    );
    let plan = store.plan_scan(&ScanRequest::full(name)).unwrap();
    let mut seen = Vec::new();
    for split in plan.splits {
        let batches: Vec<RecordBatch> = split.source.open().unwrap().try_collect().await.unwrap();
        for b in batches {
            let ids = b.column(0).as_primitive::<Int64Type>();
            let payloads = arrow::compute::cast(b.column(1), &DataType::Utf8).unwrap();
            let payloads = payloads.as_string::<i32>();
            for i in 0..b.num_rows() {
                let expected = char::from(b'a' + (ids.value(i) % 26) as u8).to_string();
                assert_eq!(payloads.value(i), expected.repeat(PAYLOAD));
                seen.push(ids.value(i));
            }
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..ROWS).collect::<Vec<_>>());
}

/// The ids `store` reads from `table`.
async fn ids_in(store: &ScyllaStore, table: &TableName) -> Vec<i64> {
    let plan = store.plan_scan(&ScanRequest::full(table.clone())).unwrap();
    let mut ids = Vec::new();
    for split in plan.splits {
        let batches: Vec<RecordBatch> = split.source.open().unwrap().try_collect().await.unwrap();
        for b in batches {
            ids.extend(b.column(0).as_primitive::<Int64Type>().values().iter());
        }
    }
    ids.sort_unstable();
    ids
}

/// A small table of `(id bigint, payload text)` in a fresh keyspace `keyspace`.
async fn small_table(store: &ScyllaStore, keyspace: &str) -> (TableDef, TableName) {
    let mut ks = KeyspaceDef::new(keyspace);
    ks.replication_factor = 1;
    store.create_keyspace(ks, true).await.unwrap();
    let def = TableDef::new(
        keyspace,
        "expiring",
        vec![
            ColumnDef::new("id", CqlType::BigInt),
            ColumnDef::new("payload", CqlType::Text),
        ],
        vec!["id".into()],
        vec![],
    )
    .unwrap();
    let name = def.table_name();
    let _ = store.drop_table(&name, true).await;
    store.create_table(def.clone(), false).await.unwrap();
    (def, name)
}

/// Rows written with `write_ttl` carry CQL's `USING TTL`. Quarry's CQL server keeps rows until
/// they are overwritten, so it refuses the TTL, naming it, before anything is written; a real
/// cluster (`QUARRY_SCYLLA_NODES`) expires the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_with_a_ttl_expire_or_are_refused_whole() {
    let (_dir, server) = one_node_server().await;
    let nodes: Vec<String> = server.addresses().iter().map(|a| a.to_string()).collect();
    let expiring = ScyllaStore::connect(ScyllaOptions {
        nodes,
        write_ttl: Some(3600),
        ..ScyllaOptions::default()
    })
    .await
    .unwrap();
    let (def, name) = small_table(&expiring, "ttl_test").await;
    let err = expiring
        .write(&name, vec![rows(&def).slice(0, 10)])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("TTL"), "{err}");
    assert!(ids_in(&expiring, &name).await.is_empty(), "nothing written");

    let Some(real) = std::env::var("QUARRY_SCYLLA_NODES")
        .ok()
        .filter(|n| !n.trim().is_empty())
    else {
        println!(
            "skipped rows expiring on a real cluster: set QUARRY_SCYLLA_NODES to run it there"
        );
        return;
    };
    let store = ScyllaStore::connect(ScyllaOptions {
        nodes: real.split(',').map(|n| n.trim().to_string()).collect(),
        write_ttl: Some(2),
        ..ScyllaOptions::default()
    })
    .await
    .unwrap();
    let (def, name) = small_table(&store, "quarry_ttl_test").await;
    store
        .write(&name, vec![rows(&def).slice(0, 10)])
        .await
        .unwrap();
    assert_eq!(ids_in(&store, &name).await, (0..10).collect::<Vec<_>>());
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert!(ids_in(&store, &name).await.is_empty(), "rows expired");
    store.drop_keyspace("quarry_ttl_test", true).await.unwrap();
}
