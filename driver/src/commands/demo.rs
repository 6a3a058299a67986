//! `quarry demo`: Quarry's main job from minute one.
//!
//! Creates keyspace `iot` (800 shards) and `iot.readings`, generates and loads IoT readings,
//! runs three reports, writes hourly per-device rollups into the smaller keyspace `synth` with
//! `INSERT ... SELECT`, reads some back and says what to try next. Re-running it rewrites the same
//! rows (upserts by primary key), so nothing is duplicated.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use quarry_core::schema::TableName;
use quarry_iot::IotConfig;
use quarry_sql::QuarrySession;
use quarry_store::Store;

use crate::cli::DemoArgs;
use crate::commands::sql::run_and_print;
use crate::daemon::DriverConfig;
use crate::daemon::local_cluster::LocalCluster;
use crate::progress::{rows_bar, spinner};

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
CREATE TABLE IF NOT EXISTS synth.device_hourly (
    device_id  bigint,
    hour       timestamp,
    readings   bigint,
    avg_temp   double,
    max_temp   double,
    errors     bigint,
    PRIMARY KEY ((device_id), hour)
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
INSERT INTO synth.device_hourly
SELECT device_id,
       date_trunc('hour', ts) AS hour,
       count(*) AS readings,
       avg(CASE WHEN sensor = 'temp' THEN value END) AS avg_temp,
       max(CASE WHEN sensor = 'temp' THEN value END) AS max_temp,
       sum(CASE WHEN status = 2 THEN 1 ELSE 0 END) AS errors
FROM iot.readings
GROUP BY device_id, date_trunc('hour', ts)";

const READ_BACK: &str = "
SELECT hour, readings, round(avg_temp, 2) AS avg_temp, round(max_temp, 2) AS max_temp, errors
FROM synth.device_hourly WHERE device_id = 42 AND avg_temp IS NOT NULL ORDER BY hour DESC LIMIT 5";

/// Workers of the demo's in-process cluster.
const WORKERS: usize = 3;

pub async fn run(data_dir: &Path, args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (store, _) = super::open(data_dir)?;
    let cluster =
        LocalCluster::start(store.clone(), data_dir, WORKERS, DriverConfig::default()).await?;
    let session = cluster.driver.session(&[], "demo")?;
    println!(
        "Quarry demo — a local cluster in this process: a driver and {WORKERS} workers (node-1..{WORKERS}),\n\
         sharing the embedded store in {} (the same token maths as ScyllaDB)\n",
        data_dir.display()
    );
    let result = run_on(&session, &store, data_dir, &args, started).await;
    cluster.shutdown().await;
    result
}

async fn run_on(
    session: &QuarrySession,
    store: &std::sync::Arc<quarry_store::EmbeddedStore>,
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

    load(store, args).await?;
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

    println!("\n4. Hourly per-device rollups → synth.device_hourly (INSERT ... SELECT, upserts)");
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
    println!(
        "\n   Read back from the synthetic keyspace (device 42, hours with a temperature reading):"
    );
    run_and_print(session, READ_BACK).await?;

    let count = count_rows(session, "iot.readings").await?;
    let rollups = count_rows(session, "synth.device_hourly").await?;
    let stats = store.table_stats(&readings)?;
    println!(
        "\niot.readings holds {count} rows in {} run(s) ({} row groups); synth.device_hourly holds {rollups} rows.",
        stats.runs, stats.row_groups
    );
    println!("Done in {:.1} s.\n", started.elapsed().as_secs_f64());
    println!("Try next:");
    let dir = data_dir.display();
    println!("  quarry sql --data-dir {dir}                       # interactive SQL shell");
    println!(
        "  quarry sql --data-dir {dir} -e \"SELECT sensor, count(*) FROM iot.readings WHERE token(device_id) > 0 GROUP BY sensor\""
    );
    println!("  quarry describe --data-dir {dir} iot.readings");
    println!("  quarry load --data-dir {dir} --table iot.readings your.csv");
    println!(
        "  quarry up --data-dir {dir}                        # driver + 3 worker processes; then"
    );
    println!(
        "  quarry sql --driver http://127.0.0.1:7070 -e \"EXPLAIN SELECT sensor, count(*) FROM iot.readings GROUP BY sensor\""
    );
    Ok(())
}

async fn load(
    store: &std::sync::Arc<quarry_store::EmbeddedStore>,
    args: &DemoArgs,
) -> anyhow::Result<()> {
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
    let output = session
        .execute(&format!("SELECT count(*) FROM {table}"))
        .await?;
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
