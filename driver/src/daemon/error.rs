//! The driver daemon's error type.

use quarry_jobs::{JobId, TaskFailure};

/// What can go wrong in the driver daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sql(#[from] quarry_sql::Error),
    #[error(transparent)]
    Store(#[from] quarry_store::Error),
    #[error(transparent)]
    Plan(#[from] quarry_jobs::Error),
    #[error(transparent)]
    Worker(#[from] quarry_worker::Error),
    /// A task failed for good: a user error, or retries ran out.
    #[error("{failure}")]
    TaskFailed { failure: TaskFailure },
    #[error(
        "no worker is alive to run job {job}; start workers with `quarry worker --driver URL`, \
         or run a whole local cluster with `quarry up`"
    )]
    NoWorkers { job: JobId },
    #[error("job {job} was cancelled")]
    Cancelled { job: JobId },
    /// A bug: the job's code panicked. Its result would be incomplete, so it fails.
    #[error("job {job} stopped on an internal error (a panic; RUST_LOG=debug shows it): {message}")]
    Panicked { job: JobId, message: String },
    #[error("could not serve on {address}: {source}")]
    Serve {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
