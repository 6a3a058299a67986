//! The embedded store: Quarry's default, one data directory on one machine.
//!
//! ```text
//!   small write ──▶ log (fsync) ──▶ memtable chunk ──flush──▶ run ─┐
//!   large write ─────────────────────────────────────────────────▶ run ─┼─▶ compaction ─▶ one run
//!                                                                        │
//!   MANIFEST.json lists keyspaces, tables, views and runs; a run is listed only once its files are fsynced
//! ```
//!
//! Layout of the data directory:
//!
//! ```text
//!   MANIFEST.json                     catalog (keyspaces, tables, views) and runs (replaced atomically)
//!   LOCK                              held by the one writer process (readers take no lock)
//!   wal/000000000001.wal              write-ahead-log segments not yet flushed
//!   data/<keyspace>/<table>-<id>/run-<n>-<i>.parquet
//!   data/<keyspace>/<table>-<id>/staged-<statement>-<pid>-<n>-<i>.parquet   a worker's part of a
//!                                                                          statement, not yet listed
//! ```
//!
//! Every write and run carries a sequence number; reads resolve equal primary keys in favour of
//! the larger one (CQL's last write wins). A run's files are sorted by token with row groups cut at
//! shard boundaries, so a scan prunes by shard without paying for a file per shard.
//!
//! Any number of read-only processes (workers) may open the directory beside the writer with
//! [`EmbeddedStore::open_reader`]: a reader reloads the manifest when it changes and reads runs
//! only, so it sees rows once the writer has flushed them ([`EmbeddedStore::flush`]; the driver
//! flushes before distributing a query). `reader.rs` says how it notices a new manifest.
//!
//! A distributed `INSERT ... SELECT` writes from the workers: each worker writes its part as
//! sorted, fsynced run files that the manifest does not list yet ([`Store::stage_write`] works on
//! a reader), and the writer lists every part as a run in one manifest commit
//! ([`Store::commit_writes`]), so the statement becomes visible all at once. The parts of a
//! statement that fails are deleted by [`Store::discard_writes`]; any left behind (a crash) are
//! unlisted files, removed when a writer next opens the directory.

mod data_file;
mod deletes;
mod keys;
mod manifest;
mod memtable;
mod reader;
mod scan;
mod sorted_rows;
mod threads;
mod wal;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use quarry_core::schema::{KeyspaceDef, TableDef, TableName, ViewDef};
use quarry_core::shard_map::ShardMap;

use crate::conform::conform_batches;
use crate::error::{Error, Result};
use crate::names::Names;
use crate::store::{
    Compaction, ScanPlan, ScanRequest, StagedWrite, Store, TableStats, WriteSummary,
};
use data_file::{DataFile, DataFileRef, Layout};
use deletes::Deletes;
use keys::{KeySet, Tagged};
use manifest::{Manifest, RunEntry, TableEntry, create_dir_durably};
use memtable::MemChunk;
use reader::Reader;
use scan::{MemKeys, Run, TableSnapshot};
use sorted_rows::{sort_dedup, with_tokens};
use threads::{Niceness, StepPool, WritePool, lower_thread_priority};
use wal::Wal;

pub use sorted_rows::TOKEN_COLUMN;

/// Tunables of the embedded store. The defaults suit the demo and the benchmarks.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Flush the memtable to a run once it holds this many rows.
    pub memtable_flush_rows: usize,
    /// Writes of at least this many rows skip the log and become a run directly (a bulk load).
    pub bulk_write_rows: usize,
    /// A row group ends at the first shard boundary after this many rows.
    pub rows_per_group: usize,
    /// A run file ends at the first shard boundary after this many rows; files are written in
    /// parallel.
    pub rows_per_file: usize,
    /// Compact a table once more runs than this overlap on some shard (the parts of one
    /// distributed write, which never overlap one another, count as one).
    pub max_runs: usize,
    /// Rewrite a run once newer writes superseded more than this share of its rows.
    pub max_dead_fraction: f64,
    /// Flush and compact on background threads (otherwise inline, in the writing call), and
    /// write on the store's own threads, all below the process's CPU priority (see
    /// `threads.rs`).
    pub background: bool,
    /// Background compactions that may run at once, each on runs the others are not merging
    /// (as Cassandra's `concurrent_compactors` and RocksDB's background jobs). At most one of a
    /// table's merges is large (more than [`EmbeddedOptions::small_merge_rows`]): while it
    /// rewrites large old runs, the others merge only the small runs flushes keep adding, as
    /// ScyllaDB's size tiers compact side by side. Two by default: with one, a merge of the large
    /// runs kept flushes' runs waiting for seconds on end (overlap depth up to 49-59 in the
    /// README's three-minute "Sustained ingestion" runs, 18-24 with two).
    pub compaction_threads: usize,
    /// Once more runs than this overlap on some shard of a table, the compactions the store
    /// starts itself run their heavy steps at the writers' level rather than in the idle class,
    /// and stop waiting for steps of theirs still there (see `threads.rs`). The idle class has
    /// no floor: beside other busy processes it gets almost no CPU, and a table it compacts
    /// would grow deeper, and its scans slower, for as long as they run. ScyllaDB's compaction
    /// backlog controller likewise gives compaction more shares as its backlog grows. 32 by
    /// default, above the depths the README's sustained-ingestion runs reach beside one busy
    /// process (25 at most), where the idle class serves queries better.
    pub raise_compaction_depth: usize,
    /// How long a compaction the store started itself waits for a heavy step in the idle class
    /// before it gives up on it and runs it, and its later steps, at the writers' level. A step
    /// (a window of about [`EmbeddedOptions::rows_per_file`] rows) takes a second or two when
    /// the idle class gets a core; this covers a table that wants compacting but is not deep
    /// enough for [`EmbeddedOptions::raise_compaction_depth`], which the idle class would
    /// otherwise leave unmerged while other processes keep the cores busy.
    pub idle_step_patience: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            memtable_flush_rows: 262_144,
            bulk_write_rows: 65_536,
            rows_per_group: 524_288,
            rows_per_file: 1_048_576,
            max_runs: 4,
            max_dead_fraction: 0.1,
            background: true,
            compaction_threads: 2,
            raise_compaction_depth: 32,
            idle_step_patience: Duration::from_secs(30),
        }
    }
}

impl EmbeddedOptions {
    /// The most rows a merge may take beside a running large one: twice the flushes' rows
    /// that make a table too deep, so that it merges fresh runs and leaves older ones to the
    /// large merge's tier.
    pub fn small_merge_rows(&self) -> u64 {
        (2 * self.max_runs.max(1) * self.memtable_flush_rows.max(1)) as u64
    }
}

/// The embedded store; see the module docs. Opened either as the directory's one writer
/// ([`EmbeddedStore::open`]) or as one of any number of readers ([`EmbeddedStore::open_reader`]).
#[derive(Debug)]
pub struct EmbeddedStore {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// Owns the directory (holds `LOCK`): log, memtable, flushes, compaction.
    Writer {
        inner: Arc<Inner>,
        /// The flush thread and the compaction thread, when `options.background`.
        background: Vec<JoinHandle<()>>,
        /// The threads writes run on, when `options.background` (otherwise Tokio's blocking
        /// pool).
        writes: Option<WritePool>,
    },
    /// Reads what the writer has published in the manifest; never writes or deletes.
    Reader(Box<Reader>),
}

#[derive(Debug)]
enum Job {
    Flush,
    Compact(TableName),
    /// Answered once the jobs queued before it are done: flushes first, then the compactions
    /// they asked for (the flush thread passes it on to the compaction thread).
    Barrier(Sender<()>),
}

/// The queues of the background threads. Compaction has threads of its own, so that a long one
/// never delays the flushes that keep the memtable small.
#[derive(Debug)]
struct Queues {
    flush: Sender<Job>,
    compact: Sender<Job>,
    /// Tables with new memtable rows, for the cover thread.
    cover: Sender<TableName>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: EmbeddedOptions,
    state: Mutex<State>,
    wal: Mutex<Wal>,
    flush_lock: Mutex<()>,
    /// Compaction jobs taken off the queue and not finished (a barrier waits for them).
    compactions_running: Mutex<usize>,
    /// Compaction jobs queued and not finished, including those queued after a barrier.
    compactions_queued: AtomicUsize,
    compaction_finished: Condvar,
    /// Paired with `state`: notified when a compaction releases its runs
    /// ([`TableState::compacting`]) or a run is installed that had a sequence number pending.
    claims_released: Condvar,
    /// Held while a run is added or replaced: working out what it supersedes needs the runs
    /// to stay as they are.
    commit_lock: Mutex<()>,
    /// Where the compactions the store starts itself run their heavy steps
    /// ([`Inner::heavy_step`]).
    step_pool: StepPool,
    /// Where background flushes sort and write their runs ([`Inner::flush_runs`]).
    flush_steps: StepPool,
    /// Flushes asked for (on the caller) waiting for the flush lock: a background flush
    /// waiting for the idle class meanwhile stops waiting and does its work itself.
    flushes_asked: AtomicUsize,
    /// Set as the store closes: the compactions it drains no longer wait for the idle class.
    closing: AtomicBool,
    /// Small writes waiting for the log (group commit).
    queued: Mutex<Vec<QueuedWrite>>,
    jobs: Mutex<Option<Queues>>,
    /// Held for the store's lifetime: one writer per data directory (readers take no lock).
    _lock: File,
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    next_id: u64,
    wal_checkpoint: u64,
    keyspaces: BTreeMap<String, KeyspaceDef>,
    tables: BTreeMap<TableName, TableState>,
    views: BTreeMap<TableName, ViewDef>,
}

#[derive(Debug)]
struct TableState {
    id: u64,
    def: TableDef,
    shards: ShardMap,
    runs: Vec<Arc<Run>>,
    /// Acknowledged writes not yet in a run.
    chunks: Vec<Arc<MemChunk>>,
    /// Chunks a flush in progress is turning into a run (still visible to scans).
    frozen: Vec<Arc<MemChunk>>,
    /// The keys of `chunks` and `frozen`; replaced whenever they change.
    mem_keys: Arc<MemKeys>,
    /// The key hashes of `chunks` and `frozen` (and of rows dropped from them since the last
    /// flush: a stale hash only costs a closer look).
    mem_hashes: HashSet<i64, keys::PassThroughBuild>,
    /// What the last compaction that rewrote runs did.
    last_compaction: Option<Compaction>,
    /// Sequence numbers of the runs compactions in progress are merging.
    compacting: Vec<u64>,
    /// Whether one of those compactions is large (more than
    /// [`EmbeddedOptions::small_merge_rows`]): the others then merge small runs only.
    large_merge: bool,
    /// Sequence numbers handed to runs of this table that are being written and not installed
    /// yet (a large write takes its number first, so that writes acknowledged meanwhile win
    /// over it).
    pending: BTreeSet<u64>,
    /// Compactions asked for that wait for the runs others are merging: those then run their
    /// heavy steps at the writers' level ([`Inner::steps_raised`]), and no other starts.
    hurried: usize,
}

impl TableState {
    fn new(id: u64, def: TableDef, shards: ShardMap, runs: Vec<Arc<Run>>) -> TableState {
        TableState {
            id,
            def,
            shards,
            runs,
            chunks: Vec::new(),
            frozen: Vec::new(),
            mem_keys: Arc::default(),
            mem_hashes: HashSet::default(),
            last_compaction: None,
            compacting: Vec::new(),
            large_merge: false,
            hurried: 0,
            pending: BTreeSet::new(),
        }
    }

    /// Adds a newly acknowledged write, dropping the rows of older chunks it supersedes.
    fn add_chunk(&mut self, chunk: MemChunk) -> Result<()> {
        // Most writes bring new keys only: the memtable's hashes say so without looking at its
        // chunks.
        let repeats = chunk.hashes.iter().any(|h| self.mem_hashes.contains(h));
        self.mem_hashes.extend(chunk.hashes.iter().copied());
        if repeats {
            let keys = KeySet::new(
                &self.def,
                &[Tagged::of_rows(
                    &self.def,
                    &chunk.rows,
                    &chunk.hashes,
                    chunk.seq,
                )],
            )?;
            self.drop_superseded_chunk_rows(&keys)?;
        }
        self.chunks.push(Arc::new(chunk));
        self.mem_keys = Arc::new(self.mem_keys.next());
        Ok(())
    }

    /// Replaces chunks by copies without the rows whose keys `keys` holds with a newer tag
    /// (sequence number) than the chunk's.
    fn drop_superseded_chunk_rows(&mut self, keys: &KeySet) -> Result<()> {
        let def = &self.def;
        for chunk in self.chunks.iter_mut().chain(self.frozen.iter_mut()) {
            if chunk.num_rows() == 0 || !keys.may_overlap(chunk.min_token, chunk.max_token) {
                continue;
            }
            let mut rows: Vec<u32> = keys
                .matches_in_batch(def, &chunk.rows, &chunk.hashes)?
                .into_iter()
                .filter(|&(_, key)| keys.tag(key) > chunk.seq)
                .map(|(row, _)| row)
                .collect();
            if rows.is_empty() {
                continue;
            }
            rows.sort_unstable();
            rows.dedup();
            *chunk = Arc::new(chunk.without(&rows)?);
            self.mem_keys = Arc::new(self.mem_keys.next());
        }
        Ok(())
    }
}

/// Data files and deletion vectors already open, reused when a reader loads a newer manifest.
#[derive(Debug, Default)]
struct OpenFiles {
    data: HashMap<String, DataFileRef>,
    deletes: HashMap<String, Arc<Deletes>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; the state stays usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`, replaying the write-ahead log.
    pub fn open(dir: impl AsRef<Path>, options: EmbeddedOptions) -> Result<EmbeddedStore> {
        let dir = dir.as_ref().to_path_buf();
        create_dir_durably(&dir)?;
        let lock_path = dir.join("LOCK");
        let lock_file = File::create(&lock_path).map_err(Error::io("creating", &lock_path))?;
        if lock_file.try_lock().is_err() {
            return Err(Error::Io {
                action: "locking",
                path: dir.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "another quarry process has this data directory open; stop it or use another --data-dir",
                ),
            });
        }
        let manifest = match Manifest::load(&dir)? {
            Some(manifest) => manifest,
            None => {
                refuse_data_without_manifest(&dir)?;
                // From here on a missing manifest means a lost one.
                let manifest = Manifest::default();
                manifest.commit(&dir)?;
                manifest
            }
        };
        let mut state = State::from_manifest(&dir, &manifest, &OpenFiles::default())?;
        let live_files = live_files(&state);
        remove_orphans(&dir.join("data"), &live_files)?;

        let wal_dir = dir.join("wal");
        let records = wal::replay(&wal_dir, state.wal_checkpoint)?;
        let mut replayed = 0usize;
        for record in records {
            state.next_seq = state.next_seq.max(record.seq + 1);
            if let Some(table) = state.tables.values_mut().find(|t| t.id == record.table_id)
                && let Some(chunk) = MemChunk::new(&table.def, record.seq, record.batch)?
            {
                replayed += chunk.num_rows();
                table.add_chunk(chunk)?;
            }
        }
        let last_segment = wal::segments(&wal_dir)?.last().copied().unwrap_or(0);
        if replayed == 0 {
            // Nothing acknowledged is in the old segments (they are empty or end in a torn,
            // unacknowledged record): drop them rather than let them pile up across restarts.
            wal::remove_through(&wal_dir, last_segment)?;
        }
        let wal = Wal::create(&wal_dir, last_segment.max(state.wal_checkpoint) + 1)?;
        if replayed > 0 {
            tracing::info!(rows = replayed, "replayed the write-ahead log");
        }

        let step_pool = StepPool::new("quarry-store-compact-step", options.compaction_threads);
        let flush_steps = StepPool::new("quarry-store-flush-step", 1);
        let inner = Arc::new(Inner {
            dir,
            options,
            state: Mutex::new(state),
            wal: Mutex::new(wal),
            flush_lock: Mutex::new(()),
            compactions_running: Mutex::new(0),
            compactions_queued: AtomicUsize::new(0),
            compaction_finished: Condvar::new(),
            claims_released: Condvar::new(),
            commit_lock: Mutex::new(()),
            step_pool,
            flush_steps,
            flushes_asked: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            queued: Mutex::new(Vec::new()),
            jobs: Mutex::new(None),
            _lock: lock_file,
        });
        if replayed > 0 {
            // Recovered rows go to a run now, so that the log does not grow across restarts.
            inner.flush()?;
        }
        let (background, writes) = if inner.options.background {
            let (flush, flushes) = channel::<Job>();
            let (compact, compactions) = channel::<Job>();
            let (cover, written) = channel::<TableName>();
            *lock(&inner.jobs) = Some(Queues {
                flush,
                compact,
                cover,
            });
            let mut threads = background_threads(&inner, "quarry-store-flush", flushes, 1, false)?;
            threads.push(cover_thread(&inner, written)?);
            threads.extend(background_threads(
                &inner,
                "quarry-store-compact",
                compactions,
                inner.options.compaction_threads.max(1),
                true,
            )?);
            let writes = WritePool::start(WRITE_THREADS)
                .map_err(Error::io("starting the write threads of", &inner.dir))?;
            (threads, Some(writes))
        } else {
            (Vec::new(), None)
        };
        Ok(EmbeddedStore {
            mode: Mode::Writer {
                inner,
                background,
                writes,
            },
        })
    }

    /// Opens the store in `dir` read-only, beside a writer process that has it open with
    /// [`EmbeddedStore::open`] (or none). A reader takes no lock, has no log and no background
    /// thread, and never deletes a file. Before each catalog call and scan plan it reloads
    /// `MANIFEST.json` if the file changed (reusing the data files it already has open), so it
    /// sees what the writer has published: rows the writer holds only in its log and memtable are
    /// invisible until the writer calls [`EmbeddedStore::flush`]. Writes, DDL, `flush` and
    /// `compact` fail with [`Error::ReadOnly`]. A directory without a manifest (or without the
    /// directory) is an empty catalog. `options` are not used.
    pub fn open_reader(dir: impl AsRef<Path>, options: EmbeddedOptions) -> Result<EmbeddedStore> {
        let reader = Reader::open(dir.as_ref().to_path_buf(), options)?;
        Ok(EmbeddedStore {
            mode: Mode::Reader(Box::new(reader)),
        })
    }

    /// True for a store opened with [`EmbeddedStore::open_reader`].
    pub fn is_read_only(&self) -> bool {
        matches!(self.mode, Mode::Reader(_))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        match &self.mode {
            Mode::Writer { inner, .. } => &inner.dir,
            Mode::Reader(reader) => reader.dir(),
        }
    }

    /// Turns every memtable into runs now, which publishes them to readers.
    pub fn flush(&self) -> Result<()> {
        self.writer(|| "flush".into())?.flush()
    }

    /// Merges all runs of a table into one now; returns what the compaction did, or `None` when
    /// there was nothing to merge.
    pub fn compact(&self, table: &TableName) -> Result<Option<Compaction>> {
        self.writer(|| format!("compact {table}"))?
            .compact(table, true, StepsOn::Caller)
    }

    /// Waits until background flushes and compactions queued so far are done, and the
    /// compactions those queue in turn (a compaction that leaves the table wanting more queues
    /// another); at once on a reader, which has none. While writes go on, it may wait as long as
    /// they keep queueing work.
    pub fn wait_idle(&self) {
        self.wait_idle_until(None);
    }

    /// [`EmbeddedStore::wait_idle`] for at most `timeout` (background work goes on when it
    /// gives up); returns whether the store settled.
    pub fn wait_idle_for(&self, timeout: Duration) -> bool {
        self.wait_idle_until(Some(Instant::now() + timeout))
    }

    fn wait_idle_until(&self, deadline: Option<Instant>) -> bool {
        let Mode::Writer { inner, .. } = &self.mode else {
            return true;
        };
        loop {
            let (tx, rx) = channel();
            if !inner.schedule(Job::Barrier(tx)) {
                return true;
            }
            let passed = match deadline {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(deadline) => {
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                }
            };
            match passed {
                Ok(_) if inner.compactions_queued.load(Ordering::SeqCst) == 0 => return true,
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    /// What the store holds for one table.
    pub fn table_stats(&self, name: &TableName) -> Result<TableStats> {
        let state = self.state()?;
        let table = state.table(name)?;
        let files: Vec<_> = table.runs.iter().flat_map(|r| r.files.iter()).collect();
        Ok(TableStats {
            runs: table.runs.len(),
            files: files.len(),
            row_groups: files.iter().map(|f| f.groups.len()).sum(),
            run_rows: files.iter().map(|f| f.rows()).sum(),
            deleted_rows: table.runs.iter().map(|r| r.deleted_rows()).sum(),
            overlap_depth: scan::overlap_depth(&table.runs),
            bytes: table
                .runs
                .iter()
                .flat_map(|r| {
                    let data = r.files.iter().map(|f| f.path.clone());
                    data.chain(r.deletes.iter().flatten().map(|d| d.path().to_path_buf()))
                })
                .filter_map(|path| fs::metadata(path).ok())
                .map(|m| m.len())
                .sum(),
            last_compaction: table.last_compaction,
            memtable_rows: table
                .chunks
                .iter()
                .chain(&table.frozen)
                .map(|c| c.num_rows() as u64)
                .sum(),
        })
    }
}

impl EmbeddedStore {
    /// The writer's internals, or [`Error::ReadOnly`] naming `action` on a reader.
    fn writer(&self, action: impl FnOnce() -> String) -> Result<&Arc<Inner>> {
        match &self.mode {
            Mode::Writer { inner, .. } => Ok(inner),
            Mode::Reader(_) => Err(Error::ReadOnly { action: action() }),
        }
    }

    fn options(&self) -> &EmbeddedOptions {
        match &self.mode {
            Mode::Writer { inner, .. } => &inner.options,
            Mode::Reader(reader) => reader.options(),
        }
    }

    /// The catalog and runs; a reader first reloads the manifest if it changed.
    fn state(&self) -> Result<MutexGuard<'_, State>> {
        match &self.mode {
            Mode::Writer { inner, .. } => Ok(lock(&inner.state)),
            Mode::Reader(reader) => reader.state(),
        }
    }

    /// [`EmbeddedStore::state`] for calls that cannot fail: a reader that cannot reload the
    /// manifest answers from the one it loaded last.
    fn state_or_last(&self) -> MutexGuard<'_, State> {
        match &self.mode {
            Mode::Writer { inner, .. } => lock(&inner.state),
            Mode::Reader(reader) => reader.state().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not reload the manifest; using the one loaded last");
                reader.last_loaded()
            }),
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // A reader has nothing to flush and no thread to stop.
        let Mode::Writer {
            inner,
            background,
            writes,
        } = &mut self.mode
        else {
            return;
        };
        // Writes first: they may queue flushes.
        if let Some(writes) = writes {
            writes.stop();
        }
        // Closing the channels ends the background threads once their queues are drained; the
        // compactions left run at the writers' level, since whoever closes the store waits.
        inner.closing.store(true, Ordering::SeqCst);
        lock(&inner.jobs).take();
        for handle in background.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a background thread of the store panicked");
            }
        }
        if let Err(e) = inner.flush() {
            tracing::warn!(error = %e, "could not flush on close; the log will be replayed on next open");
        }
    }
}

impl State {
    /// What `manifest` describes, with empty memtables. Each listed data file's footer is read,
    /// unless `open_files` (keyed by the path the manifest lists) already holds it.
    fn from_manifest(dir: &Path, manifest: &Manifest, open: &OpenFiles) -> Result<State> {
        let mut state = State {
            next_seq: manifest.next_seq,
            next_id: manifest.next_id,
            wal_checkpoint: manifest.wal_checkpoint,
            keyspaces: manifest
                .keyspaces
                .iter()
                .map(|k| (k.name.clone(), k.clone()))
                .collect(),
            tables: BTreeMap::new(),
            views: BTreeMap::new(),
        };
        for view in &manifest.views {
            if !state.keyspaces.contains_key(&view.keyspace) {
                return Err(Error::Corrupt {
                    path: dir.join(manifest::MANIFEST_FILE),
                    problem: format!("view {} has no keyspace", view.view_name()),
                });
            }
            state.views.insert(view.view_name(), view.clone());
        }
        for entry in &manifest.tables {
            let keyspace =
                state
                    .keyspaces
                    .get(&entry.def.keyspace)
                    .ok_or_else(|| Error::Corrupt {
                        path: dir.join(manifest::MANIFEST_FILE),
                        problem: format!("table {} has no keyspace", entry.def.table_name()),
                    })?;
            let shards = ShardMap::new(keyspace.shards);
            let read_schema = sorted_rows::read_stored_schema(&entry.def);
            let mut runs = Vec::new();
            for run in &entry.runs {
                let files = run
                    .files
                    .iter()
                    .map(|f| match open.data.get(f) {
                        Some(file) => Ok(file.clone()),
                        None => DataFile::open(dir, f, &shards, &read_schema).map(Arc::new),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let deletes = run
                    .files
                    .iter()
                    .map(|f| {
                        run.deletes
                            .get(f)
                            .map(|d| match open.deletes.get(d) {
                                Some(deletes) => Ok(deletes.clone()),
                                None => Deletes::read(dir, d).map(Arc::new),
                            })
                            .transpose()
                    })
                    .collect::<Result<Vec<_>>>()?;
                runs.push(Arc::new(Run {
                    seq: run.seq,
                    files,
                    deletes,
                }));
            }
            let mut table = TableState::new(entry.id, entry.def.clone(), shards, runs);
            table.last_compaction = entry.last_compaction;
            state.tables.insert(entry.def.table_name(), table);
        }
        Ok(state)
    }

    /// Every data file and deletion vector the state lists, keyed by its path relative to the
    /// data directory.
    fn open_files(&self) -> OpenFiles {
        let runs = || self.tables.values().flat_map(|t| t.runs.iter());
        OpenFiles {
            data: runs()
                .flat_map(|r| r.files.iter())
                .map(|f| (f.relative.clone(), f.clone()))
                .collect(),
            deletes: runs()
                .flat_map(|r| r.deletes.iter().flatten())
                .map(|d| (d.relative.clone(), d.clone()))
                .collect(),
        }
    }

    /// What a scan planned now sees of a table.
    fn snapshot(&self, name: &TableName) -> Result<TableSnapshot> {
        let table = self.table(name)?;
        Ok(TableSnapshot {
            def: table.def.clone(),
            shards: table.shards,
            runs: table.runs.clone(),
            chunks: table.chunks.iter().chain(&table.frozen).cloned().collect(),
            mem_keys: table.mem_keys.clone(),
        })
    }

    fn table(&self, name: &TableName) -> Result<&TableState> {
        self.tables
            .get(name)
            .ok_or_else(|| self.no_such_table(name))
    }

    /// Runs `f` with the catalog's names, for errors that say what exists.
    fn with_names<T>(&self, f: impl FnOnce(Names<'_>) -> T) -> T {
        let keyspaces: Vec<String> = self.keyspaces.keys().cloned().collect();
        let tables: Vec<TableName> = self.tables.keys().cloned().collect();
        let views: Vec<TableName> = self.views.keys().cloned().collect();
        f(Names {
            keyspaces: &keyspaces,
            tables: &tables,
            views: &views,
        })
    }

    fn no_such_table(&self, name: &TableName) -> Error {
        self.with_names(|n| n.no_such_table(name))
    }

    fn no_such_view(&self, name: &TableName) -> Error {
        self.with_names(|n| n.no_such_view(name))
    }

    fn name_taken(&self, name: &TableName) -> Option<Error> {
        self.with_names(|n| n.name_taken(name))
    }

    fn no_such_keyspace(&self, name: &str) -> Error {
        self.with_names(|n| n.no_such_keyspace(name))
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            next_seq: self.next_seq,
            next_id: self.next_id,
            wal_checkpoint: self.wal_checkpoint,
            keyspaces: self.keyspaces.values().cloned().collect(),
            views: self.views.values().cloned().collect(),
            tables: self
                .tables
                .values()
                .map(|t| TableEntry {
                    id: t.id,
                    def: t.def.clone(),
                    last_compaction: t.last_compaction,
                    runs: t
                        .runs
                        .iter()
                        .map(|r| RunEntry {
                            seq: r.seq,
                            files: r.files.iter().map(|f| f.relative.clone()).collect(),
                            deletes: r
                                .files
                                .iter()
                                .zip(&r.deletes)
                                .filter_map(|(f, d)| {
                                    Some((f.relative.clone(), d.as_ref()?.relative.clone()))
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
            ..Manifest::default()
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// A sequence number for a run of `name` to be installed later, pending until then (see
    /// [`Pending`]).
    fn next_pending_seq(&mut self, name: &TableName) -> Result<u64> {
        self.table(name)?;
        let seq = self.next_seq();
        if let Some(table) = self.tables.get_mut(name) {
            table.pending.insert(seq);
        }
        Ok(seq)
    }

    fn memtable_rows(&self) -> usize {
        self.tables
            .values()
            .flat_map(|t| t.chunks.iter())
            .map(|c| c.num_rows())
            .sum()
    }
}

/// Deletes Parquet files under `data` that no run lists (left by a crash mid-flush or mid-load).
/// A directory without a manifest is new, unless it holds data files or log segments: then the
/// manifest was lost, and starting empty would delete the data as garbage.
fn refuse_data_without_manifest(dir: &Path) -> Result<()> {
    let data = dir.join("data");
    let files = walk_files(&data)?;
    // Empty segments hold nothing (a store opened and closed without writes leaves one).
    let wal_dir = dir.join("wal");
    let segments: Vec<u64> = wal::segments(&wal_dir)?
        .into_iter()
        .filter(|s| wal::segment_len(&wal_dir, *s).is_ok_and(|len| len > 0))
        .collect();
    if files.is_empty() && segments.is_empty() {
        return Ok(());
    }
    Err(Error::Corrupt {
        path: dir.join(manifest::MANIFEST_FILE),
        problem: format!(
            "the manifest is missing, but the data directory holds {} data file(s) and {} \
             write-ahead-log segment(s); the store will not start empty over them. Restore \
             {} from a backup, or move data/ and wal/ aside to start a new store",
            files.len(),
            segments.len(),
            manifest::MANIFEST_FILE
        ),
    })
}

/// The files the runs of `state` list: data files and deletion vectors.
fn live_files(state: &State) -> HashSet<PathBuf> {
    state
        .tables
        .values()
        .flat_map(|t| t.runs.iter())
        .flat_map(|r| {
            let data = r.files.iter().map(|f| f.path.clone());
            let deletes = r.deletes.iter().flatten().map(|d| d.path().to_path_buf());
            data.chain(deletes)
        })
        .collect()
}

/// Every file under `dir` (none when it does not exist).
fn walk_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let entries = match fs::read_dir(&at) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("listing", &at)(e)),
        };
        for entry in entries {
            let path = entry.map_err(Error::io("listing", &at))?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

fn remove_orphans(data: &Path, live: &HashSet<PathBuf>) -> Result<()> {
    let entries = match fs::read_dir(data) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("listing", data)(e)),
    };
    for entry in entries {
        let path = entry.map_err(Error::io("listing", data))?.path();
        if path.is_dir() {
            remove_orphans(&path, live)?;
        } else if !live.contains(&path) {
            tracing::info!(path = %path.display(), "removing a file no run lists");
            match fs::remove_file(&path) {
                // Gone already: an earlier store on this directory, closed while a step it had
                // given up on still held the file, deleted it as that step was discarded.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other.map_err(Error::io("removing", &path))?,
            }
        }
    }
    Ok(())
}

/// Where a table's files live, relative to the data directory.
fn table_dir(def: &TableDef, table_id: u64) -> String {
    format!("data/{}/{}-{table_id}", def.keyspace, def.name)
}

/// How file names of staged (written, not yet listed) parts begin.
const STAGED_PREFIX: &str = "staged-";

/// How file names of one statement's staged parts begin.
fn staged_prefix(statement: u64) -> String {
    format!("{STAGED_PREFIX}{statement:016x}-")
}

fn layout(options: &EmbeddedOptions) -> Layout {
    Layout {
        rows_per_group: options.rows_per_group,
        rows_per_file: options.rows_per_file,
        cut_at_gaps: false,
    }
}

/// A write's rows in stored form (token column added), sorted by token and primary key, each
/// primary key once (the last row wins); `None` when there are none.
fn sorted_rows_of(def: &TableDef, batches: Vec<RecordBatch>) -> Result<Option<RecordBatch>> {
    let stored = conform_batches(def, batches)?
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| with_tokens(def, b))
        .collect::<Result<Vec<_>>>()?;
    if stored.is_empty() {
        return Ok(None);
    }
    sort_dedup(def, &stored).map(Some)
}

/// Writes one part of a distributed write as files no run lists yet (see the module docs).
fn stage(
    dir: &Path,
    layout: Layout,
    (name, id, def, shards): (TableName, u64, TableDef, ShardMap),
    statement: u64,
    batches: Vec<RecordBatch>,
) -> Result<StagedWrite> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut staged = StagedWrite {
        table: name,
        rows: 0,
        files: Vec::new(),
        table_id: id,
    };
    let Some(rows) = sorted_rows_of(&def, batches)? else {
        return Ok(staged);
    };
    // Unique across the processes sharing the directory (a random id per process: PIDs repeat
    // across containers) and within one (counter).
    static PROCESS: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());
    let stem = format!(
        "{}{}-{}",
        staged_prefix(statement),
        *PROCESS,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    // The staged files are opened when the statement commits, by whichever process commits it:
    // their keys are read back then.
    staged.files = data_file::write_run(
        dir,
        &table_dir(&def, id),
        &stem,
        &def,
        &rows,
        &shards,
        layout,
    )?
    .into_iter()
    .map(|file| file.relative)
    .collect();
    staged.rows = rows.num_rows() as u64;
    Ok(staged)
}

impl Inner {
    fn layout(&self) -> Layout {
        layout(&self.options)
    }

    /// Queues background work (a barrier on the flush thread's queue); returns false when there
    /// is no background thread.
    fn schedule(&self, job: Job) -> bool {
        match lock(&self.jobs).as_ref() {
            Some(queues) => match job {
                Job::Compact(_) => {
                    self.compactions_queued.fetch_add(1, Ordering::SeqCst);
                    let sent = queues.compact.send(job).is_ok();
                    if !sent {
                        self.compactions_queued.fetch_sub(1, Ordering::SeqCst);
                    }
                    sent
                }
                Job::Flush | Job::Barrier(_) => queues.flush.send(job).is_ok(),
            },
            None => false,
        }
    }

    /// The next job of a background thread's queue; `None` once it is closed and empty. A
    /// compaction job is counted as running before the queue is let go, so that a barrier
    /// behind it, taken by another thread, waits for it.
    fn next_job(&self, queue: &Mutex<Receiver<Job>>) -> Option<Job> {
        let queue = lock(queue);
        let job = queue.recv().ok()?;
        if matches!(job, Job::Compact(_)) {
            *lock(&self.compactions_running) += 1;
        }
        Some(job)
    }

    /// Runs one job of a background thread; `compacting` on a compaction thread.
    fn run_job(&self, job: Job, compacting: bool) {
        let result = match job {
            // Every write that finds the memtable past the threshold asks for a flush, until one
            // takes the memtable. Those asked for meanwhile find it under the threshold again
            // and do nothing: each would turn the rows of the moment since the last into a run of
            // its own, and queued behind a slow flush they made runs of 20,000 rows, which
            // deepened the table by three or four runs a second.
            Job::Flush => {
                if lock(&self.state).memtable_rows() >= self.options.memtable_flush_rows {
                    self.flush_on(StepsOn::StepPool(&Cell::new(false)))
                } else {
                    Ok(())
                }
            }
            Job::Compact(table) => {
                let _counted = CompactionJob(self);
                let waited_out = Cell::new(false);
                self.compact(&table, false, StepsOn::StepPool(&waited_out))
                    .map(|_| ())
            }
            Job::Barrier(reply) => {
                let passed_on = !compacting
                    && lock(&self.jobs)
                        .as_ref()
                        .is_some_and(|q| q.compact.send(Job::Barrier(reply.clone())).is_ok());
                if !passed_on {
                    if compacting {
                        // The compactions queued before the barrier may run on other threads.
                        let mut running = lock(&self.compactions_running);
                        while *running > 0 {
                            running = self
                                .compaction_finished
                                .wait(running)
                                .unwrap_or_else(PoisonError::into_inner);
                        }
                    }
                    let _ = reply.send(());
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "background store work failed; it will be retried on the next write");
        }
    }

    fn commit(&self, state: &State) -> Result<()> {
        state.manifest().commit(&self.dir)
    }

    fn create_keyspace(&self, def: KeyspaceDef, if_not_exists: bool) -> Result<bool> {
        def.validate()?;
        let mut state = lock(&self.state);
        if state.keyspaces.contains_key(&def.name) {
            return if if_not_exists {
                Ok(false)
            } else {
                Err(crate::names::keyspace_exists(&def.name))
            };
        }
        state.keyspaces.insert(def.name.clone(), def);
        if let Err(e) = self.commit(&state) {
            // Keep memory and disk in agreement: the keyspace was not created.
            let manifest = Manifest::load(&self.dir).ok().flatten().unwrap_or_default();
            state.keyspaces = manifest
                .keyspaces
                .into_iter()
                .map(|k| (k.name.clone(), k))
                .collect();
            return Err(e);
        }
        Ok(true)
    }

    fn drop_keyspace(&self, name: &str, if_exists: bool) -> Result<bool> {
        let mut state = lock(&self.state);
        if !state.keyspaces.contains_key(name) {
            return if if_exists {
                Ok(false)
            } else {
                Err(state.no_such_keyspace(name))
            };
        }
        let tables: Vec<TableName> = state
            .tables
            .keys()
            .filter(|t| t.keyspace == name)
            .cloned()
            .collect();
        let mut removed = Vec::new();
        for t in tables {
            if let Some(table) = state.tables.remove(&t) {
                removed.push(table);
            }
        }
        let views: Vec<TableName> = state
            .views
            .keys()
            .filter(|v| v.keyspace == name)
            .cloned()
            .collect();
        let dropped_views: Vec<ViewDef> =
            views.iter().filter_map(|v| state.views.remove(v)).collect();
        let def = state.keyspaces.remove(name);
        if let Err(e) = self.commit(&state) {
            // Keep memory and disk in agreement: nothing was dropped.
            if let Some(def) = def {
                state.keyspaces.insert(name.to_string(), def);
            }
            for table in removed {
                state.tables.insert(table.def.table_name(), table);
            }
            for view in dropped_views {
                state.views.insert(view.view_name(), view);
            }
            return Err(e);
        }
        retire(removed);
        Ok(true)
    }

    fn create_table(&self, def: TableDef, if_not_exists: bool) -> Result<bool> {
        def.validate()?;
        let mut state = lock(&self.state);
        let Some(keyspace) = state.keyspaces.get(&def.keyspace) else {
            return Err(state.no_such_keyspace(&def.keyspace));
        };
        let shards = ShardMap::new(keyspace.shards);
        let name = def.table_name();
        if let Some(taken) = state.name_taken(&name) {
            return if if_not_exists && state.tables.contains_key(&name) {
                Ok(false)
            } else {
                Err(taken)
            };
        }
        let id = state.next_id();
        state
            .tables
            .insert(name.clone(), TableState::new(id, def, shards, Vec::new()));
        if let Err(e) = self.commit(&state) {
            state.tables.remove(&name);
            return Err(e);
        }
        Ok(true)
    }

    fn drop_table(&self, name: &TableName, if_exists: bool) -> Result<bool> {
        let mut state = lock(&self.state);
        let Some(table) = state.tables.remove(name) else {
            // IF EXISTS does not hide that the name is a view's.
            return if if_exists && !state.views.contains_key(name) {
                Ok(false)
            } else {
                Err(state.no_such_table(name))
            };
        };
        if let Err(e) = self.commit(&state) {
            state.tables.insert(name.clone(), table);
            return Err(e);
        }
        retire(vec![table]);
        Ok(true)
    }

    fn create_view(&self, def: ViewDef, or_replace: bool) -> Result<bool> {
        def.validate()?;
        let mut state = lock(&self.state);
        if !state.keyspaces.contains_key(&def.keyspace) {
            return Err(state.no_such_keyspace(&def.keyspace));
        }
        let name = def.view_name();
        if let Some(taken) = state.name_taken(&name)
            && !(or_replace && state.views.contains_key(&name))
        {
            return Err(taken);
        }
        let previous = state.views.insert(name.clone(), def);
        if let Err(e) = self.commit(&state) {
            // Keep memory and disk in agreement: nothing changed.
            match &previous {
                Some(previous) => state.views.insert(name, previous.clone()),
                None => state.views.remove(&name),
            };
            return Err(e);
        }
        Ok(previous.is_some())
    }

    fn drop_view(&self, name: &TableName, if_exists: bool) -> Result<bool> {
        let mut state = lock(&self.state);
        let Some(view) = state.views.remove(name) else {
            // IF EXISTS does not hide that the name is a table's.
            return if if_exists && !state.tables.contains_key(name) {
                Ok(false)
            } else {
                Err(state.no_such_view(name))
            };
        };
        if let Err(e) = self.commit(&state) {
            state.views.insert(name.clone(), view);
            return Err(e);
        }
        Ok(true)
    }

    fn write(&self, name: &TableName, batches: Vec<RecordBatch>) -> Result<WriteSummary> {
        let (id, def) = {
            let state = lock(&self.state);
            let table = state.table(name)?;
            (table.id, table.def.clone())
        };
        let Some(rows) = sorted_rows_of(&def, batches)? else {
            return Ok(WriteSummary::default());
        };
        let summary = WriteSummary {
            rows: rows.num_rows() as u64,
        };
        if rows.num_rows() >= self.options.bulk_write_rows {
            self.write_run(name, id, &def, rows)?;
            return Ok(summary);
        }
        let hashes = keys::key_hashes(&def, &rows)?.values().to_vec();
        // Group commit: the write joins the queue; whoever holds the log next (this caller or
        // one already waiting) appends everything queued with one sync, then makes it readable.
        let (reply, done) = std::sync::mpsc::sync_channel::<Result<usize>>(1);
        lock(&self.queued).push(QueuedWrite {
            name: name.clone(),
            id,
            rows,
            hashes,
            reply,
        });
        self.commit_queued();
        let memtable_rows = done
            .recv()
            .map_err(|_| Error::Internal("a queued write got no answer".into()))??;
        let threshold = self.options.memtable_flush_rows;
        if memtable_rows >= threshold.saturating_mul(STALL_FLUSHES) {
            // The background thread is behind (a long compaction): this writer flushes itself
            // rather than let the memtable grow without bound.
            self.flush()?;
        } else if memtable_rows >= threshold && !self.schedule(Job::Flush) {
            self.flush()?;
        }
        Ok(summary)
    }

    /// Appends every queued write to the log with one sync and adds them to the memtable, in
    /// sequence order, then answers each; with nothing queued (an earlier holder of the log took
    /// this caller's write), returns at once.
    fn commit_queued(&self) {
        let mut wal = lock(&self.wal);
        let group = std::mem::take(&mut *lock(&self.queued));
        if group.is_empty() {
            return;
        }
        let seqs: Vec<u64> = {
            let mut state = lock(&self.state);
            group.iter().map(|_| state.next_seq()).collect()
        };
        let records: Vec<(u64, u64, &RecordBatch)> = group
            .iter()
            .zip(&seqs)
            .map(|(w, &seq)| (w.id, seq, &w.rows))
            .collect();
        if let Err(e) = wal.append_group(&records) {
            let message = e.to_string();
            let mut first = Some(e);
            for write in group {
                let error = first
                    .take()
                    .unwrap_or_else(|| Error::Internal(format!("{message} (group commit)")));
                let _ = write.reply.send(Err(error));
            }
            return;
        }
        let mut state = lock(&self.state);
        let mut results = Vec::with_capacity(group.len());
        for (write, seq) in group.iter().zip(&seqs) {
            let added = match state
                .tables
                .get_mut(&write.name)
                .filter(|t| t.id == write.id)
            {
                Some(table) => table.add_chunk(MemChunk::from_parts(
                    *seq,
                    write.rows.clone(),
                    write.hashes.clone(),
                )),
                None => Ok(()),
            };
            results.push(added);
        }
        let memtable_rows = state.memtable_rows();
        drop(state);
        drop(wal);
        if let Some(queues) = lock(&self.jobs).as_ref() {
            for write in &group {
                let _ = queues.cover.send(write.name.clone());
            }
        }
        for (write, added) in group.into_iter().zip(results) {
            let _ = write.reply.send(added.map(|()| memtable_rows));
        }
    }

    /// Writes sorted rows as a new run and lists it in the manifest.
    fn write_run(
        &self,
        name: &TableName,
        id: u64,
        def: &TableDef,
        rows: RecordBatch,
    ) -> Result<()> {
        // The sequence number is taken before the files are written: writes acknowledged in the
        // meantime are newer, and win over this run's rows with the same keys.
        let (shards, file_id, seq) = {
            let mut state = lock(&self.state);
            let shards = state.table(name)?.shards;
            (shards, state.next_id(), state.next_pending_seq(name)?)
        };
        let pending = Pending {
            inner: self,
            table: name.clone(),
            seqs: vec![seq],
        };
        let files = write_files(&self.dir, self.layout(), def, id, file_id, &shards, &rows)?;
        let keys = || key_set_of_rows(def, &rows, seq);
        let how = Install {
            drop_chunk_rows: true,
            ..Install::default()
        };
        let compact = self.install(name, id, vec![NewRun { seq, files }], &keys, how);
        drop(pending);
        self.after_new_run(name, compact?)
    }

    /// Adds runs to table `name` (of id `id`) in one manifest commit. Each new run supersedes
    /// the rows with its keys in older runs (marked in their deletion vectors) and, when
    /// `how.drop_chunk_rows`, in older memtable chunks; its own rows with keys of newer runs are
    /// marked in its own deletion vectors. `keys` gives the new runs' keys, tagged with their
    /// run's sequence number and numbered over the new runs' files in order; it is called only
    /// when there is something to compare them with. On failure the new files are deleted and
    /// nothing changed. Returns whether the table now wants compacting.
    fn install(
        &self,
        name: &TableName,
        id: u64,
        new: Vec<NewRun>,
        keys: &dyn Fn() -> Result<KeySet>,
        how: Install,
    ) -> Result<bool> {
        let new: Vec<NewRun> = new.into_iter().filter(|r| !r.files.is_empty()).collect();
        let abandon = |new: &[NewRun], written: &[Arc<Deletes>]| {
            for run in new {
                retire_files(&run.files);
            }
            for d in written {
                d.retire();
            }
        };
        debug_assert!(
            !threads::in_background(),
            "a background thread would hold the commit lock while flushes and writes wait for it"
        );
        let asked = Instant::now();
        let _committing = lock(&self.commit_lock);
        let locked = Instant::now();
        let found = {
            let state = lock(&self.state);
            state.tables.get(name).filter(|t| t.id == id).map(|table| {
                (
                    table.def.clone(),
                    table.runs.clone(),
                    !(table.chunks.is_empty() && table.frozen.is_empty()),
                )
            })
        };
        let Some((def, existing, has_chunks)) = found else {
            abandon(&new, &[]);
            return Err(dropped_during_write(name));
        };
        let mut written: Vec<Arc<Deletes>> = Vec::new();
        let prepared = self.supersede(
            &def,
            id,
            &existing,
            &new,
            keys,
            &how,
            has_chunks,
            &mut written,
        );
        let (keys, older, own) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                abandon(&new, &written);
                return Err(e);
            }
        };
        let searched = locked.elapsed();
        let mut state = lock(&self.state);
        let Some(table) = state.tables.get_mut(name).filter(|t| t.id == id) else {
            abandon(&new, &written);
            return Err(dropped_during_write(name));
        };
        let before = (
            table.runs.clone(),
            table.frozen.clone(),
            table.mem_keys.clone(),
        );
        let mut replaced: Vec<Arc<Deletes>> = Vec::new();
        let mut runs: Vec<Arc<Run>> = Vec::new();
        for run in &table.runs {
            if how.replaces.contains(&run.seq) {
                continue;
            }
            match older.get(&run.seq) {
                Some(deletes) => {
                    replaced.extend(run.deletes.iter().zip(deletes).filter_map(
                        |(old, new)| match (old, new) {
                            (Some(old), Some(new)) if !Arc::ptr_eq(old, new) => Some(old.clone()),
                            _ => None,
                        },
                    ));
                    runs.push(Arc::new(Run {
                        seq: run.seq,
                        files: run.files.clone(),
                        deletes: deletes.clone(),
                    }));
                }
                None => runs.push(run.clone()),
            }
        }
        let victims: Vec<Arc<Run>> = table
            .runs
            .iter()
            .filter(|r| how.replaces.contains(&r.seq))
            .cloned()
            .collect();
        for (r, run) in new.iter().enumerate() {
            let at = runs.partition_point(|x| x.seq < run.seq);
            runs.insert(
                at,
                Arc::new(Run {
                    seq: run.seq,
                    files: run.files.clone(),
                    deletes: own[r].clone(),
                }),
            );
        }
        table.runs = runs;
        let compacted_before = table.last_compaction;
        if let Some(report) = how.compaction {
            table.last_compaction = Some(report);
        }
        if !how.drain_frozen.is_empty() {
            table.frozen.retain(|c| !how.drain_frozen.contains(&c.seq));
            table.mem_keys = Arc::new(table.mem_keys.next());
        }
        if let Err(e) = self.commit(&state) {
            if let Some(table) = state.tables.get_mut(name) {
                (table.runs, table.frozen, table.mem_keys) = before;
                table.last_compaction = compacted_before;
            }
            abandon(&new, &written);
            return Err(e);
        }
        let Some(table) = state.tables.get_mut(name) else {
            return Err(dropped_during_write(name));
        };
        if !how.drain_frozen.is_empty() {
            table.mem_hashes = table
                .chunks
                .iter()
                .chain(&table.frozen)
                .flat_map(|c| c.hashes.iter().copied())
                .collect();
        }
        if how.drop_chunk_rows
            && let Some(keys) = &keys
        {
            table.drop_superseded_chunk_rows(keys)?;
        }
        // Only the replaced runs' files: a flush or compaction installing after this one may
        // have covered its new files already.
        let gone: HashSet<&str> = victims
            .iter()
            .flat_map(|r| r.files.iter().map(|f| f.relative.as_str()))
            .collect();
        table.mem_keys.retain_files(&|file| !gone.contains(file));
        let compact = wants_compaction(&table.runs, &self.options);
        drop(state);
        let held = locked.elapsed();
        if held >= SLOW_COMMIT {
            let kind = match (&how.compaction, &how.flushed) {
                (Some(_), _) => "compaction",
                (None, Some(_)) => "flush",
                (None, None) => "write",
            };
            tracing::warn!(
                table = %name,
                kind,
                rows = new.iter().flat_map(|r| &r.files).map(|f| f.rows()).sum::<u64>(),
                waited_ms = locked.duration_since(asked).as_millis() as u64,
                searched_ms = searched.as_millis() as u64,
                held_ms = held.as_millis() as u64,
                "a commit held the commit lock long; flushes and writes of the table waited behind it"
            );
        }
        for d in replaced {
            d.retire();
        }
        for run in &victims {
            retire_files(&run.files);
            for d in run.deletes.iter().flatten() {
                d.retire();
            }
        }
        Ok(compact)
    }

    /// For [`Inner::install`], before the state changes: which rows of the existing runs the new
    /// runs supersede and which of their own rows newer runs supersede, written as new versions
    /// of the deletion vectors. Returns the key set (when one was needed), the new deletion
    /// vectors of each changed existing run (by sequence number) and of each new run.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn supersede(
        &self,
        def: &TableDef,
        id: u64,
        existing: &[Arc<Run>],
        new: &[NewRun],
        keys: &dyn Fn() -> Result<KeySet>,
        how: &Install,
        has_chunks: bool,
        written: &mut Vec<Arc<Deletes>>,
    ) -> Result<(
        Option<KeySet>,
        HashMap<u64, Vec<Option<Arc<Deletes>>>>,
        Vec<Vec<Option<Arc<Deletes>>>>,
    )> {
        let newest = new.iter().map(|r| r.seq).max().unwrap_or(0);
        let others: Vec<&Arc<Run>> = existing
            .iter()
            .filter(|r| !how.replaces.contains(&r.seq) && (!how.newer_only || r.seq > newest))
            .collect();
        let mut own: Vec<Vec<Option<Arc<Deletes>>>> =
            new.iter().map(|r| vec![None; r.files.len()]).collect();
        let mut changed: HashMap<u64, Vec<Option<Arc<Deletes>>>> = HashMap::new();
        let version = |file: &DataFileRef,
                       old: Option<&Arc<Deletes>>,
                       rows: Vec<u32>,
                       written: &mut Vec<Arc<Deletes>>|
         -> Result<Arc<Deletes>> {
            let mut bitmap = old.map(|d| d.rows.clone()).unwrap_or_default();
            bitmap.extend(rows.iter().copied());
            let n = lock(&self.state).next_id();
            let deletes = Arc::new(Deletes::write(
                &self.dir,
                format!("{}.del-{n}", file.relative),
                bitmap,
            )?);
            deletes.split_after(&file.group_starts, old.map(|d| &**d), &rows);
            written.push(deletes.clone());
            Ok(deletes)
        };
        if how.newer_only {
            // A compaction's run loses only to runs committed while it was written, which hold
            // far fewer rows than it: their keys are searched for in its files, so memory
            // follows the newer runs, never the compacted table.
            let [run] = new else {
                return Err(Error::Internal(format!(
                    "a compaction installs one run, not {}",
                    new.len()
                )));
            };
            let ahead = how.ahead.as_ref();
            let newer: Vec<(u64, DataFileRef)> = others
                .iter()
                .flat_map(|r| r.files.iter().map(|f| (r.seq, f.clone())))
                .filter(|(_, f)| ahead.is_none_or(|a| !a.files.contains(&f.relative)))
                .collect();
            let mut own_rows = superseded_by_newer(def, run, &newer)?;
            for (f, rows) in ahead.into_iter().flat_map(|a| &a.rows) {
                own_rows.entry(*f).or_default().extend(rows);
            }
            for (f, mut rows) in own_rows {
                rows.sort_unstable();
                rows.dedup();
                own[0][f] = Some(version(&run.files[f], None, rows, written)?);
            }
            if !written.is_empty() {
                manifest::sync_dir(&self.dir.join(table_dir(def, id)))?;
            }
            return Ok((None, changed, own));
        }
        // Parts of one statement may hold the same key (a large load staged in parts): a later
        // part supersedes an earlier one as a later run does.
        let among_new = new_runs_share_shards(new);
        if new.is_empty() {
            return Ok((None, changed, own));
        }
        let mut older_rows: HashMap<(u64, usize), Vec<u32>> = HashMap::new();
        let mut own_rows: HashMap<(usize, usize), Vec<u32>> = HashMap::new();
        // A flush finds the rows its chunks hide in older runs from the memtable's keys; the new
        // run's keys are searched for only in newer runs (large writes committed meanwhile).
        let searched: Vec<&Arc<Run>> = match (&how.flushed, new) {
            (Some(flushed), [run]) => {
                let (older, newer): (Vec<&Arc<Run>>, Vec<&Arc<Run>>) =
                    others.iter().copied().partition(|r| r.seq < run.seq);
                older_rows = flushed_hidden(def, &older, flushed)?;
                newer
            }
            _ => others.clone(),
        };
        let keys = if searched.is_empty() && !among_new && !(how.drop_chunk_rows && has_chunks) {
            None
        } else {
            Some(keys()?)
        };
        if let Some(keys) = &keys {
            // Key rows are numbered over the new runs' files in order.
            let mut starts: Vec<(u64, usize, usize)> = Vec::new();
            let mut at = 0u64;
            for (r, run) in new.iter().enumerate() {
                for (f, file) in run.files.iter().enumerate() {
                    starts.push((at, r, f));
                    at += file.rows();
                }
            }
            if at != keys.len() as u64 {
                return Err(Error::Internal(format!(
                    "{} keys for {at} new rows",
                    keys.len()
                )));
            }
            let place = |row: u32| {
                let i = starts.partition_point(|s| s.0 <= u64::from(row)) - 1;
                let (start, r, f) = starts[i];
                (r, f, (u64::from(row) - start) as u32)
            };
            let tasks: Vec<(&Arc<Run>, usize, usize)> = searched
                .iter()
                .flat_map(|run| {
                    run.files.iter().enumerate().flat_map(move |(f, file)| {
                        (0..file.groups.len()).map(move |g| (*run, f, g))
                    })
                })
                .collect();
            let found = matches_in_groups(def, keys, &tasks, |&(run, f, g)| (&run.files[f], g))?;
            for (&(run, f, _), matches) in tasks.iter().zip(found) {
                for (row, key_row) in matches {
                    let (r, nf, own_row) = place(key_row);
                    if run.seq < new[r].seq {
                        older_rows.entry((run.seq, f)).or_default().push(row);
                    } else if run.seq > new[r].seq {
                        own_rows.entry((r, nf)).or_default().push(own_row);
                    }
                }
            }
            if among_new {
                let tasks = new_run_groups(new);
                let found =
                    matches_in_groups(def, keys, &tasks, |&(r, f, g)| (&new[r].files[f], g))?;
                for (&(r, f, _), matches) in tasks.iter().zip(found) {
                    for (row, key_row) in matches {
                        let (newer, _, _) = place(key_row);
                        if new[r].seq < new[newer].seq {
                            own_rows.entry((r, f)).or_default().push(row);
                        }
                    }
                }
            }
        }
        for ((seq, f), rows) in older_rows {
            let Some(run) = others.iter().find(|r| r.seq == seq) else {
                continue;
            };
            let deletes = changed.entry(seq).or_insert_with(|| run.deletes.clone());
            deletes[f] = Some(version(
                &run.files[f],
                run.deletes[f].as_ref(),
                rows,
                written,
            )?);
        }
        for ((r, f), rows) in own_rows {
            own[r][f] = Some(version(&new[r].files[f], None, rows, written)?);
        }
        if !written.is_empty() {
            manifest::sync_dir(&self.dir.join(table_dir(def, id)))?;
        }
        Ok((keys, changed, own))
    }

    /// Lists the staged parts of one statement as runs, in one manifest commit.
    fn commit_writes(&self, name: &TableName, parts: Vec<StagedWrite>) -> Result<WriteSummary> {
        let (id, def, shards) = {
            let state = lock(&self.state);
            let table = state.table(name)?;
            (table.id, table.def.clone(), table.shards)
        };
        let staged_dir = format!("{}/{STAGED_PREFIX}", table_dir(&def, id));
        for part in &parts {
            if &part.table != name {
                return Err(Error::Internal(format!(
                    "a part written to {} was committed to {name}",
                    part.table
                )));
            }
            if part.table_id != id {
                return Err(Error::NoSuchTable {
                    name: name.to_string(),
                    hint: " (it was dropped and created again during the write; run the \
                           statement again)"
                        .into(),
                });
            }
            if let Some(file) = part.files.iter().find(|f| {
                !f.starts_with(&staged_dir) || f[staged_dir.len()..].contains(['/', '\\'])
            }) {
                return Err(Error::Internal(format!(
                    "{file} is not a staged file of {name}"
                )));
            }
        }
        let read_schema = sorted_rows::read_stored_schema(&def);
        let mut runs = Vec::new();
        for part in &parts {
            if part.files.is_empty() {
                continue;
            }
            let files = part
                .files
                .iter()
                .map(|f| DataFile::open(&self.dir, f, &shards, &read_schema).map(Arc::new))
                .collect::<Result<Vec<_>>>()?;
            let rows: u64 = files.iter().map(|f| f.rows()).sum();
            if rows != part.rows {
                return Err(Error::Corrupt {
                    path: self.dir.join(&part.files[0]),
                    problem: format!(
                        "the staged part holds {rows} rows where its writer reported {}",
                        part.rows
                    ),
                });
            }
            runs.push(files);
        }
        let mut summary = WriteSummary {
            rows: parts.iter().map(|p| p.rows).sum(),
        };
        if runs.is_empty() {
            return Ok(summary);
        }
        let mut new: Vec<NewRun> = {
            let mut state = lock(&self.state);
            runs.into_iter()
                .map(|files| {
                    Ok(NewRun {
                        seq: state.next_pending_seq(name)?,
                        files,
                    })
                })
                .collect::<Result<_>>()?
        };
        let pending = Pending {
            inner: self,
            table: name.clone(),
            seqs: new.iter().map(|r| r.seq).collect(),
        };
        if new_runs_share_shards(&new) {
            let merged = self.merge_parts(&def, id, shards, new)?;
            summary.rows = merged.files.iter().map(|f| f.rows()).sum();
            new = vec![merged];
        }
        let tagged_files: Vec<(u64, DataFileRef)> = new
            .iter()
            .flat_map(|r| r.files.iter().map(|f| (r.seq, f.clone())))
            .collect();
        let keys = || files_key_set(&def, &tagged_files);
        let how = Install {
            drop_chunk_rows: true,
            ..Install::default()
        };
        let compact = self.install(name, id, new, &keys, how);
        drop(pending);
        self.after_new_run(name, compact?)?;
        Ok(summary)
    }

    /// Merges the parts of one statement that share shards (a large upload staged as it
    /// arrived) into one run, a window of shards at a time, later parts winning over earlier
    /// ones with the same key; the parts' files are deleted. Committing them side by side would
    /// mean comparing every part's keys with every other's, all in memory at once, and a
    /// compaction right after.
    fn merge_parts(
        &self,
        def: &TableDef,
        id: u64,
        shards: ShardMap,
        parts: Vec<NewRun>,
    ) -> Result<NewRun> {
        let seq = parts.iter().map(|p| p.seq).max().unwrap_or(0);
        let snapshot = TableSnapshot {
            def: def.clone(),
            shards,
            runs: parts
                .into_iter()
                .map(|p| {
                    Arc::new(Run {
                        seq: p.seq,
                        deletes: vec![None; p.files.len()],
                        files: p.files,
                    })
                })
                .collect(),
            chunks: Vec::new(),
            mem_keys: Arc::default(),
        };
        let (files, _) = self.rewrite(&snapshot, id, StepsOn::Caller)?;
        for part in &snapshot.runs {
            retire_files(&part.files);
        }
        Ok(NewRun { seq, files })
    }

    /// Deletes the staged files of `statement` in `name`'s directory that no run lists (a
    /// committed part keeps its file name).
    fn discard_writes(&self, name: &TableName, statement: u64) -> Result<usize> {
        let (id, def, listed) = {
            let state = lock(&self.state);
            let table = state.table(name)?;
            let listed: HashSet<PathBuf> = table
                .runs
                .iter()
                .flat_map(|r| r.files.iter().map(|f| f.path.clone()))
                .collect();
            (table.id, table.def.clone(), listed)
        };
        let dir = self.dir.join(table_dir(&def, id));
        let prefix = staged_prefix(statement);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io("listing", &dir)(e)),
        };
        let mut removed = 0;
        for entry in entries {
            let path = entry.map_err(Error::io("listing", &dir))?.path();
            if !listed.contains(&path)
                && path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            {
                fs::remove_file(&path).map_err(Error::io("removing", &path))?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(table = %name, files = removed, "discarded the staged parts of a statement that did not commit");
        }
        Ok(removed)
    }

    /// Compacts (in the background when there is a thread for it) when `wanted`.
    fn after_new_run(&self, name: &TableName, wanted: bool) -> Result<()> {
        if wanted && !self.schedule(Job::Compact(name.clone())) {
            self.compact(name, false, StepsOn::Caller)?;
        }
        Ok(())
    }

    /// Turns all memtable chunks into runs, then drops the log segments they came from, and
    /// compacts the tables that then want it.
    fn flush(&self) -> Result<()> {
        self.flush_on(StepsOn::Caller)
    }

    /// [`Inner::flush`], sorting and writing the runs where `on` says ([`Inner::flush_runs`]).
    fn flush_on(&self, on: StepsOn<'_>) -> Result<()> {
        for name in self.flush_runs(on)? {
            if !self.schedule(Job::Compact(name.clone())) {
                self.compact(&name, false, StepsOn::Caller)?;
            }
        }
        Ok(())
    }

    /// The flush itself; returns the tables that want compacting. A table's chunks become one
    /// run, or one run on each side of a sequence number still pending
    /// ([`TableState::pending`]): a run's rows all count as new as its sequence number, so a run
    /// holding chunks older and newer than a large write committed later would win over that
    /// write with the older chunks' rows too.
    ///
    /// On [`StepsOn::StepPool`] (the flushes the store starts itself), each run is sorted and
    /// written in the idle class, as compactions' heavy steps are: a query then gets the cores
    /// first. The frozen chunks stay readable meanwhile, so a query loses nothing. The flush
    /// stops waiting there and does it itself, at the writers' level, as soon as the memtable
    /// holds enough rows for the next flush, so that the memtable holds no more than two or three
    /// thresholds for want of idle cores (writers flush themselves only at [`STALL_FLUSHES`]
    /// times it), and as soon as a flush asked for (`EmbeddedStore::flush`, a full compaction)
    /// waits for it.
    fn flush_runs(&self, on: StepsOn<'_>) -> Result<Vec<TableName>> {
        let _flushing = {
            // A flush asked for that waits behind one in the idle class hurries it along.
            let _asking = matches!(on, StepsOn::Caller).then(|| Counted::new(&self.flushes_asked));
            lock(&self.flush_lock)
        };
        let (closed_segment, work) = {
            let mut wal = lock(&self.wal);
            let mut state = lock(&self.state);
            if state
                .tables
                .values()
                .all(|t| t.chunks.is_empty() && t.frozen.is_empty())
            {
                return Ok(Vec::new());
            }
            let closed = wal.rotate()?;
            let mut work = Vec::new();
            for (name, table) in state.tables.iter_mut() {
                let chunks = std::mem::take(&mut table.chunks);
                table.frozen.extend(chunks);
                if !table.frozen.is_empty() {
                    work.push((
                        name.clone(),
                        table.id,
                        table.def.clone(),
                        table.shards,
                        table.frozen.clone(),
                        table.pending.clone(),
                        table.mem_keys.clone(),
                    ));
                }
            }
            (closed, work)
        };
        let mut compact = Vec::new();
        for (name, id, def, shards, mut chunks, pending, mem_keys) in work {
            chunks.sort_by_key(|c| c.seq);
            for group in chunks.chunk_by(|a, b| !pending.iter().any(|p| (a.seq..b.seq).contains(p)))
            {
                let seq = group.last().map(|c| c.seq).unwrap_or(0);
                // The chunks' key hashes, worked out as they arrived, go along with their rows
                // into the run's files and its key set.
                let batches = group
                    .iter()
                    .map(|c| c.rows_with_hashes())
                    .collect::<Result<Vec<_>>>()?;
                let step = {
                    let (dir, layout, def) = (self.dir.clone(), self.layout(), def.clone());
                    move |file_id| -> Result<(RecordBatch, Vec<DataFileRef>)> {
                        let rows = sort_dedup(&def, &batches)?;
                        let files = if rows.num_rows() == 0 {
                            Vec::new()
                        } else {
                            write_files(&dir, layout, &def, id, file_id, &shards, &rows)?
                        };
                        Ok((rows, files))
                    }
                };
                let discard = |written: Result<(RecordBatch, Vec<DataFileRef>)>| {
                    if let Ok((_, files)) = written {
                        retire_files(&files);
                    }
                };
                let (rows, files) = match on {
                    StepsOn::StepPool(waited_out) => self.step_aside(
                        &name,
                        &self.flush_steps,
                        waited_out,
                        || {
                            self.closing.load(Ordering::SeqCst)
                                || self.flushes_asked.load(Ordering::SeqCst) > 0
                                || lock(&self.state).memtable_rows()
                                    >= self.options.memtable_flush_rows
                        },
                        step,
                        discard,
                    ),
                    StepsOn::Caller => step(self.next_file_id()),
                }?;
                self.cover_new_run(&name, &files, seq, StepsOn::Caller);
                let keys = || key_set_of_rows(&def, &rows, seq);
                let how = Install {
                    drain_frozen: group.iter().map(|c| c.seq).collect(),
                    flushed: Some(Flushed {
                        chunks: group.to_vec(),
                        keys: mem_keys.clone(),
                    }),
                    ..Install::default()
                };
                match self.install(&name, id, vec![NewRun { seq, files }], &keys, how) {
                    Ok(true) => compact.push(name.clone()),
                    Ok(false) => {}
                    // Dropped since the chunks were frozen: nothing to keep.
                    Err(Error::NoSuchTable { .. }) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        compact.dedup();
        {
            let mut state = lock(&self.state);
            state.wal_checkpoint = closed_segment;
            self.commit(&state)?;
        }
        wal::remove_through(&self.dir.join("wal"), closed_segment)?;
        Ok(compact)
    }

    /// Rewrites runs of a table as one, without the rows newer writes superseded. `full` merges
    /// every run; otherwise the newest runs are merged, leaving out old runs larger than
    /// everything newer combined (size tiers), so that repeated loads do not rewrite the table
    /// each time, except that a run with more than `max_dead_fraction` of its rows superseded
    /// is always rewritten. Merged runs are a newest-first suffix by sequence number, so the
    /// merged run can take the newest one's sequence number. Compactions of one table run side
    /// by side on runs none of the others is merging (see [`Inner::compaction_snapshot`]); one
    /// that leaves the table wanting more queues another.
    fn compact(&self, name: &TableName, full: bool, on: StepsOn<'_>) -> Result<Option<Compaction>> {
        let Some((id, snapshot, claim)) = self.compaction_snapshot(name, full)? else {
            return Ok(None);
        };
        let started = Instant::now();
        let (files, mut report) = self.rewrite(&snapshot, id, on)?;
        report.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let installed = self.install_compaction(name, id, &snapshot, files, &mut report, on)?;
        drop(claim);
        if installed == Some(true) {
            self.schedule(Job::Compact(name.clone()));
        }
        Ok(installed.map(|_| report))
    }

    /// The runs a compaction of `name` would merge now, claimed for it until the [`Claim`] is
    /// dropped, with the table's id; `None` when there is nothing worth merging. It chooses among
    /// the runs newer than every claimed run and every pending sequence number: a merge of
    /// runs on both sides of a run that commits later could not tell which of its rows that
    /// run supersedes. A full compaction waits until no other compaction or pending run is in
    /// the way, and flushes the memtable first.
    fn compaction_snapshot(
        &self,
        name: &TableName,
        full: bool,
    ) -> Result<Option<(u64, TableSnapshot, Claim<'_>)>> {
        if full {
            self.flush_runs(StepsOn::Caller)?;
        }
        loop {
            let mut state = lock(&self.state);
            if full {
                state = self.wait_for_claims(state, name)?;
            }
            state.table(name)?;
            let Some(table) = state.tables.get_mut(name) else {
                return Ok(None);
            };
            if !full && table.hurried > 0 {
                // A compaction asked for waits for the runs being merged: more merges started
                // now would keep it waiting, and it merges every run anyway.
                return Ok(None);
            }
            let pending = table.pending.last().copied();
            let from = table
                .runs
                .iter()
                .rposition(|r| {
                    table.compacting.contains(&r.seq) || pending.is_some_and(|p| r.seq < p)
                })
                .map_or(0, |i| i + 1);
            let Some(mut start) = compaction_start(&table.runs[from..], &self.options, full) else {
                return Ok(None);
            };
            let bound = self.options.small_merge_rows();
            let rows: Vec<u64> = table.runs[from..].iter().map(|r| r.rows()).collect();
            if table.large_merge && !full {
                // Beside a large merge: the fresh runs only, and only while they are too many.
                if scan::overlap_depth(&table.runs[from..]) <= self.options.max_runs {
                    return Ok(None);
                }
                let Some(small) = small_merge_start(&rows, start, bound) else {
                    return Ok(None);
                };
                start = small;
            }
            let large = rows[start..].iter().sum::<u64>() > bound;
            let runs = table.runs[from + start..].to_vec();
            let newest = runs.iter().map(|r| r.seq).max().unwrap_or(0);
            // A memtable chunk older than a merged run would lose to the merged run's sequence
            // number: such chunks (of writes acknowledged while a large write was written) go
            // to a run first.
            if table
                .chunks
                .iter()
                .chain(&table.frozen)
                .any(|c| c.seq < newest)
            {
                drop(state);
                self.flush_runs(StepsOn::Caller)?;
                continue;
            }
            let seqs: Vec<u64> = runs.iter().map(|r| r.seq).collect();
            table.compacting.extend(&seqs);
            table.large_merge |= large;
            let snapshot = TableSnapshot {
                def: table.def.clone(),
                shards: table.shards,
                runs,
                chunks: Vec::new(),
                mem_keys: Arc::default(),
            };
            let claim = Claim {
                inner: self,
                table: name.clone(),
                id: table.id,
                seqs,
                large,
            };
            return Ok(Some((table.id, snapshot, claim)));
        }
    }

    /// Waits until no compaction or pending run of `name` is in the way of a full compaction.
    /// The compactions it waits for meanwhile run their steps at the writers' level: in the
    /// idle class they might not finish while other processes keep the cores busy.
    fn wait_for_claims<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        name: &TableName,
    ) -> Result<MutexGuard<'a, State>> {
        let id = state.table(name)?.id;
        let mut hurrying = false;
        while let Some(table) = state
            .tables
            .get_mut(name)
            .filter(|t| t.id == id && !(t.pending.is_empty() && t.compacting.is_empty()))
        {
            if !hurrying {
                table.hurried += 1;
                hurrying = true;
            }
            state = self
                .claims_released
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if let Some(table) = state
            .tables
            .get_mut(name)
            .filter(|t| t.id == id && hurrying)
        {
            table.hurried -= 1;
        }
        Ok(state)
    }

    /// Whether the compactions of `name` that the store started itself should run their heavy
    /// steps at the writers' level: the table is deeper than
    /// [`EmbeddedOptions::raise_compaction_depth`], a compaction asked for waits for them, or
    /// the store is closing.
    fn steps_raised(&self, name: &TableName) -> bool {
        if self.closing.load(Ordering::SeqCst) {
            return true;
        }
        lock(&self.state).tables.get(name).is_some_and(|t| {
            t.hurried > 0 || scan::overlap_depth(&t.runs) > self.options.raise_compaction_depth
        })
    }

    /// Puts the run a compaction wrote in place of the runs it merged. Runs committed while it
    /// was written win over its rows with their keys. Returns whether the table then wants
    /// compacting, or `None` if it was dropped meanwhile.
    fn install_compaction(
        &self,
        name: &TableName,
        id: u64,
        snapshot: &TableSnapshot,
        files: Vec<DataFileRef>,
        report: &mut Compaction,
        on: StepsOn<'_>,
    ) -> Result<Option<bool>> {
        report.at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .unwrap_or_default();
        let seq = snapshot.runs.iter().map(|r| r.seq).max().unwrap_or(0);
        // Never called: a compaction's run is compared with the newer runs through their keys
        // (`Install::newer_only`), which hold far fewer rows than it.
        let keys = || {
            Err(Error::Internal(
                "a compaction's own keys were asked for".into(),
            ))
        };
        let replaced: Vec<&DataFileRef> = snapshot.runs.iter().flat_map(|r| &r.files).collect();
        data_file::lend_key_cache(&files, &replaced);
        self.cover_new_run(name, &files, seq, on);
        let run = NewRun {
            seq,
            files: files.clone(),
        };
        let replaces: Vec<u64> = snapshot.runs.iter().map(|r| r.seq).collect();
        let ahead = self.supersede_ahead(name, id, &run, &replaces, on);
        let how = Install {
            replaces,
            newer_only: true,
            compaction: Some(*report),
            ahead: Some(ahead),
            ..Install::default()
        };
        let installed = self.install(name, id, vec![run], &keys, how);
        data_file::end_key_cache_loan(&files);
        let wants_more = match installed {
            Ok(wants_more) => wants_more,
            Err(Error::NoSuchTable { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        tracing::debug!(table = %name, runs = report.runs, rows = report.rows, windows = report.windows, millis = report.millis, "compacted");
        Ok(Some(wants_more))
    }

    /// For a compaction's `run`, about to take the place of the runs `replaces`: the rows of it
    /// that runs committed while it was written supersede, worked out without the commit lock,
    /// twice (the second time for the runs committed during the first). The install then
    /// searches only the files committed after that, a flush or two, so a flush waits for the
    /// lock that long, not for the whole comparison at compaction's priority: installing a
    /// compaction of 20M rows held it for 3 s while data arrived, and the memtable grew to
    /// 600,000 rows behind it. On failure the install searches every newer file itself.
    fn supersede_ahead(
        &self,
        name: &TableName,
        id: u64,
        run: &NewRun,
        replaces: &[u64],
        on: StepsOn<'_>,
    ) -> Ahead {
        let mut ahead = Ahead::default();
        for _ in 0..2 {
            let (def, newer): (TableDef, Vec<(u64, DataFileRef)>) = {
                let state = lock(&self.state);
                let Some(table) = state.tables.get(name).filter(|t| t.id == id) else {
                    return ahead;
                };
                let newer = table
                    .runs
                    .iter()
                    .filter(|r| r.seq > run.seq && !replaces.contains(&r.seq))
                    .flat_map(|r| r.files.iter().map(|f| (r.seq, f.clone())))
                    .filter(|(_, f)| !ahead.files.contains(&f.relative))
                    .collect();
                (table.def.clone(), newer)
            };
            if newer.is_empty() {
                break;
            }
            let newer = Arc::new(newer);
            let step = {
                let (run, newer) = (run.clone(), newer.clone());
                move |_| superseded_by_newer(&def, &run, &newer)
            };
            match self.heavy_step(name, on, step, drop) {
                Ok(rows) => {
                    for (f, found) in rows {
                        ahead.rows.entry(f).or_default().extend(found);
                    }
                    ahead
                        .files
                        .extend(newer.iter().map(|(_, f)| f.relative.clone()));
                }
                Err(e) => {
                    tracing::warn!(table = %name, error = %e, "could not compare a compaction's run with newer runs ahead of its install; the install will");
                    return Ahead::default();
                }
            }
        }
        ahead
    }

    /// Works out which rows of a new run's files (sequence number `seq`) the memtable's chunks
    /// hide, before the run is installed, so that no query finds that left to it (see
    /// [`scan::cover_files`]). Only a shortcut: on failure scans work it out as they read.
    fn cover_new_run(&self, name: &TableName, files: &[DataFileRef], seq: u64, on: StepsOn<'_>) {
        let Ok(snapshot) = lock(&self.state).snapshot(name) else {
            return;
        };
        let files = files.to_vec();
        let step = move |_| scan::cover_files(&snapshot, &files, seq);
        if let Err(e) = self.heavy_step(name, on, step, drop) {
            tracing::warn!(table = %name, error = %e, "could not work out which rows of a new run the memtable hides; scans will");
        }
    }

    /// Writes the live rows of `snapshot`'s runs as the files of one new run, one window of
    /// shards at a time: memory holds about one output file's rows, never the table. Every key
    /// is live in one run only (or, for a statement's parts, later parts win), so a window's
    /// rows need sorting, not merging. Returns the files and what was done (no time set); on
    /// failure the files written so far are deleted.
    fn rewrite(
        &self,
        snapshot: &TableSnapshot,
        id: u64,
        on: StepsOn<'_>,
    ) -> Result<(Vec<DataFileRef>, Compaction)> {
        let windows = compaction_windows(
            &snapshot.runs,
            snapshot.shards.shard_count(),
            self.options.rows_per_file as u64,
        );
        let mut report = Compaction {
            runs: snapshot.runs.len(),
            read_rows: snapshot.runs.iter().map(|r| r.rows()).sum(),
            windows: windows.len(),
            ..Compaction::default()
        };
        let mut files: Vec<DataFileRef> = Vec::new();
        let name = snapshot.def.table_name();
        let snapshot = Arc::new(snapshot.clone());
        for window in windows {
            let step = {
                let (dir, layout, snapshot) = (self.dir.clone(), self.layout(), snapshot.clone());
                move |file_id| compact_window(&dir, layout, &snapshot, id, window.clone(), file_id)
            };
            // A window with no live rows leaves its file number unused.
            let discard = |written: Result<(Vec<DataFileRef>, u64)>| {
                if let Ok((files, _)) = written {
                    retire_files(&files);
                }
            };
            match self.heavy_step(&name, on, step, discard) {
                Ok((written, rows)) => {
                    report.rows += rows;
                    report.largest_window_rows = report.largest_window_rows.max(rows);
                    files.extend(written);
                }
                Err(e) => {
                    retire_files(&files);
                    return Err(e);
                }
            }
        }
        Ok((files, report))
    }

    /// Runs `step`, a heavy part of a compaction of `name` (reading and rewriting a window of
    /// shards, comparing runs), where `on` says, and returns what it returned. A step takes none
    /// of the store's locks: in the idle class it could hold them until the cores are otherwise
    /// idle. Each run of a step gets a file number of its own to write under.
    ///
    /// On [`StepsOn::StepPool`], the step runs on the caller instead whenever
    /// [`Inner::steps_raised`] says so, also after waiting for it there, and once a step of the
    /// same compaction waited there longer than [`EmbeddedOptions::idle_step_patience`]. A step
    /// waited for is then given up on, and what it returns if it ever finishes goes to
    /// `discard`. As Spark speculates a straggling task: two copies of the step may run, and the
    /// first to answer counts.
    fn heavy_step<R: Send + 'static>(
        &self,
        name: &TableName,
        on: StepsOn<'_>,
        step: impl Fn(u64) -> R + Send + Sync + 'static,
        discard: fn(R),
    ) -> R {
        match on {
            StepsOn::StepPool(waited_out) => self.step_aside(
                name,
                &self.step_pool,
                waited_out,
                || self.steps_raised(name),
                step,
                discard,
            ),
            StepsOn::Caller => step(self.next_file_id()),
        }
    }

    /// Runs `step` (a flush's or compaction's of `name`) on `pool`, in the idle class, and
    /// returns what it returned; or runs it on the caller, at its priority, once `raised` says
    /// so (also while waiting for it there), and once a step sharing `waited_out` waited there
    /// longer than [`EmbeddedOptions::idle_step_patience`]. A step given up on hands what it
    /// returns, if it ever finishes, to `discard`. Each run of a step gets a file number of its
    /// own.
    fn step_aside<R: Send + 'static>(
        &self,
        name: &TableName,
        pool: &StepPool,
        waited_out: &Cell<bool>,
        raised: impl Fn() -> bool,
        step: impl Fn(u64) -> R + Send + Sync + 'static,
        discard: fn(R),
    ) -> R {
        if waited_out.get() || raised() {
            return step(self.next_file_id());
        }
        let step = Arc::new(step);
        let (background, file_id) = (step.clone(), self.next_file_id());
        let started = Instant::now();
        let give_up = || {
            if started.elapsed() > self.options.idle_step_patience {
                waited_out.set(true);
            }
            waited_out.get() || raised()
        };
        if let Some(answer) = pool.run(move || background(file_id), discard, give_up) {
            return answer;
        }
        tracing::info!(
            table = %name,
            waited_ms = started.elapsed().as_millis(),
            "a step left waiting in the idle class runs at the writers' level"
        );
        step(self.next_file_id())
    }

    #[cfg(test)]
    fn step_pool_threads(&self) -> usize {
        self.options.compaction_threads.max(1)
    }

    /// A number for new files; numbered here, where the store's state may be locked.
    fn next_file_id(&self) -> u64 {
        lock(&self.state).next_id()
    }
}

/// Where the heavy steps of a compaction ([`Inner::heavy_step`]) or a flush
/// ([`Inner::flush_runs`]) run.
#[derive(Debug, Clone, Copy)]
enum StepsOn<'a> {
    /// The calling thread, at its priority: a compaction or flush asked for, one run inline by a
    /// store without background threads, a flush's new run, and the merge of a statement's parts
    /// as it commits.
    Caller,
    /// A [`StepPool`], in the idle class, unless what waits for the step says otherwise (a table
    /// too deep or a compaction asked for, [`Inner::steps_raised`]; a flush due or asked for):
    /// the compactions and flushes the store starts itself. The flag is set once a step waited
    /// out its patience there; the later steps of the same compaction or flush run on the
    /// caller.
    StepPool(&'a Cell<bool>),
}

/// Counts its holder in an [`AtomicUsize`] until dropped.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(count: &'a AtomicUsize) -> Counted<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Counted(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts `threads` background threads that share the queue `jobs` and run its jobs until it
/// closes, below the process's CPU priority as writes run. Compactions hand their heavy steps to
/// the idle class ([`StepPool`]; the steps' parallel sorts and file writers inherit it),
/// so that on a busy machine rewriting old runs yields to writes, and both yield to queries,
/// while the short steps that hold the store's locks do not wait behind them.
fn background_threads(
    inner: &Arc<Inner>,
    name: &str,
    jobs: Receiver<Job>,
    threads: usize,
    compacting: bool,
) -> Result<Vec<JoinHandle<()>>> {
    let jobs = Arc::new(Mutex::new(jobs));
    (0..threads)
        .map(|i| {
            let (worker, jobs) = (inner.clone(), jobs.clone());
            let name = if threads > 1 {
                format!("{name}-{i}")
            } else {
                name.to_string()
            };
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    // Compaction threads too: they take the store's locks to choose and install
                    // runs, and hand their heavy steps to the idle class (`threads.rs`).
                    lower_thread_priority(Niceness::Ingestion);
                    while let Some(job) = worker.next_job(&jobs) {
                        // A panic fails its job (its claims and counts are released as it
                        // unwinds), not the thread: later flushes and compactions still run.
                        let run = std::panic::AssertUnwindSafe(|| worker.run_job(job, compacting));
                        if std::panic::catch_unwind(run).is_err() {
                            tracing::error!("a background store job panicked");
                        }
                    }
                })
                .map_err(Error::io("starting a background thread of", &inner.dir))
        })
        .collect()
}

/// Starts the thread that works out, as writes arrive, which rows of each table's runs its
/// memtable hides ([`scan::cover`]), at most once per [`COVER_EVERY`]. A scan then compares the
/// runs only with the writes of the last moment, instead of with everything written since the
/// last scan. The work is a scan's own, done ahead: it runs at compaction's priority, in the idle
/// moments between queries, never in a query's way. It takes the store's state lock only to copy
/// a table's snapshot (a few pointers), and builds key sets a scan may also want aside, not
/// under the lock the scan would wait on (`scan.rs`, `MemKeys::newer_than`).
fn cover_thread(inner: &Arc<Inner>, written: Receiver<TableName>) -> Result<JoinHandle<()>> {
    let worker = inner.clone();
    std::thread::Builder::new()
        .name("quarry-cover".into())
        .spawn(move || {
            lower_thread_priority(Niceness::Idle);
            while let Ok(first) = written.recv() {
                // The writes of the next moment are covered in the same pass.
                std::thread::sleep(COVER_EVERY);
                let mut names = vec![first];
                names.extend(written.try_iter());
                names.sort_unstable();
                names.dedup();
                for name in names {
                    let Ok(snapshot) = lock(&worker.state).snapshot(&name) else {
                        continue; // dropped meanwhile
                    };
                    let cover = std::panic::AssertUnwindSafe(|| scan::cover(&snapshot));
                    match std::panic::catch_unwind(cover) {
                        Ok(Ok(())) => {}
                        // A file a compaction retired meanwhile, say: the next scan works it out.
                        Ok(Err(e)) => tracing::debug!(table = %name, error = %e, "could not cover"),
                        Err(_) => tracing::error!(table = %name, "covering a table panicked"),
                    }
                }
            }
        })
        .map_err(Error::io("starting a background thread of", &inner.dir))
}

/// How long a commit may hold the commit lock before it is reported (a warning naming the
/// table, what committed and where the time went).
const SLOW_COMMIT: Duration = Duration::from_secs(1);

/// How often the cover thread compares a busy table's runs with its newest writes.
const COVER_EVERY: Duration = Duration::from_millis(100);

/// The runs of a table one compaction is merging ([`TableState::compacting`]); released when
/// dropped, whether the compaction committed or failed.
struct Claim<'a> {
    inner: &'a Inner,
    table: TableName,
    id: u64,
    seqs: Vec<u64>,
    /// The table's large merge ([`TableState::large_merge`]).
    large: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.inner.state);
        if let Some(table) = state
            .tables
            .get_mut(&self.table)
            .filter(|t| t.id == self.id)
        {
            table.compacting.retain(|seq| !self.seqs.contains(seq));
            if self.large {
                table.large_merge = false;
            }
        }
        drop(state);
        self.inner.claims_released.notify_all();
    }
}

/// A compaction job counted in [`Inner::compactions_queued`] and `compactions_running`; no
/// longer counted when dropped, also when the job panicked, so that barriers and
/// [`EmbeddedStore::wait_idle`] never wait for a job that is gone.
struct CompactionJob<'a>(&'a Inner);

impl Drop for CompactionJob<'_> {
    fn drop(&mut self) {
        self.0.compactions_queued.fetch_sub(1, Ordering::SeqCst);
        *lock(&self.0.compactions_running) -= 1;
        self.0.compaction_finished.notify_all();
    }
}

/// Sequence numbers of runs of a table being written ([`TableState::pending`]); no longer
/// pending when dropped, whether the runs were installed or not.
struct Pending<'a> {
    inner: &'a Inner,
    table: TableName,
    seqs: Vec<u64>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.inner.state);
        if let Some(table) = state.tables.get_mut(&self.table) {
            for seq in &self.seqs {
                table.pending.remove(seq);
            }
        }
        drop(state);
        self.inner.claims_released.notify_all();
    }
}

/// Threads that run writes: enough for concurrent writers to share log syncs.
const WRITE_THREADS: usize = 4;

/// Once the memtable holds this many flushes' worth of rows, writers flush it themselves (a
/// write stall) instead of leaving it to the background thread.
const STALL_FLUSHES: usize = 4;

/// A small write waiting for the log.
#[derive(Debug)]
struct QueuedWrite {
    name: TableName,
    id: u64,
    rows: RecordBatch,
    hashes: Vec<i64>,
    /// Answered with the memtable's row count once the write is durable and readable.
    reply: std::sync::mpsc::SyncSender<Result<usize>>,
}

/// A run about to be added.
#[derive(Clone)]
struct NewRun {
    seq: u64,
    files: Vec<DataFileRef>,
}

/// Whether two of `new`'s runs have row groups over a common shard, so that they may hold the
/// same key (parts of a distributed write, one per group of shards, never do).
fn new_runs_share_shards(new: &[NewRun]) -> bool {
    let mut ranges: Vec<(u32, u32, usize)> = new
        .iter()
        .enumerate()
        .flat_map(|(r, run)| {
            run.files.iter().flat_map(move |file| {
                file.groups
                    .iter()
                    .map(move |g| (g.first_shard, g.last_shard, r))
            })
        })
        .collect();
    ranges.sort_unstable();
    // Sweep in order of first shard, keeping the run that reaches furthest so far.
    let mut reach: Option<(u32, usize)> = None;
    for (first, last, r) in ranges {
        if let Some((end, owner)) = reach {
            if first <= end && owner != r {
                return true;
            }
            if last > end {
                reach = Some((last, r));
            }
        } else {
            reach = Some((last, r));
        }
    }
    false
}

/// How [`Inner::install`] adds runs.
#[derive(Debug, Default)]
struct Install {
    /// Sequence numbers of runs the new run takes the place of (a compaction's inputs).
    replaces: Vec<u64>,
    /// Compare the new run with newer runs only (a compaction: older runs were already
    /// compared with its rows).
    newer_only: bool,
    /// Drop the rows of older memtable chunks the new run supersedes.
    drop_chunk_rows: bool,
    /// Remove the frozen chunks of these sequence numbers in the same step (a flush of them).
    drain_frozen: Vec<u64>,
    /// The chunks a flush writes as the new run: the rows of older runs they hide are found
    /// from what scans and the cover thread worked out ([`flushed_hidden`]).
    flushed: Option<Flushed>,
    /// What the compaction that wrote the new run did, stamped with when it commits.
    compaction: Option<Compaction>,
    /// For `newer_only`: the rows of the new run that newer runs' files supersede, worked out
    /// before the commit lock was taken ([`Inner::supersede_ahead`]); only newer files not
    /// among them are searched at the install.
    ahead: Option<Ahead>,
}

/// Rows of a compaction's run that the keys of `files` (of runs newer than it) supersede, by
/// file of the run, numbered within the file.
#[derive(Debug, Default)]
struct Ahead {
    files: HashSet<String>,
    rows: HashMap<usize, Vec<u32>>,
}

/// A flush's chunks (sorted by sequence number), with the memtable's keys.
#[derive(Debug)]
struct Flushed {
    chunks: Vec<Arc<MemChunk>>,
    keys: Arc<MemKeys>,
}

/// For a flush of `flushed`: the rows of the `older` runs that the flushed rows supersede, by
/// the run's sequence number and file, numbered within the file, leaving out rows the file's
/// deletion vector already holds. What scans and the cover thread worked out
/// ([`MemKeys::known`]) is taken as it is, even rows hidden by chunks newer than the flush:
/// those writes stay in the log until they are flushed in turn, so the rows are superseded
/// whatever happens, and marking them now spares that flush the work. Only the flushed chunks
/// newer than what was worked out are searched for, so a flush beside a busy cover thread reads
/// next to none of the older runs' keys.
fn flushed_hidden(
    def: &TableDef,
    older: &[&Arc<Run>],
    flushed: &Flushed,
) -> Result<HashMap<(u64, usize), Vec<u32>>> {
    struct Task<'a> {
        run: &'a Run,
        file: usize,
        group: usize,
        known: Option<Arc<Vec<u32>>>,
        /// How many of the newest flushed chunks are still to be searched.
        newer: usize,
    }
    let chunks = &flushed.chunks;
    let mut tasks = Vec::new();
    for run in older {
        for (f, file) in run.files.iter().enumerate() {
            for group in 0..file.groups.len() {
                let known = flushed.keys.known(file, group, &flushed.chunks, run.seq);
                // Chunks no newer than the run hold none of its keys.
                let from = known.as_ref().map_or(run.seq, |(seq, _)| run.seq.max(*seq));
                tasks.push(Task {
                    run,
                    file: f,
                    group,
                    known: known.map(|(_, rows)| rows),
                    newer: chunks.iter().filter(|c| c.seq > from).count(),
                });
            }
        }
    }
    // One key set per suffix of the chunks: usually one, of the chunks since the cover thread's
    // last turn, or of them all for runs that turn has not reached.
    let mut sets: HashMap<usize, KeySet> = HashMap::new();
    for task in &tasks {
        if task.newer > 0 && !sets.contains_key(&task.newer) {
            let suffix = &chunks[chunks.len() - task.newer..];
            sets.insert(task.newer, scan::chunk_keys(def, suffix, 0)?);
        }
    }
    let found = parallel(&tasks, |task| {
        let file = &task.run.files[task.file];
        let mut rows: Vec<u32> = task.known.as_deref().cloned().unwrap_or_default();
        if let Some(set) = sets.get(&task.newer) {
            rows.extend(
                set.matches_in_group(def, file, task.group)?
                    .into_iter()
                    .map(|(row, _)| row),
            );
        }
        let start = file.group_starts[task.group] as u32;
        let deleted = task.run.deletes[task.file].as_deref();
        Ok(rows
            .into_iter()
            .map(|row| start + row)
            .filter(|row| !deleted.is_some_and(|d| d.rows.contains(*row)))
            .collect::<Vec<u32>>())
    })?;
    let mut hidden: HashMap<(u64, usize), Vec<u32>> = HashMap::new();
    for (task, rows) in tasks.iter().zip(found) {
        if !rows.is_empty() {
            hidden
                .entry((task.run.seq, task.file))
                .or_default()
                .extend(rows);
        }
    }
    Ok(hidden)
}

/// The keys of sorted rows in stored form (with or without their key hashes), all tagged `seq`.
fn key_set_of_rows(def: &TableDef, rows: &RecordBatch, seq: u64) -> Result<KeySet> {
    let hashes = keys::stored_key_hashes(def, rows)?;
    KeySet::new(def, &[Tagged::of_rows(def, rows, hashes.values(), seq)])
}

/// Every row group of `new`, as (run, file, group) numbers.
fn new_run_groups(new: &[NewRun]) -> Vec<(usize, usize, usize)> {
    new.iter()
        .enumerate()
        .flat_map(|(r, run)| {
            run.files
                .iter()
                .enumerate()
                .flat_map(move |(f, file)| (0..file.groups.len()).map(move |g| (r, f, g)))
        })
        .collect()
}

/// Writes `rows`, sorted, as the files of a run of table `table_id` in the store at `dir`,
/// numbered from `file_id`, and opens them with their key hashes cached.
fn write_files(
    dir: &Path,
    layout: Layout,
    def: &TableDef,
    table_id: u64,
    file_id: u64,
    shards: &ShardMap,
    rows: &RecordBatch,
) -> Result<Vec<Arc<DataFile>>> {
    let written = data_file::write_run(
        dir,
        &table_dir(def, table_id),
        &format!("run-{file_id}"),
        def,
        rows,
        shards,
        layout,
    )?;
    let read_schema = sorted_rows::read_stored_schema(def);
    // The next flush searches every row group of this run for its keys, and every scan
    // beside the memtable for the memtable's: the key hashes just written are kept (sorted,
    // while the cache has room) rather than read back by the first of them, so that work
    // falls on this background thread and not on a query.
    // Each file's hashes move into the cache (a task takes them out of its slot).
    let written: Vec<(String, Mutex<Vec<Vec<i64>>>)> = written
        .into_iter()
        .map(|file| (file.relative, Mutex::new(file.group_hashes)))
        .collect();
    parallel(&written, |(relative, group_hashes)| {
        let data = Arc::new(DataFile::open(dir, relative, shards, &read_schema)?);
        let group_hashes = std::mem::take(&mut *lock(group_hashes));
        let rows_match = data.groups.len() == group_hashes.len()
            && data
                .groups
                .iter()
                .zip(&group_hashes)
                .all(|(group, hashes)| group.rows == hashes.len() as u64);
        if rows_match {
            for (group, hashes) in group_hashes.into_iter().enumerate() {
                threads::yield_to_queries();
                data.key_hashes(group, || Ok(hashes))?;
            }
        } else {
            // The file is sound; its hashes are read back when first searched.
            tracing::warn!(
                file = %relative,
                "a new file's row groups differ from those written; its key hashes are not kept"
            );
        }
        Ok(data)
    })
}

/// Writes the live rows of one window of shards of `snapshot`'s runs as files of a new run of
/// table `id` in the store at `dir`, numbered from `file_id`; returns the files and their rows.
fn compact_window(
    dir: &Path,
    layout: Layout,
    snapshot: &TableSnapshot,
    id: u64,
    window: std::ops::RangeInclusive<u32>,
    file_id: u64,
) -> Result<(Vec<DataFileRef>, u64)> {
    let def = &snapshot.def;
    // In stored form with the tokens and key hashes the files hold: nothing is hashed again.
    let stored = scan::read_shards(snapshot, window)?;
    let rows = sort_dedup(def, &stored)?;
    drop(stored);
    threads::yield_to_queries();
    if rows.num_rows() == 0 {
        return Ok((Vec::new(), 0));
    }
    let files = write_files(dir, layout, def, id, file_id, &snapshot.shards, &rows)?;
    Ok((files, rows.num_rows() as u64))
}

/// The rows of `run`'s files whose keys a file of `newer` (files of runs newer than it) holds,
/// by file of the run, numbered within the file.
fn superseded_by_newer(
    def: &TableDef,
    run: &NewRun,
    newer: &[(u64, DataFileRef)],
) -> Result<HashMap<usize, Vec<u32>>> {
    let mut rows: HashMap<usize, Vec<u32>> = HashMap::new();
    if newer.is_empty() {
        return Ok(rows);
    }
    let keys = files_key_set(def, newer)?;
    let tasks = new_run_groups(std::slice::from_ref(run));
    let found = matches_in_groups(def, &keys, &tasks, |&(_, f, g)| (&run.files[f], g))?;
    for (&(_, f, _), matches) in tasks.iter().zip(found) {
        for (row, key_row) in matches {
            if keys.tag(key_row) > run.seq {
                rows.entry(f).or_default().push(row);
            }
        }
    }
    Ok(rows)
}

/// Per task, the rows of its row group (`group_of` gives the file and the group) whose keys
/// `keys` holds, searched on the machine's cores: each as its row within the file and its row in
/// the key set.
fn matches_in_groups<'a, T: Sync>(
    def: &TableDef,
    keys: &KeySet,
    tasks: &[T],
    group_of: impl Fn(&T) -> (&'a DataFileRef, usize) + Sync,
) -> Result<Vec<Vec<(u32, u32)>>> {
    parallel(tasks, |task| {
        let (file, group) = group_of(task);
        let start = file.group_starts[group] as u32;
        let found = keys.matches_in_group(def, file, group)?;
        Ok(found
            .into_iter()
            .map(|(row, key_row)| (start + row, key_row))
            .collect())
    })
}

/// The keys of run files, read back from them, each file's tagged with its run's sequence number.
fn files_key_set(def: &TableDef, files: &[(u64, DataFileRef)]) -> Result<KeySet> {
    let read = files
        .iter()
        .map(|(_, f)| keys::file_keys(def, f))
        .collect::<Result<Vec<_>>>()?;
    let tagged: Vec<Tagged<'_>> = read
        .iter()
        .zip(files)
        .map(|(k, (seq, _))| k.tagged(*seq))
        .collect();
    KeySet::new(def, &tagged)
}

/// Consecutive ranges of shards, covering all `shard_count`, that each hold about `target` rows
/// of `runs` (at least one shard each): the units a compaction rewrites one at a time. A row
/// group's rows are taken as spread evenly over its shards, and superseded rows are counted, so
/// a window never holds more than its estimate (beyond one shard's rows).
fn compaction_windows(
    runs: &[Arc<Run>],
    shard_count: u32,
    target: u64,
) -> Vec<std::ops::RangeInclusive<u32>> {
    let mut per_shard = vec![0f64; shard_count as usize];
    for info in runs
        .iter()
        .flat_map(|r| r.files.iter().flat_map(|f| f.groups.iter()))
    {
        let last = info.last_shard.min(shard_count.saturating_sub(1));
        let span = f64::from(last.saturating_sub(info.first_shard) + 1);
        for shard in &mut per_shard[info.first_shard as usize..=last as usize] {
            *shard += info.rows as f64 / span;
        }
    }
    let mut windows = Vec::new();
    let (mut start, mut held) = (0u32, 0f64);
    for (shard, rows) in (0u32..).zip(&per_shard) {
        if held > 0.0 && held + rows > target as f64 {
            windows.push(start..=shard - 1);
            (start, held) = (shard, 0.0);
        }
        held += rows;
    }
    if start < shard_count {
        windows.push(start..=shard_count - 1);
    }
    windows
}

/// Whether `runs` want compacting: too many overlap, or one holds too many superseded rows.
fn wants_compaction(runs: &[Arc<Run>], options: &EmbeddedOptions) -> bool {
    compaction_start(runs, options, false).is_some()
}

/// What the compaction policy looks at in a run: its rows, and how many of them newer writes
/// superseded.
#[derive(Debug, Clone, Copy)]
struct RunShape {
    rows: u64,
    dead: u64,
}

impl RunShape {
    fn too_dead(&self, options: &EmbeddedOptions) -> bool {
        self.dead as f64 > self.rows as f64 * options.max_dead_fraction
    }
}

/// Where the newest-first suffix of runs to merge starts; `None` when there is nothing worth
/// merging.
fn compaction_start(runs: &[Arc<Run>], options: &EmbeddedOptions, full: bool) -> Option<usize> {
    let shapes: Vec<RunShape> = runs
        .iter()
        .map(|r| RunShape {
            rows: r.rows(),
            dead: r.deleted_rows(),
        })
        .collect();
    choose_merge(&shapes, scan::overlap_depth(runs), options, full)
}

/// The compaction policy, over runs oldest first and how deep they overlap. `full` merges them
/// all. Otherwise read amplification comes first: once more than `max_runs` overlap, the newer
/// runs are merged, leaving out old runs larger than everything newer combined (size tiers),
/// even one with many superseded rows, whose rewrite would take long while fresh runs keep piling
/// up. Without too many runs, a run with more than `max_dead_fraction` of its rows superseded is
/// rewritten with everything newer.
fn choose_merge(
    runs: &[RunShape],
    depth: usize,
    options: &EmbeddedOptions,
    full: bool,
) -> Option<usize> {
    let first_dead = runs.iter().position(|r| r.too_dead(options));
    let deep = depth > options.max_runs;
    if !(full || deep || first_dead.is_some()) {
        return None;
    }
    let mut start = 0;
    while !full && runs.len() - start > 2 {
        let newer: u64 = runs[start + 1..].iter().map(|r| r.rows).sum();
        if runs[start].rows <= newer {
            break;
        }
        start += 1;
    }
    if deep && !full && runs.len() - start >= 2 {
        return Some(start);
    }
    if let Some(dead) = first_dead {
        start = start.min(dead);
    }
    let merged = &runs[start..];
    let worth = merged.len() >= 2 || merged.iter().any(|r| r.too_dead(options));
    worth.then_some(start)
}

/// Where a merge beside a large one starts, among runs of `rows` rows (oldest first) from
/// `start` on: the newest of them that together hold at most `bound` rows, if two or more do.
fn small_merge_start(rows: &[u64], start: usize, bound: u64) -> Option<usize> {
    let mut held = 0;
    let mut from = rows.len();
    while from > start && held + rows[from - 1] <= bound {
        from -= 1;
        held += rows[from];
    }
    (rows.len() - from >= 2).then_some(from)
}

fn dropped_during_write(name: &TableName) -> Error {
    Error::NoSuchTable {
        name: name.to_string(),
        hint: " (it was dropped during the write)".into(),
    }
}

/// Runs `f` over `tasks` on the machine's cores; results in task order.
fn parallel<T: Sync, R: Send>(tasks: &[T], f: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let threads = threads::cores().min(tasks.len());
    if threads <= 1 {
        return tasks.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<R>>>> = tasks.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    threads::yield_to_queries();
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(task) = tasks.get(i) else {
                        break;
                    };
                    *lock(&results[i]) = Some(f(task));
                }
            });
        }
    });
    results
        .into_iter()
        .map(|cell| {
            cell.into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .unwrap_or_else(|| Err(Error::Internal("a parallel task did not run".into())))
        })
        .collect()
}

fn retire_files(files: &[Arc<DataFile>]) {
    for f in files {
        f.retire();
    }
}

fn retire(tables: Vec<TableState>) {
    for t in tables {
        for run in &t.runs {
            retire_files(&run.files);
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn storage(&self, name: &TableName) -> Result<Option<TableStats>> {
        self.table_stats(name).map(Some)
    }

    async fn compact(&self, name: &TableName) -> Result<Option<Compaction>> {
        let inner = self.writer(|| format!("compact {name}"))?.clone();
        let name = name.clone();
        blocking(move || inner.compact(&name, true, StepsOn::Caller)).await
    }

    fn keyspaces(&self) -> Vec<KeyspaceDef> {
        self.state_or_last().keyspaces.values().cloned().collect()
    }

    fn keyspace(&self, name: &str) -> Result<KeyspaceDef> {
        let state = self.state()?;
        state
            .keyspaces
            .get(name)
            .cloned()
            .ok_or_else(|| state.no_such_keyspace(name))
    }

    fn tables(&self, keyspace: Option<&str>) -> Result<Vec<TableDef>> {
        let state = self.state()?;
        if let Some(ks) = keyspace
            && !state.keyspaces.contains_key(ks)
        {
            return Err(state.no_such_keyspace(ks));
        }
        Ok(state
            .tables
            .values()
            .filter(|t| keyspace.is_none_or(|k| t.def.keyspace == k))
            .map(|t| t.def.clone())
            .collect())
    }

    fn table(&self, name: &TableName) -> Result<TableDef> {
        Ok(self.state()?.table(name)?.def.clone())
    }

    async fn create_keyspace(&self, def: KeyspaceDef, if_not_exists: bool) -> Result<bool> {
        let inner = self
            .writer(|| format!("create keyspace '{}'", def.name))?
            .clone();
        blocking(move || inner.create_keyspace(def, if_not_exists)).await
    }

    async fn drop_keyspace(&self, name: &str, if_exists: bool) -> Result<bool> {
        let inner = self.writer(|| format!("drop keyspace '{name}'"))?.clone();
        let name = name.to_string();
        blocking(move || inner.drop_keyspace(&name, if_exists)).await
    }

    async fn create_table(&self, def: TableDef, if_not_exists: bool) -> Result<bool> {
        let inner = self
            .writer(|| format!("create table {}", def.table_name()))?
            .clone();
        blocking(move || inner.create_table(def, if_not_exists)).await
    }

    async fn drop_table(&self, name: &TableName, if_exists: bool) -> Result<bool> {
        let inner = self.writer(|| format!("drop table {name}"))?.clone();
        let name = name.clone();
        blocking(move || inner.drop_table(&name, if_exists)).await
    }

    fn views(&self, keyspace: Option<&str>) -> Result<Vec<ViewDef>> {
        let state = self.state()?;
        if let Some(ks) = keyspace
            && !state.keyspaces.contains_key(ks)
        {
            return Err(state.no_such_keyspace(ks));
        }
        Ok(state
            .views
            .values()
            .filter(|v| keyspace.is_none_or(|k| v.keyspace == k))
            .cloned()
            .collect())
    }

    fn view(&self, name: &TableName) -> Result<ViewDef> {
        let state = self.state()?;
        state
            .views
            .get(name)
            .cloned()
            .ok_or_else(|| state.no_such_view(name))
    }

    async fn create_view(&self, def: ViewDef, or_replace: bool) -> Result<bool> {
        let inner = self
            .writer(|| format!("create view {}", def.view_name()))?
            .clone();
        blocking(move || inner.create_view(def, or_replace)).await
    }

    async fn drop_view(&self, name: &TableName, if_exists: bool) -> Result<bool> {
        let inner = self.writer(|| format!("drop view {name}"))?.clone();
        let name = name.clone();
        blocking(move || inner.drop_view(&name, if_exists)).await
    }

    async fn write(&self, table: &TableName, batches: Vec<RecordBatch>) -> Result<WriteSummary> {
        let inner = self.writer(|| format!("write to {table}"))?.clone();
        let name = table.clone();
        let write = move || inner.write(&name, batches);
        match &self.mode {
            Mode::Writer {
                writes: Some(pool), ..
            } => pool.run(write).await.unwrap_or_else(|| {
                Err(Error::Internal(format!(
                    "a write to {table} failed unexpectedly (the log has the details)"
                )))
            }),
            _ => blocking(write).await,
        }
    }

    async fn stage_write(
        &self,
        table: &TableName,
        statement: u64,
        batches: Vec<RecordBatch>,
    ) -> Result<StagedWrite> {
        let target = {
            let state = self.state()?;
            let t = state.table(table)?;
            (table.clone(), t.id, t.def.clone(), t.shards)
        };
        let dir = self.dir().to_path_buf();
        let layout = Layout {
            cut_at_gaps: true,
            ..layout(self.options())
        };
        blocking(move || stage(&dir, layout, target, statement, batches)).await
    }

    async fn commit_writes(
        &self,
        table: &TableName,
        parts: Vec<StagedWrite>,
    ) -> Result<WriteSummary> {
        let inner = self
            .writer(|| format!("commit a write to {table}"))?
            .clone();
        let table = table.clone();
        blocking(move || inner.commit_writes(&table, parts)).await
    }

    fn discard_writes(&self, table: &TableName, statement: u64) -> Result<usize> {
        self.writer(|| format!("discard writes to {table}"))?
            .discard_writes(table, statement)
    }

    fn plan_scan(&self, request: &ScanRequest) -> Result<ScanPlan> {
        let snapshot = self.state()?.snapshot(&request.table)?;
        scan::plan(&snapshot, request)
    }

    async fn publish(&self) -> Result<()> {
        let Mode::Writer { inner, .. } = &self.mode else {
            return Ok(());
        };
        let inner = inner.clone();
        blocking(move || inner.flush()).await
    }
}

/// Runs blocking store work (file I/O, fsync, sorting) off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a store task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Float64Array, Int64Array};
    use arrow::datatypes::{Float64Type, Int64Type};

    fn shapes(runs: &[(u64, u64)]) -> Vec<RunShape> {
        runs.iter()
            .map(|&(rows, dead)| RunShape { rows, dead })
            .collect()
    }

    #[test]
    fn a_pile_of_fresh_runs_is_merged_before_a_large_run_with_superseded_rows() {
        let options = EmbeddedOptions::default();
        // A 10M-row base with 20% superseded, and six fresh runs over the whole ring.
        let mut runs = vec![(10_000_000, 2_000_000)];
        runs.extend([(300_000, 0); 6]);
        assert_eq!(choose_merge(&shapes(&runs), 7, &options, false), Some(1));
        // Once they are one run, the base is rewritten with it.
        let merged = [(10_000_000, 2_000_000), (1_800_000, 0)];
        assert_eq!(choose_merge(&shapes(&merged), 2, &options, false), Some(0));
        // Nothing superseded and few runs: nothing to do; `full` merges everything.
        let clean = [(10_000_000, 0), (1_800_000, 0)];
        assert_eq!(choose_merge(&shapes(&clean), 2, &options, false), None);
        assert_eq!(choose_merge(&shapes(&clean), 2, &options, true), Some(0));
        // Size tiers: each run larger than everything newer combined is left out.
        let tiers = [
            (10_000_000, 0),
            (2_000_000, 0),
            (300_000, 0),
            (300_000, 0),
            (300_000, 0),
        ];
        assert_eq!(choose_merge(&shapes(&tiers), 5, &options, false), Some(2));
    }

    #[test]
    fn a_small_merge_takes_the_newest_runs_that_fit() {
        assert_eq!(small_merge_start(&[1000, 100, 100, 100], 0, 250), Some(2));
        assert_eq!(small_merge_start(&[1000, 100, 100, 100], 0, 300), Some(1));
        // Never runs before `start`, and never fewer than two.
        assert_eq!(small_merge_start(&[100, 100, 100], 2, 1000), None);
        assert_eq!(small_merge_start(&[100, 300], 0, 250), None);
        assert_eq!(small_merge_start(&[], 0, 250), None);
    }

    /// A store with table `ks.t` (`id bigint` key, `value double`) over 16 shards.
    async fn id_value_store(
        options: EmbeddedOptions,
    ) -> (tempfile::TempDir, EmbeddedStore, TableDef, TableName) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), options).unwrap();
        let mut ks = KeyspaceDef::new("ks");
        ks.shards = 16;
        store.create_keyspace(ks, false).await.unwrap();
        let def = keys::tests::id_value_table();
        store.create_table(def.clone(), false).await.unwrap();
        (dir, store, def, TableName::new("ks", "t"))
    }

    /// Rows of `ids`, each with value `v`.
    fn id_value_rows(def: &TableDef, ids: std::ops::Range<i64>, v: f64) -> RecordBatch {
        RecordBatch::try_new(
            def.arrow_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(ids.clone())),
                Arc::new(Float64Array::from(vec![v; ids.count()])),
            ],
        )
        .unwrap()
    }

    /// Checks that `name` holds ids `0..ids` once each, with the values `expected` gives.
    fn assert_live_values(
        store: &EmbeddedStore,
        name: &TableName,
        ids: i64,
        expected: impl Fn(i64) -> f64,
    ) {
        let live = store.state().unwrap().snapshot(name).unwrap();
        let mut seen = BTreeMap::new();
        for batch in scan::read_shards(&live, 0..=15).unwrap() {
            let ids = batch.column(0).as_primitive::<Int64Type>();
            let values = batch.column(1).as_primitive::<Float64Type>();
            for (id, v) in ids.values().iter().zip(values.values()) {
                assert!(seen.insert(*id, *v).is_none(), "id {id} read twice");
            }
        }
        assert_eq!(seen.len() as i64, ids);
        for (id, v) in seen {
            assert_eq!(v, expected(id), "id {id}");
        }
    }

    /// Every thread of a store's compaction step pool (or, from [`HeldPool::hold_flushes`], of
    /// its flush step pool), occupied as other busy processes occupy the cores in the idle
    /// class's way: steps handed to the pool wait until [`HeldPool::release`].
    struct HeldPool {
        release: Sender<()>,
        holders: Vec<JoinHandle<()>>,
    }

    impl HeldPool {
        fn hold(inner: &Arc<Inner>) -> HeldPool {
            HeldPool::hold_pool(inner, inner.step_pool_threads(), |inner| &inner.step_pool)
        }

        fn hold_flushes(inner: &Arc<Inner>) -> HeldPool {
            HeldPool::hold_pool(inner, 1, |inner| &inner.flush_steps)
        }

        fn hold_pool(
            inner: &Arc<Inner>,
            threads: usize,
            pool: fn(&Inner) -> &StepPool,
        ) -> HeldPool {
            let (release, held) = channel::<()>();
            let held = Arc::new(Mutex::new(held));
            let (started, holding) = channel();
            let holders = (0..threads)
                .map(|_| {
                    let (inner, held, started) = (inner.clone(), held.clone(), started.clone());
                    std::thread::spawn(move || {
                        let step = move || {
                            started.send(()).unwrap();
                            // Until `release` is dropped.
                            let _ = lock(&held).recv();
                        };
                        pool(&inner).run(step, drop, || false);
                    })
                })
                .collect::<Vec<_>>();
            for _ in &holders {
                holding.recv_timeout(Duration::from_secs(30)).unwrap();
            }
            HeldPool { release, holders }
        }

        fn release(self) {
            drop(self.release);
            for holder in self.holders {
                holder.join().unwrap();
            }
        }
    }

    /// A flush the store starts itself sorts and writes its run in the idle class; while the
    /// idle class gets no core, the frozen rows stay readable, and once the memtable holds
    /// enough rows for the next flush, the waiting flush stops waiting and writes the run itself.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_flush_waiting_for_the_idle_class_writes_its_run_itself_once_the_next_is_due() {
        let options = EmbeddedOptions {
            memtable_flush_rows: 1000,
            bulk_write_rows: 1_000_000,
            rows_per_group: 100,
            ..EmbeddedOptions::default()
        };
        let (_dir, store, def, name) = id_value_store(options).await;
        let inner = store.writer(String::new).unwrap().clone();
        let held = HeldPool::hold_flushes(&inner);
        store
            .write(&name, vec![id_value_rows(&def, 0..1000, 1.0)])
            .await
            .unwrap();
        // The flush this write asked for waits for the held idle class: no run yet.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(store.table_stats(&name).unwrap().runs, 0);
        store
            .write(&name, vec![id_value_rows(&def, 500..1500, 2.0)])
            .await
            .unwrap();
        eventually("the waiting flush wrote its run itself", || {
            store.table_stats(&name).unwrap().runs >= 1
        });
        // The flush the second write asked for waits in the held idle class too, with the
        // memtable empty behind it: a flush asked for hurries it instead of waiting out its
        // patience (30 s).
        eventually("the second flush froze the memtable and waits", || {
            let state = lock(&inner.state);
            let table = state.tables.get(&name).unwrap();
            table.chunks.is_empty() && !table.frozen.is_empty()
        });
        let asked = Instant::now();
        store.flush().unwrap();
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "a flush asked for waited {:?} behind one in the idle class",
            asked.elapsed()
        );
        assert_eq!(store.table_stats(&name).unwrap().memtable_rows, 0);
        assert_live_values(&store, &name, 1500, |id| if id < 500 { 1.0 } else { 2.0 });
        held.release();
        store.wait_idle();
        assert_live_values(&store, &name, 1500, |id| if id < 500 { 1.0 } else { 2.0 });
    }

    /// A store of one compaction thread that compacts past two runs (`tune` sets the rest),
    /// with its step pool held and three runs of ids 0..1000 written, with values 1.0 to 3.0.
    async fn three_runs_beside_a_held_pool(
        tune: impl FnOnce(&mut EmbeddedOptions),
    ) -> (
        tempfile::TempDir,
        Arc<EmbeddedStore>,
        TableDef,
        TableName,
        Arc<Inner>,
        HeldPool,
    ) {
        let mut options = EmbeddedOptions {
            bulk_write_rows: 100,
            rows_per_group: 100,
            max_runs: 2,
            compaction_threads: 1,
            ..EmbeddedOptions::default()
        };
        tune(&mut options);
        let (dir, store, def, name) = id_value_store(options).await;
        let inner = store.writer(String::new).unwrap().clone();
        let held = HeldPool::hold(&inner);
        for v in 1..=3 {
            let rows = id_value_rows(&def, 0..1000, f64::from(v));
            store.write(&name, vec![rows]).await.unwrap();
        }
        (dir, Arc::new(store), def, name, inner, held)
    }

    /// Polls `check` until it holds, for at most a minute.
    fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !check() {
            assert!(Instant::now() < deadline, "{what}: not within a minute");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// While the idle class gets no CPU at all, compactions the store started itself still
    /// finish: a compaction asked for hurries those it waits for, and a table deeper than
    /// `raise_compaction_depth` is compacted at the writers' level; the steps left waiting in
    /// the idle class never run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compactions_finish_while_the_idle_class_gets_no_cpu() {
        let (_dir, store, def, name, inner, held) = three_runs_beside_a_held_pool(|options| {
            options.raise_compaction_depth = 5;
            options.idle_step_patience = Duration::from_secs(3600);
        })
        .await;
        let claimed = || !lock(&inner.state).tables[&name].compacting.is_empty();
        let depth = || store.table_stats(&name).unwrap().overlap_depth;

        // Three runs over every shard are deeper than `max_runs`: a background compaction
        // claims them and hands its first step to the held pool.
        eventually("a background compaction claims the runs", claimed);
        let asked = {
            let (store, name) = (store.clone(), name.clone());
            tokio::task::spawn_blocking(move || store.compact(&name))
        };
        let asked = tokio::time::timeout(Duration::from_secs(60), asked).await;
        assert!(
            asked
                .expect("the compaction asked for waits no longer than the one it hurried")
                .unwrap()
                .is_ok()
        );
        assert_eq!(store.table_stats(&name).unwrap().runs, 1);
        assert_live_values(&store, &name, 1000, |_| 3.0);

        // Runs arriving faster than the held idle class merges them: past depth 5, compactions
        // run at the writers' level until the table is no deeper than that again.
        for v in 4..=12 {
            let rows = id_value_rows(&def, 0..1000, f64::from(v));
            store.write(&name, vec![rows]).await.unwrap();
        }
        eventually("the table is 5 runs deep or less", || depth() <= 5);
        assert_live_values(&store, &name, 1000, |_| 12.0);

        // Once the idle class runs again, background work settles at `max_runs`, and no file
        // but the runs' is left: steps given up on wrote none, or deleted theirs.
        held.release();
        assert!(store.wait_idle_for(Duration::from_secs(60)));
        assert!(depth() <= 2, "depth {}", depth());
        assert_live_values(&store, &name, 1000, |_| 12.0);
        eventually("only the runs' files are left", || {
            let on_disk: HashSet<PathBuf> = walk_files(&inner.dir.join("data"))
                .unwrap()
                .into_iter()
                .collect();
            on_disk == live_files(&lock(&inner.state))
        });
    }

    /// A flush asked for by a write past the threshold, run after another flush took the
    /// memtable, finds it under the threshold and leaves it: it would make a run of only the
    /// rows written since.
    #[tokio::test]
    async fn a_flush_asked_for_once_too_often_leaves_a_small_memtable_alone() {
        let options = EmbeddedOptions {
            memtable_flush_rows: 100,
            background: false,
            ..EmbeddedOptions::default()
        };
        let (_dir, store, def, name) = id_value_store(options).await;
        let inner = store.writer(String::new).unwrap().clone();
        store
            .write(&name, vec![id_value_rows(&def, 0..150, 1.0)])
            .await
            .unwrap();
        let flushed = store.table_stats(&name).unwrap();
        assert_eq!((flushed.runs, flushed.memtable_rows), (1, 0));
        store
            .write(&name, vec![id_value_rows(&def, 150..170, 2.0)])
            .await
            .unwrap();
        inner.run_job(Job::Flush, false);
        let after = store.table_stats(&name).unwrap();
        assert_eq!((after.runs, after.memtable_rows), (1, 20));
    }

    /// Closing the store drains its queued compactions at the writers' level: whoever closes it
    /// waits, also while the idle class gets no CPU.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_the_store_does_not_wait_for_the_idle_class() {
        let (dir, store, _, name, inner, held) = three_runs_beside_a_held_pool(|options| {
            options.idle_step_patience = Duration::from_secs(3600);
        })
        .await;
        eventually("a background compaction claims the runs", || {
            !lock(&inner.state).tables[&name].compacting.is_empty()
        });
        let options = inner.options.clone();
        drop(inner);
        let closed = tokio::task::spawn_blocking(move || drop(store));
        tokio::time::timeout(Duration::from_secs(60), closed)
            .await
            .expect("closed without waiting for the idle class")
            .unwrap();
        held.release();
        // The queued compaction finished before the store closed. The step it gave up on is
        // discarded only now, on the pool's thread, and drops the obsolete files it held while
        // the store reopens and removes the files no run lists: either may delete one first.
        let store = EmbeddedStore::open(dir.path(), options).unwrap();
        assert!(store.table_stats(&name).unwrap().overlap_depth <= 2);
        assert_live_values(&store, &name, 1000, |_| 3.0);
    }

    /// A table that wants compacting but is not deep enough to raise its compactions is still
    /// merged while the idle class gets no CPU: a compaction gives up on a step there after
    /// `idle_step_patience`, and runs it and its later steps itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compaction_runs_its_steps_itself_once_one_waited_out_its_patience() {
        let (_dir, store, _, name, _, held) = three_runs_beside_a_held_pool(|options| {
            options.idle_step_patience = Duration::from_millis(500);
        })
        .await;
        assert!(store.wait_idle_for(Duration::from_secs(60)));
        assert!(store.table_stats(&name).unwrap().overlap_depth <= 2);
        assert_live_values(&store, &name, 1000, |_| 3.0);
        held.release();
    }

    /// The key hashes new files hold are those of their rows' keys, whether computed as a bulk
    /// write's run is written or carried from the memtable through a flush and from older files
    /// through a compaction; and those a writer keeps of the files it just wrote are those the
    /// files hold, row group by row group: searches trust them instead of reading the `_key`
    /// column back.
    #[tokio::test]
    async fn new_files_hold_and_keep_the_key_hashes_of_their_rows() {
        let options = EmbeddedOptions {
            bulk_write_rows: 100,
            rows_per_group: 500,
            rows_per_file: 1_000,
            background: false,
            ..EmbeddedOptions::default()
        };
        let (_dir, store, def, name) = id_value_store(options).await;
        store
            .write(&name, vec![id_value_rows(&def, 0..3000, 1.0)])
            .await
            .unwrap();
        store
            .write(&name, vec![id_value_rows(&def, 2000..2200, 2.0)])
            .await
            .unwrap();
        // Into the memtable: flushed, then compacted with the bulk writes' runs.
        store
            .write(&name, vec![id_value_rows(&def, 2900..2990, 2.5)])
            .await
            .unwrap();
        store.flush().unwrap();
        store.compact(&name).unwrap();
        store
            .write(&name, vec![id_value_rows(&def, 100..160, 3.0)])
            .await
            .unwrap();
        store.flush().unwrap();
        let live = store.state().unwrap().snapshot(&name).unwrap();
        let mut groups = 0;
        for run in &live.runs {
            for file in &run.files {
                let key_column = file.key_column.expect("new files hold key hashes");
                for group in 0..file.groups.len() {
                    let kept = match file.key_hashes(group, || panic!("not kept")).unwrap() {
                        keys::GroupHashes::Sorted(kept) => kept,
                        keys::GroupHashes::InRowOrder(_) => panic!("the cache has room"),
                    };
                    let mut held = Vec::new();
                    for batch in scan::read_group(file, group, &[key_column], None).unwrap() {
                        held.extend_from_slice(
                            batch
                                .unwrap()
                                .column(0)
                                .as_primitive::<Int64Type>()
                                .values(),
                        );
                    }
                    assert_eq!(*kept, keys::GroupKeys::sorted(held), "{}", file.relative);
                    let every_column: Vec<usize> = (0..=key_column).collect();
                    for batch in scan::read_group(file, group, &every_column, None).unwrap() {
                        let batch = batch.unwrap();
                        assert_eq!(
                            batch.column(key_column).as_primitive::<Int64Type>(),
                            &keys::key_hashes(&def, &batch).unwrap(),
                            "{} row group {group}",
                            file.relative
                        );
                    }
                    groups += 1;
                }
            }
        }
        assert!(groups >= 7, "{groups} row groups checked");
    }

    /// Every split reads its live rows whole, in stored form with their key hashes: a run's
    /// row groups without the rows newer writes hide, and the memtable's chunks.
    #[tokio::test]
    async fn splits_read_their_live_rows_with_their_key_hashes() {
        let options = EmbeddedOptions {
            bulk_write_rows: 100,
            background: false,
            ..EmbeddedOptions::default()
        };
        let (_dir, store, def, name) = id_value_store(options).await;
        store
            .write(&name, vec![id_value_rows(&def, 0..300, 1.0)])
            .await
            .unwrap();
        store
            .write(&name, vec![id_value_rows(&def, 100..150, 2.0)])
            .await
            .unwrap();
        let snapshot = store.state().unwrap().snapshot(&name).unwrap();
        assert_eq!((snapshot.runs.len(), snapshot.chunks.len()), (1, 1));
        let (_, sources) = scan::plan_sources(&snapshot, &ScanRequest::full(name.clone())).unwrap();
        let mut seen = BTreeMap::new();
        for (_, source) in sources {
            for batch in source.stored_batches().unwrap() {
                let batch = batch.unwrap();
                assert_eq!(
                    batch.column(3).as_primitive::<Int64Type>(),
                    &keys::key_hashes(&def, &batch).unwrap()
                );
                let ids = batch.column(0).as_primitive::<Int64Type>();
                let values = batch.column(1).as_primitive::<Float64Type>();
                for (id, v) in ids.values().iter().zip(values.values()) {
                    assert!(seen.insert(*id, *v).is_none(), "id {id} read twice");
                }
            }
        }
        assert_eq!(seen.len(), 300);
        assert!(
            seen.iter()
                .all(|(id, v)| *v == if (100..150).contains(id) { 2.0 } else { 1.0 })
        );
    }

    /// Each id a scan of `snapshot` reads, with its value: read as queries read them, through
    /// every split's live rows, and never twice.
    fn scanned_values(snapshot: &TableSnapshot, name: &TableName) -> BTreeMap<i64, f64> {
        let (_, sources) = scan::plan_sources(snapshot, &ScanRequest::full(name.clone())).unwrap();
        let mut seen = BTreeMap::new();
        for (_, source) in sources {
            for batch in source.batches(Arc::default()).unwrap() {
                let batch = batch.unwrap();
                let ids = batch.column(0).as_primitive::<Int64Type>();
                let values = batch.column(1).as_primitive::<Float64Type>();
                for (id, v) in ids.values().iter().zip(values.values()) {
                    assert!(seen.insert(*id, *v).is_none(), "id {id} read twice");
                }
            }
        }
        seen
    }

    /// A store that flushes only when told, with ids 0..1000 (value 1.0) in a run of row
    /// groups of 100 rows and ids 100..120 (value 2.0) in the memtable.
    async fn run_and_chunk_store() -> (tempfile::TempDir, EmbeddedStore, TableDef, TableName) {
        let options = EmbeddedOptions {
            bulk_write_rows: 100,
            rows_per_group: 100,
            background: false,
            ..EmbeddedOptions::default()
        };
        let (dir, store, def, name) = id_value_store(options).await;
        store
            .write(&name, vec![id_value_rows(&def, 0..1000, 1.0)])
            .await
            .unwrap();
        store
            .write(&name, vec![id_value_rows(&def, 100..120, 2.0)])
            .await
            .unwrap();
        (dir, store, def, name)
    }

    /// A scan planned a few writes ago takes the rows its chunks hide from what the cover
    /// thread worked out for its own state, though the thread has moved on to newer ones since:
    /// it builds no key set of the chunks and compares no row group. And a run's files covered
    /// before they are installed leave scans nothing to work out either.
    #[tokio::test]
    async fn scans_behind_the_cover_thread_and_new_runs_find_their_hidden_rows_worked_out() {
        let (_dir, store, def, name) = run_and_chunk_store().await;
        let first = store.state().unwrap().snapshot(&name).unwrap();
        store
            .write(&name, vec![id_value_rows(&def, 500..530, 3.0)])
            .await
            .unwrap();
        let second = store.state().unwrap().snapshot(&name).unwrap();
        let expected = |id: i64| match id {
            100..120 => 2.0,
            500..530 => 3.0,
            _ => 1.0,
        };
        // The cover thread's turns: the first state, then the second.
        scan::cover(&first).unwrap();
        scan::cover(&second).unwrap();
        // A scan of the first state planned again: it reads the same rows and works out nothing.
        let behind = TableSnapshot {
            mem_keys: Arc::new(first.mem_keys.next()),
            ..first.clone()
        };
        let seen = scanned_values(&behind, &name);
        assert_eq!(behind.mem_keys.sets_built(), 0);
        assert_eq!(seen.len(), 1000);
        assert!(
            seen.iter()
                .all(|(id, v)| *v == if (100..120).contains(id) { 2.0 } else { 1.0 })
        );
        let current = TableSnapshot {
            mem_keys: Arc::new(second.mem_keys.next()),
            ..second.clone()
        };
        let seen = scanned_values(&current, &name);
        assert_eq!(current.mem_keys.sets_built(), 0);
        assert!(seen.iter().all(|(id, v)| *v == expected(*id)), "{seen:?}");

        // A bulk write's run (ids 400..550 again), covered before a scan sees it: the chunk
        // written after it (ids 540..545) hides five of its rows; the older chunks hide none.
        store
            .write(&name, vec![id_value_rows(&def, 400..550, 4.0)])
            .await
            .unwrap();
        store
            .write(&name, vec![id_value_rows(&def, 540..545, 5.0)])
            .await
            .unwrap();
        let third = store.state().unwrap().snapshot(&name).unwrap();
        let newest = third.runs.iter().max_by_key(|r| r.seq).unwrap();
        scan::cover_files(&third, &newest.files, newest.seq).unwrap();
        let fresh = TableSnapshot {
            mem_keys: Arc::new(third.mem_keys.next()),
            ..third.clone()
        };
        let seen = scanned_values(&fresh, &name);
        assert!(
            fresh.mem_keys.sets_built() <= 1,
            "only the old runs' comparisons with the newest chunk"
        );
        assert_eq!(seen.len(), 1000);
        for (id, v) in seen {
            let want = match id {
                540..545 => 5.0,
                400..550 => 4.0,
                other => expected(other),
            };
            assert_eq!(v, want, "id {id}");
        }
    }

    /// A scan planned while a flush was writing its chunks (so it holds them, and a chunk
    /// written after them) and read after the flush installed its run never takes rows hidden
    /// as worked out for the state after the flush: that state no longer holds the flushed
    /// chunks, whose rows the scan's older deletion vectors do not mark.
    #[tokio::test]
    async fn a_scan_from_before_a_flush_never_takes_hidden_rows_worked_out_without_its_chunks() {
        let (_dir, store, def, name) = run_and_chunk_store().await;
        let before = store.state().unwrap().snapshot(&name).unwrap();
        store.flush().unwrap();
        store
            .write(&name, vec![id_value_rows(&def, 500..530, 3.0)])
            .await
            .unwrap();
        let after = store.state().unwrap().snapshot(&name).unwrap();
        assert_eq!((before.chunks.len(), after.chunks.len()), (1, 1));
        // The cover thread's turn after the flush, then the scan: the runs and deletion vectors
        // from before the flush, its chunk and the one written since.
        scan::cover(&after).unwrap();
        let during = TableSnapshot {
            chunks: before.chunks.iter().chain(&after.chunks).cloned().collect(),
            mem_keys: Arc::new(before.mem_keys.next()),
            ..before.clone()
        };
        let seen = scanned_values(&during, &name);
        assert_eq!(seen.len(), 1000);
        for (id, v) in seen {
            let want = match id {
                100..120 => 2.0,
                500..530 => 3.0,
                _ => 1.0,
            };
            assert_eq!(v, want, "id {id}");
        }
    }

    /// A store that compacts nothing on its own, holding ids 0..3000 at 1.0 and a newer run of
    /// 1000..2000 at 2.0, for tests that run a compaction's steps themselves.
    async fn two_runs_to_compact() -> (tempfile::TempDir, EmbeddedStore, TableDef, TableName) {
        let options = EmbeddedOptions {
            bulk_write_rows: 100,
            rows_per_group: 500,
            rows_per_file: 1_000,
            max_dead_fraction: 1.0,
            background: false,
            ..EmbeddedOptions::default()
        };
        let (dir, store, def, name) = id_value_store(options).await;
        let rows = |ids, v| id_value_rows(&def, ids, v);
        store.write(&name, vec![rows(0..3000, 1.0)]).await.unwrap();
        store
            .write(&name, vec![rows(1000..2000, 2.0)])
            .await
            .unwrap();
        (dir, store, def, name)
    }

    /// A run committed while a compaction was written wins over the compacted rows with its
    /// keys; every other row keeps its newest version from the merged runs.
    #[tokio::test]
    async fn a_run_committed_during_a_compaction_wins_over_its_rows() {
        let (_dir, store, def, name) = two_runs_to_compact().await;
        let rows = |ids, v| id_value_rows(&def, ids, v);

        let inner = store.writer(String::new).unwrap();
        let (id, snapshot, _claim) = inner.compaction_snapshot(&name, true).unwrap().unwrap();
        assert_eq!(snapshot.runs.len(), 2);
        let (files, mut report) = inner.rewrite(&snapshot, id, StepsOn::Caller).unwrap();
        // Committed while the compaction's files were being written.
        store
            .write(&name, vec![rows(1500..2500, 3.0)])
            .await
            .unwrap();
        assert!(
            inner
                .install_compaction(&name, id, &snapshot, files, &mut report, StepsOn::Caller)
                .unwrap()
                .is_some()
        );

        let stats = store.table_stats(&name).unwrap();
        assert_eq!((stats.runs, stats.deleted_rows), (2, 1000), "{stats:?}");
        assert_live_values(&store, &name, 3000, |id| match id {
            1500..2500 => 3.0,
            1000..1500 => 2.0,
            _ => 1.0,
        });
    }

    /// A compaction's install searches only the newer runs its comparison ahead of the commit
    /// lock did not see: rows superseded by a run seen ahead and by one committed after it both
    /// lose, and no other row does.
    #[tokio::test]
    async fn a_compaction_compared_ahead_of_its_install_still_loses_to_runs_committed_after() {
        let (_dir, store, def, name) = two_runs_to_compact().await;
        let rows = |ids, v| id_value_rows(&def, ids, v);
        let inner = store.writer(String::new).unwrap();
        let (id, snapshot, _claim) = inner.compaction_snapshot(&name, true).unwrap().unwrap();
        let (files, report) = inner.rewrite(&snapshot, id, StepsOn::Caller).unwrap();
        store
            .write(&name, vec![rows(1500..2500, 3.0)])
            .await
            .unwrap();
        let run = NewRun {
            seq: snapshot.runs.iter().map(|r| r.seq).max().unwrap(),
            files,
        };
        let replaces: Vec<u64> = snapshot.runs.iter().map(|r| r.seq).collect();
        let ahead = inner.supersede_ahead(&name, id, &run, &replaces, StepsOn::Caller);
        assert_eq!(ahead.files.len(), 1, "the run committed during the rewrite");
        assert_eq!(ahead.rows.values().map(Vec::len).sum::<usize>(), 1000);
        // Committed between the comparison ahead and the install.
        store
            .write(&name, vec![rows(2400..2900, 4.0)])
            .await
            .unwrap();
        let how = Install {
            replaces,
            newer_only: true,
            compaction: Some(report),
            ahead: Some(ahead),
            ..Install::default()
        };
        let keys = || Err(Error::Internal("not asked for".into()));
        inner.install(&name, id, vec![run], &keys, how).unwrap();

        let stats = store.table_stats(&name).unwrap();
        // The compacted run loses 1500..2900; the run of 3.0 loses 2400..2500.
        assert_eq!(
            (stats.runs, stats.deleted_rows),
            (3, 1400 + 100),
            "{stats:?}"
        );
        assert_live_values(&store, &name, 3000, |id| match id {
            2400..2900 => 4.0,
            1500..2400 => 3.0,
            1000..1500 => 2.0,
            _ => 1.0,
        });
    }

    #[tokio::test]
    async fn compactions_side_by_side_merge_different_runs_and_the_newest_row_wins() {
        let options = EmbeddedOptions {
            bulk_write_rows: 100,
            rows_per_group: 500,
            rows_per_file: 1_000,
            max_runs: 1,
            max_dead_fraction: 1.0,
            background: false,
            ..EmbeddedOptions::default()
        };
        let (_dir, store, def, name) = id_value_store(options).await;
        let inner = store.writer(String::new).unwrap();
        // Runs are written by hand (`write` would compact after each with max_runs 1).
        let add_run = |ids, v| add_run(inner, &def, &name, ids, v);
        add_run(0..3000, 1.0);
        add_run(1000..2000, 2.0);

        // The first compaction claims both runs; a second one started meanwhile finds nothing
        // it may merge until newer runs arrive, then merges only those.
        let (id, first, first_claim) = inner.compaction_snapshot(&name, false).unwrap().unwrap();
        assert_eq!(first.runs.len(), 2);
        assert!(inner.compaction_snapshot(&name, false).unwrap().is_none());
        add_run(1500..2500, 3.0);
        add_run(2000..2200, 4.0);
        let (_, second, second_claim) = inner.compaction_snapshot(&name, false).unwrap().unwrap();
        let merged: Vec<u64> = second.runs.iter().map(|r| r.seq).collect();
        assert!(
            merged
                .iter()
                .all(|seq| !first.runs.iter().any(|r| r.seq == *seq)),
            "{merged:?} were claimed already"
        );
        assert_eq!(merged.len(), 2);

        // The newer merge commits first; then the older one, which loses to it.
        let (files, mut report) = inner.rewrite(&second, id, StepsOn::Caller).unwrap();
        inner
            .install_compaction(&name, id, &second, files, &mut report, StepsOn::Caller)
            .unwrap();
        drop(second_claim);
        let (files, mut report) = inner.rewrite(&first, id, StepsOn::Caller).unwrap();
        inner
            .install_compaction(&name, id, &first, files, &mut report, StepsOn::Caller)
            .unwrap();
        drop(first_claim);
        assert!(
            lock(&inner.state)
                .table(&name)
                .unwrap()
                .compacting
                .is_empty()
        );
        assert_eq!(store.table_stats(&name).unwrap().runs, 2);

        assert_live_values(&store, &name, 3000, |id| match id {
            2000..2200 => 4.0,
            1500..2500 => 3.0,
            1000..1500 => 2.0,
            _ => 1.0,
        });
    }

    /// Adds the rows `ids` with value `v` to `name` as a run of their own.
    fn add_run(inner: &Inner, def: &TableDef, name: &TableName, ids: std::ops::Range<i64>, v: f64) {
        let rows = id_value_rows(def, ids, v);
        let seq = lock(&inner.state).next_seq();
        let sorted = sort_dedup(def, &[with_tokens(def, &rows).unwrap()]).unwrap();
        let (shards, id, file_id) = {
            let mut state = lock(&inner.state);
            let table = state.table(name).unwrap();
            let (shards, id) = (table.shards, table.id);
            (shards, id, state.next_id())
        };
        let files = write_files(
            &inner.dir,
            inner.layout(),
            def,
            id,
            file_id,
            &shards,
            &sorted,
        )
        .unwrap();
        let keys = || key_set_of_rows(def, &sorted, seq);
        let new = vec![NewRun { seq, files }];
        inner
            .install(name, id, new, &keys, Install::default())
            .unwrap();
    }

    #[tokio::test]
    async fn beside_a_large_merge_another_merges_only_the_newest_small_runs() {
        let options = EmbeddedOptions {
            bulk_write_rows: 100,
            rows_per_group: 500,
            rows_per_file: 1_000,
            max_runs: 1,
            // Merges of more than 2 * 1 * 100 rows are large.
            memtable_flush_rows: 100,
            max_dead_fraction: 1.0,
            background: false,
            ..EmbeddedOptions::default()
        };
        assert_eq!(options.small_merge_rows(), 200);
        let (_dir, store, def, name) = id_value_store(options).await;
        let inner = store.writer(String::new).unwrap();
        add_run(inner, &def, &name, 0..3000, 1.0);
        add_run(inner, &def, &name, 3000..6000, 1.0);
        let (_, large, large_claim) = inner.compaction_snapshot(&name, false).unwrap().unwrap();
        assert_eq!(large.runs.len(), 2);
        for (v, ids) in [(2.0, 6000..6100), (3.0, 6100..6200), (4.0, 6200..6300)] {
            add_run(inner, &def, &name, ids, v);
        }
        // Three fresh runs of 100 rows: the two newest fit beside the large merge.
        let (_, small, small_claim) = inner.compaction_snapshot(&name, false).unwrap().unwrap();
        let runs = lock(&inner.state).table(&name).unwrap().runs.clone();
        let newest: Vec<u64> = runs[3..].iter().map(|r| r.seq).collect();
        let merged: Vec<u64> = small.runs.iter().map(|r| r.seq).collect();
        assert_eq!(merged, newest);
        drop(small_claim);
        // Released without committing, beside the large merge still running: two again.
        let (_, again, again_claim) = inner.compaction_snapshot(&name, false).unwrap().unwrap();
        assert_eq!(again.runs.len(), 2);
        drop(again_claim);
        drop(large_claim);
        assert!(!lock(&inner.state).table(&name).unwrap().large_merge);
        // Once the large merge is gone, a merge may take every run again.
        let (_, all, _claim) = inner.compaction_snapshot(&name, false).unwrap().unwrap();
        assert_eq!(all.runs.len(), 5);
    }

    #[tokio::test]
    async fn a_compaction_leaves_out_runs_older_than_a_run_still_being_written() {
        let options = EmbeddedOptions {
            max_runs: 1,
            max_dead_fraction: 1.0,
            background: false,
            memtable_flush_rows: 1_000_000,
            ..EmbeddedOptions::default()
        };
        let (_dir, store, def, name) = id_value_store(options).await;
        let rows = |ids| id_value_rows(&def, ids, 1.0);
        let inner = store.writer(String::new).unwrap();
        store.write(&name, vec![rows(0..10)]).await.unwrap();
        inner.flush_runs(StepsOn::Caller).unwrap();
        // A large write takes its number here and is still writing its files.
        let pending = Pending {
            inner,
            table: name.clone(),
            seqs: vec![lock(&inner.state).next_pending_seq(&name).unwrap()],
        };
        for ids in [10..20, 20..30, 30..40] {
            store.write(&name, vec![rows(ids)]).await.unwrap();
            inner.flush_runs(StepsOn::Caller).unwrap();
        }
        let (_, snapshot, claim) = inner.compaction_snapshot(&name, false).unwrap().unwrap();
        let oldest = lock(&inner.state).table(&name).unwrap().runs[0].seq;
        assert_eq!(
            snapshot.runs.len(),
            3,
            "the three runs newer than the pending one"
        );
        assert!(
            snapshot
                .runs
                .iter()
                .all(|r| r.seq > pending.seqs[0] && r.seq != oldest)
        );
        drop(claim);
        drop(pending);
        let (_, snapshot, _claim) = inner.compaction_snapshot(&name, false).unwrap().unwrap();
        assert_eq!(snapshot.runs.len(), 4, "nothing pending: every run");
    }
}
