//! Fresh writes over older runs: every key is live in one place (deletion vectors for runs, the
//! memtable's keys for rows not yet flushed), so runs are read side by side, value filters prune
//! row groups without an older version of a row coming back, and the answer survives flushes,
//! reopening, a reader process and compaction.

mod common;

use std::collections::BTreeMap;

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray};
use quarry_core::schema::KeyspaceDef;
use quarry_store::{CmpOp, EmbeddedOptions, EmbeddedStore, Predicate, ScanRequest, Store};

use common::{
    by_key, name, new_store_with_options, new_store_with_shards, read, rows, scan_all,
    small_options, table,
};

type Rows = BTreeMap<(i64, i64), f64>;

/// Writes `batches` in order and folds them into the expected table (later writes win).
async fn write_all(
    store: &EmbeddedStore,
    expected: &mut Rows,
    batches: Vec<arrow::array::RecordBatch>,
) {
    for batch in batches {
        expected.extend(by_key(std::slice::from_ref(&batch)));
        store.write(&name(), vec![batch]).await.unwrap();
    }
}

/// The rows with `value < bound`, read with the bound pushed down as a pruning hint (and applied
/// again here, as the SQL layer does).
async fn below(store: &EmbeddedStore, bound: f64) -> Rows {
    let mut request = ScanRequest::full(name());
    request.filters = vec![Predicate::Compare {
        column: "value".into(),
        op: CmpOp::Lt,
        value: std::sync::Arc::new(Float64Array::from(vec![bound])),
    }];
    let plan = store.plan_scan(&request).unwrap();
    by_key(&read(plan).await)
        .into_iter()
        .filter(|(_, v)| *v < bound)
        .collect()
}

fn filtered(expected: &Rows, bound: f64) -> Rows {
    expected
        .iter()
        .filter(|(_, v)| **v < bound)
        .map(|(k, v)| (*k, *v))
        .collect()
}

/// Rows the plan's splits return in all, counting any key twice.
async fn rows_read(store: &EmbeddedStore) -> usize {
    let plan = store.plan_scan(&ScanRequest::full(name())).unwrap();
    read(plan).await.iter().map(|b| b.num_rows()).sum()
}

#[tokio::test]
async fn fresh_overlapping_writes_are_read_side_by_side_and_never_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store_with_shards(dir.path(), 64).await;
    let mut expected = Rows::new();
    // A base run (version 1: values 1000 + ...), then small writes spread over the ring that
    // update part of it and add new rows, and a bulk write over part of both.
    write_all(&store, &mut expected, vec![rows(0..200, 0..20, 1.0)]).await;
    let small: Vec<_> = (0..6)
        .map(|i| rows(i * 30..i * 30 + 30, 15..25, 2.0 + i as f64))
        .collect();
    write_all(&store, &mut expected, small).await;
    write_all(&store, &mut expected, vec![rows(100..160, 10..30, 9.0)]).await;
    write_all(&store, &mut expected, vec![rows(150..170, 0..5, 10.0)]).await;

    assert_eq!(scan_all(&store).await, expected);
    assert_eq!(rows_read(&store).await, expected.len());
    // Only version-1 values are below 2000: rows whose newer version was pruned by statistics
    // must not come back in their old version.
    assert_eq!(below(&store, 2000.0).await, filtered(&expected, 2000.0));
    store.flush().unwrap();
    let stats = store.table_stats(&name()).unwrap();
    assert!(stats.runs >= 2, "{stats:?}");
    assert!(stats.deleted_rows > 0, "{stats:?}");
    assert_eq!(
        stats.run_rows - stats.deleted_rows,
        expected.len() as u64,
        "{stats:?}"
    );
    assert_eq!(scan_all(&store).await, expected);
    assert_eq!(below(&store, 2000.0).await, filtered(&expected, 2000.0));

    // Deletion vectors are durable: a reader process and a reopened writer see the same rows.
    let reader = EmbeddedStore::open_reader(dir.path(), small_options()).unwrap();
    assert_eq!(scan_all(&reader).await, expected);
    assert_eq!(
        reader.table_stats(&name()).unwrap().deleted_rows,
        stats.deleted_rows
    );
    drop(store);
    let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    assert_eq!(scan_all(&store).await, expected);
    assert_eq!(below(&store, 2000.0).await, filtered(&expected, 2000.0));

    // Compaction drops the superseded rows for good.
    assert!(store.compact(&name()).unwrap().is_some());
    let stats = store.table_stats(&name()).unwrap();
    assert_eq!((stats.runs, stats.deleted_rows), (1, 0), "{stats:?}");
    assert_eq!(stats.run_rows, expected.len() as u64);
    assert_eq!(scan_all(&store).await, expected);
    assert_eq!(scan_all(&reader).await, expected);
    // Superseded deletion vectors and data files are gone from disk.
    drop(reader);
    drop(store);
    let left: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".del-"))
        .collect();
    assert!(left.is_empty(), "deletion vectors left behind: {left:?}");
}

#[tokio::test]
async fn compaction_holds_one_window_of_shards_in_memory_and_keeps_every_live_row() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing compacts before the test asks.
    let options = EmbeddedOptions {
        max_runs: 100,
        max_dead_fraction: 1.0,
        ..small_options()
    };
    let store = new_store_with_options(dir.path(), 64, options.clone()).await;
    let mut expected = Rows::new();
    // Bulk writes (each a run) over the whole ring, each updating part of the one before.
    let loads: Vec<_> = (0..6)
        .map(|i| rows(i * 40..i * 40 + 80, 0..25, 1.0 + i as f64))
        .collect();
    write_all(&store, &mut expected, loads).await;
    assert_eq!(store.table_stats(&name()).unwrap().runs, 6);
    assert!(store.compact(&name()).unwrap().is_some());

    let stats = store.table_stats(&name()).unwrap();
    let report = stats.last_compaction.expect("a compaction report");
    assert_eq!(stats.runs, 1);
    assert_eq!(report.rows, expected.len() as u64);
    assert_eq!(stats.run_rows - stats.deleted_rows, expected.len() as u64);
    // 5,000 live rows, rewritten in windows of about rows_per_file (1,000) rows: a shard holds
    // far fewer than that, so no window needs more than twice as much, and the whole table is
    // never in memory at once.
    let per_file = options.rows_per_file as u64;
    assert!(
        report.largest_window_rows <= 2 * per_file,
        "a window held {} rows",
        report.largest_window_rows
    );
    assert!(report.windows as u64 >= report.rows / (2 * per_file));
    assert_eq!(scan_all(&store).await, expected);
    drop(store);
    let reopened = EmbeddedStore::open(dir.path(), options).unwrap();
    assert_eq!(scan_all(&reopened).await, expected);
    assert_eq!(
        reopened.table_stats(&name()).unwrap().last_compaction,
        Some(report)
    );
}

#[tokio::test]
async fn memtable_rows_hide_older_rows_and_newer_runs_hide_memtable_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store_with_shards(dir.path(), 64).await;
    let mut expected = Rows::new();
    write_all(&store, &mut expected, vec![rows(0..100, 0..20, 1.0)]).await;
    // A small write (memtable) updating 60 rows of the run: hidden without a deletion vector.
    write_all(&store, &mut expected, vec![rows(10..70, 3..4, 2.0)]).await;
    let stats = store.table_stats(&name()).unwrap();
    assert_eq!(
        (stats.memtable_rows, stats.deleted_rows),
        (60, 0),
        "{stats:?}"
    );
    assert_eq!(scan_all(&store).await, expected);
    assert_eq!(rows_read(&store).await, expected.len());
    assert_eq!(below(&store, 2000.0).await, filtered(&expected, 2000.0));

    // A bulk write newer than the memtable rows: it wins over them, and over the run.
    write_all(&store, &mut expected, vec![rows(50..120, 0..20, 3.0)]).await;
    assert_eq!(scan_all(&store).await, expected);
    assert_eq!(rows_read(&store).await, expected.len());
    // A small write again, newer than both runs.
    write_all(&store, &mut expected, vec![rows(60..65, 0..20, 4.0)]).await;
    assert_eq!(scan_all(&store).await, expected);
    assert_eq!(rows_read(&store).await, expected.len());
    assert_eq!(below(&store, 4000.0).await, filtered(&expected, 4000.0));

    // Restart with the memtable still in the log: replayed, flushed, same answer.
    drop(store);
    let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    assert_eq!(scan_all(&store).await, expected);
    assert_eq!(rows_read(&store).await, expected.len());
    let stats = store.table_stats(&name()).unwrap();
    assert_eq!(stats.memtable_rows, 0, "{stats:?}");
    assert_eq!(
        stats.run_rows - stats.deleted_rows,
        expected.len() as u64,
        "{stats:?}"
    );
}

#[tokio::test]
async fn scans_between_small_writes_see_each_state_of_the_memtable() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store_with_shards(dir.path(), 64).await;
    let mut expected = Rows::new();
    write_all(&store, &mut expected, vec![rows(0..100, 0..20, 1.0)]).await;
    for round in 0..8i64 {
        // A scan planned now and read after the write must still see this moment.
        let planned = store.plan_scan(&ScanRequest::full(name())).unwrap();
        let before = expected.clone();
        // Each write updates rows of the run and of earlier writes, and adds new ones.
        let batch = rows(round * 10..round * 10 + 30, 18..22, 2.0 + round as f64);
        write_all(&store, &mut expected, vec![batch]).await;
        assert_eq!(scan_all(&store).await, expected, "round {round}");
        assert_eq!(rows_read(&store).await, expected.len(), "round {round}");
        assert_eq!(by_key(&read(planned).await), before, "round {round}");
    }
    assert_eq!(below(&store, 2000.0).await, filtered(&expected, 2000.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_small_writes_are_all_acknowledged_durable_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(new_store_with_shards(dir.path(), 64).await);
    let mut expected = Rows::new();
    write_all(&store, &mut expected, vec![rows(0..100, 0..20, 1.0)]).await;
    // Eight writers at once (their writes share log syncs), each over its own devices, updating
    // rows of the run and adding new ones.
    let writers: Vec<_> = (0..8i64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..25i64 {
                    let batch = rows(w * 12..w * 12 + 12, 15 + i..16 + i, 2.0 + i as f64);
                    store.write(&name(), vec![batch.clone()]).await.unwrap();
                    mine.push(batch);
                }
                mine
            })
        })
        .collect();
    for writer in writers {
        for batch in writer.await.unwrap() {
            expected.extend(by_key(std::slice::from_ref(&batch)));
        }
    }
    assert_eq!(scan_all(&store).await, expected);
    assert_eq!(rows_read(&store).await, expected.len());
    // Everything acknowledged survives a restart (replayed from the log or in runs).
    let store = std::sync::Arc::try_unwrap(store).unwrap();
    drop(store);
    let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    assert_eq!(scan_all(&store).await, expected);
}

/// Background flushes and two compaction threads while small writes and bulk loads (which
/// take their sequence number before writing their files) arrive together: every key ends at
/// its newest version, and once idle the table is compacted down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn background_compactions_side_by_side_keep_the_newest_version_of_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        background: true,
        compaction_threads: 2,
        max_runs: 2,
        ..small_options()
    };
    let store = std::sync::Arc::new(EmbeddedStore::open(dir.path(), options.clone()).unwrap());
    store
        .create_keyspace(
            KeyspaceDef {
                shards: 32,
                ..KeyspaceDef::new("iot")
            },
            false,
        )
        .await
        .unwrap();
    store.create_table(table(), false).await.unwrap();
    // Each writer owns its devices, so the newest version of a row is its writer's last write.
    let writers: Vec<_> = (0..6i64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..30i64 {
                    // Every fifth write is a bulk load (a run of its own, written directly).
                    let seqs = if i % 5 == 4 {
                        0..120
                    } else {
                        (i % 7) * 10..(i % 7) * 10 + 30
                    };
                    let batch = rows(w * 10..w * 10 + 10, seqs, 1.0 + i as f64);
                    store.write(&name(), vec![batch.clone()]).await.unwrap();
                    mine.push(batch);
                }
                mine
            })
        })
        .collect();
    let mut expected = Rows::new();
    for writer in writers {
        for batch in writer.await.unwrap() {
            expected.extend(by_key(std::slice::from_ref(&batch)));
        }
    }
    same_rows(
        &scan_all(&store).await,
        &expected,
        "while background work runs",
    );
    store.wait_idle();
    same_rows(&scan_all(&store).await, &expected, "once idle");
    assert_eq!(rows_read(&store).await, expected.len());
    let stats = store.table_stats(&name()).unwrap();
    assert!(
        stats.overlap_depth <= options.max_runs,
        "idle with {} runs overlapping",
        stats.overlap_depth
    );
    let store = std::sync::Arc::try_unwrap(store).unwrap();
    drop(store);
    let store = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    same_rows(&scan_all(&store).await, &expected, "after reopening");
}

/// The cover thread works out, as writes arrive, which rows of the runs the memtable hides, while
/// background flushes and compactions replace those runs under it. Every scan, planned right
/// after a write or once the thread has caught up, reads the table as it stood at one moment
/// between the last write acknowledged before it was planned and the last one begun by then:
/// no older version of a row, no row twice, no row lost, with and without a value filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scans_while_writes_arrive_read_one_moment_of_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        background: true,
        memtable_flush_rows: 2_000,
        max_runs: 2,
        ..small_options()
    };
    let store = Arc::new(new_store_with_options(dir.path(), 32, options).await);
    let mut expected = Rows::new();
    write_all(&store, &mut expected, vec![rows(0..100, 0..50, 1.0)]).await;
    store.wait_idle();
    // Every state the table passes through, and how many of them writes have acknowledged.
    let states = Arc::new(std::sync::Mutex::new((vec![expected], 0usize)));
    let writer = {
        let (store, states) = (store.clone(), states.clone());
        tokio::spawn(async move {
            for i in 0..60i64 {
                // Updates of the run's rows and of earlier writes' rows, and new rows.
                let devices = (i * 7) % 90..(i * 7) % 90 + 10;
                let batch = rows(devices, 40 + i % 15..55 + i % 15, 2.0 + i as f64);
                {
                    let mut states = states.lock().unwrap();
                    let mut next = states.0.last().unwrap().clone();
                    next.extend(by_key(std::slice::from_ref(&batch)));
                    states.0.push(next);
                }
                store.write(&name(), vec![batch]).await.unwrap();
                states.lock().unwrap().1 += 1;
                // Some scans come right after a write, some after the cover thread's turn.
                let pause = [0, 30, 150, 250][i as usize % 4];
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
        })
    };
    let mut scans = 0;
    while !writer.is_finished() {
        let acknowledged = states.lock().unwrap().1;
        let bound = if scans % 2 == 0 {
            f64::INFINITY
        } else {
            20_000.0
        };
        let mut request = ScanRequest::full(name());
        request.filters = vec![Predicate::Compare {
            column: "value".into(),
            op: CmpOp::Lt,
            value: Arc::new(Float64Array::from(vec![bound])),
        }];
        let plan = store.plan_scan(&request).unwrap();
        let begun = states.lock().unwrap().0.len() - 1;
        let read: Rows = by_key(&read(plan).await)
            .into_iter()
            .filter(|(_, v)| *v < bound)
            .collect();
        let states = states.lock().unwrap();
        let moments = &states.0[acknowledged..=begun];
        if !moments.iter().any(|state| filtered(state, bound) == read) {
            same_rows(
                &read,
                &filtered(moments.last().unwrap(), bound),
                &format!(
                    "scan {scan} below {bound}, planned after write {acknowledged}",
                    scan = scans
                ),
            );
            panic!("scan {scans} read none of the states after writes {acknowledged}..={begun}");
        }
        scans += 1;
    }
    writer.await.unwrap();
    assert!(scans >= 20, "only {scans} scans ran beside the writes");
    let last = states.lock().unwrap().0.last().unwrap().clone();
    same_rows(&scan_all(&store).await, &last, "after the writes");
    store.wait_idle();
    same_rows(&scan_all(&store).await, &last, "once idle");
    assert_eq!(rows_read(&store).await, last.len());
}

/// A scan that drops superseded rows anyway applies the query's predicates in the same pass: it
/// keeps every row they match, returns no superseded version, and leaves a predicate whose
/// literal does not convert to the column's type without loss to the query.
#[tokio::test]
async fn predicates_applied_beside_superseded_rows_keep_every_matching_row() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing compacts the superseded rows away.
    let options = EmbeddedOptions {
        max_runs: 100,
        max_dead_fraction: 1.0,
        ..small_options()
    };
    let store = new_store_with_options(dir.path(), 64, options).await;
    let mut expected = Rows::new();
    write_all(&store, &mut expected, vec![rows(0..200, 0..20, 1.0)]).await;
    // Updates spread over the ring: the first flushed into a run (deletion vectors), the rest
    // still in the memtable (hiding rows through its keys).
    let updates: Vec<_> = (0..5)
        .map(|i| rows(i * 40..i * 40 + 8, 0..20, 2.0 + i as f64))
        .collect();
    write_all(&store, &mut expected, updates).await;
    let stats = store.table_stats(&name()).unwrap();
    assert!(
        stats.deleted_rows > 0 && stats.memtable_rows > 0,
        "{stats:?}"
    );

    let text = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let double = |v: f64| -> ArrayRef { Arc::new(Float64Array::from(vec![v])) };
    let compare = |column: &str, op, value| Predicate::Compare {
        column: column.into(),
        op,
        value,
    };
    // (predicates, the same test on a row (seq, value), whether the scan can apply them)
    type Matches = fn(i64, f64) -> bool;
    let cases: Vec<(Vec<Predicate>, Matches, bool)> = vec![
        (
            vec![
                compare("sensor", CmpOp::Eq, text("temp")),
                compare("value", CmpOp::Gt, double(1500.0)),
            ],
            |seq, value| seq % 2 == 0 && value > 1500.0,
            true,
        ),
        (
            vec![
                Predicate::InList {
                    column: "sensor".into(),
                    values: Arc::new(StringArray::from(vec!["temp", "cold"])),
                },
                compare("value", CmpOp::LtEq, double(2500.0)),
            ],
            |seq, value| seq % 2 == 0 && value <= 2500.0,
            true,
        ),
        // `seq` is a bigint: 1.5 would become 1 and drop the rows with seq 1.
        (
            vec![compare("seq", CmpOp::Lt, double(1.5))],
            |seq, _| seq < 2,
            false,
        ),
    ];
    for (filters, matches, applied) in cases {
        let mut request = ScanRequest::full(name());
        request.filters = filters.clone();
        let returned = by_key(&read(store.plan_scan(&request).unwrap()).await);
        for (key, value) in &returned {
            assert_eq!(expected.get(key), Some(value), "{key:?} with {filters:?}");
        }
        let kept = |rows: &Rows| -> Rows {
            rows.iter()
                .filter(|((_, seq), value)| matches(*seq, **value))
                .map(|(k, v)| (*k, *v))
                .collect()
        };
        same_rows(&kept(&returned), &kept(&expected), &format!("{filters:?}"));
        // Applied in the scan where they can be, left to the query where they cannot.
        assert_eq!(
            returned.len() < expected.len(),
            applied,
            "{} of {} rows returned with {filters:?}",
            returned.len(),
            expected.len()
        );
    }
}

/// Fails naming how many rows differ and the first few of them (the tables are too large to
/// print whole).
fn same_rows(read: &Rows, expected: &Rows, when: &str) {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(k, v)| read.get(k) != Some(v))
        .map(|(k, v)| format!("{k:?}: read {:?}, expected {v}", read.get(k)))
        .collect();
    let extra = read.keys().filter(|k| !expected.contains_key(k)).count();
    assert!(
        wrong.is_empty() && extra == 0,
        "{when}: {} of {} rows wrong, {extra} unexpected; first: {:?}",
        wrong.len(),
        expected.len(),
        &wrong[..wrong.len().min(5)]
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
