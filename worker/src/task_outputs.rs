//! Outputs of finished tasks, kept until their job is released, for consumers to pull over
//! Arrow Flight.
//!
//! Outputs stay in memory while the worker holds less than its budget; past it, a task's
//! partitions are written to Arrow IPC files in the worker's spill directory (removed with the
//! worker) and read back when fetched.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
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
        &self,
        task: TaskId,
        schema: SchemaRef,
        partitions: Vec<Vec<RecordBatch>>,
    ) -> std::io::Result<()> {
        let bytes = rows_bytes(partitions.iter().flatten());
        let fits = {
            let mut held = lock(&self.held);
            let fits = held.in_memory + bytes <= self.budget;
            if fits {
                held.in_memory += bytes;
            }
            fits
        };
        let partitions = if fits {
            partitions.into_iter().map(Partition::Memory).collect()
        } else {
            let mut spilled = Vec::with_capacity(partitions.len());
            for (p, batches) in partitions.into_iter().enumerate() {
                let path = self.spill_dir.path().join(format!(
                    "{}-{}-{}-{}-{p}.arrow",
                    task.job, task.stage, task.index, task.attempt
                ));
                let mut writer = FileWriter::try_new(BufWriter::new(File::create(&path)?), &schema)
                    .map_err(std::io::Error::other)?;
                for batch in &batches {
                    writer.write(batch).map_err(std::io::Error::other)?;
                }
                writer.finish().map_err(std::io::Error::other)?;
                spilled.push(Partition::Spilled(path));
            }
            tracing::debug!(task = %task, bytes, "spilled an exchange output to disk");
            spilled
        };
        let outputs = Arc::new(TaskOutputs {
            schema,
            partitions,
            bytes,
        });
        if let Some(old) = lock(&self.held).outputs.insert(task, outputs) {
            old.remove_files();
        }
        Ok(())
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
                if outputs
                    .partitions
                    .iter()
                    .all(|p| matches!(p, Partition::Memory(_)))
                {
                    held.in_memory = held.in_memory.saturating_sub(outputs.bytes);
                }
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
        let store = OutputStore::new(100).unwrap();
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
        assert_eq!(files(), 2);
        assert_eq!(store.release(JobId(2)), 0);
        assert_eq!(store.release(JobId(1)), 2);
        assert_eq!(files(), 0);
        assert_eq!(store.in_memory(), 0);
        assert!(store.get(&task(1, 0)).is_none());
    }
}
