//! The error type of `quarry-sql`.

use datafusion::error::DataFusionError;

/// What went wrong running a statement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement is not valid Quarry DDL.
    #[error(transparent)]
    Definition(#[from] quarry_core::Error),

    #[error(transparent)]
    Store(#[from] quarry_store::Error),

    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Planning or execution in DataFusion failed.
    #[error("{}", clean_datafusion_message(.0))]
    DataFusion(#[from] DataFusionError),
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the statement itself is at fault (bad SQL, unknown table, bad data), so running
    /// it again cannot succeed.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::Definition(_) => true,
            Error::Store(e) => e.kind() == quarry_store::ErrorKind::User,
            Error::Arrow(_) => false,
            Error::DataFusion(e) => match e.find_root() {
                DataFusionError::External(inner) => inner
                    .downcast_ref::<quarry_store::Error>()
                    .is_some_and(|s| s.kind() == quarry_store::ErrorKind::User),
                DataFusionError::SQL(..)
                | DataFusionError::Plan(_)
                | DataFusionError::SchemaError(..)
                | DataFusionError::NotImplemented(_) => true,
                _ => false,
            },
        }
    }
}

/// DataFusion's messages nest context ("Error during planning: ..."); users want the innermost
/// statement of what is wrong.
pub fn clean_datafusion_message(e: &DataFusionError) -> String {
    let root = e.find_root();
    match root {
        DataFusionError::External(inner) => inner.to_string(),
        DataFusionError::Plan(m)
        | DataFusionError::Execution(m)
        | DataFusionError::NotImplemented(m) => m.clone(),
        DataFusionError::SQL(e, _) => e.to_string(),
        other => other.to_string(),
    }
}

/// Wraps a store error for DataFusion, keeping it downcastable.
pub fn to_datafusion(e: quarry_store::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}
