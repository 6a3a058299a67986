//! The commit of a distributed write: it publishes what the writers staged, and a statement that
//! ends without committing leaves nothing behind.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use quarry_core::schema::{KeyspaceDef, TableName};
use quarry_jobs::write::StoreCommitExec;
use quarry_sql::QuarrySession;
use quarry_store::{EmbeddedOptions, EmbeddedStore, ScanRequest, Store};

fn staged_files(dir: &std::path::Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.join("data")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().starts_with("staged-") {
                count += 1;
            }
        }
    }
    count
}

/// The writers' gathered outputs describing `parts`.
fn parts_input(parts: &[quarry_store::StagedWrite]) -> Arc<dyn ExecutionPlan> {
    let part_schema = Arc::new(Schema::new(vec![
        Field::new("rows", DataType::UInt64, false),
        Field::new("part", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        part_schema.clone(),
        vec![
            Arc::new(UInt64Array::from_iter_values(parts.iter().map(|p| p.rows))),
            Arc::new(StringArray::from_iter_values(
                parts.iter().map(|p| serde_json::to_string(p).unwrap()),
            )),
        ],
    )
    .unwrap();
    MemorySourceConfig::try_new_exec(&[vec![batch]], part_schema, None).unwrap()
}

/// A commit node over the parts `parts`.
fn commit_of(
    store: &Arc<dyn Store>,
    table: &TableName,
    statement: u64,
    parts: &[quarry_store::StagedWrite],
) -> Arc<dyn ExecutionPlan> {
    let count = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    Arc::new(StoreCommitExec::new(
        parts_input(parts),
        table.clone(),
        statement,
        store.clone(),
        count,
    ))
}

async fn setup() -> (tempfile::TempDir, Arc<dyn Store>, TableName) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let mut ks = KeyspaceDef::new("synth");
    ks.shards = 16;
    store.create_keyspace(ks, false).await.unwrap();
    QuarrySession::new(store.clone())
        .execute("CREATE TABLE synth.t (k bigint, v bigint, PRIMARY KEY (k))")
        .await
        .unwrap();
    (dir, store, TableName::new("synth", "t"))
}

async fn stage(
    store: &Arc<dyn Store>,
    table: &TableName,
    statement: u64,
    keys: std::ops::Range<i64>,
) -> quarry_store::StagedWrite {
    let def = store.table(table).unwrap();
    let batch = RecordBatch::try_new(
        def.arrow_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(keys.clone())),
            Arc::new(Int64Array::from_iter_values(keys)),
        ],
    )
    .unwrap();
    store
        .stage_write(table, statement, vec![batch])
        .await
        .unwrap()
}

async fn rows(store: &Arc<dyn Store>, table: &TableName) -> usize {
    let plan = store.plan_scan(&ScanRequest::full(table.clone())).unwrap();
    let mut n = 0;
    for split in plan.splits {
        let batches: Vec<RecordBatch> = split.source.open().unwrap().try_collect().await.unwrap();
        n += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
    }
    n
}

#[tokio::test]
async fn a_commit_publishes_every_part_and_sweeps_lost_attempts() {
    let (dir, store, table) = setup().await;
    let parts = vec![
        stage(&store, &table, 5, 0..100).await,
        stage(&store, &table, 5, 100..150).await,
    ];
    // A writer lost after staging ran again elsewhere: its first part is not committed.
    let lost_attempt = stage(&store, &table, 5, 100..150).await;
    assert!(!lost_attempt.files.is_empty());
    assert_eq!(rows(&store, &table).await, 0, "staged parts are invisible");
    let commit = commit_of(&store, &table, 5, &parts);
    let ctx = SessionContext::new().task_ctx();
    let out: Vec<RecordBatch> = commit.execute(0, ctx).unwrap().try_collect().await.unwrap();
    let count = out[0]
        .column(0)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .unwrap()
        .value(0);
    assert_eq!(count, 150);
    // Both parts hold keys all over the ring (as a load's parts do, unlike workers' parts of
    // disjoint shards): they were merged into one run as they were published, and their files
    // are gone. The lost attempt's are left until the plan is dropped.
    assert_eq!(staged_files(dir.path()), lost_attempt.files.len());
    // Dropping the plan sweeps the lost attempt's files and keeps the table's.
    drop(commit);
    assert_eq!(staged_files(dir.path()), 0);
    assert_eq!(rows(&store, &table).await, 150);
    assert_eq!(store.discard_writes(&table, 5).unwrap(), 0);
    assert_eq!(rows(&store, &table).await, 150);
}

#[tokio::test]
async fn a_statement_that_never_commits_discards_what_it_staged() {
    let (dir, store, table) = setup().await;
    let parts = vec![stage(&store, &table, 8, 0..100).await];
    let other = stage(&store, &table, 9, 0..10).await;
    assert!(staged_files(dir.path()) >= 2);
    // The job failed before its driver stage ran: its plan (and every copy) goes away.
    let commit = commit_of(&store, &table, 8, &parts);
    let copy = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
        commit.clone(),
        vec![parts_input(&parts)],
    )
    .unwrap();
    assert!(!Arc::ptr_eq(&copy, &commit));
    drop(commit);
    assert_eq!(
        staged_files(dir.path()),
        parts[0].files.len() + other.files.len()
    );
    drop(copy);
    assert_eq!(
        staged_files(dir.path()),
        other.files.len(),
        "only statement 8's parts go"
    );
    assert_eq!(rows(&store, &table).await, 0);
}
