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
//! A segment only ever ends in a bad record when that record was never acknowledged: an append
//! that fails (a short write, `ENOSPC`, a failed fsync) truncates the segment back to its last
//! good record and moves on to a new segment, so no acknowledged record is ever written after a
//! torn one. A restarted store always opens a fresh segment, so a torn tail is never appended to.
//!
//! Replay reads segments in order. A bad record at the end of a segment (short, or failing its
//! checksum with nothing after it) is that unacknowledged write and is skipped. A bad record with
//! more bytes after it is damage to acknowledged data: replay refuses it, naming the segment and
//! the offset, and leaves the file where it is for the operator.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::embedded::manifest::{create_dir_durably, sync_dir};
use crate::error::{Error, Result};

/// An open segment file: what the log needs of it. Tests put a failing one in its place.
pub trait SegmentFile: Write + Send + Debug {
    /// Makes every byte written so far durable (`fdatasync`).
    fn sync(&mut self) -> std::io::Result<()>;
    /// Cuts the file back to `len` bytes.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl SegmentFile for File {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }
}

/// Opens segment files for appending.
pub trait SegmentFiles: Send + Sync + Debug {
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>>;
}

/// Segment files on the local file system.
#[derive(Debug, Default)]
pub struct LocalSegments;

impl SegmentFiles for LocalSegments {
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(file))
    }
}

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
    file: Box<dyn SegmentFile>,
    /// Bytes of the current segment that hold whole, synced records.
    len: u64,
    files: std::sync::Arc<dyn SegmentFiles>,
    /// Why appends are refused: an append failed and the log could not set itself right.
    broken: Option<String>,
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

/// The size of segment `segment` in bytes.
pub fn segment_len(dir: &Path, segment: u64) -> Result<u64> {
    let path = segment_path(dir, segment);
    Ok(fs::metadata(&path)
        .map_err(Error::io("reading", &path))?
        .len())
}

impl Wal {
    /// Creates segment `segment` in `dir` and makes it the current one.
    pub fn create(dir: &Path, segment: u64) -> Result<Wal> {
        Wal::create_with(dir, segment, std::sync::Arc::new(LocalSegments))
    }

    /// [`Wal::create`] with segment files opened by `files`.
    pub fn create_with(
        dir: &Path,
        segment: u64,
        files: std::sync::Arc<dyn SegmentFiles>,
    ) -> Result<Wal> {
        create_dir_durably(dir)?;
        let path = segment_path(dir, segment);
        let file = files.open(&path).map_err(Error::io("creating", &path))?;
        sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment,
            file,
            len: 0,
            files,
            broken: None,
        })
    }

    /// Appends one record and fsyncs it. When this returns the rows survive a crash; when it
    /// fails they were not written, and later records are not written after a torn one.
    #[cfg(test)]
    pub fn append(&mut self, table_id: u64, seq: u64, batch: &RecordBatch) -> Result<()> {
        self.append_group(&[(table_id, seq, batch)])
    }

    /// Appends the records of several writes with one write and one sync (group commit): all of
    /// them are durable when this returns, or none is acknowledged.
    pub fn append_group(&mut self, records: &[(u64, u64, &RecordBatch)]) -> Result<()> {
        if let Some(reason) = &self.broken {
            return Err(Error::Internal(format!(
                "the write-ahead log in {} refuses writes since an earlier failure ({reason}); \
                 restart the store once the disk is healthy",
                self.dir.display()
            )));
        }
        let mut frames = Vec::new();
        for &(table_id, seq, batch) in records {
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
            frames.extend_from_slice(&len.to_le_bytes());
            frames.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            frames.extend_from_slice(&payload);
        }
        let path = segment_path(&self.dir, self.segment);
        let written = self
            .file
            .write_all(&frames)
            .map_err(Error::io("appending to", &path))
            .and_then(|()| self.file.sync().map_err(Error::io("syncing", &path)));
        match written {
            Ok(()) => {
                self.len += frames.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.recover(&e);
                Err(e)
            }
        }
    }

    /// After a failed append: cut the segment back to its last good record (best effort: a torn
    /// tail is skipped by replay anyway) and continue in a new segment, so that nothing is ever
    /// appended after the torn bytes. If no new segment can be opened, refuse further appends.
    fn recover(&mut self, failure: &Error) {
        let path = segment_path(&self.dir, self.segment);
        if let Err(e) = self.file.truncate(self.len).and_then(|()| self.file.sync()) {
            tracing::warn!(segment = %path.display(), error = %e, "could not cut a failed write off the write-ahead log; replay will skip it");
        }
        match Wal::create_with(&self.dir, self.segment + 1, self.files.clone()) {
            Ok(next) => *self = next,
            Err(e) => {
                tracing::error!(error = %e, "the write-ahead log cannot open a new segment");
                self.broken = Some(format!("{failure}; then: {e}"));
            }
        }
    }

    /// Starts a new segment; returns the number of the one just closed.
    pub fn rotate(&mut self) -> Result<u64> {
        let old = self.segment;
        *self = Wal::create_with(&self.dir, old + 1, self.files.clone())?;
        Ok(old)
    }
}

/// Reads every acknowledged record of the segments after `checkpoint`, in order: skips a torn
/// record at the end of a segment, refuses a damaged one in its middle.
pub fn replay(dir: &Path, checkpoint: u64) -> Result<Vec<WalRecord>> {
    let mut records = Vec::new();
    for segment in segments(dir)?.into_iter().filter(|s| *s > checkpoint) {
        let path = segment_path(dir, segment);
        let file = File::open(&path).map_err(Error::io("opening", &path))?;
        let size = file.metadata().map_err(Error::io("reading", &path))?.len();
        let mut reader = BufReader::new(file);
        let mut offset = 0u64;
        loop {
            let mut header = [0u8; 8];
            let read = read_full(&mut reader, &mut header).map_err(Error::io("reading", &path))?;
            if read == 0 {
                break;
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let end = offset + 8 + len;
            if read < 8 || end > size {
                tracing::warn!(segment = %path.display(), offset, "ignoring a torn record at the end of the write-ahead log (a write that was never acknowledged)");
                break;
            }
            let mut payload = vec![0u8; len as usize];
            read_full(&mut reader, &mut payload).map_err(Error::io("reading", &path))?;
            if crc32fast::hash(&payload) != crc || len < 16 {
                if end == size {
                    tracing::warn!(segment = %path.display(), offset, "ignoring a torn record at the end of the write-ahead log (a write that was never acknowledged)");
                    break;
                }
                return Err(Error::Corrupt {
                    path: path.clone(),
                    problem: format!(
                        "the record at byte {offset} fails its checksum and {} bytes of later \
                         records follow it: acknowledged writes are damaged. The store will not \
                         open over them; move the file aside (it is left untouched) to open the \
                         store without the records from byte {offset} on",
                        size - end
                    ),
                });
            }
            let table_id = u64::from_le_bytes(payload[0..8].try_into().unwrap_or_default());
            let seq = u64::from_le_bytes(payload[8..16].try_into().unwrap_or_default());
            let mut batches = StreamReader::try_new(&payload[16..], None)?;
            let batch = batches.next().transpose()?.ok_or_else(|| Error::Corrupt {
                path: path.clone(),
                problem: format!("the log record at byte {offset} holds no rows"),
            })?;
            records.push(WalRecord {
                table_id,
                seq,
                batch,
            });
            offset = end;
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

    #[test]
    fn a_damaged_record_with_records_after_it_is_refused_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1).unwrap();
        wal.append(1, 1, &batch(vec![1])).unwrap();
        wal.append(1, 2, &batch(vec![2])).unwrap();
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 0x40; // inside the first record's payload
        fs::write(&path, &bytes).unwrap();
        let err = replay(dir.path(), 0).unwrap_err().to_string();
        assert!(
            err.contains("byte 0")
                && err.contains("000000000001.wal")
                && err.contains("move the file aside"),
            "{err}"
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "the damaged segment is kept as it was"
        );
    }

    /// Segment files whose first one fails an append after writing part of it, once.
    #[derive(Debug)]
    struct FailOnce {
        after_bytes: usize,
        fail_sync: bool,
        armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    #[derive(Debug)]
    struct FailingFile {
        file: File,
        after_bytes: usize,
        fail_sync: bool,
        armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
        written: usize,
    }

    impl SegmentFiles for FailOnce {
        fn open(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>> {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            Ok(Box::new(FailingFile {
                file,
                after_bytes: self.after_bytes,
                fail_sync: self.fail_sync,
                armed: self.armed.clone(),
                written: 0,
            }))
        }
    }

    impl Write for FailingFile {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            use std::sync::atomic::Ordering;
            if !self.fail_sync && self.armed.load(Ordering::SeqCst) {
                let room = self.after_bytes.saturating_sub(self.written);
                if room == 0 {
                    self.armed.store(false, Ordering::SeqCst);
                    return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
                }
                let n = self.file.write(&buf[..buf.len().min(room)])?;
                self.written += n;
                return Ok(n);
            }
            self.file.write(buf)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.file.flush()
        }
    }

    impl SegmentFile for FailingFile {
        fn sync(&mut self) -> std::io::Result<()> {
            use std::sync::atomic::Ordering;
            if self.fail_sync && self.armed.swap(false, Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(5)); // EIO
            }
            self.file.sync_data()
        }

        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            self.file.set_len(len)
        }
    }

    #[test]
    fn a_failed_append_never_strands_the_records_acknowledged_after_it() {
        // A short write that fails with ENOSPC part-way through the second record, and a
        // failed fsync of the second record.
        for (after_bytes, fail_sync) in [(200, false), (0, true)] {
            let dir = tempfile::tempdir().unwrap();
            let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let files = std::sync::Arc::new(FailOnce {
                after_bytes,
                fail_sync,
                armed: armed.clone(),
            });
            let mut wal = Wal::create_with(dir.path(), 1, files).unwrap();
            wal.append(1, 1, &batch(vec![1])).unwrap();
            armed.store(true, std::sync::atomic::Ordering::SeqCst);
            // Count from the start of the second record.
            let err = wal.append(1, 2, &batch((0..100).collect())).unwrap_err();
            assert!(err.to_string().contains(".wal"), "{err}");
            wal.append(1, 3, &batch(vec![3])).unwrap();
            let records = replay(dir.path(), 0).unwrap();
            let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
            assert_eq!(
                seqs,
                [1, 3],
                "after_bytes={after_bytes} fail_sync={fail_sync}"
            );
            assert_eq!(records[1].batch, batch(vec![3]));
        }
    }
}
