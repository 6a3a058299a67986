//! Errors of distributed planning and plan serialization.

use datafusion::error::DataFusionError;

/// A failure while cutting a plan into stages or moving it over the wire.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plan has a shape the distributed planner does not cut; the caller runs it in one
    /// process instead.
    #[error("this query cannot run distributed: {reason}")]
    NotDistributable { reason: String },
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
