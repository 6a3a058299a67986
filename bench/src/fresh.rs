//! Reads over fresh overlapping writes: queries (a) and (b) on a table holding one large run plus
//! many small loads spread over the whole ring (a tenth of their rows updating existing keys, the
//! last loads still in the memtable), beside the same live rows loaded into a fresh table, and
//! beside plain DataFusion on those rows as Parquet. Runs alternate between the three, so a shared
//! machine's noise hits all alike; then the fresh table is compacted and measured again.
//!
//! The live rows are worked out here, independently of Quarry: new rows get timestamps past the
//! generated window (new keys for certain), and updates hit distinct base rows.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{Float64Type, TimestampMillisecondType};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use parquet::arrow::ArrowWriter;
use quarry_core::schema::TableName;
use quarry_iot::IotConfig;
use quarry_sql::QuarrySession;
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};

use crate::{QUERIES, WorkDir, same_answer};

#[derive(Debug, clap::Args)]
pub struct FreshArgs {
    /// Rows of the base run.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Distinct devices.
    #[arg(long, default_value_t = 100_000)]
    devices: u64,
    /// Small loads after the base run.
    #[arg(long, default_value_t = 100)]
    loads: usize,
    /// Rows per small load.
    #[arg(long, default_value_t = 10_000)]
    load_rows: usize,
    /// The last this many loads stay in the memtable (the others are flushed as a `quarry load`
    /// process does when it exits).
    #[arg(long, default_value_t = 10)]
    unflushed: usize,
    /// Let the fresh table pile up this many overlapping runs, superseded rows and all, before
    /// background compaction merges any (sustained ingestion leaves 10-20 when compaction falls
    /// behind); by default the store's own thresholds apply.
    #[arg(long, value_name = "N")]
    max_runs: Option<usize>,
    /// Timed runs per query (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Once both tables are built, only run the queries on this one, `--iterations` times each,
    /// and stop: attach a profiler (`perf record -p PID`) once it prints "profiling".
    #[arg(long, value_enum)]
    profile: Option<Profiled>,
}

/// The table `--profile` runs the queries on.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Profiled {
    Fresh,
    Loaded,
}

/// Every `UPDATE_EVERY`-th row of a load updates an existing key.
const UPDATE_EVERY: usize = 10;

/// The readings table of the fresh-writes and ingestion benchmarks.
pub(crate) const DDL: &str = "CREATE KEYSPACE iot WITH shards = 800;
     CREATE TABLE iot.readings (device_id bigint, ts timestamp, sensor text, value double, status int, PRIMARY KEY ((device_id), ts, sensor));";

/// `rows` generated readings of `devices` devices, as one batch, and the config that made them.
pub(crate) fn base_readings(rows: u64, devices: u64) -> Result<(IotConfig, RecordBatch)> {
    let config = IotConfig {
        rows,
        devices,
        ..IotConfig::default()
    };
    let batches: Vec<RecordBatch> = config.generator().collect();
    Ok((
        config,
        concat_batches(&quarry_iot::readings_schema(), &batches)?,
    ))
}

pub async fn run(args: FreshArgs) -> Result<()> {
    let work = WorkDir::new(args.dir.as_deref())?;
    let (config, base) = base_readings(args.rows, args.devices)?;
    let schema = base.schema();
    let (loads, live) = small_loads(&args, &config, &base)?;
    println!(
        "fresh writes: {} base rows, {} loads of {} rows ({} updates each), the last {} unflushed",
        base.num_rows(),
        args.loads,
        args.load_rows,
        args.load_rows / UPDATE_EVERY,
        args.unflushed
    );

    // The live rows as Parquet, for plain DataFusion and for the freshly loaded table.
    let parquet_dir = work.path().join("live");
    let _ = std::fs::remove_dir_all(&parquet_dir);
    std::fs::create_dir_all(&parquet_dir)?;
    let per_file = live.num_rows().div_ceil(10);
    for (i, start) in (0..live.num_rows()).step_by(per_file).enumerate() {
        let file = std::fs::File::create(parquet_dir.join(format!("live-{i:02}.parquet")))?;
        let mut writer = ArrowWriter::try_new(file, schema.clone(), None)?;
        writer.write(&live.slice(start, per_file.min(live.num_rows() - start)))?;
        writer.close()?;
    }
    let plain = SessionContext::new();
    plain
        .register_parquet(
            "readings",
            parquet_dir.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;

    let name = TableName::new("iot", "readings");
    // The table under fresh writes.
    let mut options = EmbeddedOptions::default();
    if let Some(runs) = args.max_runs {
        options.max_runs = runs;
        options.max_dead_fraction = 1.0;
    }
    let fresh_store = Arc::new(EmbeddedStore::open(work.path().join("fresh"), options)?);
    let fresh = QuarrySession::new(fresh_store.clone() as Arc<dyn Store>);
    fresh.execute_script(DDL).await?;
    fresh_store.write(&name, vec![base.clone()]).await?;
    fresh_store.wait_idle();
    let mut load_times = Vec::new();
    for (i, load) in loads.into_iter().enumerate() {
        let flushed = i + args.unflushed < args.loads;
        if !flushed && i + args.unflushed == args.loads {
            // Let background compaction settle first: it flushes the memtable before it starts.
            fresh_store.wait_idle();
        }
        let started = Instant::now();
        fresh_store.write(&name, vec![load]).await?;
        if flushed {
            fresh_store.flush()?;
        }
        load_times.push(started.elapsed());
    }
    let stats = fresh_store.table_stats(&name)?;
    println!(
        "fresh table: {} runs (overlap depth {}), {} rows superseded, {} rows in the memtable; \
         a small load took {:.1} ms (median, with its flush)",
        stats.runs,
        stats.overlap_depth,
        stats.deleted_rows,
        stats.memtable_rows,
        median(&mut load_times).as_secs_f64() * 1e3
    );

    // The same live rows in a table loaded at once.
    let loaded_store = Arc::new(EmbeddedStore::open(
        work.path().join("loaded"),
        EmbeddedOptions::default(),
    )?);
    let loaded = QuarrySession::new(loaded_store.clone() as Arc<dyn Store>);
    loaded.execute_script(DDL).await?;
    loaded_store.write(&name, vec![live.clone()]).await?;
    loaded_store.wait_idle();

    if let Some(profiled) = args.profile {
        let session = match profiled {
            Profiled::Fresh => &fresh,
            Profiled::Loaded => &loaded,
        };
        for (label, sql) in QUERIES {
            let sql = sql.replace("{t}", "iot.readings");
            println!(
                "profiling {label} on the {profiled:?} table (process {})",
                std::process::id()
            );
            let started = Instant::now();
            for _ in 0..args.iterations.max(1) {
                session.execute(&sql).await?;
            }
            println!(
                "{label:<36} {:>8.1}ms (mean)",
                started.elapsed().as_secs_f64() * 1e3 / args.iterations.max(1) as f64
            );
        }
        return Ok(());
    }

    println!(
        "\n{:<36} {:>10} {:>10} {:>10} {:>14}",
        "query (warm, median)", "fresh", "loaded", "datafusion", "fresh/loaded"
    );
    let mut worst = 0.0f64;
    for (label, sql) in QUERIES {
        let ours = sql.replace("{t}", "iot.readings");
        let theirs = sql.replace("{t}", "readings");
        let runs = [
            Runner::Quarry(&fresh, &ours),
            Runner::Quarry(&loaded, &ours),
            Runner::Plain(&plain, &theirs),
        ];
        let (times, answers) = alternate(&runs, args.iterations).await?;
        ensure!(
            same_answer(&answers[0], &answers[2])?,
            "{label}: Quarry on the fresh table and plain DataFusion disagree"
        );
        ensure!(
            same_answer(&answers[1], &answers[2])?,
            "{label}: Quarry on the loaded table and plain DataFusion disagree"
        );
        let ratio = times[0] / times[1];
        worst = worst.max(ratio);
        println!(
            "{label:<36} {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>14.2}",
            times[0] * 1e3,
            times[1] * 1e3,
            times[2] * 1e3,
            ratio
        );
    }

    let started = Instant::now();
    fresh_store.compact(&name)?;
    println!(
        "\ncompacted the fresh table in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<36} {:>10} {:>10} {:>14}",
        "query (warm, median)", "compacted", "datafusion", "ratio"
    );
    for (label, sql) in QUERIES {
        let ours = sql.replace("{t}", "iot.readings");
        let theirs = sql.replace("{t}", "readings");
        let runs = [
            Runner::Quarry(&fresh, &ours),
            Runner::Plain(&plain, &theirs),
        ];
        let (times, answers) = alternate(&runs, args.iterations).await?;
        ensure!(
            same_answer(&answers[0], &answers[1])?,
            "{label}: Quarry and plain DataFusion disagree after compaction"
        );
        println!(
            "{label:<36} {:>8.1}ms {:>8.1}ms {:>14.2}",
            times[0] * 1e3,
            times[1] * 1e3,
            times[0] / times[1]
        );
    }
    println!("\nworst fresh/loaded ratio: {worst:.2} (target <= 1.3)");
    Ok(())
}

/// The small loads, and the live rows once all of them are written.
fn small_loads(
    args: &FreshArgs,
    config: &IotConfig,
    base: &RecordBatch,
) -> Result<(Vec<RecordBatch>, RecordBatch)> {
    let n = base.num_rows() as u64;
    ensure!(n > 0, "no base rows");
    let updates_per_load = args.load_rows / UPDATE_EVERY;
    ensure!(
        (args.loads * updates_per_load) as u64 <= n,
        "more updates than base rows"
    );
    // A stride coprime with n visits distinct base rows in a scattered order.
    let stride = coprime_stride(n);
    let mut next_update = 0u64;
    // Per base row, its value after the loads when one updates it.
    let mut updated_values: Vec<Option<Option<f64>>> = vec![None; base.num_rows()];
    let base_values = base.column(3).as_primitive::<Float64Type>();
    let mut loads = Vec::with_capacity(args.loads);
    let mut new_rows = Vec::with_capacity(args.loads);
    for load in 0..args.loads {
        let mut rows: Vec<u32> = Vec::with_capacity(args.load_rows);
        let mut is_update = Vec::with_capacity(args.load_rows);
        for i in 0..args.load_rows {
            let update = i % UPDATE_EVERY == 0;
            let row = if update {
                next_update += 1;
                (next_update * stride) % n
            } else {
                // A device picked all over the ring, for a reading past the window.
                ((load * args.load_rows + i) as u64 * 7_919 + 13) % n
            };
            rows.push(row as u32);
            is_update.push(update);
        }
        let picked = take_record_batch(base, &UInt32Array::from(rows.clone()))?;
        let ts = picked.column(1).as_primitive::<TimestampMillisecondType>();
        let values = picked.column(3).as_primitive::<Float64Type>();
        let mut new_ts = Vec::with_capacity(args.load_rows);
        let mut new_values = Vec::with_capacity(args.load_rows);
        for i in 0..args.load_rows {
            // NULL readings stay NULL.
            let value = (!values.is_null(i)).then(|| values.value(i));
            if is_update[i] {
                let value = value.map(|v| v + 1000.0 + load as f64);
                updated_values[rows[i] as usize] = Some(value);
                new_ts.push(ts.value(i));
                new_values.push(value);
            } else {
                new_ts.push(config.end_millis + (load * args.load_rows + i) as i64);
                new_values.push(value);
            }
        }
        let mut columns: Vec<ArrayRef> = picked.columns().to_vec();
        columns[1] =
            Arc::new(TimestampMillisecondArray::from(new_ts).with_timezone_opt(ts.timezone()));
        columns[3] = Arc::new(Float64Array::from(new_values));
        let batch = RecordBatch::try_new(base.schema(), columns)?;
        let fresh: Vec<u32> = (0..args.load_rows as u32)
            .filter(|&i| !is_update[i as usize])
            .collect();
        new_rows.push(take_record_batch(&batch, &UInt32Array::from(fresh))?);
        loads.push(batch);
    }
    let live_values: Float64Array = (0..base.num_rows())
        .map(|i| match updated_values[i] {
            Some(value) => value,
            None => (!base_values.is_null(i)).then(|| base_values.value(i)),
        })
        .collect();
    let mut columns = base.columns().to_vec();
    columns[3] = Arc::new(live_values);
    let mut live = vec![RecordBatch::try_new(base.schema(), columns)?];
    live.extend(new_rows);
    Ok((loads, concat_batches(&base.schema(), &live)?))
}

/// A stride near n / φ that shares no factor with n.
fn coprime_stride(n: u64) -> u64 {
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let mut stride = (n as f64 * 0.618_033_988_75) as u64 | 1;
    while gcd(stride, n) != 1 {
        stride += 2;
    }
    stride
}

enum Runner<'a> {
    Quarry(&'a QuarrySession, &'a str),
    Plain(&'a SessionContext, &'a str),
}

impl Runner<'_> {
    async fn run(&self) -> Result<Vec<RecordBatch>> {
        Ok(match self {
            Runner::Quarry(session, sql) => session.execute(sql).await?.batches,
            Runner::Plain(context, sql) => context.sql(sql).await?.collect().await?,
        })
    }
}

/// Runs each runner once (warm-up, answers kept), then `iterations` rounds of all of them in
/// turn; returns each one's median in seconds and its answer.
async fn alternate(
    runners: &[Runner<'_>],
    iterations: usize,
) -> Result<(Vec<f64>, Vec<Vec<RecordBatch>>)> {
    let mut answers = Vec::new();
    for runner in runners {
        answers.push(runner.run().await?);
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); runners.len()];
    for _ in 0..iterations.max(1) {
        for (runner, times) in runners.iter().zip(times.iter_mut()) {
            let started = Instant::now();
            runner.run().await?;
            times.push(started.elapsed());
        }
    }
    Ok((
        times.iter_mut().map(|t| median(t).as_secs_f64()).collect(),
        answers,
    ))
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
