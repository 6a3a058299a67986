//! The classifier of DataFusion's errors, for every layer above: the task runner (retry or
//! not), the driver's services (which gRPC code), a job's record.
//!
//! DataFusion wraps errors in context and in `External`; the root decides. Quarry's own errors
//! inside `External` say what they are themselves ([`Error::failure`],
//! [`quarry_store::Error::failure`]); layers above check their own error types first (an
//! exchange read that failed, a WASM job's error) and ask this for the rest.

use arrow::error::ArrowError;
use datafusion::error::DataFusionError;
pub use quarry_core::failure::{Failure, FailureKind};

use crate::error::Error;

/// What `e` is, from the innermost error of its chain.
pub fn of_datafusion(e: &DataFusionError) -> Failure {
    match e.find_root() {
        DataFusionError::External(inner) => of_external(inner.as_ref()),
        DataFusionError::ArrowError(arrow, _) => of_arrow(arrow),
        // What the statement asked for cannot be planned or computed: a bad column, a failed
        // cast, an overflow, a value a function refuses.
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::Execution(_) => Failure::USER,
        // Over the memory limit: the same plan needs the same memory anywhere, and retrying it
        // on another worker would only take that worker's memory too.
        DataFusionError::ResourcesExhausted(_) => Failure::USER,
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => Failure::TRANSIENT,
        _ => Failure::INTERNAL,
    }
}

/// What an error carried in DataFusion's `External` is: Quarry's own say; others are taken to
/// be outside failures that may pass.
pub fn of_external(inner: &(dyn std::error::Error + Send + Sync + 'static)) -> Failure {
    if let Some(e) = inner.downcast_ref::<Error>() {
        e.failure()
    } else if let Some(e) = inner.downcast_ref::<quarry_store::Error>() {
        e.failure()
    } else if let Some(e) = inner.downcast_ref::<DataFusionError>() {
        of_datafusion(e)
    } else {
        Failure::TRANSIENT
    }
}

/// Arrow's compute errors are the data's (a cast that does not fit, a division by zero); its
/// I/O errors are outside ones.
pub fn of_arrow(e: &ArrowError) -> Failure {
    match e {
        ArrowError::ExternalError(inner) => of_external(inner.as_ref()),
        ArrowError::IoError(..) => Failure::TRANSIENT,
        ArrowError::MemoryError(_) => Failure::USER,
        _ => Failure::USER,
    }
}

impl Error {
    /// Whose fault this is, and whether running it again can help.
    pub fn failure(&self) -> Failure {
        match self {
            Error::Definition(_) | Error::Statement { .. } | Error::NotAllowed { .. } => {
                Failure::USER
            }
            Error::Store(e) => e.failure(),
            Error::Arrow(e) => of_arrow(e),
            Error::DataFusion(e) => of_datafusion(e),
            Error::View { source, .. } => source.failure(),
        }
    }

    /// True when the statement itself is at fault (bad SQL, unknown table, bad data), so running
    /// it again cannot succeed.
    pub fn is_user_error(&self) -> bool {
        self.failure().is_user()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_of_a_chain_decides() {
        let store = quarry_store::Error::NoSuchTable {
            name: "k.t".into(),
            hint: String::new(),
        };
        let wrapped = DataFusionError::Context(
            "while planning".into(),
            Box::new(DataFusionError::External(Box::new(store))),
        );
        assert_eq!(of_datafusion(&wrapped), Failure::USER);
        let disk = DataFusionError::IoError(std::io::Error::other("disk gone"));
        assert_eq!(of_datafusion(&disk), Failure::TRANSIENT);
        let cast = DataFusionError::ArrowError(
            Box::new(ArrowError::CastError("'x' is not a number".into())),
            None,
        );
        assert_eq!(of_datafusion(&cast), Failure::USER);
        let memory = DataFusionError::ResourcesExhausted("10 MB".into());
        assert_eq!(of_datafusion(&memory), Failure::USER);
        assert_eq!(
            of_datafusion(&DataFusionError::Internal("bug".into())),
            Failure::INTERNAL
        );
        let sql = Error::View {
            name: "k.v".into(),
            source: Box::new(Error::DataFusion(DataFusionError::Plan("no column".into()))),
        };
        assert!(sql.is_user_error());
    }
}
