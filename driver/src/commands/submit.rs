//! `quarry submit`: runs a Rust job (a wasm32 module built with `quarry-sdk`).
//!
//! Without `--driver` the job runs in this process over `--data-dir`, as `quarry sql` does.
//! With `--driver` the module goes to the driver (`PutModule`), which asks it for its results
//! (`PlanRustJob`); each result then runs as a job on the cluster (a Flight `DoGet` naming it),
//! like a query. Rows print in `--format` on stdout (or `-o`), counts and rows written on stderr.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
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
    let fuel: u64 = outputs.iter().map(|o| o.wasm_fuel).sum();
    eprintln!(
        "Job {} finished in {:.2} s; its closures ran {} instructions.",
        module.hash(),
        started.elapsed().as_secs_f64(),
        group_digits(fuel)
    );
    drop(store);
    Ok(())
}

/// Sends the module to the driver and runs the job's results one after another on its cluster.
async fn run_remote(
    mut driver: crate::remote::RemoteDriver,
    module: Vec<u8>,
    args: &SubmitArgs,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let hash = driver.put_module(module).await?;
    if args.detach {
        let submitted = driver.submit_rust_job(&hash, &args.args).await?;
        println!("{}", submitted.job_id);
        eprintln!(
            "Job {} runs on the cluster ({} result(s); each after the first starts as the one \
             before ends, as a job labelled `{}`). Follow it with `quarry job {}`; `quarry jobs` \
             lists them all.",
            submitted.job_id, submitted.results, submitted.label, submitted.job_id
        );
        return Ok(());
    }
    let sinks = driver.plan_rust_job(&hash, &args.args).await?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => {
            Box::new(File::create(path).with_context(|| format!("creating {}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    for (i, sink) in sinks.iter().enumerate() {
        let mut result = driver
            .run_rust_job_sink(&hash, &args.args, i as u32)
            .await?;
        let mut batches = Vec::new();
        while let Some(batch) = result.next().await? {
            batches.push(batch);
        }
        let output = SinkOutput {
            sink: sink_of(sink),
            schema: result.schema.clone(),
            batches,
            wasm_fuel: 0,
        };
        print_output(&output, sinks.len(), args, &mut out)?;
    }
    out.flush()?;
    eprintln!(
        "Job {hash} finished on the cluster in {:.2} s; `quarry jobs` lists its {} job(s), \
         `quarry job ID` their stages and the instructions its closures ran (wasm_fuel).",
        started.elapsed().as_secs_f64(),
        sinks.len()
    );
    Ok(())
}

/// A sink back from its one-line description.
fn sink_of(line: &str) -> Sink {
    match line.split_once(' ') {
        Some(("write", table)) => Sink::Write {
            table: table.to_string(),
        },
        Some(("take", n)) => Sink::Take {
            n: n.parse().unwrap_or_default(),
        },
        _ if line == "count" => Sink::Count,
        _ => Sink::Collect,
    }
}

/// Prints each sink's result: rows on stdout (or `-o`), numbers on stderr.
fn print_outputs(outputs: &[SinkOutput], args: &SubmitArgs) -> anyhow::Result<()> {
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => {
            Box::new(File::create(path).with_context(|| format!("creating {}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
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
