//! How every layer of Quarry classifies a failure, in one vocabulary: whose fault it is, and
//! whether running the same work again can help.
//!
//! Each error type says what it is ([`Failure`] from its own variants) and asks the errors it
//! wraps; `quarry_sql::failure` walks DataFusion's chains. The task runner decides retries by
//! it, the driver's services turn it into gRPC codes, and a failed job keeps it on its record.

use std::fmt;

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The request was wrong (bad SQL, bad data, a type error, over a limit): the message is
    /// for the user, and the same request fails the same way.
    User,
    /// Something outside Quarry failed (a worker, the disk, the network): a retry may help.
    External,
    /// A bug in Quarry.
    Internal,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::User => "user",
            FailureKind::External => "external",
            FailureKind::Internal => "internal",
        })
    }
}

/// A failure, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// Whether the same work, run again (elsewhere), can succeed.
    pub retryable: bool,
}

impl Failure {
    /// The user's to fix; never retried.
    pub const USER: Failure = Failure {
        kind: FailureKind::User,
        retryable: false,
    };
    /// Outside Quarry and passing: retried.
    pub const TRANSIENT: Failure = Failure {
        kind: FailureKind::External,
        retryable: true,
    };
    /// Outside Quarry and lasting (a file that is gone for good): not retried.
    pub const EXTERNAL: Failure = Failure {
        kind: FailureKind::External,
        retryable: false,
    };
    /// A bug: not retried, since the same plan would hit it again.
    pub const INTERNAL: Failure = Failure {
        kind: FailureKind::Internal,
        retryable: false,
    };

    pub fn is_user(&self) -> bool {
        self.kind == FailureKind::User
    }
}
