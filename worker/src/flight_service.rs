//! The worker's Arrow Flight service: `DoGet` streams one output partition of a finished task.
//! Everything else Flight offers is refused.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use quarry_proto::v1 as pb;
use tonic::{Request, Response, Status, Streaming};

use crate::rpc::task_id_from_proto;
use crate::task_outputs::OutputStore;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Serves kept task outputs.
#[derive(Debug, Clone)]
pub struct WorkerFlight {
    pub outputs: Arc<OutputStore>,
}

fn refuse<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "a Quarry worker only serves DoGet of exchange outputs, not {what}"
    )))
}

#[tonic::async_trait]
impl FlightService for WorkerFlight {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
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

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        refuse("Handshake")
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        refuse("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        refuse("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        refuse("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        refuse("GetSchema")
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        refuse("DoPut")
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        refuse("DoExchange")
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        refuse("DoAction")
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        refuse("ListActions")
    }
}
