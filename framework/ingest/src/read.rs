//! Reading one source into batches of a table's schema: the loop every format shares.

use std::collections::BTreeMap;

use arrow::array::{ArrayRef, BooleanArray, new_null_array};
use arrow::compute::FilterBuilder;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use quarry_core::schema::TableDef;

use crate::column_match::key_columns;
use crate::convert::{bad_rows, convert_column, keyless_rows};
use crate::csv_source::CsvChunks;
use crate::error::{Error, KeyKind, Location, Result};
use crate::format::Format;
use crate::ndjson_source::NdjsonChunks;
use crate::parquet_source::ParquetChunks;
use crate::problem::Problem;
use crate::raw_chunk::{RawChunk, record_of, value_text};
use crate::reject::Reject;
use crate::source::Source;

/// Rows per batch when [`ReadOptions`] does not say.
pub const DEFAULT_BATCH_SIZE: usize = 64 * 1024;

/// How to read a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// The input format; `None` (the default) takes it from the file's extension.
    pub format: Option<Format>,
    /// Rows per batch (default [`DEFAULT_BATCH_SIZE`], 64K); also how often `progress` is called.
    pub batch_size: usize,
    /// Keep going past bad rows, collecting them in [`SourceData::rejects`]. When false (the
    /// default) the first bad row is an error and nothing is returned.
    pub keep_rejects: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            format: None,
            batch_size: DEFAULT_BATCH_SIZE,
            keep_rejects: false,
        }
    }
}

impl ReadOptions {
    /// The source's name and the format to read it as: the one asked for, else the one its
    /// name implies.
    pub(crate) fn input_format(&self, source: &Source) -> Result<(String, Format)> {
        let input = source.to_string();
        match self.format.or_else(|| source.format_from_name()) {
            Some(format) => Ok((input, format)),
            None => Err(Error::UnknownFormat { input }),
        }
    }
}

/// What one source held.
#[derive(Debug, Clone)]
pub struct SourceData {
    /// The source's name: its path, or `<stdin>`.
    pub source: String,
    /// The good rows, in input order, each batch in the table's Arrow schema exactly (no empty
    /// batches).
    pub batches: Vec<RecordBatch>,
    /// Number of rows in `batches`.
    pub rows: u64,
    /// Records that were not loaded, in input order (only when rejects are kept).
    pub rejects: Vec<Reject>,
}

/// Reads `source` into batches of `table`'s Arrow schema.
///
/// Columns are matched by name; a table column the input lacks loads as NULL, but a primary-key
/// column must be there and must have a value in every row. `progress` is called after each
/// batch with the number of records read from this source so far.
///
/// Fails on an input that cannot be read or whose columns do not fit the table, and, unless
/// `options.keep_rejects`, on the first bad row, with a message that names the line (or Parquet
/// row), column, value and expected type.
pub fn read_source(
    source: &Source,
    table: &TableDef,
    options: &ReadOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<SourceData> {
    read_source_in_parts(
        source,
        table,
        options,
        usize::MAX,
        progress,
        &mut |_| Ok(()),
    )
}

/// [`read_source`], handing the good rows to `part` whenever they reach `part_bytes` (in input
/// order), so that a large input is never held whole; the rows after the last part are left in
/// the returned data's `batches`. An error `part` returns stops the read.
pub fn read_source_in_parts(
    source: &Source,
    table: &TableDef,
    options: &ReadOptions,
    part_bytes: usize,
    progress: &mut dyn FnMut(u64),
    part: &mut dyn FnMut(Vec<RecordBatch>) -> std::result::Result<(), String>,
) -> Result<SourceData> {
    let (input, format) = options.input_format(source)?;
    let batch_size = options.batch_size.max(1);
    let mut chunks = match format {
        Format::Csv => Chunks::Csv(CsvChunks::open(
            source.open_stream()?,
            &input,
            table,
            batch_size,
        )?),
        Format::NdJson => Chunks::NdJson(NdjsonChunks::open(
            source.open_stream()?,
            &input,
            table,
            batch_size,
        )),
        Format::Parquet => Chunks::Parquet(ParquetChunks::open(source, table, batch_size)?),
    };
    let target = Target::new(table);
    let mut data = SourceData {
        source: input,
        batches: Vec::new(),
        rows: 0,
        rejects: Vec::new(),
    };
    let (mut read, mut held) = (0, 0usize);
    while let Some(chunk) = chunks.next_chunk()? {
        read += chunk.records;
        let before = data.batches.len();
        target.accept(chunk, options.keep_rejects, &mut data)?;
        held += data.batches[before..]
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum::<usize>();
        if held >= part_bytes {
            held = 0;
            part(std::mem::take(&mut data.batches)).map_err(|message| Error::Stored {
                input: data.source.clone(),
                message,
            })?;
        }
        progress(read);
    }
    tracing::debug!(
        source = %data.source,
        rows = data.rows,
        rejects = data.rejects.len(),
        "read source"
    );
    Ok(data)
}

/// The format readers, behind one `next_chunk`.
#[derive(Debug)]
pub(crate) enum Chunks {
    Csv(CsvChunks),
    NdJson(NdjsonChunks),
    Parquet(ParquetChunks),
}

impl Chunks {
    pub(crate) fn next_chunk(&mut self) -> Result<Option<RawChunk>> {
        match self {
            Chunks::Csv(c) => c.next_chunk(),
            Chunks::NdJson(c) => c.next_chunk(),
            Chunks::Parquet(c) => c.next_chunk(),
        }
    }
}

/// The table being loaded, as conversion needs it.
pub(crate) struct Target<'a> {
    table: &'a TableDef,
    schema: SchemaRef,
    /// For each column, its part of the primary key, if any.
    keys: Vec<Option<KeyKind>>,
}

impl<'a> Target<'a> {
    pub(crate) fn new(table: &'a TableDef) -> Self {
        let mut keys = vec![None; table.columns.len()];
        for (column, kind) in key_columns(table) {
            keys[column] = Some(kind);
        }
        Target {
            table,
            schema: table.arrow_schema(),
            keys,
        }
    }

    /// Converts a chunk to the table's schema and adds its good rows (and, when kept, its
    /// rejects) to `data`; or fails on its first bad record when rejects are not kept.
    pub(crate) fn accept(
        &self,
        chunk: RawChunk,
        keep_rejects: bool,
        data: &mut SourceData,
    ) -> Result<()> {
        if chunk.records == 0 {
            // A live stream paused: nothing was read.
            return Ok(());
        }
        let input = data.source.as_str();
        let rows = chunk.batch.num_rows();
        // The first problem of each row with one, by column order.
        let mut problems: BTreeMap<usize, Problem> = BTreeMap::new();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.table.columns.len());
        for (i, column) in self.table.columns.iter().enumerate() {
            let converted = match chunk.sources[i] {
                Some(source) => {
                    let raw = chunk.batch.column(source);
                    let converted =
                        convert_column(raw, column.cql_type).map_err(|e| Error::arrow(input, e))?;
                    for row in bad_rows(raw.as_ref(), converted.as_ref()) {
                        problems.entry(row).or_insert_with(|| Problem::BadValue {
                            column: column.name.clone(),
                            value: value_text(raw, row),
                            expected: column.cql_type,
                        });
                    }
                    converted
                }
                None => new_null_array(&column.cql_type.arrow_type(), rows),
            };
            if let Some(kind) = self.keys[i] {
                for row in keyless_rows(converted.as_ref()) {
                    problems.entry(row).or_insert_with(|| Problem::MissingKey {
                        column: column.name.clone(),
                        kind,
                        expected: column.cql_type,
                    });
                }
            }
            columns.push(converted);
        }

        if !keep_rejects {
            let first_row = problems
                .first_key_value()
                .map(|(&row, _)| (chunk.positions.get(row), row));
            let first_flawed = chunk.flawed.first().map(|f| f.position);
            let first = match (first_row, first_flawed) {
                (Some((at_row, row)), flawed) if flawed.is_none_or(|f| at_row < f) => {
                    problems.remove(&row).map(|p| (at_row, p))
                }
                _ => chunk
                    .flawed
                    .first()
                    .map(|f| (f.position, f.problem.clone())),
            };
            if let Some((position, problem)) = first {
                return Err(problem.into_error(Location::at(input, position)));
            }
        }

        if !problems.is_empty() {
            let keep: BooleanArray = (0..rows)
                .map(|row| Some(!problems.contains_key(&row)))
                .collect();
            let filter = FilterBuilder::new(&keep).optimize().build();
            columns = columns
                .iter()
                .map(|c| filter.filter(c))
                .collect::<Result<_, _>>()
                .map_err(|e| Error::arrow(input, e))?;
        }

        let mut rejects: Vec<Reject> = Vec::with_capacity(problems.len() + chunk.flawed.len());
        for flawed in chunk.flawed {
            let at = Location::at(input, flawed.position);
            rejects.push(flawed.problem.into_reject(&at, Default::default()));
        }
        for (row, problem) in problems {
            let at = Location::at(input, chunk.positions.get(row));
            rejects.push(problem.into_reject(&at, record_of(&chunk.batch, row)));
        }
        // Both lists are in input order; a stable sort merges them.
        rejects.sort_by_key(|r| r.line);
        data.rejects.extend(rejects);
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::arrow(input, e))?;
        if batch.num_rows() > 0 {
            data.rows += batch.num_rows() as u64;
            data.batches.push(batch);
        }
        Ok(())
    }
}

/// Reads several sources on up to `threads` threads (decoding is CPU work, one file per thread),
/// returning their data in the order given. `progress` gets the rows read so far over all
/// sources. The first source that fails (in the order given) decides the error.
pub fn read_sources(
    sources: &[Source],
    table: &TableDef,
    options: &ReadOptions,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<SourceData>> {
    read_sources_in_parts(
        sources,
        table,
        options,
        threads,
        progress,
        usize::MAX,
        &|_, _| Ok(()),
    )
}

/// [`read_sources`], handing each source's rows to `part` with the source's index whenever they
/// reach `part_bytes` ([`read_source_in_parts`]). Parts of one source arrive in input order, from
/// one thread; parts of different sources may interleave.
pub fn read_sources_in_parts(
    sources: &[Source],
    table: &TableDef,
    options: &ReadOptions,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
    part_bytes: usize,
    part: &(dyn Fn(usize, Vec<RecordBatch>) -> std::result::Result<(), String> + Sync),
) -> Result<Vec<SourceData>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    let next = AtomicUsize::new(0);
    let total = AtomicU64::new(0);
    let results: Vec<Mutex<Option<Result<SourceData>>>> =
        sources.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, sources.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(source) = sources.get(i) else { break };
                    let mut seen = 0;
                    let result = read_source_in_parts(
                        source,
                        table,
                        options,
                        part_bytes,
                        &mut |rows| {
                            let sum = total.fetch_add(rows.saturating_sub(seen), Ordering::SeqCst)
                                + rows.saturating_sub(seen);
                            seen = rows;
                            progress(sum);
                        },
                        &mut |batches| part(i, batches),
                    );
                    let failed = result.is_err();
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(result);
                    }
                    if failed {
                        // Later sources cannot change the outcome; stop handing them out.
                        next.store(sources.len(), Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let mut out = Vec::with_capacity(sources.len());
    for (slot, source) in results.into_iter().zip(sources) {
        match slot.into_inner().ok().flatten() {
            Some(result) => out.push(result?),
            None => {
                return Err(Error::Internal {
                    input: source.to_string(),
                    message: "a reader thread stopped without a result".into(),
                });
            }
        }
    }
    Ok(out)
}
