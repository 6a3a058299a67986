//! What can go wrong in a job, as the job's author sees it.

use std::fmt;

use crate::data::DataError;

/// An error of a job: its arguments, its data, its plan, or one it raised itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// A `--arg` that is missing or does not parse.
    Arg { name: String, message: String },
    /// A row that does not fit the type reading it.
    Data(DataError),
    /// A dataset combined in a way that cannot run.
    Plan { message: String },
    /// Raised by the job itself ([`JobError::msg`]).
    Job { message: String },
}

impl JobError {
    /// An error of the job's own, with `message` shown to whoever submitted it.
    pub fn msg(message: impl Into<String>) -> Self {
        JobError::Job {
            message: message.into(),
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Arg { name, message } => write!(f, "job argument '{name}': {message}"),
            JobError::Data(e) => e.fmt(f),
            JobError::Plan { message } | JobError::Job { message } => f.write_str(message),
        }
    }
}

impl std::error::Error for JobError {}

impl From<DataError> for JobError {
    fn from(e: DataError) -> Self {
        JobError::Data(e)
    }
}

impl From<arrow_schema::ArrowError> for JobError {
    fn from(e: arrow_schema::ArrowError) -> Self {
        JobError::Data(DataError::Arrow {
            message: e.to_string(),
        })
    }
}

pub type Result<T, E = JobError> = std::result::Result<T, E>;
