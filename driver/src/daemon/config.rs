//! The driver's configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a driver runs. The defaults suit a local cluster. `quarry driver` reads them in this
/// order, each overriding the one before: these defaults, a TOML file (`--config`, the field
/// names below; durations in milliseconds), environment variables, flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriverConfig {
    /// How often workers heartbeat (default 500 ms).
    #[serde(with = "millis")]
    pub heartbeat_interval: Duration,
    /// A worker silent this long is lost and its work moves elsewhere (default 3 s).
    #[serde(with = "millis")]
    pub lost_after: Duration,
    /// The store's nodes, for placement. Empty: the nodes of the workers that registered.
    pub nodes: Vec<String>,
    /// Runs of one task before its job fails (default 4).
    pub max_task_attempts: u32,
    /// How long a query waits for a first worker when none is alive (default: `lost_after`).
    #[serde(with = "millis")]
    pub worker_wait: Duration,
    /// The file holding the token clients authenticate with (default: `DATA-DIR/token`);
    /// created, readable by the driver's user only, when it does not exist.
    pub token_file: Option<PathBuf>,
    /// The file holding the secret the driver and its workers authenticate each other with
    /// (default: `DATA-DIR/cluster-secret`); created like the token.
    pub cluster_secret_file: Option<PathBuf>,
    /// Whether clients may run statements that use the driver's file system (`COPY ... TO`,
    /// `CREATE EXTERNAL TABLE`), as the driver's user (default: no).
    pub allow_file_access: bool,
    /// Bytes the driver's queries may hold together (the stages it runs itself; workers have
    /// their own limit); past it they spill to disk (default: unbounded).
    pub memory_limit: Option<u64>,
    /// TLS: the driver's certificate and key (it then serves `https://` only), and the CA it
    /// trusts for its workers' certificates.
    pub tls: quarry_client::tls::TlsFiles,
    /// A job still running after this long is stopped and fails, saying so (default: none).
    #[serde(with = "millis_option")]
    pub job_timeout: Option<Duration>,
    /// The largest upload (`quarry load --driver`, Flight DoPut) accepted at once, in bytes of
    /// Arrow data (default 16 GiB).
    pub max_upload_bytes: u64,
    /// An upload larger than this is written in staged parts of about this many bytes,
    /// published together at its end (default 64 MiB).
    pub upload_part_bytes: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            heartbeat_interval: Duration::from_millis(500),
            lost_after: Duration::from_secs(3),
            nodes: Vec::new(),
            max_task_attempts: 4,
            worker_wait: Duration::from_secs(3),
            token_file: None,
            cluster_secret_file: None,
            allow_file_access: false,
            memory_limit: None,
            tls: quarry_client::tls::TlsFiles::default(),
            job_timeout: None,
            max_upload_bytes: 16 << 30,
            upload_part_bytes: 64 << 20,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod millis_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
