//! Side-by-side benchmark: Quarry's embedded store against plain DataFusion on the same Parquet
//! files, in one process and one run, so that machine noise hits both alike.
//!
//! 1. Generate the IoT readings (default 10M rows, 100,000 devices) as Parquet files, and a CSV
//!    copy of the first `--csv-rows` rows.
//! 2. Load the Parquet files, then the CSV file, into 800-shard tables through the same path as
//!    `quarry load` (read, cast, token, sort, write runs); report rows/s.
//! 3. Run (a) a filtered count and (b) a per-device aggregate, warm, on the store and on the
//!    Parquet files with plain DataFusion; check the answers agree; report medians and ratios.
//! 4. Placement plus task assignment of a full scan for a simulated 2,400-node cluster.
//! 5. The same queries on `quarry up --workers 3` over the same data directory: a driver and
//!    three worker processes on loopback ports, queried through the driver's Flight endpoint
//!    like any client; and the warm time of a query over an empty 800-shard table (scheduling
//!    overhead).
//!
//! Build the `quarry` binary first (the bench runs it):
//! `cargo build --release --bin quarry && cargo run --release -p quarry-bench -- --help`.
//!
//! `quarry-bench tpch` runs the TPC-H queries instead (see `tpch.rs`), `quarry-bench jobs` the
//! Rust jobs beside SQL (see `jobs.rs`), `quarry-bench ops` each job operator in the sandbox
//! beside the same code natively (see `ops.rs`), `quarry-bench fresh` reads over fresh
//! overlapping writes (see `fresh.rs`), `quarry-bench scylla` the ScyllaDB connector on a CQL
//! server (see `scylla.rs`).

mod cpu;
mod fresh;
mod ingest;
mod jobs;
mod memory;
mod ops;
mod scylla;
mod tpch;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use arrow::array::RecordBatch;
use clap::{Parser, Subcommand};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use parquet::arrow::ArrowWriter;
use quarry_client::Client;
use quarry_client::auth::{Secret, TOKEN_FILE};
use quarry_core::ids::NodeId;
use quarry_core::placement::Placement;
use quarry_core::schema::{KeyspaceDef, TableName};
use quarry_driver::daemon::scheduler::{Slot, assign_scan};
use quarry_ingest::{ReadOptions, Source, read_sources};
use quarry_iot::IotConfig;
use quarry_jobs::{DistributedPlanner, WorkerId};
use quarry_sql::{QuarrySession, QueryOutput};
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};

#[derive(Debug, Parser)]
#[command(about = "Quarry's store vs plain DataFusion on the same Parquet files")]
struct Args {
    /// Another benchmark instead of the IoT one.
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Rows to generate.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Distinct devices.
    #[arg(long, default_value_t = 100_000)]
    devices: u64,
    /// Parquet files to split the data set into.
    #[arg(long, default_value_t = 10)]
    files: u64,
    /// Rows of the CSV load test (the first rows of the same data set).
    #[arg(long, default_value_t = 2_000_000)]
    csv_rows: u64,
    /// Timed runs per query (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Workers of the local cluster (`quarry up --workers`).
    #[arg(long, default_value_t = 3)]
    workers: usize,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// The 22 TPC-H queries, embedded and on `quarry up`, beside plain DataFusion.
    Tpch(tpch::TpchArgs),
    /// Rust jobs (WASM on the workers) beside the same work as SQL, on `quarry up`.
    Jobs(jobs::JobsArgs),
    /// Peak memory of the driver and workers under `--memory-limit`, and of `quarry load`.
    Memory(memory::MemoryArgs),
    /// Queries over a table with fresh small writes all over its ring, beside the same rows
    /// loaded at once and plain DataFusion.
    Fresh(fresh::FreshArgs),
    /// What one row costs in each operator of the jobs benchmark's jobs, in the WASM sandbox
    /// beside the same SDK code compiled natively (in this process, no cluster).
    Ops(ops::OpsArgs),
    /// Small writes for a minute while queries run once a second: rows/s and query latency.
    Ingest(ingest::IngestArgs),
    /// The ScyllaDB connector on a 3-node CQL server beside the embedded store: write-back and
    /// full-scan rows/s, requests per split, and the share of reads from the reader's own node.
    Scylla(scylla::ScyllaArgs),
}

const QUERIES: [(&str, &str); 2] = [
    (
        "(a) count temp > 90",
        "SELECT count(*) AS n FROM {t} WHERE sensor = 'temp' AND value > 90",
    ),
    (
        "(b) per-device temp count/avg/max",
        "SELECT device_id, count(*) AS n, avg(value) AS avg_value, max(value) AS max_value \
         FROM {t} WHERE sensor = 'temp' GROUP BY device_id ORDER BY device_id",
    ),
];

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    quarry_driver::logging::install();
    match args.mode {
        Some(Mode::Tpch(tpch)) => return tpch::run(tpch).await,
        Some(Mode::Jobs(jobs)) => return jobs::run(jobs).await,
        Some(Mode::Memory(memory)) => return memory::run(memory).await,
        Some(Mode::Fresh(fresh)) => return fresh::run(fresh).await,
        Some(Mode::Ingest(ingest)) => return ingest::run(ingest).await,
        Some(Mode::Ops(ops)) => return ops::run(ops).await,
        Some(Mode::Scylla(scylla)) => return scylla::run(scylla).await,
        None => {}
    }
    let work_dir = WorkDir::new(args.dir.as_deref())?;
    let work = work_dir.path().to_path_buf();
    println!(
        "Quarry benchmark: {} rows, {} devices, {} cores",
        args.rows,
        args.devices,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let parquet_dir = work.join("parquet");
    let csv_path = work.join("readings.csv");
    let started = Instant::now();
    generate(&args, &parquet_dir, &csv_path)?;
    println!(
        "generated the data set in {:.1} s\n",
        started.elapsed().as_secs_f64()
    );

    let store_dir = work.join("store");
    let _ = std::fs::remove_dir_all(&store_dir);
    let store = Arc::new(EmbeddedStore::open(&store_dir, EmbeddedOptions::default())?);
    let session = QuarrySession::new(store.clone() as Arc<dyn Store>);
    session
        .execute_script(
            "CREATE KEYSPACE iot WITH shards = 800;
             CREATE TABLE iot.readings (device_id bigint, ts timestamp, sensor text, value double, status int, PRIMARY KEY ((device_id), ts, sensor));
             CREATE TABLE iot.readings_csv (device_id bigint, ts timestamp, sensor text, value double, status int, PRIMARY KEY ((device_id), ts, sensor));",
        )
        .await?;

    let mut parquet_files: Vec<PathBuf> = std::fs::read_dir(&parquet_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    parquet_files.sort();
    let parquet_rate = load(&store, "iot.readings", &parquet_files).await?;
    let csv_rate = load(&store, "iot.readings_csv", &[csv_path]).await?;
    store.wait_idle();

    let plain = SessionContext::new();
    plain
        .register_parquet(
            "readings",
            parquet_dir.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;

    println!(
        "\n{:<36} {:>12} {:>14} {:>8}",
        "query (warm, median)", "quarry", "datafusion", "ratio"
    );
    let ratios = compare_queries(&Target::Embedded(&session), &plain, args.iterations).await?;
    let (scale_ms, moved) = placement_at_scale(&store, &session).await?;

    // `quarry up` opens the data directory as its writer: let go of it first.
    drop(session);
    drop(store);
    let cluster = cluster_section(&args, &store_dir, &plain).await?;

    println!("\nload from Parquet: {parquet_rate:>12.0} rows/s   (target >= 1,000,000)");
    println!("load from CSV:     {csv_rate:>12.0} rows/s   (target >= 300,000)");
    let worst = ratios.iter().cloned().fold(0.0, f64::max);
    println!("worst query ratio: {worst:>12.2}          (target <= 1.5)");
    println!(
        "cluster aggregate ratio: {:>8.2}          (target <= 1.5)",
        cluster.aggregate_ratio
    );
    println!(
        "empty 800-shard query: {:>9.1} ms        (target <= 100 ms; {:.2} ms per task)",
        cluster.empty_ms, cluster.empty_ms_per_task
    );
    println!(
        "2,400-node placement + full-scan plan: {:.1} ms (target <= 50 ms); one node leaving moves {} of 800 shards",
        scale_ms, moved
    );
    let misses: Vec<&str> = [
        (parquet_rate < 1_000_000.0, "Parquet load"),
        (csv_rate < 300_000.0, "CSV load"),
        (worst > 1.5, "query ratio"),
        (cluster.aggregate_ratio > 1.5, "cluster aggregate ratio"),
        (cluster.empty_ms > 100.0, "empty-table scheduling"),
        (scale_ms > 50.0, "placement at scale"),
    ]
    .into_iter()
    .filter_map(|(missed, what)| missed.then_some(what))
    .collect();
    if misses.is_empty() {
        println!("all targets met");
    } else {
        println!("targets missed: {}", misses.join(", "));
    }
    Ok(())
}

/// Where Quarry's side of a comparison runs.
enum Target<'a> {
    /// In this process, on the embedded store.
    Embedded(&'a QuarrySession),
    /// On a cluster, through its driver's Flight endpoint.
    Cluster(Client),
}

impl Target<'_> {
    async fn run(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        Ok(self.output(sql).await?.batches)
    }

    async fn output(&self, sql: &str) -> Result<QueryOutput> {
        Ok(match self {
            Target::Embedded(session) => session.execute(sql).await?,
            Target::Cluster(driver) => {
                quarry_driver::remote::sql_output(driver.clone().sql(sql).await?)
            }
        })
    }
}

/// Runs every query warm on `target` and on plain DataFusion, checks the answers agree, prints
/// a line per query and returns the ratios (Quarry / DataFusion), in query order.
async fn compare_queries(
    target: &Target<'_>,
    plain: &SessionContext,
    iterations: usize,
) -> Result<Vec<f64>> {
    let mut ratios = Vec::new();
    for (label, sql) in QUERIES {
        let ours = sql.replace("{t}", "iot.readings");
        let theirs = sql.replace("{t}", "readings");
        let ((quarry_time, quarry_rows), (plain_time, plain_rows)) = time_side_by_side(
            iterations,
            || target.run(&ours),
            || async { Ok(plain.sql(&theirs).await?.collect().await?) },
        )
        .await?;
        ensure!(
            same_answer(&quarry_rows, &plain_rows)?,
            "{label}: Quarry and plain DataFusion disagree"
        );
        let ratio = quarry_time.as_secs_f64() / plain_time.as_secs_f64();
        ratios.push(ratio);
        println!(
            "{label:<36} {:>10.1}ms {:>12.1}ms {:>8.2}",
            quarry_time.as_secs_f64() * 1e3,
            plain_time.as_secs_f64() * 1e3,
            ratio
        );
    }
    Ok(ratios)
}

/// What the cluster section measured.
struct ClusterFigures {
    aggregate_ratio: f64,
    empty_ms: f64,
    empty_ms_per_task: f64,
}

/// A benchmark's work directory: `--dir`, created if missing and kept, or a temporary one
/// removed when this is dropped.
struct WorkDir {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl WorkDir {
    fn new(dir: Option<&Path>) -> Result<WorkDir> {
        let (path, temp) = match dir {
            Some(dir) => (dir.to_path_buf(), None),
            None => {
                let temp = tempfile::tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(&path)?;
        Ok(WorkDir { path, _temp: temp })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// The `quarry` binary: `$QUARRY_BIN`, or the one built beside this benchmark.
fn quarry_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("QUARRY_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark's own path has no directory")?
            .join(format!("quarry{}", std::env::consts::EXE_SUFFIX)),
    };
    if !path.is_file() {
        bail!(
            "the cluster section runs `quarry up`, and there is no quarry binary at {}: build it \
             first with `cargo build --release --bin quarry`, or point QUARRY_BIN at one",
            path.display()
        );
    }
    Ok(path)
}

/// A `quarry up` child process; stopped with Ctrl-C (SIGINT) when dropped.
struct Up {
    child: Child,
    /// Kept open so that the cluster never blocks writing to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    url: String,
    /// The token `quarry up` keeps in the data directory, for clients.
    token: Secret,
}

impl Up {
    fn start(quarry: &Path, data_dir: &Path, workers: usize) -> Result<Up> {
        Up::start_with(quarry, data_dir, workers, &[])
    }

    /// `quarry up` with more flags.
    fn start_with(quarry: &Path, data_dir: &Path, workers: usize, flags: &[&str]) -> Result<Up> {
        let mut child = Command::new(quarry)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["up", "--workers", &workers.to_string()])
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} up", quarry.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut url = None;
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line)? == 0 {
                bail!("`quarry up` exited before the cluster was ready");
            }
            if let Some(u) = line.trim().strip_prefix("driver listening on ") {
                url = Some(u.to_string());
            }
            if line.contains("Ctrl-C stops the cluster") {
                break;
            }
        }
        let token = data_dir.join(TOKEN_FILE);
        let token = Secret::read(&token)
            .with_context(|| format!("reading the cluster's token {}", token.display()))?;
        Ok(Up {
            child,
            _stdout: stdout,
            url: url.context("`quarry up` printed no driver endpoint")?,
            token,
        })
    }
}

impl Up {
    /// The `quarry up` process (the driver; the workers are its children).
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let stopped = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

async fn cluster_section(
    args: &Args,
    store_dir: &Path,
    plain: &SessionContext,
) -> Result<ClusterFigures> {
    let up = Up::start(&quarry_binary()?, store_dir, args.workers)?;
    let driver = Client::connect(&up.url, Some(&up.token)).await?;
    println!(
        "\non `quarry up --workers {}` (driver and worker processes, loopback gRPC and Flight):",
        args.workers
    );
    println!(
        "{:<36} {:>12} {:>14} {:>8}",
        "query (warm, median)", "cluster", "datafusion", "ratio"
    );
    let target = Target::Cluster(driver.clone());
    let ratios = compare_queries(&target, plain, args.iterations).await?;
    let aggregate_ratio = ratios.last().copied().unwrap_or(f64::INFINITY);

    target
        .run("CREATE TABLE iot.empty (device_id bigint, value double, PRIMARY KEY (device_id))")
        .await?;
    let empty_count = "SELECT count(*) FROM iot.empty";
    let (empty, _) = time_query(args.iterations.max(5), || target.run(empty_count)).await?;
    let jobs = driver
        .rpc()
        .list_jobs(quarry_proto::v1::ListJobsRequest {})
        .await?
        .into_inner()
        .jobs;
    let tasks = jobs
        .iter()
        .find(|j| j.sql == empty_count)
        .map_or(1, |j| j.tasks_total.max(1));
    let empty_ms = empty.as_secs_f64() * 1e3;
    println!(
        "{:<36} {:>10.1}ms   ({tasks} tasks, {:.2} ms per task)",
        "empty 800-shard table count",
        empty_ms,
        empty_ms / f64::from(tasks)
    );
    drop(up);
    Ok(ClusterFigures {
        aggregate_ratio,
        empty_ms,
        empty_ms_per_task: empty_ms / f64::from(tasks),
    })
}

/// Placement of an 800-shard, replication-3 keyspace on 2,400 simulated nodes, then the cut and
/// task assignment of a full scan; and the shards that move when one node leaves.
async fn placement_at_scale(
    store: &Arc<EmbeddedStore>,
    session: &QuarrySession,
) -> Result<(f64, usize)> {
    let keyspace = KeyspaceDef {
        replication_factor: 3,
        ..store.keyspace("iot")?
    };
    let nodes: Vec<NodeId> = (0..2400).map(|i| NodeId(format!("node-{i:04}"))).collect();
    let workers: Vec<Slot> = nodes
        .iter()
        .map(|n| Slot {
            worker: WorkerId(format!("worker-{}", n.0)),
            node: n.clone(),
            task_slots: 2,
            local_shards: Default::default(),
        })
        .collect();
    let state = session.context().state();
    let logical = state
        .create_logical_plan("SELECT count(*) FROM iot.readings")
        .await?;
    let physical = state.create_physical_plan(&logical).await?;
    let mut times = Vec::new();
    let mut tasks = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let placement = Placement::compute(&keyspace, &nodes)?;
        let graph = DistributedPlanner::new(2400 * 2).plan(physical.clone())?;
        tasks = assign_scan(&placement, keyspace.shards, &workers).len();
        times.push(started.elapsed());
        ensure!(
            graph.len() == 2,
            "a count is one scan stage and the driver stage"
        );
    }
    times.sort();
    let placement = Placement::compute(&keyspace, &nodes)?;
    let smaller = Placement::compute(&keyspace, &nodes[1..])?;
    let moved = placement.primaries_moved(&smaller);
    let ms = times[times.len() / 2].as_secs_f64() * 1e3;
    println!(
        "{:<36} {:>10.1}ms   ({tasks} tasks; one node leaving moves {moved} of {} primaries)",
        "2,400-node placement + scan plan", ms, keyspace.shards
    );
    Ok((ms, moved))
}

/// Writes the data set as `files` Parquet files and the first `csv_rows` rows as CSV.
fn generate(args: &Args, parquet_dir: &Path, csv_path: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(parquet_dir);
    std::fs::create_dir_all(parquet_dir)?;
    let config = IotConfig {
        rows: args.rows,
        devices: args.devices,
        ..IotConfig::default()
    };
    let per_file = args.rows.div_ceil(args.files.max(1)).max(1);
    let schema = quarry_iot::readings_schema();
    let mut csv = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(File::create(csv_path).context("creating the CSV file")?);
    let (mut written, mut csv_written, mut file_index) = (0u64, 0u64, 0u64);
    let mut writer: Option<ArrowWriter<File>> = None;
    for batch in config.generator() {
        let mut batch = batch;
        while batch.num_rows() > 0 {
            if writer.is_none() {
                let path = parquet_dir.join(format!("readings-{file_index:03}.parquet"));
                writer = Some(ArrowWriter::try_new(
                    File::create(path)?,
                    schema.clone(),
                    None,
                )?);
                file_index += 1;
            }
            let room = (per_file - written % per_file) as usize;
            let take = room.min(batch.num_rows());
            let head = batch.slice(0, take);
            if let Some(w) = writer.as_mut() {
                w.write(&head)?;
            }
            if csv_written < args.csv_rows {
                let n = ((args.csv_rows - csv_written) as usize).min(head.num_rows());
                csv.write(&head.slice(0, n))?;
                csv_written += n as u64;
            }
            written += take as u64;
            batch = batch.slice(take, batch.num_rows() - take);
            if written % per_file == 0
                && let Some(w) = writer.take()
            {
                w.close()?;
            }
        }
    }
    if let Some(w) = writer.take() {
        w.close()?;
    }
    Ok(())
}

/// Loads files into `table` the way `quarry load` does; returns the rows and the seconds taken.
pub(crate) async fn load_files(
    store: &Arc<EmbeddedStore>,
    name: &TableName,
    files: &[PathBuf],
) -> Result<(u64, f64)> {
    let def = store.table(name)?;
    let started = Instant::now();
    let sources: Vec<Source> = files.iter().cloned().map(Source::File).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let read = tokio::task::spawn_blocking(move || {
        read_sources(&sources, &def, &ReadOptions::default(), threads, &|_| {})
    })
    .await??;
    let rows: u64 = read.iter().map(|d| d.rows).sum();
    let batches: Vec<RecordBatch> = read.into_iter().flat_map(|d| d.batches).collect();
    let summary = store.write(name, batches).await?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        summary.rows == rows,
        "stored {} of {rows} rows of {name}",
        summary.rows
    );
    Ok((rows, secs))
}

/// Loads files the way `quarry load` does; returns rows per second.
async fn load(store: &Arc<EmbeddedStore>, table: &str, files: &[PathBuf]) -> Result<f64> {
    let (rows, secs) = load_files(store, &TableName::parse(table)?, files).await?;
    let rate = rows as f64 / secs;
    println!("loaded {rows} rows into {table} in {secs:.2} s ({rate:.0} rows/s)");
    Ok(rate)
}

async fn time_query<F, Fut>(iterations: usize, run: F) -> Result<(Duration, Vec<RecordBatch>)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<RecordBatch>>>,
{
    let result = run().await?;
    let mut times = Vec::new();
    for _ in 0..iterations.max(1) {
        let started = Instant::now();
        run().await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok((times[times.len() / 2], result))
}

/// Times two queries warm, alternating between them run by run so that a shared machine's
/// changing load hits both alike; returns each one's median and its result.
async fn time_side_by_side<T, F, Fut, G, Gut>(
    iterations: usize,
    ours: F,
    theirs: G,
) -> Result<((Duration, T), (Duration, T))>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
    G: Fn() -> Gut,
    Gut: std::future::Future<Output = Result<T>>,
{
    let (our_rows, their_rows) = (ours().await?, theirs().await?);
    let (mut our_times, mut their_times) = (Vec::new(), Vec::new());
    for _ in 0..iterations.max(1) {
        let started = Instant::now();
        ours().await?;
        our_times.push(started.elapsed());
        let started = Instant::now();
        theirs().await?;
        their_times.push(started.elapsed());
    }
    our_times.sort();
    their_times.sort();
    Ok((
        (our_times[our_times.len() / 2], our_rows),
        (their_times[their_times.len() / 2], their_rows),
    ))
}

/// Compares results as printed text, row by row (both sides ORDER BY the same key).
fn same_answer(a: &[RecordBatch], b: &[RecordBatch]) -> Result<bool> {
    let text = |batches: &[RecordBatch]| -> Result<Vec<String>> {
        let mut rows = Vec::new();
        for batch in batches {
            let options = arrow::util::display::FormatOptions::default();
            let formatters = batch
                .columns()
                .iter()
                .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()?;
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| {
                            let s = f.value(row).to_string();
                            // Averages may differ in the last bits with summation order.
                            match s.parse::<f64>() {
                                Ok(v) if s.contains('.') => format!("{v:.6}"),
                                _ => s,
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("|"),
                );
            }
        }
        Ok(rows)
    };
    Ok(text(a)? == text(b)?)
}
