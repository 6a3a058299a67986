//! Planning and reading scans of the embedded store.
//!
//! ```text
//!   predicates ──▶ allowed token ranges ──▶ splits: each row group of each run, each memtable chunk
//!        │                                        │
//!        ▼                                        ▼
//!   row-group statistics              decode only rows in range, minus rows superseded by newer
//!                                     writes (the run's deletion vector, newer memtable rows),
//!                                     and keep only those the predicates may match
//! ```
//!
//! Every primary key is live in exactly one place. When a run is added, the store marks the rows
//! of older runs it supersedes in their deletion vectors (`deletes.rs`), and rows of older
//! memtable chunks are dropped when a newer write arrives; memtable rows newer than a run hide
//! its rows with the same keys through the memtable's key set (`keys.rs`), worked out once per
//! state of the memtable. So runs and chunks are read side by side without merging or hashing,
//! row groups are pruned by statistics on any column, and a table with fresh writes overlapping
//! all of its ring reads almost as fast as the same rows compacted.
//!
//! The predicates the scan can evaluate on its own columns ([`BatchFilter`]) drop rows in the
//! same pass as the superseded ones, so a selective query copies out only the rows it keeps.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, RecordBatch, RecordBatchOptions,
    Scalar,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{and, cast, concat_batches, filter_record_batch};
use arrow::datatypes::{Int64Type, SchemaRef};
use futures::stream;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection, RowSelectionPolicy,
    statistics::StatisticsConverter,
};
use parquet::file::reader::ChunkReader;
use quarry_core::schema::TableDef;
use quarry_core::shard_map::ShardMap;
use quarry_core::shard_set::ShardSet;
use quarry_core::token::TokenRange;

use crate::embedded::data_file::DataFileRef;
use crate::embedded::deletes::{Deletes, union};
use crate::embedded::keys::{KeySet, Tagged, with_key_column, with_key_field};
use crate::embedded::memtable::MemChunk;
use crate::error::{Error, Result};
use crate::predicate::{BatchFilter, CmpOp, Predicate};
use crate::store::{BatchStream, ReadCounters, ScanPlan, ScanRequest, ScanSplit, SplitSource};

/// Rows per batch read from Parquet (DataFusion's default batch size).
const BATCH_ROWS: usize = 8192;
/// Rows of memtable chunks read by one split.
const CHUNK_SPLIT_ROWS: usize = 65_536;
/// Row selections whose runs of selected rows average fewer rows than this are applied as a mask.
const MASK_BELOW_RUN_ROWS: usize = 2048;
/// Selections of less than one row in this many skip the rest whatever their runs' lengths.
const SKIP_ABOVE_SHARE: usize = 16;

/// A run: files written together, ordered by token, sharing a sequence number, each with the
/// rows newer writes superseded.
#[derive(Debug)]
pub struct Run {
    pub seq: u64,
    pub files: Vec<DataFileRef>,
    /// Per file, its deletion vector; `None` while no row of it was superseded.
    pub deletes: Vec<Option<Arc<Deletes>>>,
}

impl Run {
    /// The deleted rows of row group `group` of file `file`, numbered within the group; `None`
    /// when there are none.
    pub fn deleted_in_group(&self, file: usize, group: usize) -> Option<Arc<Vec<u32>>> {
        let deletes = self.deletes.get(file)?.as_ref()?;
        let rows = deletes
            .in_groups(&self.files[file].group_starts)
            .get(group)?;
        (!rows.is_empty()).then(|| rows.clone())
    }

    /// Rows written, counting superseded ones.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows()).sum()
    }

    /// Rows superseded by newer writes.
    pub fn deleted_rows(&self) -> u64 {
        self.deletes.iter().flatten().map(|d| d.rows.len()).sum()
    }
}

/// The most runs that hold rows of any one shard: how many files a scan of one shard opens.
/// Runs that cover disjoint shards (the parts of one distributed write) add nothing to each
/// other's depth.
pub fn overlap_depth(runs: &[Arc<Run>]) -> usize {
    // +1 where a run's shard interval starts, -1 past where it ends; a run's own intervals are
    // merged first so that it counts once per shard.
    let mut events: Vec<(u64, i64)> = Vec::new();
    for run in runs {
        let mut intervals: Vec<(u32, u32)> = run
            .files
            .iter()
            .flat_map(|f| f.groups.iter().map(|g| (g.first_shard, g.last_shard)))
            .collect();
        intervals.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::new();
        for (first, last) in intervals {
            match merged.last_mut() {
                Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
                _ => merged.push((first, last)),
            }
        }
        for (first, last) in merged {
            events.push((u64::from(first), 1));
            events.push((u64::from(last) + 1, -1));
        }
    }
    events.sort_unstable();
    let (mut depth, mut deepest) = (0i64, 0i64);
    for (_, change) in events {
        depth += change;
        deepest = deepest.max(depth);
    }
    deepest as usize
}

/// What one scan sees of a table.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    pub def: TableDef,
    pub shards: ShardMap,
    pub runs: Vec<Arc<Run>>,
    pub chunks: Vec<Arc<MemChunk>>,
    /// The keys of `chunks`, shared by every snapshot of the same memtable.
    pub mem_keys: Arc<MemKeys>,
}

/// A row group: its file's path and its number in the file.
type GroupId = (String, usize);

/// How many states of the memtable each row group keeps what was worked out for: a scan planned
/// a few writes ago uses the newest entry no newer than its own state (the cover thread, running
/// ahead of it, would otherwise leave it to compare the whole memtable with every row group).
const COVERED_HISTORY: usize = 8;

/// The keys of the memtable's chunks, and per row group of a run the rows they supersede. One
/// per state of the memtable: a write or a flush starts the next one, which inherits what was
/// worked out, so a scan after a write compares the older runs with the new chunks only.
#[derive(Debug, Default)]
pub struct MemKeys {
    /// Per row group, the rows hidden by chunks up to a sequence number, for the last few such
    /// numbers (ascending); shared by every state of the memtable. Hidden rows stay hidden: a
    /// chunk row is only ever superseded by a newer write of the same key, and flushed chunks
    /// leave deletion vectors behind.
    covered: Arc<Mutex<HashMap<GroupId, Vec<Covered>>>>,
    /// Keys of this state's chunks newer than a sequence number, by that number; worked out once
    /// however many threads ask at the same time (a scan's partitions and the cover thread).
    sets: Mutex<HashMap<u64, SetCell>>,
}

/// A key set some thread is building or has built.
type SetCell = Arc<Mutex<Option<Arc<KeySet>>>>;

/// The rows of a row group hidden by the chunks of some state of the memtable.
#[derive(Debug, Clone)]
struct Covered {
    /// The newest chunk compared.
    seq: u64,
    /// The oldest chunk compared: of the chunks up to `seq`, those older than it had been
    /// flushed when the rows were worked out (their rows are in the run's deletion vectors from
    /// then on), so a scan still holding one of them cannot use these rows.
    since: u64,
    /// Rows hidden, numbered within the group, sorted.
    rows: Arc<Vec<u32>>,
}

impl Covered {
    /// Whether a state of the memtable holding `chunks`, newest `newest`, may take these rows
    /// for a row group of a run with sequence number `run_seq` (and compare only its chunks
    /// newer than `self.seq`).
    fn serves(&self, chunks: &[Arc<MemChunk>], run_seq: u64, newest: u64) -> bool {
        self.seq <= newest
            && chunks
                .iter()
                .all(|c| c.seq <= run_seq || c.seq > self.seq || c.seq >= self.since)
    }
}

/// The oldest chunk's sequence number: flushes take the oldest chunks, so every chunk from it
/// to the newest is in `chunks`.
fn oldest(chunks: &[Arc<MemChunk>]) -> u64 {
    chunks.iter().map(|c| c.seq).min().unwrap_or(u64::MAX)
}

impl MemKeys {
    /// The next state's: the same rows hidden so far, the chunks' keys to be worked out anew.
    pub fn next(&self) -> MemKeys {
        MemKeys {
            covered: self.covered.clone(),
            sets: Mutex::default(),
        }
    }

    /// How many key sets of chunks this state of the memtable built.
    #[cfg(test)]
    pub fn sets_built(&self) -> usize {
        lock(&self.sets).len()
    }

    /// Forgets the row groups of files no run lists any more.
    pub fn retain_files(&self, keep: &dyn Fn(&str) -> bool) {
        lock(&self.covered).retain(|(file, _), _| keep(file));
    }

    /// The keys of the chunks newer than `seq`.
    fn newer_than(
        &self,
        table: &TableDef,
        chunks: &[Arc<MemChunk>],
        seq: u64,
    ) -> Result<Arc<KeySet>> {
        let cell = lock(&self.sets).entry(seq).or_default().clone();
        if super::threads::in_background() {
            // The cover thread or a compaction's step: a scan must not wait on the cell while
            // it builds, since it may get no CPU until the scan's cores are idle. It builds
            // aside, and keeps whichever set was stored first.
            if let Some(set) = lock(&cell).as_ref() {
                return Ok(set.clone());
            }
            let set = Arc::new(chunk_keys(table, chunks, seq)?);
            return Ok(lock(&cell).get_or_insert(set).clone());
        }
        // Whoever comes second waits for the first to build it (or to fail, and builds it then).
        let mut built = lock(&cell);
        if let Some(set) = built.as_ref() {
            return Ok(set.clone());
        }
        let set = Arc::new(chunk_keys(table, chunks, seq)?);
        *built = Some(set.clone());
        Ok(set)
    }

    /// For a flush of `chunks` (of the memtable, with `newest` the newest chunk it holds):
    /// the newest chunk compared with row group `group` of `file` (of a run with sequence
    /// number `run_seq`), and the rows hidden (sorted), as scans and the cover thread worked
    /// them out.
    pub fn known(
        &self,
        file: &DataFileRef,
        group: usize,
        chunks: &[Arc<MemChunk>],
        run_seq: u64,
    ) -> Option<(u64, Arc<Vec<u32>>)> {
        lock(&self.covered)
            .get(&(file.relative.clone(), group))?
            .iter()
            .rev()
            .find(|known| known.serves(chunks, run_seq, u64::MAX))
            .map(|known| (known.seq, known.rows.clone()))
    }

    /// Rows of row group `group` of `file` (of a run with sequence number `seq`) that a newer
    /// row of `chunks` supersedes, numbered within the group.
    fn hidden(
        &self,
        table: &TableDef,
        chunks: &[Arc<MemChunk>],
        file: &DataFileRef,
        group: usize,
        seq: u64,
    ) -> Result<Arc<Vec<u32>>> {
        let newest = chunks.iter().map(|c| c.seq).max().unwrap_or(0);
        let id = (file.relative.clone(), group);
        // What was worked out for a later state may hide rows of chunks this scan does not see:
        // the newest entry no newer than this state, and worked out with all its chunks.
        let known = lock(&self.covered).get(&id).and_then(|history| {
            history
                .iter()
                .rev()
                .find(|known| known.serves(chunks, seq, newest))
                .cloned()
        });
        let (from, since, known) = match known {
            Some(known) if known.seq == newest => return Ok(known.rows),
            // Chunks no newer than the run hide none of its rows.
            Some(known) => (known.seq.max(seq), known.since, Some(known.rows)),
            None => (seq, oldest(chunks), None),
        };
        let rows = if from >= newest {
            known.unwrap_or_default()
        } else {
            // Every row of the set is newer than `from`, so newer than the run.
            let set = self.newer_than(table, chunks, from)?;
            let mut found: Vec<u32> = set
                .matches_in_group(table, file, group)?
                .into_iter()
                .map(|(row, _)| row)
                .collect();
            found.sort_unstable();
            found.dedup();
            match known {
                // Nothing new: the same list, not a copy.
                Some(known) if found.is_empty() => known,
                known => Arc::new(union(known.as_deref().map_or(&[], Vec::as_slice), &found)),
            }
        };
        // Chunks between the entry's newest and this state's oldest were flushed meanwhile.
        let since = if oldest(chunks) > from {
            since.max(oldest(chunks))
        } else {
            since
        };
        let mut covered = lock(&self.covered);
        let history = covered.entry(id).or_default();
        if let Err(at) = history.binary_search_by_key(&newest, |c| c.seq) {
            history.insert(
                at,
                Covered {
                    seq: newest,
                    since,
                    rows: rows.clone(),
                },
            );
            if history.len() > COVERED_HISTORY {
                history.remove(0);
            }
        }
        Ok(rows)
    }
}

/// The keys of the chunks newer than `seq`, each row tagged with its chunk's sequence number.
pub fn chunk_keys(table: &TableDef, chunks: &[Arc<MemChunk>], seq: u64) -> Result<KeySet> {
    let parts: Vec<Tagged<'_>> = chunks
        .iter()
        .filter(|c| c.seq > seq)
        .map(|c| Tagged::of_rows(table, &c.rows, &c.hashes, c.seq))
        .collect();
    KeySet::new(table, &parts)
}

/// Works out, for every row group of the snapshot's runs, which rows its memtable chunks hide,
/// so that scans planned later find it done and compare the runs only with chunks newer still.
/// The store's cover thread calls it as writes arrive.
pub fn cover(snapshot: &TableSnapshot) -> Result<()> {
    for run in &snapshot.runs {
        cover_files(snapshot, &run.files, run.seq)?;
    }
    Ok(())
}

/// As [`cover`], for the files of a run with sequence number `seq` that flushes and compactions
/// are about to install: the first scans after it find its rows hidden by the chunks written
/// meanwhile worked out (for a compaction's run, that is the whole memtable), and compare it
/// only with newer chunks, as they do the other runs.
pub fn cover_files(snapshot: &TableSnapshot, files: &[DataFileRef], seq: u64) -> Result<()> {
    if snapshot.chunks.is_empty() {
        return Ok(());
    }
    for file in files {
        for group in 0..file.groups.len() {
            super::threads::yield_to_queries();
            snapshot
                .mem_keys
                .hidden(&snapshot.def, &snapshot.chunks, file, group, seq)?;
        }
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The memtable as a scan sees it, to hide the rows of runs it supersedes.
#[derive(Debug)]
struct Overlay {
    keys: Arc<MemKeys>,
    chunks: Vec<Arc<MemChunk>>,
}

/// Plans a scan of `snapshot`.
pub fn plan(snapshot: &TableSnapshot, request: &ScanRequest) -> Result<ScanPlan> {
    let (plan, sources) = plan_sources(snapshot, request)?;
    let splits = sources.into_iter().map(|(split, _)| split).collect();
    Ok(ScanPlan { splits, ..plan })
}

pub(crate) type PlannedSources = (ScanPlan, Vec<(ScanSplit, Arc<dyn SyncSource>)>);

pub(crate) fn plan_sources(
    snapshot: &TableSnapshot,
    request: &ScanRequest,
) -> Result<PlannedSources> {
    let table = &snapshot.def;
    let shards = snapshot.shards;
    let table_schema = crate::store::scan_schema(table);
    let projection: Vec<usize> = match &request.projection {
        Some(p) => {
            for &i in p {
                if i >= table.columns.len() {
                    return Err(Error::Internal(format!(
                        "projection index {i} is past the {} columns of {}",
                        table.columns.len(),
                        table.table_name()
                    )));
                }
            }
            p.clone()
        }
        None => (0..table.columns.len()).collect(),
    };
    let schema = Arc::new(table_schema.project(&projection)?);
    let allowed = crate::scan_ranges::allowed_ranges(&snapshot.def, snapshot.shards, request);
    let mut selected = 0u32;
    let mut last_counted: Option<u32> = None;
    for range in &allowed {
        if let Some(r) = shards.shards_overlapping(range) {
            let start = match last_counted {
                Some(l) if l >= *r.start() => l + 1,
                _ => *r.start(),
            };
            if *r.end() >= start {
                selected += r.end() - start + 1;
                last_counted = Some(*r.end());
            }
        }
    }

    let overlaps = |min: i64, max: i64| {
        allowed.iter().any(|r| {
            !r.intersect(&TokenRange::new(min.saturating_sub(1), max))
                .is_empty()
        })
    };
    let read = Arc::new(ReadSpec {
        table: table.clone(),
        schema: schema.clone(),
        projection,
        limit: request.limit,
        filter: Arc::new(BatchFilter::new(&request.filters, &schema)),
    });
    // The shards a piece returns rows of: a piece spanning shards the scan does not want is read
    // through a token filter.
    let covered = |token_filter: &Option<Vec<TokenRange>>, min: i64, max: i64| {
        token_filter
            .as_deref()
            .and_then(|ranges| {
                let (first, _) = ranges.first()?.bounds_inclusive()?;
                let (_, last) = ranges.last()?.bounds_inclusive()?;
                Some(shards.shard_of(first).0..=shards.shard_of(last).0)
            })
            .unwrap_or(shards.shard_of(min).0..=shards.shard_of(max).0)
    };
    let overlay = (!snapshot.chunks.is_empty()).then(|| {
        Arc::new(Overlay {
            keys: snapshot.mem_keys.clone(),
            chunks: snapshot.chunks.clone(),
        })
    });
    let mut splits: Vec<(ScanSplit, Arc<dyn SyncSource>)> = Vec::new();
    for run in &snapshot.runs {
        for (f, file) in run.files.iter().enumerate() {
            for (group, info) in file.groups.iter().enumerate() {
                // Every key is live in one place only (older copies are deleted), so pruning a
                // row group by its statistics can never bring back an older version of a row.
                if !overlaps(info.min_token, info.max_token)
                    || !group_may_match(file, group, &read.table, &request.filters)
                {
                    continue;
                }
                let deleted = run.deleted_in_group(f, group);
                let dead = deleted.as_ref().map_or(0, |d| d.len() as u64);
                if dead >= info.rows {
                    continue;
                }
                let token_filter = filter_for(&allowed, info.min_token, info.max_token);
                let shards = covered(&token_filter, info.min_token, info.max_token);
                let source: Arc<dyn SyncSource> = Arc::new(GroupSplit {
                    file: file.clone(),
                    group,
                    token_filter,
                    read: read.clone(),
                    deleted,
                    overlay: overlay.clone().map(|o| (o, run.seq)),
                });
                splits.push((
                    ScanSplit {
                        shards,
                        estimated_rows: info.rows - dead,
                        source: Arc::new(Spawned(source.clone())),
                    },
                    source,
                ));
            }
        }
    }
    // Memtable chunks are one per write (often a few hundred rows each): they are read in groups
    // of about `CHUNK_SPLIT_ROWS` rows, as batches of about `BATCH_ROWS`, so a query over a busy
    // memtable does not pay per-batch costs a thousand times.
    let mut group = ChunkSplit {
        chunks: Vec::new(),
        read: read.clone(),
    };
    let push_group = |group: &mut ChunkSplit, splits: &mut Vec<_>| {
        if group.chunks.is_empty() {
            return;
        }
        let group = std::mem::replace(
            group,
            ChunkSplit {
                chunks: Vec::new(),
                read: read.clone(),
            },
        );
        let shards = group
            .chunks
            .iter()
            .map(|c| covered(&c.token_filter, c.chunk.min_token, c.chunk.max_token))
            .reduce(|a, b| *a.start().min(b.start())..=*a.end().max(b.end()))
            .unwrap_or(0..=0);
        let estimated_rows = group.chunks.iter().map(|c| c.chunk.num_rows() as u64).sum();
        let source: Arc<dyn SyncSource> = Arc::new(group);
        splits.push((
            ScanSplit {
                shards,
                estimated_rows,
                source: Arc::new(Spawned(source.clone())),
            },
            source,
        ));
    };
    let mut held = 0;
    for chunk in &snapshot.chunks {
        if chunk.num_rows() == 0 || !overlaps(chunk.min_token, chunk.max_token) {
            continue;
        }
        group.chunks.push(ChunkRead {
            chunk: chunk.clone(),
            token_filter: filter_for(&allowed, chunk.min_token, chunk.max_token),
        });
        held += chunk.num_rows();
        if held >= CHUNK_SPLIT_ROWS {
            push_group(&mut group, &mut splits);
            held = 0;
        }
    }
    push_group(&mut group, &mut splits);
    splits.sort_by_key(|(split, _)| (*split.shards.start(), *split.shards.end()));
    let plan = ScanPlan {
        schema,
        splits: Vec::new(),
        shards_selected: selected,
        shards_total: shards.shard_count(),
    };
    Ok((plan, splits))
}

/// What every split of one scan returns.
#[derive(Debug, Clone)]
struct ReadSpec {
    table: TableDef,
    schema: SchemaRef,
    projection: Vec<usize>,
    limit: Option<usize>,
    /// The query's predicates a split applies where it filters its rows anyway.
    filter: Arc<BatchFilter>,
}

impl ReadSpec {
    /// The projected columns (the first ones read) in the scan's schema.
    fn output(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let projected = RecordBatch::try_new_with_options(
            Arc::new(
                batch
                    .schema()
                    .project(&(0..self.projection.len()).collect::<Vec<_>>())?,
            ),
            batch.columns()[..self.projection.len()].to_vec(),
            &options,
        )?;
        crate::store::cast_batch(&projected, &self.schema)
    }
}

/// The allowed ranges clipped to `[min, max]`, or `None` when they cover all of it.
fn filter_for(allowed: &[TokenRange], min: i64, max: i64) -> Option<Vec<TokenRange>> {
    let span = TokenRange::new(min.saturating_sub(1), max);
    let clipped: Vec<TokenRange> = allowed
        .iter()
        .map(|r| r.intersect(&span))
        .filter(|r| !r.is_empty())
        .collect();
    match clipped.as_slice() {
        [only] if *only == span => None,
        _ => Some(clipped),
    }
}

/// False when the row group's statistics prove no row can match every filter.
fn group_may_match(
    file: &DataFileRef,
    group: usize,
    table: &TableDef,
    filters: &[Predicate],
) -> bool {
    let metadata = file.metadata.metadata();
    let Some(row_group) = metadata.row_groups().get(group) else {
        return true;
    };
    filters.iter().all(|filter| {
        let verdict = match filter {
            Predicate::Compare { column, op, value } => stats_of(file, row_group, table, column)
                .and_then(|(min, max)| compare_range(&min, &max, *op, value)),
            Predicate::InList { column, values } => {
                stats_of(file, row_group, table, column).map(|(min, max)| {
                    (0..values.len()).any(|i| {
                        compare_range(&min, &max, CmpOp::Eq, &values.slice(i, 1)) != Some(false)
                    })
                })
            }
            Predicate::TokenRange(_) => None,
        };
        verdict != Some(false)
    })
}

fn stats_of(
    file: &DataFileRef,
    row_group: &parquet::file::metadata::RowGroupMetaData,
    table: &TableDef,
    column: &str,
) -> Option<(ArrayRef, ArrayRef)> {
    table.column_index(column).ok()?;
    let converter = StatisticsConverter::try_new(
        column,
        file.metadata.schema(),
        file.metadata.parquet_schema(),
    )
    .ok()?;
    let min = converter.row_group_mins([row_group]).ok()?;
    let max = converter.row_group_maxes([row_group]).ok()?;
    Some((min, max))
}

/// Whether `[min, max]` may hold a value `v` with `v <op> value`; `None` when unknown.
fn compare_range(min: &ArrayRef, max: &ArrayRef, op: CmpOp, value: &ArrayRef) -> Option<bool> {
    if min.is_null(0) || max.is_null(0) {
        return None;
    }
    let value = cast(value, min.data_type()).ok()?;
    if value.is_null(0) {
        return None;
    }
    let v = Scalar::new(value);
    // Some value in range is below (above) `value` when the least (greatest) one is.
    let result = match op {
        CmpOp::Eq => and(
            &CmpOp::LtEq.evaluate(min, &v).ok()?,
            &CmpOp::GtEq.evaluate(max, &v).ok()?,
        )
        .ok()?,
        CmpOp::Lt | CmpOp::LtEq => op.evaluate(min, &v).ok()?,
        CmpOp::Gt | CmpOp::GtEq => op.evaluate(max, &v).ok()?,
    };
    (!result.is_null(0)).then(|| result.value(0))
}

/// A split read by pulling batches: decoded as the consumer asks (one row group or chunk, as
/// DataFusion's own Parquet scan does), without a thread hand-off per batch. [`Spawned`] serves
/// it to async readers; compaction pulls it in place.
pub(crate) trait SyncSource: Send + Sync + std::fmt::Debug {
    /// The split's batches. The live rows each batch was filtered from are counted into `reads`
    /// as it is made: rows read, whether or not the query's predicates kept them.
    fn batches(&self, reads: Arc<ReadCounters>) -> Result<BatchIter>;
    /// The split's live rows whole, in stored form with their key hashes (the table's columns
    /// in its own types, the token column, the [`crate::embedded::keys::KEY_COLUMN`]), ignoring
    /// the scan's projection and predicates: what a compaction rewrites.
    fn stored_batches(&self) -> Result<BatchIter>;
    fn describe(&self) -> String;
    fn limit(&self) -> Option<usize>;
}

type BatchIter = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

#[derive(Debug)]
struct Spawned(Arc<dyn SyncSource>);

impl SplitSource for Spawned {
    fn open_counted(&self, reads: Arc<ReadCounters>) -> Result<BatchStream> {
        let source = self.0.clone();
        let mut remaining = source.limit().unwrap_or(usize::MAX);
        // Marked as reading from the start and around each batch decoded, so that work in the
        // idle class keeps paused while a batch is decoded, not only between batches.
        super::threads::query_reading();
        let mut batches = source.batches(reads)?;
        let pulled = std::iter::from_fn(move || {
            super::threads::query_reading();
            let batch = batches.next();
            super::threads::query_reading();
            batch
        });
        let limited = pulled.map_while(move |batch| {
            if remaining == 0 {
                return None;
            }
            Some(batch.map(|b| {
                let b = if b.num_rows() > remaining {
                    b.slice(0, remaining)
                } else {
                    b
                };
                remaining -= b.num_rows();
                b
            }))
        });
        Ok(Box::pin(stream::iter(limited)))
    }

    fn describe(&self) -> String {
        self.0.describe()
    }
}

/// Reads every live row of a snapshot's runs in shards `shards`, synchronously, in stored form
/// with key hashes (for compaction, one window of shards at a time: the tokens and key hashes
/// the files hold are carried into the new run, never computed again). The runs are read one
/// after the other in the snapshot's order, so of rows with equal keys the newest run's comes
/// last.
pub(crate) fn read_shards(
    snapshot: &TableSnapshot,
    shards: std::ops::RangeInclusive<u32>,
) -> Result<Vec<RecordBatch>> {
    let request = ScanRequest {
        shards: Some(ShardSet::from_ranges([shards])),
        ..ScanRequest::full(snapshot.def.table_name())
    };
    let mut out = Vec::new();
    for run in &snapshot.runs {
        let one = TableSnapshot {
            def: snapshot.def.clone(),
            shards: snapshot.shards,
            runs: vec![run.clone()],
            chunks: Vec::new(),
            mem_keys: Arc::default(),
        };
        for (_, source) in plan_sources(&one, &request)?.1 {
            for batch in source.stored_batches()? {
                out.push(batch?);
                super::threads::yield_to_queries();
            }
        }
    }
    Ok(out)
}

/// Reads one row group of one run file, skipping its superseded rows.
#[derive(Debug)]
struct GroupSplit {
    file: DataFileRef,
    group: usize,
    token_filter: Option<Vec<TokenRange>>,
    /// Shared by every split of the scan, as is the overlay.
    read: Arc<ReadSpec>,
    /// Rows of the group a newer run superseded, numbered within the group.
    deleted: Option<Arc<Vec<u32>>>,
    /// The memtable, and the run's sequence number: memtable rows newer than the run hide its
    /// rows with the same keys.
    overlay: Option<(Arc<Overlay>, u64)>,
}

/// Reads memtable chunks, in sequence order.
#[derive(Debug)]
struct ChunkSplit {
    chunks: Vec<ChunkRead>,
    read: Arc<ReadSpec>,
}

/// One chunk of a [`ChunkSplit`], and the token ranges wanted of it (`None`: all).
#[derive(Debug)]
struct ChunkRead {
    chunk: Arc<MemChunk>,
    token_filter: Option<Vec<TokenRange>>,
}

/// The rows of a row group a split reads.
struct GroupRows {
    /// Those the token filter selects, as sorted, disjoint ranges.
    selected: Vec<Range<usize>>,
    /// Those of them superseded by newer writes, sorted.
    skip: Arc<Vec<u32>>,
}

impl GroupSplit {
    fn rows(&self) -> Result<GroupRows> {
        let token_column = self.read.table.columns.len();
        // A row group spanning shards the scan does not want: its rows are sorted by token, so
        // the token column alone says which rows to decode, and only those are read.
        let selected = match &self.token_filter {
            Some(ranges) => selected_rows(&self.file, self.group, token_column, ranges)?,
            None => None,
        };
        let hidden = match &self.overlay {
            Some((overlay, seq)) => Some(overlay.keys.hidden(
                &self.read.table,
                &overlay.chunks,
                &self.file,
                self.group,
                *seq,
            )?),
            None => None,
        };
        // A group's deleted rows and the rows the memtable hides overlap only where a deleted
        // row was hidden before its deletion was written; most groups have only one of them,
        // shared as it is.
        let skip = match (&self.deleted, hidden) {
            (None, None) => Arc::default(),
            (Some(rows), None) => rows.clone(),
            (Some(deleted), Some(hidden)) if hidden.is_empty() => deleted.clone(),
            (None, Some(hidden)) => hidden,
            (Some(deleted), Some(hidden)) => Arc::new(union(deleted, &hidden)),
        };
        let total = self.file.groups[self.group].rows as usize;
        Ok(GroupRows {
            selected: selected.unwrap_or_else(|| std::iter::once(0..total).collect()),
            skip,
        })
    }
}

/// `ranges` (sorted, disjoint) without the rows of `skip` (sorted, unique).
fn without_rows(ranges: &[Range<usize>], skip: &[u32]) -> Vec<Range<usize>> {
    let mut out = Vec::with_capacity(ranges.len() + skip.len());
    let mut skip = skip.iter().map(|&r| r as usize).peekable();
    for range in ranges {
        let mut start = range.start;
        while let Some(&row) = skip.peek() {
            if row >= range.end {
                break;
            }
            skip.next();
            if row < start {
                continue;
            }
            if row > start {
                out.push(start..row);
            }
            start = row + 1;
        }
        if start < range.end {
            out.push(start..range.end);
        }
    }
    out
}

/// The rows of `selected` (sorted, disjoint ranges) not in `skip` (sorted, unique), as ranges,
/// and how many they are.
fn live_rows(selected: &[Range<usize>], skip: &[u32]) -> (Vec<Range<usize>>, usize) {
    let live = without_rows(selected, skip);
    let rows = live.iter().map(Range::len).sum();
    (live, rows)
}

/// Per row of `selected` (sorted, disjoint ranges, read in order), whether it is not in `skip`
/// (sorted, unique).
fn live_mask(selected: &[Range<usize>], skip: &[u32]) -> BooleanBuffer {
    let total = selected.iter().map(Range::len).sum();
    let mut live = BooleanBufferBuilder::new(total);
    live.append_n(total, true);
    let mut skip = skip.iter().map(|&r| r as usize).peekable();
    let mut offset = 0;
    for range in selected {
        while let Some(row) = skip.next_if(|&row| row < range.end) {
            if row >= range.start {
                live.set_bit(offset + row - range.start, false);
            }
        }
        offset += range.len();
    }
    live.finish()
}

/// Whether `live` rows of a group of `total` are few enough to read alone, skipping the rest.
fn is_sparse(live: usize, total: usize) -> bool {
    live.saturating_mul(SKIP_ABOVE_SHARE) < total
}

impl SyncSource for GroupSplit {
    fn limit(&self) -> Option<usize> {
        self.read.limit
    }

    fn batches(&self, reads: Arc<ReadCounters>) -> Result<BatchIter> {
        let read = self.read.clone();
        let mut columns = read.projection.clone();
        // An empty projection (`count(*)`) reads the token column to have rows to count.
        if columns.is_empty() {
            columns.push(read.table.columns.len());
        }
        let GroupRows { selected, skip } = self.rows()?;
        let total = self.file.groups[self.group].rows as usize;
        let (live, live_rows) = live_rows(&selected, &skip);
        if live_rows == 0 {
            return Ok(Box::new(std::iter::empty()));
        }
        let outputs = move |batch: Result<RecordBatch>| match batch {
            Ok(b) if b.num_rows() == 0 => None,
            other => Some(other),
        };
        // The query's predicates are applied here, in the same pass as dropping superseded rows:
        // only the rows the query keeps are copied out of the decoded columns (the query's own
        // filter then finds them all matching), where dropping superseded rows first would copy
        // nearly all of them and the query's filter copy its share again. Where nothing is
        // superseded, the rows the query drops still never enter its operators (a selective
        // count over a compacted table took half the time). Without predicates, or with so few
        // live rows that they are read alone, the reader selects the live rows.
        if read.filter.is_empty() || is_sparse(live_rows, total) {
            let selection = (live_rows < total).then_some(live);
            let reader = read_group(&self.file, self.group, &columns, selection)?;
            return Ok(Box::new(reader.filter_map(move |batch| {
                outputs(batch.and_then(|batch| {
                    // The data directory is this machine's: every row is read beside its data.
                    reads.add(true, batch.num_rows() as u64);
                    read.output(&batch)
                }))
            })));
        }
        let alive = (!skip.is_empty()).then(|| live_mask(&selected, &skip));
        let selection = (selected.len() > 1 || selected[0] != (0..total)).then_some(selected);
        let reader = read_group(&self.file, self.group, &columns, selection)?;
        let mut at = 0;
        Ok(Box::new(reader.filter_map(move |batch| {
            let kept = batch.and_then(|batch| {
                let batch = read.output(&batch)?;
                let live = alive
                    .as_ref()
                    .map(|alive| BooleanArray::new(alive.slice(at, batch.num_rows()), None));
                at += batch.num_rows();
                let live_rows = live.as_ref().map_or(batch.num_rows(), |l| l.true_count());
                reads.add(true, live_rows as u64);
                let keep = match (live, read.filter.evaluate(&batch)?) {
                    (Some(live), Some(matching)) => and(&live, &matching)?,
                    (Some(only), None) | (None, Some(only)) => only,
                    (None, None) => return Ok(batch),
                };
                Ok(filter_record_batch(&batch, &keep)?)
            });
            outputs(kept)
        })))
    }

    fn stored_batches(&self) -> Result<BatchIter> {
        let table = self.read.table.clone();
        let GroupRows { selected, skip } = self.rows()?;
        let total = self.file.groups[self.group].rows as usize;
        let (live, live_rows) = live_rows(&selected, &skip);
        if live_rows == 0 {
            return Ok(Box::new(std::iter::empty()));
        }
        // The table's columns and the token; the key hashes where the file holds them (files
        // written before they were stored have them computed).
        let mut columns: Vec<usize> = (0..=table.columns.len()).collect();
        columns.extend(self.file.key_column);
        let reader = read_group(
            &self.file,
            self.group,
            &columns,
            (live_rows < total).then_some(live),
        )?;
        // The table's own types (text as `Utf8`, as data files hold it), not the scan's.
        let schema = with_key_field(&crate::embedded::sorted_rows::stored_schema(&table));
        Ok(Box::new(reader.map(move |batch| {
            let batch = with_key_column(&table, &batch?)?;
            crate::store::cast_batch(&batch, &schema)
        })))
    }

    fn describe(&self) -> String {
        format!("{} row group {}", self.file.relative, self.group)
    }
}

impl SyncSource for ChunkSplit {
    fn limit(&self) -> Option<usize> {
        self.read.limit
    }

    fn batches(&self, reads: Arc<ReadCounters>) -> Result<BatchIter> {
        let mut columns = self.read.projection.clone();
        columns.push(self.read.table.columns.len());
        // The wanted rows of each chunk, projected (the token column last), then glued into
        // batches of about `BATCH_ROWS`: gluing copies them, so the query's predicates are
        // applied first and only the rows it keeps are copied.
        let mut pieces = Vec::with_capacity(self.chunks.len());
        for c in &self.chunks {
            let rows = c.chunk.rows.project(&columns)?;
            let rows = match &c.token_filter {
                Some(ranges) => keep_ranges(&rows, columns.len() - 1, ranges)?,
                None => rows,
            };
            reads.add(true, rows.num_rows() as u64);
            let rows = self.read.output(&rows)?;
            let rows = match self.read.filter.evaluate(&rows)? {
                Some(matching) => filter_record_batch(&rows, &matching)?,
                None => rows,
            };
            if rows.num_rows() > 0 {
                pieces.push(rows);
            }
        }
        let schema = self.read.schema.clone();
        let mut pieces = pieces.into_iter().peekable();
        Ok(Box::new(std::iter::from_fn(move || {
            let mut batch = Vec::new();
            let mut rows = 0;
            while let Some(piece) = pieces.next_if(|_| rows < BATCH_ROWS) {
                rows += piece.num_rows();
                batch.push(piece);
            }
            match batch.len() {
                0 => None,
                1 => batch.pop().map(Ok),
                _ => Some(concat_batches(&schema, &batch).map_err(Error::from)),
            }
        })))
    }

    fn stored_batches(&self) -> Result<BatchIter> {
        let table = self.read.table.clone();
        let token_column = table.columns.len();
        let mut pieces = Vec::with_capacity(self.chunks.len());
        for c in &self.chunks {
            let rows = c.chunk.rows_with_hashes()?;
            let rows = match &c.token_filter {
                Some(ranges) => keep_ranges(&rows, token_column, ranges)?,
                None => rows,
            };
            if rows.num_rows() > 0 {
                pieces.push(Ok(rows));
            }
        }
        Ok(Box::new(pieces.into_iter()))
    }

    fn describe(&self) -> String {
        match (self.chunks.first(), self.chunks.last()) {
            (Some(first), Some(last)) if self.chunks.len() > 1 => {
                format!("memtable chunks {} to {}", first.chunk.seq, last.chunk.seq)
            }
            (Some(only), _) => format!("memtable chunk {}", only.chunk.seq),
            _ => "no memtable chunks".into(),
        }
    }
}

/// The rows of a row group whose token lies in `ranges`, as consecutive row ranges; `None` when
/// that is every row. Rows are sorted by token: ranges that start and end at shard boundaries
/// (a task's shards) map to rows through the group's cached shard starts; other ranges read the
/// token column (at `token_column`).
fn selected_rows(
    file: &DataFileRef,
    group: usize,
    token_column: usize,
    ranges: &[TokenRange],
) -> Result<Option<Vec<Range<usize>>>> {
    let read_tokens = || -> Result<Vec<i64>> {
        let mut tokens: Vec<i64> = Vec::new();
        for batch in read_group(file, group, &[token_column], None)? {
            let batch = batch?;
            tokens.extend_from_slice(batch.column(0).as_primitive::<Int64Type>().values());
        }
        Ok(tokens)
    };
    let info = file.groups[group];
    let shards = file.shards;
    // A bound cuts no shard of this group when it lies on a shard boundary or outside the
    // group's tokens.
    let is_boundary = |t: i64| shards.range_of(shards.shard_of(t)).end == t;
    let aligned = ranges.iter().all(|r| {
        (r.start < info.min_token || is_boundary(r.start))
            && (r.end >= info.max_token || is_boundary(r.end))
    });
    let mut selected: Vec<Range<usize>> = Vec::new();
    let mut push = |from: usize, to: usize| {
        if from < to {
            match selected.last_mut() {
                Some(last) if last.end >= from => last.end = last.end.max(to),
                _ => selected.push(from..to),
            }
        }
    };
    let total = if aligned {
        let starts = file.shard_starts(group, read_tokens)?;
        for r in ranges {
            let first = if r.start < info.min_token {
                info.first_shard
            } else {
                shards.shard_of(r.start.saturating_add(1)).0
            };
            let last = if r.end >= info.max_token {
                info.last_shard
            } else {
                shards.shard_of(r.end).0
            };
            if first > last || last < info.first_shard || first > info.last_shard {
                continue;
            }
            let first = first.max(info.first_shard) - info.first_shard;
            let last = last.min(info.last_shard) - info.first_shard;
            push(
                starts[first as usize] as usize,
                starts[last as usize + 1] as usize,
            );
        }
        starts.last().copied().unwrap_or(0) as usize
    } else {
        let tokens = read_tokens()?;
        for r in ranges {
            // Tokens in (start, end].
            push(
                tokens.partition_point(|&t| t <= r.start),
                tokens.partition_point(|&t| t <= r.end),
            );
        }
        tokens.len()
    };
    if selected.len() == 1 && selected[0] == (0..total) {
        return Ok(None);
    }
    Ok(Some(selected))
}

/// Reads the given stored-form columns of one row group, returned in the order asked for; only
/// the rows of `selection` when given.
pub(crate) fn read_group(
    file: &DataFileRef,
    group: usize,
    columns: &[usize],
    selection: Option<Vec<Range<usize>>>,
) -> Result<impl Iterator<Item = Result<RecordBatch>> + use<>> {
    let mut sorted: Vec<usize> = columns.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let total = file.metadata.metadata().row_group(group).num_rows() as usize;
    let sparse = selection
        .as_ref()
        .is_some_and(|rows| is_sparse(rows.iter().map(|r| r.len()).sum(), total));
    // Deleted rows scattered over a row group make many short runs of rows: decoding them all
    // and dropping the deleted ones through a mask is faster than skipping each gap. A task's
    // shards (few long runs) are still skipped, and so are the gaps between a few scattered rows
    // (the keys of candidate matches), which would otherwise decode the whole group for them.
    let policy = if sparse {
        RowSelectionPolicy::Selectors
    } else {
        RowSelectionPolicy::Auto {
            threshold: MASK_BELOW_RUN_ROWS,
        }
    };
    let read = GroupRead {
        group,
        mask: ProjectionMask::roots(file.metadata.parquet_schema(), sorted.iter().copied()),
        selection: selection
            .map(|rows| RowSelection::from_consecutive_ranges(rows.into_iter(), total)),
        policy,
    };
    // A few scattered rows are taken from the mapped file, where a read touches only the values
    // it decodes (see `DataFile::mapped`); everything else is read through the file.
    let metadata = file.metadata.clone();
    let reader = if sparse {
        read.build(ParquetRecordBatchReaderBuilder::new_with_metadata(
            file.mapped()?,
            metadata,
        ))?
    } else {
        read.build(ParquetRecordBatchReaderBuilder::new_with_metadata(
            file.open_file()?,
            metadata,
        ))?
    };
    let order: Vec<usize> = columns
        .iter()
        .map(|c| sorted.binary_search(c).unwrap_or(0))
        .collect();
    Ok(reader.map(move |batch| Ok(batch?.project(&order)?)))
}

/// What [`read_group`] reads of a row group, whichever way the file's bytes arrive.
struct GroupRead {
    group: usize,
    mask: ProjectionMask,
    selection: Option<RowSelection>,
    policy: RowSelectionPolicy,
}

impl GroupRead {
    fn build<T: ChunkReader + 'static>(
        self,
        builder: ParquetRecordBatchReaderBuilder<T>,
    ) -> Result<ParquetRecordBatchReader> {
        let mut builder = builder
            .with_row_groups(vec![self.group])
            .with_projection(self.mask)
            .with_batch_size(BATCH_ROWS);
        if let Some(rows) = self.selection {
            builder = builder
                .with_row_selection(rows)
                .with_row_selection_policy(self.policy);
        }
        Ok(builder.build()?)
    }
}

/// Keeps the rows whose token (column `token_position`) lies in one of `ranges`.
fn keep_ranges(
    batch: &RecordBatch,
    token_position: usize,
    ranges: &[TokenRange],
) -> Result<RecordBatch> {
    let tokens = batch.column(token_position);
    let token_values = tokens.as_primitive::<Int64Type>();
    let (Some(first), Some(last)) = (
        token_values.values().iter().min(),
        token_values.values().iter().max(),
    ) else {
        return Ok(batch.clone());
    };
    if ranges
        .iter()
        .any(|r| r.contains(*first) && r.contains(*last))
    {
        return Ok(batch.clone());
    }
    // `ranges` are sorted and disjoint: one binary search per row, however many ranges a task's
    // shard set has.
    let mask: BooleanArray = token_values
        .values()
        .iter()
        .map(|&t| {
            let i = ranges.partition_point(|r| r.end < t);
            Some(ranges.get(i).is_some_and(|r| r.contains(t)))
        })
        .collect();
    Ok(filter_record_batch(batch, &mask)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_mask_clears_skipped_rows_at_their_place_in_the_selection() {
        let mask = |selected: &[Range<usize>], skip: &[u32]| -> Vec<bool> {
            live_mask(selected, skip).iter().collect()
        };
        assert_eq!(mask(&[0..2, 2..4], &[1, 3]), [true, false, true, false]);
        // Rows 2..4 then 8..10 are read; skipped rows outside them are ignored.
        assert_eq!(
            mask(&[2..4, 8..10], &[0, 3, 5, 8, 12]),
            [true, false, false, true]
        );
        assert_eq!(mask(&[2..4, 8..10], &[]), [true; 4]);
    }

    #[test]
    fn skipped_rows_split_the_selected_ranges() {
        let whole = std::iter::once(0..10).collect::<Vec<_>>();
        assert_eq!(without_rows(&whole, &[0, 3, 4, 9]), [1..3, 5..9]);
        assert_eq!(without_rows(&[2..5, 8..12], &[1, 4, 8, 20]), [2..4, 9..12]);
        assert_eq!(without_rows(&[2..5, 8..12], &[]), [2..5, 8..12]);
    }
}
