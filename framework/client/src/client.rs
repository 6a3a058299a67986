//! The connection to a driver: SQL over Arrow Flight `DoGet`, loads over `DoPut`, jobs and
//! workers over the driver's gRPC service.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use arrow_schema::{Schema, SchemaRef};
use futures::TryStreamExt;
use prost::Message;
use quarry_proto::v1 as pb;
use quarry_proto::v1::driver_service_client::DriverServiceClient;
use quarry_proto::{MAX_MESSAGE_BYTES, MESSAGE_KEY, PROTOCOL_VERSION, SESSION_KEY};

use crate::auth::{AuthChannel, Bearer, Secret, with_bearer};
use crate::error::{Error, Result};
use crate::tls::Tls;

/// DataFusion's setting that holds a session's keyspace (`USE ks` sets it).
const KEYSPACE_SETTING: &str = "datafusion.catalog.default_schema";

/// A connection to a driver, with the state of this client's session: the driver runs each
/// statement in a fresh session, so the client keeps the session's settings (`SET` values, the
/// keyspace of `USE`, temporary views) as the driver last returned them and sends them with
/// every statement. Cloning shares the connection and copies the session.
#[derive(Debug, Clone)]
pub struct Client {
    url: String,
    /// The connection, sending the client's token with every call.
    channel: AuthChannel,
    settings: Vec<(String, String)>,
    label: String,
}

/// Distinguishes the clients of one process in their labels.
static CLIENTS: AtomicU64 = AtomicU64::new(0);

impl Client {
    /// Connects to the driver at `url` (such as `http://127.0.0.1:7070`; a bare `HOST:PORT` means
    /// `http://`), authenticating with `token` (without one, the driver refuses every call and
    /// says what it needs).
    pub async fn connect(url: &str, token: Option<&Secret>) -> Result<Self> {
        Self::connect_with(url, token, &Tls::default()).await
    }

    /// [`Client::connect`] trusting `tls`'s CA for an `https://` driver.
    pub async fn connect_with(url: &str, token: Option<&Secret>, tls: &Tls) -> Result<Self> {
        let url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let channel = tls
            .endpoint(&url)
            .map_err(|message| Error::Url {
                url: url.clone(),
                message,
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|source| Error::Connect {
                url: url.clone(),
                source,
            })?;
        let label = format!(
            "client-{}-{}",
            std::process::id(),
            CLIENTS.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Client {
            url,
            channel: with_bearer(channel, Bearer::new(token)),
            settings: Vec::new(),
            label,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The label the driver files this client's jobs under (`quarry jobs` shows it).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The session's keyspace (`USE`), as the driver last confirmed it.
    pub fn keyspace(&self) -> Option<&str> {
        self.settings
            .iter()
            .find(|(key, _)| key == KEYSPACE_SETTING)
            .map(|(_, value)| value.as_str())
            .filter(|keyspace| !keyspace.is_empty())
    }

    fn flight(&self) -> FlightClient<AuthChannel> {
        let inner = FlightServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        FlightClient::new_from_inner(inner)
    }

    /// The driver's gRPC service, for calls this client has no method for.
    pub fn rpc(&self) -> DriverServiceClient<AuthChannel> {
        DriverServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Runs one statement and collects its result. What it changes in the session (`SET`,
    /// `USE`, temporary views) is remembered and sent with later statements.
    pub async fn sql(&mut self, sql: &str) -> Result<QueryOutput> {
        self.sql_stream(sql).await?.collect().await
    }

    /// Runs one statement and returns its result as it streams in: the caller reads batches
    /// while the job still runs. Session changes are remembered as with [`Client::sql`].
    pub async fn sql_stream(&mut self, sql: &str) -> Result<QueryStream> {
        let ticket = pb::QueryTicket {
            protocol_version: PROTOCOL_VERSION,
            sql: sql.to_string(),
            session_config: self.settings.iter().cloned().collect(),
            label: self.label.clone(),
            rust_job: None,
        };
        self.start(ticket).await
    }

    /// Sends the ticket and waits for the first batch (or the end), which brings the schema.
    pub(crate) async fn start(&mut self, ticket: pb::QueryTicket) -> Result<QueryStream> {
        let mut stream = self
            .flight()
            .do_get(Ticket::new(ticket.encode_to_vec()))
            .await?;
        let first = stream.try_next().await?;
        let mut schema = stream
            .schema()
            .cloned()
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        if let Some(session) = schema.metadata().get(SESSION_KEY) {
            let settings: BTreeMap<String, String> =
                serde_json::from_str(session).map_err(|e| Error::Protocol {
                    message: format!("the session settings are not a JSON object of strings: {e}"),
                })?;
            self.settings = settings.into_iter().collect();
            let mut metadata = schema.metadata().clone();
            metadata.remove(SESSION_KEY);
            schema = Arc::new(schema.as_ref().clone().with_metadata(metadata));
        }
        let message = schema.metadata().get(MESSAGE_KEY).cloned();
        Ok(QueryStream {
            schema,
            message,
            first,
            rest: stream,
            guard: None,
        })
    }

    /// Upserts `batches` into `table` (`keyspace.table`); returns the rows written. The rows
    /// become visible together, or, on an error, not at all.
    pub async fn load(&self, table: &str, batches: Vec<RecordBatch>) -> Result<u64> {
        let descriptor = FlightDescriptor::new_path(vec![table.to_string()]);
        let data = arrow_flight::encode::FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter(batches.into_iter().map(Ok)));
        let results: Vec<arrow_flight::PutResult> =
            self.flight().do_put(data).await?.try_collect().await?;
        results
            .first()
            .and_then(|r| std::str::from_utf8(&r.app_metadata).ok()?.parse().ok())
            .ok_or_else(|| Error::Protocol {
                message: "the load's result does not say how many rows were written".into(),
            })
    }

    /// Every job the driver remembers, newest last.
    pub async fn jobs(&self) -> Result<Vec<pb::JobSummary>> {
        let response = self.rpc().list_jobs(pb::ListJobsRequest {}).await?;
        Ok(response.into_inner().jobs)
    }

    /// Job `id` and its stages.
    pub async fn job(&self, id: &str) -> Result<pb::GetJobResponse> {
        let response = self
            .rpc()
            .get_job(pb::GetJobRequest {
                job_id: id.to_string(),
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Cancels job `id` on every worker; whether it was still running.
    pub async fn cancel(&self, id: &str) -> Result<bool> {
        let response = self
            .rpc()
            .cancel_job(pb::CancelJobRequest {
                job_id: id.to_string(),
            })
            .await?;
        Ok(response.into_inner().was_running)
    }

    /// The workers registered with the driver.
    pub async fn workers(&self) -> Result<Vec<pb::WorkerSummary>> {
        let response = self.rpc().list_workers(pb::ListWorkersRequest {}).await?;
        Ok(response.into_inner().workers)
    }

    /// This client's job that is running now, if any (for progress: its tasks done and total).
    pub async fn running_job(&self) -> Result<Option<pb::JobSummary>> {
        Ok(self
            .jobs()
            .await?
            .into_iter()
            .find(|j| j.label == self.label && j.state == pb::JobState::Running as i32))
    }

    /// Polls job `id` every `every` until it has ended, calling `progress` with each state
    /// seen; returns the final one (succeeded, failed or cancelled).
    pub async fn wait_for_job(
        &self,
        id: &str,
        every: Duration,
        mut progress: impl FnMut(&pb::JobSummary),
    ) -> Result<pb::JobSummary> {
        loop {
            let job = self.job(id).await?.job.ok_or_else(|| Error::Protocol {
                message: format!("the driver sent job {id} without its summary"),
            })?;
            progress(&job);
            if ended(&job) {
                return Ok(job);
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// Whether a job has reached a final state.
pub(crate) fn ended(job: &pb::JobSummary) -> bool {
    matches!(
        pb::JobState::try_from(job.state),
        Ok(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled)
    )
}

/// The whole result of one statement.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// What a statement that returns no rows said ("upserted 12 rows").
    pub message: Option<String>,
}

impl QueryOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A statement's result arriving from the driver.
#[derive(Debug)]
pub struct QueryStream {
    pub schema: SchemaRef,
    /// What a statement that returns no rows said ("upserted 12 rows").
    pub message: Option<String>,
    first: Option<RecordBatch>,
    rest: FlightRecordBatchStream,
    guard: Option<Guard>,
}

/// Something kept alive until a stream ends.
struct Guard {
    _held: Box<dyn Send>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard(..)")
    }
}

impl QueryStream {
    /// The next batch, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        let next = self.rest.try_next().await?;
        if next.is_none() {
            self.guard = None;
        }
        Ok(next)
    }

    /// Keeps `guard` until the last batch has arrived (or the stream is dropped): a progress
    /// display that should end with the result, say.
    pub fn keep_until_end(&mut self, guard: impl Send + 'static) {
        self.guard = Some(Guard {
            _held: Box::new(guard),
        });
    }

    /// Every remaining batch.
    pub async fn collect(mut self) -> Result<QueryOutput> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next().await? {
            batches.push(batch);
        }
        Ok(QueryOutput {
            schema: self.schema,
            batches,
            message: self.message,
        })
    }
}
