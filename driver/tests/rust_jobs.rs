//! Rust jobs end to end: the example job crates built for wasm32 (as `quarry submit` builds
//! them), planned by their module, run in this process and on a three-worker cluster, and their
//! results compared with plain DataFusion over the same generated rows.
//!
//! ```text
//!  quarry_iot generator ─┬─▶ EmbeddedStore (iot.readings) ◀── job module (wasmtime) ── results
//!                        └─▶ MemTable ─▶ plain DataFusion SQL ─────────────────────── expected
//! ```
//!
//! The first run builds the job crates for wasm32 (about a minute on two cores); later runs find
//! them built.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use quarry_client::{Client, JobResult};
use quarry_core::schema::TableName;
use quarry_iot::IotConfig;
use quarry_sdk::dag::JobArgs;
use quarry_sql::QuarrySession;
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};
use quarry_wasm::{JobModule, Runtime, RuntimeConfig};

const SCHEMA: &str = "
CREATE KEYSPACE iot WITH shards = 64 AND replication_factor = 1;
CREATE TABLE iot.readings (device_id bigint, ts timestamp, sensor text, value double, status int,
    PRIMARY KEY ((device_id), ts, sensor));
CREATE KEYSPACE synth WITH shards = 16 AND replication_factor = 1 AND nodes = 1;
CREATE TABLE synth.device_rollup (device_id bigint, sensor text, bucket timestamp,
    readings bigint, min_value double, max_value double, avg_value double,
    PRIMARY KEY ((device_id), sensor, bucket))";

/// The rollup as SQL: what the job must equal, row for row.
const ROLLUP_SQL: &str = "
SELECT device_id, sensor, date_trunc('day', ts) AS bucket, count(*) AS readings,
       min(value) AS min_value, max(value) AS max_value, avg(value) AS avg_value
FROM readings GROUP BY 1, 2, 3";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The module of a job crate (a directory under the workspace), built once per test process.
fn module_bytes(crate_dir: &str) -> Vec<u8> {
    static BUILT: OnceLock<std::sync::Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap();
    let path = built.entry(crate_dir.to_string()).or_insert_with(|| {
        let manifest = workspace().join(crate_dir).join("Cargo.toml");
        quarry_driver::job_build::build(&manifest).unwrap()
    });
    std::fs::read(path).unwrap()
}

const ROLLUP_JOB: &str = "examples/device-rollup";
const FAULTY_JOB: &str = "driver/tests/jobs/faulty";
const COLLECTIONS_JOB: &str = "driver/tests/jobs/collections";

fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Arc::new(Runtime::new(RuntimeConfig::default()).unwrap()))
        .clone()
}

fn load_module(example: &str) -> Arc<JobModule> {
    runtime().load(&module_bytes(example)).unwrap()
}

fn readings() -> Vec<RecordBatch> {
    IotConfig {
        rows: 40_000,
        devices: 40,
        days: 10,
        batch_rows: 8192,
        ..IotConfig::default()
    }
    .generator()
    .collect()
}

/// A three-worker cluster whose store holds the schema and the generated readings.
async fn cluster_with_readings() -> common::TestCluster {
    let cluster =
        common::TestCluster::start(3, quarry_driver::daemon::DriverConfig::default()).await;
    for statement in quarry_core::ddl::split_statements(SCHEMA) {
        cluster.sql(&statement).await;
    }
    write_readings(&cluster.store).await;
    cluster
}

async fn write_readings(store: &EmbeddedStore) {
    let name = TableName::new("iot", "readings");
    let schema = store.table(&name).unwrap().arrow_schema();
    let batches = readings()
        .into_iter()
        .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()).unwrap())
        .collect();
    store.write(&name, batches).await.unwrap();
}

async fn embedded(dir: &Path) -> (Arc<EmbeddedStore>, QuarrySession) {
    let store = Arc::new(EmbeddedStore::open(dir, EmbeddedOptions::default()).unwrap());
    let session = QuarrySession::new(store.clone() as Arc<dyn Store>);
    session.execute_script(SCHEMA).await.unwrap();
    write_readings(&store).await;
    (store, session)
}

/// Rollup rows by key: readings, then min, max and avg (null: no reading had a value).
type RollupRows = BTreeMap<(i64, String, i64), (i64, Option<f64>, Option<f64>, Option<f64>)>;

/// `batch` with strings as `Utf8` (DataFusion reads them as views).
fn plain_strings(batch: &RecordBatch) -> RecordBatch {
    use arrow::datatypes::{DataType, Field, Schema};
    let columns: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8View => arrow::compute::cast(c, &DataType::Utf8).unwrap(),
            _ => c.clone(),
        })
        .collect();
    let fields: Vec<_> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn rollup_rows(batches: &[RecordBatch]) -> RollupRows {
    let mut rows = BTreeMap::new();
    for b in batches {
        let b = &plain_strings(b);
        let device = b.column(0).as_primitive::<Int64Type>();
        let sensor = b.column(1).as_string::<i32>();
        let bucket = b.column(2).as_primitive::<TimestampMillisecondType>();
        let n = b.column(3).as_primitive::<Int64Type>();
        let (min, max, avg) = (
            b.column(4).as_primitive::<Float64Type>(),
            b.column(5).as_primitive::<Float64Type>(),
            b.column(6).as_primitive::<Float64Type>(),
        );
        for i in 0..b.num_rows() {
            let key = (
                device.value(i),
                sensor.value(i).to_string(),
                bucket.value(i),
            );
            let get = |a: &arrow::array::Float64Array| a.is_valid(i).then(|| a.value(i));
            let value = (n.value(i), get(min), get(max), get(avg));
            assert!(rows.insert(key.clone(), value).is_none(), "{key:?} twice");
        }
    }
    rows
}

async fn expected_rollup() -> RollupRows {
    let ctx = SessionContext::new();
    let batches = readings();
    let table = MemTable::try_new(batches[0].schema(), vec![batches]).unwrap();
    ctx.register_table("readings", Arc::new(table)).unwrap();
    let result = ctx.sql(ROLLUP_SQL).await.unwrap().collect().await.unwrap();
    rollup_rows(&result)
}

fn assert_same_rollup(got: &RollupRows, want: &RollupRows) {
    assert_eq!(got.len(), want.len(), "rollup row counts");
    for (key, want) in want {
        let got = got.get(key).unwrap_or_else(|| panic!("no row for {key:?}"));
        assert_eq!(got.0, want.0, "{key:?} readings");
        for (g, w) in [(got.1, want.1), (got.2, want.2), (got.3, want.3)] {
            match (g, w) {
                (Some(g), Some(w)) => assert!(
                    (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                    "{key:?}: {g} != {w}"
                ),
                _ => assert_eq!(g, w, "{key:?}"),
            }
        }
    }
}

async fn rollup_table(session: &QuarrySession) -> RollupRows {
    let output = session
        .execute("SELECT * FROM synth.device_rollup")
        .await
        .unwrap();
    rollup_rows(&output.batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollup_job_equals_the_sql_rollup_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, session) = embedded(dir.path()).await;
    let module = load_module(ROLLUP_JOB);
    let outputs = quarry_jobs::rust_job::run(&session, &module, &JobArgs::default(), "test")
        .await
        .unwrap();
    let expected = expected_rollup().await;
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].number(), Some(expected.len() as u64));
    assert!(
        outputs[0].wasm_cpu_ns > 0,
        "the closures' CPU cost is metered"
    );
    assert_same_rollup(&rollup_table(&session).await, &expected);
    // At least 10× fewer rows than it read.
    assert!(
        expected.len() * 10 <= 40_000,
        "{} rollup rows",
        expected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollup_job_run_natively_equals_the_sql_rollup() {
    use quarry_example_device_rollup::{Reading, Rollup, device_rollup};
    let rows: Vec<Reading> = readings()
        .iter()
        .flat_map(|b| {
            let b = RecordBatch::try_new(
                Arc::new(arrow::datatypes::Schema::new(
                    b.schema()
                        .fields()
                        .iter()
                        .take(4)
                        .map(|f| f.as_ref().clone())
                        .collect::<Vec<_>>(),
                )),
                b.columns()[..4].to_vec(),
            )
            .unwrap();
            quarry_sdk::data::from_batch::<Reading>(&b).unwrap()
        })
        .collect();
    let output = quarry_sdk::LocalJob::new(device_rollup)
        .table("iot.readings", rows)
        .run()
        .unwrap();
    let written = output.written::<Rollup>("synth.device_rollup").unwrap();
    let batch = quarry_sdk::data::to_batch(written).unwrap();
    assert_same_rollup(&rollup_rows(&[batch]), &expected_rollup().await);
}

/// The same job sent to a three-worker cluster through the driver, as `quarry submit --driver`
/// sends it: its operators run on the workers beside the shards, which fetch the module by hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollup_job_equals_the_sql_rollup_on_a_cluster() {
    let cluster = cluster_with_readings().await;

    let mut client = Client::connect(&cluster.cluster.url, Some(cluster.token()))
        .await
        .unwrap();
    let args = vec![("bucket_hours".to_string(), "24".to_string())];
    let job = client
        .upload_job(module_bytes(ROLLUP_JOB), &args)
        .await
        .unwrap();
    let hash = job.hash.clone();
    assert_eq!(
        job.results,
        vec![JobResult::Write {
            table: "synth.device_rollup".into()
        }]
    );
    let outputs = client.run_job(&job).await.unwrap();
    let [output] = outputs.as_slice() else {
        panic!("one result: {outputs:?}")
    };
    let written = output.number().expect("the rows written");
    let expected = expected_rollup().await;
    assert_eq!(written, expected.len() as u64);
    let table = cluster.sql("SELECT * FROM synth.device_rollup").await;
    assert_same_rollup(&rollup_rows(&table.batches), &expected);
    // The job ran on the workers: its record names the module, and it had worker stages.
    let jobs = cluster.driver().jobs.list();
    let job = jobs
        .iter()
        .find(|j| j.sql.contains(&hash))
        .expect("a job record naming the module");
    assert!(job.sql.contains("bucket_hours=24"), "{}", job.sql);
    let worker_stages = job.stages.iter().filter(|s| s.tasks_total > 0).count();
    assert!(worker_stages >= 2, "{:?}", job.stages);
    // The record says how many rows the job read and wrote, by table, and the CPU time its
    // closures took: some, and never more than its tasks' wall time (to the millisecond each).
    let mut total = quarry_jobs::TaskMetrics::default();
    for stage in &job.stages {
        total.add(&stage.metrics);
    }
    let cpu_ns = total.wasm_cpu_ns;
    let tasks: u64 = job.stages.iter().map(|s| u64::from(s.tasks_total)).sum();
    assert!(
        cpu_ns > 0 && cpu_ns <= (total.elapsed_ms + tasks + 1) * 1_000_000,
        "the job record keeps the closures' CPU cost: {cpu_ns} ns in {} ms of tasks",
        total.elapsed_ms
    );
    let readings: usize = readings().iter().map(|b| b.num_rows()).sum();
    assert_eq!(
        (
            total.rows_read.get("iot.readings").copied(),
            total.rows_written.get("synth.device_rollup").copied()
        ),
        (Some(readings as u64), Some(written)),
        "{total:?}"
    );
    assert_eq!(
        job.state,
        quarry_driver::daemon::job_tracker::JobState::Succeeded
    );
    // The client read the same record back.
    let report = output.report.as_ref().expect("the job's report");
    assert_eq!(report.job_id, job.id.to_string());
    assert_eq!(report.state, quarry_client::JobState::Succeeded);
    assert_eq!(report.wasm_cpu, std::time::Duration::from_nanos(cpu_ns));
    assert_eq!(report.rows_read, total.rows_read);
    assert_eq!(report.rows_written, total.rows_written);
}

/// `quarry submit --detach`: the driver runs the job with no client attached and answers with
/// its id at once; the job's record and its written rows come out as a followed job's do. A job
/// with a result that needs a client is refused before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_job_runs_on_without_its_client() {
    let cluster = cluster_with_readings().await;
    let client = Client::connect(&cluster.cluster.url, Some(cluster.token()))
        .await
        .unwrap();
    let args = vec![("bucket_hours".to_string(), "24".to_string())];
    let uploaded = client
        .upload_job(module_bytes(ROLLUP_JOB), &args)
        .await
        .unwrap();
    let hash = uploaded.hash.clone();
    let submitted = client.submit_detached(&uploaded).await.unwrap();
    assert_eq!(submitted.results, 1);
    drop(client);
    // Another client follows it to its end.
    let follower = Client::connect(&cluster.cluster.url, Some(cluster.token()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let summary = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        follower.wait_for_job(
            &submitted.job_id,
            std::time::Duration::from_millis(50),
            |j| seen.push(j.state),
        ),
    )
    .await
    .expect("the job ends")
    .unwrap();
    assert_eq!(
        summary.state,
        quarry_client::JobState::Succeeded as i32,
        "{:?}",
        summary.error
    );
    assert_eq!(seen.last(), Some(&summary.state));
    let id: u64 = submitted.job_id.parse().unwrap();
    let job = cluster
        .driver()
        .jobs
        .list()
        .into_iter()
        .find(|j| j.id.0 == id)
        .expect("a record of the submitted job");
    assert_eq!(
        job.state,
        quarry_driver::daemon::job_tracker::JobState::Succeeded,
        "{:?}",
        job.error
    );
    assert_eq!(job.label, submitted.label);
    assert!(job.sql.contains(&hash), "{}", job.sql);
    let output = cluster.sql("SELECT * FROM synth.device_rollup").await;
    assert_same_rollup(&rollup_rows(&output.batches), &expected_rollup().await);

    let client = Client::connect(&cluster.cluster.url, Some(cluster.token()))
        .await
        .unwrap();
    let faulty = client
        .upload_job(module_bytes(FAULTY_JOB), &[])
        .await
        .unwrap();
    let err = client
        .submit_detached(&faulty)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("result 0 is `collect`") && err.contains("without --detach"),
        "{err}"
    );
}

/// A session over a store holding `ks.numbers` = 0..1000.
async fn numbers(dir: &Path) -> QuarrySession {
    let store = Arc::new(EmbeddedStore::open(dir, EmbeddedOptions::default()).unwrap());
    let session = QuarrySession::new(store as Arc<dyn Store>);
    session
        .execute_script(
            "CREATE KEYSPACE ks WITH shards = 8;
             CREATE TABLE ks.numbers (n bigint, PRIMARY KEY (n));
             INSERT INTO ks.numbers SELECT value FROM generate_series(0, 999)",
        )
        .await
        .unwrap();
    session
}

async fn run_faulty(
    session: &QuarrySession,
    runtime: &Runtime,
    fault: &str,
) -> Result<Vec<quarry_jobs::rust_job::SinkOutput>, quarry_jobs::Error> {
    let module = runtime.load(&module_bytes(FAULTY_JOB)).unwrap();
    let args = JobArgs::new([("fault".to_string(), fault.to_string())]);
    quarry_jobs::rust_job::run(session, &module, &args, "test").await
}

/// A wasm error somewhere inside a job's error.
fn wasm_error(e: &quarry_jobs::Error) -> &quarry_wasm::Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if let Some(wasm) = error.downcast_ref::<quarry_wasm::Error>() {
            return wasm;
        }
        source = error.source();
    }
    panic!("no WASM error in: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closures_that_panic_loop_or_hoard_fail_as_the_users_fault() {
    let dir = tempfile::tempdir().unwrap();
    let session = numbers(dir.path()).await;
    let runtime = Runtime::new(RuntimeConfig {
        limits: quarry_wasm::SandboxLimits {
            memory_bytes: 64 << 20,
            deadline: std::time::Duration::from_millis(500),
            ..quarry_wasm::SandboxLimits::default()
        },
        cache_dir: None,
    })
    .unwrap();

    let good = run_faulty(&session, &runtime, "none").await.unwrap();
    let mut doubled: Vec<i64> = good[0]
        .batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    doubled.sort();
    assert_eq!(doubled, (0..1000).map(|n| n * 2).collect::<Vec<_>>());

    let panicked = run_faulty(&session, &runtime, "panic").await.unwrap_err();
    let error = wasm_error(&panicked);
    assert!(error.is_user_error());
    let message = error.to_string();
    assert!(
        message.contains("map at driver/tests/jobs/faulty/src/lib.rs"),
        "{message}"
    );
    assert!(message.contains("bad reading 7"), "{message}");

    let looped = run_faulty(&session, &runtime, "loop").await.unwrap_err();
    let error = wasm_error(&looped);
    assert!(
        matches!(error, quarry_wasm::Error::Timeout { .. }),
        "{error}"
    );
    assert!(error.is_user_error());

    let hoarded = run_faulty(&session, &runtime, "grow").await.unwrap_err();
    let error = wasm_error(&hoarded);
    assert!(
        matches!(error, quarry_wasm::Error::MemoryLimit { .. }),
        "{error}"
    );

    // The runtime keeps serving: the same module runs again after all that.
    assert_eq!(
        run_faulty(&session, &runtime, "none").await.unwrap()[0]
            .batches
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        1000
    );
}

/// On a cluster a panicking closure fails its job at once with the panic's message (no retry on
/// another worker), and the workers go on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_closure_fails_the_job_without_retries_on_a_cluster() {
    let cluster =
        common::TestCluster::start(3, quarry_driver::daemon::DriverConfig::default()).await;
    cluster.sql("CREATE KEYSPACE ks WITH shards = 8").await;
    cluster
        .sql("CREATE TABLE ks.numbers (n bigint, PRIMARY KEY (n))")
        .await;
    cluster
        .sql("INSERT INTO ks.numbers SELECT value FROM generate_series(0, 999)")
        .await;
    let mut client = Client::connect(&cluster.cluster.url, Some(cluster.token()))
        .await
        .unwrap();
    let panic = vec![("fault".to_string(), "panic".to_string())];
    let job = client
        .upload_job(module_bytes(FAULTY_JOB), &panic)
        .await
        .unwrap();
    let error = match client.run_job_result(&job, 0).await {
        Err(e) => e.to_string(),
        Ok(mut result) => loop {
            match result.next().await {
                Err(e) => break e.to_string(),
                Ok(None) => panic!("the panicking job succeeded"),
                Ok(Some(_)) => {}
            }
        },
    };
    assert!(error.contains("bad reading 7"), "{error}");
    assert!(
        error.contains("map at driver/tests/jobs/faulty/src/lib.rs"),
        "{error}"
    );
    let jobs = cluster.driver().jobs.list();
    let failed = jobs.iter().find(|j| j.sql.contains("fault=panic")).unwrap();
    assert_eq!(
        failed.state,
        quarry_driver::daemon::job_tracker::JobState::Failed
    );
    let retried: u32 = failed.stages.iter().map(|s| s.tasks_retried).sum();
    assert_eq!(
        retried, 0,
        "a user's panic is not retried: {:?}",
        failed.stages
    );
    assert_eq!(cluster.driver().registry.live().len(), 3);

    let none = [("fault".to_string(), "none".to_string())];
    let job = client.plan_job(&job.hash, &none).await.unwrap();
    let outputs = client.run_job(&job).await.unwrap();
    assert_eq!(outputs[0].num_rows(), 1000);
}

const ANOMALIES_JOB: &str = "examples/anomalies";

const ANOMALIES_TABLE: &str = "CREATE TABLE synth.anomalies (device_id bigint, sensor text,
    ts timestamp, value double, mean double, stddev double, PRIMARY KEY ((device_id), sensor, ts))";

/// The anomalies as plain DataFusion finds them: (device, sensor, ts) of each flagged reading.
async fn expected_anomalies() -> std::collections::BTreeSet<(i64, String, i64)> {
    let ctx = SessionContext::new();
    let batches = readings();
    let table = MemTable::try_new(batches[0].schema(), vec![batches]).unwrap();
    ctx.register_table("readings", Arc::new(table)).unwrap();
    let result = ctx
        .sql(
            "WITH s AS (
                SELECT device_id, sensor, avg(value) AS mean,
                       sqrt(greatest(sum(value * value) / count(value) - avg(value) * avg(value), 0)) AS sd
                FROM readings WHERE value IS NOT NULL GROUP BY device_id, sensor)
             SELECT r.device_id, r.sensor, r.ts FROM readings r
             JOIN s ON r.device_id = s.device_id AND r.sensor = s.sensor
             WHERE r.value IS NOT NULL AND abs(r.value - s.mean) > 3 * s.sd",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    anomaly_keys(&result)
}

fn anomaly_keys(batches: &[RecordBatch]) -> std::collections::BTreeSet<(i64, String, i64)> {
    let mut keys = std::collections::BTreeSet::new();
    for b in batches {
        let b = &plain_strings(b);
        let device = b.column(0).as_primitive::<Int64Type>();
        let sensor = b.column(1).as_string::<i32>();
        let ts = b.column(2).as_primitive::<TimestampMillisecondType>();
        for i in 0..b.num_rows() {
            keys.insert((device.value(i), sensor.value(i).to_string(), ts.value(i)));
        }
    }
    keys
}

/// A two-stage job with a join (statistics per key, then every reading against its key's), in
/// this process and on a cluster, against plain DataFusion's SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anomalies_job_joins_readings_with_their_statistics_like_sql() {
    let expected = expected_anomalies().await;
    assert!(!expected.is_empty(), "the data set has outliers to find");

    let dir = tempfile::tempdir().unwrap();
    let (_store, session) = embedded(dir.path()).await;
    session.execute(ANOMALIES_TABLE).await.unwrap();
    let module = load_module(ANOMALIES_JOB);
    quarry_jobs::rust_job::run(&session, &module, &JobArgs::default(), "test")
        .await
        .unwrap();
    let output = session
        .execute("SELECT device_id, sensor, ts FROM synth.anomalies")
        .await
        .unwrap();
    assert_eq!(anomaly_keys(&output.batches), expected, "in process");

    let cluster = cluster_with_readings().await;
    cluster.sql(ANOMALIES_TABLE).await;
    let mut client = Client::connect(&cluster.cluster.url, Some(cluster.token()))
        .await
        .unwrap();
    let job = client
        .upload_job(module_bytes(ANOMALIES_JOB), &[])
        .await
        .unwrap();
    client.run_job(&job).await.unwrap();
    let output = cluster
        .sql("SELECT device_id, sensor, ts FROM synth.anomalies")
        .await;
    assert_eq!(anomaly_keys(&output.batches), expected, "on a cluster");
}

/// A `flat_map` over text payloads, through the module: every entry becomes a row of the target
/// table, malformed ones are counted by the job's second result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payload_job_parses_every_entry_through_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, session) = embedded(dir.path()).await;
    session
        .execute_script(
            "CREATE TABLE iot.payloads (gateway_id bigint, received timestamp, payload text,
                 PRIMARY KEY ((gateway_id), received));
             CREATE TABLE synth.parsed (device_id bigint, ts timestamp, sensor text, value double,
                 status int, PRIMARY KEY ((device_id), ts, sensor));
             INSERT INTO iot.payloads
             SELECT value % 10, CAST(value * 1000 AS TIMESTAMP),
                    concat(value, ':temp:', value * 0.5, ';', value, ':humidity:x;broken')
             FROM generate_series(1, 500)",
        )
        .await
        .unwrap();
    let module = load_module("examples/payload-parse");
    let args = JobArgs::new([("target".to_string(), "synth.parsed".to_string())]);
    let outputs = quarry_jobs::rust_job::run(&session, &module, &args, "test")
        .await
        .unwrap();
    assert_eq!(outputs[0].number(), Some(1000), "two readings per payload");
    assert_eq!(
        outputs[1].number(),
        Some(500),
        "one broken entry per payload"
    );
    let check = session
        .execute(
            "SELECT count(*) AS n, sum(value) AS total, sum(CASE WHEN status = 2 THEN 1 ELSE 0 END)
             FROM synth.parsed",
        )
        .await
        .unwrap();
    let b = &check.batches[0];
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 1000);
    assert_eq!(
        b.column(1).as_primitive::<Float64Type>().value(0),
        (1..=500).map(|v| v as f64 * 0.5).sum::<f64>()
    );
    assert_eq!(b.column(2).as_primitive::<Int64Type>().value(0), 500);
}

/// `where_sql` may name columns the job's record does not read (`sensor` here): the store
/// filters, then the job reads its two columns. Query (b) of the benchmark, against SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_predicate_may_use_columns_the_job_does_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, session) = embedded(dir.path()).await;
    let module = load_module("bench/jobs");
    let args = JobArgs::new([("job".to_string(), "temp-stats".to_string())]);
    let outputs = quarry_jobs::rust_job::run(&session, &module, &args, "test")
        .await
        .unwrap();
    let mut got = BTreeMap::new();
    for b in &outputs[0].batches {
        let device = b.column(0).as_primitive::<Int64Type>();
        let n = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            got.insert(device.value(i), n.value(i));
        }
    }
    let ctx = SessionContext::new();
    let batches = readings();
    let table = MemTable::try_new(batches[0].schema(), vec![batches]).unwrap();
    ctx.register_table("readings", Arc::new(table)).unwrap();
    let result = ctx
        .sql("SELECT device_id, count(*) FROM readings WHERE sensor = 'temp' GROUP BY 1")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut want = BTreeMap::new();
    for b in &result {
        let device = b.column(0).as_primitive::<Int64Type>();
        let n = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            want.insert(device.value(i), n.value(i));
        }
    }
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

/// A job reads map, list and set columns as `BTreeMap` and `Vec`, and writes them back: the
/// summaries equal what the source rows say, worked out by hand, with sets sorted and distinct and
/// empty collections NULL, as the store keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reads_and_writes_lists_sets_and_maps() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let session = QuarrySession::new(store.clone() as Arc<dyn Store>);
    session
        .execute_script(
            "CREATE KEYSPACE iot WITH shards = 16;
             CREATE KEYSPACE synth WITH shards = 16;
             CREATE TABLE iot.devices (id bigint PRIMARY KEY, tags map<text, text>,
                 readings list<double>, owners set<text>);
             CREATE TABLE synth.device_summary (id bigint PRIMARY KEY, site text, total double,
                 top list<double>, labels map<text, text>, owners set<text>);
             INSERT INTO iot.devices VALUES
                 (1, MAP {'site': 'north', 'kind': 'pump'}, [2.5, 7.0, 1.0], ['zed', 'amy']),
                 (2, MAP {'kind': 'fan'}, [4.0], ['ops']);
             INSERT INTO iot.devices (id) VALUES (3);",
        )
        .await
        .unwrap();
    let module = runtime().load(&module_bytes(COLLECTIONS_JOB)).unwrap();
    quarry_jobs::rust_job::run(&session, &module, &JobArgs::new([]), "test")
        .await
        .unwrap();
    let out = session
        .execute(
            "SELECT id, site, total, \"top\", labels, owners FROM synth.device_summary ORDER BY id",
        )
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&out.batches)
        .unwrap()
        .to_string();
    let expected = "\
+----+-------+-------+------------+---------------------------+-----------------+
| id | site  | total | top        | labels                    | owners          |
+----+-------+-------+------------+---------------------------+-----------------+
| 1  | north | 10.5  | [7.0, 2.5] | {KIND: pump, SITE: north} | [amy, ops, zed] |
| 2  |       | 4.0   | [4.0]      | {KIND: fan}               | [ops]           |
| 3  |       | 0.0   |            |                           | [ops]           |
+----+-------+-------+------------+---------------------------+-----------------+";
    assert_eq!(text, expected);
}
