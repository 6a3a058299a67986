//! What can go wrong while generating, writing or reading TPC-H data.

use std::path::PathBuf;

use arrow::error::ArrowError;
use parquet::errors::ParquetError;

/// An error of this crate; every one names the table or file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating TPC-H table {table}: {source}")]
    Generate {
        table: &'static str,
        source: ArrowError,
    },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {}: {source}", path.display())]
    Parquet { path: PathBuf, source: ParquetError },
    #[error("reading a query's answer: {source}")]
    Answer { source: ArrowError },
    #[error("a thread generating TPC-H table {table} panicked")]
    Panicked { table: &'static str },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
