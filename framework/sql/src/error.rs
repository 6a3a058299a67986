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

    /// A statement Quarry refuses as written (a table name without a keyspace, a view that
    /// refers to itself, a statement a cluster cannot run); the message says how to fix it.
    #[error("{message}")]
    Statement { message: String },

    /// Something this session may not do (a client setting a runtime option, writing the
    /// driver's files); the message says who can allow it.
    #[error("{message}")]
    NotAllowed { message: String },

    /// A view's query could not be planned, when the view was created or used.
    #[error("view {name}: {source}")]
    View { name: String, source: Box<Error> },
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// DataFusion's messages nest context ("Error during planning: ..."); users want the innermost
/// statement of what is wrong.
pub fn clean_datafusion_message(e: &DataFusionError) -> String {
    match root(e) {
        DataFusionError::External(inner) => inner.to_string(),
        DataFusionError::Plan(m)
        | DataFusionError::Execution(m)
        | DataFusionError::NotImplemented(m) => m.clone(),
        DataFusionError::SQL(e, _) => e.to_string(),
        other => other.to_string(),
    }
}

/// The innermost DataFusion error of `e`'s chain, as [`DataFusionError::find_root`] finds it,
/// except that a Quarry error wrapped in `External` is a root: it says its own context (a view's
/// error names the view, then what went wrong inside it).
fn root(e: &DataFusionError) -> &DataFusionError {
    let mut root = e;
    let mut current: &dyn std::error::Error = e;
    loop {
        if let Some(DataFusionError::External(inner)) = current.downcast_ref::<DataFusionError>()
            && inner.downcast_ref::<Error>().is_some()
        {
            return root;
        }
        let Some(source) = current.source() else {
            return root;
        };
        current = source;
        if let Some(e) = source.downcast_ref::<DataFusionError>() {
            root = e;
        } else if let Some(e) = source.downcast_ref::<std::sync::Arc<DataFusionError>>() {
            root = e.as_ref();
        }
    }
}

/// Wraps a store error for DataFusion, keeping it downcastable.
pub fn to_datafusion(e: quarry_store::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}
