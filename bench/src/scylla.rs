//! The ScyllaDB connector beside the embedded store, on the same rows.
//!
//! A 3-node `quarry cql-server` (replication 2) keeps its rows in its own data directory; three
//! readers, each beside one node as co-located workers are (`local_node`), scan the shards their
//! node is the primary replica of, at once. Against them, the embedded store scans every shard
//! with three splits in flight. Runs alternate, so a shared machine's noise hits both alike. The
//! answers (row count and the sum of `device_id`) must agree with the rows generated.
//!
//! Reported: write-back rows/s (the connector's batched upserts, and the embedded store's write),
//! full-scan rows/s (in total and per reader), CQL requests per split, and the share of pages each
//! reader read from its own node (target: 100%).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use futures::{StreamExt, TryStreamExt};
use quarry_core::ids::ShardId;
use quarry_core::schema::TableName;
use quarry_core::shard_set::ShardSet;
use quarry_cql::{CqlServer, ServerOptions};
use quarry_scylla::{ScyllaOptions, ScyllaStore};
use quarry_sql::QuarrySession;
use quarry_store::{EmbeddedOptions, EmbeddedStore, ScanRequest, Store};

use crate::WorkDir;
use crate::fresh::{DDL, base_readings};

#[derive(Debug, clap::Args)]
pub struct ScyllaArgs {
    /// Rows to write and scan.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Distinct devices.
    #[arg(long, default_value_t = 10_000)]
    devices: u64,
    /// Timed scans of each store (after one warm-up scan); the median is reported.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

const NODES: usize = 3;
/// Rows per write call, as a load commits them.
const WRITE_CHUNK: usize = 100_000;

pub async fn run(args: ScyllaArgs) -> Result<()> {
    let work = WorkDir::new(args.dir.as_deref())?;
    let (_, base) = base_readings(args.rows, args.devices)?;
    let expected = (
        base.num_rows() as u64,
        device_sum(std::slice::from_ref(&base)),
    );
    let name = TableName::new("iot", "readings");
    let chunks: Vec<RecordBatch> = (0..base.num_rows())
        .step_by(WRITE_CHUNK)
        .map(|at| base.slice(at, WRITE_CHUNK.min(base.num_rows() - at)))
        .collect();

    let embedded = Arc::new(EmbeddedStore::open(
        work.path().join("embedded"),
        EmbeddedOptions::default(),
    )?);
    let session = QuarrySession::new(embedded.clone());
    for statement in DDL.split(';').filter(|s| !s.trim().is_empty()) {
        session.execute(statement).await?;
    }
    let started = Instant::now();
    for chunk in &chunks {
        embedded.write(&name, vec![chunk.clone()]).await?;
    }
    embedded.publish().await?;
    let embedded_write = started.elapsed();

    let backing = Arc::new(EmbeddedStore::open(
        work.path().join("cql-server"),
        EmbeddedOptions::default(),
    )?);
    let server = CqlServer::start(
        backing,
        ServerOptions {
            nodes: NODES,
            replication: 2,
            vnodes: 16,
            port: 0,
            ..ServerOptions::default()
        },
    )
    .await?;
    let addresses: Vec<String> = server.addresses().iter().map(|a| a.to_string()).collect();
    let writer = Arc::new(
        ScyllaStore::connect(ScyllaOptions {
            nodes: vec![addresses[0].clone()],
            ..ScyllaOptions::default()
        })
        .await?,
    );
    let session = QuarrySession::new(writer.clone());
    for statement in DDL.split(';').filter(|s| !s.trim().is_empty()) {
        session.execute(statement).await?;
    }
    let started = Instant::now();
    for chunk in &chunks {
        writer.write(&name, vec![chunk.clone()]).await?;
    }
    let connector_write = started.elapsed();

    // Readers beside the nodes, each with the shards its node is primary for.
    let mut readers = Vec::new();
    for address in &addresses {
        let reader = ScyllaStore::connect(ScyllaOptions {
            nodes: vec![address.clone()],
            local_node: Some(address.clone()),
            ..ScyllaOptions::default()
        })
        .await?;
        let keyspace = reader.keyspace("iot")?;
        let placement = reader.placement(&keyspace, std::slice::from_ref(&name), &[])?;
        let shards: Vec<ShardId> = (0..keyspace.shards)
            .map(ShardId)
            .filter(|s| placement.primary(*s).is_some_and(|n| &n.0 == address))
            .collect();
        readers.push((Arc::new(reader), ShardSet::from_shards(shards)));
    }

    let mut embedded_times = Vec::new();
    let mut connector_times = Vec::new();
    let mut per_reader: Vec<Vec<(u64, Duration)>> = vec![Vec::new(); NODES];
    let mut requests_per_split = 0.0;
    for run in 0..=args.iterations {
        let started = Instant::now();
        let got = scan(embedded.as_ref(), &name, None, NODES).await?;
        let took = started.elapsed();
        ensure!(
            got == expected,
            "the embedded scan read {got:?}, expected {expected:?}"
        );
        if run > 0 {
            embedded_times.push(took);
        }

        let before: u64 = server.stats().iter().map(|s| s.requests).sum();
        let started = Instant::now();
        let scans = readers.iter().map(|(reader, shards)| {
            let name = name.clone();
            async move {
                let started = Instant::now();
                let (rows, sum, splits) =
                    scan_counting(reader.as_ref(), &name, Some(shards.clone())).await?;
                anyhow::Ok((rows, sum, splits, started.elapsed()))
            }
        });
        let results = futures::future::try_join_all(scans).await?;
        let took = started.elapsed();
        let after: u64 = server.stats().iter().map(|s| s.requests).sum();
        let rows: u64 = results.iter().map(|r| r.0).sum();
        let sum: i128 = results.iter().map(|r| r.1).sum();
        ensure!(
            (rows, sum) == expected,
            "the connector's scan read {:?}, expected {expected:?}",
            (rows, sum)
        );
        if run > 0 {
            connector_times.push(took);
            for (k, r) in results.iter().enumerate() {
                per_reader[k].push((r.0, r.3));
            }
            let splits: usize = results.iter().map(|r| r.2).sum();
            requests_per_split = (after - before) as f64 / splits.max(1) as f64;
        }
    }

    let rows = args.rows as f64;
    let per_second = |d: Duration| rows / d.as_secs_f64();
    let embedded_scan = median(&mut embedded_times);
    let connector_scan = median(&mut connector_times);
    println!(
        "\nScyllaDB connector on a {NODES}-node CQL server (replication 2), {} rows",
        args.rows
    );
    println!(
        "write-back: connector {:.0} rows/s, embedded {:.0} rows/s (embedded/connector {:.1}x)",
        per_second(connector_write),
        per_second(embedded_write),
        connector_write.as_secs_f64() / embedded_write.as_secs_f64()
    );
    println!(
        "full scan: connector {:.0} rows/s with {NODES} co-located readers, embedded {:.0} rows/s \
         ({NODES} splits in flight); connector/embedded time {:.1}x",
        per_second(connector_scan),
        per_second(embedded_scan),
        connector_scan.as_secs_f64() / embedded_scan.as_secs_f64()
    );
    for (k, (reader, shards)) in readers.iter().enumerate() {
        let stats = reader.read_stats();
        per_reader[k].sort_by_key(|(_, took)| *took);
        let (read, took) = per_reader[k][per_reader[k].len() / 2];
        println!(
            "  reader beside {}: {} shards, {read} rows in {:.2} s ({:.0} rows/s), {:.1}% of \
             its pages from its own node",
            addresses[k],
            shards.len(),
            took.as_secs_f64(),
            read as f64 / took.as_secs_f64(),
            stats.local_share() * 100.0
        );
    }
    println!("CQL requests per split: {requests_per_split:.1}");
    Ok(())
}

/// Rows and the sum of `device_id` of a full scan (or of `shards`), splits `parallel` at a time.
async fn scan(
    store: &dyn Store,
    name: &TableName,
    shards: Option<ShardSet>,
    parallel: usize,
) -> Result<(u64, i128)> {
    let (rows, sum, _) = scan_with(store, name, shards, parallel).await?;
    Ok((rows, sum))
}

/// As [`scan`], one split at a time (one reader), with the number of splits.
async fn scan_counting(
    store: &dyn Store,
    name: &TableName,
    shards: Option<ShardSet>,
) -> Result<(u64, i128, usize)> {
    scan_with(store, name, shards, 1).await
}

async fn scan_with(
    store: &dyn Store,
    name: &TableName,
    shards: Option<ShardSet>,
    parallel: usize,
) -> Result<(u64, i128, usize)> {
    let table = store.table(name)?;
    let device = table.column_index("device_id")?;
    let request = ScanRequest {
        projection: Some(vec![device]),
        shards,
        ..ScanRequest::full(name.clone())
    };
    let plan = store.plan_scan(&request)?;
    let splits = plan.splits.len();
    let totals: Vec<(u64, i128)> = futures::stream::iter(plan.splits)
        .map(|split| async move {
            let batches: Vec<RecordBatch> = split.source.open()?.try_collect().await?;
            anyhow::Ok((
                batches.iter().map(|b| b.num_rows() as u64).sum::<u64>(),
                device_sum(&batches),
            ))
        })
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await?;
    Ok((
        totals.iter().map(|t| t.0).sum(),
        totals.iter().map(|t| t.1).sum(),
        splits,
    ))
}

/// The sum of the first column (`device_id`) of `batches`.
fn device_sum(batches: &[RecordBatch]) -> i128 {
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .map(|v| i128::from(*v))
                .collect::<Vec<_>>()
        })
        .sum()
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
