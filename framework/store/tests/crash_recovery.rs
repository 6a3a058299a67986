//! A writer process is killed with SIGKILL in the middle of a load, and in the middle of a
//! compaction; on reopen every acknowledged write is there, whole, and no file is damaged.
//!
//! This binary is its own child: run with `QUARRY_CRASH_CHILD=<dir>` it writes until killed,
//! printing `acked N` after each acknowledged write; with `QUARRY_COMPACT_CHILD=<dir>` it writes
//! overlapping runs, prints `compacting` and compacts them. Without either, it is the test.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::datatypes::Int64Type;
use futures::TryStreamExt;
use quarry_core::cql_type::CqlType;
use quarry_core::schema::{ColumnDef, KeyspaceDef, TableDef, TableName};
use quarry_store::{EmbeddedOptions, EmbeddedStore, ScanRequest, Store};

const CHILD_ENV: &str = "QUARRY_CRASH_CHILD";
const COMPACT_CHILD_ENV: &str = "QUARRY_COMPACT_CHILD";

fn table() -> TableDef {
    TableDef::new(
        "ks",
        "t",
        vec![
            ColumnDef::new("id", CqlType::BigInt),
            ColumnDef::new("batch", CqlType::BigInt),
        ],
        vec!["id".into()],
        vec![],
    )
    .expect("a valid table")
}

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        memtable_flush_rows: 2_000,
        bulk_write_rows: 5_000,
        rows_per_group: 1_000,
        rows_per_file: 4_000,
        max_runs: 3,
        ..EmbeddedOptions::default()
    }
}

/// Rows of write number `n`: every fifth write is a bulk write straight to a run.
fn rows_of(n: i64) -> (i64, i64) {
    let len = if n % 5 == 4 { 6_000 } else { 300 };
    (n * 10_000, len)
}

fn batch(n: i64) -> Result<RecordBatch> {
    let (start, len) = rows_of(n);
    let ids: Vec<i64> = (start..start + len).collect();
    Ok(RecordBatch::try_new(
        table().arrow_schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Int64Array::from(vec![n; len as usize])),
        ],
    )?)
}

async fn child(dir: &str) -> Result<()> {
    let store = EmbeddedStore::open(dir, options())?;
    let name = TableName::new("ks", "t");
    let first: i64 = std::env::var("QUARRY_CRASH_FIRST")?.parse()?;
    let mut out = std::io::stdout();
    for n in first.. {
        store.write(&name, vec![batch(n)?]).await?;
        writeln!(out, "acked {n}")?;
        out.flush()?;
    }
    Ok(())
}

async fn crash_and_check(dir: &std::path::Path, first: i64, kill_after: i64) -> Result<i64> {
    let mut child = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, dir)
        .env("QUARRY_CRASH_FIRST", first.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the writer process")?;
    let stdout = child.stdout.take().context("the writer's stdout")?;
    let mut last_acked = first - 1;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(n) = line.strip_prefix("acked ") {
            last_acked = n.parse()?;
            if last_acked >= first + kill_after {
                break;
            }
        }
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    if last_acked < first + kill_after {
        bail!("the writer stopped before it was killed (last acked {last_acked})");
    }

    let store = EmbeddedStore::open(dir, options())?;
    let mut per_batch = std::collections::BTreeMap::<i64, i64>::new();
    for (id, n) in rows_by_id(&store).await? {
        if id / 10_000 != n {
            bail!("row {id} carries batch {n} (damaged)");
        }
        *per_batch.entry(n).or_default() += 1;
    }
    for n in 0..=last_acked {
        let want = rows_of(n).1;
        let got = per_batch.get(&n).copied().unwrap_or(0);
        if got != want {
            bail!("acknowledged write {n} has {got} of its {want} rows after the crash");
        }
    }
    // An unacknowledged write in flight may have landed, but only whole.
    for (n, got) in &per_batch {
        if *n > last_acked && *got != rows_of(*n).1 {
            bail!("unacknowledged write {n} is partly there ({got} rows)");
        }
    }
    Ok(per_batch
        .keys()
        .max()
        .copied()
        .unwrap_or(last_acked)
        .max(last_acked)
        + 1)
}

/// Every row of `ks.t` by id (its `batch` column), failing if an id comes back twice.
async fn rows_by_id(store: &EmbeddedStore) -> Result<std::collections::BTreeMap<i64, i64>> {
    let plan = store.plan_scan(&ScanRequest::full(TableName::new("ks", "t")))?;
    let mut rows = std::collections::BTreeMap::new();
    for split in plan.splits {
        let batches: Vec<RecordBatch> = split.source.open()?.try_collect().await?;
        for b in batches {
            let id = b.column(0).as_primitive::<Int64Type>();
            let n = b.column(1).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                if rows.insert(id.value(i), n.value(i)).is_some() {
                    bail!("row {} came back twice", id.value(i));
                }
            }
        }
    }
    Ok(rows)
}

/// The compaction child's runs: load `k` writes ids `k * 10,000 .. k * 10,000 + 40,000` with
/// `batch = k`, so each overlaps the last three and the newest load of an id wins.
const LOADS: i64 = 5;

fn compaction_options() -> EmbeddedOptions {
    EmbeddedOptions {
        bulk_write_rows: 1_000,
        rows_per_group: 500,
        rows_per_file: 2_000,
        // Nothing compacts until the child asks.
        max_runs: 100,
        max_dead_fraction: 1.0,
        background: false,
        ..EmbeddedOptions::default()
    }
}

async fn compaction_child(dir: &str) -> Result<()> {
    let store = EmbeddedStore::open(dir, compaction_options())?;
    store.create_keyspace(KeyspaceDef::new("ks"), false).await?;
    store.create_table(table(), false).await?;
    let name = TableName::new("ks", "t");
    for k in 0..LOADS {
        let ids: Vec<i64> = (k * 10_000..k * 10_000 + 40_000).collect();
        let batch = RecordBatch::try_new(
            table().arrow_schema(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Int64Array::from(vec![k; 40_000])),
            ],
        )?;
        store.write(&name, vec![batch]).await?;
    }
    println!("compacting");
    store.compact(&name)?;
    println!("compacted");
    Ok(())
}

/// The Parquet files under the table's directory.
fn parquet_files(dir: &std::path::Path) -> Result<std::collections::BTreeSet<std::path::PathBuf>> {
    let mut found = std::collections::BTreeSet::new();
    let mut pending = vec![dir.join("data")];
    while let Some(at) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.insert(path);
            }
        }
    }
    Ok(found)
}

/// Kills the compaction child as soon as the compaction wrote its first file, then checks that
/// reopening brings back every row once, at its newest version, and that the compaction's
/// unlisted files are gone.
async fn kill_during_compaction() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(std::env::current_exe()?)
        .env(COMPACT_CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the compacting process")?;
    let mut lines = BufReader::new(child.stdout.take().context("the child's stdout")?).lines();
    match lines.next() {
        Some(Ok(line)) if line == "compacting" => {}
        other => bail!("the child did not start compacting: {other:?}"),
    }
    let before = parquet_files(dir.path())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while parquet_files(dir.path())?.len() == before.len() {
        if std::time::Instant::now() > deadline {
            bail!("the compaction wrote no file within a minute");
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    if let Some(Ok(line)) = lines.next() {
        bail!("the compaction finished before the kill ({line}); the test needs more rows");
    }
    let partial: Vec<_> = parquet_files(dir.path())?
        .difference(&before)
        .cloned()
        .collect();

    let store = EmbeddedStore::open(dir.path(), compaction_options())?;
    let leftover: Vec<_> = partial.iter().filter(|p| p.exists()).collect();
    if !leftover.is_empty() {
        bail!("the killed compaction's files are still there: {leftover:?}");
    }
    let name = TableName::new("ks", "t");
    for round in ["after the kill", "after compacting again"] {
        let seen = rows_by_id(&store)
            .await
            .with_context(|| round.to_string())?;
        let ids = (LOADS - 1) * 10_000 + 40_000;
        if seen.len() as i64 != ids {
            bail!("{round}: {} rows where {ids} were written", seen.len());
        }
        for (id, k) in &seen {
            let newest = (id / 10_000).min(LOADS - 1);
            if *k != newest {
                bail!("{round}: row {id} holds load {k}, not its newest load {newest}");
            }
        }
        if round == "after the kill" && store.compact(&name)?.is_none() {
            bail!("the runs were not compacted after the kill");
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        return runtime.block_on(child(&dir));
    }
    if let Ok(dir) = std::env::var(COMPACT_CHILD_ENV) {
        return runtime.block_on(compaction_child(&dir));
    }
    let dir = tempfile::tempdir()?;
    runtime.block_on(async {
        let store = EmbeddedStore::open(dir.path(), options())?;
        store.create_keyspace(KeyspaceDef::new("ks"), false).await?;
        store.create_table(table(), false).await?;
        anyhow::Ok(())
    })?;
    let mut next = 0;
    let (mut passed, mut failures) = (0, 0);
    // Kill at a few different depths, each run continuing where the last one left off.
    for (round, kill_after) in [3i64, 17, 41].into_iter().enumerate() {
        match runtime.block_on(crash_and_check(dir.path(), next, kill_after)) {
            Ok(n) => {
                println!("test crash round {round} (killed after {kill_after} writes) ... ok");
                next = n;
                passed += 1;
            }
            Err(e) => {
                println!(
                    "test crash round {round} (killed after {kill_after} writes) ... FAILED: {e:#}"
                );
                failures += 1;
                break;
            }
        }
    }
    match runtime.block_on(kill_during_compaction()) {
        Ok(()) => {
            println!("test killed during a compaction ... ok");
            passed += 1;
        }
        Err(e) => {
            println!("test killed during a compaction ... FAILED: {e:#}");
            failures += 1;
        }
    }
    println!("\ncrash_recovery: {passed} passed, {failures} failed");
    if failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}
