//! Cluster errors, classified once: which a retry (on another replica, or later) can fix, and
//! which are the user's to fix. Every message names what was being done and where.
//!
//! | cluster error | failure |
//! |---|---|
//! | unavailable, read/write timeout or failure, overloaded, bootstrapping, rate limit, broken connection, client timeout | transient: retried |
//! | syntax, invalid, unauthorized, authentication, config, already exists, function failure | the user's |
//! | schema disagreement, protocol and server errors, anything else | external, not retried |

use quarry_store::{Error, Failure};
use scylla::errors::{DbError, ExecutionError, PrepareError, RequestAttemptError};

/// Classifies a `DbError` (an ERROR response from a node).
fn db_failure(e: &DbError) -> Failure {
    match e {
        DbError::Unavailable { .. }
        | DbError::ReadTimeout { .. }
        | DbError::WriteTimeout { .. }
        | DbError::ReadFailure { .. }
        | DbError::WriteFailure { .. }
        | DbError::Overloaded
        | DbError::IsBootstrapping
        | DbError::RateLimitReached { .. }
        | DbError::TruncateError => Failure::TRANSIENT,
        DbError::SyntaxError
        | DbError::Invalid
        | DbError::Unauthorized
        | DbError::AuthenticationError
        | DbError::ConfigError
        | DbError::AlreadyExists { .. }
        | DbError::FunctionFailure { .. } => Failure::USER,
        _ => Failure::EXTERNAL,
    }
}

fn attempt_failure(e: &RequestAttemptError) -> Failure {
    match e {
        RequestAttemptError::DbError(db, _) => db_failure(db),
        RequestAttemptError::BrokenConnectionError(_)
        | RequestAttemptError::UnableToAllocStreamId => Failure::TRANSIENT,
        _ => Failure::EXTERNAL,
    }
}

/// An execution error of `what` (e.g. "reading ks.t tokens (a, b] on 10.0.0.1:9042").
pub fn execution(what: &str, e: ExecutionError) -> Error {
    let failure = match &e {
        ExecutionError::LastAttemptError(a) => attempt_failure(a),
        ExecutionError::ConnectionPoolError(_) | ExecutionError::RequestTimeout(_) => {
            Failure::TRANSIENT
        }
        ExecutionError::PrepareError(p) => prepare_failure(p),
        ExecutionError::BadQuery(_) => Failure::USER,
        _ => Failure::EXTERNAL,
    };
    Error::Cluster {
        message: format!("{what}: {e}"),
        failure,
    }
}

fn prepare_failure(e: &PrepareError) -> Failure {
    match e {
        PrepareError::AllAttemptsFailed { first_attempt } => attempt_failure(first_attempt),
        PrepareError::ConnectionPoolError(_) => Failure::TRANSIENT,
        _ => Failure::EXTERNAL,
    }
}

/// A PREPARE of `statement` that failed.
pub fn prepare(statement: &str, e: PrepareError) -> Error {
    Error::Cluster {
        failure: prepare_failure(&e),
        message: format!("preparing `{statement}`: {e}"),
    }
}

/// Anything else the cluster said, as an external failure.
pub fn other(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Cluster {
        message: format!("{what}: {e}"),
        failure: Failure::EXTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_is_retried_and_bad_cql_is_not() {
        let overloaded = RequestAttemptError::DbError(DbError::Overloaded, "busy".into());
        let e = execution("writing ks.t", ExecutionError::LastAttemptError(overloaded));
        assert!(e.failure().retryable);
        assert!(e.to_string().starts_with("writing ks.t: "), "{e}");
        let invalid = RequestAttemptError::DbError(DbError::Invalid, "no such column".into());
        let e = execution("reading ks.t", ExecutionError::LastAttemptError(invalid));
        assert!(e.failure().is_user());
    }
}
