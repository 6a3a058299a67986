//! `quarry load`: files into a table, read on all cores, stored in one all-or-nothing write.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use quarry_core::schema::{TableDef, TableName};
use quarry_ingest::{Format, ReadOptions, Source, read_sources};
use quarry_store::Store;

use crate::cli::{DriverConnection, LoadArgs};
use crate::progress::rows_bar;
use crate::remote::RemoteDriver;

pub async fn run(data_dir: &Path, driver: &DriverConnection, args: LoadArgs) -> anyhow::Result<()> {
    let name = TableName::parse(&args.table)?;
    let format = args
        .format
        .as_deref()
        .map(str::parse::<Format>)
        .transpose()?;
    if args.files.iter().any(|f| f == "-") && format.is_none() {
        bail!("reading stdin needs --format (csv, ndjson or parquet)");
    }
    // Where the rows go: this process's embedded store, or a driver (which owns the store).
    let (target, table) = match &driver.url {
        Some(_) => {
            let mut driver = driver.connect(data_dir).await?;
            let table = remote_table(&mut driver, &name).await?;
            (Target::Remote(driver), table)
        }
        None => {
            let (store, _session) = super::open(data_dir)?;
            let table = store.table(&name)?;
            (Target::Local(store), table)
        }
    };
    let mut rejects = match &args.reject_file {
        Some(path) => Some((
            path.clone(),
            BufWriter::new(
                File::create(path).with_context(|| format!("creating {}", path.display()))?,
            ),
        )),
        None => None,
    };
    let options = ReadOptions {
        format,
        keep_rejects: rejects.is_some(),
        ..ReadOptions::default()
    };
    let started = Instant::now();
    // Every file is read and checked before anything is stored: a bad file leaves the table
    // exactly as it was. Then all rows go to the store in one write (one run).
    let sources: Vec<Source> = args.files.iter().map(|f| Source::from_arg(f)).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bar = rows_bar(None, "reading");
    let progress_bar = bar.clone();
    // Parsing and casting are CPU work: off the async runtime, one file per core.
    let read = tokio::task::spawn_blocking(move || {
        read_sources(&sources, &table, &options, threads, &|rows| {
            progress_bar.set_position(rows)
        })
    })
    .await?;
    bar.finish_and_clear();
    let mut batches = Vec::new();
    let (mut total_rows, mut total_rejects) = (0u64, 0u64);
    for data in read? {
        let rejected = data.rejects.len() as u64;
        if let Some((_, writer)) = rejects.as_mut() {
            for reject in &data.rejects {
                writeln!(writer, "{}", reject.to_json_line())?;
            }
        }
        eprintln!(
            "read {} rows from {}{}",
            data.rows,
            data.source,
            if rejected > 0 {
                format!(" ({rejected} rejected)")
            } else {
                String::new()
            }
        );
        total_rows += data.rows;
        total_rejects += rejected;
        batches.extend(data.batches);
    }
    let spin = crate::progress::spinner("storing");
    let summary = match &target {
        Target::Local(store) => store.write(&name, batches).await?,
        Target::Remote(driver) => quarry_store::WriteSummary {
            rows: driver.load(&name.to_string(), batches).await?,
        },
    };
    spin.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "loaded {} rows into {name} in {secs:.2} s ({:.0} rows/s){}",
        summary.rows,
        total_rows as f64 / secs,
        if summary.rows < total_rows {
            format!(
                "; {} rows repeated an earlier row's primary key and replaced it",
                total_rows - summary.rows
            )
        } else {
            String::new()
        }
    );
    if let Some((path, mut writer)) = rejects {
        writer.flush()?;
        if total_rejects > 0 {
            eprintln!("rejected rows, with reasons: {}", path.display());
        }
    }
    Ok(())
}

enum Target {
    Local(std::sync::Arc<quarry_store::EmbeddedStore>),
    Remote(RemoteDriver),
}

/// A table's definition as the driver's catalog has it (its CQL, parsed back).
async fn remote_table(driver: &mut RemoteDriver, name: &TableName) -> anyhow::Result<TableDef> {
    let output = driver
        .execute(&format!("DESCRIBE KEYSPACE {}", name.keyspace))
        .await?;
    let text = output.message.unwrap_or_default();
    for statement in quarry_core::ddl::split_statements(&text) {
        if let Ok(quarry_core::ddl::Statement::CreateTable { def, .. }) =
            quarry_core::ddl::parse_statement(&statement)
            && def.table_name() == *name
        {
            return Ok(def);
        }
    }
    bail!("the driver has no table {name}; `quarry tables --driver URL` lists them")
}
