//! Runs one job's stage DAG on the workers, then its last stage at the driver.
//!
//! ```text
//!   loop: forget outputs held by lost workers
//!         pick the first stage (inputs first) with unfinished tasks, launch them all
//!         a task that fails for a retryable reason runs again (elsewhere, after a backoff);
//!         a user error fails the job at once
//!   then: bind the driver stage's exchange readers to the outputs and run it; if an input
//!         turns out to be lost, recompute it and run the driver stage again
//! ```
//!
//! Recomputing is the same loop: outputs on a lost worker are forgotten, which makes their stage
//! unfinished again, and stages run in dependency order.

use quarry_worker::task_outputs::compact_views;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use quarry_core::placement::Placement;
use quarry_core::shard_set::ShardSet;
use quarry_jobs::{
    ExchangeKind, ExchangeReaderExec, FailureKind, JobGraph, JobId, QuarryCodec, StageId,
    StageKind, TaskFailure, TaskId, TaskOutput, TaskRequest, TaskShards, TaskState, WorkerId,
};
use quarry_proto::v1 as pb;
use quarry_worker::rpc::{status_from_proto, task_request_to_proto};
use quarry_worker::task_runner::classify;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::DriverState;
use super::error::{Error, Result};
use super::job_tracker::{StageRecord, TaskRecord};
use super::registry::WorkerHandle;
use super::scheduler::{Slot, assign_partitions, assign_scan, owner_of, reads_locally};

/// A shard set as `0-3,7,9-12`, cut short (with `…`) past about 60 characters.
fn abbreviate(shards: &ShardSet) -> String {
    let text = shards.to_string();
    if text.len() <= 60 {
        return text;
    }
    let cut = text[..60].rfind(',').unwrap_or(60);
    format!("{}…", &text[..cut])
}

/// Stage rounds before a job gives up (each round retries what failed).
const MAX_ROUNDS: usize = 64;

#[derive(Debug, Clone)]
struct Done {
    output: TaskOutput,
    worker: WorkerId,
}

#[derive(Debug)]
struct TaskSlot {
    index: u32,
    shards: Option<TaskShards>,
    hash_partitions: Vec<u32>,
    preferred: WorkerId,
    attempts: u32,
    done: Option<Done>,
}

#[derive(Debug)]
struct StageTasks {
    plan: Vec<u8>,
    /// The Rust job modules the plan runs.
    modules: Vec<quarry_wasm::ModuleHash>,
    placement: Option<Arc<Placement>>,
    tasks: Vec<TaskSlot>,
}

/// One job in progress.
#[derive(Debug)]
pub struct JobRunner {
    driver: Arc<DriverState>,
    job: JobId,
    graph: JobGraph,
    settings: Vec<(String, String)>,
    stages: HashMap<StageId, StageTasks>,
}

pub(super) fn slots(workers: &[WorkerHandle]) -> Vec<Slot> {
    workers
        .iter()
        .map(|w| Slot {
            worker: w.id.clone(),
            node: w.node.clone(),
            task_slots: w.task_slots,
            local_shards: w.local_shards.clone(),
        })
        .collect()
}

impl JobRunner {
    /// Plans the tasks of every worker stage over the live workers.
    pub fn new(
        driver: Arc<DriverState>,
        job: JobId,
        graph: JobGraph,
        settings: Vec<(String, String)>,
        live: &[WorkerHandle],
    ) -> Result<Self> {
        Self::plan_tasks(driver, job, graph, settings, live, true)
    }

    /// The tasks of every worker stage, for [`Self::explain`] only: the stage plans are not
    /// encoded (they may hold scalar subqueries that have not run), so the runner cannot run.
    pub fn for_explain(
        driver: Arc<DriverState>,
        graph: JobGraph,
        live: &[WorkerHandle],
    ) -> Result<Self> {
        Self::plan_tasks(driver, JobId(0), graph, Vec::new(), live, false)
    }

    fn plan_tasks(
        driver: Arc<DriverState>,
        job: JobId,
        graph: JobGraph,
        settings: Vec<(String, String)>,
        live: &[WorkerHandle],
        encode: bool,
    ) -> Result<Self> {
        let codec = QuarryCodec::new(driver.store.clone());
        let slots = slots(live);
        let nodes = driver.cluster_nodes();
        let mut stages = HashMap::new();
        for stage in graph.stages() {
            let (placement, tasks) = match &stage.kind {
                StageKind::Driver => continue,
                StageKind::Scan { keyspace, tables } => {
                    let def = driver.store.keyspace(keyspace)?;
                    let placement = Arc::new(driver.store.placement(&def, tables, &nodes)?);
                    let tasks = assign_scan(&placement, def.shards, &slots)
                        .into_iter()
                        .enumerate()
                        .map(|(i, a)| TaskSlot {
                            index: i as u32,
                            shards: Some(TaskShards {
                                keyspace: keyspace.clone(),
                                shards: a.shards,
                            }),
                            hash_partitions: Vec::new(),
                            preferred: a.worker,
                            attempts: 0,
                            done: None,
                        })
                        .collect();
                    (Some(placement), tasks)
                }
                StageKind::Write {
                    keyspace,
                    table,
                    groups,
                } => {
                    let def = driver.store.keyspace(keyspace)?;
                    let placement = Arc::new(driver.store.placement(
                        &def,
                        std::slice::from_ref(table),
                        &nodes,
                    )?);
                    let tasks = groups
                        .iter()
                        .enumerate()
                        .map(|(i, group)| TaskSlot {
                            index: i as u32,
                            shards: Some(TaskShards {
                                keyspace: keyspace.clone(),
                                shards: group.clone(),
                            }),
                            hash_partitions: vec![i as u32],
                            preferred: owner_of(&placement, group, &slots, i),
                            attempts: 0,
                            done: None,
                        })
                        .collect();
                    (Some(placement), tasks)
                }
                StageKind::Partitioned { partitions } => {
                    let tasks = assign_partitions(*partitions, &slots)
                        .into_iter()
                        .enumerate()
                        .map(|(i, (worker, p))| TaskSlot {
                            index: i as u32,
                            shards: None,
                            hash_partitions: vec![p],
                            preferred: worker,
                            attempts: 0,
                            done: None,
                        })
                        .collect();
                    (None, tasks)
                }
            };
            let plan = if encode {
                codec
                    .encode(stage.plan.clone())
                    .map_err(quarry_sql::Error::from)?
            } else {
                Vec::new()
            };
            stages.insert(
                stage.id,
                StageTasks {
                    plan,
                    modules: quarry_jobs::wasm_exec::modules_of(&stage.plan),
                    placement,
                    tasks,
                },
            );
        }
        Ok(JobRunner {
            driver,
            job,
            graph,
            settings,
            stages,
        })
    }

    /// The stages as the job tracker shows them.
    pub fn stage_records(&self) -> Vec<StageRecord> {
        self.graph
            .stages()
            .into_iter()
            .map(|s| StageRecord {
                id: s.id,
                description: s.describe(),
                runs_on: if s.kind == StageKind::Driver {
                    "driver"
                } else {
                    "workers"
                },
                inputs: self.graph.inputs(s.id),
                tasks_total: self.stages.get(&s.id).map_or(1, |t| t.tasks.len() as u32),
                tasks_done: 0,
                tasks_remote: 0,
                tasks_retried: 0,
                metrics: Default::default(),
                tasks: Vec::new(),
            })
            .collect()
    }

    /// `EXPLAIN`: the stages, their plans and where each task would run.
    pub fn explain(&self) -> String {
        let mut text = String::new();
        for stage in self.graph.stages() {
            let inputs = self.graph.inputs(stage.id);
            text.push_str(&format!("stage {}: {}", stage.id, stage.describe()));
            if !inputs.is_empty() {
                let list: Vec<String> = inputs.iter().map(ToString::to_string).collect();
                text.push_str(&format!(" (reads stage {})", list.join(", ")));
            }
            text.push('\n');
            match self.stages.get(&stage.id) {
                Some(tasks) => {
                    let mut by_worker: std::collections::BTreeMap<&WorkerId, Vec<&TaskSlot>> =
                        Default::default();
                    for t in &tasks.tasks {
                        by_worker.entry(&t.preferred).or_default().push(t);
                    }
                    for (worker, ts) in by_worker {
                        let what = match ts.first().and_then(|t| t.shards.as_ref()) {
                            Some(_) => {
                                let shards = ShardSet::from_shards(
                                    ts.iter()
                                        .filter_map(|t| t.shards.as_ref())
                                        .flat_map(|s| s.shards.iter()),
                                );
                                format!("{} shards ({})", shards.len(), abbreviate(&shards))
                            }
                            None => {
                                let partitions: Vec<String> = ts
                                    .iter()
                                    .flat_map(|t| t.hash_partitions.iter().map(u32::to_string))
                                    .collect();
                                format!("hash partitions {}", partitions.join(", "))
                            }
                        };
                        text.push_str(&format!("  {worker}: {} task(s) over {what}\n", ts.len()));
                    }
                }
                None => text.push_str("  driver: 1 task\n"),
            }
            let plan = datafusion::physical_plan::displayable(stage.plan.as_ref())
                .indent(true)
                .to_string();
            for line in plan.lines() {
                text.push_str("    ");
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Runs the job: the worker stages to completion, then the driver stage, whose batches go
    /// to `tx` as they come. Call it on a CPU runtime (the driver stage computes). Returns when
    /// the last batch is sent, or early when the receiver is gone.
    ///
    /// A driver stage that fails reading a lost input before it sent anything runs again once
    /// the input is recomputed; after its first batch, a failure is the job's.
    pub async fn run_streaming(
        mut self,
        ctx: Arc<TaskContext>,
        tx: &mpsc::Sender<datafusion::error::Result<RecordBatch>>,
    ) -> Result<()> {
        let attempts = self.driver.config.max_task_attempts.max(1);
        let mut last_failure = None;
        for _ in 0..attempts {
            self.run_worker_stages().await?;
            let plan = self.bind_root()?;
            let started = std::time::Instant::now();
            let mut stream = datafusion::physical_plan::execute_stream(plan.clone(), ctx.clone())
                .map_err(quarry_sql::Error::from)?;
            let (mut sent, mut rows) = (0usize, 0u64);
            let failure = loop {
                match stream.next().await {
                    Some(Ok(batch)) => {
                        rows += batch.num_rows() as u64;
                        sent += 1;
                        // On the CPU runtime, not the one that sends it: a sorted text column's
                        // batches are views into everything sorted; only their values go out.
                        if tx.send(Ok(compact_views(batch))).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(Err(e)) => break classify(&e),
                    None => {
                        let root = self.graph.root().id;
                        let mut metrics = quarry_jobs::TaskMetrics {
                            rows_out: rows,
                            elapsed_ms: started.elapsed().as_millis() as u64,
                            wasm_cpu_ns: quarry_jobs::wasm_exec::cpu_ns_of(&plan),
                            ..Default::default()
                        };
                        metrics.count_table_rows(&plan);
                        self.driver.jobs.task_finished(
                            self.job,
                            root,
                            TaskRecord {
                                index: 0,
                                attempt: 0,
                                worker: "driver".into(),
                                outcome: super::job_tracker::SUCCEEDED.into(),
                                remote: false,
                                metrics,
                            },
                        );
                        return Ok(());
                    }
                }
            };
            match &failure.unreachable_endpoint {
                Some(endpoint) if sent == 0 => {
                    self.driver.registry.mark_endpoint_lost(endpoint);
                    last_failure = Some(failure);
                }
                _ => return Err(Error::TaskFailed { failure }),
            }
        }
        Err(Error::TaskFailed {
            failure: last_failure.unwrap_or_else(|| TaskFailure {
                kind: FailureKind::Internal,
                retryable: false,
                message: "the driver stage kept failing".into(),
                unreachable_endpoint: None,
            }),
        })
    }

    fn outputs_of(&self, stage: StageId) -> Vec<TaskOutput> {
        self.stages
            .get(&stage)
            .map(|s| {
                s.tasks
                    .iter()
                    .filter_map(|t| t.done.as_ref().map(|d| d.output.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The driver stage's plan with its readers bound to the finished outputs.
    fn bind_root(&self) -> Result<Arc<dyn ExecutionPlan>> {
        let client = self.driver.client.clone();
        let bound = self
            .graph
            .root()
            .plan
            .clone()
            .transform_up(|plan| {
                let Some(reader) = plan.downcast_ref::<ExchangeReaderExec>() else {
                    return Ok(Transformed::no(plan));
                };
                let partitions: Vec<u32> = match reader.kind() {
                    ExchangeKind::Hash { partitions } => (0..partitions as u32).collect(),
                    ExchangeKind::Gather => Vec::new(),
                };
                let outputs = self.outputs_of(reader.stage());
                Ok(Transformed::yes(
                    Arc::new(reader.bind(&outputs, &partitions, client.clone()))
                        as Arc<dyn ExecutionPlan>,
                ))
            })
            .map_err(quarry_sql::Error::from)?;
        Ok(bound.data)
    }

    /// Forgets outputs kept by workers that are no longer alive.
    fn forget_lost(&mut self) {
        for (&stage, tasks) in self.stages.iter_mut() {
            for t in tasks.tasks.iter_mut() {
                if let Some(done) = &t.done
                    && !self.driver.registry.is_alive(&done.worker)
                {
                    tracing::info!(job = %self.job, stage = %stage, task = t.index, worker = %done.worker, "output lost with its worker; recomputing");
                    t.done = None;
                    self.driver.jobs.task_undone(self.job, stage, t.index);
                }
            }
        }
    }

    async fn run_worker_stages(&mut self) -> Result<()> {
        let order: Vec<StageId> = self
            .graph
            .stages()
            .into_iter()
            .filter(|s| s.kind != StageKind::Driver)
            .map(|s| s.id)
            .collect();
        for _ in 0..MAX_ROUNDS {
            self.forget_lost();
            let next = order.iter().copied().find(|id| {
                self.stages
                    .get(id)
                    .is_some_and(|s| s.tasks.iter().any(|t| t.done.is_none()))
            });
            let Some(stage) = next else {
                return Ok(());
            };
            let span = tracing::info_span!("stage", job = %self.job, stage = %stage);
            self.run_round(stage).instrument(span).await?;
        }
        Err(Error::TaskFailed {
            failure: TaskFailure {
                kind: FailureKind::External,
                retryable: false,
                message: format!(
                    "job {} made no progress after {MAX_ROUNDS} rounds of retries",
                    self.job
                ),
                unreachable_endpoint: None,
            },
        })
    }

    /// Picks the worker for a task: its preferred worker on the first attempt, otherwise a live
    /// worker beside a replica of its shards, otherwise any live worker (a remote read).
    fn choose(
        &self,
        stage: StageId,
        slot: &TaskSlot,
        live: &[WorkerHandle],
    ) -> (WorkerHandle, bool) {
        let placement = self.stages.get(&stage).and_then(|s| s.placement.clone());
        let holds_replicas = |w: &WorkerHandle| match (&placement, &slot.shards) {
            (Some(p), Some(s)) => s
                .shards
                .iter()
                .all(|shard| reads_locally(&w.local_shards, &w.node, p, shard)),
            _ => true,
        };
        if slot.attempts == 0
            && let Some(w) = live.iter().find(|w| w.id == slot.preferred)
        {
            return (w.clone(), holds_replicas(w));
        }
        let rotate = (slot.index + slot.attempts) as usize;
        let local: Vec<&WorkerHandle> = live.iter().filter(|w| holds_replicas(w)).collect();
        if !local.is_empty() {
            return (local[rotate % local.len()].clone(), true);
        }
        let w = &live[rotate % live.len()];
        (w.clone(), false)
    }

    /// Launches every unfinished task of `stage` once and records what came back.
    async fn run_round(&mut self, stage: StageId) -> Result<()> {
        let mut live = self.driver.registry.live();
        if live.is_empty() {
            self.driver
                .registry
                .wait_for(1, self.driver.config.worker_wait)
                .await;
            live = self.driver.registry.live();
            if live.is_empty() {
                return Err(Error::NoWorkers { job: self.job });
            }
        }
        let inputs: HashMap<StageId, Vec<TaskOutput>> = self
            .graph
            .inputs(stage)
            .into_iter()
            .map(|input| (input, self.outputs_of(input)))
            .collect();
        let Some(tasks) = self.stages.get(&stage) else {
            return Ok(());
        };
        let mut running = JoinSet::new();
        for slot in tasks.tasks.iter().filter(|t| t.done.is_none()) {
            let (worker, local) = self.choose(stage, slot, &live);
            let id = TaskId {
                job: self.job,
                stage,
                index: slot.index,
                attempt: slot.attempts,
            };
            let request = pb::LaunchTaskRequest {
                protocol_version: quarry_proto::PROTOCOL_VERSION,
                task: Some(task_request_to_proto(&TaskRequest {
                    id,
                    plan: tasks.plan.clone(),
                    shards: slot.shards.clone(),
                    hash_partitions: slot.hash_partitions.clone(),
                    inputs: inputs.clone(),
                    session_config: self.settings.clone(),
                    modules: tasks.modules.clone(),
                })),
            };
            let span = tracing::info_span!("task", job = %id.job, stage = %id.stage, task = id.index, attempt = id.attempt, worker = %worker.id);
            let mut client = worker.client.clone();
            let driver = self.driver.clone();
            running.spawn(
                async move {
                    // A task runs as long as it needs, but not past its worker's loss: then it
                    // fails as retryable and runs again elsewhere.
                    let response = tokio::select! {
                        response = client.launch_task(request) => response,
                        () = driver.registry.lost(&worker.id) => Err(tonic::Status::unavailable(
                            format!("worker {} stopped answering heartbeats", worker.id),
                        )),
                    };
                    (id, worker, local, response)
                }
                .instrument(span),
            );
        }
        let max_attempts = self.driver.config.max_task_attempts.max(1);
        let mut failed_any = 0u32;
        while let Some(joined) = running.join_next().await {
            let (id, worker, local, response) = joined.map_err(|e| Error::TaskFailed {
                failure: TaskFailure {
                    kind: FailureKind::Internal,
                    retryable: false,
                    message: format!("launching a task panicked: {e}"),
                    unreachable_endpoint: None,
                },
            })?;
            let failure = match response {
                Ok(response) => {
                    let status = response
                        .into_inner()
                        .status
                        .ok_or_else(|| quarry_worker::Error::InvalidMessage {
                            message: "launch response",
                            problem: "it has no status".into(),
                        })
                        .and_then(|s| status_from_proto(&s))?;
                    match status.state {
                        TaskState::Succeeded => {
                            self.driver.jobs.task_finished(
                                self.job,
                                stage,
                                TaskRecord::of(
                                    &id,
                                    &worker.id,
                                    super::job_tracker::SUCCEEDED,
                                    local,
                                    status.metrics,
                                ),
                            );
                            self.set_done(
                                stage,
                                id.index,
                                Done {
                                    output: TaskOutput {
                                        task: id,
                                        endpoint: worker.endpoint.clone(),
                                        partitions: status.output_partitions,
                                    },
                                    worker: worker.id.clone(),
                                },
                            );
                            continue;
                        }
                        _ => status.failure.unwrap_or(TaskFailure {
                            kind: FailureKind::External,
                            retryable: true,
                            message: format!("task {id} was cancelled on {}", worker.id),
                            unreachable_endpoint: None,
                        }),
                    }
                }
                Err(status) => {
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::Unknown
                            | tonic::Code::Cancelled
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Aborted
                    ) {
                        self.driver.registry.mark_lost(&worker.id);
                        TaskFailure {
                            kind: FailureKind::External,
                            retryable: true,
                            message: format!("worker {} failed: {}", worker.id, status.message()),
                            unreachable_endpoint: None,
                        }
                    } else {
                        TaskFailure {
                            kind: FailureKind::Internal,
                            retryable: false,
                            message: format!(
                                "worker {} refused task {id}: {}",
                                worker.id,
                                status.message()
                            ),
                            unreachable_endpoint: None,
                        }
                    }
                }
            };
            tracing::warn!(task = %id, worker = %worker.id, error = %failure.message, retryable = failure.retryable, "task failed");
            self.driver.jobs.task_finished(
                self.job,
                stage,
                TaskRecord::of(
                    &id,
                    &worker.id,
                    &format!("failed: {}", failure.message),
                    local,
                    Default::default(),
                ),
            );
            if !failure.retryable {
                return Err(Error::TaskFailed { failure });
            }
            if let Some(endpoint) = &failure.unreachable_endpoint {
                self.driver.registry.mark_endpoint_lost(endpoint);
            }
            let attempts = self.bump_attempts(stage, id.index);
            self.driver.jobs.task_retried(self.job, stage);
            if attempts >= max_attempts {
                return Err(Error::TaskFailed {
                    failure: TaskFailure {
                        message: format!(
                            "task {id} failed {attempts} times; last: {}",
                            failure.message
                        ),
                        ..failure
                    },
                });
            }
            failed_any = failed_any.max(attempts);
        }
        if failed_any > 0 {
            let backoff = Duration::from_millis(50 * (1 << failed_any.min(5)));
            tokio::time::sleep(backoff).await;
        }
        Ok(())
    }

    fn set_done(&mut self, stage: StageId, index: u32, done: Done) {
        if let Some(t) = self
            .stages
            .get_mut(&stage)
            .and_then(|s| s.tasks.iter_mut().find(|t| t.index == index))
        {
            t.done = Some(done);
        }
    }

    fn bump_attempts(&mut self, stage: StageId, index: u32) -> u32 {
        match self
            .stages
            .get_mut(&stage)
            .and_then(|s| s.tasks.iter_mut().find(|t| t.index == index))
        {
            Some(t) => {
                t.attempts += 1;
                t.attempts
            }
            None => u32::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_shard_lists_are_cut_at_a_range() {
        let few: ShardSet = "0-3,7".parse().unwrap();
        assert_eq!(abbreviate(&few), "0-3,7");
        let many = ShardSet::from_shards((0..400).step_by(2).map(quarry_core::ids::ShardId));
        let text = abbreviate(&many);
        assert!(text.ends_with('…') && text.len() <= 64, "{text}");
        assert!(text.starts_with("0,2,4,"), "{text}");
        assert!(!text.trim_end_matches('…').ends_with(','), "{text}");
    }
}
