//! Registration and heartbeats: the worker tells the driver it exists, then keeps saying so.
//!
//! Runs on the network runtime, never behind a task. When the driver does not know the worker
//! (it restarted), the worker registers again; when the driver is unreachable, it keeps trying
//! with a capped backoff.

use std::sync::Arc;
use std::time::Duration;

use quarry_proto::v1 as pb;
use quarry_proto::v1::driver_service_client::DriverServiceClient;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::local_shards::LocalShards;
use crate::rpc::{Peer, check_protocol, local_shards_to_proto};
use crate::worker_service::WorkerState;
use quarry_client::auth::{Bearer, with_bearer};
use quarry_client::tls::Tls;

/// Who the worker is, as it registers.
#[derive(Debug, Clone)]
pub struct Registration {
    pub worker_id: String,
    pub node_id: String,
    pub endpoint: String,
    pub task_slots: u32,
}

pub(crate) fn driver_channel(url: &str, tls: &Tls) -> Result<Channel> {
    Ok(tls
        .endpoint(url)
        .map_err(|problem| Error::DriverUrl {
            url: url.to_string(),
            problem,
        })?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(5))
        .connect_lazy())
}

/// Registers and heartbeats until `stop` turns true. A driver that refuses this worker for
/// good (another protocol version, another cluster secret) ends it with the reason.
pub async fn run(
    driver_url: String,
    me: Registration,
    (bearer, tls): (Bearer, Tls),
    local_shards: LocalShards,
    state: Arc<WorkerState>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut client =
        DriverServiceClient::new(with_bearer(driver_channel(&driver_url, &tls)?, bearer));
    let mut backoff = Duration::from_millis(50);
    // The driver this worker last registered with: a new one knows none of its jobs.
    let mut driver_id: Option<String> = None;
    'register: loop {
        let request = pb::RegisterWorkerRequest {
            protocol_version: quarry_proto::PROTOCOL_VERSION,
            worker: Some(pb::WorkerInfo {
                worker_id: me.worker_id.clone(),
                node_id: me.node_id.clone(),
                rpc_endpoint: me.endpoint.clone(),
                flight_endpoint: me.endpoint.clone(),
                local_shards: local_shards_to_proto(&local_shards.now()),
                task_slots: me.task_slots,
            }),
        };
        let interval = match client.register_worker(request).await {
            Ok(response) => {
                let response = response.into_inner();
                check_protocol(response.protocol_version, Peer::Worker, Peer::Driver)?;
                tracing::info!(driver = %driver_url, driver_id = %response.driver_id, "registered");
                if driver_id
                    .as_ref()
                    .is_some_and(|previous| *previous != response.driver_id)
                {
                    let dropped = state.forget_all_jobs();
                    tracing::info!(
                        outputs = dropped,
                        "the driver restarted; dropped the tasks and outputs of its earlier jobs"
                    );
                }
                state.peers.set(response.peers);
                driver_id = Some(response.driver_id);
                backoff = Duration::from_millis(50);
                Duration::from_millis(response.heartbeat_interval_ms.max(10))
            }
            Err(status) if refused_for_good(&status) => {
                return Err(Error::Driver {
                    url: driver_url,
                    source: status,
                });
            }
            Err(status) => {
                tracing::warn!(driver = %driver_url, error = %status.message(), "could not register; retrying");
                if sleep_or_stop(backoff, &mut stop).await {
                    return Ok(());
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue 'register;
            }
        };
        loop {
            // A task naming a worker this one has not heard of asks for the list early.
            tokio::select! {
                stopped = sleep_or_stop(interval, &mut stop) => if stopped {
                    return Ok(());
                },
                () = state.peers.refresh_wanted() => {}
            }
            let request = pb::HeartbeatRequest {
                protocol_version: quarry_proto::PROTOCOL_VERSION,
                worker_id: me.worker_id.clone(),
                running_tasks: state.running_tasks() as u32,
                local_shards: local_shards_to_proto(&local_shards.now()),
            };
            match client.heartbeat(request).await {
                Ok(r) if r.get_ref().reregister => {
                    tracing::info!("the driver does not know this worker; registering again");
                    continue 'register;
                }
                Ok(r) => state.peers.set(r.into_inner().peers),
                Err(status) => {
                    tracing::warn!(error = %status.message(), "heartbeat failed");
                    if refused_for_good(&status) {
                        return Err(Error::Driver {
                            url: driver_url,
                            source: status,
                        });
                    }
                    continue 'register;
                }
            }
        }
    }
}

/// Whether retrying cannot help: the driver speaks another protocol version or does not accept
/// this worker's cluster secret.
fn refused_for_good(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::FailedPrecondition
            | tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
    )
}

/// Sleeps; returns true when asked to stop meanwhile.
async fn sleep_or_stop(duration: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(duration) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
