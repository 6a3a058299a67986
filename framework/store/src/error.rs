//! The error type of `quarry-store`.

use std::path::PathBuf;

pub use quarry_core::failure::{Failure, FailureKind};

/// What went wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("keyspace '{name}' does not exist{hint}")]
    NoSuchKeyspace { name: String, hint: String },

    #[error("table {name} does not exist{hint}")]
    NoSuchTable { name: String, hint: String },

    #[error("view {name} does not exist{hint}")]
    NoSuchView { name: String, hint: String },

    #[error("{what} already exists{hint}")]
    AlreadyExists { what: String, hint: String },

    #[error("data written to {table} does not match the table: {problem}")]
    SchemaMismatch { table: String, problem: String },

    #[error(transparent)]
    Definition(#[from] quarry_core::Error),

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is damaged: {problem}")]
    Corrupt { path: PathBuf, problem: String },

    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("the store is shutting down")]
    Closed,

    /// A listed data file vanished under a reader: the writing process compacted it away after
    /// the scan was planned. Planning the scan again sees the files that replaced it.
    #[error(
        "data file {path} no longer exists (the writing process probably compacted it away after \
         this scan was planned); plan the scan again"
    )]
    DataFileGone { path: PathBuf },

    /// A write or DDL statement sent to a store opened with
    /// [`EmbeddedStore::open_reader`](crate::EmbeddedStore::open_reader).
    #[error(
        "cannot {action}: this data directory is open read-only, because another process writes \
         it (a driver, whose workers read it, or a streaming `quarry load`); send writes \
         through that process (--driver), or stop it first"
    )]
    ReadOnly { action: String },

    /// A request to a ScyllaDB/Cassandra cluster failed. The message names the node or the
    /// statement; `failure` says whether a retry (elsewhere) can help.
    #[error("{message}")]
    Cluster { message: String, failure: Failure },

    /// A keyspace-wide placement asked of a keyspace that places each table apart (ScyllaDB's
    /// tablets): only a table's placement exists.
    #[error(
        "keyspace {keyspace} places each table on its own tablets: its placement is a table's, \
         not the keyspace's"
    )]
    PlacedPerTable { keyspace: String },

    /// An operation this store does not offer; `instead` says what does the job there.
    #[error("{action} is not something the {store} store does: {instead}")]
    Unsupported {
        action: String,
        store: &'static str,
        instead: String,
    },

    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// True when the data directory could not be opened for writing because another process
    /// has it open for writing.
    pub fn is_locked(&self) -> bool {
        matches!(self, Error::Io { action: "locking", source, .. }
            if source.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Whose fault this is, and whether a retry can help.
    pub fn failure(&self) -> Failure {
        match self {
            Error::NoSuchKeyspace { .. }
            | Error::NoSuchTable { .. }
            | Error::NoSuchView { .. }
            | Error::AlreadyExists { .. }
            | Error::SchemaMismatch { .. }
            | Error::Definition(_)
            | Error::ReadOnly { .. }
            | Error::Unsupported { .. } => Failure::USER,
            // A file compaction removed is read again from the new snapshot.
            Error::Io { .. } | Error::Closed | Error::DataFileGone { .. } => Failure::TRANSIENT,
            Error::Corrupt { .. }
            | Error::Arrow(_)
            | Error::Parquet(_)
            | Error::Internal(_)
            | Error::PlacedPerTable { .. } => Failure::INTERNAL,
            Error::Cluster { failure, .. } => *failure,
        }
    }

    /// Whose fault this is.
    pub fn kind(&self) -> FailureKind {
        self.failure().kind
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
