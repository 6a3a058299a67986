//! A client of a running driver: runs SQL over Arrow Flight, uploads loads, and reads job and
//! worker listings over gRPC.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use futures::TryStreamExt;
use prost::Message;
use quarry_proto::v1 as pb;
use quarry_proto::v1::driver_service_client::DriverServiceClient;
use quarry_sql::QueryOutput;
use quarry_worker::auth::{AuthChannel, Bearer, Secret, with_bearer};
use quarry_worker::cpu_runtime::AbortOnDrop;
use quarry_worker::exchange_client::MAX_MESSAGE_BYTES;
use quarry_worker::tls::Tls;

use crate::daemon::client_flight::{MESSAGE_KEY, SESSION_KEY};

/// A connection to a driver, with the state of this client's session: the driver runs each
/// statement in a fresh session, so the client keeps the session's settings (`SET` values, the
/// keyspace of `USE`, temporary views) as the driver last returned them and sends them with
/// every statement.
#[derive(Debug, Clone)]
pub struct RemoteDriver {
    url: String,
    /// The connection, sending the client's token with every call.
    channel: AuthChannel,
    settings: Vec<(String, String)>,
    label: String,
}

impl RemoteDriver {
    /// Connects to the driver at `url` (such as `http://127.0.0.1:7070`), authenticating with
    /// `token` (without one, the driver refuses every call and says what it needs).
    pub async fn connect(url: &str, token: Option<&Secret>) -> anyhow::Result<Self> {
        Self::connect_with(url, token, &Tls::default()).await
    }

    /// [`RemoteDriver::connect`] trusting `tls`'s CA for an `https://` driver.
    pub async fn connect_with(
        url: &str,
        token: Option<&Secret>,
        tls: &Tls,
    ) -> anyhow::Result<Self> {
        let url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let channel = tls
            .endpoint(&url)
            .map_err(|e| anyhow::anyhow!("'{url}' is not a driver URL (try http://HOST:PORT): {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| {
                format!("could not reach the driver at {url}; is `quarry driver` or `quarry up` running?")
            })?;
        Ok(RemoteDriver {
            url,
            channel: with_bearer(channel, Bearer::new(token)),
            settings: Vec::new(),
            label: format!("cli-{}", std::process::id()),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The label the driver files this client's jobs under.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The session's keyspace (`USE`), as the driver last confirmed it.
    pub fn keyspace(&self) -> Option<&str> {
        self.settings
            .iter()
            .find(|(key, _)| key == quarry_sql::KEYSPACE_SETTING)
            .map(|(_, value)| value.as_str())
            .filter(|keyspace| !keyspace.is_empty())
    }

    fn flight(&self) -> FlightClient<AuthChannel> {
        let inner =
            arrow_flight::flight_service_client::FlightServiceClient::new(self.channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
        FlightClient::new_from_inner(inner)
    }

    pub fn rpc(&self) -> DriverServiceClient<AuthChannel> {
        DriverServiceClient::new(self.channel.clone())
    }

    /// Runs one statement on the driver. What it changes in the session (`SET`, `USE`, temporary
    /// views) is remembered and sent with later statements. On a terminal, a statement that takes a while shows its job's tasks done / total.
    pub async fn execute(&mut self, sql: &str) -> anyhow::Result<QueryOutput> {
        let progress =
            std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| self.watch_progress());
        let output = self.run(sql).await;
        drop(progress);
        output
    }

    /// Polls the driver for this client's running job and draws its progress, from 300 ms on;
    /// stops (and clears the bar) when dropped.
    fn watch_progress(&self) -> AbortOnDrop<()> {
        let mut rpc = self.rpc();
        let label = self.label.clone();
        AbortOnDrop::from(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let bar = crate::progress::tasks_bar();
            let _clear = ClearOnDrop(bar.clone());
            loop {
                if let Ok(jobs) = rpc.list_jobs(pb::ListJobsRequest {}).await
                    && let Some(job) = jobs
                        .into_inner()
                        .jobs
                        .into_iter()
                        .find(|j| j.label == label && j.state == pb::JobState::Running as i32)
                {
                    bar.set_length(u64::from(job.tasks_total));
                    bar.set_position(u64::from(job.tasks_done));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }))
    }

    async fn run(&mut self, sql: &str) -> anyhow::Result<QueryOutput> {
        let mut result = self.start(sql).await?;
        let mut batches = Vec::new();
        while let Some(batch) = result.next().await? {
            batches.push(batch);
        }
        Ok(QueryOutput {
            schema: result.schema,
            batches,
            message: result.message,
        })
    }

    /// Runs one statement on the driver and returns its result as it streams in: the caller
    /// reads batches while the job still runs. Session changes are remembered as with
    /// [`Self::execute`],
    /// and a terminal shows the job's progress until the result is dropped.
    pub async fn execute_stream(&mut self, sql: &str) -> anyhow::Result<RemoteResult> {
        let progress =
            std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| self.watch_progress());
        let mut result = self.start(sql).await?;
        result.progress = progress;
        Ok(result)
    }

    /// Sends the statement and waits for the first batch (or the end), which brings the schema.
    async fn start(&mut self, sql: &str) -> anyhow::Result<RemoteResult> {
        let ticket = pb::QueryTicket {
            protocol_version: quarry_proto::PROTOCOL_VERSION,
            sql: sql.to_string(),
            session_config: self.settings.iter().cloned().collect(),
            label: self.label.clone(),
            rust_job: None,
        };
        self.start_ticket(ticket).await
    }

    /// Sends a Rust job's module to the driver, which checks and keeps it; returns its hash.
    pub async fn put_module(&self, module: Vec<u8>) -> anyhow::Result<String> {
        let response = self
            .rpc()
            .max_encoding_message_size(quarry_wasm::MAX_MODULE_BYTES + 1024)
            .put_module(pb::PutModuleRequest {
                protocol_version: quarry_proto::PROTOCOL_VERSION,
                module,
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        Ok(response.into_inner().hash)
    }

    /// The results of a Rust job with `args`, one line each (`write synth.rollup`, `collect`).
    pub async fn plan_rust_job(
        &self,
        hash: &str,
        args: &[(String, String)],
    ) -> anyhow::Result<Vec<String>> {
        let response = self
            .rpc()
            .plan_rust_job(pb::PlanRustJobRequest {
                protocol_version: quarry_proto::PROTOCOL_VERSION,
                module_hash: hash.to_string(),
                args: job_arguments(args),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        Ok(response.into_inner().sinks)
    }

    /// Starts a Rust job whose results all write to tables and returns once it runs, without
    /// following it: the id of its first result's job, its results, and their jobs' label.
    pub async fn submit_rust_job(
        &self,
        hash: &str,
        args: &[(String, String)],
    ) -> anyhow::Result<pb::SubmitRustJobResponse> {
        let response = self
            .rpc()
            .submit_rust_job(pb::SubmitRustJobRequest {
                protocol_version: quarry_proto::PROTOCOL_VERSION,
                module_hash: hash.to_string(),
                args: job_arguments(args),
                label: self.label.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        Ok(response.into_inner())
    }

    /// Runs result `sink` of a Rust job on the cluster and streams its rows; a terminal shows
    /// the job's progress meanwhile.
    pub async fn run_rust_job_sink(
        &mut self,
        hash: &str,
        args: &[(String, String)],
        sink: u32,
    ) -> anyhow::Result<RemoteResult> {
        let progress =
            std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| self.watch_progress());
        let ticket = pb::QueryTicket {
            protocol_version: quarry_proto::PROTOCOL_VERSION,
            sql: String::new(),
            session_config: Default::default(),
            label: self.label.clone(),
            rust_job: Some(pb::RustJobSink {
                module_hash: hash.to_string(),
                args: job_arguments(args),
                sink,
            }),
        };
        let mut result = self.start_ticket(ticket).await?;
        result.progress = progress;
        Ok(result)
    }

    async fn start_ticket(&mut self, ticket: pb::QueryTicket) -> anyhow::Result<RemoteResult> {
        let mut stream = self
            .flight()
            .do_get(Ticket::new(ticket.encode_to_vec()))
            .await
            .map_err(flight_error)?;
        let first = stream.try_next().await.map_err(flight_error)?;
        let mut schema: SchemaRef = stream
            .schema()
            .cloned()
            .unwrap_or_else(|| std::sync::Arc::new(arrow::datatypes::Schema::empty()));
        if let Some(session) = schema.metadata().get(SESSION_KEY) {
            let settings: BTreeMap<String, String> = serde_json::from_str(session)
                .context("the driver sent session settings that are not a JSON object")?;
            self.settings = settings.into_iter().collect();
            let mut metadata = schema.metadata().clone();
            metadata.remove(SESSION_KEY);
            schema = std::sync::Arc::new(schema.as_ref().clone().with_metadata(metadata));
        }
        let message = schema.metadata().get(MESSAGE_KEY).cloned();
        Ok(RemoteResult {
            schema,
            message,
            first,
            rest: stream,
            progress: None,
        })
    }

    /// Upserts `batches` into `table` through the driver; returns the rows written.
    pub async fn load(&self, table: &str, batches: Vec<RecordBatch>) -> anyhow::Result<u64> {
        let descriptor = FlightDescriptor::new_path(vec![table.to_string()]);
        let data = arrow_flight::encode::FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter(batches.into_iter().map(Ok)));
        let results: Vec<arrow_flight::PutResult> = self
            .flight()
            .do_put(data)
            .await
            .map_err(flight_error)?
            .try_collect()
            .await
            .map_err(flight_error)?;
        let rows = results
            .first()
            .and_then(|r| std::str::from_utf8(&r.app_metadata).ok()?.parse().ok())
            .unwrap_or(0);
        Ok(rows)
    }
}

/// A statement's result arriving from the driver.
#[derive(Debug)]
pub struct RemoteResult {
    pub schema: SchemaRef,
    /// What a statement that returns no rows said ("upserted 12 rows").
    pub message: Option<String>,
    first: Option<RecordBatch>,
    rest: arrow_flight::decode::FlightRecordBatchStream,
    progress: Option<AbortOnDrop<()>>,
}

impl RemoteResult {
    /// The next batch, or `None` at the end.
    pub async fn next(&mut self) -> anyhow::Result<Option<RecordBatch>> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        let next = self.rest.try_next().await.map_err(flight_error)?;
        if next.is_none() {
            self.progress = None;
        }
        Ok(next)
    }
}

/// Clears a progress bar when the task drawing it is aborted.
struct ClearOnDrop(indicatif::ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn job_arguments(args: &[(String, String)]) -> Vec<pb::JobArgument> {
    args.iter()
        .map(|(name, value)| pb::JobArgument {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// A Flight error as the driver's message, without gRPC framing.
fn flight_error(e: arrow_flight::error::FlightError) -> anyhow::Error {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => anyhow::anyhow!("{}", status.message()),
        other => anyhow::anyhow!("{other}"),
    }
}
