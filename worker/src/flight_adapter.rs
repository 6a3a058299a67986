//! The Arrow Flight service of Quarry's daemons: each serves `DoGet` (and the driver `DoPut`) and
//! refuses the rest of Flight, saying what it does serve.
//!
//! ```text
//!   FlightServiceServer ──▶ FlightAdapter<H> ──do_get / do_put──▶ H: FlightHandler
//!                                       └──── anything else ──▶ Unimplemented("<H::SERVES>, not X")
//! ```

use std::pin::Pin;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

/// A stream of Flight messages as tonic sends them.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What a daemon does with the Flight calls it serves.
#[tonic::async_trait]
pub trait FlightHandler: Send + Sync + 'static {
    /// What the daemon serves, as refusals of the other calls begin ("a Quarry worker only
    /// serves DoGet of exchange outputs").
    const SERVES: &'static str;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status>;

    /// Refused unless the daemon takes uploads.
    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<BoxStream<PutResult>>, Status> {
        refuse::<Self, _>("DoPut")
    }
}

fn refuse<H: FlightHandler + ?Sized, T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!("{}, not {what}", H::SERVES)))
}

/// Serves a [`FlightHandler`] as a Flight service.
#[derive(Debug, Clone)]
pub struct FlightAdapter<H>(pub H);

#[tonic::async_trait]
impl<H: FlightHandler> FlightService for FlightAdapter<H> {
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
        self.0.do_get(request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.0.do_put(request).await
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        refuse::<H, _>("Handshake")
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        refuse::<H, _>("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        refuse::<H, _>("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        refuse::<H, _>("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        refuse::<H, _>("GetSchema")
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        refuse::<H, _>("DoExchange")
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        refuse::<H, _>("DoAction")
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        refuse::<H, _>("ListActions")
    }
}
