//! `quarry jobs`, `quarry job ID`, `quarry cancel ID` and `quarry workers`: what a driver is
//! doing, as tables (or CSV/JSON for scripts).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use quarry_client::Client;
use quarry_proto::v1 as pb;

use crate::cli::{DriverConnection, JobArgs, JobsArgs};
use crate::output::{OutputFormat, write_result};

async fn connect(data_dir: &Path, driver: &DriverConnection) -> anyhow::Result<Client> {
    driver.url.as_deref().context(
        "this command talks to a running driver: pass --driver URL or set QUARRY_DRIVER \
         (`quarry up` prints the URL)",
    )?;
    driver.connect(data_dir).await
}

fn state_name(state: i32) -> &'static str {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Queued) => "queued",
        Ok(pb::JobState::Running) => "running",
        Ok(pb::JobState::Succeeded) => "succeeded",
        Ok(pb::JobState::Failed) => "failed",
        Ok(pb::JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn print(format: OutputFormat, fields: Vec<Field>, columns: Vec<ArrayRef>) -> anyhow::Result<()> {
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    write_result(format, &schema, &[batch], &mut std::io::stdout().lock())
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn one_line(sql: &str) -> String {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 60 {
        format!("{}…", flat.chars().take(59).collect::<String>())
    } else {
        flat
    }
}

pub async fn jobs(
    data_dir: &Path,
    driver: &DriverConnection,
    args: JobsArgs,
) -> anyhow::Result<()> {
    let driver = connect(data_dir, driver).await?;
    let jobs = driver.jobs().await?;
    print(
        args.format,
        vec![
            text("job"),
            text("state"),
            Field::new("tasks_done", DataType::UInt32, false),
            Field::new("tasks", DataType::UInt32, false),
            Field::new("elapsed_ms", DataType::UInt64, false),
            text("sql"),
        ],
        vec![
            Arc::new(StringArray::from_iter_values(
                jobs.iter().map(|j| j.job_id.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                jobs.iter().map(|j| state_name(j.state)),
            )),
            Arc::new(UInt32Array::from_iter_values(
                jobs.iter().map(|j| j.tasks_done),
            )),
            Arc::new(UInt32Array::from_iter_values(
                jobs.iter().map(|j| j.tasks_total),
            )),
            Arc::new(UInt64Array::from_iter_values(
                jobs.iter().map(|j| j.elapsed_ms),
            )),
            Arc::new(StringArray::from_iter_values(
                jobs.iter().map(|j| one_line(&j.sql)),
            )),
        ],
    )
}

pub async fn job(data_dir: &Path, driver: &DriverConnection, args: JobArgs) -> anyhow::Result<()> {
    let driver = connect(data_dir, driver).await?;
    let response = driver.job(&args.id).await?;
    let job = response
        .job
        .context("the driver sent a job without its summary")?;
    if args.format == OutputFormat::Table {
        println!(
            "job {}: {} in {:.3} s — {}",
            job.job_id,
            state_name(job.state),
            job.elapsed_ms as f64 / 1000.0,
            one_line(&job.sql)
        );
        if let Some(error) = &job.error {
            println!("error: {}", error.message);
        }
        if response.stages.is_empty() && job.state != pb::JobState::Running as i32 {
            // A job from before the driver's last start (its history keeps no stages), or one
            // that failed before it was cut into stages.
            println!(
                "{} of {} tasks done; no stages recorded (the job ran before the driver's last \
                 start, or failed before it was planned)",
                job.tasks_done, job.tasks_total
            );
            return Ok(());
        }
        let (local, remote) = response
            .stages
            .iter()
            .filter_map(|s| s.metrics.as_ref())
            .fold((0u64, 0u64), |(l, r), m| {
                (l + m.rows_local, r + m.rows_remote)
            });
        if local + remote > 0 {
            println!(
                "store reads beside the data: {:.1}% ({local} of {} rows; {remote} from other nodes)",
                100.0 * local as f64 / (local + remote) as f64,
                local + remote
            );
        }
        for (what, rows) in table_rows(&response.stages) {
            println!("{what}");
            for (table, n) in rows {
                println!("  {table}: {n} rows");
            }
        }
        println!("stages (inputs before the stages that read them):");
    }
    let stages = &response.stages;
    let metrics = |f: fn(&pb::TaskMetrics) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(
            stages.iter().map(|s| s.metrics.as_ref().map_or(0, f)),
        ))
    };
    print(
        args.format,
        vec![
            Field::new("stage", DataType::UInt32, false),
            text("reads"),
            text("runs_on"),
            Field::new("tasks_done", DataType::UInt32, false),
            Field::new("tasks", DataType::UInt32, false),
            Field::new("remote_tasks", DataType::UInt32, false),
            Field::new("retried_tasks", DataType::UInt32, false),
            Field::new("rows_in", DataType::UInt64, false),
            Field::new("rows_local", DataType::UInt64, false),
            Field::new("rows_remote", DataType::UInt64, false),
            Field::new("rows_out", DataType::UInt64, false),
            Field::new("bytes_out", DataType::UInt64, false),
            Field::new("wasm_cpu_ms", DataType::UInt64, false),
            text("what"),
        ],
        vec![
            Arc::new(UInt32Array::from_iter_values(
                stages.iter().map(|s| s.stage_id),
            )),
            Arc::new(StringArray::from_iter_values(stages.iter().map(|s| {
                s.inputs
                    .iter()
                    .map(|i| format!("stage {i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }))),
            Arc::new(StringArray::from_iter_values(
                stages.iter().map(|s| s.runs_on.as_str()),
            )),
            Arc::new(UInt32Array::from_iter_values(
                stages.iter().map(|s| s.tasks_done),
            )),
            Arc::new(UInt32Array::from_iter_values(
                stages.iter().map(|s| s.tasks_total),
            )),
            Arc::new(UInt32Array::from_iter_values(
                stages.iter().map(|s| s.tasks_remote),
            )),
            Arc::new(UInt32Array::from_iter_values(
                stages.iter().map(|s| s.tasks_retried),
            )),
            metrics(|m| m.rows_in),
            metrics(|m| m.rows_local),
            metrics(|m| m.rows_remote),
            metrics(|m| m.rows_out),
            metrics(|m| m.bytes_out),
            metrics(|m| m.wasm_cpu_ns / 1_000_000),
            Arc::new(StringArray::from_iter_values(
                stages.iter().map(|s| s.description.as_str()),
            )),
        ],
    )?;
    if args.format == OutputFormat::Table {
        println!("tasks (every finished run):");
        let tasks: Vec<(u32, &pb::TaskSummary)> = stages
            .iter()
            .flat_map(|s| s.tasks.iter().map(move |t| (s.stage_id, t)))
            .collect();
        let task_metric = |f: fn(&pb::TaskMetrics) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(
                tasks.iter().map(|(_, t)| t.metrics.as_ref().map_or(0, f)),
            ))
        };
        print(
            args.format,
            vec![
                Field::new("stage", DataType::UInt32, false),
                Field::new("task", DataType::UInt32, false),
                Field::new("attempt", DataType::UInt32, false),
                text("worker"),
                Field::new("remote", DataType::Boolean, false),
                Field::new("rows_in", DataType::UInt64, false),
                Field::new("rows_local", DataType::UInt64, false),
                Field::new("rows_remote", DataType::UInt64, false),
                Field::new("rows_out", DataType::UInt64, false),
                Field::new("ms", DataType::UInt64, false),
                Field::new("wasm_cpu_ms", DataType::UInt64, false),
                text("outcome"),
            ],
            vec![
                Arc::new(UInt32Array::from_iter_values(tasks.iter().map(|(s, _)| *s))),
                Arc::new(UInt32Array::from_iter_values(
                    tasks.iter().map(|(_, t)| t.partition),
                )),
                Arc::new(UInt32Array::from_iter_values(
                    tasks.iter().map(|(_, t)| t.attempt),
                )),
                Arc::new(StringArray::from_iter_values(
                    tasks.iter().map(|(_, t)| t.worker_id.as_str()),
                )),
                Arc::new(BooleanArray::from(
                    tasks.iter().map(|(_, t)| t.remote).collect::<Vec<_>>(),
                )),
                task_metric(|m| m.rows_in),
                task_metric(|m| m.rows_local),
                task_metric(|m| m.rows_remote),
                task_metric(|m| m.rows_out),
                task_metric(|m| m.elapsed_ms),
                task_metric(|m| m.wasm_cpu_ns / 1_000_000),
                Arc::new(StringArray::from_iter_values(
                    tasks.iter().map(|(_, t)| t.outcome.as_str()),
                )),
            ],
        )?;
    }
    Ok(())
}

pub async fn cancel(
    data_dir: &Path,
    driver: &DriverConnection,
    args: JobArgs,
) -> anyhow::Result<()> {
    let driver = connect(data_dir, driver).await?;
    if driver.cancel(&args.id).await? {
        println!("cancelled job {}", args.id);
    } else {
        println!("job {} was not running", args.id);
    }
    Ok(())
}

pub async fn workers(
    data_dir: &Path,
    driver: &DriverConnection,
    args: JobsArgs,
) -> anyhow::Result<()> {
    let driver = connect(data_dir, driver).await?;
    let workers = driver.workers().await?;
    let info = |f: fn(&pb::WorkerInfo) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            workers
                .iter()
                .map(|w| w.worker.as_ref().map(f).unwrap_or_default()),
        ))
    };
    print(
        args.format,
        vec![
            text("worker"),
            text("node"),
            text("endpoint"),
            Field::new("alive", DataType::Boolean, false),
            Field::new("running_tasks", DataType::UInt32, false),
            Field::new("last_seen_ms_ago", DataType::UInt64, false),
            text("local_shards"),
        ],
        vec![
            info(|w| w.worker_id.clone()),
            info(|w| w.node_id.clone()),
            info(|w| w.flight_endpoint.clone()),
            Arc::new(BooleanArray::from(
                workers.iter().map(|w| w.alive).collect::<Vec<_>>(),
            )),
            Arc::new(UInt32Array::from_iter_values(
                workers.iter().map(|w| w.running_tasks),
            )),
            Arc::new(UInt64Array::from_iter_values(
                workers.iter().map(|w| w.last_seen_ms_ago),
            )),
            info(|w| local_shards(&w.local_shards)),
        ],
    )
}

/// A worker's local shards as `keyspace: count` pairs, such as `iot: 267, synth: 16`.
fn local_shards(ranges: &[pb::ShardRange]) -> String {
    let mut counts: std::collections::BTreeMap<&str, u32> = Default::default();
    for r in ranges {
        *counts.entry(r.keyspace.as_str()).or_default() += r.last.saturating_sub(r.first) + 1;
    }
    counts
        .iter()
        .map(|(keyspace, n)| format!("{keyspace}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows the job's succeeded task runs read from and wrote to each table, for `quarry job ID`;
/// only the kinds it has any of.
fn table_rows(
    stages: &[pb::StageSummary],
) -> Vec<(&'static str, std::collections::BTreeMap<String, u64>)> {
    let mut read = std::collections::BTreeMap::new();
    let mut written = std::collections::BTreeMap::new();
    for m in stages.iter().filter_map(|s| s.metrics.as_ref()) {
        for (into, from) in [(&mut read, &m.rows_read), (&mut written, &m.rows_written)] {
            for (table, rows) in from {
                *into.entry(table.clone()).or_insert(0u64) += rows;
            }
        }
    }
    [("read from the store:", read), ("written:", written)]
        .into_iter()
        .filter(|(_, rows)| !rows.is_empty())
        .collect()
}
