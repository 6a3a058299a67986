//! Parquet data files: how runs are written and what the store remembers about each file.
//!
//! A run's rows are sorted by token, so one file covers a contiguous token range of many shards.
//! Row groups are cut only at shard boundaries (once they hold at least the target row count), so
//! a row group's token statistics say exactly which shards it holds and a scan of one shard reads
//! one row group, while a full scan pays for a few large files rather than one file per shard.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use arrow::array::{ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::arrow_writer::compute_leaves;
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;
use quarry_core::schema::TableDef;
use quarry_core::shard_map::ShardMap;
use quarry_core::token::Token;

use crate::embedded::keys::{GroupHashes, GroupKeys, KEY_COLUMN, key_field, with_key_column};
use crate::embedded::manifest::create_dir_durably;
use crate::embedded::sorted_rows::TOKEN_COLUMN;
use crate::embedded::threads::yield_to_queries;
use crate::error::{Error, Result};

/// Where a row group sits on the ring.
#[derive(Debug, Clone, Copy)]
pub struct GroupInfo {
    pub min_token: Token,
    pub max_token: Token,
    pub first_shard: u32,
    pub last_shard: u32,
    pub rows: u64,
}

/// A committed (or about to be committed) Parquet file of one run.
#[derive(Debug)]
pub struct DataFile {
    /// Path relative to the data directory, as the manifest lists it.
    pub relative: String,
    pub path: PathBuf,
    pub metadata: ArrowReaderMetadata,
    pub groups: Vec<GroupInfo>,
    /// The shards of the file's keyspace.
    pub shards: ShardMap,
    /// The column of key hashes ([`KEY_COLUMN`]); `None` in files written before they were
    /// stored.
    pub key_column: Option<usize>,
    /// The file's row at which each row group starts.
    pub group_starts: Vec<u64>,
    /// Per row group, the row at which each of its shards starts (see [`DataFile::shard_starts`]).
    shard_starts: Vec<OnceLock<Vec<u32>>>,
    /// Per row group, its rows' key hashes once read, sorted (see [`DataFile::key_hashes`]).
    key_hashes: Vec<OnceLock<Arc<GroupKeys>>>,
    /// Bytes of `key_hashes` counted against [`key_cache_bytes`]; none once the file retires.
    key_bytes_counted: AtomicU64,
    /// Bytes of key hashes this file may keep beyond [`key_cache_bytes`]: a compaction's output
    /// borrows what the files it replaces hold (see [`lend_key_cache`]).
    key_cache_loan: AtomicU64,
    /// The file's bytes once mapped (see [`DataFile::mapped`]).
    mapped: OnceLock<Bytes>,
    /// Set when the file left the manifest; the file is deleted when the last reader lets go.
    obsolete: AtomicBool,
}

impl DataFile {
    /// Reads a file's footer and the token range of each row group. `read_schema` is the stored
    /// schema as scans want it (text as `Utf8View`).
    pub fn open(
        data_dir: &Path,
        relative: &str,
        shards: &ShardMap,
        read_schema: &SchemaRef,
    ) -> Result<DataFile> {
        let path = data_dir.join(relative);
        let file = File::open(&path).map_err(Error::io("opening", &path))?;
        let footer = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())?;
        let key_column = footer.schema().index_of(KEY_COLUMN).ok();
        let read_schema = match key_column {
            Some(_) => {
                let mut fields: Vec<_> = read_schema.fields().iter().cloned().collect();
                fields.push(Arc::new(key_field()));
                Arc::new(arrow::datatypes::Schema::new(fields))
            }
            None => read_schema.clone(),
        };
        let metadata = ArrowReaderMetadata::try_new(
            footer.metadata().clone(),
            ArrowReaderOptions::new().with_schema(read_schema),
        )?;
        let token_index = metadata
            .schema()
            .index_of(TOKEN_COLUMN)
            .map_err(|_| Error::Corrupt {
                path: path.clone(),
                problem: format!("no {TOKEN_COLUMN} column"),
            })?;
        let mut groups = Vec::new();
        for group in metadata.metadata().row_groups() {
            let stats = group.column(token_index).statistics();
            let (min, max) = match stats {
                Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(min), Some(max)) => (*min, *max),
                    _ => (i64::MIN + 1, i64::MAX),
                },
                _ => (i64::MIN + 1, i64::MAX),
            };
            groups.push(GroupInfo {
                min_token: min,
                max_token: max,
                first_shard: shards.shard_of(min).0,
                last_shard: shards.shard_of(max).0,
                rows: group.num_rows() as u64,
            });
        }
        let group_starts = groups
            .iter()
            .scan(0u64, |start, g| {
                let at = *start;
                *start += g.rows;
                Some(at)
            })
            .collect();
        Ok(DataFile {
            relative: relative.to_string(),
            path,
            metadata,
            key_column,
            group_starts,
            shard_starts: groups.iter().map(|_| OnceLock::new()).collect(),
            key_hashes: groups.iter().map(|_| OnceLock::new()).collect(),
            key_bytes_counted: AtomicU64::new(0),
            key_cache_loan: AtomicU64::new(0),
            groups,
            shards: *shards,
            mapped: OnceLock::new(),
            obsolete: AtomicBool::new(false),
        })
    }

    /// Opens the file to read it.
    pub fn open_file(&self) -> Result<File> {
        // A writer keeps the files of its own snapshots, but a reader of a directory another
        // process writes can find a file gone, replaced by a compaction since the scan was
        // planned.
        File::open(&self.path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::DataFileGone {
                    path: self.path.clone(),
                }
            } else {
                Error::io("opening", &self.path)(e)
            }
        })
    }

    /// The file's bytes, mapped into memory by the first call and kept while the file is open.
    ///
    /// Reads of a few scattered rows (the keys of the rows a newer write may supersede) take them
    /// from here. Read through the file, they copy every page the rows lie on, and rows spread
    /// over a row group lie on all of them, so each check of a newer write's keys copied the key
    /// columns of every row group it touched; from the mapping a read touches the values it
    /// decodes, and pages stay mapped for the next one. Whole-column reads still go through the
    /// file, which keeps the pages they pass over out of the process's resident memory.
    pub fn mapped(&self) -> Result<Bytes> {
        if let Some(bytes) = self.mapped.get() {
            return Ok(bytes.clone());
        }
        let file = self.open_file()?;
        let map = map_read_only(&file).map_err(Error::io("mapping", &self.path))?;
        Ok(self.mapped.get_or_init(|| Bytes::from_owner(map)).clone())
    }

    /// For row group `group`, the row at which each of its shards (`first_shard..=last_shard`)
    /// starts, then its row count: the rows of shard `first_shard + i` are
    /// `starts[i]..starts[i + 1]`. Rows are sorted by token, so the first call reads the group's
    /// token column with `tokens`; the answer is kept, and later scans of parts of the group
    /// select their rows without decoding it again.
    pub fn shard_starts(
        &self,
        group: usize,
        tokens: impl FnOnce() -> Result<Vec<i64>>,
    ) -> Result<&[u32]> {
        let (Some(cell), Some(info)) = (self.shard_starts.get(group), self.groups.get(group))
        else {
            return Err(Error::Internal(format!(
                "row group {group} of {} does not exist",
                self.relative
            )));
        };
        if let Some(starts) = cell.get() {
            return Ok(starts);
        }
        let tokens = tokens()?;
        let mut starts: Vec<u32> = (info.first_shard..=info.last_shard)
            .map(|s| {
                let start = self.shards.range_of(quarry_core::ids::ShardId(s)).start;
                tokens.partition_point(|&t| t <= start) as u32
            })
            .collect();
        starts.push(tokens.len() as u32);
        Ok(cell.get_or_init(|| starts))
    }

    /// The key hashes of row group `group`, read with `read` the first time. Every write
    /// compares its keys with the older runs' and every scan beside memtable rows with the
    /// memtable's, so the hashes are kept, sorted, while the writer's cache has room
    /// ([`key_cache_bytes`] over all files): 14-16 bytes a row with their filter instead of a
    /// decode each time, and a search that costs what the searched keys number, not what the
    /// row group holds. A retired file's hashes are not kept: nothing new reads it.
    pub fn key_hashes(
        &self,
        group: usize,
        read: impl FnOnce() -> Result<Vec<i64>>,
    ) -> Result<GroupHashes> {
        let Some(cell) = self.key_hashes.get(group) else {
            return Err(Error::Internal(format!(
                "row group {group} of {} does not exist",
                self.relative
            )));
        };
        if let Some(keys) = cell.get() {
            return Ok(GroupHashes::Sorted(keys.clone()));
        }
        let hashes = read()?;
        let bytes = GroupKeys::bytes_for(hashes.len());
        if self.obsolete.load(Ordering::SeqCst) || !KEY_CACHE.admit(bytes, &self.key_cache_loan) {
            return Ok(GroupHashes::InRowOrder(hashes));
        }
        let keys = Arc::new(GroupKeys::sorted(hashes));
        if cell.set(keys.clone()).is_ok() {
            self.key_bytes_counted.fetch_add(bytes, Ordering::SeqCst);
        } else {
            KEY_CACHE.release(bytes);
        }
        Ok(GroupHashes::Sorted(keys))
    }

    pub fn rows(&self) -> u64 {
        self.groups.iter().map(|g| g.rows).sum()
    }

    /// Marks the file for deletion once no snapshot uses it. Its key hashes stop counting
    /// against the cache at once: the scans still reading it finish soon, and the run that
    /// replaced it may already have borrowed their room (see [`lend_key_cache`]).
    pub fn retire(&self) {
        self.obsolete.store(true, Ordering::SeqCst);
        self.release_key_bytes();
    }

    fn release_key_bytes(&self) {
        KEY_CACHE.release(self.key_bytes_counted.swap(0, Ordering::SeqCst));
    }
}

/// Lets `output`, the files of a compaction's run, keep their key hashes beyond
/// [`key_cache_bytes`] by as many bytes as `replaced` (the files of the runs it merges) hold
/// now, until [`end_key_cache_loan`]. Between writing its run and installing it, a compaction
/// works out with those hashes which rows newer writes supersede; the replaced files still
/// hold theirs, and release them when they retire at the install. Without the loan, a
/// compaction of most of a table found the cache full of the rows it was rewriting, and its
/// install and every search after it decoded the new run's key columns again.
pub fn lend_key_cache(output: &[DataFileRef], replaced: &[&DataFileRef]) {
    let mut left: u64 = replaced
        .iter()
        .map(|f| f.key_bytes_counted.load(Ordering::SeqCst))
        .sum();
    for file in output {
        let wants = GroupKeys::bytes_for(file.rows() as usize);
        let lent = wants.min(left);
        file.key_cache_loan.store(lent, Ordering::SeqCst);
        left -= lent;
    }
}

/// Ends what [`lend_key_cache`] lent `output`: from its install on, a compaction's run caches
/// its key hashes as any run does.
pub fn end_key_cache_loan(output: &[DataFileRef]) {
    for file in output {
        file.key_cache_loan.store(0, Ordering::SeqCst);
    }
}

/// The key hashes kept by this process ([`DataFile::key_hashes`]), at most
/// [`key_cache_bytes`].
static KEY_CACHE: LazyLock<KeyBudget> = LazyLock::new(|| KeyBudget::new(key_cache_bytes()));

/// The most bytes of key hashes one process keeps in memory: a sixteenth of the memory it may
/// use (the machine's, or its cgroup's limit where lower), and at least 512 MiB. A table whose
/// hashes do not fit has some row groups' key columns decoded again by every write and scan
/// that compares keys with them. With a fixed 512 MiB, a 25M-row table in the ingestion
/// benchmark filled the cache while a compaction rewrote most of it, and from then on scans,
/// flushes and the cover thread decoded the key columns of the fresh runs left out, on every
/// comparison.
pub fn key_cache_bytes() -> u64 {
    const FLOOR: u64 = 512 << 20;
    usable_memory().map_or(FLOOR, |bytes| (bytes / 16).max(FLOOR))
}

/// The memory this process may use: the machine's, or its cgroup's limit where lower.
#[cfg(target_os = "linux")]
#[allow(
    unsafe_code,
    reason = "the machine's memory is read through libc::sysconf"
)]
fn usable_memory() -> Option<u64> {
    // SAFETY: sysconf has no preconditions and reports failure as -1.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let machine = u64::try_from(pages)
        .ok()?
        .checked_mul(u64::try_from(page_size).ok()?)?;
    // cgroup v2 writes "max" when there is no limit.
    let limit = fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    Some(limit.map_or(machine, |limit| limit.min(machine)))
}

#[cfg(not(target_os = "linux"))]
fn usable_memory() -> Option<u64> {
    None
}

/// Room for cached key hashes: a cap, and the bytes kept now.
#[derive(Debug)]
struct KeyBudget {
    cap: u64,
    used: AtomicU64,
}

impl KeyBudget {
    fn new(cap: u64) -> KeyBudget {
        KeyBudget {
            cap,
            used: AtomicU64::new(0),
        }
    }

    /// Counts `bytes` in if they fit under the cap, or else if `loan` still covers them (and
    /// takes them from it); whether they were counted.
    fn admit(&self, bytes: u64, loan: &AtomicU64) -> bool {
        if self.used.fetch_add(bytes, Ordering::SeqCst) + bytes <= self.cap {
            return true;
        }
        let borrowed = loan
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(bytes)
            })
            .is_ok();
        if !borrowed {
            self.release(bytes);
        }
        borrowed
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
    }
}

impl Drop for DataFile {
    fn drop(&mut self) {
        self.release_key_bytes();
        if self.obsolete.load(Ordering::SeqCst)
            && let Err(e) = fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not delete an obsolete data file");
        }
    }
}

/// How run files are laid out.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// A row group ends at the first shard boundary after it holds this many rows.
    pub rows_per_group: usize,
    /// A file ends at the first shard boundary after it holds this many rows.
    pub rows_per_file: usize,
    /// A row group also ends where the rows skip a shard. A distributed write's part holds the
    /// shards of one group, scattered over the ring: cut this way, its row groups never span a
    /// shard of another part, so parts written side by side do not overlap for scans.
    pub cut_at_gaps: bool,
}

/// A file [`write_run`] wrote.
#[derive(Debug)]
pub struct WrittenFile {
    /// Its path, relative to the data directory.
    pub relative: String,
    /// The key hashes of each of its row groups, in row order: what a search of the file's keys
    /// would otherwise read back ([`DataFile::key_hashes`]).
    pub group_hashes: Vec<Vec<i64>>,
}

/// Writes sorted rows (stored form) as one or more Parquet files, in parallel, fsynced. Returns the
/// files, in token order. `name` is the file stem without extension; files get `-N`.
pub fn write_run(
    data_dir: &Path,
    relative_dir: &str,
    name: &str,
    table: &TableDef,
    rows: &RecordBatch,
    shards: &ShardMap,
    layout: Layout,
) -> Result<Vec<WrittenFile>> {
    if rows.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let dir = data_dir.join(relative_dir);
    create_dir_durably(&dir)?;
    let token_index = table.columns.len();
    let tokens = rows
        .column(token_index)
        .as_primitive::<Int64Type>()
        .values();
    let file_cuts = cut_points(tokens, shards, layout.rows_per_file);
    let files: Vec<(String, usize, usize)> = file_cuts
        .windows(2)
        .enumerate()
        .map(|(i, w)| (format!("{relative_dir}/{name}-{i}.parquet"), w[0], w[1]))
        .collect();
    let results: Vec<Result<Vec<Vec<i64>>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .iter()
            .map(|(relative, start, end)| {
                let path = data_dir.join(relative);
                let slice = rows.slice(*start, end - start);
                scope.spawn(move || write_file(&path, table, &slice, shards, layout))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Internal("a file writer panicked".into())))
            })
            .collect()
    });
    let group_hashes = results.into_iter().collect::<Result<Vec<_>>>()?;
    crate::embedded::manifest::sync_dir(&dir)?;
    Ok(files
        .into_iter()
        .zip(group_hashes)
        .map(|((relative, _, _), group_hashes)| WrittenFile {
            relative,
            group_hashes,
        })
        .collect())
}

/// Rows a file writer encodes between two checkpoints of work in the idle class
/// ([`yield_to_queries`]).
const WRITE_PIECE_ROWS: usize = 16_384;

/// Writes rows in stored form as one file, with their key hashes after the token column
/// ([`KEY_COLUMN`]; computed unless the rows carry them). Returns each row group's key hashes,
/// in row order.
fn write_file(
    path: &Path,
    table: &TableDef,
    rows: &RecordBatch,
    shards: &ShardMap,
    layout: Layout,
) -> Result<Vec<Vec<i64>>> {
    let token_index = table.columns.len();
    let rows = &with_key_column(table, rows)?;
    let hashes = rows
        .column(rows.num_columns() - 1)
        .as_primitive::<Int64Type>()
        .values();
    let tokens = rows
        .column(token_index)
        .as_primitive::<Int64Type>()
        .values();
    let mut cuts = cut_points(tokens, shards, layout.rows_per_group);
    if layout.cut_at_gaps {
        cuts = with_gap_cuts(&cuts, tokens, shards);
    }
    let props = writer_properties(rows)?;
    let file = File::create(path).map_err(Error::io("creating", path))?;
    // The Arrow writer sets the file up (with the Arrow schema in its metadata); its row groups
    // are then written a column at a time, so that work in the idle class can stop between
    // pieces ([`yield_to_queries`]): a query that starts meanwhile waits for the piece being
    // encoded, or the column chunk being closed or copied out, not for the whole row group
    // (which, closed at once, kept a core 30 ms on average and up to 87 ms).
    let schema = rows.schema();
    let (mut writer, columns) =
        ArrowWriter::try_new(file, schema.clone(), Some(props))?.into_serialized_writer()?;
    let mut group_hashes = Vec::with_capacity(cuts.len().saturating_sub(1));
    for w in cuts.windows(2) {
        if w[1] == w[0] {
            continue;
        }
        let mut column_writers = columns.create_column_writers(group_hashes.len())?;
        let mut at = w[0];
        while at < w[1] {
            let rows_now = WRITE_PIECE_ROWS.min(w[1] - at);
            let piece = rows.slice(at, rows_now);
            let mut leaves_to = column_writers.iter_mut();
            for (field, column) in schema.fields().iter().zip(piece.columns()) {
                for leaves in compute_leaves(field, column)? {
                    let writer = leaves_to.next().ok_or_else(|| {
                        Error::Internal("more Parquet leaf columns than column writers".into())
                    })?;
                    writer.write(&leaves)?;
                }
            }
            at += rows_now;
            yield_to_queries();
        }
        let mut group = writer.next_row_group()?;
        for column_writer in column_writers {
            let chunk = column_writer.close()?;
            yield_to_queries();
            chunk.append_to_row_group(&mut group)?;
            yield_to_queries();
        }
        group.close()?;
        group_hashes.push(hashes[w[0]..w[1]].to_vec());
    }
    let file = writer.into_inner()?;
    file.sync_all().map_err(Error::io("syncing", path))?;
    Ok(group_hashes)
}

/// Maps a data file read-only.
#[allow(unsafe_code, reason = "memmap2 maps a file through an unsafe call")]
fn map_read_only(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: a mapping is undefined behaviour if the file changes underneath it. Data files are
    // written once, synced and never changed again: a compaction writes new files and deletes
    // the old ones, which leaves an existing mapping intact, and no part of Quarry truncates or
    // rewrites a committed file.
    unsafe { memmap2::Mmap::map(file) }
}

/// How the columns of a data file of `rows` (stored form, with key hashes) are encoded.
///
/// Dictionary and RLE encodings already shrink the typical columns; block compression cost scans
/// measurably (LZ4 and Snappy were 10-20% slower on the benchmark's queries). A dictionary is
/// not free to read, though: every value is gathered through it, and a column whose dictionary
/// saves little is stored plain instead, each column judged on a sample of its values (see
/// [`plain_pays`]). The key hashes ([`KEY_COLUMN`]) always are plain. Plain values also let a
/// read of a few scattered rows (the keys of a newer write's candidate matches, see
/// [`DataFile::mapped`]) take each value where it lies.
fn writer_properties(rows: &RecordBatch) -> Result<WriterProperties> {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(usize::MAX));
    let schema = rows.schema();
    for (field, column) in schema.fields().iter().zip(rows.columns()) {
        if field.name() == KEY_COLUMN || plain_pays(column)? {
            let path = ColumnPath::from(field.name().as_str());
            builder = builder
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::PLAIN);
        }
    }
    Ok(builder.build())
}

/// Whether `column` is better stored as plain values than through a dictionary, judged on an
/// even sample of up to [`SAMPLE_ROWS`] rows:
/// - An integer-like column (a token, a timestamp) when it is nearly unique: nine in ten sampled
///   rows differ. Its dictionary would only grow to its size limit (1 MiB) and fall back to
///   plain values, leaving a dictionary page that every read of the column copies and decodes.
///   Tokens and timestamps often are, but not in a table of wide partitions (a token per
///   partition) or of coarse buckets, hence the sample.
/// - A floating-point column when more than [`BYTE_INDEX_VALUES`] sampled values differ, so that
///   its dictionary indices would be wider than a byte. Measured quantities rarely repeat
///   enough to make a dictionary pay for gathering every value through it: for the benchmark's
///   readings (values to two decimals, 10M rows) a plain `value` column took the query that
///   filters on it from 43-44 to 38-39 ms and left the one that aggregates it within noise
///   (65 ms loaded, 64-65 against 66-70 ms compacted; three alternating runs of `quarry-bench
///   fresh`), for data files 19% larger.
///
/// Columns of other types keep their dictionary.
fn plain_pays(column: &ArrayRef) -> Result<bool> {
    let float = matches!(
        column.data_type(),
        DataType::Float16 | DataType::Float32 | DataType::Float64
    );
    let integer = matches!(
        column.data_type(),
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Date32
            | DataType::Date64
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Timestamp(_, _)
    );
    if !(integer || float) || column.is_empty() {
        return Ok(false);
    }
    let step = column.len().div_ceil(SAMPLE_ROWS);
    let picks = UInt32Array::from_iter_values((0..column.len()).step_by(step).map(|i| i as u32));
    let sample = arrow::compute::take(column, &picks, None)?;
    if float {
        let values = arrow::compute::cast(&sample, &DataType::Float64)?;
        let bits = values.as_primitive::<Float64Type>().iter().flatten();
        let distinct: HashSet<u64> = bits.map(f64::to_bits).collect();
        Ok(distinct.len() > BYTE_INDEX_VALUES)
    } else {
        let values = arrow::compute::cast(&sample, &DataType::Int64)?;
        let distinct: HashSet<i64> = values
            .as_primitive::<Int64Type>()
            .iter()
            .flatten()
            .collect();
        Ok(distinct.len() * 10 >= picks.len() * 9)
    }
}

/// The most values a dictionary can index with a byte.
const BYTE_INDEX_VALUES: usize = 256;

/// Rows [`plain_pays`] looks at.
const SAMPLE_ROWS: usize = 4096;

/// Offsets `[0, c1, c2, ..., len]` that cut sorted tokens into pieces of at least `target` rows,
/// each ending at a shard boundary.
fn cut_points(tokens: &[i64], shards: &ShardMap, target: usize) -> Vec<usize> {
    let mut cuts = vec![0];
    let target = target.max(1);
    let mut start = 0;
    while start < tokens.len() {
        let candidate = start + target;
        if candidate >= tokens.len() {
            break;
        }
        // Extend to the end of the shard of the candidate's last row.
        let shard = shards.shard_of(tokens[candidate - 1]);
        let end_token = shards.range_of(shard).end;
        let end = candidate + tokens[candidate..].partition_point(|&t| t <= end_token);
        if end >= tokens.len() {
            break;
        }
        cuts.push(end);
        start = end;
    }
    cuts.push(tokens.len());
    cuts
}

/// `cuts` with a cut added wherever consecutive rows' shards are not adjacent.
fn with_gap_cuts(cuts: &[usize], tokens: &[i64], shards: &ShardMap) -> Vec<usize> {
    let mut all: Vec<usize> = cuts.to_vec();
    for i in 1..tokens.len() {
        if shards.shard_of(tokens[i]).0 > shards.shard_of(tokens[i - 1]).0 + 1 {
            all.push(i);
        }
    }
    all.sort_unstable();
    all.dedup();
    all
}

/// Shared handle to a data file.
pub type DataFileRef = Arc<DataFile>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_key_cache_admits_a_compactions_hashes_only_on_its_loan() {
        let budget = KeyBudget::new(100);
        let no_loan = AtomicU64::new(0);
        assert!(budget.admit(90, &no_loan));
        assert!(!budget.admit(20, &no_loan), "past the cap without a loan");
        assert_eq!(
            budget.used.load(Ordering::SeqCst),
            90,
            "a refusal counts nothing"
        );
        let loan = AtomicU64::new(30);
        assert!(budget.admit(20, &loan));
        assert_eq!(loan.load(Ordering::SeqCst), 10, "the loan paid for them");
        assert!(!budget.admit(20, &loan), "more than the loan has left");
        assert_eq!(budget.used.load(Ordering::SeqCst), 110);
        // The replaced files retire: the cache is back under its cap, and admits without a loan.
        budget.release(90);
        assert!(budget.admit(80, &no_loan));
        assert!(!budget.admit(1, &no_loan));
    }

    #[test]
    fn cuts_fall_on_shard_boundaries() {
        let shards = ShardMap::new(16);
        let mut tokens: Vec<i64> = (0..10_000i64)
            .map(|i| (i64::MIN as i128 + 1 + i as i128 * (u64::MAX as i128 / 10_000)) as i64)
            .collect();
        tokens.sort_unstable();
        let cuts = cut_points(&tokens, &shards, 1000);
        assert_eq!(cuts.first(), Some(&0));
        assert_eq!(cuts.last(), Some(&tokens.len()));
        for w in cuts.windows(2) {
            assert!(w[1] > w[0]);
        }
        for &c in &cuts[1..cuts.len() - 1] {
            assert_ne!(shards.shard_of(tokens[c - 1]), shards.shard_of(tokens[c]));
            assert!(c >= 1000);
        }
    }

    #[test]
    fn gap_cuts_split_row_groups_where_shards_are_skipped() {
        let shards = ShardMap::new(16);
        // Rows of shards 0, 1, 4 and 9, ten each, in token order.
        let tokens: Vec<i64> = [0u32, 1, 4, 9]
            .iter()
            .flat_map(|&s| {
                let r = shards.range_of(quarry_core::ids::ShardId(s));
                (1..=10).map(move |i| r.start + i)
            })
            .collect();
        let cuts = with_gap_cuts(&cut_points(&tokens, &shards, 1000), &tokens, &shards);
        assert_eq!(cuts, [0, 20, 30, 40]);
    }

    /// Readings of 50 devices, 200 each, keyed by device and time, sorted in stored form.
    fn readings(table: &TableDef) -> RecordBatch {
        use arrow::array::{Float64Array, Int64Array, TimestampMillisecondArray};
        let n = 10_000i64;
        let batch = RecordBatch::try_new(
            table.arrow_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 50))),
                Arc::new(
                    TimestampMillisecondArray::from_iter_values((0..n).map(|i| 1_000 * i + 7))
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| (i % 9) as f64),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| (i * 37 % 2000) as f64 / 100.0),
                )),
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i * 3))),
            ],
        )
        .unwrap();
        let stored = crate::embedded::sorted_rows::with_tokens(table, &batch).unwrap();
        crate::embedded::sorted_rows::sort_dedup(table, &[stored]).unwrap()
    }

    fn readings_table() -> TableDef {
        use quarry_core::cql_type::CqlType;
        use quarry_core::schema::ColumnDef;
        TableDef::new(
            "ks",
            "readings",
            vec![
                ColumnDef::new("device", CqlType::BigInt),
                ColumnDef::new("ts", CqlType::Timestamp),
                ColumnDef::new("v", CqlType::Double),
                ColumnDef::new("reading", CqlType::Double),
                ColumnDef::new("seq", CqlType::BigInt),
            ],
            vec!["device".into()],
            vec!["ts".into()],
        )
        .unwrap()
    }

    /// Nearly unique integers (the clustering timestamps, a sequence number, the key hashes) and
    /// floats of many values (2,000 readings) are written plain, with no dictionary page to
    /// decode on each read; repeated values (devices, floats of nine values, and the tokens of 50
    /// wide partitions) keep their dictionary; and a few scattered rows, read from the mapped
    /// file, are the rows written there.
    #[test]
    fn columns_that_a_dictionary_barely_shrinks_are_plain_and_scattered_rows_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let table = readings_table();
        let rows = readings(&table);
        let shards = ShardMap::new(16);
        let layout = Layout {
            rows_per_group: 4096,
            rows_per_file: usize::MAX,
            cut_at_gaps: false,
        };
        let written = write_run(dir.path(), "run", "r", &table, &rows, &shards, layout).unwrap();
        assert_eq!(written.len(), 1);
        let schema = crate::embedded::sorted_rows::read_stored_schema(&table);
        let file =
            Arc::new(DataFile::open(dir.path(), &written[0].relative, &shards, &schema).unwrap());
        let metadata = file.metadata.metadata();
        assert!(metadata.num_row_groups() > 1);
        let parquet_schema = metadata.file_metadata().schema_descr();
        for group in metadata.row_groups() {
            for (i, chunk) in group.columns().iter().enumerate() {
                let name = parquet_schema.column(i).name().to_string();
                let dictionary = chunk.dictionary_page_offset().is_some();
                let expected = matches!(name.as_str(), "device" | "v" | "_token");
                assert_eq!(dictionary, expected, "dictionary page of column {name}");
            }
        }

        // Rows 3, 1000 and 2500 of the second row group, every column.
        let start = file.group_starts[1] as usize;
        let picked = [3usize, 1000, 2500];
        let ranges = picked.iter().map(|&r| r..r + 1).collect();
        let batches: Vec<RecordBatch> =
            crate::embedded::scan::read_group(&file, 1, &[0, 1, 2, 3, 4], Some(ranges))
                .unwrap()
                .collect::<Result<_>>()
                .unwrap();
        let read = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        assert_eq!(read.num_rows(), picked.len());
        for (at, &row) in picked.iter().enumerate() {
            for column in 0..5 {
                assert_eq!(
                    read.column(column).slice(at, 1).to_data(),
                    rows.column(column).slice(start + row, 1).to_data(),
                    "column {column} of row {row}"
                );
            }
        }
    }
}
