//! Readers of a data directory that a writer has open: they see what the writer has flushed,
//! follow its compactions, cannot write, and take no lock. Writer and readers share one process
//! here; a reader behaves the same in another process, since all it shares with the writer is the
//! directory.

mod common;

use std::collections::BTreeMap;
use std::fs;

use quarry_core::schema::{KeyspaceDef, TableName, ViewDef};
use quarry_store::{EmbeddedStore, FailureKind, ScanRequest, Store};

use common::{by_key, name, new_store_with_shards, rows, scan_all, small_options, table, try_read};

fn reader(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open_reader(dir, small_options()).unwrap()
}

fn expected(batches: &[arrow::array::RecordBatch]) -> BTreeMap<(i64, i64), f64> {
    let mut out = BTreeMap::new();
    for b in batches {
        out.extend(by_key(std::slice::from_ref(b)));
    }
    out
}

#[tokio::test]
async fn a_reader_sees_what_the_writer_has_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let writer = EmbeddedStore::open(dir.path(), small_options()).unwrap();
    let reader = reader(dir.path());
    assert!(reader.is_read_only() && !writer.is_read_only());
    assert!(reader.keyspaces().is_empty());

    let mut ks = KeyspaceDef::new("iot");
    ks.shards = 16;
    writer.create_keyspace(ks, false).await.unwrap();
    writer.create_table(table(), false).await.unwrap();
    assert_eq!(reader.keyspace("iot").unwrap().shards, 16);
    assert_eq!(reader.table(&name()).unwrap(), table());
    assert_eq!(reader.tables(Some("iot")).unwrap(), vec![table()]);
    assert!(scan_all(&reader).await.is_empty());

    // Small writes stay in the writer's log and memtable until it flushes.
    let small = rows(0..10, 0..5, 1.0);
    writer.write(&name(), vec![small.clone()]).await.unwrap();
    assert_eq!(writer.table_stats(&name()).unwrap().memtable_rows, 50);
    assert!(scan_all(&reader).await.is_empty());
    writer.flush().unwrap();
    assert_eq!(
        scan_all(&reader).await,
        expected(std::slice::from_ref(&small))
    );

    // A bulk write becomes a run at once, and overwrites rows of the flushed run.
    let bulk = rows(5..300, 0..5, 2.0);
    writer.write(&name(), vec![bulk.clone()]).await.unwrap();
    let all = expected(&[small, bulk]);
    assert_eq!(scan_all(&reader).await, all);
    assert_eq!(scan_all(&writer).await, all);
    // Half of the flushed run is superseded: the writer may have compacted already; either way
    // the reader counts each live row once.
    let stats = reader.table_stats(&name()).unwrap();
    assert_eq!(stats.memtable_rows, 0);
    assert_eq!(
        stats.run_rows - stats.deleted_rows,
        all.len() as u64,
        "{stats:?}"
    );

    // A dropped table disappears from the reader's catalog.
    writer.drop_table(&name(), false).await.unwrap();
    let err = reader.table(&name()).unwrap_err();
    assert!(
        err.to_string().contains("keyspace 'iot' has no tables yet"),
        "{err}"
    );
}

#[tokio::test]
async fn a_reader_follows_every_change_even_in_quick_succession() {
    let dir = tempfile::tempdir().unwrap();
    let writer = new_store_with_shards(dir.path(), 16).await;
    let reader = reader(dir.path());
    // Manifest replacements milliseconds apart, within one tick of a coarse file clock.
    for i in 0..20 {
        let mut def = table();
        def.name = format!("t{i}");
        writer.create_table(def.clone(), false).await.unwrap();
        assert_eq!(reader.table(&def.table_name()).unwrap(), def);
        writer
            .write(&name(), vec![rows(i * 50..i * 50 + 50, 0..20, 1.0)])
            .await
            .unwrap();
        assert_eq!(scan_all(&reader).await.len() as i64, (i + 1) * 50 * 20);
    }
}

#[tokio::test]
async fn a_reader_follows_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let writer = new_store_with_shards(dir.path(), 16).await;
    let reader = reader(dir.path());
    // Each run overwrites 5% of the one before: too little to compact on its own.
    let batches = [
        rows(0..100, 0..20, 1.0),
        rows(95..195, 0..20, 2.0),
        rows(190..290, 0..20, 3.0),
    ];
    for b in &batches {
        writer.write(&name(), vec![b.clone()]).await.unwrap();
    }
    let all = expected(&batches);
    assert_eq!(scan_all(&reader).await, all);
    assert_eq!(reader.table_stats(&name()).unwrap().runs, 3);
    let before = reader.plan_scan(&ScanRequest::full(name())).unwrap();

    // The writer merges the runs into one and deletes their files.
    assert!(writer.compact(&name()).unwrap().is_some());
    assert_eq!(writer.table_stats(&name()).unwrap().runs, 1);
    assert_eq!(scan_all(&reader).await, all);
    assert_eq!(reader.table_stats(&name()).unwrap().runs, 1);

    // A scan the reader planned before the compaction finds its files gone: a retryable error,
    // and planning again works.
    let err = try_read(before).await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::External, "{err}");
    assert!(err.to_string().contains("plan the scan again"), "{err}");
    assert_eq!(scan_all(&reader).await, all);
}

#[tokio::test]
async fn a_reload_reuses_the_files_the_reader_has_open() {
    let dir = tempfile::tempdir().unwrap();
    let writer = new_store_with_shards(dir.path(), 16).await;
    writer
        .write(&name(), vec![rows(0..300, 0..5, 1.0)])
        .await
        .unwrap();
    let reader = reader(dir.path());
    let all = scan_all(&reader).await;
    // Hide the run's files, then change the manifest: the reload must not read their footers.
    let table_dir = fs::read_dir(dir.path().join("data/iot"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let hidden = dir.path().join("hidden");
    fs::rename(&table_dir, &hidden).unwrap();
    let mut other = table();
    other.name = "other".into();
    writer.create_table(other.clone(), false).await.unwrap();
    assert_eq!(reader.table(&other.table_name()).unwrap(), other);
    fs::rename(&hidden, &table_dir).unwrap();
    assert_eq!(scan_all(&reader).await, all);
}

#[tokio::test]
async fn writes_on_a_reader_fail_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let writer = new_store_with_shards(dir.path(), 16).await;
    writer
        .write(&name(), vec![rows(0..100, 0..10, 1.0)])
        .await
        .unwrap();
    let reader = reader(dir.path());
    let before = scan_all(&reader).await;
    let manifest = fs::read(dir.path().join("MANIFEST.json")).unwrap();

    let mut other = table();
    other.name = "other".into();
    let results = [
        reader
            .create_keyspace(KeyspaceDef::new("ks2"), false)
            .await
            .map(|_| ()),
        reader.drop_keyspace("iot", false).await.map(|_| ()),
        reader.create_table(other, false).await.map(|_| ()),
        reader.drop_table(&name(), false).await.map(|_| ()),
        reader
            .create_view(ViewDef::new("iot", "v", "SELECT 1").unwrap(), false)
            .await
            .map(|_| ()),
        reader
            .write(&name(), vec![rows(0..100, 0..10, 9.0)])
            .await
            .map(|_| ()),
        reader.flush(),
        reader.compact(&name()).map(|_| ()),
    ];
    for result in results {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), FailureKind::User, "{err}");
        assert!(
            err.to_string().contains(
                "this data directory is open read-only, because another process writes it"
            ),
            "{err}"
        );
    }
    let err = reader
        .write(&TableName::new("iot", "r"), vec![])
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("cannot write to iot.r:"),
        "{err}"
    );

    drop(reader);
    assert_eq!(
        fs::read(dir.path().join("MANIFEST.json")).unwrap(),
        manifest
    );
    assert_eq!(scan_all(&writer).await, before);
    assert_eq!(writer.keyspaces().len(), 1);
    assert_eq!(writer.tables(None).unwrap(), vec![table()]);
}

#[tokio::test]
async fn a_reader_sees_the_writers_views() {
    let dir = tempfile::tempdir().unwrap();
    let writer = new_store_with_shards(dir.path(), 16).await;
    let reader = reader(dir.path());
    let view = ViewDef::new("iot", "v", "SELECT * FROM r").unwrap();
    writer.create_view(view.clone(), false).await.unwrap();
    assert_eq!(reader.views(None).unwrap(), std::slice::from_ref(&view));
    writer.drop_view(&view.view_name(), false).await.unwrap();
    assert!(reader.views(Some("iot")).unwrap().is_empty());
}

#[tokio::test]
async fn a_directory_without_a_manifest_is_an_empty_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let reader = reader(dir.path());
    assert!(reader.keyspaces().is_empty());
    assert!(reader.tables(None).unwrap().is_empty());
    let err = reader.table(&name()).unwrap_err();
    assert_eq!(err.kind(), FailureKind::User);
    assert!(
        err.to_string().contains("there is no keyspace 'iot'"),
        "{err}"
    );
    assert!(reader.plan_scan(&ScanRequest::full(name())).is_err());
    // The reader created nothing, not even a lock.
    drop(reader);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

    // Nor does a missing directory trouble it.
    let missing = dir.path().join("not-yet");
    let reader = EmbeddedStore::open_reader(&missing, small_options()).unwrap();
    assert!(reader.keyspaces().is_empty());
    assert!(!missing.exists());

    // The writer can still lock the directory while a reader has it open, and the reader sees
    // its first manifest.
    let writer = new_store_with_shards(&missing, 16).await;
    assert_eq!(reader.tables(Some("iot")).unwrap(), vec![table()]);
    drop(writer);
}
