//! The worker's configuration.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use quarry_client::auth::Secret;

/// How a worker runs. Defaults suit `quarry up`. `quarry worker` reads them in this order, each
/// overriding the one before: these defaults, a TOML file (`--config`, the field names below),
/// environment variables, flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// The worker's name, unique in the cluster (default: `worker-<node>`).
    pub worker_id: String,
    /// The store node this worker sits beside; placement gives it that node's shards.
    pub node_id: String,
    /// The driver's gRPC endpoint, such as `http://127.0.0.1:7070`.
    pub driver_url: String,
    /// The host other processes reach this worker at (default: the address it listens on).
    pub advertise_host: Option<String>,
    /// Tasks run at once, and threads of the CPU runtime (default: the machine's cores).
    pub task_slots: usize,
    /// Bytes of exchange outputs kept in memory before they spill to disk (default 2 GiB).
    pub exchange_memory: u64,
    /// Bytes the worker's running tasks may hold together; past it, sorts, aggregates and
    /// joins spill to disk, and a task that cannot spill fails its job (default: unbounded).
    /// Exchange outputs then keep at most a quarter of it in memory (and `exchange_memory`).
    pub memory_limit: Option<u64>,
    /// The store's nodes, for placement: with them the worker reports which shards its node
    /// holds; without them it reports none and the driver places shards itself.
    pub nodes: Vec<String>,
    /// Where compiled Rust job modules are kept between runs (`quarry worker`'s default:
    /// `DATA-DIR/modules/compiled`; without one, `$XDG_CACHE_HOME/quarry/compiled-modules`).
    /// Only this worker's user may write it: the files are native code.
    pub module_cache: Option<std::path::PathBuf>,
    /// The file holding the cluster secret the driver and workers authenticate each other with
    /// (`quarry worker`'s default: `DATA-DIR/cluster-secret`, which the driver creates).
    pub cluster_secret_file: Option<std::path::PathBuf>,
    /// TLS: this worker's certificate and key (it then serves `https://`), and the CA it
    /// trusts for the driver's and other workers' certificates.
    pub tls: quarry_client::tls::TlsFiles,
}

impl Default for WorkerConfig {
    /// No node, driver or name yet (a file or flags give them).
    fn default() -> Self {
        WorkerConfig {
            worker_id: String::new(),
            node_id: String::new(),
            driver_url: String::new(),
            advertise_host: None,
            task_slots: std::thread::available_parallelism().map_or(2, |n| n.get()),
            exchange_memory: 2 << 30,
            memory_limit: None,
            nodes: Vec::new(),
            module_cache: None,
            cluster_secret_file: None,
            tls: quarry_client::tls::TlsFiles::default(),
        }
    }
}

impl WorkerConfig {
    /// [`WorkerConfig::module_cache`], or its default.
    pub fn module_cache_dir(&self) -> std::path::PathBuf {
        if let Some(dir) = &self.module_cache {
            return dir.clone();
        }
        std::env::var_os("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache"))
            })
            .unwrap_or_else(std::env::temp_dir)
            .join("quarry")
            .join("compiled-modules")
    }

    /// The cluster secret, read from [`WorkerConfig::cluster_secret_file`].
    pub fn cluster_secret(&self) -> crate::error::Result<Secret> {
        let Some(path) = &self.cluster_secret_file else {
            return Err(Error::ClusterSecret(
                "no cluster secret file is set: pass --cluster-secret-file FILE (the driver \
                 keeps one in its DATA-DIR/cluster-secret)"
                    .into(),
            ));
        };
        Secret::read(path).map_err(|e| {
            Error::ClusterSecret(if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{} does not exist: start the driver first (it creates the cluster secret \
                     in its data directory) or pass --cluster-secret-file with the driver's",
                    path.display()
                )
            } else {
                format!("reading {}: {e}", path.display())
            })
        })
    }

    pub fn new(node_id: impl Into<String>, driver_url: impl Into<String>) -> Self {
        let node_id = node_id.into();
        WorkerConfig {
            worker_id: format!("worker-{node_id}"),
            node_id,
            driver_url: driver_url.into(),
            ..WorkerConfig::default()
        }
    }
}
