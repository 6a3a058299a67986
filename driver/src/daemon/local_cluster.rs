//! A whole cluster in this process: a driver and `n` workers on loopback ports, sharing one data
//! directory. `quarry demo` and the tests use it; `quarry up` runs the workers as processes
//! instead.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};
use quarry_worker::WorkerConfig;
use quarry_worker::auth::Secret;
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

impl LocalCluster {
    /// Starts a driver over `store` (the writer of `data_dir`) and `workers` workers reading
    /// `data_dir`, named `node-1`, `node-2`, ...; returns once all of them registered. Placement
    /// is over those nodes unless `config` names others.
    pub async fn start(
        store: Arc<EmbeddedStore>,
        data_dir: &Path,
        workers: usize,
        mut config: DriverConfig,
    ) -> Result<LocalCluster> {
        if config.nodes.is_empty() {
            config.nodes = (1..=workers).map(|i| format!("node-{i}")).collect();
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
        for i in 1..=workers {
            cluster
                .add_worker(data_dir, &format!("node-{i}"), cores)
                .await?;
        }
        let live = cluster
            .driver
            .registry
            .wait_for(workers, Duration::from_secs(10))
            .await;
        if live < workers {
            return Err(Error::Io(std::io::Error::other(format!(
                "only {live} of {workers} workers registered within 10 s"
            ))));
        }
        Ok(cluster)
    }

    /// Starts one more worker for `node`, reading `data_dir`.
    pub async fn add_worker(&mut self, data_dir: &Path, node: &str, slots: usize) -> Result<()> {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open_reader(
            data_dir,
            EmbeddedOptions::default(),
        )?);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
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
