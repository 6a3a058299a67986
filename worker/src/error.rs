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
    /// The other end of a call speaks another protocol version.
    #[error(
        "this {here} speaks protocol version {ours} and the {there} at the other end {theirs}; run \
         the same Quarry version on both"
    )]
    ProtocolVersion {
        here: crate::rpc::Peer,
        ours: u32,
        there: crate::rpc::Peer,
        theirs: u32,
    },
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

use quarry_core::failure::{Failure, FailureKind};

impl Error {
    pub(crate) fn invalid(message: &'static str, problem: impl Into<String>) -> Self {
        Error::InvalidMessage {
            message,
            problem: problem.into(),
        }
    }
}

impl Error {
    /// Whose fault this is, and whether trying again can help.
    pub fn failure(&self) -> Failure {
        match self {
            Error::InvalidMessage { .. }
            | Error::DriverUrl { .. }
            | Error::ClusterSecret(_)
            | Error::Tls(_) => Failure::USER,
            // Two versions of Quarry: waiting does not help, deploying one version does.
            Error::ProtocolVersion { .. } => Failure::EXTERNAL,
            Error::Driver { source, .. } => failure_of_status(source),
            Error::Serve { .. } | Error::Io(_) => Failure::TRANSIENT,
            Error::Wasm(_) | Error::QueryRuntime(_) | Error::Runtime(_) => Failure::INTERNAL,
        }
    }
}

/// The gRPC status a failure is answered with: a user's error is an invalid argument, a passing
/// outside failure "unavailable" (clients may retry), a lasting one a failed precondition, a bug
/// an internal error.
pub fn status_of_failure(failure: Failure, message: String) -> tonic::Status {
    match (failure.kind, failure.retryable) {
        (FailureKind::User, _) => tonic::Status::invalid_argument(message),
        (FailureKind::External, true) => tonic::Status::unavailable(message),
        (FailureKind::External, false) => tonic::Status::failed_precondition(message),
        (FailureKind::Internal, _) => tonic::Status::internal(message),
    }
}

/// What a status from another daemon means, read back.
pub fn failure_of_status(status: &tonic::Status) -> Failure {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::OutOfRange
        | Code::ResourceExhausted => Failure::USER,
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled => {
            Failure::TRANSIENT
        }
        Code::FailedPrecondition => Failure::EXTERNAL,
        _ => Failure::INTERNAL,
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        status_of_failure(e.failure(), e.to_string())
    }
}
