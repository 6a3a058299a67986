//! What the driver asks a worker to run, and what comes back.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use quarry_sql::scan_exec::StoreScanExec;

use quarry_core::shard_set::ShardSet;

use crate::exchange::TaskOutput;
use crate::ids::{StageId, TaskId};
use crate::write::StoreWriteExec;

/// One task as the driver sends it.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    pub id: TaskId,
    /// The stage's plan fragment, serialized by [`QuarryCodec`](crate::QuarryCodec).
    pub plan: Vec<u8>,
    /// The shards its scans read (`None` when it reads no scan).
    pub shards: Option<TaskShards>,
    /// The hash partitions of its input exchanges it reads.
    pub hash_partitions: Vec<u32>,
    /// The finished tasks of each input stage.
    pub inputs: HashMap<StageId, Vec<TaskOutput>>,
    /// Session settings, as `SET` would give them.
    pub session_config: Vec<(String, String)>,
    /// The Rust job modules its plan runs, which the worker must hold before decoding it.
    pub modules: Vec<quarry_wasm::ModuleHash>,
}

/// The shards of one keyspace a task reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskShards {
    pub keyspace: String,
    pub shards: ShardSet,
}

pub use quarry_core::failure::{Failure, FailureKind};

/// Why a task failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub kind: FailureKind,
    pub retryable: bool,
    pub message: String,
    /// The Flight endpoint of a worker whose output the task could not read.
    pub unreachable_endpoint: Option<String>,
}

impl TaskFailure {
    /// A failure classified as `failure`, saying `message`.
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        TaskFailure {
            kind: failure.kind,
            retryable: failure.retryable,
            message: message.into(),
            unreachable_endpoint: None,
        }
    }

    pub fn failure(&self) -> Failure {
        Failure {
            kind: self.kind,
            retryable: self.retryable,
        }
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Counters of one task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskMetrics {
    pub rows_in: u64,
    pub rows_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub elapsed_ms: u64,
    /// CPU time of its Rust job operators' calls into their modules, in nanoseconds: the
    /// job's CPU cost.
    pub wasm_cpu_ns: u64,
    /// Rows its store scans read from the store node beside its worker.
    pub rows_local: u64,
    /// Rows its store scans read from other store nodes.
    pub rows_remote: u64,
    /// Rows its store scans read, by table (`keyspace.table`).
    pub rows_read: BTreeMap<String, u64>,
    /// Rows it wrote (staged for its statement's commit), by table.
    pub rows_written: BTreeMap<String, u64>,
}

impl TaskMetrics {
    pub fn add(&mut self, other: &TaskMetrics) {
        self.rows_in += other.rows_in;
        self.wasm_cpu_ns += other.wasm_cpu_ns;
        self.rows_local += other.rows_local;
        self.rows_remote += other.rows_remote;
        self.rows_out += other.rows_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.elapsed_ms += other.elapsed_ms;
        for (mine, theirs) in [
            (&mut self.rows_read, &other.rows_read),
            (&mut self.rows_written, &other.rows_written),
        ] {
            for (table, rows) in theirs {
                *mine.entry(table.clone()).or_default() += rows;
            }
        }
    }

    /// The rows `plan` (run to its end) read from and wrote to each table: what its store scans
    /// read and its writers' staged parts.
    pub fn count_table_rows(&mut self, plan: &Arc<dyn ExecutionPlan>) {
        if let Some(scan) = plan.downcast_ref::<StoreScanExec>() {
            *self
                .rows_read
                .entry(scan.request().table.to_string())
                .or_default() += scan.rows_read();
        }
        if let Some(write) = plan.downcast_ref::<StoreWriteExec>() {
            *self
                .rows_written
                .entry(write.op().table.table_name().to_string())
                .or_default() += write.op().rows_staged();
        }
        for child in plan.children() {
            self.count_table_rows(child);
        }
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// A task's state as a worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    pub id: TaskId,
    pub state: TaskState,
    pub metrics: TaskMetrics,
    pub failure: Option<TaskFailure>,
    /// Output partitions (when it succeeded).
    pub output_partitions: u32,
}
