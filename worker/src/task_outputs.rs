//! Outputs of finished tasks, kept until their job is released, for consumers to pull over
//! Arrow Flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use quarry_jobs::{JobId, TaskId};

/// One task's output partitions.
#[derive(Debug)]
pub struct TaskOutputs {
    pub schema: SchemaRef,
    pub partitions: Vec<Vec<RecordBatch>>,
}

impl TaskOutputs {
    /// Bytes of the rows held (not counting spare capacity of their buffers).
    pub fn bytes(&self) -> u64 {
        self.partitions
            .iter()
            .flatten()
            .flat_map(|b| b.columns())
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
            .sum()
    }
}

/// Every kept output of this worker.
#[derive(Debug, Default)]
pub struct OutputStore {
    outputs: Mutex<HashMap<TaskId, Arc<TaskOutputs>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl OutputStore {
    pub fn insert(&self, task: TaskId, outputs: TaskOutputs) {
        lock(&self.outputs).insert(task, Arc::new(outputs));
    }

    pub fn get(&self, task: &TaskId) -> Option<Arc<TaskOutputs>> {
        lock(&self.outputs).get(task).cloned()
    }

    /// Drops every output of `job`; returns how many tasks' outputs went.
    pub fn release(&self, job: JobId) -> usize {
        let mut outputs = lock(&self.outputs);
        let before = outputs.len();
        outputs.retain(|task, _| task.job != job);
        before - outputs.len()
    }

    /// Bytes held, for logs.
    pub fn bytes(&self) -> u64 {
        lock(&self.outputs).values().map(|o| o.bytes()).sum()
    }
}
