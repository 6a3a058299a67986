//! Pulls exchange partitions from other workers over Arrow Flight (`DoGet` with an
//! `ExchangeTicket`). The driver uses it too, for the inputs of the stage it runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow_flight::{FlightClient, Ticket};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quarry_jobs::{ExchangeClient, ExchangeFetchError, PartitionLocation};
use quarry_proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};

use crate::rpc::task_id_to_proto;

/// Largest Flight message accepted (batches are split well below this by the sender).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// An [`ExchangeClient`] over Arrow Flight, with one lazily connected channel per worker.
#[derive(Debug, Default)]
pub struct FlightExchangeClient {
    channels: Mutex<HashMap<String, Channel>>,
}

impl FlightExchangeClient {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn channel(&self, endpoint: &str) -> Result<Channel, String> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = channels.get(endpoint) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| format!("bad endpoint: {e}"))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }
}

impl ExchangeClient for FlightExchangeClient {
    fn fetch(
        &self,
        location: &PartitionLocation,
        schema: SchemaRef,
    ) -> Result<SendableRecordBatchStream> {
        let failed = {
            let location = location.clone();
            move |message: String| {
                DataFusionError::External(Box::new(ExchangeFetchError {
                    task: location.task,
                    endpoint: location.endpoint.clone(),
                    message,
                }))
            }
        };
        let channel = self.channel(&location.endpoint).map_err(failed.clone())?;
        let ticket = pb::ExchangeTicket {
            task: Some(task_id_to_proto(&location.task)),
            partition: location.partition,
        }
        .encode_to_vec();
        let on_error = failed.clone();
        let batches = futures::stream::once(async move {
            let inner = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
            let mut client = FlightClient::new_from_inner(inner);
            client
                .do_get(Ticket::new(ticket))
                .await
                .map_err(|e| failed(e.to_string()))
        })
        .map_ok(move |stream| {
            let on_error = on_error.clone();
            stream.map_err(move |e| on_error(e.to_string()))
        })
        .try_flatten()
        .boxed();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}
