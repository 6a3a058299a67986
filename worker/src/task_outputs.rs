//! Outputs of finished tasks, kept until their job is released, for consumers to pull over
//! Arrow Flight.
//!
//! A task writes each output partition as it produces it ([`PartitionWriter`]): in memory while
//! the worker holds less than its budget; past it, the partition goes to an Arrow IPC file in the
//! worker's spill directory (removed with the worker), what it had in memory first, and is read
//! back when fetched. So a task's output never has to fit in memory whole.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::{ArrayRef, AsArray, GenericByteViewArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{ByteViewType, DataType, SchemaRef};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use quarry_jobs::{JobId, TaskId};

/// One output partition of a task.
#[derive(Debug)]
pub enum Partition {
    Memory(Vec<RecordBatch>),
    /// An Arrow IPC file in the spill directory.
    Spilled(PathBuf),
}

/// One task's output partitions.
#[derive(Debug)]
pub struct TaskOutputs {
    pub schema: SchemaRef,
    pub partitions: Vec<Partition>,
    /// Bytes of the rows (in memory or on disk).
    pub bytes: u64,
    /// Of those, the bytes held in memory (counted against the budget).
    memory_bytes: u64,
}

impl TaskOutputs {
    /// The batches of partition `p` (read from disk when spilled). Blocking when spilled.
    pub fn read(&self, p: usize) -> std::io::Result<Option<Vec<RecordBatch>>> {
        match self.partitions.get(p) {
            None => Ok(None),
            Some(Partition::Memory(batches)) => Ok(Some(batches.clone())),
            Some(Partition::Spilled(path)) => {
                let reader =
                    FileReader::try_new(File::open(path)?, None).map_err(std::io::Error::other)?;
                let batches = reader
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(std::io::Error::other)?;
                Ok(Some(batches))
            }
        }
    }

    fn remove_files(&self) {
        for p in &self.partitions {
            if let Partition::Spilled(path) = p
                && let Err(e) = std::fs::remove_file(path)
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a spilled exchange file");
            }
        }
    }
}

/// `batch` with its string and binary view columns copied compactly when they point into data
/// buffers much larger than their own values.
///
/// A sort's output batches are views into the data buffers of everything it sorted; Arrow IPC
/// writes every buffer a batch references, so without this each 8192-row batch of a sorted
/// text column would carry all of the partition's text to disk and over the network (a 3M-row
/// sort took the driver past 20 GB before this).
pub fn compact_views(batch: RecordBatch) -> RecordBatch {
    /// The array copied down to its own values, when its buffers hold much more.
    fn compacted<T: ByteViewType + ?Sized>(array: &GenericByteViewArray<T>) -> Option<ArrayRef> {
        let buffers: usize = array.data_buffers().iter().map(|b| b.len()).sum();
        let bloated = buffers > 2 * array.total_buffer_bytes_used() + (64 << 10);
        bloated.then(|| Arc::new(array.gc()) as ArrayRef)
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|column| {
            let compact = match column.data_type() {
                DataType::Utf8View => compacted(column.as_string_view()),
                DataType::BinaryView => compacted(column.as_binary_view()),
                _ => None,
            };
            compact.unwrap_or_else(|| column.clone())
        })
        .collect();
    RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .unwrap_or(batch)
}

/// Bytes of the rows in `batches`, without the spare capacity of their buffers.
pub fn rows_bytes<'a>(batches: impl IntoIterator<Item = &'a RecordBatch>) -> u64 {
    batches
        .into_iter()
        .flat_map(|b| b.columns())
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
        .sum()
}

#[derive(Debug, Default)]
struct Held {
    outputs: HashMap<TaskId, Arc<TaskOutputs>>,
    in_memory: u64,
}

/// Every kept output of this worker.
#[derive(Debug)]
pub struct OutputStore {
    held: Mutex<Held>,
    /// Bytes kept in memory before outputs go to disk.
    budget: u64,
    spill_dir: tempfile::TempDir,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl OutputStore {
    /// A store keeping up to `budget` bytes in memory, spilling the rest to a new temporary
    /// directory.
    pub fn new(budget: u64) -> std::io::Result<Self> {
        Ok(OutputStore {
            held: Mutex::new(Held::default()),
            budget,
            spill_dir: tempfile::Builder::new()
                .prefix("quarry-exchange-")
                .tempdir()?,
        })
    }

    /// Keeps a task's output partitions, in memory or, past the budget, on disk. Blocking when
    /// it spills.
    pub fn insert(
        self: &Arc<Self>,
        task: TaskId,
        schema: SchemaRef,
        partitions: Vec<Vec<RecordBatch>>,
    ) -> std::io::Result<()> {
        let mut written = Vec::with_capacity(partitions.len());
        for (p, batches) in partitions.into_iter().enumerate() {
            let mut writer = self.writer(task, p, schema.clone());
            for batch in batches {
                writer.write(batch)?;
            }
            written.push(writer.finish()?);
        }
        self.keep(task, schema, written);
        Ok(())
    }

    /// A writer for partition `p` of `task`'s output.
    pub fn writer(self: &Arc<Self>, task: TaskId, p: usize, schema: SchemaRef) -> PartitionWriter {
        let path = self.spill_dir.path().join(format!(
            "{}-{}-{}-{}-{p}.arrow",
            task.job, task.stage, task.index, task.attempt
        ));
        PartitionWriter {
            store: self.clone(),
            path,
            schema,
            memory: Vec::new(),
            reserved: 0,
            file: None,
            bytes: 0,
            finished: false,
        }
    }

    /// Keeps the written partitions of `task` for its consumers.
    pub fn keep(&self, task: TaskId, schema: SchemaRef, partitions: Vec<Written>) {
        let bytes = partitions.iter().map(|w| w.bytes).sum();
        let memory_bytes = partitions.iter().map(|w| w.memory_bytes).sum();
        let outputs = Arc::new(TaskOutputs {
            schema,
            partitions: partitions
                .into_iter()
                .filter_map(|mut w| w.partition.take())
                .collect(),
            bytes,
            memory_bytes,
        });
        let old = lock(&self.held).outputs.insert(task, outputs);
        if let Some(old) = old {
            self.unreserve(old.memory_bytes);
            old.remove_files();
        }
    }

    /// Counts `bytes` more in memory if they fit the budget.
    fn reserve(&self, bytes: u64) -> bool {
        let mut held = lock(&self.held);
        let fits = held.in_memory + bytes <= self.budget;
        if fits {
            held.in_memory += bytes;
        }
        fits
    }

    fn unreserve(&self, bytes: u64) {
        let mut held = lock(&self.held);
        held.in_memory = held.in_memory.saturating_sub(bytes);
    }

    pub fn get(&self, task: &TaskId) -> Option<Arc<TaskOutputs>> {
        lock(&self.held).outputs.get(task).cloned()
    }

    /// Drops every output of `job`; returns how many tasks' outputs went.
    pub fn release(&self, job: JobId) -> usize {
        self.release_where(|t| t.job == job)
    }

    /// Drops every output; returns how many tasks' outputs went.
    pub fn release_all(&self) -> usize {
        self.release_where(|_| true)
    }

    fn release_where(&self, which: impl Fn(&TaskId) -> bool) -> usize {
        let mut held = lock(&self.held);
        let gone: Vec<TaskId> = held.outputs.keys().filter(|t| which(t)).copied().collect();
        for task in &gone {
            if let Some(outputs) = held.outputs.remove(task) {
                held.in_memory = held.in_memory.saturating_sub(outputs.memory_bytes);
                outputs.remove_files();
            }
        }
        gone.len()
    }

    /// Bytes held in memory.
    pub fn in_memory(&self) -> u64 {
        lock(&self.held).in_memory
    }
}

/// A written partition, ready to keep. Dropped without being kept (its task failed in another
/// partition), it gives back its memory and removes its file.
#[derive(Debug)]
pub struct Written {
    partition: Option<Partition>,
    bytes: u64,
    memory_bytes: u64,
    store: Arc<OutputStore>,
}

impl Written {
    pub fn rows_bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        match self.partition.take() {
            None => {}
            Some(Partition::Memory(_)) => self.store.unreserve(self.memory_bytes),
            Some(Partition::Spilled(path)) => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// One output partition of a running task, written batch by batch.
pub struct PartitionWriter {
    store: Arc<OutputStore>,
    path: PathBuf,
    schema: SchemaRef,
    memory: Vec<RecordBatch>,
    /// Bytes of `memory`, counted against the store's budget.
    reserved: u64,
    file: Option<FileWriter<BufWriter<File>>>,
    bytes: u64,
    finished: bool,
}

impl std::fmt::Debug for PartitionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionWriter")
            .field("path", &self.path)
            .field("bytes", &self.bytes)
            .field("spilled", &self.file.is_some())
            .finish()
    }
}

impl PartitionWriter {
    /// Adds a batch: to memory while the budget allows, else to the partition's spill file.
    /// Blocking once it spills.
    pub fn write(&mut self, batch: RecordBatch) -> std::io::Result<()> {
        let batch = compact_views(batch);
        let size = rows_bytes([&batch]);
        self.bytes += size;
        if self.file.is_none() {
            if self.store.reserve(size) {
                self.reserved += size;
                self.memory.push(batch);
                return Ok(());
            }
            // Past the budget: the partition moves to disk, what it held in memory first.
            let mut file =
                FileWriter::try_new(BufWriter::new(File::create(&self.path)?), &self.schema)
                    .map_err(std::io::Error::other)?;
            for held in self.memory.drain(..) {
                file.write(&held).map_err(std::io::Error::other)?;
            }
            self.store.unreserve(std::mem::take(&mut self.reserved));
            tracing::debug!(path = %self.path.display(), "an exchange output spills to disk");
            self.file = Some(file);
        }
        if let Some(file) = self.file.as_mut() {
            file.write(&batch).map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// The written partition, to [`OutputStore::keep`].
    pub fn finish(mut self) -> std::io::Result<Written> {
        self.finished = true;
        let partition = match self.file.take() {
            Some(mut file) => {
                file.finish().map_err(std::io::Error::other)?;
                Partition::Spilled(self.path.clone())
            }
            None => Partition::Memory(std::mem::take(&mut self.memory)),
        };
        Ok(Written {
            partition: Some(partition),
            bytes: self.bytes,
            memory_bytes: std::mem::take(&mut self.reserved),
            store: self.store.clone(),
        })
    }
}

impl Drop for PartitionWriter {
    /// A task that failed or was cancelled gives back its memory and removes its file.
    fn drop(&mut self) {
        self.store.unreserve(self.reserved);
        if !self.finished && (self.file.is_some() || self.path.exists()) {
            self.file = None;
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use quarry_jobs::StageId;

    use super::*;

    fn task(job: u64, index: u32) -> TaskId {
        TaskId {
            job: JobId(job),
            stage: StageId(1),
            index,
            attempt: 0,
        }
    }

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    #[test]
    fn outputs_past_the_budget_go_to_disk_and_come_back_whole() {
        let store = Arc::new(OutputStore::new(100).unwrap());
        let small = batch(&[1, 2]);
        let big = batch(&(0..1000).collect::<Vec<_>>());
        store
            .insert(task(1, 0), small.schema(), vec![vec![small.clone()]])
            .unwrap();
        store
            .insert(task(1, 1), big.schema(), vec![vec![big.clone()], vec![]])
            .unwrap();
        assert_eq!(
            store.in_memory(),
            16,
            "only the small output stays in memory"
        );
        let spilled = store.get(&task(1, 1)).unwrap();
        assert!(matches!(spilled.partitions[0], Partition::Spilled(_)));
        assert_eq!(spilled.read(0).unwrap().unwrap(), vec![big]);
        assert_eq!(spilled.read(1).unwrap().unwrap(), Vec::<RecordBatch>::new());
        assert!(spilled.read(2).unwrap().is_none());
        assert_eq!(
            store.get(&task(1, 0)).unwrap().read(0).unwrap().unwrap(),
            vec![small]
        );
        let files = || std::fs::read_dir(store.spill_dir.path()).unwrap().count();
        assert_eq!(files(), 1, "only the partition past the budget is on disk");
        assert_eq!(store.release(JobId(2)), 0);
        assert_eq!(store.release(JobId(1)), 2);
        assert_eq!(files(), 0);
        assert_eq!(store.in_memory(), 0);
        assert!(store.get(&task(1, 0)).is_none());
    }
}

#[cfg(test)]
mod streaming_tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use quarry_jobs::StageId;

    use super::*;

    fn batch(values: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))]).unwrap()
    }

    #[test]
    fn a_partition_moves_to_disk_when_it_outgrows_the_budget_and_failed_ones_leave_nothing() {
        let store = Arc::new(OutputStore::new(1000).unwrap());
        let task = TaskId {
            job: JobId(7),
            stage: StageId(1),
            index: 0,
            attempt: 0,
        };
        let schema = batch(0..1).schema();
        let mut writer = store.writer(task, 0, schema.clone());
        writer.write(batch(0..100)).unwrap();
        assert_eq!(store.in_memory(), 800, "under the budget, in memory");
        writer.write(batch(100..200)).unwrap();
        assert_eq!(
            store.in_memory(),
            0,
            "past it, all of the partition on disk"
        );
        writer.write(batch(200..300)).unwrap();
        let written = writer.finish().unwrap();
        store.keep(task, schema.clone(), vec![written]);
        let kept = store.get(&task).unwrap();
        assert!(matches!(kept.partitions[0], Partition::Spilled(_)));
        assert_eq!(
            kept.read(0).unwrap().unwrap(),
            vec![batch(0..100), batch(100..200), batch(200..300)]
        );

        // A task that fails mid-way: its reservation and its file go with its writer.
        let failed = TaskId { index: 1, ..task };
        let mut writer = store.writer(failed, 0, schema.clone());
        writer.write(batch(0..50)).unwrap();
        assert_eq!(store.in_memory(), 400);
        drop(writer);
        assert_eq!(store.in_memory(), 0);
        let mut writer = store.writer(failed, 1, schema);
        writer.write(batch(0..1000)).unwrap();
        drop(writer);
        let files = std::fs::read_dir(store.spill_dir.path()).unwrap().count();
        assert_eq!(files, 1, "only the kept task's file is left");
        assert_eq!(store.release(JobId(7)), 1);
        assert_eq!(
            std::fs::read_dir(store.spill_dir.path()).unwrap().count(),
            0
        );
    }
}

#[cfg(test)]
mod view_tests {
    use std::sync::Arc;

    use arrow::array::{Array, StringViewArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn a_slice_of_a_large_view_array_is_copied_down_to_its_own_values() {
        let big =
            StringViewArray::from_iter_values((0..100_000).map(|i| format!("value number {i}")));
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(big)]).unwrap();
        let slice = batch.slice(10, 100);
        let before = slice.get_array_memory_size();
        let compact = compact_views(slice.clone());
        assert_eq!(compact, slice, "the same values");
        assert!(
            compact.get_array_memory_size() * 20 < before,
            "{} bytes, was {before}",
            compact.get_array_memory_size()
        );
        // Already compact: left as it is.
        let again = compact_views(compact.clone());
        assert_eq!(
            again.column(0).to_data().buffers()[1].as_ptr(),
            compact.column(0).to_data().buffers()[1].as_ptr()
        );
    }
}
