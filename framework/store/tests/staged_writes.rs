//! Distributed writes: readers (workers) stage parts of a statement as unlisted files, the
//! writer (driver) publishes all parts in one commit. Until then nobody sees them; a statement
//! that never commits leaves nothing behind once a writer reopens the directory.

mod common;

use std::collections::BTreeMap;

use quarry_store::{EmbeddedStore, FailureKind, StagedWrite, Store};

use common::{by_key, name, new_store_with_shards, rows, scan_all, small_options, table};

fn reader(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open_reader(dir, small_options()).unwrap()
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.join("data")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn staged_parts_are_invisible_until_committed_together() {
    let dir = tempfile::tempdir().unwrap();
    let writer = new_store_with_shards(dir.path(), 16).await;
    let old = rows(0..50, 0..4, 1.0);
    writer.write(&name(), vec![old.clone()]).await.unwrap();
    writer.flush().unwrap();

    // Two workers each write a part; the second overwrites some old rows and repeats a key
    // within itself (the later row wins, as in one write).
    let (a, b) = (reader(dir.path()), reader(dir.path()));
    let part_a = rows(100..140, 0..4, 2.0);
    let part_b = rows(20..60, 0..4, 3.0);
    let again = rows(20..21, 0..1, 4.0);
    let staged_a = a
        .stage_write(&name(), 7, vec![part_a.clone()])
        .await
        .unwrap();
    let staged_b = b
        .stage_write(&name(), 7, vec![part_b.clone(), again.clone()])
        .await
        .unwrap();
    assert_eq!((staged_a.rows, staged_b.rows), (160, 160));
    assert!(!staged_a.files.is_empty());

    let before: BTreeMap<_, _> = by_key(std::slice::from_ref(&old));
    assert_eq!(scan_all(&writer).await, before);
    assert_eq!(scan_all(&a).await, before);

    // A part travels to the driver as JSON.
    let json = serde_json::to_string(&staged_b).unwrap();
    let staged_b: StagedWrite = serde_json::from_str(&json).unwrap();

    let summary = writer
        .commit_writes(&name(), vec![staged_a, staged_b])
        .await
        .unwrap();
    assert_eq!(summary.rows, 320);
    let mut expected = before;
    for batch in [&part_a, &part_b, &again] {
        expected.extend(by_key(std::slice::from_ref(batch)));
    }
    assert_eq!(scan_all(&writer).await, expected);
    assert_eq!(scan_all(&a).await, expected);

    // Listed files survive a reopen; the table reads the same.
    drop((a, b));
    drop(writer);
    let writer = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    assert_eq!(scan_all(&writer).await, expected);
}

#[tokio::test]
async fn a_part_that_is_never_committed_is_removed_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let writer = new_store_with_shards(dir.path(), 16).await;
    let before = files_under(dir.path());
    let staged = reader(dir.path())
        .stage_write(&name(), 9, vec![rows(0..30, 0..2, 1.0)])
        .await
        .unwrap();
    assert!(files_under(dir.path()).len() > before.len());
    assert!(scan_all(&writer).await.is_empty());
    drop(writer);
    let writer = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    assert_eq!(files_under(dir.path()), before);
    assert!(scan_all(&writer).await.is_empty());
    // Its descriptor now names files that are gone: the commit fails and changes nothing.
    let err = writer
        .commit_writes(&name(), vec![staged])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::External, "{err}");
    assert!(scan_all(&writer).await.is_empty());
}

#[tokio::test]
async fn commits_refuse_parts_of_another_table_or_outside_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let writer = new_store_with_shards(dir.path(), 16).await;
    let staged = reader(dir.path())
        .stage_write(&name(), 9, vec![rows(0..30, 0..2, 1.0)])
        .await
        .unwrap();

    let mut escaping = staged.clone();
    escaping.files = vec![format!("{}/../../../MANIFEST.json", staged.files[0])];
    let err = writer
        .commit_writes(&name(), vec![escaping])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a staged file"), "{err}");

    let mut listed = staged.clone();
    listed.rows += 1;
    let err = writer
        .commit_writes(&name(), vec![listed])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("reported 61"), "{err}");
    assert!(scan_all(&writer).await.is_empty());

    // The table is dropped and created again: the old part belongs to the old table.
    writer.drop_table(&name(), false).await.unwrap();
    writer.create_table(table(), false).await.unwrap();
    let err = writer
        .commit_writes(&name(), vec![staged])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::User);
    assert!(err.to_string().contains("created again"), "{err}");

    // A reader cannot publish.
    let err = reader(dir.path())
        .commit_writes(&name(), Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
}

#[tokio::test]
async fn a_failed_statement_discards_its_parts_and_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let writer = new_store_with_shards(dir.path(), 16).await;
    let before = files_under(dir.path());
    let workers = (reader(dir.path()), reader(dir.path()));
    let failed = [
        workers
            .0
            .stage_write(&name(), 11, vec![rows(0..30, 0..2, 1.0)])
            .await
            .unwrap(),
        workers
            .1
            .stage_write(&name(), 11, vec![rows(30..60, 0..2, 1.0)])
            .await
            .unwrap(),
    ];
    let other = workers
        .0
        .stage_write(&name(), 12, vec![rows(60..90, 0..2, 2.0)])
        .await
        .unwrap();
    let written: usize = failed.iter().map(|p| p.files.len()).sum();
    assert_eq!(writer.discard_writes(&name(), 11).unwrap(), written);
    assert_eq!(
        files_under(dir.path()).len(),
        before.len() + other.files.len()
    );
    // The other statement still commits; the discarded one cannot.
    let summary = writer
        .commit_writes(&name(), vec![other.clone()])
        .await
        .unwrap();
    assert_eq!(summary.rows, 60);
    assert_eq!(scan_all(&writer).await.len(), 60);
    assert!(
        writer
            .commit_writes(&name(), failed.to_vec())
            .await
            .is_err()
    );
    assert_eq!(writer.discard_writes(&name(), 11).unwrap(), 0);
    // Only the writer deletes.
    assert!(workers.0.discard_writes(&name(), 12).is_err());
}

#[tokio::test]
async fn parts_of_interleaved_shards_do_not_overlap_for_scans() {
    let dir = tempfile::tempdir().unwrap();
    let writer = new_store_with_shards(dir.path(), 16).await;
    let shards = quarry_core::shard_map::ShardMap::new(16);
    // Two writers, each with every other shard, as placement scatters a node's shards.
    let all = rows(0..400, 0..3, 1.0);
    let devices = all
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap();
    let of_parity = |parity: u32| {
        let keep: arrow::array::BooleanArray = devices
            .values()
            .iter()
            .map(|&d| Some(shards.shard_of(common::token_of(d)).0 % 2 == parity))
            .collect();
        arrow::compute::filter_record_batch(&all, &keep).unwrap()
    };
    let (even, odd) = (of_parity(0), of_parity(1));
    let parts = vec![
        reader(dir.path())
            .stage_write(&name(), 3, vec![even])
            .await
            .unwrap(),
        reader(dir.path())
            .stage_write(&name(), 3, vec![odd])
            .await
            .unwrap(),
    ];
    writer.commit_writes(&name(), parts).await.unwrap();
    let plan = writer
        .plan_scan(&quarry_store::ScanRequest::full(name()))
        .unwrap();
    for split in &plan.splits {
        let what = split.source.describe();
        assert!(!what.starts_with("merge"), "{what}");
    }
    assert_eq!(scan_all(&writer).await, by_key(std::slice::from_ref(&all)));
}

#[tokio::test]
async fn disjoint_parts_count_once_toward_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let writer = new_store_with_shards(dir.path(), 16).await;
    let shards = quarry_core::shard_map::ShardMap::new(16);
    let all = rows(0..600, 0..2, 1.0);
    let devices = all
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap();
    // Six writers, each with the shards s where s % 6 is its number: more parts than max_runs (3).
    let mut parts = Vec::new();
    for k in 0..6u32 {
        let keep: arrow::array::BooleanArray = devices
            .values()
            .iter()
            .map(|&d| Some(shards.shard_of(common::token_of(d)).0 % 6 == k))
            .collect();
        let part = arrow::compute::filter_record_batch(&all, &keep).unwrap();
        parts.push(
            reader(dir.path())
                .stage_write(&name(), 4, vec![part])
                .await
                .unwrap(),
        );
    }
    writer.commit_writes(&name(), parts).await.unwrap();
    let stats = writer.table_stats(&name()).unwrap();
    assert_eq!(
        stats.runs, 6,
        "one statement's parts do not trigger a compaction"
    );

    // Writes of new keys all over the ring overlap everything: the fourth layer compacts.
    let mut written = vec![all.clone()];
    for version in 2..=4 {
        let seqs = version * 2..version * 2 + 2;
        written.push(rows(0..600, seqs, f64::from(version as i32)));
        writer
            .write(&name(), vec![written.last().unwrap().clone()])
            .await
            .unwrap();
        let runs = writer.table_stats(&name()).unwrap().runs;
        if version < 4 {
            assert_eq!(
                runs,
                6 + version as usize - 1,
                "depth {version} of at most 3"
            );
        } else {
            assert!(
                runs < 9,
                "four overlapping layers were compacted: {runs} runs"
            );
        }
    }
    assert_eq!(scan_all(&writer).await, by_key(&written));
}

#[tokio::test]
async fn parts_that_repeat_keys_are_superseded_in_the_order_they_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    let writer = new_store_with_shards(dir.path(), 16).await;
    // Three parts of one statement over the same keys, as a large load stages them: each later
    // part replaces what the earlier ones hold for its keys, though none was ever listed alone.
    let first = rows(0..60, 0..4, 1.0);
    let second = rows(30..90, 0..4, 2.0);
    let third = rows(50..55, 0..2, 3.0);
    let mut parts = Vec::new();
    for batch in [&first, &second, &third] {
        parts.push(
            writer
                .stage_write(&name(), 9, vec![batch.clone()])
                .await
                .unwrap(),
        );
    }
    writer.commit_writes(&name(), parts).await.unwrap();
    let mut expected = by_key(std::slice::from_ref(&first));
    for batch in [&second, &third] {
        expected.extend(by_key(std::slice::from_ref(batch)));
    }
    assert_eq!(scan_all(&writer).await, expected);
    // And so it reads after a reopen, from the files and their deletion vectors.
    drop(writer);
    let reopened = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    assert_eq!(scan_all(&reopened).await, expected);
}
