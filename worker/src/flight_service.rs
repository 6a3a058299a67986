//! The worker's Arrow Flight service: `DoGet` streams one output partition of a finished task.
//! Everything else Flight offers is refused (see [`crate::flight_adapter`]).

use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightData, Ticket};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quarry_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::flight_adapter::{BoxStream, FlightHandler};
use crate::rpc::task_id_from_proto;
use crate::task_outputs::OutputStore;

/// Serves kept task outputs.
#[derive(Debug, Clone)]
pub struct WorkerFlight {
    pub outputs: Arc<OutputStore>,
}

#[tonic::async_trait]
impl FlightHandler for WorkerFlight {
    const SERVES: &'static str = "a Quarry worker only serves DoGet of exchange outputs";

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let ticket = pb::ExchangeTicket::decode(request.into_inner().ticket).map_err(|e| {
            Status::invalid_argument(format!("the ticket is not an exchange ticket: {e}"))
        })?;
        let task = task_id_from_proto(ticket.task.as_ref())?;
        let outputs = self.outputs.get(&task).ok_or_else(|| {
            Status::not_found(format!(
                "this worker keeps no output of task {task} (it was released, or the worker \
                 restarted)"
            ))
        })?;
        let partition = ticket.partition as usize;
        let count = outputs.partitions.len();
        let read = {
            let outputs = outputs.clone();
            tokio::task::spawn_blocking(move || outputs.read(partition))
        };
        let batches = read
            .await
            .map_err(|e| Status::internal(format!("reading an output of task {task}: {e}")))?
            .map_err(|e| Status::internal(format!("reading a spilled output of task {task}: {e}")))?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "task {task} has {count} output partitions, not {}",
                    partition + 1
                ))
            })?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(outputs.schema.clone())
            .build(futures::stream::iter(batches.into_iter().map(Ok)))
            .map_err(Status::from)
            .boxed();
        Ok(Response::new(stream))
    }
}
