//! `quarry submit`: runs a Rust job (a wasm32 module built with `quarry-sdk`).
//!
//! Without `--driver` the job runs in this process over `--data-dir`, as `quarry sql` does;
//! each result is printed as it is known: rows in `--format` on stdout (or `-o`), counts and
//! rows written on stderr.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use quarry_jobs::rust_job::{SinkOutput, describe_sink};
use quarry_sdk::dag::{JobArgs, Sink};
use quarry_wasm::{Runtime, RuntimeConfig};

use crate::cli::{DriverConnection, SubmitArgs};
use crate::output::write_result;

pub async fn run(
    data_dir: &Path,
    driver: &DriverConnection,
    args: SubmitArgs,
) -> anyhow::Result<()> {
    if driver.url.is_some() {
        anyhow::bail!(
            "submitting to a driver (--driver) is not supported yet; run without --driver to \
             run the job in this process over --data-dir"
        );
    }
    let source = crate::job_build::load(&args.job)?;
    let job_args = JobArgs::new(args.args.clone());
    let started = Instant::now();
    let (store, session) = super::open(data_dir)?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(store.dir().join("modules").join("compiled")),
        ..RuntimeConfig::default()
    })
    .context("starting the WASM runtime")?;
    let bytes = source.bytes;
    let module = tokio::task::spawn_blocking(move || runtime.load(&bytes))
        .await
        .context("loading the job module")?
        .with_context(|| format!("the job module {}", source.path.display()))?;
    let bar = crate::progress::spinner("running the job");
    let label = format!("job {}", &module.hash().to_string()[..12]);
    let outputs = quarry_jobs::rust_job::run(&session, &module, &job_args, &label).await;
    bar.finish_and_clear();
    let outputs = outputs?;
    print_outputs(&outputs, &args)?;
    eprintln!(
        "Job {} finished in {:.2} s.",
        module.hash(),
        started.elapsed().as_secs_f64()
    );
    drop(store);
    Ok(())
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
        match &output.sink {
            Sink::Write { table } => eprintln!(
                "wrote {} rows to {table}",
                output.number().unwrap_or_default()
            ),
            Sink::Count => eprintln!("count: {}", output.number().unwrap_or_default()),
            Sink::Collect | Sink::Take { .. } => {
                if outputs.len() > 1 {
                    eprintln!("{}:", describe_sink(&output.sink));
                }
                write_result(args.format, &output.schema, &output.batches, &mut out)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// `name=value` of `--arg`.
pub fn parse_arg(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("'{text}' is not NAME=VALUE")),
    }
}
