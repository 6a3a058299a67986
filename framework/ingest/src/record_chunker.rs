//! Cutting a text input into chunks of whole records, remembering the line each record starts on.
//!
//! Arrow's CSV and JSON decoders say how many rows they decoded but not which line each came
//! from. A [`RecordScanner`] finds record boundaries the same way the decoder will (quoted CSV
//! fields may hold newlines; blank lines are skipped), so every row of the decoded batch can be
//! traced to its line, and records that cannot be rows (wrong field count, not UTF-8, not a JSON
//! object) can be set aside before the decoder sees them.
//!
//! ```text
//!   Read ──1 MiB reads──▶ buffer ──scanner──▶ Chunk { data, records: [RecordSpan { line, .. }] }
//! ```

use std::io::{ErrorKind, Read};

/// Bytes asked of the reader per read; a record longer than the buffer doubles it.
const READ_SIZE: usize = 1 << 20;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What a scanner found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scanned {
    /// Blank space between records: skip `len` bytes holding `lines` line breaks.
    Blank { len: usize, lines: u64 },
    /// One record: its content is `..end`, its terminator `end..next`, and `next` holds `lines`
    /// line breaks.
    Record {
        end: usize,
        next: usize,
        lines: u64,
        shape: RecordShape,
    },
    /// The buffer ends inside a record (or where a terminator might continue).
    NeedMore,
    /// No more records (only returned at end of input).
    Done,
}

/// What a scanner learned about a record's structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RecordShape {
    /// Number of fields (CSV only; 0 for NDJSON).
    pub fields: u32,
    /// The scanner already knows the record cannot be a row.
    pub flaw: Option<Flaw>,
}

/// Why a record cannot become a row, found while scanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flaw {
    /// A CSV quoted field runs to the end of the input.
    UnclosedQuote,
    /// An NDJSON line that does not start with `{`.
    NotAnObject,
}

/// Finds the next record at the start of a buffer.
pub(crate) trait RecordScanner {
    /// Scans `buf`; `eof` says no bytes follow it.
    fn scan(&self, buf: &[u8], eof: bool) -> Scanned;
}

/// One record of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordSpan {
    /// Byte range of the record's content in [`Chunk::data`], without its terminator.
    pub start: usize,
    pub end: usize,
    /// 1-based line the record starts on.
    pub line: u64,
    pub shape: RecordShape,
}

/// Whole records, and the bytes they were cut from.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub data: Vec<u8>,
    pub records: Vec<RecordSpan>,
}

impl Chunk {
    /// A record's bytes.
    pub fn bytes(&self, record: &RecordSpan) -> &[u8] {
        &self.data[record.start..record.end]
    }
}

/// Reads an input and hands it out a chunk of records at a time.
pub(crate) struct RecordChunker<S> {
    reader: Box<dyn Read + Send>,
    scanner: S,
    buf: Vec<u8>,
    /// First byte of `buf` not yet handed out.
    pos: usize,
    eof: bool,
    /// Set when the reader said it has nothing yet ([`ErrorKind::WouldBlock`]): the records read
    /// so far are handed out rather than waited on.
    stalled: bool,
    /// Line number at `pos`.
    line: u64,
    started: bool,
}

impl<S> std::fmt::Debug for RecordChunker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordChunker")
            .field("buffered", &(self.buf.len() - self.pos))
            .field("eof", &self.eof)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl<S: RecordScanner> RecordChunker<S> {
    pub fn new(reader: Box<dyn Read + Send>, scanner: S) -> Self {
        RecordChunker {
            reader,
            scanner,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            stalled: false,
            line: 1,
            started: false,
        }
    }

    /// The next chunk of at most `max_records` records, or `None` at the end of the input. A
    /// reader that returns [`ErrorKind::WouldBlock`] (a live stream with nothing new yet) gets
    /// the records read so far handed out at once, possibly none.
    pub fn next_chunk(&mut self, max_records: usize) -> std::io::Result<Option<Chunk>> {
        if !self.started {
            self.skip_bom()?;
        }
        let start = self.pos;
        let mut records = Vec::new();
        let mut stalled = std::mem::take(&mut self.stalled);
        while records.len() < max_records && !stalled {
            match self.scanner.scan(&self.buf[self.pos..], self.eof) {
                Scanned::Blank { len, lines } => {
                    self.pos += len;
                    self.line += lines;
                }
                Scanned::Record {
                    end,
                    next,
                    lines,
                    shape,
                } => {
                    records.push(RecordSpan {
                        start: self.pos - start,
                        end: self.pos + end - start,
                        line: self.line,
                        shape,
                    });
                    self.pos += next;
                    self.line += lines;
                }
                Scanned::NeedMore => {
                    self.fill()?;
                    stalled = std::mem::take(&mut self.stalled);
                }
                Scanned::Done => break,
            }
        }
        // Hand out buf[start..pos] and keep the rest (a partial record at most).
        let rest = self.buf.split_off(self.pos);
        let mut data = std::mem::replace(&mut self.buf, rest);
        data.drain(..start);
        self.pos = 0;
        if records.is_empty() && !stalled {
            return Ok(None);
        }
        Ok(Some(Chunk { data, records }))
    }

    /// Drops a UTF-8 byte-order mark at the very start (spreadsheets write one).
    fn skip_bom(&mut self) -> std::io::Result<()> {
        while self.buf.len() < UTF8_BOM.len() && !self.eof {
            self.fill()?;
        }
        if self.buf.starts_with(UTF8_BOM) {
            self.pos = UTF8_BOM.len();
        }
        self.started = true;
        Ok(())
    }

    /// Appends the next read to the buffer; sets `eof` when there is none.
    fn fill(&mut self) -> std::io::Result<()> {
        let old = self.buf.len();
        // Doubling for long records keeps rescanning a partial record linear overall.
        let want = (old - self.pos).max(READ_SIZE);
        self.buf.resize(old + want, 0);
        let read = loop {
            match self.reader.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.buf.truncate(old);
                    self.stalled = true;
                    return Ok(());
                }
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(old + read);
        if read == 0 {
            self.eof = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// Records are lines; blank lines are skipped.
    struct Lines;

    impl RecordScanner for Lines {
        fn scan(&self, buf: &[u8], eof: bool) -> Scanned {
            let blank = buf.iter().take_while(|&&b| b == b'\n').count();
            if blank > 0 {
                return Scanned::Blank {
                    len: blank,
                    lines: blank as u64,
                };
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(end) => Scanned::Record {
                    end,
                    next: end + 1,
                    lines: 1,
                    shape: RecordShape::default(),
                },
                None if !eof => Scanned::NeedMore,
                None if buf.is_empty() => Scanned::Done,
                None => Scanned::Record {
                    end: buf.len(),
                    next: buf.len(),
                    lines: 0,
                    shape: RecordShape::default(),
                },
            }
        }
    }

    /// A reader that hands out at most `step` bytes per read, as pipes do.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len() - self.at);
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn all_records(reader: Box<dyn Read + Send>, max: usize) -> Vec<(u64, String)> {
        let mut chunker = RecordChunker::new(reader, Lines);
        let mut out = Vec::new();
        while let Some(chunk) = chunker.next_chunk(max).unwrap() {
            assert!(chunk.records.len() <= max);
            for r in &chunk.records {
                out.push((r.line, String::from_utf8_lossy(chunk.bytes(r)).into_owned()));
            }
        }
        out
    }

    #[test]
    fn records_keep_their_line_numbers_across_chunks_and_reads() {
        let text = b"\xEF\xBB\xBFa\nbb\n\n\nccc\nd".to_vec();
        let expected = vec![
            (1, "a".to_string()),
            (2, "bb".to_string()),
            (5, "ccc".to_string()),
            (6, "d".to_string()),
        ];
        assert_eq!(
            all_records(Box::new(Cursor::new(text.clone())), 2),
            expected
        );
        assert_eq!(
            all_records(Box::new(Cursor::new(text.clone())), 100),
            expected
        );
        let trickle = Trickle {
            data: text,
            at: 0,
            step: 1,
        };
        assert_eq!(all_records(Box::new(trickle), 3), expected);
    }

    #[test]
    fn empty_inputs_have_no_chunks() {
        assert!(all_records(Box::new(Cursor::new(Vec::new())), 10).is_empty());
        assert!(all_records(Box::new(Cursor::new(b"\n\n".to_vec())), 10).is_empty());
    }
}
