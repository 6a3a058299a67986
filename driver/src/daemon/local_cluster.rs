//! A whole cluster in this process: a driver and `n` workers on loopback ports, sharing one data
//! directory, or a worker beside each node of a CQL cluster. `quarry demo` and the tests use it;
//! `quarry up` runs the workers as processes instead.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quarry_client::auth::Secret;
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};
use quarry_worker::WorkerConfig;
use quarry_worker::cpu_runtime::AbortOnDrop;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{DriverConfig, DriverState, Error, Result};

/// A running in-process cluster; dropping it stops everything.
#[derive(Debug)]
pub struct LocalCluster {
    pub driver: Arc<DriverState>,
    /// The driver's endpoint, for `--driver`.
    pub url: String,
    stops: Vec<oneshot::Sender<()>>,
    servers: Vec<AbortOnDrop<()>>,
}

/// The store each in-process worker reads, beside the node it stands for.
#[derive(Debug, Clone)]
pub enum WorkerStores {
    /// `workers` readers of the embedded data directory, for nodes `node-1`, `node-2`, ...
    Embedded { workers: usize },
    /// A connection to the CQL cluster per node in `nodes` (its CQL addresses), reading from
    /// that node first, as a worker co-located with it does.
    Scylla {
        options: Box<quarry_scylla::ScyllaOptions>,
        nodes: Vec<String>,
    },
}

impl WorkerStores {
    fn nodes(&self) -> Vec<String> {
        match self {
            WorkerStores::Embedded { workers } => {
                (1..=*workers).map(|i| format!("node-{i}")).collect()
            }
            WorkerStores::Scylla { nodes, .. } => nodes.clone(),
        }
    }

    async fn open(&self, data_dir: &Path, node: &str) -> Result<Arc<dyn Store>> {
        Ok(match self {
            WorkerStores::Embedded { .. } => Arc::new(EmbeddedStore::open_reader(
                data_dir,
                EmbeddedOptions::default(),
            )?),
            WorkerStores::Scylla { options, .. } => {
                let options = quarry_scylla::ScyllaOptions {
                    local_node: Some(node.to_string()),
                    ..options.as_ref().clone()
                };
                Arc::new(quarry_scylla::ScyllaStore::connect(options).await?)
            }
        })
    }
}

impl LocalCluster {
    /// Starts a driver over `store` (the writer of `data_dir`) and `workers` workers reading
    /// `data_dir`, named `node-1`, `node-2`, ...; returns once all of them registered. Placement
    /// is over those nodes unless `config` names others.
    pub async fn start(
        store: Arc<EmbeddedStore>,
        data_dir: &Path,
        workers: usize,
        config: DriverConfig,
    ) -> Result<LocalCluster> {
        Self::start_on(store, data_dir, WorkerStores::Embedded { workers }, config).await
    }

    /// Starts a driver over `store` and a worker per node of `workers`, each with its own store
    /// beside its node; returns once all of them registered. `data_dir` holds the driver's
    /// token, cluster secret and job modules (and, embedded, the data).
    pub async fn start_on(
        store: Arc<dyn Store>,
        data_dir: &Path,
        workers: WorkerStores,
        mut config: DriverConfig,
    ) -> Result<LocalCluster> {
        let nodes = workers.nodes();
        if config.nodes.is_empty() {
            config.nodes = nodes.clone();
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let driver = DriverState::new(config, store, data_dir)?;
        let url = format!("{}://{}", driver.tls.scheme(), listener.local_addr()?);
        let mut cluster = LocalCluster {
            driver: driver.clone(),
            url: url.clone(),
            stops: Vec::new(),
            servers: Vec::new(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        cluster.stops.push(stop);
        cluster
            .servers
            .push(AbortOnDrop::from(tokio::spawn(async move {
                if let Err(e) = super::serve(listener, driver, async move {
                    let _ = stopped.await;
                })
                .await
                {
                    tracing::error!(error = %e, "the driver stopped");
                }
            })));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        for node in &nodes {
            let store = workers.open(data_dir, node).await?;
            cluster.add_worker_on(store, data_dir, node, cores)?;
        }
        let live = cluster
            .driver
            .registry
            .wait_for(nodes.len(), Duration::from_secs(10))
            .await;
        if live < nodes.len() {
            return Err(Error::Io(std::io::Error::other(format!(
                "only {live} of {} workers registered within 10 s",
                nodes.len()
            ))));
        }
        Ok(cluster)
    }

    /// Starts one more worker for `node`, reading `data_dir`.
    pub async fn add_worker(&mut self, data_dir: &Path, node: &str, slots: usize) -> Result<()> {
        let store = WorkerStores::Embedded { workers: 1 }
            .open(data_dir, node)
            .await?;
        self.add_worker_on(store, data_dir, node, slots)
    }

    /// Starts one more worker for `node` over `store`.
    fn add_worker_on(
        &mut self,
        store: Arc<dyn Store>,
        data_dir: &Path,
        node: &str,
        slots: usize,
    ) -> Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let mut config = WorkerConfig::new(node, self.url.clone());
        config.task_slots = slots.max(1);
        config.nodes = self.driver.config.nodes.clone();
        // The driver compiles a job's module when it receives it; workers load it from here.
        config.module_cache = Some(super::compiled_modules_dir(data_dir));
        config.cluster_secret_file = Some(self.driver.auth.cluster_secret_file.clone());
        config.memory_limit = self.driver.config.memory_limit;
        config.tls = self.driver.config.tls.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        self.stops.push(stop);
        self.servers
            .push(AbortOnDrop::from(tokio::spawn(async move {
                if let Err(e) = quarry_worker::serve(listener, config, store, async move {
                    let _ = stopped.await;
                })
                .await
                {
                    tracing::error!(error = %e, "a worker stopped");
                }
            })));
        Ok(())
    }

    /// The token its clients authenticate with.
    pub fn token(&self) -> &Secret {
        &self.driver.auth.token
    }

    /// Stops the workers and the driver and waits for them.
    pub async fn shutdown(mut self) {
        for stop in self.stops.drain(..).rev() {
            let _ = stop.send(());
        }
        for server in self.servers.drain(..).rev() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
}
