//! The embedded store's contract: upserts, pushdown that prunes without changing results,
//! snapshots that survive concurrent flushes and compactions, bounded runs, and reopening.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, Float64Array, Int64Array, RecordBatch};
use quarry_core::ids::ShardId;
use quarry_core::schema::TableName;
use quarry_core::shard_map::ShardMap;
use quarry_core::shard_set::ShardSet;
use quarry_core::token::TokenRange;
use quarry_store::{CmpOp, EmbeddedOptions, EmbeddedStore, Predicate, ScanRequest, Store};

use common::{
    by_key, name, new_store_with_options, new_store_with_shards, read, rows, scan_all,
    small_options, token_of,
};

async fn new_store(dir: &std::path::Path) -> EmbeddedStore {
    new_store_with_shards(dir, 64).await
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
    assert!(store.compact(&name()).unwrap().is_some());
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
        shards: Some((10..=12).into()),
        ..ScanRequest::full(name())
    };
    let plan = store.plan_scan(&request).unwrap();
    assert_eq!(plan.shards_selected, 3);
    let range = TokenRange::new(
        shards.range_of(ShardId(10)).start,
        shards.range_of(ShardId(12)).end,
    );
    let got = read(plan).await;
    let all = scan_all(&store).await;
    let expected: BTreeMap<_, _> = all
        .into_iter()
        .filter(|((d, _), _)| range.contains(token_of(*d)))
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
    // The new write superseded every row of the first run: compaction may already have run.
    store.compact(&name()).unwrap();
    assert_eq!(store.table_stats(&name()).unwrap().runs, 1);
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

/// The rows of `all` whose device's token falls in one of `set`'s shards.
fn rows_in(
    all: &BTreeMap<(i64, i64), f64>,
    shards: ShardMap,
    set: &ShardSet,
) -> BTreeMap<(i64, i64), f64> {
    all.iter()
        .filter(|((d, _), _)| set.contains(shards.shard_of(token_of(*d))))
        .map(|(k, v)| (*k, *v))
        .collect()
}

async fn scan_shards(store: &EmbeddedStore, set: &ShardSet) -> (u32, BTreeMap<(i64, i64), f64>) {
    let request = ScanRequest {
        shards: Some(set.clone()),
        ..ScanRequest::full(name())
    };
    let plan = store.plan_scan(&request).unwrap();
    (plan.shards_selected, by_key(&read(plan).await))
}

/// A non-contiguous set returns exactly its shards' rows, and the sets of a partition of the
/// shards together return the full scan, each row once.
async fn check_shard_sets(store: &EmbeddedStore, shards: ShardMap) {
    let all = scan_all(store).await;
    let set = ShardSet::from_shards([1, 2, 3, 7, 8, 12, 15].map(ShardId));
    let (selected, got) = scan_shards(store, &set).await;
    assert_eq!(selected, 7);
    let expected = rows_in(&all, shards, &set);
    assert!(!expected.is_empty() && expected.len() < all.len());
    assert_eq!(got, expected);

    let parts: Vec<ShardSet> = (0..3)
        .map(|k| ShardSet::from_shards((0..16).filter(|i| i % 3 == k).map(ShardId)))
        .collect();
    let mut union = BTreeMap::new();
    let mut selected = 0;
    for part in &parts {
        let (part_selected, got) = scan_shards(store, part).await;
        assert_eq!(got, rows_in(&all, shards, part), "shards {part}");
        selected += part_selected;
        for (key, value) in got {
            assert!(union.insert(key, value).is_none(), "{key:?} in two sets");
        }
    }
    assert_eq!(selected, 16);
    assert_eq!(union, all);
}

#[tokio::test]
async fn many_small_writes_in_the_memtable_are_read_in_a_few_splits_each_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        memtable_flush_rows: 1_000_000,
        ..small_options()
    };
    let store = new_store_with_options(dir.path(), 16, options).await;
    // 300 writes of 400 rows, each over the whole ring, updating rows of earlier writes and
    // adding new ones: 300 chunks, about 98,000 live rows.
    let mut expected = BTreeMap::new();
    for w in 0..300i64 {
        let devices = (w * 37) % 4000;
        let seqs = (w % 7) * 5;
        let batch = rows(devices..devices + 20, seqs..seqs + 20, 1.0 + w as f64);
        expected.extend(by_key(std::slice::from_ref(&batch)));
        store.write(&name(), vec![batch]).await.unwrap();
    }
    let stats = store.table_stats(&name()).unwrap();
    assert_eq!(
        (stats.runs, stats.memtable_rows),
        (0, expected.len() as u64),
        "{stats:?}"
    );
    // Read in splits of at least 65,536 rows (the last one less), not one per write.
    let plan = store.plan_scan(&ScanRequest::full(name())).unwrap();
    let sizes: Vec<u64> = plan.splits.iter().map(|s| s.estimated_rows).collect();
    assert_eq!(sizes.len(), 2, "{sizes:?}");
    assert!(
        sizes[..sizes.len() - 1].iter().all(|&r| r >= 65_536),
        "{sizes:?}"
    );
    assert_eq!(sizes.iter().sum::<u64>(), expected.len() as u64);
    // Their batches are glued up to DataFusion's batch size, not one per write.
    let batches = read(plan).await;
    assert!(
        batches.len() <= expected.len() / 8192 + sizes.len(),
        "{} batches",
        batches.len()
    );
    assert_eq!(by_key(&batches), expected);
    // A limit, and shard sets that keep part of each chunk.
    let plan = store
        .plan_scan(&ScanRequest {
            limit: Some(10_000),
            ..ScanRequest::full(name())
        })
        .unwrap();
    let limited: usize = read(plan).await.iter().map(|b| b.num_rows()).sum();
    assert!(limited >= 10_000, "{limited} rows under a limit of 10,000");
    check_shard_sets(&store, ShardMap::new(16)).await;
}

#[tokio::test]
async fn a_shard_set_reads_exactly_its_shards() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store_with_shards(dir.path(), 16).await;
    let shards = ShardMap::new(16);
    // One run: every split is one row group, and row groups span two shards or so, so a set
    // keeps part of a group.
    store
        .write(&name(), vec![rows(0..400, 0..5, 1.0)])
        .await
        .unwrap();
    let set: ShardSet = "1-3,7-8,12,15".parse().unwrap();
    let plan = store
        .plan_scan(&ScanRequest {
            shards: Some(set.clone()),
            ..ScanRequest::full(name())
        })
        .unwrap();
    assert!(!plan.splits.is_empty());
    for split in &plan.splits {
        assert!(
            set.contains(ShardId(*split.shards.start()))
                && set.contains(ShardId(*split.shards.end())),
            "split over shards {:?} of {set}",
            split.shards
        );
    }
    check_shard_sets(&store, shards).await;

    // An overlapping run (new keys) and memtable rows (updates): splits of both runs and of the
    // memtable cover the same shards.
    store
        .write(&name(), vec![rows(200..400, 5..10, 2.0)])
        .await
        .unwrap();
    store
        .write(&name(), vec![rows(0..20, 0..3, 3.0)])
        .await
        .unwrap();
    assert_eq!(store.table_stats(&name()).unwrap().runs, 2);
    assert!(store.table_stats(&name()).unwrap().memtable_rows > 0);
    check_shard_sets(&store, shards).await;
}

#[tokio::test]
async fn shard_sets_combine_with_token_and_key_predicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store_with_shards(dir.path(), 16).await;
    let shards = ShardMap::new(16);
    store
        .write(&name(), vec![rows(0..400, 0..5, 1.0)])
        .await
        .unwrap();
    let all = scan_all(&store).await;

    // token > 0 is the upper half of the ring, shards 8 to 15: of 1-3 and 12, only 12.
    let request = ScanRequest {
        shards: Some("1-3,12".parse().unwrap()),
        filters: vec![Predicate::token_compare(CmpOp::Gt, 0)],
        ..ScanRequest::full(name())
    };
    let plan = store.plan_scan(&request).unwrap();
    assert_eq!(plan.shards_selected, 1);
    let twelve = ShardSet::from_shards([ShardId(12)]);
    assert_eq!(by_key(&read(plan).await), rows_in(&all, shards, &twelve));

    // Shards past the keyspace's 16 are ignored.
    let (selected, got) = scan_shards(&store, &"14-20,40".parse().unwrap()).await;
    assert_eq!(selected, 2);
    assert_eq!(got, rows_in(&all, shards, &ShardSet::from(14..=15)));
    for set in [ShardSet::from(16..=20), ShardSet::new()] {
        let plan = store
            .plan_scan(&ScanRequest {
                shards: Some(set),
                ..ScanRequest::full(name())
            })
            .unwrap();
        assert_eq!((plan.shards_selected, plan.splits.len()), (0, 0));
    }

    // A partition-key equality reads the device only when its shard is in the set.
    let device = 17;
    let shard = shards.shard_of(token_of(device));
    let equality = vec![Predicate::Compare {
        column: "device".into(),
        op: CmpOp::Eq,
        value: Arc::new(Int64Array::from(vec![device])),
    }];
    let with = ShardSet::from_shards([shard, ShardId((shard.0 + 5) % 16)]);
    let without = ShardSet::from_shards(shards.all().filter(|s| *s != shard));
    let plan = store
        .plan_scan(&ScanRequest {
            shards: Some(with),
            filters: equality.clone(),
            ..ScanRequest::full(name())
        })
        .unwrap();
    assert_eq!(plan.shards_selected, 1);
    let got = by_key(&read(plan).await);
    assert_eq!(got.keys().filter(|(d, _)| *d == device).count(), 5);
    let plan = store
        .plan_scan(&ScanRequest {
            shards: Some(without),
            filters: equality,
            ..ScanRequest::full(name())
        })
        .unwrap();
    assert_eq!((plan.shards_selected, plan.splits.len()), (0, 0));
}

#[tokio::test]
async fn a_lost_manifest_is_refused_and_the_data_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path()).await;
    store
        .write(&name(), vec![rows(0..50, 0..4, 1.0)])
        .await
        .unwrap();
    store.flush().unwrap();
    drop(store);
    let data_files = || {
        walkdir(&dir.path().join("data"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count()
    };
    let before = data_files();
    assert!(before > 0);
    std::fs::remove_file(dir.path().join("MANIFEST.json")).unwrap();
    let err = EmbeddedStore::open(dir.path(), small_options())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("manifest is missing") && err.contains("Restore"),
        "{err}"
    );
    assert_eq!(data_files(), before, "no data file was removed");
}

#[tokio::test]
async fn a_drop_whose_commit_fails_leaves_memory_and_disk_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path()).await;
    store
        .write(&name(), vec![rows(0..10, 0..2, 1.0)])
        .await
        .unwrap();
    let before = scan_all(&store).await;
    // The manifest is replaced through `MANIFEST.json.tmp`: a directory there makes every commit
    // fail, as a full or read-only disk would.
    let blocker = dir.path().join("MANIFEST.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    assert!(store.drop_table(&name(), false).await.is_err());
    assert!(store.drop_keyspace("iot", false).await.is_err());
    assert_eq!(store.table(&name()).unwrap().table_name(), name());
    assert_eq!(scan_all(&store).await, before);
    std::fs::remove_dir(&blocker).unwrap();
    drop(store);
    let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    assert_eq!(scan_all(&store).await, before, "after a restart too");
    // And the drop works once the disk does.
    assert!(store.drop_keyspace("iot", false).await.unwrap());
    assert!(store.table(&name()).is_err());
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        } else {
            out.push(path);
        }
    }
    out
}
