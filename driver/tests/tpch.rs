//! Every TPC-H query, everywhere: the eight tables generated at a small scale factor, loaded
//! through `quarry load`'s path into a 64-shard keyspace, and the 22 queries run embedded and on
//! a three-worker cluster, each answer compared with plain DataFusion's over the same rows.
//!
//! ```text
//!  quarry_tpch::Table::generate ─┬─▶ Parquet files ─▶ read_sources (the loader) ─┬─▶ EmbeddedStore ◀─ QuarrySession
//!   (deterministic, SF 0.05)     │                                               └─▶ driver DoPut ◀── 3-worker cluster
//!                                └─▶ MemTables ─▶ plain DataFusion ─▶ expected answers
//! ```
//!
//! Each query's outcome is printed as `q11 on cluster: ...` (run with `--nocapture` to see them
//! all) and every failure is named in the test's panic message. `QUARRY_TPCH_SF` sets another
//! scale factor.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestCluster;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use quarry_client::Client;
use quarry_core::schema::TableName;
use quarry_driver::daemon::DriverConfig;
use quarry_ingest::{ReadOptions, Source, read_sources};
use quarry_sql::{QuarrySession, QueryOutput};
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};
use quarry_tpch::{
    Answer, DEFAULT_SCHEMA, KEYSPACE, QUERIES, Query, Table, compare, create_statements,
    write_parquet,
};

/// About 430,000 rows in all (300,000 in lineitem): every query answers with rows, and the
/// suite takes about 10 s of a debug build on two cores.
const SCALE_FACTOR: f64 = 0.05;
const SHARDS: u32 = 64;
/// A query that takes longer has hung.
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);

fn scale_factor() -> f64 {
    std::env::var("QUARRY_TPCH_SF")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SCALE_FACTOR)
}

/// The generated data as Parquet files, and plain DataFusion's answer to each query.
struct Tpch {
    _dir: tempfile::TempDir,
    files: Vec<(Table, Vec<PathBuf>)>,
    expected: Vec<Result<Answer, String>>,
}

impl Tpch {
    async fn generate() -> Tpch {
        let sf = scale_factor();
        let dir = tempfile::tempdir().unwrap();
        // Quarry's SQL dialect: a literal such as `0.06` is an exact decimal, not a float.
        let mut config = SessionConfig::new();
        config.options_mut().sql_parser.parse_float_as_decimal = true;
        let plain = SessionContext::new_with_config(config);
        let mut files = Vec::new();
        for table in Table::ALL {
            files.push((table, write_parquet(table, sf, dir.path(), 1, 1).unwrap()));
            // The generator is deterministic: these are the rows of the files just written.
            let batches = table.batches(sf).unwrap();
            let mem = MemTable::try_new(table.schema(), vec![batches]).unwrap();
            plain.register_table(table.name(), Arc::new(mem)).unwrap();
        }
        let mut expected = Vec::new();
        for query in QUERIES {
            let (setup, teardown) = query.setup_and_teardown();
            for statement in &setup {
                plain.sql(statement).await.unwrap().collect().await.unwrap();
            }
            let answer = match plain.sql(&query.sql()).await {
                Ok(frame) => {
                    let schema = frame.schema().as_arrow().clone();
                    match frame.collect().await {
                        Ok(batches) => {
                            Answer::from_batches(&schema, &batches).map_err(|e| e.to_string())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            for statement in &teardown {
                plain.sql(statement).await.unwrap().collect().await.unwrap();
            }
            expected.push(answer);
        }
        Tpch {
            _dir: dir,
            files,
            expected,
        }
    }

    /// Reads each table's files the way `quarry load` does, into batches of the table's schema
    /// as `store`'s catalog defines it.
    async fn read_for_load(
        &self,
        store: &Arc<dyn Store>,
    ) -> Vec<(TableName, Vec<arrow::array::RecordBatch>)> {
        let mut out = Vec::new();
        for (table, paths) in &self.files {
            let name = TableName::new(KEYSPACE, table.name());
            let def = store.table(&name).unwrap();
            let sources: Vec<Source> = paths.iter().cloned().map(Source::File).collect();
            let read = tokio::task::spawn_blocking(move || {
                read_sources(&sources, &def, &ReadOptions::default(), 2, &|_| {})
            })
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("loading {name}: {e}"));
            out.push((name, read.into_iter().flat_map(|d| d.batches).collect()));
        }
        out
    }

    /// Runs every query through `run`, compares its answer and returns one line per query and
    /// whether all agreed.
    async fn check<F, Fut>(&self, place: &str, run: F) -> (Vec<String>, bool)
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<QueryOutput, String>>,
    {
        let mut lines = Vec::new();
        let mut all_ok = true;
        for (query, expected) in QUERIES.iter().zip(&self.expected) {
            let started = Instant::now();
            // Q15 creates a view first and drops it after.
            let (setup, teardown) = query.setup_and_teardown();
            let statements = async {
                for statement in setup {
                    run(statement).await?;
                }
                let result = run(query.sql()).await;
                for statement in teardown {
                    run(statement).await?;
                }
                result
            };
            let outcome = match tokio::time::timeout(QUERY_TIMEOUT, statements).await {
                Err(_) => Err(format!("no answer within {} s", QUERY_TIMEOUT.as_secs())),
                Ok(result) => judge(query, expected, result),
            };
            let line = match outcome {
                Ok(rows) => format!(
                    "{} {place}: ok, {rows} rows in {} ms",
                    query.name(),
                    started.elapsed().as_millis()
                ),
                Err(why) => {
                    all_ok = false;
                    // One line per query, whatever the error's own line breaks.
                    let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
                    format!("{} {place}: FAILED: {why}", query.name())
                }
            };
            eprintln!("{line}");
            lines.push(line);
        }
        (lines, all_ok)
    }
}

/// The answer's row count if it agrees with plain DataFusion's, or what went wrong.
fn judge(
    query: &Query,
    expected: &Result<Answer, String>,
    result: Result<QueryOutput, String>,
) -> Result<usize, String> {
    let expected = expected
        .as_ref()
        .map_err(|e| format!("plain DataFusion could not run it either: {e}"))?;
    let output = result?;
    let answer =
        Answer::from_batches(&output.schema, &output.batches).map_err(|e| e.to_string())?;
    compare(expected, &answer, query.order())
        .map_err(|d| format!("differs from plain DataFusion: {d}"))?;
    Ok(answer.rows.len())
}

fn report(place: &str, started: Instant, lines: &[String], all_ok: bool) {
    let failed: Vec<&String> = lines.iter().filter(|l| l.contains(": FAILED: ")).collect();
    eprintln!(
        "TPC-H {place}: {} of {} queries agree with plain DataFusion ({:.1} s in all)",
        lines.len() - failed.len(),
        lines.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        all_ok,
        "{} of {} TPC-H queries failed {place}:\n{}",
        failed.len(),
        lines.len(),
        failed
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tpch_query_embedded() {
    let started = Instant::now();
    let tpch = Tpch::generate().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let session = QuarrySession::new(store.clone() as Arc<dyn Store>);
    for statement in create_statements(SHARDS) {
        session.execute(&statement).await.unwrap();
    }
    for (name, batches) in tpch.read_for_load(session.store()).await {
        store.write(&name, batches).await.unwrap();
    }
    let (key, value) = DEFAULT_SCHEMA;
    session
        .execute(&format!("SET {key} = '{value}'"))
        .await
        .unwrap();
    let (lines, all_ok) = tpch
        .check("embedded", |sql| {
            let session = &session;
            async move { session.execute(&sql).await.map_err(|e| e.to_string()) }
        })
        .await;
    report("embedded", started, &lines, all_ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tpch_query_on_a_three_worker_cluster() {
    let started = Instant::now();
    let tpch = Tpch::generate().await;
    let cluster = TestCluster::start(3, DriverConfig::default()).await;
    for statement in create_statements(SHARDS) {
        cluster.sql(&statement).await;
    }
    // As `quarry load --driver URL` does: read here, upload to the driver over Flight.
    let driver = Client::connect(&cluster.cluster.url, Some(cluster.token()))
        .await
        .unwrap();
    let store = cluster.store.clone() as Arc<dyn Store>;
    for (name, batches) in tpch.read_for_load(&store).await {
        driver.load(&name.to_string(), batches).await.unwrap();
    }
    let settings = [(DEFAULT_SCHEMA.0.to_string(), DEFAULT_SCHEMA.1.to_string())];
    let (lines, all_ok) = tpch
        .check("on cluster", |sql| {
            let (driver, settings) = (cluster.driver(), &settings);
            async move {
                driver
                    .run_statement(&sql, settings, "tpch")
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await;
    report("on cluster", started, &lines, all_ok);
}
