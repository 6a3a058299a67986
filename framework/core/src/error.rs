//! The error type of `quarry-core`.

/// What went wrong in catalog, token or placement code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A type name that is not one of the CQL types Quarry supports.
    #[error("unknown CQL type '{name}'; supported types are {supported}")]
    UnknownType { name: String, supported: String },

    /// A definition (keyspace, table, column) that cannot be accepted as written.
    #[error("{message}")]
    InvalidDefinition { message: String },

    /// A partition-key value that CQL would refuse (NULL, or not encodable).
    #[error("column '{column}' {problem}")]
    InvalidKey { column: String, problem: String },

    /// A statement the DDL parser cannot accept; the message names the offending token, where it
    /// is (`line L column C`) and the fix.
    #[error("{message}")]
    Syntax { message: String },

    /// A placement that cannot be computed (no nodes, replication larger than the node count).
    #[error("cannot place keyspace '{keyspace}': {problem}")]
    Placement { keyspace: String, problem: String },
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn definition(message: impl Into<String>) -> Self {
        Error::InvalidDefinition {
            message: message.into(),
        }
    }

    pub(crate) fn syntax(message: impl Into<String>) -> Self {
        Error::Syntax {
            message: message.into(),
        }
    }
}
