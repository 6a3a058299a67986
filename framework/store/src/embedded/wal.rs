//! The write-ahead log.
//!
//! Small writes are appended here and fsynced before they are acknowledged; their rows then live
//! in the memtable until a flush turns them into a run, after which the log segments holding them
//! are deleted. The log is a sequence of numbered segment files; each record is
//!
//! ```text
//!   u32 length | u32 crc32(payload) | payload = u64 table id | u64 sequence | Arrow IPC stream
//! ```
//!
//! Replay reads segments in order and stops at the first record that is short or fails its
//! checksum: that is a write that was never acknowledged. A restarted store always opens a fresh
//! segment, so a torn tail is never appended to.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::embedded::manifest::sync_dir;
use crate::error::{Error, Result};

/// One decoded log record.
#[derive(Debug)]
pub struct WalRecord {
    pub table_id: u64,
    pub seq: u64,
    pub batch: RecordBatch,
}

/// The open, current segment.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    segment: u64,
    file: File,
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:012}.wal"))
}

/// Segment numbers present in `dir`, ascending.
pub fn segments(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("listing", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("listing", dir))?;
        let name = entry.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

impl Wal {
    /// Creates segment `segment` in `dir` and makes it the current one.
    pub fn create(dir: &Path, segment: u64) -> Result<Wal> {
        fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let path = segment_path(dir, segment);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("creating", &path))?;
        sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment,
            file,
        })
    }

    /// Appends one record and fsyncs it. When this returns the rows survive a crash.
    pub fn append(&mut self, table_id: u64, seq: u64, batch: &RecordBatch) -> Result<()> {
        let mut payload = Vec::with_capacity(16 + batch.get_array_memory_size());
        payload.extend_from_slice(&table_id.to_le_bytes());
        payload.extend_from_slice(&seq.to_le_bytes());
        {
            let mut writer = StreamWriter::try_new(&mut payload, &batch.schema())?;
            writer.write(batch)?;
            writer.finish()?;
        }
        let len = u32::try_from(payload.len()).map_err(|_| {
            Error::Internal(format!(
                "a single write of {} bytes is too large for the log; split it",
                payload.len()
            ))
        })?;
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let path = segment_path(&self.dir, self.segment);
        self.file
            .write_all(&frame)
            .map_err(Error::io("appending to", &path))?;
        self.file.sync_data().map_err(Error::io("syncing", &path))?;
        Ok(())
    }

    /// Starts a new segment; returns the number of the one just closed.
    pub fn rotate(&mut self) -> Result<u64> {
        let old = self.segment;
        *self = Wal::create(&self.dir, old + 1)?;
        Ok(old)
    }
}

/// Reads every intact record of the segments after `checkpoint`, in order.
pub fn replay(dir: &Path, checkpoint: u64) -> Result<Vec<WalRecord>> {
    let mut records = Vec::new();
    for segment in segments(dir)?.into_iter().filter(|s| *s > checkpoint) {
        let path = segment_path(dir, segment);
        let file = File::open(&path).map_err(Error::io("opening", &path))?;
        let mut reader = BufReader::new(file);
        loop {
            let mut header = [0u8; 8];
            if read_full(&mut reader, &mut header).map_err(Error::io("reading", &path))? < 8 {
                break;
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let mut payload = vec![0u8; len];
            if read_full(&mut reader, &mut payload).map_err(Error::io("reading", &path))? < len
                || crc32fast::hash(&payload) != crc
                || len < 16
            {
                tracing::warn!(
                    segment = %path.display(),
                    "ignoring a torn record at the end of the write-ahead log (a write that was never acknowledged)"
                );
                break;
            }
            let table_id = u64::from_le_bytes(payload[0..8].try_into().unwrap_or_default());
            let seq = u64::from_le_bytes(payload[8..16].try_into().unwrap_or_default());
            let mut batches = StreamReader::try_new(&payload[16..], None)?;
            let batch = batches.next().transpose()?.ok_or_else(|| Error::Corrupt {
                path: path.clone(),
                problem: "a log record holds no rows".into(),
            })?;
            records.push(WalRecord {
                table_id,
                seq,
                batch,
            });
        }
    }
    Ok(records)
}

/// Deletes the segments up to and including `checkpoint`.
pub fn remove_through(dir: &Path, checkpoint: u64) -> Result<()> {
    for segment in segments(dir)?.into_iter().filter(|s| *s <= checkpoint) {
        let path = segment_path(dir, segment);
        fs::remove_file(&path).map_err(Error::io("removing", &path))?;
    }
    Ok(())
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(values: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap()
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1).unwrap();
        wal.append(7, 10, &batch(vec![1, 2, 3])).unwrap();
        wal.append(8, 11, &batch(vec![4])).unwrap();
        // A half-written third record.
        let path = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();

        let records = replay(dir.path(), 0).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].table_id, records[0].seq), (7, 10));
        assert_eq!(records[0].batch, batch(vec![1, 2, 3]));
        assert_eq!((records[1].table_id, records[1].seq), (8, 11));
    }

    #[test]
    fn rotation_and_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1).unwrap();
        wal.append(1, 1, &batch(vec![1])).unwrap();
        assert_eq!(wal.rotate().unwrap(), 1);
        wal.append(1, 2, &batch(vec![2])).unwrap();
        assert_eq!(replay(dir.path(), 1).unwrap().len(), 1);
        remove_through(dir.path(), 1).unwrap();
        assert_eq!(segments(dir.path()).unwrap(), vec![2]);
    }

    #[test]
    fn a_flipped_bit_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1).unwrap();
        wal.append(1, 1, &batch(vec![1])).unwrap();
        wal.append(1, 2, &batch(vec![2])).unwrap();
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        assert_eq!(replay(dir.path(), 0).unwrap().len(), 1);
    }
}
