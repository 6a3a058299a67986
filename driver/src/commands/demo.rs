//! `quarry demo`: Quarry's main job from minute one.
//!
//! Creates keyspace `iot` (800 shards) and `iot.readings`, generates and loads IoT readings,
//! runs three reports, writes daily rollups per device and sensor into the smaller keyspace
//! `synth` with `INSERT ... SELECT`, reads some back, computes the same rollup with a Rust job
//! (`examples/device-rollup`, WASM on the workers), checks the two agree row for row, and says
//! what to try next. Re-running it rewrites the same
//! rows (upserts by primary key), so nothing is duplicated.

use std::path::Path;
use std::time::Instant;

use std::sync::Arc;

use anyhow::Context;
use futures::TryStreamExt;
use quarry_core::schema::TableName;
use quarry_iot::IotConfig;
use quarry_sdk::dag::JobArgs;
use quarry_sql::QuarrySession;
use quarry_store::Store;

use crate::cli::{DemoArgs, StoreArgs, StoreKind};
use crate::commands::sql::run_and_print;
use crate::daemon::local_cluster::{LocalCluster, WorkerStores};
use crate::daemon::{DriverConfig, DriverState};
use crate::progress::{rows_bar, spinner};
use crate::store::{Access, OpenedStore};

const SCHEMA: &str = "
CREATE KEYSPACE IF NOT EXISTS iot WITH shards = 800 AND replication_factor = 1;
CREATE TABLE IF NOT EXISTS iot.readings (
    device_id bigint,
    ts        timestamp,
    sensor    text,
    value     double,
    status    int,
    PRIMARY KEY ((device_id), ts, sensor)
);
CREATE KEYSPACE IF NOT EXISTS synth WITH shards = 64 AND replication_factor = 1 AND nodes = 1;
CREATE TABLE IF NOT EXISTS synth.device_rollup (
    device_id  bigint,
    sensor     text,
    bucket     timestamp,
    readings   bigint,
    min_value  double,
    max_value  double,
    avg_value  double,
    PRIMARY KEY ((device_id), sensor, bucket)
);
CREATE TABLE IF NOT EXISTS synth.device_rollup_job (
    device_id  bigint,
    sensor     text,
    bucket     timestamp,
    readings   bigint,
    min_value  double,
    max_value  double,
    avg_value  double,
    PRIMARY KEY ((device_id), sensor, bucket)
);";

const REPORTS: [(&str, &str); 3] = [
    (
        "Fleet overview: readings per sensor",
        "SELECT sensor, count(*) AS readings, round(avg(value), 2) AS avg_value,
                round(min(value), 2) AS min_value, round(max(value), 2) AS max_value,
                sum(CASE WHEN status = 2 THEN 1 ELSE 0 END) AS errors
         FROM iot.readings GROUP BY sensor ORDER BY sensor",
    ),
    (
        "Overheating: devices with the most temperature readings above 90",
        "SELECT device_id, count(*) AS alerts, round(max(value), 1) AS peak, max(ts) AS last_alert
         FROM iot.readings WHERE sensor = 'temp' AND value > 90
         GROUP BY device_id ORDER BY alerts DESC, peak DESC, device_id LIMIT 10",
    ),
    (
        "One device, read from a single shard: device 42's last readings",
        "SELECT ts, sensor, round(value, 2) AS value, status, token(device_id) AS token
         FROM iot.readings WHERE device_id = 42 ORDER BY ts DESC, sensor LIMIT 8",
    ),
];

const ROLLUP: &str = "
INSERT INTO synth.device_rollup
SELECT device_id, sensor, date_trunc('day', ts) AS bucket, count(*) AS readings,
       min(value) AS min_value, max(value) AS max_value, avg(value) AS avg_value
FROM iot.readings
GROUP BY device_id, sensor, date_trunc('day', ts)";

const READ_BACK: &str = "
SELECT bucket AS day, readings, round(min_value, 2) AS min, round(max_value, 2) AS max,
       round(avg_value, 2) AS avg
FROM synth.device_rollup WHERE device_id = 42 AND sensor = 'temp' ORDER BY bucket DESC LIMIT 5";

/// Rows where the Rust job's rollup and the SQL rollup differ (floats beyond 1e-9 relative).
const COMPARE: &str = "
SELECT count(*) FROM synth.device_rollup s
FULL OUTER JOIN synth.device_rollup_job j
  ON s.device_id = j.device_id AND s.sensor = j.sensor AND s.bucket = j.bucket
WHERE (s.device_id IS NULL) OR (j.device_id IS NULL)
   OR (s.readings <> j.readings)
   OR (s.min_value IS DISTINCT FROM j.min_value)
   OR (s.max_value IS DISTINCT FROM j.max_value)
   OR ((s.avg_value IS NULL) <> (j.avg_value IS NULL))
   OR (abs(s.avg_value - j.avg_value) > CAST(1e-9 AS DOUBLE) * abs(s.avg_value))";

/// The Rust job of the demo: `examples/device-rollup` in this source tree.
fn rollup_job_crate() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join("device-rollup")
}

/// Workers of the demo's in-process cluster.
const WORKERS: usize = 3;

pub async fn run(data_dir: &Path, store_args: &StoreArgs, args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let opened = crate::store::open(data_dir, store_args, Access::Write).await?;
    let (workers, place) = match &opened {
        OpenedStore::Embedded(_) => (
            WorkerStores::Embedded { workers: WORKERS },
            format!(
                "{WORKERS} workers (node-1..{WORKERS}),\nsharing the embedded store in {} (the \
                 same token maths as ScyllaDB)",
                data_dir.display()
            ),
        ),
        OpenedStore::Scylla(store) => {
            let nodes = crate::store::ring_nodes(store);
            let place = format!(
                "a worker beside each of the {} nodes\nof the CQL cluster ({}), reading from its \
                 own node first",
                nodes.len(),
                nodes.join(", ")
            );
            let options = crate::store::scylla_options(store_args)?;
            let options = Box::new(options);
            (WorkerStores::Scylla { options, nodes }, place)
        }
    };
    let store = opened.store();
    let cluster =
        LocalCluster::start_on(store.clone(), data_dir, workers, DriverConfig::default()).await?;
    let session = cluster.driver.session(&[], "demo")?;
    println!("Quarry demo — a local cluster in this process: a driver and {place}\n");
    let result = run_on(&cluster.driver, &session, &opened, data_dir, &args, started).await;
    cluster.shutdown().await;
    if result.is_ok() && store_args.kind == StoreKind::Scylla {
        print_try_next_on_cluster(store_args);
    }
    result
}

async fn run_on(
    driver: &Arc<DriverState>,
    session: &QuarrySession,
    opened: &OpenedStore,
    data_dir: &Path,
    args: &DemoArgs,
    started: Instant,
) -> anyhow::Result<()> {
    session
        .execute_script(SCHEMA)
        .await
        .context("creating the demo keyspaces")?;
    println!(
        "keyspace iot: 800 shards; table iot.readings, partition key device_id, clustering ts, sensor"
    );
    println!("keyspace synth: 64 shards placed on 1 node, for derived results\n");

    load(&opened.store(), args).await?;
    let readings = TableName::new("iot", "readings");

    for (i, (title, sql)) in REPORTS.iter().enumerate() {
        println!("\n{}. {title}", i + 1);
        let step = Instant::now();
        let spin = spinner("querying");
        let output = session.execute(sql).await;
        spin.finish_and_clear();
        let output = output?;
        crate::output::write_result(
            crate::output::OutputFormat::Table,
            &output.schema,
            &output.batches,
            &mut std::io::stdout().lock(),
        )?;
        println!("   ({:.2} s)", step.elapsed().as_secs_f64());
    }

    println!(
        "\n4. Daily rollups per device and sensor → synth.device_rollup (INSERT ... SELECT, upserts)"
    );
    println!(
        "   (the worker beside synth's shards writes the rows; the driver commits them at once)"
    );
    let step = Instant::now();
    let spin = spinner("rolling up");
    let output = session.execute(ROLLUP).await;
    spin.finish_and_clear();
    println!(
        "   {} ({:.2} s)",
        output?.message.unwrap_or_default(),
        step.elapsed().as_secs_f64()
    );
    println!("\n   Read back from the synthetic keyspace (device 42's temperature, by day):");
    run_and_print(session, READ_BACK).await?;

    rollup_job(driver, session).await?;

    let count = count_rows(session, "iot.readings").await?;
    let rollups = count_rows(session, "synth.device_rollup").await?;
    let runs = match opened.embedded() {
        Some(store) => {
            let stats = store.table_stats(&readings)?;
            format!(
                " in {} run(s) ({} row groups)",
                stats.runs, stats.row_groups
            )
        }
        None => String::new(),
    };
    println!(
        "\niot.readings holds {count} rows{runs}; synth.device_rollup holds {rollups} rows ({:.0}× fewer).",
        count as f64 / rollups.max(1) as f64
    );
    println!("Done in {:.1} s.\n", started.elapsed().as_secs_f64());
    if opened.embedded().is_none() {
        return Ok(());
    }
    println!("Try next:");
    let dir = data_dir.display();
    println!("  quarry sql --data-dir {dir}                       # interactive SQL shell");
    println!(
        "  quarry sql --data-dir {dir} -e \"SELECT sensor, count(*) FROM iot.readings WHERE token(device_id) > 0 GROUP BY sensor\""
    );
    println!("  quarry describe --data-dir {dir} iot.readings");
    println!("  quarry load --data-dir {dir} --table iot.readings your.csv");
    println!(
        "  quarry submit --data-dir {dir} examples/device-rollup --arg bucket_hours=6 --arg target=synth.device_rollup_job"
    );
    println!(
        "  quarry up --data-dir {dir}                        # driver + 3 worker processes; then"
    );
    println!(
        "  quarry sql --driver http://127.0.0.1:7070 -e \"EXPLAIN SELECT sensor, count(*) FROM iot.readings GROUP BY sensor\""
    );
    Ok(())
}

/// What to try next on a CQL cluster (with the flags that select it).
fn print_try_next_on_cluster(store_args: &StoreArgs) {
    let flags = format!(
        "--store scylla --scylla-nodes {}",
        store_args.scylla_nodes.join(",")
    );
    println!("Try next:");
    println!("  quarry {flags} sql                  # interactive SQL shell on the cluster");
    println!("  quarry {flags} describe iot.readings");
    println!("  quarry {flags} load --table iot.readings your.csv");
    println!(
        "  quarry {flags} up                   # a driver, and a worker beside each node; then"
    );
    println!(
        "  quarry sql --driver http://127.0.0.1:7070 -e \"EXPLAIN SELECT sensor, count(*) FROM iot.readings GROUP BY sensor\""
    );
}

/// The same rollup as a Rust job (`examples/device-rollup`, built for wasm32 the first time), on
/// the same cluster, then compared with the SQL rollup row for row.
async fn rollup_job(driver: &Arc<DriverState>, session: &QuarrySession) -> anyhow::Result<()> {
    println!(
        "\n5. The same rollup as a Rust job → synth.device_rollup_job (examples/device-rollup, WASM on the workers)"
    );
    let manifest = rollup_job_crate().join("Cargo.toml");
    if !manifest.exists() {
        println!(
            "   (skipped: the job's source, {}, is not here)",
            manifest.display()
        );
        return Ok(());
    }
    let step = Instant::now();
    let module =
        match tokio::task::spawn_blocking(move || crate::job_build::load(&manifest)).await? {
            Ok(module) => module,
            Err(e) => {
                println!("   (skipped: the job could not be built: {e:#})");
                return Ok(());
            }
        };
    let built = step.elapsed().as_secs_f64();
    let step = Instant::now();
    let spin = spinner("running the job");
    let module = driver.modules.put(module.bytes).await?;
    let compiled = step.elapsed().as_secs_f64();
    let step = Instant::now();
    let args = JobArgs::new([("target".to_string(), "synth.device_rollup_job".to_string())]);
    let written = async {
        let stream = driver
            .run_rust_job_sink(&module.hash(), &args, 0, "demo")
            .await?;
        let batches: Vec<arrow::array::RecordBatch> = stream.try_collect().await?;
        anyhow::Ok(
            batches
                .first()
                .and_then(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::UInt64Array>()
                        .map(|a| a.value(0))
                })
                .unwrap_or(0),
        )
    }
    .await;
    spin.finish_and_clear();
    let written = written?;
    println!(
        "   upserted {written} rows in {:.2} s (module {}: cargo build {built:.1} s, compiled to native code {compiled:.1} s, once)",
        step.elapsed().as_secs_f64(),
        &module.hash().to_string()[..12],
    );
    let differing = first_count(session, COMPARE).await?;
    if differing == 0 {
        println!("   the job's rows equal the SQL rollup's, row for row");
    } else {
        anyhow::bail!("the job's rollup differs from the SQL rollup in {differing} rows");
    }
    Ok(())
}

async fn load(store: &Arc<dyn Store>, args: &DemoArgs) -> anyhow::Result<()> {
    let config = IotConfig {
        rows: args.rows,
        devices: args.devices,
        days: args.days,
        seed: args.seed,
        ..IotConfig::default()
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}; see quarry demo --help"))?;
    let step = Instant::now();
    let bar = rows_bar(Some(args.rows), "generating");
    let progress = bar.clone();
    let batches = tokio::task::spawn_blocking(move || {
        let mut batches = Vec::new();
        for batch in config.generator() {
            progress.inc(batch.num_rows() as u64);
            batches.push(batch);
        }
        batches
    })
    .await?;
    bar.set_message("storing");
    let name = TableName::new("iot", "readings");
    // Generated batches carry the generator's schema; give them the table's (same columns,
    // with the table's field metadata).
    let schema = store.table(&name)?.arrow_schema();
    let batches = batches
        .into_iter()
        .map(|b| arrow::array::RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .context("the generator's rows do not fit iot.readings")?;
    let summary = store.write(&name, batches).await?;
    bar.finish_and_clear();
    let secs = step.elapsed().as_secs_f64();
    println!(
        "loaded {} generated readings ({} devices, {} days) into iot.readings in {secs:.2} s ({:.0} rows/s)",
        summary.rows,
        args.devices,
        args.days,
        summary.rows as f64 / secs.max(1e-9)
    );
    Ok(())
}

async fn count_rows(session: &QuarrySession, table: &str) -> anyhow::Result<u64> {
    first_count(session, &format!("SELECT count(*) FROM {table}")).await
}

/// The count a `SELECT count(*) ...` returns.
async fn first_count(session: &QuarrySession, sql: &str) -> anyhow::Result<u64> {
    let output = session.execute(sql).await?;
    let count = output
        .batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0);
    Ok(count as u64)
}
