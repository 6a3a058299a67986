//! `quarry submit`: runs a Rust job (a wasm32 module built with `quarry-sdk`).
//!
//! Without `--driver` the job runs in this process over `--data-dir`, as `quarry sql` does.
//! With `--driver` the module goes to the driver (`PutModule`), which asks it for its results
//! (`PlanRustJob`); each result then runs as a job on the cluster (a Flight `DoGet` naming it),
//! like a query. Rows print in `--format` on stdout (or `-o`), counts and rows written on stderr.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use quarry_client::{Client, JobResult};
use quarry_jobs::rust_job::{SinkOutput, describe_sink};
use quarry_sdk::dag::{JobArgs, Sink};
use quarry_wasm::{Runtime, RuntimeConfig};

use crate::cli::{DriverConnection, StoreArgs, SubmitArgs};
use crate::output::write_result;
use crate::store::Access;

pub async fn run(
    data_dir: &Path,
    driver: &DriverConnection,
    store_args: &StoreArgs,
    args: SubmitArgs,
) -> anyhow::Result<()> {
    if args.detach && driver.url.is_none() {
        anyhow::bail!(
            "--detach leaves the job running on a driver's cluster: name one with --driver URL \
             (or QUARRY_DRIVER), such as the one `quarry up` starts"
        );
    }
    let source = crate::job_build::load(&args.job)?;
    if driver.url.is_some() {
        if args.explain {
            anyhow::bail!(
                "--explain plans the job in this process; run it without --driver (the stages \
                 the driver cuts show in `quarry job ID`)"
            );
        }
        let remote = driver.connect(data_dir).await?;
        return run_remote(remote, source.bytes, &args).await;
    }
    let job_args = JobArgs::new(args.args.clone());
    let started = Instant::now();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let (store, session) = super::open_store(data_dir, store_args, Access::Write).await?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(crate::daemon::compiled_modules_dir(data_dir)),
        ..RuntimeConfig::default()
    })
    .context("starting the WASM runtime")?;
    let bytes = source.bytes;
    let module = tokio::task::spawn_blocking(move || runtime.load(&bytes))
        .await
        .context("loading the job module")?
        .with_context(|| format!("the job module {}", source.path.display()))?;
    if args.explain {
        let dag = quarry_jobs::rust_job::plan_dag(&module, &job_args).await?;
        let sinks = quarry_jobs::rust_job::lower(&session, &module, &dag, &job_args).await?;
        for (i, sink) in sinks.iter().enumerate() {
            println!("result {i}: {}", sink.describe());
            println!(
                "{}",
                datafusion::physical_plan::displayable(sink.plan.as_ref()).indent(true)
            );
        }
        return Ok(());
    }
    let bar = crate::progress::spinner("running the job");
    let label = format!("job {}", &module.hash().to_string()[..12]);
    let outputs = quarry_jobs::rust_job::run(&session, &module, &job_args, &label).await;
    bar.finish_and_clear();
    let outputs = outputs?;
    print_outputs(&outputs, &args)?;
    let cpu_ns: u64 = outputs.iter().map(|o| o.wasm_cpu_ns).sum();
    eprintln!(
        "Job {} finished in {:.2} s; its closures took {} of CPU.",
        module.hash(),
        started.elapsed().as_secs_f64(),
        cpu_seconds(cpu_ns)
    );
    drop(store);
    Ok(())
}

/// Sends the module to the driver and runs the job's results one after another on its cluster,
/// each printed as it ends with the rows it wrote and the CPU time its closures took.
async fn run_remote(mut client: Client, module: Vec<u8>, args: &SubmitArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let job = client.upload_job(module, &args.args).await?;
    if args.detach {
        let submitted = client.submit_detached(&job).await?;
        println!("{}", submitted.job_id);
        eprintln!(
            "Job {} runs on the cluster ({} result(s); each after the first starts as the one \
             before ends, as a job labelled `{}`). Follow it with `quarry job {}`; `quarry jobs` \
             lists them all.",
            submitted.job_id, submitted.results, submitted.label, submitted.job_id
        );
        return Ok(());
    }
    let mut out = output_file(args)?;
    let mut cpu_ns = 0;
    for (i, result) in job.results.iter().enumerate() {
        let progress = crate::remote::watch_progress(&client);
        let rows = client.run_job_result(&job, i).await?.collect().await;
        drop(progress);
        let rows = rows?;
        let report = client.last_job_report().await?;
        let output = SinkOutput {
            sink: sink_of(result),
            schema: rows.schema,
            batches: rows.batches,
            wasm_cpu_ns: report.as_ref().map_or(0, |r| {
                u64::try_from(r.wasm_cpu.as_nanos()).unwrap_or(u64::MAX)
            }),
        };
        cpu_ns += output.wasm_cpu_ns;
        print_output(&output, job.results.len(), args, &mut out)?;
        if let Some(report) = report {
            eprintln!(
                "  job {}: {}",
                report.job_id,
                rows_summary(&report.rows_read, &report.rows_written)
            );
        }
    }
    out.flush()?;
    eprintln!(
        "Job {} finished on the cluster in {:.2} s; its closures took {} of CPU. \
         `quarry job ID` shows each job's stages.",
        job.hash,
        started.elapsed().as_secs_f64(),
        cpu_seconds(cpu_ns)
    );
    Ok(())
}

/// `read 10 from iot.readings, wrote 3 to synth.daily`.
fn rows_summary(read: &BTreeMap<String, u64>, written: &BTreeMap<String, u64>) -> String {
    let read = read
        .iter()
        .map(|(t, n)| format!("read {} from {t}", group_digits(*n)));
    let written = written
        .iter()
        .map(|(t, n)| format!("wrote {} to {t}", group_digits(*n)));
    let parts: Vec<String> = read.chain(written).collect();
    if parts.is_empty() {
        "no rows read or written".into()
    } else {
        parts.join(", ")
    }
}

/// A result as the job's DAG names it.
fn sink_of(result: &JobResult) -> Sink {
    match result {
        JobResult::Write { table } => Sink::Write {
            table: table.clone(),
        },
        JobResult::Collect => Sink::Collect,
        JobResult::Count => Sink::Count,
        JobResult::Take { n } => Sink::Take { n: *n },
    }
}

/// Where rows go: `-o FILE`, or stdout.
fn output_file(args: &SubmitArgs) -> anyhow::Result<Box<dyn Write>> {
    Ok(match &args.output {
        Some(path) => {
            Box::new(File::create(path).with_context(|| format!("creating {}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    })
}

/// Prints each sink's result: rows on stdout (or `-o`), numbers on stderr.
fn print_outputs(outputs: &[SinkOutput], args: &SubmitArgs) -> anyhow::Result<()> {
    let mut out = output_file(args)?;
    for output in outputs {
        print_output(output, outputs.len(), args, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

fn print_output(
    output: &SinkOutput,
    results: usize,
    args: &SubmitArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match &output.sink {
        Sink::Write { table } => eprintln!(
            "wrote {} rows to {table}",
            output.number().unwrap_or_default()
        ),
        Sink::Count => eprintln!("count: {}", output.number().unwrap_or_default()),
        Sink::Collect | Sink::Take { .. } => {
            if results > 1 {
                eprintln!("{}:", describe_sink(&output.sink));
            }
            write_result(args.format, &output.schema, &output.batches, out)?;
        }
    }
    Ok(())
}

/// Nanoseconds of CPU as `1.234 s`.
fn cpu_seconds(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

/// `1234567` as `1,234,567`.
fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `name=value` of `--arg`.
pub fn parse_arg(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("'{text}' is not NAME=VALUE")),
    }
}
