//! Errors of distributed planning and plan serialization.

use datafusion::error::DataFusionError;
use quarry_sql::failure::Failure;

/// A failure while cutting a plan into stages or moving it over the wire.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plan has a shape the distributed planner does not cut; the caller runs it in one
    /// process instead.
    #[error("this query cannot run distributed: {reason}")]
    NotDistributable { reason: String },
    /// A Rust job that cannot run as written: a source or target that does not match its
    /// table, a DAG the module should not have produced. The user's to fix.
    #[error("{message}")]
    Job { message: String },
    /// The job's module: refused, or failed in the sandbox.
    #[error("{0}")]
    Wasm(#[from] quarry_wasm::Error),
    #[error("{0}")]
    Sql(#[from] quarry_sql::Error),
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whose fault this is, and whether running it again can help.
    pub fn failure(&self) -> Failure {
        match self {
            Error::NotDistributable { .. } => Failure::INTERNAL,
            Error::Job { .. } => Failure::USER,
            Error::Wasm(e) if e.is_user_error() => Failure::USER,
            Error::Wasm(_) => Failure::INTERNAL,
            Error::Sql(e) => e.failure(),
            Error::DataFusion(e) => quarry_sql::failure::of_datafusion(e),
        }
    }
}
