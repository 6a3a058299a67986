//! The embedded store's contract: upserts, pushdown that prunes without changing results,
//! snapshots that survive concurrent flushes and compactions, bounded runs, and reopening.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Float64Type, Int64Type};
use futures::TryStreamExt;
use quarry_core::cql_type::CqlType;
use quarry_core::schema::{ColumnDef, KeyspaceDef, TableDef, TableName};
use quarry_core::shard_map::ShardMap;
use quarry_core::token::TokenRange;
use quarry_store::{
    CmpOp, EmbeddedOptions, EmbeddedStore, Predicate, ScanPlan, ScanRequest, Store,
};

fn table() -> TableDef {
    TableDef::new(
        "iot",
        "r",
        vec![
            ColumnDef::new("device", CqlType::BigInt),
            ColumnDef::new("seq", CqlType::BigInt),
            ColumnDef::new("sensor", CqlType::Text),
            ColumnDef::new("value", CqlType::Double),
        ],
        vec!["device".into()],
        vec!["seq".into()],
    )
    .unwrap()
}

fn name() -> TableName {
    TableName::new("iot", "r")
}

fn small_options() -> EmbeddedOptions {
    EmbeddedOptions {
        memtable_flush_rows: 500,
        bulk_write_rows: 1_000,
        rows_per_group: 200,
        rows_per_file: 1_000,
        max_runs: 3,
        merge_split_shards: 8,
        background: false,
    }
}

/// Rows for devices × seqs with value = f(device, seq, version).
fn rows(devices: std::ops::Range<i64>, seqs: std::ops::Range<i64>, version: f64) -> RecordBatch {
    let mut d = Vec::new();
    let mut s = Vec::new();
    let mut sensor = Vec::new();
    let mut v = Vec::new();
    for device in devices {
        for seq in seqs.clone() {
            d.push(device);
            s.push(seq);
            sensor.push(if seq % 2 == 0 { "temp" } else { "hum" });
            v.push(version * 1000.0 + (device * 10 + seq) as f64);
        }
    }
    RecordBatch::try_new(
        table().arrow_schema(),
        vec![
            Arc::new(Int64Array::from(d)),
            Arc::new(Int64Array::from(s)),
            Arc::new(StringArray::from(sensor)),
            Arc::new(Float64Array::from(v)),
        ],
    )
    .unwrap()
}

async fn new_store(dir: &std::path::Path) -> EmbeddedStore {
    let store = EmbeddedStore::open(dir, small_options()).unwrap();
    let mut ks = KeyspaceDef::new("iot");
    ks.shards = 64;
    store.create_keyspace(ks, false).await.unwrap();
    store.create_table(table(), false).await.unwrap();
    store
}

async fn read(plan: ScanPlan) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for split in plan.splits {
        let batches: Vec<RecordBatch> = split.source.open().unwrap().try_collect().await.unwrap();
        out.extend(batches);
    }
    out
}

/// (device, seq) -> value over every returned row; panics on a duplicate key.
fn by_key(batches: &[RecordBatch]) -> BTreeMap<(i64, i64), f64> {
    let mut out = BTreeMap::new();
    for b in batches {
        let d = b.column(0).as_primitive::<Int64Type>();
        let s = b.column(1).as_primitive::<Int64Type>();
        let v = b.column(3).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            assert!(
                out.insert((d.value(i), s.value(i)), v.value(i)).is_none(),
                "key ({}, {}) returned twice",
                d.value(i),
                s.value(i)
            );
        }
    }
    out
}

async fn scan_all(store: &EmbeddedStore) -> BTreeMap<(i64, i64), f64> {
    by_key(&read(store.plan_scan(&ScanRequest::full(name())).unwrap()).await)
}

#[tokio::test]
async fn upserts_resolve_across_log_memtable_runs_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path()).await;
    // A bulk run, then small writes over part of it (log + memtable), then another bulk run.
    store
        .write(&name(), vec![rows(0..50, 0..40, 1.0)])
        .await
        .unwrap();
    store
        .write(&name(), vec![rows(0..5, 0..10, 2.0)])
        .await
        .unwrap();
    store
        .write(&name(), vec![rows(3..8, 5..15, 3.0)])
        .await
        .unwrap();
    store
        .write(&name(), vec![rows(40..60, 30..45, 4.0)])
        .await
        .unwrap();

    let expected = {
        let mut m = BTreeMap::new();
        for (batch, _) in [
            (rows(0..50, 0..40, 1.0), 1),
            (rows(0..5, 0..10, 2.0), 2),
            (rows(3..8, 5..15, 3.0), 3),
            (rows(40..60, 30..45, 4.0), 4),
        ] {
            m.extend(by_key(&[batch]));
        }
        m
    };
    assert_eq!(scan_all(&store).await, expected);
    store.flush().unwrap();
    assert_eq!(scan_all(&store).await, expected);
    assert!(store.table_stats(&name()).unwrap().runs >= 2);
    assert!(store.compact(&name()).unwrap());
    let stats = store.table_stats(&name()).unwrap();
    assert_eq!((stats.runs, stats.memtable_rows), (1, 0));
    assert_eq!(stats.run_rows as usize, expected.len());
    assert_eq!(scan_all(&store).await, expected);

    // Reopen: the same table, from the manifest alone.
    drop(store);
    let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    assert_eq!(scan_all(&store).await, expected);
}

#[tokio::test]
async fn many_small_loads_keep_the_run_count_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path()).await;
    for i in 0..12 {
        store
            .write(&name(), vec![rows(i * 10..i * 10 + 10, 0..100, i as f64)])
            .await
            .unwrap();
        let runs = store.table_stats(&name()).unwrap().runs;
        assert!(runs <= 4, "after load {i} the table has {runs} runs");
    }
    assert_eq!(scan_all(&store).await.len(), 12 * 10 * 100);
}

#[tokio::test]
async fn a_partition_key_equality_reads_one_shard() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path()).await;
    store
        .write(&name(), vec![rows(0..200, 0..20, 1.0)])
        .await
        .unwrap();
    let request = ScanRequest {
        filters: vec![Predicate::Compare {
            column: "device".into(),
            op: CmpOp::Eq,
            value: Arc::new(Int64Array::from(vec![17])),
        }],
        ..ScanRequest::full(name())
    };
    let plan = store.plan_scan(&request).unwrap();
    assert_eq!(plan.shards_selected, 1);
    assert_eq!(plan.splits.len(), 1);
    let rows_read: u64 = plan.splits.iter().map(|s| s.estimated_rows).sum();
    assert!(rows_read < 4000 / 4, "read {rows_read} rows for one device");
    let got = by_key(&read(plan).await);
    // The split holds device 17 (and possibly neighbours in its row group; filters are hints).
    assert_eq!(got.keys().filter(|(d, _)| *d == 17).count(), 20);
}

#[tokio::test]
async fn token_ranges_read_only_overlapping_shards_and_exactly_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path()).await;
    store
        .write(&name(), vec![rows(0..300, 0..10, 1.0)])
        .await
        .unwrap();
    store
        .write(&name(), vec![rows(0..10, 0..3, 2.0)])
        .await
        .unwrap();
    let shards = ShardMap::new(64);
    // Shards 10..=12 by an explicit shard restriction: rows outside must not come back.
    let request = ScanRequest {
        shards: Some(10..=12),
        ..ScanRequest::full(name())
    };
    let plan = store.plan_scan(&request).unwrap();
    assert_eq!(plan.shards_selected, 3);
    let range = TokenRange::new(
        shards.range_of(quarry_core::ids::ShardId(10)).start,
        shards.range_of(quarry_core::ids::ShardId(12)).end,
    );
    let got = read(plan).await;
    let all = scan_all(&store).await;
    let tokens_of = |device: i64| {
        let values: arrow::array::ArrayRef = Arc::new(Int64Array::from(vec![device]));
        quarry_core::partition_key::tokens(
            &[quarry_core::partition_key::KeyColumn {
                name: "device",
                cql_type: CqlType::BigInt,
                values: &values,
            }],
            1,
        )
        .unwrap()
        .value(0)
    };
    let expected: BTreeMap<_, _> = all
        .into_iter()
        .filter(|((d, _), _)| range.contains(tokens_of(*d)))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(by_key(&got), expected);

    let request = ScanRequest {
        filters: vec![Predicate::token_compare(CmpOp::Gt, 0)],
        ..ScanRequest::full(name())
    };
    let plan = store.plan_scan(&request).unwrap();
    assert!(
        (32..=33).contains(&plan.shards_selected),
        "{}",
        plan.shards_selected
    );
}

#[tokio::test]
async fn statistics_prune_row_groups_without_changing_results() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path()).await;
    store
        .write(&name(), vec![rows(0..300, 0..10, 1.0)])
        .await
        .unwrap();
    let full = store.plan_scan(&ScanRequest::full(name())).unwrap();
    // value = 1000 + device*10 + seq; no row group holds a value above 10_000.
    let request = ScanRequest {
        filters: vec![Predicate::Compare {
            column: "value".into(),
            op: CmpOp::Gt,
            value: Arc::new(Float64Array::from(vec![10_000.0])),
        }],
        ..ScanRequest::full(name())
    };
    let pruned = store.plan_scan(&request).unwrap();
    assert!(full.splits.len() > 1);
    assert_eq!(pruned.splits.len(), 0);
    // A bound inside the data keeps at least the groups holding matches.
    let request = ScanRequest {
        filters: vec![Predicate::Compare {
            column: "value".into(),
            op: CmpOp::GtEq,
            value: Arc::new(Float64Array::from(vec![3_990.0])),
        }],
        ..ScanRequest::full(name())
    };
    let plan = store.plan_scan(&request).unwrap();
    let got = by_key(&read(plan).await);
    let matching = scan_all(&store)
        .await
        .into_iter()
        .filter(|(_, v)| *v >= 3_990.0)
        .count();
    assert_eq!(got.values().filter(|v| **v >= 3_990.0).count(), matching);
    assert!(matching > 0);
}

#[tokio::test]
async fn projection_returns_only_the_asked_columns_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path()).await;
    store
        .write(&name(), vec![rows(0..10, 0..10, 1.0)])
        .await
        .unwrap();
    let request = ScanRequest {
        projection: Some(vec![3, 0]),
        ..ScanRequest::full(name())
    };
    let plan = store.plan_scan(&request).unwrap();
    assert_eq!(plan.schema.field(0).name(), "value");
    assert_eq!(plan.schema.field(1).name(), "device");
    let batches = read(plan).await;
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(total, 100);
    for b in &batches {
        assert_eq!(b.num_columns(), 2);
        assert!(
            b.column(0)
                .as_any()
                .downcast_ref::<Float64Array>()
                .is_some()
        );
        assert_eq!(b.column(1).null_count(), 0);
    }
}

#[tokio::test]
async fn a_planned_scan_keeps_its_snapshot_through_writes_flushes_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path()).await;
    store
        .write(&name(), vec![rows(0..40, 0..40, 1.0)])
        .await
        .unwrap();
    store
        .write(&name(), vec![rows(0..4, 0..4, 2.0)])
        .await
        .unwrap();
    let before = scan_all(&store).await;
    let plan = store.plan_scan(&ScanRequest::full(name())).unwrap();

    store
        .write(&name(), vec![rows(0..40, 0..40, 9.0)])
        .await
        .unwrap();
    store.flush().unwrap();
    assert!(store.compact(&name()).unwrap());
    // The old files were retired, but the plan still holds them.
    assert_eq!(by_key(&read(plan).await), before);
    let after = scan_all(&store).await;
    assert!(after.values().all(|v| *v >= 9000.0));
}

#[tokio::test]
async fn bad_writes_leave_the_table_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path()).await;
    store
        .write(&name(), vec![rows(0..5, 0..5, 1.0)])
        .await
        .unwrap();
    let before = scan_all(&store).await;
    let wrong = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("device", arrow::datatypes::DataType::Int64, false),
        ])),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .unwrap();
    let err = store
        .write(&name(), vec![rows(10..12, 0..2, 5.0), wrong])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expected 4 columns"), "{err}");
    let err = store
        .write(&TableName::new("iot", "nope"), vec![rows(0..1, 0..1, 1.0)])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("tables in 'iot' are iot.r"),
        "{err}"
    );
    assert_eq!(scan_all(&store).await, before);
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _store = new_store(dir.path()).await;
    let err = EmbeddedStore::open(dir.path(), small_options()).unwrap_err();
    assert!(err.to_string().contains("another quarry process"), "{err}");
}

#[tokio::test]
async fn restarts_do_not_pile_up_log_segments() {
    let dir = tempfile::tempdir().unwrap();
    drop(new_store(dir.path()).await);
    for i in 0..5 {
        let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
        store
            .write(&name(), vec![rows(i..i + 1, 0..3, 1.0)])
            .await
            .unwrap();
    }
    let segments = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
    assert!(segments <= 1, "{segments} log segments after five restarts");
    let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    assert_eq!(scan_all(&store).await.len(), 15);
}
