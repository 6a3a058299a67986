//! The worker's gRPC service: the driver launches, inspects, cancels and releases tasks.
//!
//! Handlers only convert messages and hand work to the CPU runtime; a task runs there while its
//! `LaunchTask` call waits, and dropping the call (the driver gave up on it) aborts the task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quarry_jobs::{TaskId, TaskMetrics, TaskState, TaskStatus};
use quarry_proto::v1 as pb;
use quarry_proto::v1::worker_service_server::WorkerService;
use tokio::task::AbortHandle;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::cpu_runtime::CpuRuntime;
use crate::error::Error;
use crate::peers::Peers;
use crate::rpc::{
    Peer, check_protocol, status_to_proto, task_id_from_proto, task_request_from_proto,
};
use crate::task_outputs::OutputStore;
use crate::task_runner::TaskRunner;

/// What the worker knows about one task.
#[derive(Debug)]
struct TaskEntry {
    status: TaskStatus,
    abort: Option<AbortHandle>,
}

/// State shared by the worker's services.
#[derive(Debug)]
pub struct WorkerState {
    pub worker_id: String,
    pub runner: TaskRunner,
    pub cpu: CpuRuntime,
    pub outputs: Arc<OutputStore>,
    /// The workers a task may read its inputs from.
    pub peers: Peers,
    tasks: Mutex<HashMap<TaskId, TaskEntry>>,
}

/// How long a task naming an unknown worker waits for the driver's fresher list of workers.
const PEER_WAIT: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl WorkerState {
    pub fn new(
        worker_id: String,
        runner: TaskRunner,
        cpu: CpuRuntime,
        outputs: OutputStore,
    ) -> Self {
        WorkerState {
            worker_id,
            runner,
            cpu,
            outputs: Arc::new(outputs),
            peers: Peers::default(),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    pub fn running_tasks(&self) -> usize {
        lock(&self.tasks)
            .values()
            .filter(|t| t.status.state == TaskState::Running)
            .count()
    }

    /// Forgets every job: aborts running tasks, drops task records and outputs. For a driver
    /// that restarted, whose new self knows none of them. Returns the outputs dropped.
    pub fn forget_all_jobs(&self) -> usize {
        self.cancel_all();
        lock(&self.tasks).clear();
        self.outputs.release_all()
    }

    /// Aborts every running task (on shutdown).
    pub fn cancel_all(&self) {
        for entry in lock(&self.tasks).values_mut() {
            if let Some(abort) = entry.abort.take() {
                abort.abort();
                entry.status.state = TaskState::Cancelled;
            }
        }
    }

    fn set_status(&self, status: TaskStatus) {
        let mut tasks = lock(&self.tasks);
        let entry = tasks.entry(status.id).or_insert_with(|| TaskEntry {
            status: status.clone(),
            abort: None,
        });
        if status.state != TaskState::Running {
            entry.abort = None;
        }
        entry.status = status;
    }
}

/// The gRPC face of [`WorkerState`].
#[derive(Debug, Clone)]
pub struct WorkerRpc(pub Arc<WorkerState>);

#[tonic::async_trait]
impl WorkerService for WorkerRpc {
    async fn launch_task(
        &self,
        request: Request<pb::LaunchTaskRequest>,
    ) -> Result<Response<pb::LaunchTaskResponse>, Status> {
        let request = request.into_inner();
        check_protocol(request.protocol_version, Peer::Worker, Peer::Driver)?;
        let definition = request
            .task
            .ok_or_else(|| Error::invalid("launch request", "it has no task"))?;
        let task = task_request_from_proto(definition)?;
        let id = task.id;
        let state = &self.0;
        let endpoints = task.inputs.values().flatten().map(|o| o.endpoint.as_str());
        if let Err(endpoint) = state.peers.check(endpoints, PEER_WAIT).await {
            return Err(Status::permission_denied(format!(
                "task {id} reads from {endpoint}, which is not a worker registered with the driver"
            )));
        }
        if lock(&state.tasks)
            .get(&id)
            .is_some_and(|t| t.status.state == TaskState::Running)
        {
            return Err(Status::already_exists(format!(
                "task {id} is already running"
            )));
        }
        let span = tracing::info_span!(
            "task",
            job = %id.job,
            stage = %id.stage,
            task = id.index,
            attempt = id.attempt
        );
        let runner = state.runner.clone();
        let outputs = state.outputs.clone();
        let handle = state
            .cpu
            .spawn(async move { runner.run(task, &outputs).await }.instrument(span.clone()));
        state.set_status(TaskStatus {
            id,
            state: TaskState::Running,
            metrics: TaskMetrics::default(),
            failure: None,
            output_partitions: 0,
        });
        if let Some(entry) = lock(&state.tasks).get_mut(&id) {
            entry.abort = Some(handle.abort_handle());
        }
        let status = match handle.await {
            Ok(Ok((partitions, metrics))) => {
                span.in_scope(|| {
                    tracing::debug!(
                        rows = metrics.rows_out,
                        ms = metrics.elapsed_ms,
                        "task done"
                    )
                });
                TaskStatus {
                    id,
                    state: TaskState::Succeeded,
                    metrics,
                    failure: None,
                    output_partitions: partitions,
                }
            }
            Ok(Err(failure)) => {
                span.in_scope(|| tracing::debug!(error = %failure, "task failed"));
                TaskStatus {
                    id,
                    state: TaskState::Failed,
                    metrics: TaskMetrics::default(),
                    failure: Some(failure),
                    output_partitions: 0,
                }
            }
            Err(join) => TaskStatus {
                id,
                state: TaskState::Cancelled,
                metrics: TaskMetrics::default(),
                failure: join.is_panic().then(|| quarry_jobs::TaskFailure {
                    kind: quarry_jobs::FailureKind::Internal,
                    retryable: false,
                    message: format!("task {id} panicked"),
                    unreachable_endpoint: None,
                }),
                output_partitions: 0,
            },
        };
        state.set_status(status.clone());
        Ok(Response::new(pb::LaunchTaskResponse {
            status: Some(status_to_proto(&status)),
        }))
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::CancelTaskResponse>, Status> {
        let id = task_id_from_proto(request.into_inner().task.as_ref())?;
        let mut tasks = lock(&self.0.tasks);
        let was_running = match tasks.get_mut(&id) {
            Some(entry) => match entry.abort.take() {
                Some(abort) => {
                    abort.abort();
                    entry.status.state = TaskState::Cancelled;
                    true
                }
                None => false,
            },
            None => return Err(Status::not_found(format!("no task {id} on this worker"))),
        };
        Ok(Response::new(pb::CancelTaskResponse { was_running }))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let id = task_id_from_proto(request.into_inner().task.as_ref())?;
        let tasks = lock(&self.0.tasks);
        let entry = tasks
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("no task {id} on this worker")))?;
        Ok(Response::new(pb::GetTaskResponse {
            status: Some(status_to_proto(&entry.status)),
        }))
    }

    async fn release_job(
        &self,
        request: Request<pb::ReleaseJobRequest>,
    ) -> Result<Response<pb::ReleaseJobResponse>, Status> {
        let job = request
            .into_inner()
            .job_id
            .parse()
            .map_err(|e: String| Status::invalid_argument(e))?;
        let mut tasks = lock(&self.0.tasks);
        tasks.retain(|id, entry| {
            if id.job != job {
                return true;
            }
            if let Some(abort) = entry.abort.take() {
                abort.abort();
            }
            false
        });
        drop(tasks);
        let released = self.0.outputs.release(job);
        Ok(Response::new(pb::ReleaseJobResponse {
            tasks_released: released as u32,
        }))
    }
}
