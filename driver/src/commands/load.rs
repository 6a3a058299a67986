//! `quarry load`: files into a table, one all-or-nothing write per file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use quarry_core::schema::TableName;
use quarry_ingest::{Format, ReadOptions, Source, read_source};
use quarry_store::Store;

use crate::cli::LoadArgs;
use crate::progress::rows_bar;

pub async fn run(data_dir: &Path, args: LoadArgs) -> anyhow::Result<()> {
    let name = TableName::parse(&args.table)?;
    let format = args
        .format
        .as_deref()
        .map(str::parse::<Format>)
        .transpose()?;
    if args.files.iter().any(|f| f == "-") && format.is_none() {
        bail!("reading stdin needs --format (csv, ndjson or parquet)");
    }
    let (store, _session) = super::open(data_dir)?;
    let table = store.table(&name)?;
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
    let mut batches = Vec::new();
    let (mut total_rows, mut total_rejects) = (0u64, 0u64);
    for file in &args.files {
        let source = if file == "-" {
            Source::Stdin
        } else {
            Source::File(PathBuf::from(file))
        };
        let file_started = Instant::now();
        let bar = rows_bar(None, "reading");
        let table_for_read = table.clone();
        let options_for_read = options.clone();
        let source_for_read = source.clone();
        let progress_bar = bar.clone();
        // Parsing and casting are CPU work: keep them off the async runtime.
        let data = tokio::task::spawn_blocking(move || {
            read_source(
                &source_for_read,
                &table_for_read,
                &options_for_read,
                &mut |rows| progress_bar.set_position(rows),
            )
        })
        .await??;
        bar.finish_and_clear();
        let rejected = data.rejects.len() as u64;
        if let Some((_, writer)) = rejects.as_mut() {
            for reject in &data.rejects {
                writeln!(writer, "{}", reject.to_json_line())?;
            }
        }
        eprintln!(
            "read {} rows from {source} in {:.2} s{}",
            data.rows,
            file_started.elapsed().as_secs_f64(),
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
    let summary = store.write(&name, batches).await?;
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
