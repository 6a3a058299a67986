//! The error type of `quarry-wasm`.

use std::time::Duration;

/// What went wrong loading or running a job module.
///
/// Everything a guest can do wrong (not compile, import something, panic, loop, run out of
/// memory, hand back a bad pointer) is the user's fault and retrying cannot help:
/// [`Error::is_user_error`] says which is which without anyone parsing messages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a job module this host can run; `problem` says what and how to fix it.
    #[error("invalid job module: {problem}")]
    InvalidModule { problem: String },

    /// The module was built against an SDK speaking another version of the guest ABI.
    #[error(
        "the job module was built with a Quarry SDK speaking ABI version {module}, but this host \
         speaks ABI version {host}: rebuild the job against the quarry-sdk of this Quarry release"
    )]
    AbiMismatch { module: u32, host: u32 },

    /// Job code trapped: a panic (then `message` is the panic message, naming the closure) or
    /// another trap such as a stack overflow (then `message` is the trap's own text).
    #[error("job code failed in {op}: {message}")]
    UserCode { op: String, message: String },

    /// One call into the guest ran longer than [`SandboxLimits::deadline`].
    ///
    /// [`SandboxLimits::deadline`]: crate::SandboxLimits::deadline
    #[error(
        "{op} ran longer than the {limit:?} limit of one call into a job module (an endless \
         loop, or a batch too large for the time allowed)"
    )]
    Timeout { op: String, limit: Duration },

    /// The guest trapped after the host refused to grow its memory past
    /// [`SandboxLimits::memory_bytes`].
    ///
    /// [`SandboxLimits::memory_bytes`]: crate::SandboxLimits::memory_bytes
    #[error(
        "{op} needed more than the {limit_bytes} bytes of memory a job module may use (does it \
         keep every row in memory?)"
    )]
    MemoryLimit { op: String, limit_bytes: usize },

    /// The job reported an error of its own (status 1): a missing argument, bad data.
    #[error("{op}: {message}")]
    JobError { op: String, message: String },

    /// The guest broke the ABI: a result pointer outside its memory, an unknown status byte,
    /// output that is not Arrow IPC, a plan that is not a valid DAG archive.
    #[error("{op} broke the job module ABI: {problem}")]
    BadResult { op: String, problem: String },

    /// A string that is not the 64 hex digits of a [`ModuleHash`](crate::ModuleHash).
    #[error("'{text}' is not a module hash: expected 64 hex digits (a SHA-256)")]
    BadModuleHash { text: String },

    /// An [`OpInstance`](crate::OpInstance) was called again after it failed: its guest state
    /// may be half-updated, so the caller should have dropped it and started a fresh one.
    #[error("{op} already failed in this instance; start a fresh instance")]
    InstanceFailed { op: String },

    /// A bug in the host, not the job's fault.
    #[error("internal error in the WASM host: {message}")]
    Internal { message: String },
}

impl Error {
    /// True when the job module (its code, its build or its data) is at fault: retrying the same
    /// job cannot help, and the message is for the user. False for host bugs.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::InvalidModule { .. }
            | Error::AbiMismatch { .. }
            | Error::UserCode { .. }
            | Error::Timeout { .. }
            | Error::MemoryLimit { .. }
            | Error::JobError { .. }
            | Error::BadResult { .. }
            | Error::BadModuleHash { .. } => true,
            Error::InstanceFailed { .. } | Error::Internal { .. } => false,
        }
    }

    pub(crate) fn invalid_module(problem: impl Into<String>) -> Error {
        Error::InvalidModule {
            problem: problem.into(),
        }
    }

    pub(crate) fn bad_result(op: &str, problem: impl Into<String>) -> Error {
        Error::BadResult {
            op: op.to_owned(),
            problem: problem.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Error {
        Error::Internal {
            message: message.into(),
        }
    }
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
