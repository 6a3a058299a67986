//! `quarry-bench memory`: what `--memory-limit` holds a cluster's processes to.
//!
//! 1. Writes `--rows` rows (id, group, value, a 40-byte text) into a 64-shard table.
//! 2. Starts `quarry up --workers N --memory-limit LIMIT` over it.
//! 3. Sorts every row (`ORDER BY value DESC`) through the driver, reading the rows as they
//!    stream and checking their order and count, then reads back each process's peak resident
//!    memory (`VmHWM`): the driver's (it merges the sorted streams) and each worker's (they sort,
//!    spilling past the limit, and keep their sorted outputs until the driver has read them).
//! 4. `quarry load` of a `--load-rows` CSV file, its peak resident memory polled while it runs.
//!
//! Linux only (it reads `/proc`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use quarry_client::Client;
use quarry_sql::QuarrySession;
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};

use crate::{Up, WorkDir, quarry_binary};

#[derive(Debug, clap::Args)]
pub struct MemoryArgs {
    /// Rows of the table sorted on the cluster.
    #[arg(long, default_value_t = 3_000_000)]
    rows: u64,
    /// Rows of the CSV file loaded with `quarry load` (0 skips it).
    #[arg(long, default_value_t = 10_000_000)]
    load_rows: u64,
    /// The limit each process runs under, in MiB.
    #[arg(long, default_value_t = 256)]
    limit_mib: u64,
    /// Workers of the local cluster.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The peak resident memory of process `pid` so far, in MiB (`VmHWM` in `/proc/PID/status`).
pub(crate) fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmHWM:")
}

/// Starts this process's peak resident memory over from what it holds now (writing 5 to
/// `/proc/self/clear_refs`, Linux 4.0 on), so that a later [`peak_rss_mib`] is the peak since.
/// Says so when the kernel refuses: the peaks then carry over.
pub(crate) fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        println!(
            "note: could not reset the peak resident memory ({e}); peaks below include earlier runs'"
        );
    }
}

/// The resident memory of process `pid` now, in MiB (`VmRSS`).
pub(crate) fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS:")
}

/// A field of `/proc/PID/status` given in kB, in MiB.
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// The child processes of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

pub async fn run(args: MemoryArgs) -> Result<()> {
    let work_dir = WorkDir::new(args.dir.as_deref())?;
    let work = work_dir.path().to_path_buf();
    let limit = args.limit_mib;
    println!(
        "memory benchmark: {} rows sorted on `quarry up --workers {} --memory-limit {limit}MiB`, \
         then a {}-row `quarry load`",
        args.rows, args.workers, args.load_rows
    );

    let store_dir = work.join("store");
    let _ = std::fs::remove_dir_all(&store_dir);
    {
        let store: std::sync::Arc<dyn Store> =
            std::sync::Arc::new(EmbeddedStore::open(&store_dir, EmbeddedOptions::default())?);
        let session = QuarrySession::new(store);
        session
            .execute_script(&format!(
                "CREATE KEYSPACE m WITH shards = 64;
                 CREATE TABLE m.t (id bigint, g bigint, v double, s text, PRIMARY KEY (id));
                 INSERT INTO m.t SELECT value, value % 1000, random(),
                     concat('row ', value, ' ', repeat('x', 30)) FROM generate_series(1, {})",
                args.rows
            ))
            .await?;
    }

    let quarry = quarry_binary()?;
    let up = Up::start_with(
        &quarry,
        &store_dir,
        args.workers,
        &["--memory-limit", &format!("{limit}MiB")],
    )?;
    let mut driver = Client::connect(&up.url, Some(&up.token)).await?;
    let started = Instant::now();
    let mut result = driver
        .sql_stream("SELECT id, g, v, s FROM m.t ORDER BY v DESC")
        .await?;
    let (mut rows, mut last) = (0u64, f64::INFINITY);
    while let Some(batch) = result.next().await? {
        rows += batch.num_rows() as u64;
        last = check_descending(&batch, last)?;
    }
    let sort_secs = started.elapsed().as_secs_f64();
    ensure!(
        rows == args.rows,
        "the sort returned {rows} of {} rows",
        args.rows
    );
    let driver_peak = peak_rss_mib(up.pid()).context("reading the driver's memory")?;
    let worker_peaks: Vec<f64> = children(up.pid())
        .into_iter()
        .filter_map(peak_rss_mib)
        .collect();
    drop(up);

    println!("\n| process (limit {limit} MiB) | peak RSS |");
    println!("|---|---|");
    println!("| driver (`quarry up`: merges the sorted streams) | {driver_peak:.0} MiB |");
    for (i, peak) in worker_peaks.iter().enumerate() {
        println!(
            "| worker {} (sorts its shards, keeps its output) | {peak:.0} MiB |",
            i + 1
        );
    }
    println!("sorted {rows} rows in {sort_secs:.1} s, every row in order");

    if args.load_rows > 0 {
        let csv = work.join("load.csv");
        write_csv(&csv, args.load_rows)?;
        let load_dir = work.join("load-store");
        let _ = std::fs::remove_dir_all(&load_dir);
        let run = |sql: &str| {
            Command::new(&quarry)
                .arg("--data-dir")
                .arg(&load_dir)
                .args(["sql", "-e", sql])
                .stdout(Stdio::null())
                .status()
        };
        ensure!(run("CREATE KEYSPACE l WITH shards = 64")?.success());
        ensure!(
            run("CREATE TABLE l.t (id bigint, g bigint, v double, PRIMARY KEY (id))")?.success()
        );
        let started = Instant::now();
        let mut load = Command::new(&quarry)
            .arg("--data-dir")
            .arg(&load_dir)
            .args(["load", "--table", "l.t"])
            .arg(&csv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pid = load.id();
        let mut peak = 0.0f64;
        let status = loop {
            if let Some(p) = peak_rss_mib(pid) {
                peak = peak.max(p);
            }
            if let Some(status) = load.try_wait()? {
                break status;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        ensure!(status.success(), "quarry load failed");
        let secs = started.elapsed().as_secs_f64();
        let counted = Command::new(&quarry)
            .arg("--data-dir")
            .arg(&load_dir)
            .args([
                "sql",
                "--format",
                "csv",
                "-e",
                "SELECT count(*), sum(id) FROM l.t",
            ])
            .output()?;
        ensure!(counted.status.success(), "counting the loaded rows failed");
        let n = args.load_rows;
        let want = format!("{n},{}", u128::from(n) * (u128::from(n) + 1) / 2);
        let got = String::from_utf8_lossy(&counted.stdout);
        ensure!(
            got.lines().nth(1) == Some(want.as_str()),
            "the loaded table holds {got:?}, not {want}"
        );
        println!(
            "`quarry load` of {n} CSV rows: {secs:.1} s, peak RSS {peak:.0} MiB (staged in \
             parts of 64 MiB, merged a window of shards at a time; every row counted)"
        );
    }
    Ok(())
}

/// Checks that `batch`'s values (column 2) descend from `last`; returns the last one.
fn check_descending(batch: &RecordBatch, mut last: f64) -> Result<f64> {
    for v in batch.column(2).as_primitive::<Float64Type>().values() {
        ensure!(*v <= last, "the sort returned {v} after {last}");
        last = *v;
    }
    Ok(last)
}

fn write_csv(path: &Path, rows: u64) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "id,g,v")?;
    for i in 1..=rows {
        writeln!(out, "{i},{},{}", i % 1000, (i % 9973) as f64 / 7.0)?;
    }
    out.flush()?;
    Ok(())
}
