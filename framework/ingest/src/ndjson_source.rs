//! Reading newline-delimited JSON: one object per line, keys naming columns.
//!
//! Lines are decoded by Arrow's JSON decoder against an all-`Utf8` schema with primitive
//! coercion (numbers and booleans arrive as their JSON text), so typing happens later, column by
//! column, as for CSV; a collection column decodes as a list or map of text. The decoder runs in strict mode: a key outside its schema fails the
//! chunk. The schema starts as the table's column names; when a chunk fails, its keys are
//! examined, so a key spelled differently from the table (`Device_ID`) joins the schema and the
//! chunk is decoded again, while a key the table lacks is an error. Lines that still fail are
//! decoded one at a time to find and explain the bad ones.

use std::io::Read;
use std::sync::Arc;

use arrow::array::Array;
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use quarry_core::schema::TableDef;
use serde_json::{Map, Value};

use crate::column_match::{table_column_for, unknown_column};
use crate::convert::raw_type;
use crate::csv_source::non_utf8_records;
use crate::error::{Error, Location, Position, Result};
use crate::format::Format;
use crate::problem::Problem;
use crate::push_decoder::decode_all;
use crate::raw_chunk::{FlawedRecord, Positions, RawChunk};
use crate::record_chunker::{
    Chunk, Flaw, RecordChunker, RecordScanner, RecordShape, RecordSpan, Scanned,
};

/// An NDJSON input, read a chunk of lines at a time.
#[derive(Debug)]
pub(crate) struct NdjsonChunks {
    input: String,
    table: TableDef,
    chunker: RecordChunker<NdjsonScanner>,
    /// The decoder's field names: spellings of table columns.
    keys: Vec<String>,
    /// Whether each key has been seen holding a value (else it is still the table's spelling,
    /// standing in until the input shows its own).
    seen: Vec<bool>,
    /// For each table column, its index in `keys`.
    sources: Vec<Option<usize>>,
    batch_size: usize,
}

impl NdjsonChunks {
    pub fn open(
        reader: Box<dyn Read + Send>,
        input: &str,
        table: &TableDef,
        batch_size: usize,
    ) -> Self {
        let keys: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
        NdjsonChunks {
            input: input.to_string(),
            table: table.clone(),
            chunker: RecordChunker::new(reader, NdjsonScanner),
            seen: vec![false; keys.len()],
            sources: (0..keys.len()).map(Some).collect(),
            keys,
            batch_size,
        }
    }

    /// The next chunk of rows, or `None` at the end of the input.
    pub fn next_chunk(&mut self) -> Result<Option<RawChunk>> {
        let Some(chunk) = self
            .chunker
            .next_chunk(self.batch_size)
            .map_err(|e| Error::io(&self.input, e))?
        else {
            return Ok(None);
        };
        if chunk.records.is_empty() {
            return Ok(Some(RawChunk::paused(self.sources.clone())));
        }
        let not_utf8 = non_utf8_records(&chunk);
        let mut flawed = Vec::new();
        let mut good: Vec<RecordSpan> = Vec::with_capacity(chunk.records.len());
        for (i, record) in chunk.records.iter().enumerate() {
            let problem = if record.shape.flaw == Some(Flaw::NotAnObject) {
                Some(not_an_object(chunk.bytes(record)))
            } else if not_utf8.binary_search(&i).is_ok() {
                Some("the line is not UTF-8 text; save the file as UTF-8".to_string())
            } else {
                None
            };
            match problem {
                Some(problem) => flawed.push(malformed(&chunk, record, problem)),
                None => good.push(*record),
            }
        }
        let records = chunk.records.len() as u64;

        let batch = loop {
            match self.decode(&chunk, &good) {
                Ok(batch) if batch.num_rows() == good.len() => break batch,
                _ => {}
            }
            if self.learn_keys(&chunk, &good)? {
                continue;
            }
            // Some lines cannot be decoded: find them one by one.
            let mut still_good = Vec::with_capacity(good.len());
            for record in good {
                match self.decode(&chunk, std::slice::from_ref(&record)) {
                    Ok(one) if one.num_rows() == 1 => still_good.push(record),
                    Ok(_) => flawed.push(malformed(
                        &chunk,
                        &record,
                        "the line holds more than one JSON value; put one object on each line"
                            .to_string(),
                    )),
                    Err(e) => flawed.push(self.explain(&chunk, &record, e)),
                }
            }
            good = still_good;
            flawed.sort_by_key(|f| f.position);
            match self.decode(&chunk, &good) {
                Ok(batch) if batch.num_rows() == good.len() => break batch,
                Ok(batch) => {
                    return Err(Error::internal(
                        &self.input,
                        format!(
                            "the JSON decoder found {} rows in {} good lines",
                            batch.num_rows(),
                            good.len()
                        ),
                    ));
                }
                Err(e) => return Err(Error::arrow(&self.input, e)),
            }
        };
        for (key, column) in batch.columns().iter().enumerate() {
            if column.null_count() < column.len() {
                self.seen[key] = true;
            }
        }
        Ok(Some(RawChunk {
            batch,
            sources: self.sources.clone(),
            positions: Positions::Lines(good.iter().map(|r| r.line).collect()),
            flawed,
            records,
        }))
    }

    fn schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let column = self.sources.iter().position(|s| *s == Some(i));
                let raw =
                    column.map_or(DataType::Utf8, |c| raw_type(self.table.columns[c].cql_type));
                Field::new(k, raw, true)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// Decodes the given lines of `chunk` together.
    fn decode(&self, chunk: &Chunk, lines: &[RecordSpan]) -> Result<RecordBatch, ArrowError> {
        let schema = self.schema();
        let mut data = Vec::with_capacity(lines.iter().map(|r| r.end - r.start + 1).sum());
        for record in lines {
            data.extend_from_slice(chunk.bytes(record));
            data.push(b'\n');
        }
        let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
            .with_batch_size(lines.len() + 1)
            .with_coerce_primitive(true)
            .with_strict_mode(true)
            .build_decoder()?;
        let batches = decode_all(&mut decoder, &data)?;
        concat_batches(&schema, &batches)
    }

    /// Adds to the schema the keys of `lines` that spell a table column differently. Returns
    /// whether any were added; fails on a key that is no table column.
    fn learn_keys(&mut self, chunk: &Chunk, lines: &[RecordSpan]) -> Result<bool> {
        let mut learned = false;
        for record in lines {
            let Ok(object) = serde_json::from_slice::<Map<String, Value>>(chunk.bytes(record))
            else {
                continue;
            };
            for key in object.keys() {
                if self.keys.contains(key) {
                    continue;
                }
                let at = Location::at(&self.input, Position::Line(record.line));
                let Some(column) = table_column_for(&self.table, key) else {
                    return Err(unknown_column(at, key, &self.table));
                };
                match self.sources[column] {
                    Some(existing) if self.seen[existing] => {
                        return Err(Error::DuplicateColumn {
                            at,
                            column: self.table.columns[column].name.clone(),
                            first: self.keys[existing].clone(),
                            second: key.clone(),
                        });
                    }
                    Some(existing) => {
                        // The table's spelling was standing in; the input uses this one.
                        self.keys[existing] = key.clone();
                        self.seen[existing] = true;
                    }
                    None => {
                        self.keys.push(key.clone());
                        self.seen.push(true);
                        self.sources[column] = Some(self.keys.len() - 1);
                    }
                }
                learned = true;
            }
        }
        Ok(learned)
    }

    /// Says why one line could not be decoded.
    fn explain(&self, chunk: &Chunk, record: &RecordSpan, error: ArrowError) -> FlawedRecord {
        let bytes = chunk.bytes(record);
        let object = match serde_json::from_slice::<Value>(bytes) {
            Err(e) => {
                return malformed(chunk, record, format!("the line is not valid JSON: {e}"));
            }
            Ok(Value::Object(object)) => object,
            Ok(_) => return malformed(chunk, record, not_an_object(bytes)),
        };
        let nested = object
            .iter()
            .find(|(_, v)| matches!(v, Value::Object(_) | Value::Array(_)));
        if let Some((key, value)) = nested
            && let Some(column) = table_column_for(&self.table, key)
        {
            return FlawedRecord {
                position: Position::Line(record.line),
                problem: Problem::BadValue {
                    column: self.table.columns[column].name.clone(),
                    value: value.to_string(),
                    expected: self.table.columns[column].cql_type,
                },
            };
        }
        malformed(chunk, record, format!("the line cannot be read: {error}"))
    }
}

fn malformed(chunk: &Chunk, record: &RecordSpan, problem: String) -> FlawedRecord {
    FlawedRecord {
        position: Position::Line(record.line),
        problem: Problem::Malformed {
            format: Format::NdJson,
            problem,
            raw: String::from_utf8_lossy(chunk.bytes(record)).into_owned(),
        },
    }
}

fn not_an_object(line: &[u8]) -> String {
    if line.first() == Some(&b'[') {
        "the line is a JSON array, not an object; NDJSON needs one {\"column\": value, ...} \
         object per line (a JSON array of objects must be rewritten one object per line)"
            .to_string()
    } else {
        "the line is not a JSON object; NDJSON needs one {\"column\": value, ...} object per line"
            .to_string()
    }
}

/// Finds NDJSON records: each non-blank line is one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NdjsonScanner;

impl RecordScanner for NdjsonScanner {
    fn scan(&self, buf: &[u8], eof: bool) -> Scanned {
        // Blank space, up to the start of the next non-blank line's content.
        let mut i = 0;
        let mut lines = 0;
        while let Some(&b) = buf.get(i) {
            match b {
                b'\n' => lines += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => break,
            }
            i += 1;
        }
        if i > 0 {
            return Scanned::Blank { len: i, lines };
        }
        let (end, next, lines) = match buf.iter().position(|&b| b == b'\n') {
            Some(newline) => (newline, newline + 1, 1),
            None if eof && !buf.is_empty() => (buf.len(), buf.len(), 0),
            None if eof => return Scanned::Done,
            None => return Scanned::NeedMore,
        };
        let flaw = (buf[0] != b'{').then_some(Flaw::NotAnObject);
        Scanned::Record {
            end,
            next,
            lines,
            shape: RecordShape { fields: 0, flaw },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn lines_are_records_and_blank_lines_are_skipped() {
        let text = b"{\"a\":1}\r\n\n  \n{\"a\":2}\n[1]\n{\"a\":3}";
        let mut chunker = RecordChunker::new(Box::new(Cursor::new(text.to_vec())), NdjsonScanner);
        let chunk = chunker.next_chunk(10).unwrap().unwrap();
        let got: Vec<(u64, Option<Flaw>)> = chunk
            .records
            .iter()
            .map(|r| (r.line, r.shape.flaw))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, None),
                (4, None),
                (5, Some(Flaw::NotAnObject)),
                (6, None)
            ]
        );
        assert_eq!(chunk.bytes(&chunk.records[0]), b"{\"a\":1}\r");
        assert!(chunker.next_chunk(10).unwrap().is_none());
    }
}
