//! Scan splits sized by the cluster's `system.size_estimates`: the 3-node CQL server estimates a
//! table from what its store holds, the connector scales one node's ranges up to the whole ring,
//! and a scan is cut into about `split_bytes` per split, each split saying how many rows it will
//! read. The rows read are the same whatever the cut.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use quarry_core::cql_type::CqlType;
use quarry_core::schema::{ColumnDef, KeyspaceDef, TableDef, TableName};
use quarry_cql::{CqlServer, ServerOptions};
use quarry_scylla::{ScyllaOptions, ScyllaStore};
use quarry_store::{EmbeddedOptions, EmbeddedStore, ScanRequest, Store};

const ROWS: i64 = 20_000;

async fn rows_read(store: &ScyllaStore, name: &TableName) -> (usize, usize, u64) {
    let plan = store.plan_scan(&ScanRequest::full(name.clone())).unwrap();
    let estimated = plan.splits.iter().map(|s| s.estimated_rows).sum();
    let mut rows = 0;
    for split in &plan.splits {
        let batches: Vec<RecordBatch> = split.source.open().unwrap().try_collect().await.unwrap();
        rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    (plan.splits.len(), rows, estimated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_follow_the_size_the_cluster_estimates() {
    let dir = tempfile::tempdir().unwrap();
    let backing = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let mut ks = KeyspaceDef::new("ks");
    ks.replication_factor = 2;
    backing.create_keyspace(ks, false).await.unwrap();
    let def = TableDef::new(
        "ks",
        "t",
        vec![
            ColumnDef::new("id", CqlType::BigInt),
            ColumnDef::new("payload", CqlType::Text),
        ],
        vec!["id".into()],
        vec![],
    )
    .unwrap();
    backing.create_table(def.clone(), false).await.unwrap();
    let ids: Vec<i64> = (0..ROWS).collect();
    let payloads: Vec<String> = ids.iter().map(|i| format!("{i:0>64}")).collect();
    let batch = RecordBatch::try_new(
        def.arrow_schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(payloads)),
        ],
    )
    .unwrap();
    let name = def.table_name();
    backing.write(&name, vec![batch]).await.unwrap();
    // On disk, where the store knows its bytes (a table only in memory is estimated at no bytes,
    // and read in one split).
    backing.flush().unwrap();
    let server = CqlServer::start(
        backing,
        ServerOptions {
            nodes: 3,
            replication: 2,
            vnodes: 8,
            port: 0,
            ..ServerOptions::default()
        },
    )
    .await
    .unwrap();
    let connect = |split_bytes: u64| {
        let nodes = vec![server.addresses()[0].to_string()];
        async move {
            ScyllaStore::connect(ScyllaOptions {
                nodes,
                split_bytes,
                ..ScyllaOptions::default()
            })
            .await
            .unwrap()
        }
    };

    let store = connect(u64::MAX).await;
    let size = store.refresh_size_estimate(&name).await.unwrap().unwrap();
    // One node's ranges, scaled up to the ring, give back the table's rows (rounding per range).
    let off = (size.partitions as i64 - ROWS).abs();
    assert!(
        off <= 30,
        "estimated {} partitions of {ROWS}",
        size.partitions
    );
    assert!(size.bytes > 0);
    // A split may read the whole table: one split per piece of the ring Quarry reads at once.
    let (splits, rows, estimated) = rows_read(&store, &name).await;
    assert_eq!((splits, rows), (1, ROWS as usize));
    assert!((estimated as i64 - ROWS).abs() <= 30, "{estimated}");

    // A quarter of the table per split: four splits, the same rows.
    let store = connect(size.bytes / 4).await;
    store.refresh_size_estimate(&name).await.unwrap();
    let (splits, rows, estimated) = rows_read(&store, &name).await;
    assert_eq!((splits, rows), (4, ROWS as usize));
    assert!((estimated as i64 - ROWS).abs() <= 30, "{estimated}");

    // Before its first estimate arrives (read in the background from the first plan on), a scan
    // is cut into splits of 25 shards, with no row counts: 32 for the connector's 800 shards of
    // a keyspace Quarry did not create.
    let store = connect(size.bytes / 4).await;
    let (splits, rows, estimated) = rows_read(&store, &name).await;
    assert_eq!((splits, rows, estimated), (32, ROWS as usize, 0));

    let absent = TableName::new("ks", "nothing_here");
    assert_eq!(store.refresh_size_estimate(&absent).await.unwrap(), None);
}
