//! Runs one task: decode its plan bound to its shards and inputs, execute every output
//! partition, keep the batches.

use std::sync::Arc;
use std::time::Instant;

use datafusion::error::DataFusionError;
use datafusion::execution::{SessionState, TaskContext};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionConfig;
use futures::TryStreamExt;
use quarry_jobs::allow_list::check_task_plan;
use quarry_jobs::{
    ExchangeClient, ExchangeFetchError, Failure, QuarryCodec, TaskBinding, TaskFailure,
    TaskMetrics, TaskRequest,
};
use quarry_sql::scan_exec::StoreScanExec;
use quarry_sql::{Access, QuarrySession, RuntimeLimits, runtime_env};
use quarry_store::Store;
use tokio::task::JoinSet;

use crate::job_modules::JobModules;
use crate::task_outputs::OutputStore;

/// Executes tasks against this worker's store.
#[derive(Clone)]
pub struct TaskRunner {
    store: Arc<dyn Store>,
    client: Arc<dyn ExchangeClient>,
    /// Partitions a task's scan spreads over (the CPU runtime's threads).
    scan_partitions: usize,
    /// Functions (`token()` among them) and defaults, built once; each task gets a copy with
    /// its own settings.
    base: SessionState,
    /// The Rust job modules tasks run.
    modules: Arc<JobModules>,
}

impl std::fmt::Debug for TaskRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRunner")
            .field("store", &self.store.kind())
            .field("scan_partitions", &self.scan_partitions)
            .finish()
    }
}

impl TaskRunner {
    /// A runner whose tasks share one memory pool of `memory_limit` bytes (unbounded: `None`)
    /// and can use no local files.
    pub fn new(
        store: Arc<dyn Store>,
        client: Arc<dyn ExchangeClient>,
        scan_partitions: usize,
        modules: Arc<JobModules>,
        memory_limit: Option<usize>,
    ) -> Result<Self, DataFusionError> {
        let scan_partitions = scan_partitions.max(1);
        let config = SessionConfig::new().with_target_partitions(scan_partitions);
        // Tasks read the store and their exchanges, never files: no object store is registered,
        // the local file system's included, so a file scan that got past the allow-list finds
        // nothing to read.
        let limits = RuntimeLimits {
            memory: memory_limit,
            local_files: false,
        };
        let config = limits.fit(config);
        let runtime = runtime_env(limits)?;
        let base = QuarrySession::with_runtime(store.clone(), config, runtime)
            .context()
            .state();
        Ok(TaskRunner {
            store,
            client,
            scan_partitions,
            base,
            modules,
        })
    }

    /// Runs `task` to completion, writing its output partitions into `outputs` as they are
    /// produced and keeping them there when it succeeds; returns how many partitions it has.
    /// Call it on the CPU runtime.
    pub async fn run(
        &self,
        task: TaskRequest,
        outputs: &Arc<OutputStore>,
    ) -> Result<(u32, TaskMetrics), TaskFailure> {
        let started = Instant::now();
        let mut state = self.base.clone();
        for (key, value) in &task.session_config {
            Access::Client { files: false }
                .check_setting(key, value)
                .map_err(|e| TaskFailure::new(e.failure(), e.to_string()))?;
            state
                .config_mut()
                .options_mut()
                .set(key, value)
                .map_err(|e| classify(&e))?;
        }
        let ctx = Arc::new(TaskContext::from(&state));
        self.modules.ensure(&task.modules).await?;
        let codec = QuarryCodec::for_task(
            self.store.clone(),
            TaskBinding {
                shards: task.shards.map(|s| s.shards),
                hash_partitions: task.hash_partitions,
                inputs: task.inputs,
                client: self.client.clone(),
                scan_partitions: self.scan_partitions,
            },
        )
        .with_modules(self.modules.runtime().clone());
        let plan = match codec.decode(&task.plan, &ctx) {
            Ok(plan) => plan,
            // The plan may name a table this process has not noticed yet (created a moment ago
            // through the driver): read the catalog again and decode once more.
            Err(first) => {
                self.store
                    .refresh_catalog()
                    .await
                    .map_err(|e| TaskFailure::new(e.failure(), e.to_string()))?;
                tracing::debug!(error = %first, "decoding the task's plan again after reading the catalog");
                codec.decode(&task.plan, &ctx).map_err(|e| classify(&e))?
            }
        };
        check_task_plan(&plan).map_err(|e| classify(&e))?;
        let schema = plan.schema();
        let partitions = plan.output_partitioning().partition_count();
        let mut running = JoinSet::new();
        for partition in 0..partitions {
            let mut stream = plan
                .execute(partition, ctx.clone())
                .map_err(|e| classify(&e))?;
            let mut writer = outputs.writer(task.id, partition, schema.clone());
            running.spawn(async move {
                let mut rows = 0u64;
                while let Some(batch) = stream.try_next().await? {
                    rows += batch.num_rows() as u64;
                    writer.write(batch).map_err(DataFusionError::IoError)?;
                }
                let written = writer.finish().map_err(DataFusionError::IoError)?;
                Ok::<_, DataFusionError>((partition, rows, written))
            });
        }
        let mut written = Vec::with_capacity(partitions);
        let mut rows_out = 0;
        while let Some(done) = running.join_next().await {
            let (partition, rows, part) = done
                .map_err(|e| {
                    TaskFailure::new(
                        Failure::INTERNAL,
                        format!("a partition of task {} panicked: {e}", task.id),
                    )
                })?
                .map_err(|e| classify(&e))?;
            rows_out += rows;
            written.push((partition, part));
        }
        written.sort_by_key(|(partition, _)| *partition);
        let bytes_out = written.iter().map(|(_, w)| w.rows_bytes()).sum();
        outputs.keep(
            task.id,
            schema,
            written.into_iter().map(|(_, w)| w).collect(),
        );
        let mut metrics = TaskMetrics {
            rows_in: rows_in(&plan),
            rows_out,
            bytes_in: leaf_sum(&plan, |m| {
                m.sum_by_name(quarry_jobs::exchange::BYTES_READ)
                    .map(|v| v.as_usize())
            }),
            bytes_out,
            elapsed_ms: started.elapsed().as_millis() as u64,
            wasm_cpu_ns: quarry_jobs::wasm_exec::cpu_ns_of(&plan),
            rows_local: leaf_sum(&plan, |m| {
                m.sum_by_name(quarry_sql::scan_exec::ROWS_LOCAL)
                    .map(|v| v.as_usize())
            }),
            rows_remote: leaf_sum(&plan, |m| {
                m.sum_by_name(quarry_sql::scan_exec::ROWS_REMOTE)
                    .map(|v| v.as_usize())
            }),
            ..TaskMetrics::default()
        };
        metrics.count_table_rows(&plan);
        Ok((partitions as u32, metrics))
    }
}

/// Rows into the plan's leaves: what its store scans read (more than they return where the
/// store applied pushed-down filters) and what its exchange readers received.
fn rows_in(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    if let Some(scan) = plan.downcast_ref::<StoreScanExec>() {
        return scan.rows_read();
    }
    let children = plan.children();
    if children.is_empty() {
        return plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0) as u64;
    }
    children.into_iter().map(rows_in).sum()
}

/// A metric summed over the plan's leaves (store scans and exchange readers count what they
/// read).
fn leaf_sum(
    plan: &Arc<dyn ExecutionPlan>,
    metric: fn(&datafusion::physical_plan::metrics::MetricsSet) -> Option<usize>,
) -> u64 {
    let children = plan.children();
    if children.is_empty() {
        return plan.metrics().and_then(|m| metric(&m)).unwrap_or(0) as u64;
    }
    children.into_iter().map(|c| leaf_sum(c, metric)).sum()
}

/// Decides whose fault a failure is, from the error's type rather than its text.
pub fn classify(e: &DataFusionError) -> TaskFailure {
    let message = quarry_sql::error::clean_datafusion_message(e);
    let external: Option<&(dyn std::error::Error + Send + Sync + 'static)> = match e.find_root() {
        DataFusionError::External(inner) => Some(inner.as_ref()),
        DataFusionError::ArrowError(arrow_error, _) => match arrow_error.as_ref() {
            arrow::error::ArrowError::ExternalError(inner) => Some(inner.as_ref()),
            _ => None,
        },
        _ => None,
    };
    // The worker's own errors first; DataFusion's, the store's and the SQL layer's by the one
    // classifier they share.
    if let Some(fetch) = external.and_then(|i| i.downcast_ref::<ExchangeFetchError>()) {
        return TaskFailure {
            unreachable_endpoint: Some(fetch.endpoint.clone()),
            ..TaskFailure::new(Failure::TRANSIENT, fetch.to_string())
        };
    }
    if let Some(wasm) = external.and_then(|i| i.downcast_ref::<quarry_wasm::Error>()) {
        // A closure that panicked, looped or outgrew its memory fails the same way anywhere.
        let failure = if wasm.is_user_error() {
            Failure::USER
        } else {
            Failure::INTERNAL
        };
        return TaskFailure::new(failure, message);
    }
    TaskFailure::new(quarry_sql::failure::of_datafusion(e), message)
}

#[cfg(test)]
mod tests {
    use quarry_jobs::FailureKind;

    use super::*;

    #[test]
    fn running_out_of_memory_fails_the_job_instead_of_moving_to_the_next_worker() {
        let failure = classify(&DataFusionError::ResourcesExhausted(
            "Failed to allocate additional 10.0 MB for SortExec".into(),
        ));
        assert_eq!(failure.kind, FailureKind::User);
        assert!(!failure.retryable);
        assert!(failure.message.contains("10.0 MB"), "{}", failure.message);
    }
}
