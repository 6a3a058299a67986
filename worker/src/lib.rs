//! The worker daemon: runs tasks beside one store node and serves their outputs.
//!
//! ```text
//!               network runtime                          CPU runtime
//!   driver ──LaunchTask──▶ WorkerRpc ──spawn──────────▶ TaskRunner: decode plan (QuarryCodec),
//!          ◀──status─────┘                                 scan local shards, pull inputs,
//!   peers  ──Flight DoGet──▶ WorkerFlight ◀──outputs────── execute, keep output partitions
//!   heartbeat loop ──RegisterWorker / Heartbeat──▶ driver
//! ```
//!
//! [`serve`] runs both gRPC services on one listener, registers with the driver and heartbeats
//! from the network runtime, while plans run on a separate [`CpuRuntime`](cpu_runtime::CpuRuntime)
//! so a heavy task cannot starve heartbeats. Outputs stay in memory (spilling to disk past a
//! budget) until the driver releases their job. Every call must carry the cluster secret
//! ([`auth`]); a driver that refuses the worker's secret or protocol version ends it.

pub mod config;
pub mod cpu_runtime;
pub mod error;
pub mod exchange_client;
pub mod flight_adapter;
pub mod flight_service;
pub mod heartbeat;
pub mod job_modules;
pub mod local_shards;
pub mod peers;
pub mod rpc;
pub mod task_outputs;
pub mod task_runner;
pub mod worker_service;

use std::future::Future;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use quarry_core::ids::NodeId;
use quarry_proto::v1::worker_service_server::WorkerServiceServer;
use quarry_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;

pub use config::WorkerConfig;
pub use error::{Error, Result};

use crate::cpu_runtime::CpuRuntime;
use crate::exchange_client::FlightExchangeClient;
use crate::flight_adapter::FlightAdapter;
use crate::flight_service::WorkerFlight;
use crate::heartbeat::Registration;
use crate::local_shards::LocalShards;
use crate::task_outputs::OutputStore;
use crate::task_runner::TaskRunner;
use crate::worker_service::{WorkerRpc, WorkerState};
use quarry_client::auth::{Authenticator, Bearer, with_bearer};
use quarry_client::tls::Tls;
use quarry_proto::MAX_MESSAGE_BYTES;

/// The connections a daemon accepts, with Nagle's algorithm off: gRPC messages are small and
/// latency-bound, and with it on each reply can wait for a delayed ACK (about 40 ms).
pub fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::TryStreamExt;
    TcpListenerStream::new(listener).inspect_ok(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not turn off Nagle's algorithm");
        }
    })
}

/// Runs a worker on `listener` until `shutdown` completes, reading `store`.
///
/// On shutdown the worker stops heartbeating, aborts its running tasks and lets in-flight calls
/// finish before returning.
pub async fn serve(
    listener: TcpListener,
    config: WorkerConfig,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let address = listener.local_addr()?;
    let host = config
        .advertise_host
        .clone()
        .unwrap_or_else(|| address.ip().to_string());
    let tls = Tls::load(&config.tls).map_err(Error::Tls)?;
    let endpoint = format!("{}://{host}:{}", tls.scheme(), address.port());
    let local_shards = LocalShards::new(
        NodeId(config.node_id.clone()),
        config.nodes.iter().cloned().map(NodeId).collect(),
        store.clone(),
    );
    let runtime = quarry_wasm::Runtime::new(quarry_wasm::RuntimeConfig {
        cache_dir: Some(config.module_cache_dir()),
        ..quarry_wasm::RuntimeConfig::default()
    })
    .map_err(|e| Error::Wasm(e.to_string()))?;
    let secret = config.cluster_secret()?;
    let bearer = Bearer::new(Some(&secret));
    let modules = Arc::new(job_modules::JobModules::new(
        Arc::new(runtime),
        with_bearer(
            heartbeat::driver_channel(&config.driver_url, &tls)?,
            bearer.clone(),
        ),
    ));
    let runner = TaskRunner::new(
        store,
        FlightExchangeClient::new(bearer.clone(), tls.clone()),
        config.task_slots,
        modules,
        config.memory_limit.map(|b| b as usize),
    )
    .map_err(|e| Error::QueryRuntime(e.to_string()))?;
    let cpu = CpuRuntime::new(config.task_slots)?;
    // Under a memory limit, exchange outputs keep at most a quarter of it in memory.
    let exchange_budget = match config.memory_limit {
        Some(limit) => config.exchange_memory.min(limit / 4),
        None => config.exchange_memory,
    };
    let outputs = OutputStore::new(exchange_budget)?;
    let state = Arc::new(WorkerState::new(
        config.worker_id.clone(),
        runner,
        cpu,
        outputs,
    ));
    tracing::info!(worker = %config.worker_id, node = %config.node_id, %endpoint, "serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    let heartbeat = tokio::spawn(heartbeat::run(
        config.driver_url.clone(),
        Registration {
            worker_id: config.worker_id.clone(),
            node_id: config.node_id.clone(),
            endpoint: endpoint.clone(),
            task_slots: config.task_slots as u32,
        },
        (bearer, tls.clone()),
        local_shards,
        state.clone(),
        stop_rx,
    ));
    // Aborts the heartbeat loop however serving ends.
    let mut heartbeat = cpu_runtime::AbortOnDrop::from(heartbeat);

    let on_shutdown = {
        let state = state.clone();
        async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            state.cancel_all();
        }
    };
    // Only the cluster (the driver, other workers) may call a worker.
    let authenticator = Authenticator::worker(secret);
    let server = tls
        .server()
        .map_err(|e| Error::Tls(format!("serving TLS with --tls-cert and --tls-key: {e}")))?
        .add_service(InterceptedService::new(
            WorkerServiceServer::new(WorkerRpc(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            authenticator.clone(),
        ))
        .add_service(InterceptedService::new(
            FlightServiceServer::new(FlightAdapter(WorkerFlight {
                outputs: state.outputs.clone(),
            })),
            authenticator,
        ))
        .serve_with_incoming_shutdown(incoming(listener), on_shutdown);
    // A driver that refuses this worker for good ends it, with the reason.
    let served = tokio::select! {
        served = server => served.map_err(|source| Error::Serve {
            address: address.to_string(),
            source,
        }),
        Ok(Err(refused)) = &mut heartbeat => {
            state.cancel_all();
            Err(refused)
        }
    };
    drop(heartbeat);
    tracing::info!(worker = %config.worker_id, "stopped");
    served
}
