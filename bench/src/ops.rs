//! `quarry-bench ops`: what one row costs in each operator of the benchmark jobs, in the WASM
//! sandbox beside the same SDK code compiled natively, in this process, with no store or cluster.
//!
//! The jobs of `quarry-bench jobs` (query (b) as a job, the daily rollup, the identity map) are
//! planned from their wasm32 modules; each job's operators then run in order over the same
//! generated readings, grouped by device and in full batches after the source's filter as a
//! store scan delivers them, each operator's output feeding the next (one partition: a shuffle
//! passes its input through). Every operator runs twice, alternating: once in a sandboxed instance
//! (`quarry_wasm`, as a worker runs it: batches copied in and out as Arrow IPC) and once through
//! the SDK's entry points called natively with the same IPC bytes. The ratio is the sandbox's
//! cost; the native time is the SDK's own cost per row. Both outputs must have equal rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use arrow::array::{AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use quarry_iot::IotConfig;
use quarry_sdk::JobFn;
use quarry_sdk::dag::{JobArgs, JobDag, Node};
use quarry_wasm::{JobModule, Runtime, RuntimeConfig};

#[derive(Debug, clap::Args)]
pub struct OpsArgs {
    /// Readings to generate.
    #[arg(long, default_value_t = 2_000_000)]
    rows: u64,
    /// Distinct devices (the jobs benchmark's ratio of readings to devices by default).
    #[arg(long, default_value_t = 20_000)]
    devices: u64,
    /// Timed runs per operator and side (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Rows per input batch (a store scan's batches hold 8,192).
    #[arg(long, default_value_t = 8192)]
    batch_rows: usize,
    /// Only the jobs whose label holds this text (`identity`, `(b)`, `rollup`), e.g. to
    /// profile one with `perf record` and `QUARRY_WASM_PROFILER=perfmap`.
    #[arg(long)]
    only: Option<String>,
}

/// A job to measure: its module, its native entry point, its arguments.
struct Job {
    label: &'static str,
    module: Arc<JobModule>,
    native: JobFn,
    args: JobArgs,
}

pub async fn run(args: OpsArgs) -> Result<()> {
    println!(
        "Quarry operator benchmark: {} readings, {} devices, batches of {} rows, in one process",
        args.rows, args.devices, args.batch_rows
    );
    let config = IotConfig {
        rows: args.rows,
        devices: args.devices,
        batch_rows: args.batch_rows,
        ..IotConfig::default()
    };
    config.validate().map_err(anyhow::Error::msg)?;
    let readings = as_a_scan_reads_them(config.generator().collect(), args.batch_rows)?;

    let runtime = Runtime::new(RuntimeConfig::default())?;
    let bench = runtime.load(&crate::jobs::build("bench/jobs")?)?;
    let rollup = runtime.load(&crate::jobs::build("examples/device-rollup")?)?;
    let job_args = |pairs: &[(&str, &str)]| {
        JobArgs::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    };
    let jobs = [
        Job {
            label: "identity map",
            module: bench.clone(),
            native: quarry_bench_jobs::bench,
            args: job_args(&[("job", "identity")]),
        },
        Job {
            label: "(b) temp count/avg/max",
            module: bench,
            native: quarry_bench_jobs::bench,
            args: job_args(&[("job", "temp-stats")]),
        },
        Job {
            label: "daily rollup",
            module: rollup,
            native: quarry_example_device_rollup::device_rollup,
            args: job_args(&[]),
        },
    ];

    println!(
        "\n{:<46} {:>10} {:>10} {:>12} {:>7} {:>12}",
        "operator", "rows in", "rows out", "wasm ns/row", "ratio", "guest ns/row"
    );
    let only = args.only.as_deref().unwrap_or("");
    for job in jobs.iter().filter(|job| job.label.contains(only)) {
        run_job(job, &readings, args.iterations, args.batch_rows)?;
    }

    // What every task pays before its first batch: a fresh instance, its operator started.
    let job = &jobs[2];
    let starts = (0..50)
        .map(|_| {
            let started = Instant::now();
            job.module.start(0, "start", &job.args)?;
            Ok(started.elapsed())
        })
        .collect::<Result<Vec<_>>>()?;
    println!(
        "\na fresh instance of the rollup module with its operator started: {:.0} µs (median of 50)",
        median(starts).as_secs_f64() * 1e6
    );
    Ok(())
}

/// The readings grouped by device, in batches of `batch_rows`: a store scan reads a shard in
/// token order, so all rows of a partition (a device) arrive one after another, and a combine
/// keyed by the partition key folds them without hashing. The generator interleaves devices.
fn as_a_scan_reads_them(readings: Vec<RecordBatch>, batch_rows: usize) -> Result<Vec<RecordBatch>> {
    let Some(first) = readings.first() else {
        return Ok(readings);
    };
    let all = arrow::compute::concat_batches(first.schema_ref(), &readings)?;
    let device = all
        .column_by_name("device_id")
        .context("readings have a device_id column")?;
    let order = arrow::compute::sort_to_indices(device, None, None)?;
    rebatch(arrow::compute::take_record_batch(&all, &order)?, batch_rows)
}

/// `all` cut into batches of `batch_rows`.
fn rebatch(all: RecordBatch, batch_rows: usize) -> Result<Vec<RecordBatch>> {
    Ok((0..all.num_rows())
        .step_by(batch_rows.max(1))
        .map(|start| all.slice(start, batch_rows.min(all.num_rows() - start)))
        .collect())
}

/// Runs the job's operators in DAG order over `readings`, each fed the previous one's output.
fn run_job(
    job: &Job,
    readings: &[RecordBatch],
    iterations: usize,
    batch_rows: usize,
) -> Result<()> {
    let dag = job.module.plan(&job.args)?;
    let mut input = source_batches(&dag, readings, batch_rows)?;
    let ops: Vec<u32> = dag
        .nodes
        .iter()
        .filter_map(|node| match node {
            Node::Wasm { op, .. } => Some(*op),
            _ => None,
        })
        .collect();
    println!("{}:", job.label);
    for op in ops {
        let name = &dag.ops[op as usize].name;
        let rows_in: usize = input.iter().map(RecordBatch::num_rows).sum();
        let (mut wasm_times, mut native_times) = (Vec::new(), Vec::new());
        let (mut output, mut guest_times, mut native_rows) = (Vec::new(), Vec::new(), 0);
        for _ in 0..=iterations.max(1) {
            let started = Instant::now();
            let guest;
            (output, guest) = in_sandbox(job, op, name, &input)?;
            wasm_times.push(started.elapsed());
            guest_times.push(guest);
            let started = Instant::now();
            native_rows = natively(job, op, &input)?;
            native_times.push(started.elapsed());
        }
        let rows_out: usize = output.iter().map(RecordBatch::num_rows).sum();
        ensure!(
            rows_out == native_rows,
            "{name}: {rows_out} rows out of the sandbox, {native_rows} natively"
        );
        let (wasm, native) = (median(wasm_times), median(native_times));
        let per_row = |d: Duration| d.as_secs_f64() * 1e9 / rows_in.max(1) as f64;
        println!(
            "  {:<44} {:>10} {:>10} {:>12.1} {:>7.2} {:>12.1}",
            short(name),
            rows_in,
            rows_out,
            per_row(wasm),
            wasm.as_secs_f64() / native.as_secs_f64().max(1e-9),
            per_row(median(guest_times)),
        );
        println!(
            "  {:<44} {:>10} {:>10} {:>12.1}",
            "  the same SDK code, native",
            "",
            "",
            per_row(native)
        );
        input = output;
    }
    Ok(())
}

/// The readings as the job's one source reads them: its predicate (the benchmark's jobs use
/// `sensor = 'temp'` only) applied, its columns projected by name, the rows that pass cut into
/// batches of `batch_rows` again (as DataFusion's filter coalesces its output).
fn source_batches(
    dag: &JobDag,
    readings: &[RecordBatch],
    batch_rows: usize,
) -> Result<Vec<RecordBatch>> {
    let Some((predicate, schema)) = dag.nodes.iter().find_map(|node| match node {
        Node::Source {
            predicate, schema, ..
        } => Some((predicate.clone(), schema.clone())),
        _ => None,
    }) else {
        bail!("the job has no source");
    };
    let schema = quarry_sdk::ipc::schema_from_bytes(&schema)?;
    let sensor = match predicate.as_deref() {
        None => None,
        Some("sensor = 'temp'") => Some("temp"),
        Some(other) => bail!("the operator bench cannot apply the predicate {other}"),
    };
    let passed = readings
        .iter()
        .map(|batch| {
            let batch = match sensor {
                Some(sensor) => {
                    let column = batch
                        .column_by_name("sensor")
                        .context("readings have a sensor column")?;
                    let keep = arrow::compute::kernels::cmp::eq(
                        column.as_string::<i32>(),
                        &arrow::array::StringArray::new_scalar(sensor),
                    )?;
                    filter_record_batch(batch, &keep)?
                }
                None => batch.clone(),
            };
            let columns = schema
                .fields()
                .iter()
                .map(|field| {
                    batch
                        .column_by_name(field.name())
                        .cloned()
                        .with_context(|| format!("readings have no column {}", field.name()))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        })
        .collect::<Result<Vec<_>>>()?;
    rebatch(
        arrow::compute::concat_batches(&schema, &passed)?,
        batch_rows,
    )
}

/// Every batch through a fresh sandboxed instance of `op`: its output and the CPU time of the
/// calls into the guest (the rest of the wall time is the host's copies and Arrow IPC).
fn in_sandbox(
    job: &Job,
    op: u32,
    name: &str,
    input: &[RecordBatch],
) -> Result<(Vec<RecordBatch>, Duration)> {
    let mut instance = job.module.start(op, name, &job.args)?;
    let mut output = Vec::new();
    for batch in input {
        output.extend(instance.push(batch)?);
    }
    output.extend(instance.finish()?);
    Ok((output, instance.cpu_time()))
}

/// The same calls through the SDK's entry points compiled natively (the bytes a module gets and
/// gives, decoded as the host decodes them); the rows it emitted.
fn natively(job: &Job, op: u32, input: &[RecordBatch]) -> Result<usize> {
    let args = job.args.to_bytes();
    check_status(quarry_sdk::abi::start(job.native, op, &args))?;
    let mut rows = 0;
    for batch in input {
        let bytes = quarry_sdk::ipc::encode(batch.schema_ref(), std::slice::from_ref(batch))?;
        rows += output_rows(quarry_sdk::abi::push(bytes))?;
    }
    rows += output_rows(quarry_sdk::abi::finish())?;
    Ok(rows)
}

fn check_status(result: Vec<u8>) -> Result<Vec<u8>> {
    match result.split_first() {
        Some((&quarry_sdk::abi::STATUS_OK, payload)) => Ok(payload.to_vec()),
        Some((_, message)) => bail!("{}", String::from_utf8_lossy(message)),
        None => bail!("an empty result"),
    }
}

fn output_rows(result: Vec<u8>) -> Result<usize> {
    let payload = check_status(result)?;
    if payload.is_empty() {
        return Ok(0);
    }
    let (_, batches) = quarry_sdk::ipc::decode(&payload)?;
    Ok(batches.iter().map(RecordBatch::num_rows).sum())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// An operator's name without the closures' source paths.
fn short(name: &str) -> String {
    let mut short = String::new();
    for part in name.split(" → ") {
        if !short.is_empty() {
            short.push('→');
        }
        short.push_str(part.split(" at ").next().unwrap_or(part));
    }
    short.chars().take(44).collect()
}
