//! Reading a live input: standard input as it arrives, or a file as it grows (`--follow`).
//!
//! ```text
//!   producer thread: stdin, or the file (polled at its end) ──64 KiB blocks──▶ bounded channel
//!   TickingReader: channel ──▶ record chunker; once per tick it says "nothing yet", and the
//!                  chunker hands out the records read so far instead of waiting for a full batch
//!   stream_source: chunks ──▶ good rows (and rejects) ──▶ sink, at least once per tick
//! ```
//!
//! Memory stays bounded whatever the input's length: the channel holds a few blocks, the chunker
//! at most one batch, and the sink decides when to store what it was given. Line numbers count
//! from the start of the stream, so errors and rejects name the same lines a file load would.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use quarry_core::schema::TableDef;

use crate::csv_source::CsvChunks;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::ndjson_source::NdjsonChunks;
use crate::read::{Chunks, ReadOptions, SourceData, Target};
use crate::source::Source;

/// Bytes per read of the producer.
const BLOCK: usize = 64 * 1024;
/// Blocks in flight between the producer and the parser.
const BLOCKS_IN_FLIGHT: usize = 16;
/// How often a followed file is checked for new bytes at its end.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// How to read a live input.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// At the end of a file, wait for more (as `tail -f`) until `stop` is set.
    pub follow: bool,
    /// The longest a read record waits before it is handed to the sink.
    pub tick: Duration,
    /// Set to end a followed file (Ctrl-C); the rows read until then are still handed out.
    pub stop: Arc<AtomicBool>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            follow: false,
            tick: Duration::from_millis(250),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Reads a CSV or NDJSON `source` as it arrives, handing `sink` the good rows (and, with
/// `options.keep_rejects`, the rejects) of each chunk: at most `options.batch_size` records, and
/// at least once per `stream.tick` while the input pauses (possibly with no rows). `sink`
/// returns false to stop reading. The first bad row is an error unless rejects are kept, as in
/// [`crate::read_source`]; rows handed out before it stay with the sink.
pub fn stream_source(
    source: &Source,
    table: &TableDef,
    options: &ReadOptions,
    stream: &StreamOptions,
    sink: &mut dyn FnMut(SourceData) -> Result<bool>,
) -> Result<()> {
    let (input, format) = options.input_format(source)?;
    let batch_size = options.batch_size.max(1);
    let open = |input: &str| -> Result<Box<dyn Read + Send>> {
        let blocks =
            produce(source, stream.follow, stream.stop.clone()).map_err(|e| Error::io(input, e))?;
        Ok(Box::new(TickingReader::new(blocks, stream.tick)))
    };
    let mut chunks = match format {
        Format::Csv => Chunks::Csv(CsvChunks::open(open(&input)?, &input, table, batch_size)?),
        Format::NdJson => {
            Chunks::NdJson(NdjsonChunks::open(open(&input)?, &input, table, batch_size))
        }
        Format::Parquet => return Err(Error::NotStreamable { input }),
    };
    let target = Target::new(table);
    while let Some(chunk) = chunks.next_chunk()? {
        let mut data = SourceData {
            source: input.clone(),
            batches: Vec::new(),
            rows: 0,
            rejects: Vec::new(),
        };
        target.accept(chunk, options.keep_rejects, &mut data)?;
        if !sink(data)? {
            break;
        }
    }
    Ok(())
}

type Block = std::io::Result<Vec<u8>>;

/// Starts the thread that reads `source` into blocks; the channel closes at the end of the
/// input (for a followed file: once `stop` is set and the file's end is reached).
fn produce(
    source: &Source,
    follow: bool,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Receiver<Block>> {
    let (tx, rx) = sync_channel::<Block>(BLOCKS_IN_FLIGHT);
    let reader: Box<dyn Read + Send> = match source {
        Source::Stdin => Box::new(std::io::stdin()),
        Source::File(path) => Box::new(File::open(path)?),
    };
    let follow = follow && matches!(source, Source::File(_));
    std::thread::Builder::new()
        .name("quarry-load-stream".into())
        .spawn(move || pump(reader, &tx, follow, &stop))?;
    Ok(rx)
}

fn pump(mut reader: Box<dyn Read + Send>, tx: &SyncSender<Block>, follow: bool, stop: &AtomicBool) {
    loop {
        let mut block = vec![0u8; BLOCK];
        match reader.read(&mut block) {
            Ok(0) if follow && !stop.load(Ordering::SeqCst) => std::thread::sleep(FOLLOW_POLL),
            Ok(0) => return,
            Ok(n) => {
                block.truncate(n);
                if tx.send(Ok(block)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// Reads the producer's blocks; once per tick it reports [`ErrorKind::WouldBlock`] instead, so
/// the chunker hands out what it has.
struct TickingReader {
    blocks: Receiver<Block>,
    block: Vec<u8>,
    at: usize,
    tick: Duration,
    last_tick: Instant,
    ended: bool,
}

impl TickingReader {
    fn new(blocks: Receiver<Block>, tick: Duration) -> Self {
        TickingReader {
            blocks,
            block: Vec::new(),
            at: 0,
            tick,
            last_tick: Instant::now(),
            ended: false,
        }
    }

    fn pause(&mut self) -> std::io::Error {
        self.last_tick = Instant::now();
        std::io::Error::from(ErrorKind::WouldBlock)
    }
}

impl Read for TickingReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let waited = self.last_tick.elapsed();
        if waited >= self.tick && !self.ended {
            return Err(self.pause());
        }
        if self.at == self.block.len() {
            if self.ended {
                return Ok(0);
            }
            match self.blocks.recv_timeout(self.tick - waited) {
                Ok(Ok(block)) => {
                    self.block = block;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => return Err(self.pause()),
                Err(RecvTimeoutError::Disconnected) => {
                    self.ended = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.block.len() - self.at);
        out[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use quarry_core::cql_type::CqlType;
    use quarry_core::schema::ColumnDef;

    use super::*;

    fn table() -> TableDef {
        TableDef::new(
            "ks",
            "t",
            vec![
                ColumnDef::new("id", CqlType::BigInt),
                ColumnDef::new("v", CqlType::Int),
            ],
            vec!["id".into()],
            vec![],
        )
        .unwrap()
    }

    #[test]
    fn a_followed_file_hands_out_rows_as_they_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.csv");
        let mut file = File::create(&path).unwrap();
        writeln!(file, "id,v\n1,10\n2,20").unwrap();
        file.flush().unwrap();
        let stream = StreamOptions {
            follow: true,
            tick: Duration::from_millis(50),
            ..StreamOptions::default()
        };
        let stop = stream.stop.clone();
        let mut seen: Vec<u64> = Vec::new();
        let mut appended = false;
        let mut rejects = 0;
        let options = ReadOptions {
            keep_rejects: true,
            ..ReadOptions::default()
        };
        let started = Instant::now();
        stream_source(
            &Source::File(path),
            &table(),
            &options,
            &stream,
            &mut |data| {
                rejects += data.rejects.len();
                if let Some(r) = data.rejects.first() {
                    assert_eq!(r.line, 5, "{r:?}");
                }
                seen.push(data.rows);
                let total: u64 = seen.iter().sum();
                if total == 2 && !appended {
                    // The first rows came out without the file ending; now it grows, with a bad row.
                    writeln!(file, "3,30\n4,oops\n5,50").unwrap();
                    file.flush().unwrap();
                    appended = true;
                }
                if total == 4 {
                    stop.store(true, Ordering::SeqCst);
                }
                assert!(started.elapsed() < Duration::from_secs(20), "no progress");
                Ok(true)
            },
        )
        .unwrap();
        assert_eq!(seen.iter().sum::<u64>(), 4);
        assert_eq!(rejects, 1);
        assert!(seen.contains(&0), "pauses are reported: {seen:?}");
    }

    #[test]
    fn parquet_cannot_be_streamed() {
        let e = stream_source(
            &Source::File("x.parquet".into()),
            &table(),
            &ReadOptions::default(),
            &StreamOptions::default(),
            &mut |_| Ok(true),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot be read as a live stream"), "{e}");
    }
}
