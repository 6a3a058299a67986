//! The worker's error type.

/// What can go wrong in the worker daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A message from the driver lacks a field or holds an invalid one.
    #[error("invalid {message}: {problem}")]
    InvalidMessage {
        message: &'static str,
        problem: String,
    },
    /// The driver speaks another protocol version.
    #[error(
        "the driver speaks protocol version {theirs}, this worker speaks {ours}; run the same \
         Quarry version on both"
    )]
    ProtocolVersion { ours: u32, theirs: u32 },
    #[error("the driver at {url} refused this worker: {}", .source.message())]
    Driver {
        url: String,
        #[source]
        source: tonic::Status,
    },
    #[error("could not serve on {address}: {source}")]
    Serve {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("bad driver URL '{url}': {problem}")]
    DriverUrl { url: String, problem: String },
    #[error("the worker cannot authenticate with its cluster: {0}")]
    ClusterSecret(String),
    #[error("could not start the WASM runtime for Rust jobs: {0}")]
    Wasm(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("could not set up the worker's query runtime: {0}")]
    QueryRuntime(String),
    #[error("could not start the worker's CPU runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(message: &'static str, problem: impl Into<String>) -> Self {
        Error::InvalidMessage {
            message,
            problem: problem.into(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::InvalidMessage { .. } => tonic::Status::invalid_argument(e.to_string()),
            Error::ProtocolVersion { .. } => tonic::Status::failed_precondition(e.to_string()),
            _ => tonic::Status::internal(e.to_string()),
        }
    }
}
