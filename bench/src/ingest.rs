//! Sustained ingestion: readings arrive in small batches (default 1,000 rows) at a given rate
//! (default 200,000 rows/s; `--rate 0` writes as fast as the writers can) for a while (default
//! 60 s) into a table that already holds a large run, while queries (a) and (b) run once a
//! second. Reports the rows per second ingested, and the queries' median and p99 latency during
//! ingestion beside the same queries before ingestion (the starting rows in one run), after it
//! (the runs and memtable it left, nothing else running) and after compacting the final rows
//! into one run (its p99 too, over as many rounds as ran during ingestion, beside the p99 during
//! it); then the process's peak resident memory. The table grows as it is read, so the
//! plain ratio of the median to the compacted (final) table flatters the queries during
//! ingestion, which read fewer rows. The same-size ratio compares each query with the same
//! number of rows in one run instead: the two one-run tables measured (the starting rows before
//! ingestion, the final rows compacted) give a query's time as a straight line in the rows, and
//! each query during ingestion is divided by that line at the rows the table then held. (Time
//! per row alone would not do: a query's fixed cost makes a small one-run table dearer per row
//! than a large one.) Every write is acknowledged only once durable (the write-ahead log is
//! fsynced), as a client's would be. The CPU seconds each kind of thread spent while rows
//! arrived (queries, flush, compaction, cover, log writes) show where the cores went, with far
//! less noise than latencies.
//!
//! A p99 of sixty queries is the slowest one, and it moves from run to run more than most
//! changes move it. `--runs N` repeats the whole measurement on a fresh table N times and ends
//! with the percentiles of all the runs' queries together, and each run's p99 ratio beside them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use arrow::array::{ArrayRef, AsArray, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::TimestampMillisecondType;
use quarry_core::schema::TableName;
use quarry_sql::QuarrySession;
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};

use crate::{QUERIES, WorkDir};

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Rows in the table before ingestion starts.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Distinct devices.
    #[arg(long, default_value_t = 100_000)]
    devices: u64,
    /// Rows per write.
    #[arg(long, default_value_t = 1_000)]
    batch_rows: usize,
    /// How long to ingest, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Concurrent writers (each writes its own batches).
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Rows per second arriving, over all writers (0: as fast as the writers can write, which
    /// measures capacity; queries then share the cores with writers that never wait).
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
    /// The store's memtable flush threshold, in rows (default: the store's).
    #[arg(long)]
    memtable_rows: Option<usize>,
    /// Compact once more runs than this overlap (default: the store's).
    #[arg(long)]
    max_runs: Option<usize>,
    /// Compactions that may run at once (default: the store's).
    #[arg(long)]
    compaction_threads: Option<usize>,
    /// Run compactions' heavy steps at the writers' priority, not in the idle class, once more
    /// runs than this overlap (default: the store's).
    #[arg(long, value_name = "DEPTH")]
    raise_compaction_depth: Option<usize>,
    /// The queries' DataFusion partitions (`datafusion.execution.target_partitions`; default:
    /// the session's, one per core).
    #[arg(long, value_name = "N")]
    target_partitions: Option<usize>,
    /// How long to wait, once ingestion ends, for the flushes and compactions it queued before
    /// measuring the "settled" table (it is measured as it is then, settled or not).
    #[arg(long, default_value_t = 300)]
    settle_seconds: u64,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print a line a second during ingestion: the table's runs, overlap depth, memtable rows,
    /// the last compaction, the process's resident memory, the CPU seconds the store's threads
    /// spent since the last line and each query's latency (to see what a slow query met), then
    /// per query the milliseconds each kind of thread spent on a core and waiting for one while
    /// it ran (`kind:on/waiting`; idle-class threads apart, as `-idle`).
    #[arg(long)]
    timeline: bool,
    /// Repeat the whole measurement this many times, each on a fresh table in the same process,
    /// then print the percentiles over all runs' queries (a p99 over N times the samples). Each
    /// run's store is removed once it is measured.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
}

/// What one run measured, per query, for the summary over several runs.
struct Measured {
    /// Latencies during ingestion.
    during: Vec<Vec<Duration>>,
    /// Latencies on the final rows compacted into one run.
    compacted: Vec<Vec<Duration>>,
    /// Each latency during ingestion against one run of the rows the table then held.
    same_size: Vec<Vec<f64>>,
    /// Rows ingested per second.
    rows_per_sec: f64,
}

pub async fn run(args: IngestArgs) -> Result<()> {
    let work = WorkDir::new(args.dir.as_deref())?;
    let (config, base) = crate::fresh::base_readings(args.rows, args.devices)?;
    if args.runs == 1 {
        run_once(&args, &work.path().join("store"), &base, config.end_millis).await?;
        return Ok(());
    }
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        println!("\n== run {i} of {}", args.runs);
        // Each run's peak memory is its own, from what the process holds as it starts (memory
        // the allocator kept from earlier runs counts in it).
        crate::memory::reset_peak_rss();
        if let Some(mib) = crate::memory::rss_mib(std::process::id()) {
            println!("resident memory as the run starts: {mib:.0} MiB");
        }
        let dir = work.path().join(format!("store-{i}"));
        runs.push(run_once(&args, &dir, &base, config.end_millis).await?);
        std::fs::remove_dir_all(&dir)?;
    }
    print_pooled(&runs);
    Ok(())
}

/// One measurement, on a fresh store in `dir` that starts with the rows of `base`.
async fn run_once(
    args: &IngestArgs,
    dir: &std::path::Path,
    base: &RecordBatch,
    end_millis: i64,
) -> Result<Measured> {
    let defaults = EmbeddedOptions::default();
    let options = EmbeddedOptions {
        memtable_flush_rows: args.memtable_rows.unwrap_or(defaults.memtable_flush_rows),
        max_runs: args.max_runs.unwrap_or(defaults.max_runs),
        compaction_threads: args
            .compaction_threads
            .unwrap_or(defaults.compaction_threads),
        raise_compaction_depth: args
            .raise_compaction_depth
            .unwrap_or(defaults.raise_compaction_depth),
        ..defaults
    };
    let store = Arc::new(EmbeddedStore::open(dir, options)?);
    let session = Arc::new(QuarrySession::new(store.clone() as Arc<dyn Store>));
    session.execute_script(crate::fresh::DDL).await?;
    if let Some(n) = args.target_partitions {
        session
            .execute(&format!("SET datafusion.execution.target_partitions = {n}"))
            .await?;
    }
    let name = TableName::new("iot", "readings");
    let base_rows = base.num_rows();
    store.write(&name, vec![base.clone()]).await?;
    store.wait_idle();
    let arriving = match args.rate {
        0 => "as fast as they can".to_string(),
        rate => format!("{rate} rows/s arriving"),
    };
    println!(
        "sustained ingestion: {} rows to start with, then {}-row writes from {} writers ({arriving}) \
         for {} s, queries (a) and (b) once a second",
        base.num_rows(),
        args.batch_rows,
        args.writers,
        args.seconds
    );

    // The queries on the table as loaded (one run): the reference.
    let mut before = timed_queries(&session, 10).await?;
    let start_rows = live_rows(&store.table_stats(&name)?);

    let cpu_before = crate::cpu::CpuSample::now();
    let stop = Arc::new(AtomicBool::new(false));
    let ingested = Arc::new(AtomicU64::new(0));
    let readings = Arc::new(Readings::new(base.clone(), end_millis)?);
    let mut writers = Vec::new();
    for writer in 0..args.writers {
        let (store, name, stop, ingested, readings) = (
            store.clone(),
            name.clone(),
            stop.clone(),
            ingested.clone(),
            readings.clone(),
        );
        let batch_rows = args.batch_rows;
        // Each writer's batches arrive on a schedule; a writer behind it writes at once.
        let every = (args.rate > 0).then(|| {
            Duration::from_secs_f64(batch_rows as f64 * args.writers as f64 / args.rate as f64)
        });
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let started = tokio::time::Instant::now();
            while !stop.load(Ordering::SeqCst) {
                if let Some(every) = every {
                    tokio::time::sleep_until(started + every * n as u32).await;
                }
                let batch = readings.batch(writer as u64, n, batch_rows)?;
                store.write(&name, vec![batch]).await?;
                ingested.fetch_add(batch_rows as u64, Ordering::SeqCst);
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    let mut during: Vec<Vec<Duration>> = vec![Vec::new(); QUERIES.len()];
    // The rows the table held when each round of queries ran.
    let mut during_rows: Vec<u64> = Vec::new();
    if args.timeline {
        println!(
            "second  runs  depth  memtable rows  last compaction (runs, rows, ms)  RSS MiB  \
             CPU s: flush compaction cover exited  query ms  per query, ms each kind of thread \
             spent on a core / waiting for one"
        );
    }
    let mut cpu_last = cpu_before.clone();
    while started.elapsed() < Duration::from_secs(args.seconds) {
        let tick = Instant::now();
        let shape = store.table_stats(&name)?;
        during_rows.push(live_rows(&shape));
        // Where the cores went while each query ran (for the timeline).
        let mut scheduled = Vec::new();
        for (q, (_, sql)) in QUERIES.iter().enumerate() {
            let sched_before = args.timeline.then(crate::cpu::SchedSample::now);
            let query_started = Instant::now();
            session.execute(&sql.replace("{t}", "iot.readings")).await?;
            during[q].push(query_started.elapsed());
            if let Some(before) = sched_before {
                scheduled.push(crate::cpu::SchedSample::now().describe_since(&before));
            }
        }
        if args.timeline {
            let last = shape
                .last_compaction
                .map(|c| format!("{}, {}, {}", c.runs, c.rows, c.millis))
                .unwrap_or_default();
            let latencies: Vec<String> = during
                .iter()
                .filter_map(|times| times.last())
                .map(|t| format!("{:.0}", t.as_secs_f64() * 1e3))
                .collect();
            let rss = crate::memory::rss_mib(std::process::id())
                .map(|mib| format!("{mib:.0}"))
                .unwrap_or_default();
            let cpu_now = crate::cpu::CpuSample::now();
            let spent = cpu_now.since(&cpu_last);
            cpu_last = cpu_now;
            let store_cpu: Vec<String> = ["flush", "compaction", "cover", "exited threads"]
                .iter()
                .map(|kind| format!("{:.2}", spent.get(kind).copied().unwrap_or(0.0)))
                .collect();
            println!(
                "{:>6.1}  {:>4}  {:>5}  {:>13}  {last:>32}  {rss:>7}  {:>32}  {}  {}",
                started.elapsed().as_secs_f64(),
                shape.runs,
                shape.overlap_depth,
                shape.memtable_rows,
                store_cpu.join(" "),
                latencies.join(" "),
                scheduled.join(" ")
            );
        }
        let rest = Duration::from_secs(1).saturating_sub(tick.elapsed());
        tokio::time::sleep(rest).await;
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let rows = ingested.load(Ordering::SeqCst);
    let cpu = crate::cpu::CpuSample::now().since(&cpu_before);
    let stats = store.table_stats(&name)?;
    println!(
        "ingested {rows} rows in {secs:.1} s: {:.0} rows/s{} (target >= 200,000); the table \
         then had {} runs (overlap depth {}), {} rows in the memtable",
        rows as f64 / secs,
        match args.rate {
            0 => String::new(),
            rate if rows as f64 / secs >= rate as f64 * 0.98 => ", keeping up with arrivals".into(),
            _ => ", FELL BEHIND the arriving rows".into(),
        },
        stats.runs,
        stats.overlap_depth,
        stats.memtable_rows
    );
    print_cpu(&cpu, secs, rows);
    let peak_ingesting = crate::memory::peak_rss_mib(std::process::id());
    // The same queries on the table as ingestion left it, with nothing else running: what the
    // runs and the memtable cost a read, apart from sharing the cores with the writers.
    let mut after = timed_queries(&session, 5).await?;
    // Once the flushes and compactions ingestion queued are done: the table's shape alone,
    // without background work sharing the cores (the "idle" runs above may overlap it).
    let settle = Instant::now();
    if !store.wait_idle_for(Duration::from_secs(args.settle_seconds)) {
        let stats = store.table_stats(&name)?;
        println!(
            "background work had NOT SETTLED {} s after ingestion ended: {} runs (overlap depth \
             {}), {} rows in the memtable; the \"settled\" column below is the table as it was then",
            args.settle_seconds, stats.runs, stats.overlap_depth, stats.memtable_rows
        );
    } else {
        println!(
            "background work settled {:.1} s after ingestion ended",
            settle.elapsed().as_secs_f64()
        );
    }
    let settled_runs = store.table_stats(&name)?.runs;
    let mut settled = timed_queries(&session, 5).await?;
    let peak_settled = crate::memory::peak_rss_mib(std::process::id());
    // And on the same rows compacted into one run: the reference for the rows the table ends
    // with (queries during ingestion read between the starting rows and these).
    // As many rounds as ran during ingestion, so that the two p99s are read off samples of
    // the same size (the p99 of a handful is only their slowest).
    store.flush()?;
    store.compact(&name)?;
    let mut compacted = timed_queries(&session, during_rows.len().max(5)).await?;
    let final_rows = live_rows(&store.table_stats(&name)?);
    println!(
        "\nlatencies: before ingestion ({} rows, one run), during it (median, p99), after it \
         (idle, {} runs), once background work settled ({} runs) and after compacting the final \
         {} rows into one run (median, p99, over as many rounds as ran during ingestion); same \
         size: each query during ingestion against one run of the rows the table then held (the \
         line through before and compacted), median",
        base_rows, stats.runs, settled_runs, final_rows
    );
    println!(
        "{:<36} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>15} {:>19} {:>19} {:>15} {:>15} {:>18}",
        "query",
        "before",
        "median",
        "p99",
        "idle",
        "settled",
        "compacted",
        "c. p99",
        "median/before",
        "median/compacted",
        "median/same size",
        "p99/c. p99",
        "idle/compacted",
        "settled/compacted"
    );
    let mut all_same_size = Vec::new();
    for (q, (label, _)) in QUERIES.iter().enumerate() {
        let reference = percentile(&mut before[q], 50);
        let median = percentile(&mut during[q], 50);
        let p99 = percentile(&mut during[q], 99);
        let idle = percentile(&mut after[q], 50);
        let settled = percentile(&mut settled[q], 50);
        let compacted_p99 = percentile(&mut compacted[q], 99);
        let compacted = percentile(&mut compacted[q], 50);
        let mut same_size: Vec<f64> = during[q]
            .iter()
            .zip(&during_rows)
            .map(|(took, &rows)| {
                let one_run = one_run_time((start_rows, reference), (final_rows, compacted), rows);
                took.as_secs_f64() / one_run.as_secs_f64()
            })
            .collect();
        println!(
            "{label:<36} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms \
             {:>15.2} {:>19.2} {:>19.2} {:>15.2} {:>15.2} {:>18.2}",
            ms(reference),
            ms(median),
            ms(p99),
            ms(idle),
            ms(settled),
            ms(compacted),
            ms(compacted_p99),
            ms(median) / ms(reference),
            ms(median) / ms(compacted),
            median_of(&mut same_size),
            ms(p99) / ms(compacted_p99),
            ms(idle) / ms(compacted),
            ms(settled) / ms(compacted),
        );
        all_same_size.push(same_size);
    }
    if let (Some(ingesting), Some(settled), Some(peak)) = (
        peak_ingesting,
        peak_settled,
        crate::memory::peak_rss_mib(std::process::id()),
    ) {
        println!(
            "\npeak resident memory of the process: {ingesting:.0} MiB until ingestion ended, \
             {settled:.0} MiB once background work settled, {peak:.0} MiB with the final \
             compaction"
        );
    }
    Ok(Measured {
        during,
        compacted,
        same_size: all_same_size,
        rows_per_sec: rows as f64 / secs,
    })
}

/// The queries' latencies over all runs together: during ingestion and on the compacted rows,
/// their ratio, and each run's p99 ratio (the target is each 60 s run's).
fn print_pooled(runs: &[Measured]) {
    let rates: Vec<f64> = runs.iter().map(|r| r.rows_per_sec).collect();
    let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let fastest = rates.iter().copied().fold(0.0, f64::max);
    println!(
        "\nover all {} runs ({slowest:.0}-{fastest:.0} rows/s ingested): latencies during \
         ingestion and on the final rows compacted into one run, all runs' queries together; \
         same size as above; then each run's p99/c. p99",
        runs.len()
    );
    println!(
        "{:<36} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>15} {:>15} {:>17}  per run p99/c. p99",
        "query",
        "samples",
        "median",
        "p95",
        "p99",
        "c. median",
        "c. p99",
        "p95/c. p95",
        "p99/c. p99",
        "median/same size"
    );
    for (q, (label, _)) in QUERIES.iter().enumerate() {
        let mut during: Vec<Duration> = runs.iter().flat_map(|r| r.during[q].clone()).collect();
        let mut compacted: Vec<Duration> =
            runs.iter().flat_map(|r| r.compacted[q].clone()).collect();
        let mut same_size: Vec<f64> = runs.iter().flat_map(|r| r.same_size[q].clone()).collect();
        let per_run: Vec<String> = runs
            .iter()
            .map(|r| {
                let (mut during, mut compacted) = (r.during[q].clone(), r.compacted[q].clone());
                let ratio = ms(percentile(&mut during, 99)) / ms(percentile(&mut compacted, 99));
                format!("{ratio:.2}")
            })
            .collect();
        let (p95, p99) = (percentile(&mut during, 95), percentile(&mut during, 99));
        let (c_p95, c_p99) = (
            percentile(&mut compacted, 95),
            percentile(&mut compacted, 99),
        );
        println!(
            "{label:<36} {:>8} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>15.2} {:>15.2} \
             {:>17.2}  {}",
            during.len(),
            ms(percentile(&mut during, 50)),
            ms(p95),
            ms(p99),
            ms(percentile(&mut compacted, 50)),
            ms(c_p99),
            ms(p95) / ms(c_p95),
            ms(p99) / ms(c_p99),
            median_of(&mut same_size),
            per_run.join(" "),
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CPU seconds by kind of thread during ingestion, with their share of the machine's cores and
/// per million rows ingested.
fn print_cpu(cpu: &std::collections::BTreeMap<&'static str, f64>, secs: f64, rows: u64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let total: f64 = cpu.values().sum();
    println!(
        "CPU during ingestion: {total:.1} s of {:.1} core-seconds ({:.0}%); by thread (queries' \
         threads also make the writers' batches; exited threads are the parallel sorts and file writers of flushes and compactions):",
        secs * cores,
        100.0 * total / (secs * cores)
    );
    let millions = (rows as f64 / 1e6).max(f64::MIN_POSITIVE);
    for (kind, seconds) in cpu {
        println!(
            "  {kind:<16} {seconds:>6.1} s  {:>4.0}% of the cores  {:>5.2} s per million rows",
            100.0 * seconds / (secs * cores),
            seconds / millions
        );
    }
}

/// A query's time over `rows` rows in one run, on the straight line through two measured
/// one-run tables (`(rows, time)` each); the smaller's time if they hold the same rows.
fn one_run_time(small: (u64, Duration), large: (u64, Duration), rows: u64) -> Duration {
    if large.0 <= small.0 {
        return small.1;
    }
    let along = (rows as f64 - small.0 as f64) / (large.0 - small.0) as f64;
    let secs = small.1.as_secs_f64() + (large.1.as_secs_f64() - small.1.as_secs_f64()) * along;
    Duration::from_secs_f64(secs.max(1e-6))
}

fn median_of(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The rows a query of the table reads: the runs' live rows and the memtable's (which count the
/// few rows they update in the runs twice until the next flush marks those).
fn live_rows(stats: &quarry_store::TableStats) -> u64 {
    (stats.run_rows - stats.deleted_rows + stats.memtable_rows).max(1)
}

/// Where the writers' readings come from. Picking a thousand random rows of the whole table per
/// write is all cache misses and took a tenth of the machine, at normal priority, from the store
/// it measures; so new readings are cut from a pool of sampled rows, and only the updates, a
/// tenth of each write, are picked from the whole table (keeping the keys they update distinct).
struct Readings {
    base: RecordBatch,
    pool: RecordBatch,
    end_millis: i64,
}

impl Readings {
    const POOL_ROWS: u64 = 1 << 20;

    fn new(base: RecordBatch, end_millis: i64) -> Result<Readings> {
        let total = base.num_rows() as u64;
        let picks: Vec<u32> = (0..Self::POOL_ROWS.min(total))
            .map(|i| scatter(i, total))
            .collect();
        let pool = take_record_batch(&base, &UInt32Array::from(picks))?;
        Ok(Readings {
            base,
            pool,
            end_millis,
        })
    }

    /// Write `n` of writer `writer`: readings of devices all over the ring, at timestamps past
    /// the generated window (new keys), every tenth one instead repeating an existing reading's
    /// key with a new value (an update).
    fn batch(&self, writer: u64, n: u64, rows: usize) -> Result<RecordBatch> {
        let first = (writer << 40) + n * rows as u64;
        let updates = rows.div_ceil(10);
        let fresh = rows - updates;
        let picks: Vec<u32> = (0..updates as u64)
            .map(|i| scatter(first + i, self.base.num_rows() as u64))
            .collect();
        let updated = take_record_batch(&self.base, &UInt32Array::from(picks))?;
        let pool_rows = self.pool.num_rows();
        let at = ((first / rows as u64 * fresh as u64) % pool_rows as u64) as usize;
        let cut = fresh.min(pool_rows - at);
        let mut parts = vec![updated, self.pool.slice(at, cut)];
        if cut < fresh {
            parts.push(self.pool.slice(0, fresh - cut));
        }
        let picked = concat_batches(&self.base.schema(), &parts)?;
        let ts = picked.column(1).as_primitive::<TimestampMillisecondType>();
        let new_ts: TimestampMillisecondArray = (0..rows)
            .map(|i| {
                Some(if i < updates {
                    ts.value(i)
                } else {
                    self.end_millis + (first + i as u64) as i64
                })
            })
            .collect::<TimestampMillisecondArray>()
            .with_timezone_opt(ts.timezone());
        let mut columns: Vec<ArrayRef> = picked.columns().to_vec();
        columns[1] = Arc::new(new_ts);
        Ok(RecordBatch::try_new(self.base.schema(), columns)?)
    }
}

/// The `i`-th of a sequence of rows spread over `total` rows.
fn scatter(i: u64, total: u64) -> u32 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % total) as u32
}

/// Each query's latencies over `rounds` rounds of running them all.
async fn timed_queries(session: &QuarrySession, rounds: usize) -> Result<Vec<Vec<Duration>>> {
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); QUERIES.len()];
    for _ in 0..rounds {
        for (q, (_, sql)) in QUERIES.iter().enumerate() {
            let started = Instant::now();
            session.execute(&sql.replace("{t}", "iot.readings")).await?;
            times[q].push(started.elapsed());
        }
    }
    Ok(times)
}

fn percentile(times: &mut [Duration], p: usize) -> Duration {
    times.sort();
    let at = ((times.len() * p).div_ceil(100)).clamp(1, times.len()) - 1;
    times[at]
}
