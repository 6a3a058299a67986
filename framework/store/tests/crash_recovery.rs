//! A writer process is killed with SIGKILL in the middle of a load; on reopen every acknowledged
//! write is there, whole, and no file is damaged.
//!
//! This binary is its own child: run with `QUARRY_CRASH_CHILD=<dir>` it writes until killed,
//! printing `acked N` after each acknowledged write. Without it, it is the test.

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
    let plan = store.plan_scan(&ScanRequest::full(TableName::new("ks", "t")))?;
    let mut per_batch = std::collections::BTreeMap::<i64, i64>::new();
    let mut ids = std::collections::HashSet::new();
    for split in plan.splits {
        let batches: Vec<RecordBatch> = split.source.open()?.try_collect().await?;
        for b in batches {
            let id = b.column(0).as_primitive::<Int64Type>();
            let n = b.column(1).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                if !ids.insert(id.value(i)) {
                    bail!("row {} came back twice", id.value(i));
                }
                if id.value(i) / 10_000 != n.value(i) {
                    bail!("row {} carries batch {} (damaged)", id.value(i), n.value(i));
                }
                *per_batch.entry(n.value(i)).or_default() += 1;
            }
        }
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

fn main() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        return runtime.block_on(child(&dir));
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
    println!("\ncrash_recovery: {passed} passed, {failures} failed");
    if failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}
