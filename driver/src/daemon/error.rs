//! The driver daemon's error type.

use quarry_jobs::{Failure, JobId, TaskFailure};

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
    #[error(
        "job {job} ran longer than the driver's job timeout ({} s) and was stopped; make the \
         query cheaper or raise the timeout (`quarry driver --job-timeout-secs`)",
        after.as_secs_f64()
    )]
    TimedOut {
        job: JobId,
        after: std::time::Duration,
    },
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

impl Error {
    /// Whose fault this is, and whether running it again can help: by the same classifier the
    /// workers use (`quarry_sql::failure`), each layer asked about its own errors.
    pub fn failure(&self) -> Failure {
        match self {
            Error::Sql(sql) => {
                // A job's own error comes back through DataFusion as `External`.
                if let quarry_sql::Error::DataFusion(df) = sql
                    && let datafusion::error::DataFusionError::External(inner) = df.find_root()
                    && let Some(inner) = inner.downcast_ref::<Error>()
                {
                    return inner.failure();
                }
                sql.failure()
            }
            Error::Store(e) => e.failure(),
            Error::Plan(e) => e.failure(),
            Error::Worker(e) => e.failure(),
            Error::TaskFailed { failure } => failure.failure(),
            Error::NoWorkers { .. } | Error::Serve { .. } | Error::Io(_) => Failure::TRANSIENT,
            // The user's own doing, or more than the operator allows a job.
            Error::Cancelled { .. } | Error::TimedOut { .. } => Failure::USER,
            Error::Panicked { .. } => Failure::INTERNAL,
        }
    }
}
