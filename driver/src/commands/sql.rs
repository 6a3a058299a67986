//! `quarry sql`: statements from -e, -f, stdin, or the interactive shell.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use quarry_sql::{QuarrySession, QueryOutput};

use crate::cli::{DriverConnection, SqlArgs, StoreArgs};
use crate::output::{OutputFormat, write_result};

pub async fn run(
    data_dir: &Path,
    driver: &DriverConnection,
    store: &StoreArgs,
    args: SqlArgs,
) -> anyhow::Result<()> {
    let mut backend = super::backend(data_dir, driver, store).await?;
    if let Some(keyspace) = &args.keyspace {
        quarry_core::schema::validate_identifier("keyspace", keyspace)
            .context("--keyspace (or QUARRY_KEYSPACE)")?;
        backend
            .execute(&format!("USE {keyspace}"))
            .await
            .context("--keyspace (or QUARRY_KEYSPACE)")?;
    }
    let mut scripts = args.execute.clone();
    if let Some(file) = &args.file {
        scripts.push(
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?,
        );
    }
    if scripts.is_empty() {
        if std::io::stdin().is_terminal() && args.output.is_none() {
            return crate::repl::run(&mut backend, data_dir, args.format).await;
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading statements from stdin")?;
        scripts.push(text);
    }
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => {
            Box::new(File::create(path).with_context(|| format!("creating {}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    for script in scripts {
        for statement in quarry_core::ddl::split_statements(&script) {
            let started = Instant::now();
            backend
                .execute_and_print(&statement, args.format, &mut out)
                .await?;
            if args.timing {
                eprintln!("Time: {:.3} s", started.elapsed().as_secs_f64());
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Prints a result: rows in the chosen format on `out`, messages on stderr (so that piped output
/// holds only data).
pub fn print_output(
    output: &QueryOutput,
    format: OutputFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match &output.message {
        Some(message) => eprintln!("{message}"),
        None => write_result(format, &output.schema, &output.batches, out)?,
    }
    Ok(())
}

/// Runs one statement in the shell or the demo and prints it as a table on stdout.
pub async fn run_and_print(session: &QuarrySession, sql: &str) -> anyhow::Result<QueryOutput> {
    let output = session.execute(sql).await?;
    let mut stdout = std::io::stdout().lock();
    match &output.message {
        Some(message) => writeln!(stdout, "{message}")?,
        None => write_result(
            OutputFormat::Table,
            &output.schema,
            &output.batches,
            &mut stdout,
        )?,
    }
    Ok(output)
}
