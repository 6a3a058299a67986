//! `quarry-bench jobs`: Rust jobs (WASM on the workers) beside the same work as SQL, on one
//! `quarry up --workers N` cluster over the same data, the timed runs alternating.
//!
//! 1. Generate `--rows` IoT readings into an 800-shard table (the SQL benchmark's data set).
//! 2. Build the job modules (`bench/jobs`, `examples/device-rollup`) for wasm32.
//! 3. On the cluster, through the driver as `quarry submit --driver` and `quarry sql --driver`
//!    do: query (b) as a job vs as SQL; the daily rollup written back, job vs `INSERT ...
//!    SELECT`; an identity `map` over every row (the cost of crossing into the module and back)
//!    next to a SQL scan of the same columns.
//! 4. In this process: a never-seen module's compile next to loading it compiled from the disk
//!    cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use arrow::array::RecordBatch;
use quarry_client::{Client, UploadedJob};
use quarry_core::schema::TableName;
use quarry_iot::IotConfig;
use quarry_sql::QuarrySession;
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};

use crate::{Up, WorkDir, quarry_binary, time_side_by_side};

/// Targets, as ratios of the job's time to SQL's.
const QUERY_TARGET: f64 = 1.3;
const ROLLUP_TARGET: f64 = 1.5;

#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Readings to generate.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Distinct devices.
    #[arg(long, default_value_t = 100_000)]
    devices: u64,
    /// Timed runs per measure and side (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Workers of the local cluster.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

const SCHEMA: &str = "
CREATE KEYSPACE iot WITH shards = 800;
CREATE TABLE iot.readings (device_id bigint, ts timestamp, sensor text, value double, status int,
    PRIMARY KEY ((device_id), ts, sensor));
CREATE KEYSPACE synth WITH shards = 64 AND nodes = 1;
CREATE TABLE synth.device_rollup (device_id bigint, sensor text, bucket timestamp,
    readings bigint, min_value double, max_value double, avg_value double,
    PRIMARY KEY ((device_id), sensor, bucket));
CREATE TABLE synth.device_rollup_job (device_id bigint, sensor text, bucket timestamp,
    readings bigint, min_value double, max_value double, avg_value double,
    PRIMARY KEY ((device_id), sensor, bucket))";

const QUERY_B: &str = "SELECT device_id, count(*) AS n, avg(value) AS avg_value, \
     max(value) AS max_value FROM iot.readings WHERE sensor = 'temp' GROUP BY device_id";

const ROLLUP: &str = "INSERT INTO synth.device_rollup \
     SELECT device_id, sensor, date_trunc('day', ts), count(*), min(value), max(value), avg(value) \
     FROM iot.readings GROUP BY 1, 2, 3";

const SCAN: &str = "SELECT count(device_id), count(ts), count(sensor), count(value), \
     count(status) FROM iot.readings";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub async fn run(args: JobsArgs) -> Result<()> {
    let work_dir = WorkDir::new(args.dir.as_deref())?;
    let work = work_dir.path().to_path_buf();
    let store_dir = work.join("store");
    let _ = std::fs::remove_dir_all(&store_dir);
    println!(
        "Quarry job benchmark: {} rows, {} devices, {} workers, {} cores",
        args.rows,
        args.devices,
        args.workers,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let started = Instant::now();
    generate(&args, &store_dir).await?;
    println!(
        "generated and stored the readings in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let bench_job = build("bench/jobs")?;
    let rollup_job = build("examples/device-rollup")?;
    println!(
        "built the job modules in {:.1} s\n",
        started.elapsed().as_secs_f64()
    );

    compile_times(&bench_job, &work)?;

    let up = Up::start(&quarry_binary()?, &store_dir, args.workers)?;
    let driver = Client::connect(&up.url, Some(&up.token)).await?;
    println!(
        "\non `quarry up --workers {}` (through the driver, as quarry submit / quarry sql do):",
        args.workers
    );
    println!(
        "{:<44} {:>10} {:>10} {:>8} {:>8}",
        "measure (warm, median)", "job", "SQL", "ratio", "target"
    );

    let temp_stats = [("job".to_string(), "temp-stats".to_string())];
    let temp_stats = driver.upload_job(bench_job.clone(), &temp_stats).await?;
    let ((job_time, job_devices), (sql_time, sql_devices)) = time_side_by_side(
        args.iterations,
        || job_rows(&driver, &temp_stats),
        || sql_rows(&driver, QUERY_B),
    )
    .await?;
    ensure!(
        job_devices == sql_devices,
        "query (b): the job gave {job_devices} devices, SQL {sql_devices}"
    );
    report(
        "(b) per-device temp count/avg/max",
        job_time,
        sql_time,
        Some(QUERY_TARGET),
    );

    let rollup_args = [("target".to_string(), "synth.device_rollup_job".to_string())];
    let rollup = driver.upload_job(rollup_job, &rollup_args).await?;
    let ((job_time, job_written), (sql_time, _)) = time_side_by_side(
        args.iterations,
        || job_rows(&driver, &rollup),
        || sql_rows(&driver, ROLLUP),
    )
    .await?;
    ensure!(
        job_written == 1,
        "the rollup job reports its rows written in one row"
    );
    report(
        "daily rollup written back (upserts)",
        job_time,
        sql_time,
        Some(ROLLUP_TARGET),
    );

    let identity = [("job".to_string(), "identity".to_string())];
    let identity = driver.upload_job(bench_job, &identity).await?;
    let ((job_time, _), (sql_time, _)) = time_side_by_side(
        args.iterations,
        || job_rows(&driver, &identity),
        || sql_rows(&driver, SCAN),
    )
    .await?;
    report(
        "identity map of every row / SQL scan",
        job_time,
        sql_time,
        None,
    );
    println!(
        "{:<44} {:>10.1} ns per row through the module",
        "",
        job_time.as_secs_f64() * 1e9 / args.rows as f64
    );
    drop(up);
    Ok(())
}

fn report(label: &str, job: Duration, sql: Duration, target: Option<f64>) {
    let ratio = job.as_secs_f64() / sql.as_secs_f64().max(1e-9);
    let verdict = match target {
        Some(t) if ratio <= t => format!("<= {t}: met"),
        Some(t) => format!("<= {t}: MISSED"),
        None => String::new(),
    };
    println!(
        "{label:<44} {:>8.1}ms {:>8.1}ms {ratio:>8.2} {verdict}",
        job.as_secs_f64() * 1e3,
        sql.as_secs_f64() * 1e3
    );
}

/// Rows of result 0 of a job run on the cluster.
async fn job_rows(driver: &Client, job: &UploadedJob) -> Result<usize> {
    let mut result = driver.clone().run_job_result(job, 0).await?;
    let mut rows = 0;
    while let Some(batch) = result.next().await? {
        rows += batch.num_rows();
    }
    Ok(rows)
}

async fn sql_rows(driver: &Client, sql: &str) -> Result<usize> {
    let output = driver.clone().sql(sql).await?;
    Ok(output.batches.iter().map(RecordBatch::num_rows).sum())
}

async fn generate(args: &JobsArgs, store_dir: &Path) -> Result<()> {
    let store = Arc::new(EmbeddedStore::open(store_dir, EmbeddedOptions::default())?);
    let session = QuarrySession::new(store.clone() as Arc<dyn Store>);
    session.execute_script(SCHEMA).await?;
    let name = TableName::new("iot", "readings");
    let schema = store.table(&name)?.arrow_schema();
    let config = IotConfig {
        rows: args.rows,
        devices: args.devices,
        ..IotConfig::default()
    };
    config.validate().map_err(anyhow::Error::msg)?;
    let mut batches = Vec::new();
    for batch in config.generator() {
        batches.push(RecordBatch::try_new(
            schema.clone(),
            batch.columns().to_vec(),
        )?);
        if batches.len() == 32 {
            store.write(&name, std::mem::take(&mut batches)).await?;
        }
    }
    if !batches.is_empty() {
        store.write(&name, batches).await?;
    }
    store.flush()?;
    store.wait_idle();
    Ok(())
}

pub(crate) fn build(crate_dir: &str) -> Result<Vec<u8>> {
    let manifest = workspace().join(crate_dir).join("Cargo.toml");
    let path = quarry_driver::job_build::build(&manifest)?;
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// A never-seen module's compile, next to loading it from the disk cache in a fresh process
/// (a fresh runtime with the same cache directory).
fn compile_times(module: &[u8], work: &Path) -> Result<()> {
    let cache = work.join("compiled");
    let _ = std::fs::remove_dir_all(&cache);
    let runtime = |cache_dir: Option<PathBuf>| {
        quarry_wasm::Runtime::new(quarry_wasm::RuntimeConfig {
            cache_dir,
            ..quarry_wasm::RuntimeConfig::default()
        })
    };
    let started = Instant::now();
    runtime(Some(cache.clone()))?.load(module)?;
    let cold = started.elapsed();
    let started = Instant::now();
    let cached = runtime(Some(cache))?.load(module)?;
    let warm = started.elapsed();
    ensure!(
        cached.from_disk_cache(),
        "the second load did not come from the disk cache"
    );
    println!(
        "module of {:.2} MB: cold compile {:.0} ms, loaded compiled from disk {:.1} ms ({:.0}× faster)",
        module.len() as f64 / 1e6,
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        cold.as_secs_f64() / warm.as_secs_f64().max(1e-9)
    );
    Ok(())
}
