//! The driver daemon: plans SQL into stage DAGs, schedules tasks on workers beside the data, and
//! tracks jobs.
//!
//! ```text
//!   quarry CLI ──Flight DoGet(QueryTicket)──▶ client_flight ──▶ QuarrySession (DDL runs here)
//!                                                   │ queries: DistributedExecutor
//!                                                   ▼
//!        DataFusion physical plan ──DistributedPlanner──▶ JobGraph ──JobRunner──▶ workers
//!                                                                        ◀── outputs (Flight)
//!   workers ──RegisterWorker / Heartbeat──▶ driver_service ──▶ Registry (lost after silence)
//!   quarry jobs / job / cancel ──▶ driver_service ──▶ JobTracker
//! ```
//!
//! The driver owns the store as its only writer: DDL, `quarry load` and `INSERT` results go
//! through it, and it flushes before each distributed query so that workers, which open the
//! same data directory read-only, see every acknowledged write.
//!
//! Every call carries a secret ([`quarry_client::auth`]): clients the token, workers the cluster
//! secret, both kept in the data directory ([`DriverAuth`]) and created on first start.

pub mod client_flight;
pub mod config;
pub mod driver_service;
pub mod error;
pub mod job_runner;
pub mod job_tracker;
pub mod local_cluster;
pub mod module_store;
pub mod registry;
pub mod rpc;
pub mod scheduler;

use quarry_worker::task_outputs::compact_views;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SendableRecordBatchStream, SessionState};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionConfig;
use futures::{FutureExt, StreamExt, TryStreamExt};
use quarry_client::auth::{self, Authenticator, Bearer, Secret};
use quarry_client::tls::Tls;
use quarry_core::ids::NodeId;
use quarry_core::shard_set::ShardSet;
use quarry_jobs::JobId;
use quarry_jobs::{DistributedPlanner, WriteGroups};
use quarry_proto::MAX_MESSAGE_BYTES;
use quarry_proto::v1::driver_service_server::DriverServiceServer;
use quarry_sql::{Access, PlanExecutor, QuarrySession, QueryOutput, RuntimeLimits, runtime_env};
use quarry_store::Store;
use quarry_worker::cpu_runtime::{AbortOnDrop, CpuRuntime};
use quarry_worker::exchange_client::FlightExchangeClient;
use quarry_worker::flight_adapter::FlightAdapter;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tracing::Instrument;

pub use config::DriverConfig;
pub use error::{Error, Result};

use job_runner::JobRunner;
use job_tracker::{JobState, JobTracker};
use registry::Registry;

/// Where the processes of a data directory keep compiled job modules: the driver compiles a
/// module when a client sends it, and workers sharing the directory load it from there.
pub fn compiled_modules_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("modules").join("compiled")
}

/// The driver's secrets and where they are kept.
#[derive(Debug, Clone)]
pub struct DriverAuth {
    /// What clients must send.
    pub token: Secret,
    pub token_file: PathBuf,
    /// What the driver and its workers send each other.
    pub cluster_secret: Secret,
    pub cluster_secret_file: PathBuf,
}

impl DriverAuth {
    /// The secrets `config` names, or those of `data_dir`; each is created when missing.
    fn open(config: &DriverConfig, data_dir: &Path) -> Result<Self> {
        let token_file = config
            .token_file
            .clone()
            .unwrap_or_else(|| data_dir.join(auth::TOKEN_FILE));
        let cluster_secret_file = config
            .cluster_secret_file
            .clone()
            .unwrap_or_else(|| data_dir.join(auth::CLUSTER_SECRET_FILE));
        let open = |path: &Path| {
            Secret::read_or_create(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("the secret in {}: {e}", path.display()))
            })
        };
        Ok(DriverAuth {
            token: open(&token_file)?,
            token_file,
            cluster_secret: open(&cluster_secret_file)?,
            cluster_secret_file,
        })
    }
}

/// Everything the driver's services share.
#[derive(Debug)]
pub struct DriverState {
    pub config: DriverConfig,
    pub auth: DriverAuth,
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub jobs: JobTracker,
    pub client: Arc<FlightExchangeClient>,
    /// Runs the driver stage of jobs, away from the gRPC runtime.
    pub cpu: CpuRuntime,
    pub driver_id: String,
    /// Rust job modules clients sent, by content hash.
    pub modules: module_store::ModuleStore,
    /// The DataFusion runtime of every session: one memory pool of `memory_limit`.
    pub runtime: Arc<RuntimeEnv>,
    limits: RuntimeLimits,
    /// TLS of the driver's listener and of its connections to workers.
    pub tls: Tls,
    /// Jobs streaming their results; see [`DriverState::spawn_background`].
    background: std::sync::Mutex<JoinSet<()>>,
}

impl DriverState {
    /// The driver's state over `store`; its own files (job journal, modules, secrets) live in
    /// `data_dir`.
    pub fn new(
        config: DriverConfig,
        store: Arc<dyn Store>,
        data_dir: &std::path::Path,
    ) -> Result<Arc<Self>> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let journal = data_dir.join("driver").join("jobs.ndjson");
        let jobs = JobTracker::with_journal(&journal).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("opening the job journal {}: {e}", journal.display()),
            )
        })?;
        let runtime = quarry_wasm::Runtime::new(quarry_wasm::RuntimeConfig {
            cache_dir: Some(compiled_modules_dir(data_dir)),
            ..quarry_wasm::RuntimeConfig::default()
        })
        .map_err(quarry_jobs::Error::from)?;
        let modules = module_store::ModuleStore::new(
            data_dir.join("driver").join("modules"),
            Arc::new(runtime),
        );
        let auth = DriverAuth::open(&config, data_dir)?;
        let limits = RuntimeLimits {
            memory: config.memory_limit.map(|b| b as usize),
            local_files: config.allow_file_access,
        };
        let runtime = runtime_env(limits).map_err(quarry_sql::Error::from)?;
        let bearer = Bearer::new(Some(&auth.cluster_secret));
        let tls = Tls::load(&config.tls).map_err(quarry_worker::Error::Tls)?;
        Ok(Arc::new(DriverState {
            modules,
            registry: Registry::new(config.lost_after, bearer.clone(), tls.clone()),
            config,
            auth,
            store,
            jobs,
            client: FlightExchangeClient::new(bearer, tls.clone()),
            cpu: CpuRuntime::new(threads)?,
            driver_id: format!("driver-{}", uuid::Uuid::new_v4().simple()),
            runtime,
            limits,
            tls,
            background: std::sync::Mutex::new(JoinSet::new()),
        }))
    }

    /// The nodes placement is computed over.
    pub fn cluster_nodes(&self) -> Vec<NodeId> {
        if self.config.nodes.is_empty() {
            self.registry.nodes()
        } else {
            self.config
                .nodes
                .iter()
                .map(|n| NodeId(n.clone()))
                .collect()
        }
    }

    /// A SQL session whose queries run on the workers. `settings` are the state of the client's
    /// session ([`QuarrySession::settings`]: `SET` values, the keyspace of `USE`, temporary
    /// views), each checked as it is applied; `label` names the client's jobs.
    pub fn session(
        self: &Arc<Self>,
        settings: &[(String, String)],
        label: &str,
    ) -> Result<QuarrySession> {
        let config = self
            .limits
            .fit(SessionConfig::new().with_target_partitions(self.registry.hash_width()));
        let access = Access::Client {
            files: self.config.allow_file_access,
        };
        let session = QuarrySession::with_runtime(self.store.clone(), config, self.runtime.clone())
            .with_access(access)
            .with_executor(Arc::new(DistributedExecutor {
                driver: self.clone(),
                settings: QuarrySession::engine_settings(settings),
                label: label.to_string(),
            }));
        session.apply_settings(settings)?;
        Ok(session)
    }

    /// The results (sinks) of a Rust job with these arguments, in the job's order.
    pub async fn plan_rust_job(
        self: &Arc<Self>,
        hash: &quarry_wasm::ModuleHash,
        args: &quarry_sdk::dag::JobArgs,
    ) -> Result<Vec<quarry_sdk::dag::Sink>> {
        let module = self.modules.get(hash).await?;
        let dag = quarry_jobs::rust_job::plan_dag(&module, args).await?;
        Ok(dag
            .nodes
            .into_iter()
            .filter_map(|n| match n {
                quarry_sdk::dag::Node::Sink { sink, .. } => Some(sink),
                _ => None,
            })
            .collect())
    }

    /// Runs result `sink` of a Rust job on the workers and streams it, as a query streams.
    pub async fn run_rust_job_sink(
        self: &Arc<Self>,
        hash: &quarry_wasm::ModuleHash,
        args: &quarry_sdk::dag::JobArgs,
        sink: usize,
        label: &str,
    ) -> Result<SendableRecordBatchStream> {
        let module = self.modules.get(hash).await?;
        let session = self.session(&[], label)?;
        let dag = quarry_jobs::rust_job::plan_dag(&module, args).await?;
        let plans = quarry_jobs::rust_job::lower(&session, &module, &dag, args).await?;
        let count = plans.len();
        let plan = plans
            .into_iter()
            .nth(sink)
            .ok_or_else(|| quarry_jobs::Error::Job {
                message: format!("the job has {count} results, none numbered {sink}"),
            })?;
        let args_text = args
            .pairs
            .iter()
            .map(|(k, v)| format!(" {k}={v}"))
            .collect::<String>();
        let text = format!(
            "rust job {hash} result {sink} ({}){args_text}",
            plan.describe()
        );
        Ok(session.execute_plan(&text, plan.plan).await?)
    }

    /// Starts a Rust job whose results all write to tables, with no client attached: its
    /// results run one after another, each a job labelled alike. Returns once the first one
    /// runs (a job that cannot be planned or started fails here), with its id.
    pub async fn submit_rust_job(
        self: &Arc<Self>,
        hash: quarry_wasm::ModuleHash,
        args: quarry_sdk::dag::JobArgs,
        label: &str,
    ) -> Result<Submitted> {
        let sinks = self.plan_rust_job(&hash, &args).await?;
        if let Some((i, sink)) = sinks
            .iter()
            .enumerate()
            .find(|(_, s)| !matches!(s, quarry_sdk::dag::Sink::Write { .. }))
        {
            let sink = quarry_jobs::rust_job::describe_sink(sink);
            return Err(quarry_jobs::Error::Job {
                message: format!(
                    "a detached job must write all its results to tables, and result {i} is \
                     `{sink}`, which needs a client to receive it; run the job without \
                     --detach, or write that result with write_to"
                ),
            }
            .into());
        }
        let label = format!(
            "{label} detached {} #{}",
            &hash.to_string()[..12],
            DETACHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
        );
        let (started, first) = tokio::sync::oneshot::channel();
        let driver = self.clone();
        let results = sinks.len();
        let job_label = label.clone();
        tokio::spawn(async move {
            let mut started = Some(started);
            for sink in 0..results {
                let stream = driver
                    .run_rust_job_sink(&hash, &args, sink, &job_label)
                    .await;
                let mut stream = match (stream, started.take()) {
                    (Ok(stream), Some(reply)) => {
                        let id = driver
                            .jobs
                            .list()
                            .iter()
                            .filter(|j| j.label == job_label)
                            .map(|j| j.id)
                            .max();
                        let _ = reply.send(id.ok_or_else(|| {
                            quarry_jobs::Error::Job {
                                message: "the job started but left no record".into(),
                            }
                            .into()
                        }));
                        stream
                    }
                    (Ok(stream), None) => stream,
                    (Err(e), Some(reply)) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                    (Err(e), None) => {
                        tracing::warn!(label = %job_label, sink, error = %e, "a detached job's result could not start; the results after it are not run");
                        return;
                    }
                };
                while let Some(batch) = futures::StreamExt::next(&mut stream).await {
                    if let Err(e) = batch {
                        tracing::warn!(label = %job_label, sink, error = %e, "a detached job's result failed (its job record says why); the results after it are not run");
                        return;
                    }
                }
            }
        });
        let first_job = first.await.map_err(|_| quarry_jobs::Error::Job {
            message: "the detached job stopped before it started".into(),
        })??;
        Ok(Submitted {
            first_job,
            results,
            label,
        })
    }

    /// Runs one statement as a client asked.
    pub async fn run_statement(
        self: &Arc<Self>,
        sql: &str,
        settings: &[(String, String)],
        label: &str,
    ) -> Result<QueryOutput> {
        let session = self.session(settings, label)?;
        Ok(session.execute(sql).await?)
    }
}

/// Detached submissions so far, numbering their labels.
static DETACHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A Rust job started without a client ([`DriverState::submit_rust_job`]).
#[derive(Debug)]
pub struct Submitted {
    /// The job of its first result, running.
    pub first_job: JobId,
    /// Its results; each after the first starts when the one before ends.
    pub results: usize,
    /// The label of every result's job.
    pub label: String,
}

/// Runs query plans as distributed jobs.
#[derive(Debug)]
struct DistributedExecutor {
    driver: Arc<DriverState>,
    settings: Vec<(String, String)>,
    label: String,
}

impl DistributedExecutor {
    /// Publishes acknowledged writes to the workers' read-only view of the store.
    async fn publish_writes(&self) -> Result<()> {
        Ok(self.driver.store.publish().await?)
    }

    /// Hash exchanges as wide as the live workers' task slots.
    fn planner(&self) -> DistributedPlanner {
        DistributedPlanner::new(self.driver.registry.hash_width())
            .with_write_groups(Arc::new(ReplicaGroups(self.driver.clone())))
    }

    /// Starts a query as a job and returns its result stream. The job runs on the driver's CPU
    /// runtime, owned by the driver: it ends when its last batch is sent, when it fails, when it
    /// is cancelled, or when the client stops reading.
    async fn start(
        &self,
        sql: &str,
        plan: Arc<dyn ExecutionPlan>,
        state: &SessionState,
    ) -> Result<SendableRecordBatchStream> {
        self.publish_writes().await?;
        let plan = quarry_jobs::run_scalar_subqueries(
            plan,
            &SubqueryJobs {
                executor: self,
                sql,
                state,
            },
        )
        .await?;
        let schema = plan.schema();
        let ctx = state.task_ctx();
        let (tx, rx) = mpsc::channel(2);
        let graph = match self.planner().plan(plan.clone()) {
            Ok(graph) => graph,
            Err(quarry_jobs::Error::NotDistributable { reason }) => {
                // Still a job: listed, cancellable, its outcome recorded.
                tracing::info!(%reason, "running the query at the driver");
                let (job, mut cancelled) = self.driver.jobs.start(sql, &self.label);
                let driver = self.driver.clone();
                let timeout = driver.config.job_timeout;
                self.driver.spawn_background(async move {
                    let run = async {
                        let mut stream = datafusion::physical_plan::execute_stream(plan, ctx)?;
                        while let Some(batch) = stream.next().await {
                            if tx.send(batch.map(compact_views)).await.is_err() {
                                break;
                            }
                        }
                        Ok::<_, DataFusionError>(())
                    };
                    let run = std::panic::AssertUnwindSafe(run).catch_unwind();
                    let outcome = tokio::select! {
                        result = run => Some(match result {
                            Ok(result) => result,
                            // A panic must not look like the end of the rows.
                            Err(panic) => Err(DataFusionError::Execution(format!(
                                "the query stopped on an internal error (a panic): {}",
                                panic_message(panic.as_ref())
                            ))),
                        }),
                        _ = cancelled.wait_for(|c| *c) => None,
                        after = deadline(timeout) => Some(Err(DataFusionError::External(
                            Box::new(Error::TimedOut { job, after }),
                        ))),
                    };
                    match outcome {
                        None => {
                            driver.jobs.finish(job, JobState::Cancelled, None);
                            let cancelled = Error::Cancelled { job };
                            let _ = tx
                                .send(Err(DataFusionError::External(Box::new(cancelled))))
                                .await;
                        }
                        Some(Ok(())) => driver.jobs.finish(job, JobState::Succeeded, None),
                        Some(Err(error)) => {
                            let failure = quarry_sql::failure::of_datafusion(&error);
                            driver.jobs.finish(
                                job,
                                JobState::Failed,
                                Some((error.to_string(), failure)),
                            );
                            let _ = tx.send(Err(error)).await;
                        }
                    }
                });
                return Ok(Box::pin(RecordBatchStreamAdapter::new(
                    schema,
                    ReceiverStream::new(rx),
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let (job, mut cancelled) = self.driver.jobs.start(sql, &self.label);
        let live = self.driver.registry.live();
        let runner = match JobRunner::new(
            self.driver.clone(),
            job,
            graph,
            self.settings.clone(),
            &live,
        ) {
            Ok(runner) => runner,
            Err(e) => {
                self.driver
                    .jobs
                    .finish(job, JobState::Failed, Some((e.to_string(), e.failure())));
                return Err(e);
            }
        };
        self.driver.jobs.set_stages(job, runner.stage_records());
        let driver = self.driver.clone();
        let span = tracing::info_span!("job", job = %job);
        self.driver.spawn_background(
            async move {
                // A panic must fail the job: dropping `tx` alone would look like a complete result.
                let run = std::panic::AssertUnwindSafe(runner.run_streaming(ctx, &tx))
                    .catch_unwind()
                    .map(|result| {
                        result.unwrap_or_else(|panic| {
                            Err(Error::Panicked {
                                job,
                                message: panic_message(panic.as_ref()),
                            })
                        })
                    });
                let timeout = driver.config.job_timeout;
                let outcome = tokio::select! {
                    result = run => result,
                    _ = cancelled.wait_for(|c| *c) => Err(Error::Cancelled { job }),
                    _ = tx.closed() => Err(Error::Cancelled { job }),
                    after = deadline(timeout) => Err(Error::TimedOut { job, after }),
                };
                let (state, error) = match &outcome {
                    Ok(()) => (JobState::Succeeded, None),
                    Err(Error::Cancelled { .. }) => (JobState::Cancelled, None),
                    Err(e) => (JobState::Failed, Some((e.to_string(), e.failure()))),
                };
                // The record is final before the client sees the end of the stream.
                tracing::info!(state = ?state, "job finished");
                driver.jobs.finish(job, state, error);
                if let Err(e) = outcome {
                    let _ = tx.send(Err(DataFusionError::External(Box::new(e)))).await;
                }
                drop(tx);
                driver.release(job).await;
            }
            .instrument(span),
        );
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            ReceiverStream::new(rx),
        )))
    }
}

impl DriverState {
    /// Runs `future` on the CPU runtime, owned by the driver (aborted when it shuts down).
    fn spawn_background(&self, future: impl Future<Output = ()> + Send + 'static) {
        let mut background = self
            .background
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget the ones that finished.
        while background.try_join_next().is_some() {}
        background.spawn_on(future, &self.cpu.handle());
    }

    /// Frees a job's outputs and any task still running, on every worker that may hold some.
    async fn release(&self, job: JobId) {
        let releases = self.registry.live().into_iter().map(|worker| async move {
            let mut client = worker.client.clone();
            let release = client.release_job(quarry_proto::v1::ReleaseJobRequest {
                job_id: job.to_string(),
            });
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), release).await {
                tracing::debug!(worker = %worker.id, error = %e, "could not release a job");
            }
        });
        futures::future::join_all(releases).await;
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string())
}

/// Groups the shards of a distributed write by the live worker beside their replicas, the way a
/// scan of them would be split.
#[derive(Debug)]
struct ReplicaGroups(Arc<DriverState>);

impl WriteGroups for ReplicaGroups {
    fn groups(&self, table: &quarry_core::schema::TableName, shard_count: u32) -> Vec<ShardSet> {
        let driver = &self.0;
        let placement = driver
            .store
            .keyspace(&table.keyspace)
            .map_err(quarry_sql::Error::from)
            .and_then(|def| {
                driver
                    .store
                    .placement(&def, std::slice::from_ref(table), &driver.cluster_nodes())
                    .map_err(quarry_sql::Error::from)
            });
        match placement {
            Ok(placement) => {
                let slots = job_runner::slots(&driver.registry.live());
                scheduler::assign_scan(&placement, shard_count, &slots)
                    .into_iter()
                    .map(|a| a.shards)
                    .collect()
            }
            // The planner falls back to contiguous groups; scheduling reports the problem.
            Err(_) => Vec::new(),
        }
    }
}

fn to_sql_error(e: Error) -> quarry_sql::Error {
    match e {
        Error::Sql(e) => e,
        other => quarry_sql::Error::DataFusion(datafusion::error::DataFusionError::External(
            Box::new(other),
        )),
    }
}

/// Runs the scalar subqueries of a query as jobs of their own, before the query.
struct SubqueryJobs<'a> {
    executor: &'a DistributedExecutor,
    sql: &'a str,
    state: &'a SessionState,
}

impl quarry_jobs::RunPlan for SubqueryJobs<'_> {
    fn run(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> futures::future::BoxFuture<'_, quarry_jobs::Result<Vec<RecordBatch>>> {
        Box::pin(async move {
            let stream = self
                .executor
                .start(self.sql, plan, self.state)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok(stream.try_collect().await?)
        })
    }
}

#[async_trait::async_trait]
impl PlanExecutor for DistributedExecutor {
    async fn execute_stream(
        &self,
        sql: &str,
        plan: Arc<dyn ExecutionPlan>,
        state: &SessionState,
    ) -> quarry_sql::Result<SendableRecordBatchStream> {
        self.start(sql, plan, state).await.map_err(to_sql_error)
    }

    /// The stages of the query and, before them, those of each scalar subquery, which runs
    /// first as a job of its own and whose value replaces `scalar_subquery(<pending>)`.
    async fn explain(&self, plan: Arc<dyn ExecutionPlan>) -> quarry_sql::Result<String> {
        let quarry_jobs::SplitSubqueries { main, subqueries } =
            quarry_jobs::split_scalar_subqueries(plan).map_err(|e| to_sql_error(e.into()))?;
        let live = self.driver.registry.live();
        let explain = |plan: Arc<dyn ExecutionPlan>| -> quarry_sql::Result<String> {
            let graph = self
                .planner()
                .plan(plan)
                .map_err(|e| to_sql_error(e.into()))?;
            let runner =
                JobRunner::for_explain(self.driver.clone(), graph, &live).map_err(to_sql_error)?;
            Ok(runner.explain())
        };
        let mut text = String::new();
        for (i, subquery) in subqueries.into_iter().enumerate() {
            text.push_str(&format!(
                "scalar subquery {}: runs first, as a job of its own\n",
                i + 1
            ));
            text.push_str(&explain(subquery)?);
        }
        if !text.is_empty() {
            text.push_str("the query:\n");
        }
        text.push_str(&explain(main)?);
        Ok(text)
    }
}

/// Completes after `timeout` (returning it), or never.
async fn deadline(timeout: Option<Duration>) -> Duration {
    match timeout {
        Some(after) => {
            tokio::time::sleep(after).await;
            after
        }
        None => std::future::pending().await,
    }
}

/// Runs a driver on `listener` until `shutdown` completes. Workers register with it; clients
/// run SQL through its Flight endpoint and inspect jobs through its gRPC service.
pub async fn serve(
    listener: TcpListener,
    state: Arc<DriverState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, "driver serving");
    let reaper = {
        let state = state.clone();
        AbortOnDrop::from(tokio::spawn(async move {
            let mut tick = tokio::time::interval(state.config.heartbeat_interval);
            loop {
                tick.tick().await;
                state.registry.reap();
            }
        }))
    };
    // Clients send the token, workers the cluster secret; calls only workers make check which.
    let authenticator =
        Authenticator::driver(state.auth.token.clone(), state.auth.cluster_secret.clone());
    let served = state
        .tls
        .server()
        .map_err(|source| Error::Serve {
            address: address.to_string(),
            source,
        })?
        .add_service(InterceptedService::new(
            DriverServiceServer::new(driver_service::DriverRpc(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            authenticator.clone(),
        ))
        .add_service(InterceptedService::new(
            FlightServiceServer::new(FlightAdapter(client_flight::DriverFlight(state.clone())))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            authenticator,
        ))
        .serve_with_incoming_shutdown(quarry_worker::incoming(listener), shutdown)
        .await
        .map_err(|source| Error::Serve {
            address: address.to_string(),
            source,
        });
    drop(reaper);
    tracing::info!("driver stopped");
    served
}
