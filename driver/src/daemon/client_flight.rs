//! The driver's Arrow Flight service for clients.
//!
//! - `DoGet` with a `QueryTicket` runs one SQL statement and streams its result. A statement that
//!   returns no rows ("created table ...") sends an empty stream whose schema carries the message
//!   under the metadata key [`MESSAGE_KEY`]. The ticket's settings are the client's session
//!   (`SET` values, the keyspace of `USE`, temporary views); a statement that does not stream
//!   (DDL, `SET`, `USE`, `SHOW`) sends the session's settings afterwards as a JSON object under
//!   [`SESSION_KEY`], which the client sends with its next statement.
//! - `DoPut` with a descriptor path `[keyspace.table]` upserts the streamed batches into the table
//!   (what `quarry load --driver` sends), all or nothing.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, PutResult, Ticket};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quarry_core::schema::TableName;
use quarry_proto::v1 as pb;
use quarry_proto::{MESSAGE_KEY, SESSION_KEY};
use quarry_sql::QueryResult;
use quarry_worker::error::status_of_failure;
use quarry_worker::flight_adapter::{BoxStream, FlightHandler};
use quarry_worker::rpc::{Peer, check_protocol};
use tonic::{Request, Response, Status, Streaming};

use super::DriverState;
use super::error::Error;

/// The Flight face of [`DriverState`].
#[derive(Debug, Clone)]
pub struct DriverFlight(pub Arc<DriverState>);

/// Whether the statement itself is at fault (so the client shows the message and stops).
/// The status a client gets for `e`: by its classification ([`Error::failure`]), except that a
/// refused permission and a cancelled job say so.
pub fn status_of(e: &Error) -> Status {
    match e {
        Error::Sql(quarry_sql::Error::NotAllowed { message }) => {
            Status::permission_denied(message.clone())
        }
        Error::Cancelled { .. } => Status::cancelled(e.to_string()),
        Error::TimedOut { .. } => Status::deadline_exceeded(e.to_string()),
        _ => status_of_failure(e.failure(), e.to_string()),
    }
}

/// A job's rows as Flight data, as its driver stage produces them.
fn encode_stream(
    batches: datafusion::execution::SendableRecordBatchStream,
) -> BoxStream<FlightData> {
    let schema = batches.schema();
    let batches = batches.map_err(|e| {
        FlightError::Tonic(Box::new(status_of(&Error::Sql(
            quarry_sql::Error::DataFusion(e),
        ))))
    });
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from)
        .boxed()
}

impl DriverFlight {
    /// Writes an upload as it arrives, all or nothing: a small one in one write; a larger one in
    /// staged parts of `upload_part_bytes`, published together at its end, so that the driver
    /// holds one part at a time. More than `max_upload_bytes` is refused.
    async fn upload(
        &self,
        table: &TableName,
        def: &quarry_core::schema::TableDef,
        statement: u64,
        mut upload: FlightRecordBatchStream,
    ) -> Result<quarry_store::WriteSummary, Status> {
        let config = &self.0.config;
        let store = &self.0.store;
        let expected = def.arrow_schema();
        let mut parts = Vec::new();
        let mut pending = Vec::new();
        let (mut pending_bytes, mut total_bytes) = (0usize, 0u64);
        while let Some(batch) = upload
            .try_next()
            .await
            .map_err(|e| Status::invalid_argument(format!("reading the upload: {e}")))?
        {
            total_bytes += batch.get_array_memory_size() as u64;
            if total_bytes > config.max_upload_bytes {
                return Err(Status::resource_exhausted(format!(
                    "the upload to {table} is larger than the driver accepts at once ({} bytes); \
                     split it into several loads, or raise max_upload_bytes in the driver's \
                     config",
                    config.max_upload_bytes
                )));
            }
            let batch = quarry_store::cast_batch(&batch, &expected).map_err(|e| {
                Status::invalid_argument(format!("the upload does not fit {table}: {e}"))
            })?;
            pending_bytes += batch.get_array_memory_size();
            pending.push(batch);
            if pending_bytes >= config.upload_part_bytes {
                let part = std::mem::take(&mut pending);
                pending_bytes = 0;
                parts.push(
                    store
                        .stage_write(table, statement, part)
                        .await
                        .map_err(|e| status_of(&Error::Store(e)))?,
                );
            }
        }
        let written = if parts.is_empty() {
            store.write(table, pending).await
        } else {
            if !pending.is_empty() {
                parts.push(
                    store
                        .stage_write(table, statement, pending)
                        .await
                        .map_err(|e| status_of(&Error::Store(e)))?,
                );
            }
            store.commit_writes(table, parts).await
        };
        written.map_err(|e| status_of(&Error::Store(e)))
    }
}

#[tonic::async_trait]
impl FlightHandler for DriverFlight {
    const SERVES: &'static str = "the Quarry driver serves DoGet (queries) and DoPut (loads)";

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let ticket = pb::QueryTicket::decode(request.into_inner().ticket).map_err(|e| {
            Status::invalid_argument(format!("the ticket is not a query ticket: {e}"))
        })?;
        check_protocol(ticket.protocol_version, Peer::Driver, Peer::Client)?;
        if let Some(job) = &ticket.rust_job {
            let hash = super::driver_service::module_hash(&job.module_hash)?;
            let args = super::driver_service::job_args(&job.args);
            let batches = self
                .0
                .run_rust_job_sink(&hash, &args, job.sink as usize, &ticket.label)
                .await
                .map_err(|e| status_of(&e))?;
            return Ok(Response::new(encode_stream(batches)));
        }
        let mut settings: Vec<(String, String)> = ticket.session_config.into_iter().collect();
        settings.sort();
        let session = self
            .0
            .session(&settings, &ticket.label)
            .map_err(|e| status_of(&e))?;
        let result = session
            .execute_streaming(&ticket.sql)
            .await
            .map_err(|e| status_of(&Error::Sql(e)))?;
        let output = match result {
            QueryResult::Done(output) => output,
            QueryResult::Stream(batches) => return Ok(Response::new(encode_stream(batches))),
        };
        let session: BTreeMap<String, String> = session.settings().into_iter().collect();
        let session = serde_json::to_string(&session)
            .map_err(|e| Status::internal(format!("encoding the session's settings: {e}")))?;
        let mut metadata = HashMap::from([(SESSION_KEY.to_string(), session)]);
        let schema = match &output.message {
            Some(message) => {
                metadata.insert(MESSAGE_KEY.to_string(), message.clone());
                Schema::empty()
            }
            None => output.schema.as_ref().clone(),
        };
        metadata.extend(schema.metadata().clone());
        let schema = Arc::new(schema.with_metadata(metadata));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::iter(output.batches.into_iter().map(Ok)))
            .map_err(Status::from)
            .boxed();
        Ok(Response::new(stream))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<BoxStream<PutResult>>, Status> {
        let mut input = request.into_inner().map_err(FlightError::from).peekable();
        let first = Pin::new(&mut input)
            .peek()
            .await
            .ok_or_else(|| Status::invalid_argument("DoPut sent no data"))?;
        let path = match first {
            Ok(data) => data
                .flight_descriptor
                .as_ref()
                .and_then(|d| d.path.first().cloned()),
            Err(e) => return Err(Status::invalid_argument(e.to_string())),
        };
        let path = path.ok_or_else(|| {
            Status::invalid_argument("DoPut needs a descriptor path naming keyspace.table")
        })?;
        let table = TableName::parse(&path).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let def = self
            .0
            .store
            .table(&table)
            .map_err(|e| Status::not_found(e.to_string()))?;
        let upload = FlightRecordBatchStream::new_from_flight_data(input);
        let statement = quarry_jobs::write::new_statement_id();
        let summary = match self.upload(&table, &def, statement, upload).await {
            Ok(summary) => summary,
            Err(status) => {
                // What was staged is never published: the table is as it was.
                if let Err(e) = self.0.store.discard_writes(&table, statement) {
                    tracing::warn!(%table, error = %e, "could not remove the parts of a failed upload");
                }
                return Err(status);
            }
        };
        let result = PutResult {
            app_metadata: summary.rows.to_string().into_bytes().into(),
        };
        Ok(Response::new(futures::stream::iter([Ok(result)]).boxed()))
    }
}
