//! Pulls exchange partitions from other workers over Arrow Flight (`DoGet` with an
//! `ExchangeTicket`). The driver uses it too, for the inputs of the stage it runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow_flight::{FlightClient, Ticket};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quarry_jobs::{ExchangeClient, ExchangeFetchError, PartitionLocation};
use quarry_proto::MAX_MESSAGE_BYTES;
use quarry_proto::v1 as pb;
use tonic::transport::Channel;

use crate::rpc::task_id_to_proto;
use quarry_client::auth::{Bearer, with_bearer};
use quarry_client::tls::Tls;

/// The largest flow-control window HTTP/2 allows (2^31 - 1 bytes).
const CONNECTION_WINDOW_BYTES: u32 = (1 << 31) - 1;
/// How often an idle-looking connection to a worker is pinged, and how long a ping may go
/// unanswered before the connection's streams fail.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// An [`ExchangeClient`] over Arrow Flight, with one lazily connected channel per worker.
#[derive(Debug)]
pub struct FlightExchangeClient {
    channels: Mutex<HashMap<String, Channel>>,
    /// The cluster secret, which workers ask of every caller.
    bearer: Bearer,
    tls: Tls,
}

impl FlightExchangeClient {
    /// A client sending `bearer` with every read, over TLS to `https://` workers.
    pub fn new(bearer: Bearer, tls: Tls) -> Arc<Self> {
        Arc::new(FlightExchangeClient {
            channels: Mutex::default(),
            bearer,
            tls,
        })
    }

    fn channel(&self, endpoint: &str) -> Result<Channel, String> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = channels.get(endpoint) {
            return Ok(c.clone());
        }
        let channel = self
            .tls
            .endpoint(endpoint)
            .map_err(|e| format!("bad endpoint: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // Every stream read from this worker shares one HTTP/2 connection. Data a consumer
            // has not read yet (a repartition whose outputs are full, a join still building
            // from its other side) holds the connection's flow-control window, and hyper's
            // default window (5 MB) is used up by three such streams: every other stream on the
            // connection, including the one the consumer waits for, then stalls forever. Each
            // stream's own window (2 MB) still bounds what it buffers, so the connection's is
            // opened as far as HTTP/2 allows.
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            // A peer that stops answering (frozen, or cut off) fails its streams instead of
            // leaving them waiting.
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
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
        let bearer = self.bearer.clone();
        let batches = futures::stream::once(async move {
            let inner = arrow_flight::flight_service_client::FlightServiceClient::new(with_bearer(
                channel, bearer,
            ))
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

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow_flight::flight_service_server::FlightServiceServer;
    use quarry_jobs::{JobId, StageId, TaskId};

    use super::*;
    use crate::flight_adapter::FlightAdapter;
    use crate::flight_service::WorkerFlight;
    use crate::task_outputs::OutputStore;

    fn task(index: u32) -> TaskId {
        TaskId {
            job: JobId(1),
            stage: StageId(1),
            index,
            attempt: 0,
        }
    }

    /// One output partition of about 4 MB: more than a stream's flow-control window.
    fn big_output(schema: &SchemaRef) -> Vec<RecordBatch> {
        (0..8)
            .map(|b| {
                let values = Int64Array::from_iter_values(b * 64_000..(b + 1) * 64_000);
                RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap()
            })
            .collect()
    }

    /// Consumers that stop reading some streams (a repartition whose outputs are full, a join
    /// waiting for its build side) must not stall other streams from the same worker: all of them
    /// share one HTTP/2 connection, whose flow-control window unread data must not use up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unread_streams_do_not_stall_others_on_the_shared_connection() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let outputs = Arc::new(OutputStore::new(u64::MAX).unwrap());
        for index in 0..5 {
            outputs
                .insert(task(index), schema.clone(), vec![big_output(&schema)])
                .unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(FlightServiceServer::new(FlightAdapter(WorkerFlight {
                    outputs,
                })))
                .serve_with_incoming(crate::incoming(listener)),
        );

        let client = FlightExchangeClient::new(Bearer::new(None), Tls::default());
        let fetch = |index| {
            let location = PartitionLocation {
                task: task(index),
                endpoint: endpoint.clone(),
                partition: 0,
            };
            client.fetch(&location, schema.clone()).unwrap()
        };
        // Four streams read one batch each, then are left alone with megabytes in flight.
        let mut stalled = Vec::new();
        for index in 0..4 {
            let mut stream = fetch(index);
            stream.next().await.unwrap().unwrap();
            stalled.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rows = tokio::time::timeout(Duration::from_secs(20), async {
            let mut rows = 0;
            let mut stream = fetch(4);
            while let Some(batch) = stream.next().await {
                rows += batch.unwrap().num_rows();
            }
            rows
        })
        .await
        .expect("a stream stalled behind unread streams on the same connection");
        assert_eq!(rows, 8 * 64_000);
        // The stalled streams are still whole.
        for mut stream in stalled {
            let mut rows = 64_000;
            while let Some(batch) = stream.next().await {
                rows += batch.unwrap().num_rows();
            }
            assert_eq!(rows, 8 * 64_000);
        }
    }
}
