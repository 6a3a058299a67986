//! `quarry-bench tpch`: the 22 TPC-H queries on Quarry beside plain DataFusion over the same
//! Parquet files, embedded and on `quarry up`.
//!
//! 1. Generate the eight tables at `--sf` (default 1) as Parquet files (`quarry_tpch`, which
//!    wraps the `tpchgen` generators).
//! 2. Load them into a `--shards`-shard keyspace through the same path as `quarry load` (read,
//!    cast, token, sort, write runs); report the load time.
//! 3. Run each query warm on the embedded store and on the Parquet files with plain DataFusion,
//!    the timed runs alternating; check the answers agree; print medians, per-query ratios and
//!    the total ratio (sum of Quarry's medians over sum of DataFusion's).
//! 4. The same on `quarry up --workers N` over the same data directory, through the driver's
//!    Flight endpoint.
//!
//! A query that fails or disagrees on Quarry is reported by name and left out of the totals;
//! the run goes on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use quarry_client::Client;
use quarry_core::schema::TableName;
use quarry_sql::{QuarrySession, QueryOutput};
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};
use quarry_tpch::{
    Answer, DEFAULT_SCHEMA, KEYSPACE, QUERIES, Query, Table, compare, create_statements,
    write_parquet,
};

use crate::{Target, Up, WorkDir, quarry_binary, time_side_by_side};

/// Targets, as ratios of Quarry's time to plain DataFusion's.
const EMBEDDED_TOTAL_TARGET: f64 = 1.5;
const CLUSTER_TOTAL_TARGET: f64 = 2.0;
const QUERY_TARGET: f64 = 3.0;

#[derive(Debug, clap::Args)]
pub struct TpchArgs {
    /// TPC-H scale factor (1: 6M lineitem rows, 8.7M rows in all).
    #[arg(long, default_value_t = 1.0)]
    sf: f64,
    /// Shards of the `tpch` keyspace.
    #[arg(long, default_value_t = 800)]
    shards: u32,
    /// Parquet files per table (region and nation are one file each).
    #[arg(long, default_value_t = 8)]
    files: u32,
    /// Timed runs per query and side (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Only these queries, by number (`--queries 1,6,22`); default all 22.
    #[arg(long, value_delimiter = ',')]
    queries: Vec<u8>,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Workers of the local cluster (`quarry up --workers`); 0 skips the cluster section.
    #[arg(long, default_value_t = 3)]
    workers: usize,
}

pub async fn run(args: TpchArgs) -> Result<()> {
    let work_dir = WorkDir::new(args.dir.as_deref())?;
    let work = work_dir.path().to_path_buf();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let queries: Vec<Query> = QUERIES
        .into_iter()
        .filter(|q| args.queries.is_empty() || args.queries.contains(&q.number))
        .collect();
    println!(
        "TPC-H benchmark: SF {}, {} shards, {} queries, {} cores, money as {}",
        args.sf,
        args.shards,
        queries.len(),
        threads,
        quarry_tpch::MONEY.cql_type()
    );

    let parquet_dir = work.join("parquet");
    let _ = std::fs::remove_dir_all(&parquet_dir);
    let started = Instant::now();
    let mut files = Vec::new();
    for table in Table::ALL {
        files.push((
            table,
            write_parquet(table, args.sf, &parquet_dir, args.files, threads)?,
        ));
    }
    println!(
        "generated the tables as Parquet in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let store_dir = work.join("store");
    let _ = std::fs::remove_dir_all(&store_dir);
    let store = Arc::new(EmbeddedStore::open(&store_dir, EmbeddedOptions::default())?);
    let session = QuarrySession::new(store.clone() as Arc<dyn Store>);
    for statement in create_statements(args.shards) {
        session.execute(&statement).await?;
    }
    let (load_rows, load_secs) = load(&store, &files).await?;
    store.wait_idle();

    // Quarry's SQL dialect: a literal such as `0.06` is an exact decimal, not a float.
    let mut config = SessionConfig::new();
    config.options_mut().sql_parser.parse_float_as_decimal = true;
    let plain = SessionContext::new_with_config(config);
    for table in Table::ALL {
        plain
            .register_parquet(
                table.name(),
                parquet_dir.join(table.name()).to_string_lossy().as_ref(),
                ParquetReadOptions::default(),
            )
            .await?;
    }
    let (key, value) = DEFAULT_SCHEMA;
    session.execute(&format!("SET {key} = '{value}'")).await?;

    println!("\nembedded (in this process):");
    let embedded = compare_queries(
        &Target::Embedded(&session),
        &plain,
        &queries,
        args.iterations,
    )
    .await;

    // `quarry up` opens the data directory as its writer: let go of it first.
    drop(session);
    drop(store);
    let cluster = if args.workers > 0 {
        let up = Up::start(&quarry_binary()?, &store_dir, args.workers)?;
        let mut driver = Client::connect(&up.url, Some(&up.token)).await?;
        driver.sql(&format!("SET {key} = '{value}'")).await?;
        println!(
            "\non `quarry up --workers {}` (driver and worker processes, through Flight):",
            args.workers
        );
        let timings =
            compare_queries(&Target::Cluster(driver), &plain, &queries, args.iterations).await;
        drop(up);
        Some(timings)
    } else {
        None
    };

    println!(
        "\nload: {load_rows} rows in {load_secs:.1} s ({:.0} rows/s)",
        load_rows as f64 / load_secs
    );
    let mut misses = Vec::new();
    summarize(
        "embedded",
        &embedded,
        EMBEDDED_TOTAL_TARGET,
        queries.len(),
        &mut misses,
    );
    if let Some(cluster) = &cluster {
        summarize(
            "cluster",
            cluster,
            CLUSTER_TOTAL_TARGET,
            queries.len(),
            &mut misses,
        );
    }
    if misses.is_empty() {
        println!("all targets met");
    } else {
        println!("targets missed: {}", misses.join("; "));
    }
    Ok(())
}

/// Loads every table the way `quarry load` does; returns the rows and seconds in all.
async fn load(store: &Arc<EmbeddedStore>, files: &[(Table, Vec<PathBuf>)]) -> Result<(u64, f64)> {
    let (mut all_rows, mut all_secs) = (0, 0.0);
    for (table, paths) in files {
        let name = TableName::new(KEYSPACE, table.name());
        let (rows, secs) = crate::load_files(store, &name, paths).await?;
        println!(
            "loaded {rows:>9} rows into {name:<15} in {secs:>6.2} s ({:.0} rows/s)",
            rows as f64 / secs
        );
        all_rows += rows;
        all_secs += secs;
    }
    Ok((all_rows, all_secs))
}

/// One query's outcome on one side.
struct Timing {
    query: Query,
    /// Quarry's and DataFusion's warm medians, when Quarry ran it and agreed.
    times: Result<(Duration, Duration), String>,
}

/// Runs every query warm on `target` and on plain DataFusion, alternating, checks the answers
/// agree and prints a line per query.
async fn compare_queries(
    target: &Target<'_>,
    plain: &SessionContext,
    queries: &[Query],
    iterations: usize,
) -> Vec<Timing> {
    println!(
        "{:<6} {:>12} {:>14} {:>8} {:>7}",
        "query", "quarry", "datafusion", "ratio", "rows"
    );
    let mut timings = Vec::new();
    for query in queries {
        let sql = query.sql();
        // Q15's view is created before the timed runs and dropped after them, on both sides.
        let (setup, teardown) = query.setup_and_teardown();
        let measured = async {
            for statement in &setup {
                target.output(statement).await?;
                plain_output(plain, statement).await?;
            }
            let measured = time_side_by_side(
                iterations,
                || target.output(&sql),
                || plain_output(plain, &sql),
            )
            .await?;
            for statement in &teardown {
                target.output(statement).await?;
                plain_output(plain, statement).await?;
            }
            Ok::<_, anyhow::Error>(measured)
        }
        .await;
        let times = match measured {
            Err(e) => Err(format!(
                "failed: {}",
                format!("{e:#}")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            Ok(((ours, our_output), (theirs, their_output))) => {
                match agree(query, &their_output, &our_output) {
                    Ok(rows) => {
                        println!(
                            "{:<6} {:>10.1}ms {:>12.1}ms {:>8.2} {rows:>7}",
                            query.name(),
                            ours.as_secs_f64() * 1e3,
                            theirs.as_secs_f64() * 1e3,
                            ours.as_secs_f64() / theirs.as_secs_f64()
                        );
                        Ok((ours, theirs))
                    }
                    Err(e) => Err(format!("differs from plain DataFusion: {e}")),
                }
            }
        };
        if let Err(why) = &times {
            println!("{:<6} {why}", query.name());
        }
        timings.push(Timing {
            query: *query,
            times,
        });
    }
    timings
}

async fn plain_output(plain: &SessionContext, sql: &str) -> Result<QueryOutput> {
    let frame = plain.sql(sql).await?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await?;
    Ok(QueryOutput {
        schema,
        batches,
        message: None,
    })
}

/// The answer's row count if Quarry's answer agrees with DataFusion's.
fn agree(query: &Query, expected: &QueryOutput, actual: &QueryOutput) -> Result<usize> {
    let expected = Answer::from_batches(&expected.schema, &expected.batches)?;
    let actual = Answer::from_batches(&actual.schema, &actual.batches)?;
    compare(&expected, &actual, query.order())?;
    Ok(actual.rows.len())
}

/// Prints a section's totals and adds its missed targets to `misses`.
fn summarize(
    place: &str,
    timings: &[Timing],
    total_target: f64,
    queries: usize,
    misses: &mut Vec<String>,
) {
    let measured: Vec<(&Query, Duration, Duration)> = timings
        .iter()
        .filter_map(|t| t.times.as_ref().ok().map(|(a, b)| (&t.query, *a, *b)))
        .collect();
    let ours: f64 = measured.iter().map(|(_, a, _)| a.as_secs_f64()).sum();
    let theirs: f64 = measured.iter().map(|(_, _, b)| b.as_secs_f64()).sum();
    let total = ours / theirs.max(1e-9);
    let worst = measured
        .iter()
        .map(|(q, a, b)| (a.as_secs_f64() / b.as_secs_f64(), q.name()))
        .fold((0.0, String::new()), |w, r| if r.0 > w.0 { r } else { w });
    println!(
        "{place}: {} of {queries} queries ran and agreed; total {:.1} / {:.1} ms = {total:.2} \
         (target <= {total_target}); worst {} at {:.2} (target <= {QUERY_TARGET})",
        measured.len(),
        ours * 1e3,
        theirs * 1e3,
        worst.1,
        worst.0,
    );
    for timing in timings {
        if let Err(why) = &timing.times {
            println!("  {} {place}: {why}", timing.query.name());
        }
    }
    if measured.len() < queries {
        misses.push(format!(
            "{place}: {} queries failed or disagreed",
            queries - measured.len()
        ));
    }
    if total > total_target {
        misses.push(format!("{place} total ratio {total:.2}"));
    }
    let slow: Vec<String> = measured
        .iter()
        .filter(|(_, a, b)| a.as_secs_f64() / b.as_secs_f64() > QUERY_TARGET)
        .map(|(q, _, _)| q.name())
        .collect();
    if !slow.is_empty() {
        misses.push(format!(
            "{place} queries over {QUERY_TARGET}x: {}",
            slow.join(", ")
        ));
    }
}
