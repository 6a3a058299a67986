//! Reading Parquet: columns are matched to the table's by name and keep the file's own types
//! until conversion casts them (an `int32` column loads into a `bigint`, a microsecond timestamp
//! into a millisecond one, a 16-byte `FIXED_LEN_BYTE_ARRAY` into a `uuid`).

use std::fs::File;

use bytes::Bytes;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::reader::ChunkReader;
use quarry_core::schema::TableDef;

use crate::column_match::match_columns;
use crate::error::{Error, Location, Result};
use crate::raw_chunk::{Positions, RawChunk};
use crate::source::{Source, read_stdin};

/// A Parquet input, read a batch of rows at a time.
pub(crate) struct ParquetChunks {
    input: String,
    reader: ParquetRecordBatchReader,
    sources: Vec<Option<usize>>,
    /// Rows read so far.
    rows: u64,
}

impl std::fmt::Debug for ParquetChunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetChunks")
            .field("input", &self.input)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl ParquetChunks {
    /// Opens the file (or buffers standard input) and matches its columns to `table`'s.
    pub fn open(source: &Source, table: &TableDef, batch_size: usize) -> Result<Self> {
        let input = source.to_string();
        match source {
            Source::File(path) => {
                let file = File::open(path).map_err(|e| Error::io(&input, e))?;
                Self::from_chunk_reader(file, input, table, batch_size)
            }
            Source::Stdin => {
                let bytes = Bytes::from(read_stdin(&input)?);
                Self::from_chunk_reader(bytes, input, table, batch_size)
            }
        }
    }

    fn from_chunk_reader<T: ChunkReader + 'static>(
        reader: T,
        input: String,
        table: &TableDef,
        batch_size: usize,
    ) -> Result<Self> {
        let parquet_error = |source| Error::Parquet {
            input: input.clone(),
            source,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(reader).map_err(parquet_error)?;
        let names: Vec<&str> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let sources = match_columns(&Location::input(&input), &names, table, true)?;
        let reader = builder
            .with_batch_size(batch_size)
            .build()
            .map_err(parquet_error)?;
        Ok(ParquetChunks {
            input,
            reader,
            sources,
            rows: 0,
        })
    }

    /// The next batch of rows, or `None` at the end of the file.
    pub fn next_chunk(&mut self) -> Result<Option<RawChunk>> {
        let Some(batch) = self.reader.next() else {
            return Ok(None);
        };
        let batch = batch.map_err(|e| Error::Parquet {
            input: self.input.clone(),
            source: e.into(),
        })?;
        let first = self.rows + 1;
        self.rows += batch.num_rows() as u64;
        Ok(Some(RawChunk {
            records: batch.num_rows() as u64,
            batch,
            sources: self.sources.clone(),
            positions: Positions::Rows { first },
            flawed: Vec::new(),
        }))
    }
}
