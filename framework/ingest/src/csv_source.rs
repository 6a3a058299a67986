//! Reading CSV with a header row.
//!
//! The header names the columns (matched to the table's by name). Records are scanned here for
//! their line and field count, then decoded by Arrow's CSV decoder against an all-`Utf8` schema,
//! so decoding cannot fail on a value: typing happens later, column by column. Empty fields are
//! NULL. The dialect is Arrow's default, which is RFC 4180's: `,` between fields, `"` quotes, `""`
//! a quote inside quotes, and CR, LF or CRLF ending records.

use std::io::Read;
use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use quarry_core::schema::TableDef;

use crate::column_match::match_columns;
use crate::error::{Error, Location, Position, Result};
use crate::format::Format;
use crate::problem::Problem;
use crate::push_decoder::decode_all;
use crate::raw_chunk::{FlawedRecord, Positions, RawChunk};
use crate::record_chunker::{
    Chunk, Flaw, RecordChunker, RecordScanner, RecordShape, RecordSpan, Scanned,
};

/// A CSV input, read a chunk of records at a time.
#[derive(Debug)]
pub(crate) struct CsvChunks {
    input: String,
    chunker: RecordChunker<CsvScanner>,
    /// The header's names, all `Utf8`.
    schema: SchemaRef,
    sources: Vec<Option<usize>>,
    batch_size: usize,
}

impl CsvChunks {
    /// Reads the header and matches it to `table`'s columns.
    pub fn open(
        reader: Box<dyn Read + Send>,
        input: &str,
        table: &TableDef,
        batch_size: usize,
    ) -> Result<Self> {
        let mut chunker = RecordChunker::new(reader, CsvScanner);
        // A live stream may pause before its header arrives.
        let header_chunk = loop {
            match chunker.next_chunk(1).map_err(|e| Error::io(input, e))? {
                Some(chunk) if chunk.records.is_empty() => continue,
                other => break other,
            }
        };
        let Some((header_chunk, header)) = header_chunk.and_then(|c| {
            let first = *c.records.first()?;
            Some((c, first))
        }) else {
            return Err(Error::MissingHeader {
                input: input.to_string(),
                columns: table.column_names().join(","),
            });
        };
        let at = Location::at(input, Position::Line(header.line));
        let malformed = |problem: &str| Error::Malformed {
            at: at.clone(),
            format: Format::Csv,
            problem: format!("the header row {problem}"),
        };
        if header.shape.flaw == Some(Flaw::UnclosedQuote) {
            return Err(malformed("has a quoted name that is never closed"));
        }
        let text = std::str::from_utf8(header_chunk.bytes(&header))
            .map_err(|_| malformed("is not UTF-8 text; save the file as UTF-8"))?;
        let names = split_fields(text);
        if let Some(index) = names.iter().position(|n| n.trim().is_empty()) {
            return Err(Error::UnnamedColumn {
                input: input.to_string(),
                index: index + 1,
                columns: table.column_names().join(", "),
            });
        }
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let sources = match_columns(&Location::input(input), &name_refs, table, true)?;
        let fields: Vec<Field> = names
            .iter()
            .map(|n| Field::new(n.trim(), DataType::Utf8, true))
            .collect();
        Ok(CsvChunks {
            input: input.to_string(),
            chunker,
            schema: Arc::new(Schema::new(fields)),
            sources,
            batch_size,
        })
    }

    /// The next chunk of rows, or `None` at the end of the input.
    pub fn next_chunk(&mut self) -> Result<Option<RawChunk>> {
        let input = self.input.as_str();
        let Some(chunk) = self
            .chunker
            .next_chunk(self.batch_size)
            .map_err(|e| Error::io(input, e))?
        else {
            return Ok(None);
        };
        if chunk.records.is_empty() {
            return Ok(Some(RawChunk::paused(self.sources.clone())));
        }
        let columns = self.schema.fields().len();
        let not_utf8 = non_utf8_records(&chunk);
        let mut flawed = Vec::new();
        let mut good: Vec<&RecordSpan> = Vec::with_capacity(chunk.records.len());
        for (i, record) in chunk.records.iter().enumerate() {
            let problem = if record.shape.flaw == Some(Flaw::UnclosedQuote) {
                Some("a quoted field is never closed (a '\"' is missing)".to_string())
            } else if record.shape.fields as usize != columns {
                Some(format!(
                    "the row has {} fields but the header has {columns}",
                    record.shape.fields
                ))
            } else if not_utf8.binary_search(&i).is_ok() {
                Some("the row is not UTF-8 text; save the file as UTF-8".to_string())
            } else {
                None
            };
            match problem {
                Some(problem) => flawed.push(FlawedRecord {
                    position: Position::Line(record.line),
                    problem: Problem::Malformed {
                        format: Format::Csv,
                        problem,
                        raw: String::from_utf8_lossy(chunk.bytes(record)).into_owned(),
                    },
                }),
                None => good.push(record),
            }
        }

        let data = if flawed.is_empty() {
            let ends_unterminated = good.last().is_some_and(|r| r.end == chunk.data.len());
            let mut data = chunk.data;
            if ends_unterminated {
                data.push(b'\n');
            }
            data
        } else {
            let mut data = Vec::with_capacity(chunk.data.len());
            for record in &good {
                data.extend_from_slice(&chunk.data[record.start..record.end]);
                data.push(b'\n');
            }
            data
        };
        let positions = Positions::Lines(good.iter().map(|r| r.line).collect());
        let records = (good.len() + flawed.len()) as u64;
        let batch = self.decode(&data, good.len())?;
        Ok(Some(RawChunk {
            batch,
            sources: self.sources.clone(),
            positions,
            flawed,
            records,
        }))
    }

    /// Decodes `rows` records that are known to be well-formed.
    fn decode(&self, data: &[u8], rows: usize) -> Result<RecordBatch> {
        let mut decoder = arrow::csv::ReaderBuilder::new(Arc::clone(&self.schema))
            .with_header(false)
            .with_batch_size(rows + 1)
            .build_decoder();
        let batches = decode_all(&mut decoder, data).map_err(|e| Error::arrow(&self.input, e))?;
        let batch =
            concat_batches(&self.schema, &batches).map_err(|e| Error::arrow(&self.input, e))?;
        if batch.num_rows() != rows {
            return Err(Error::internal(
                &self.input,
                format!(
                    "the CSV decoder found {} rows where {rows} records were scanned",
                    batch.num_rows()
                ),
            ));
        }
        Ok(batch)
    }
}

/// Indices of the records of `chunk` that are not valid UTF-8, in order.
pub(crate) fn non_utf8_records(chunk: &Chunk) -> Vec<usize> {
    let mut bad = Vec::new();
    let mut from = 0;
    while from < chunk.data.len() {
        let Err(e) = std::str::from_utf8(&chunk.data[from..]) else {
            break;
        };
        let at = from + e.valid_up_to();
        // Terminators and blank lines are ASCII, so the bad byte is inside a record.
        let index = chunk
            .records
            .partition_point(|r| r.start <= at)
            .saturating_sub(1);
        bad.push(index);
        from = chunk.records[index].end.max(at + 1);
    }
    bad.dedup();
    bad
}

/// Finds CSV records as Arrow's decoder (csv-core) does: quotes may span lines, blank lines are
/// skipped, CR, LF and CRLF each end a record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CsvScanner;

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldState {
    Start,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the field's end, or the first of a `""` pair.
    QuoteInQuoted,
}

impl RecordScanner for CsvScanner {
    fn scan(&self, buf: &[u8], eof: bool) -> Scanned {
        // Blank lines.
        let mut i = 0;
        let mut lines = 0;
        while i < buf.len() {
            match buf[i] {
                b'\n' => i += 1,
                b'\r' => match buf.get(i + 1) {
                    Some(b'\n') => i += 2,
                    Some(_) => i += 1,
                    None if eof => i += 1,
                    None => break,
                },
                _ => break,
            }
            lines += 1;
        }
        if i > 0 {
            return Scanned::Blank { len: i, lines };
        }
        if buf.is_empty() || buf[0] == b'\r' {
            return if eof && buf.is_empty() {
                Scanned::Done
            } else {
                Scanned::NeedMore
            };
        }

        let mut state = FieldState::Start;
        let mut fields = 1u32;
        let mut lines = 0u64;
        for (j, &c) in buf.iter().enumerate() {
            match state {
                FieldState::Start | FieldState::Unquoted => match c {
                    b'"' if state == FieldState::Start => state = FieldState::Quoted,
                    b',' => {
                        fields += 1;
                        state = FieldState::Start;
                    }
                    b'\n' | b'\r' => return record_end(buf, j, eof, lines, fields),
                    _ => state = FieldState::Unquoted,
                },
                FieldState::Quoted => match c {
                    b'"' => state = FieldState::QuoteInQuoted,
                    b'\n' => lines += 1,
                    b'\r' if buf.get(j + 1) != Some(&b'\n') => lines += 1,
                    _ => {}
                },
                FieldState::QuoteInQuoted => match c {
                    b'"' => state = FieldState::Quoted,
                    b',' => {
                        fields += 1;
                        state = FieldState::Start;
                    }
                    b'\n' | b'\r' => return record_end(buf, j, eof, lines, fields),
                    _ => state = FieldState::Unquoted,
                },
            }
        }
        if !eof {
            return Scanned::NeedMore;
        }
        let flaw = (state == FieldState::Quoted).then_some(Flaw::UnclosedQuote);
        Scanned::Record {
            end: buf.len(),
            next: buf.len(),
            lines,
            shape: RecordShape { fields, flaw },
        }
    }
}

/// A record whose terminator starts at `end`.
fn record_end(buf: &[u8], end: usize, eof: bool, lines: u64, fields: u32) -> Scanned {
    let next = match (buf[end], buf.get(end + 1)) {
        (b'\r', Some(b'\n')) => end + 2,
        (b'\r', None) if !eof => return Scanned::NeedMore,
        _ => end + 1,
    };
    Scanned::Record {
        end,
        next,
        lines: lines + 1,
        shape: RecordShape { fields, flaw: None },
    }
}

/// Splits one CSV record (the header) into its unquoted fields.
fn split_fields(record: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut state = FieldState::Start;
    for c in record.chars() {
        match (state, c) {
            (FieldState::Start, '"') => state = FieldState::Quoted,
            (FieldState::Start | FieldState::Unquoted | FieldState::QuoteInQuoted, ',') => {
                fields.push(std::mem::take(&mut field));
                state = FieldState::Start;
            }
            (FieldState::Quoted, '"') => state = FieldState::QuoteInQuoted,
            (FieldState::QuoteInQuoted, '"') => {
                field.push('"');
                state = FieldState::Quoted;
            }
            (FieldState::Quoted, c) => field.push(c),
            (_, c) => {
                field.push(c);
                state = FieldState::Unquoted;
            }
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn scan_all(text: &[u8]) -> Vec<(u64, u32, Option<Flaw>, String)> {
        let mut chunker = RecordChunker::new(Box::new(Cursor::new(text.to_vec())), CsvScanner);
        let mut out = Vec::new();
        while let Some(chunk) = chunker.next_chunk(2).unwrap() {
            for r in &chunk.records {
                out.push((
                    r.line,
                    r.shape.fields,
                    r.shape.flaw,
                    String::from_utf8_lossy(chunk.bytes(r)).into_owned(),
                ));
            }
        }
        out
    }

    #[test]
    fn records_track_lines_through_quotes_and_blank_lines() {
        let text = b"a,b\r\n1,\"x\ny\"\r\n\r\n\n2,\"q\"\"z\"\r3,4\n\"open,5";
        let got = scan_all(text);
        assert_eq!(
            got,
            vec![
                (1, 2, None, "a,b".to_string()),
                (2, 2, None, "1,\"x\ny\"".to_string()),
                (6, 2, None, "2,\"q\"\"z\"".to_string()),
                (7, 2, None, "3,4".to_string()),
                (8, 1, Some(Flaw::UnclosedQuote), "\"open,5".to_string()),
            ]
        );
    }

    #[test]
    fn commas_inside_quotes_are_not_separators() {
        let got = scan_all(b"\"a,b\",c,\"\"\n");
        assert_eq!(got[0].1, 3);
    }

    #[test]
    fn header_fields_are_unquoted() {
        assert_eq!(
            split_fields("a,\"b,c\",\"d\"\"e\", f"),
            vec!["a", "b,c", "d\"e", " f"]
        );
        assert_eq!(split_fields(""), vec![""]);
    }
}
