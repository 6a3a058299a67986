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
use quarry_sql::QueryResult;
use quarry_store::Store;
use quarry_worker::error::status_of_failure;
use quarry_worker::flight_adapter::{BoxStream, FlightHandler};
use quarry_worker::rpc::{Peer, check_protocol};
use tonic::{Request, Response, Status, Streaming};

use super::DriverState;
use super::error::Error;

/// Schema metadata key of a statement's message.
pub const MESSAGE_KEY: &str = "quarry.message";

/// Schema metadata key of the session's settings after a statement: a JSON object of strings.
pub const SESSION_KEY: &str = "quarry.session";

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
        let batches: Vec<arrow::array::RecordBatch> =
            FlightRecordBatchStream::new_from_flight_data(input)
                .try_collect()
                .await
                .map_err(|e| Status::invalid_argument(format!("reading the upload: {e}")))?;
        let expected = def.arrow_schema();
        let batches = batches
            .iter()
            .map(|b| quarry_store::cast_batch(b, &expected))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Status::invalid_argument(format!("the upload does not fit {table}: {e}"))
            })?;
        let summary = self
            .0
            .store
            .write(&table, batches)
            .await
            .map_err(|e| status_of(&Error::Store(e)))?;
        let result = PutResult {
            app_metadata: summary.rows.to_string().into_bytes().into(),
        };
        Ok(Response::new(futures::stream::iter([Ok(result)]).boxed()))
    }
}
