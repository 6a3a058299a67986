//! Readers beside the nodes of a 3-node CQL server (replication 2), each scanning the shards
//! placement makes its node primary for, read every row exactly once and every page from their
//! own node; the server's counters agree that no node was asked for a range it does not hold.
//! Once on the vnode ring, once with ScyllaDB's tablets (each table placed apart), and once with
//! tablets on sharded nodes, where each tablet is read through its CPU shard's connection.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use futures::TryStreamExt;
use quarry_core::ids::ShardId;
use quarry_core::schema::{ColumnDef, KeyspaceDef, TableDef, TableName};
use quarry_core::shard_set::ShardSet;
use quarry_cql::{CqlServer, ServerOptions};
use quarry_scylla::{ScyllaOptions, ScyllaStore};
use quarry_store::{EmbeddedOptions, EmbeddedStore, ScanRequest, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_beside_each_node_read_their_shards_from_it() {
    readers_read_locally(None, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_beside_each_node_read_their_tablets_from_it() {
    readers_read_locally(Some(16), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_beside_sharded_nodes_read_each_tablet_on_its_shard() {
    readers_read_locally(Some(16), Some(4)).await;
}

async fn readers_read_locally(tablets: Option<u32>, shards: Option<u16>) {
    let dir = tempfile::tempdir().unwrap();
    let backing = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let server = CqlServer::start(
        backing,
        ServerOptions {
            nodes: 3,
            replication: 2,
            vnodes: 16,
            tablets,
            shards,
            port: 0,
            ..ServerOptions::default()
        },
    )
    .await
    .unwrap();
    let addresses: Vec<String> = server.addresses().iter().map(|a| a.to_string()).collect();
    let writer = ScyllaStore::connect(ScyllaOptions {
        nodes: vec![addresses[0].clone()],
        ..ScyllaOptions::default()
    })
    .await
    .unwrap();
    let mut ks = KeyspaceDef::new("ks");
    ks.replication_factor = 2;
    writer.create_keyspace(ks, false).await.unwrap();
    let def = TableDef::new(
        "ks",
        "t",
        vec![
            ColumnDef::new("id", quarry_core::cql_type::CqlType::BigInt),
            ColumnDef::new("v", quarry_core::cql_type::CqlType::BigInt),
        ],
        vec!["id".into()],
        vec![],
    )
    .unwrap();
    writer.create_table(def.clone(), false).await.unwrap();
    // A second table of the same keyspace, placed on its own tablets.
    let other = TableDef {
        name: "u".into(),
        ..def.clone()
    };
    writer.create_table(other, false).await.unwrap();
    let ids: Vec<i64> = (0..20_000).map(|i| i * 7919 - 50_000).collect();
    let batch = RecordBatch::try_new(
        def.arrow_schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Int64Array::from(
                ids.iter().map(|i| i * 2).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    let name = TableName::new("ks", "t");
    let written = |stats: &[quarry_cql::NodeStats]| {
        stats.iter().fold((0, 0), |(f, l), s| {
            (f + s.forwarded_writes, l + s.local_writes)
        })
    };
    let (forwarded, local) = written(&server.stats());
    assert_eq!(writer.write(&name, vec![batch]).await.unwrap().rows, 20_000);
    // Every batch went to a replica of its rows (on tablets, one the driver was not told of).
    let (f, l) = written(&server.stats());
    assert_eq!(
        (f - forwarded, l - local),
        (0, 20_000),
        "rows written beside their replicas"
    );

    let before = server.stats();
    let mut read: Vec<i64> = Vec::new();
    for address in &addresses {
        let reader = ScyllaStore::connect(ScyllaOptions {
            nodes: vec![address.clone()],
            local_node: Some(address.clone()),
            ..ScyllaOptions::default()
        })
        .await
        .unwrap();
        let keyspace = reader.keyspace("ks").unwrap();
        let placement = reader
            .placement(&keyspace, std::slice::from_ref(&name), &[])
            .unwrap();
        if tablets.is_some() {
            // Tablets place each table apart: there is no keyspace-wide placement, and the two
            // tables' replicas differ somewhere.
            let e = reader.placement(&keyspace, &[], &[]).unwrap_err();
            assert!(e.to_string().contains("own tablets"), "{e}");
            let u = reader
                .placement(&keyspace, &[TableName::new("ks", "u")], &[])
                .unwrap();
            assert!(
                (0..keyspace.shards)
                    .map(ShardId)
                    .any(|s| u.replicas(s) != placement.replicas(s)),
                "tables of a tablet keyspace are placed apart: {:?} {:?}",
                u.replicas(ShardId(0)),
                placement.replicas(ShardId(0))
            );
        }
        // Every shard is held whole by its replicas, as the server says.
        let shard_map = quarry_core::shard_map::ShardMap::new(keyspace.shards);
        let node = addresses.iter().position(|a| a == address).unwrap();
        for s in (0..keyspace.shards).map(ShardId) {
            let range = shard_map.range_of(s);
            assert_eq!(
                placement.replicas(s).iter().any(|n| &n.0 == address),
                server.holds(&name, node, range.start, range.end),
                "shard {s:?} on {address}"
            );
        }
        let mine = ShardSet::from_shards(
            (0..keyspace.shards)
                .map(ShardId)
                .filter(|s| placement.primary(*s).is_some_and(|n| &n.0 == address)),
        );
        assert!(!mine.is_empty(), "{address} is primary for some shards");
        read.extend(scan(&reader, &name, &mine).await);
        if shards.is_some() {
            // On sharded nodes each tablet is read through a connection to the shard holding
            // it, once the driver has one (it opens a connection per shard in the background
            // after connecting, so the first pages may go through another): scans again until
            // one pass arrives wholly on the tablets' shards.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let before = server.stats()[node].clone();
                let again = scan(&reader, &name, &mine).await;
                let after = server.stats()[node].clone();
                let cross = after.cross_shard_scans - before.cross_shard_scans;
                let on_shard = after.shard_local_scans - before.shard_local_scans;
                assert!(!again.is_empty());
                if cross == 0 && on_shard > 0 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{address}: {cross} of {} tablet scans went through another shard",
                    cross + on_shard
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        let stats = reader.read_stats();
        assert!(stats.local_pages > 0);
        assert_eq!(
            stats.remote_pages,
            0,
            "{address} read {} of {} pages elsewhere",
            stats.remote_pages,
            stats.local_pages + stats.remote_pages
        );
    }
    read.sort_unstable();
    let mut expected = ids;
    expected.sort_unstable();
    assert_eq!(read, expected, "every row read exactly once");
    for (b, a) in before.iter().zip(server.stats()) {
        assert_eq!(a.forwarded_scans, b.forwarded_scans);
        assert!(a.local_scans > b.local_scans);
        if shards.is_some() {
            assert!(a.shard_local_scans > b.shard_local_scans);
        }
    }
}

/// The ids `reader` reads from `shards` of `table`.
async fn scan(reader: &ScyllaStore, table: &TableName, shards: &ShardSet) -> Vec<i64> {
    let plan = reader
        .plan_scan(&ScanRequest {
            shards: Some(shards.clone()),
            ..ScanRequest::full(table.clone())
        })
        .unwrap();
    let mut ids = Vec::new();
    for split in plan.splits {
        let batches: Vec<RecordBatch> = split.source.open().unwrap().try_collect().await.unwrap();
        for b in batches {
            let column = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            ids.extend(column.values().iter());
        }
    }
    ids
}
