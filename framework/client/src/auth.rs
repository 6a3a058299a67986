//! Who may call a daemon: a bearer token on every gRPC and Flight request.
//!
//! ```text
//!   quarry CLI, notebooks ──authorization: Bearer <client token>───▶ driver
//!   workers ───────────────authorization: Bearer <cluster secret>──▶ driver (RegisterWorker,
//!                                                                     Heartbeat, GetModule)
//!   driver, workers ───────authorization: Bearer <cluster secret>──▶ workers (every call)
//! ```
//!
//! Two secrets, each a file only its owner can read: clients hold the token (`DATA-DIR/token`),
//! the cluster's own processes share the cluster secret (`DATA-DIR/cluster-secret`). The
//! driver creates both in its data directory when they are missing, so `quarry up` and a
//! client on the same machine need no setup. [`Authenticator`] checks a request and records
//! its [`Caller`] in the request's extensions; handlers that serve only the cluster ask
//! [`require_cluster`]. A worker accepts nothing but the cluster secret.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::TryRngCore;
use rand::rngs::OsRng;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The client token's file in a driver's data directory.
pub const TOKEN_FILE: &str = "token";
/// The cluster secret's file in a driver's (and its workers') data directory.
pub const CLUSTER_SECRET_FILE: &str = "cluster-secret";
/// The environment variable a client's token can come from instead of a file.
pub const TOKEN_ENV: &str = "QUARRY_TOKEN";

const AUTHORIZATION: &str = "authorization";
/// Random bytes in a generated secret (written as hex).
const SECRET_BYTES: usize = 32;

/// A bearer secret. Never printed: `{:?}` shows only that there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from its text (surrounding whitespace ignored); it must be printable ASCII, as
    /// an HTTP header value is.
    pub fn new(text: &str) -> Result<Secret, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the token is empty".into());
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a token holds printable ASCII characters only, without spaces".into());
        }
        Ok(Secret(text.into()))
    }

    /// A fresh random secret.
    pub fn generate() -> io::Result<Secret> {
        let mut bytes = [0u8; SECRET_BYTES];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| io::Error::other(format!("no randomness for a secret: {e}")))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Secret(hex.into()))
    }

    /// The secret kept in `path`.
    pub fn read(path: &Path) -> io::Result<Secret> {
        let text = fs::read_to_string(path)?;
        Secret::new(&text).map_err(|problem| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {problem}", path.display()),
            )
        })
    }

    /// The secret kept in `path`, created (readable by this user only) when there is none.
    /// Processes starting together agree on one: the file appears whole or not at all.
    pub fn read_or_create(path: &Path) -> io::Result<Secret> {
        match Secret::read(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            read => return read,
        }
        let secret = Secret::generate()?;
        let nonce = OsRng
            .try_next_u64()
            .map_err(|e| io::Error::other(format!("no randomness for a file name: {e}")))?;
        let staged = PathBuf::from(format!("{}.{nonce:016x}.tmp", path.display()));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&staged)?;
        file.write_all(secret.0.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        drop(file);
        // A hard link fails when the name exists: whoever links first wins, and the others
        // read the winner's secret.
        let linked = fs::hard_link(&staged, path);
        fs::remove_file(&staged)?;
        match linked {
            Ok(()) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::File::open(dir)?.sync_all()?;
                }
                Ok(secret)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Secret::read(path),
            Err(e) => Err(e),
        }
    }

    fn bearer(&self) -> MetadataValue<Ascii> {
        format!("Bearer {}", self.0)
            .parse()
            .expect("a secret is printable ASCII")
    }

    /// Compares in time independent of where the two differ.
    fn matches(&self, presented: &str) -> bool {
        let (ours, theirs) = (self.0.as_bytes(), presented.as_bytes());
        ours.len() == theirs.len()
            && ours
                .iter()
                .zip(theirs)
                .fold(0u8, |differ, (a, b)| differ | (a ^ b))
                == 0
    }
}

/// Who a request came from, as its secret says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A client: the CLI, a notebook, a job submitter.
    Client,
    /// A process of the cluster: the driver or a worker.
    Cluster,
}

/// Checks the bearer secret of every request a daemon serves.
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// The clients' token; `None` on a worker, which serves only the cluster.
    client: Option<Secret>,
    cluster: Secret,
}

impl Authenticator {
    /// A driver's: clients and the cluster.
    pub fn driver(client: Secret, cluster: Secret) -> Self {
        Authenticator {
            client: Some(client),
            cluster,
        }
    }

    /// A worker's: the cluster only.
    pub fn worker(cluster: Secret) -> Self {
        Authenticator {
            client: None,
            cluster,
        }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let Some(presented) = presented else {
            return Err(Status::unauthenticated(format!(
                "no credentials: pass --token-file FILE (a driver keeps its token in DATA-DIR/\
                 {TOKEN_FILE}) or set {TOKEN_ENV}"
            )));
        };
        let caller = if self.cluster.matches(presented) {
            Caller::Cluster
        } else if self.client.as_ref().is_some_and(|c| c.matches(presented)) {
            Caller::Client
        } else if self.client.is_none() {
            return Err(Status::unauthenticated(
                "workers serve only their cluster's driver and workers: the cluster secret \
                 sent is not this worker's (DATA-DIR/cluster-secret)",
            ));
        } else {
            return Err(Status::unauthenticated(format!(
                "the token is not valid for this driver: use the one in its DATA-DIR/\
                 {TOKEN_FILE}"
            )));
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// Refuses a request that did not come from a process of the cluster.
pub fn require_cluster<T>(request: &Request<T>, call: &str) -> Result<(), Status> {
    match request.extensions().get::<Caller>() {
        Some(Caller::Cluster) => Ok(()),
        _ => Err(Status::permission_denied(format!(
            "{call} is for the cluster's workers, which authenticate with the cluster secret; \
             a client token cannot call it"
        ))),
    }
}

/// Sends a secret with every request of a gRPC client.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// Sends `secret`, or nothing (the server then says which credentials it wants).
    pub fn new(secret: Option<&Secret>) -> Self {
        Bearer(secret.map(Secret::bearer))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}

/// A channel whose requests carry a secret.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// `channel` with `bearer` on each request.
pub fn with_bearer(channel: Channel, bearer: Bearer) -> AuthChannel {
    InterceptedService::new(channel, bearer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_starting_together_agree_on_one_secret_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CLUSTER_SECRET_FILE);
        let first = Secret::read_or_create(&path).unwrap();
        let second = Secret::read_or_create(&path).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.0.len(), SECRET_BYTES * 2);
        assert_ne!(first, Secret::generate().unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Nothing staged is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(format!("{first:?}"), "Secret(..)");
    }

    fn request(token: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        }
        request
    }

    #[test]
    fn the_secret_decides_the_caller_and_anything_else_is_refused() {
        let client = Secret::new("client-token").unwrap();
        let cluster = Secret::new("cluster-secret").unwrap();
        let mut driver = Authenticator::driver(client, cluster.clone());
        let caller = |r: Request<()>| r.extensions().get::<Caller>().copied();
        assert_eq!(
            caller(driver.call(request(Some("client-token"))).unwrap()),
            Some(Caller::Client)
        );
        let from_cluster = driver.call(request(Some("cluster-secret"))).unwrap();
        assert_eq!(caller(from_cluster), Some(Caller::Cluster));
        for bad in [None, Some("client-tokem"), Some("client-token2"), Some("")] {
            let status = driver.call(request(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let refused = require_cluster(
            &driver.call(request(Some("client-token"))).unwrap(),
            "RegisterWorker",
        )
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("RegisterWorker"));

        let mut worker = Authenticator::worker(cluster);
        assert!(worker.call(request(Some("cluster-secret"))).is_ok());
        let status = worker.call(request(Some("client-token"))).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn tokens_are_header_safe() {
        assert_eq!(
            Secret::new("  abc \n").unwrap(),
            Secret::new("abc").unwrap()
        );
        assert!(Secret::new("").is_err());
        assert!(Secret::new("two words").is_err());
        assert!(Secret::new("naïve").is_err());
    }
}
