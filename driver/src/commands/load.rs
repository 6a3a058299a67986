//! `quarry load`: files into a table, read on all cores, stored in one all-or-nothing write; or a
//! live input (a pipe, a growing file) committed as it flows.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use quarry_core::schema::{TableDef, TableName};
use quarry_ingest::{
    Format, ReadOptions, Source, SourceData, StreamOptions, read_sources, read_sources_in_parts,
    stream_source,
};
use quarry_store::{StagedWrite, Store};

use crate::cli::{DriverConnection, LoadArgs, StoreArgs};
use crate::progress::rows_bar;
use crate::store::Access;
use quarry_client::Client;

pub async fn run(
    data_dir: &Path,
    driver: &DriverConnection,
    store: &StoreArgs,
    args: LoadArgs,
) -> anyhow::Result<()> {
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
            let (opened, _session) = super::open_store(data_dir, store, Access::Write).await?;
            let store = opened.store();
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
    if args.streams() {
        let [file] = args.files.as_slice() else {
            bail!(
                "a stream reads one input (a file or '-'); got {}",
                args.files.len()
            );
        };
        return stream(
            &name,
            &target,
            table,
            Source::from_arg(file),
            options,
            &args,
            rejects,
        )
        .await;
    }
    let started = Instant::now();
    // Every file is read and checked before anything is visible: a bad file leaves the table
    // exactly as it was. Into this process's store, rows past `--part-size` of a file are
    // staged as they are read (durable, not yet visible) and published together at the end, so
    // that memory stays bounded whatever the input's size; a small load is one write.
    let sources: Vec<Source> = args.files.iter().map(|f| Source::from_arg(f)).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bar = rows_bar(None, "reading");
    let progress_bar = bar.clone();
    let staging = match &target {
        Target::Local(store) => Some(Staging::new(store.clone(), name.clone())),
        Target::Remote(_) => None,
    };
    let stager = staging.clone();
    let part_size = args.part_size;
    // Parsing and casting are CPU work: off the async runtime, one file per core.
    let read = tokio::task::spawn_blocking(move || {
        let progress = |rows| progress_bar.set_position(rows);
        match &stager {
            Some(staging) => read_sources_in_parts(
                &sources,
                &table,
                &options,
                threads,
                &progress,
                usize::try_from(part_size).unwrap_or(usize::MAX),
                &|source, batches| staging.stage(source, batches),
            ),
            None => read_sources(&sources, &table, &options, threads, &progress),
        }
    })
    .await?;
    bar.finish_and_clear();
    let read = match read {
        Ok(read) => read,
        Err(e) => {
            if let Some(staging) = &staging {
                staging.discard();
            }
            return Err(e.into());
        }
    };
    let mut remainders = Vec::new();
    let (mut total_rows, mut total_rejects) = (0u64, 0u64);
    for data in read {
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
        remainders.push(data.batches);
    }
    let spin = crate::progress::spinner("storing");
    let summary = match (&target, staging) {
        (Target::Local(_), Some(staging)) => staging.finish(remainders).await?,
        (Target::Local(store), None) => store.write(&name, remainders.concat()).await?,
        (Target::Remote(driver), _) => quarry_store::WriteSummary {
            rows: driver.load(&name.to_string(), remainders.concat()).await?,
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
    Local(std::sync::Arc<dyn Store>),
    Remote(Client),
}

/// A load's rows staged in parts as they are read, and published together at its end: the
/// parts of each file in order, the files in the order given, so that a later row wins over an
/// earlier one with the same primary key, as in one write.
#[derive(Debug, Clone)]
struct Staging {
    store: std::sync::Arc<dyn Store>,
    table: TableName,
    statement: u64,
    runtime: tokio::runtime::Handle,
    /// (source index, part) in the order each source's parts were staged.
    parts: std::sync::Arc<std::sync::Mutex<Vec<(usize, StagedWrite)>>>,
}

impl Staging {
    fn new(store: std::sync::Arc<dyn Store>, table: TableName) -> Self {
        Staging {
            store,
            table,
            statement: quarry_jobs::write::new_statement_id(),
            runtime: tokio::runtime::Handle::current(),
            parts: Default::default(),
        }
    }

    /// Stages one part of source `source`; called from the reading threads.
    fn stage(&self, source: usize, batches: Vec<RecordBatch>) -> Result<(), String> {
        let part = self
            .runtime
            .block_on(self.store.stage_write(&self.table, self.statement, batches))
            .map_err(|e| e.to_string())?;
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((source, part));
        Ok(())
    }

    /// Publishes everything: the staged parts and each source's rows after its last part. With
    /// nothing staged, one write. Returns what was stored (the store merges parts that repeat
    /// keys, so its row count leaves out the replaced rows).
    async fn finish(
        self,
        remainders: Vec<Vec<RecordBatch>>,
    ) -> anyhow::Result<quarry_store::WriteSummary> {
        let staged = std::mem::take(&mut *self.parts.lock().unwrap_or_else(|e| e.into_inner()));
        if staged.is_empty() {
            return Ok(self.store.write(&self.table, remainders.concat()).await?);
        }
        let result = async {
            let mut parts = staged;
            for (source, batches) in remainders.into_iter().enumerate() {
                if !batches.is_empty() {
                    let part = self
                        .store
                        .stage_write(&self.table, self.statement, batches)
                        .await?;
                    parts.push((source, part));
                }
            }
            // Stable: a source's parts keep the order they were read in.
            parts.sort_by_key(|(source, _)| *source);
            let parts = parts.into_iter().map(|(_, part)| part).collect();
            self.store.commit_writes(&self.table, parts).await
        }
        .await;
        match result {
            Ok(summary) => Ok(summary),
            Err(e) => {
                self.discard();
                Err(e.into())
            }
        }
    }

    /// Removes what was staged (the load failed).
    fn discard(&self) {
        if let Err(e) = self.store.discard_writes(&self.table, self.statement) {
            tracing::warn!(error = %e, table = %self.table, "removing a failed load's staged parts");
        }
    }
}

impl Target {
    /// Stores one commit's rows, durably, and makes them visible to queries (a local store
    /// publishes them to readers at once); returns the rows stored.
    async fn commit(&self, name: &TableName, batches: Vec<RecordBatch>) -> anyhow::Result<u64> {
        match self {
            Target::Local(store) => {
                let rows = store.write(name, batches).await?.rows;
                store.publish().await?;
                Ok(rows)
            }
            Target::Remote(driver) => Ok(driver.load(&name.to_string(), batches).await?),
        }
    }
}

/// Rows waiting for a commit when streaming and `--commit-rows` is not given.
const DEFAULT_COMMIT_ROWS: u64 = 100_000;

/// `quarry load` of a live input: rows are committed every `--commit-rows` rows or
/// `--commit-secs` seconds, whichever comes first, until the input ends or Ctrl-C.
async fn stream(
    name: &TableName,
    target: &Target,
    table: TableDef,
    source: Source,
    options: ReadOptions,
    args: &LoadArgs,
    mut rejects: Option<(std::path::PathBuf, BufWriter<File>)>,
) -> anyhow::Result<()> {
    let commit_rows = args.commit_rows.unwrap_or(DEFAULT_COMMIT_ROWS);
    let every = Duration::from_secs_f64(args.commit_secs.unwrap_or(1.0));
    let stream = StreamOptions {
        follow: args.follow,
        // Rows wait in the reader at most a quarter of the commit interval.
        tick: (every / 4).clamp(Duration::from_millis(10), Duration::from_millis(250)),
        ..StreamOptions::default()
    };
    let stop = stream.stop.clone();
    let source_name = source.to_string();
    // Parsing runs on a blocking thread and hands chunks over a short queue: a slow store
    // slows the reader down instead of letting rows pile up in memory.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<SourceData>(4);
    let reader = tokio::task::spawn_blocking(move || {
        stream_source(&source, &table, &options, &stream, &mut |data| {
            Ok(tx.blocking_send(data).is_ok())
        })
    });
    let started = Instant::now();
    let bar = rows_bar(None, "committed");
    let (mut pending, mut pending_rows) = (Vec::new(), 0u64);
    let (mut stored, mut rejected, mut commits) = (0u64, 0u64, 0u64);
    let mut last_commit = Instant::now();
    let stop_signal = crate::commands::daemons::stop_signal();
    tokio::pin!(stop_signal);
    let mut interrupted = false;
    loop {
        let wait = every.saturating_sub(last_commit.elapsed());
        tokio::select! {
            data = rx.recv() => match data {
                Some(data) => {
                    if let Some((_, writer)) = rejects.as_mut() {
                        for reject in &data.rejects {
                            writeln!(writer, "{}", reject.to_json_line())?;
                        }
                    }
                    rejected += data.rejects.len() as u64;
                    pending_rows += data.rows;
                    pending.extend(data.batches);
                }
                None => break,
            },
            () = tokio::time::sleep(wait) => {}
            () = &mut stop_signal, if !interrupted => {
                interrupted = true;
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                // A followed file ends at its current end; a pipe may never end: stop reading it.
                if !args.follow {
                    break;
                }
            }
        }
        if pending_rows >= commit_rows || (pending_rows > 0 && last_commit.elapsed() >= every) {
            stored += target.commit(name, std::mem::take(&mut pending)).await?;
            pending_rows = 0;
            commits += 1;
            last_commit = Instant::now();
            bar.set_position(stored);
            tracing::info!(rows = stored, commits, "committed");
        }
    }
    if pending_rows > 0 {
        stored += target.commit(name, pending).await?;
        commits += 1;
    }
    bar.finish_and_clear();
    if let Some((_, writer)) = rejects.as_mut() {
        writer.flush()?;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let summary = format!(
        "loaded {stored} rows from {source_name} into {name} in {commits} commit(s) over \
         {secs:.1} s{}",
        if rejected > 0 {
            format!("; {rejected} rows rejected")
        } else {
            String::new()
        }
    );
    if interrupted && !args.follow {
        // The reader may be blocked on the pipe; the process ends with it.
        eprintln!("{summary} (stopped by Ctrl-C)");
        return Ok(());
    }
    match reader.await? {
        Ok(()) => {
            eprintln!("{summary}");
            if let Some((path, _)) = &rejects
                && rejected > 0
            {
                eprintln!("rejected rows, with reasons: {}", path.display());
            }
            Ok(())
        }
        Err(e) => {
            eprintln!(
                "{summary} before this error; the rows read since the last commit were not stored"
            );
            Err(e.into())
        }
    }
}

/// A table's definition as the driver's catalog has it (its CQL, parsed back).
async fn remote_table(driver: &mut Client, name: &TableName) -> anyhow::Result<TableDef> {
    let output = driver
        .sql(&format!("DESCRIBE KEYSPACE {}", name.keyspace))
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
