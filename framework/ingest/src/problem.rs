//! What can be wrong with one record, before it becomes either an [`Error`] or a [`Reject`].

use quarry_core::cql_type::CqlType;
use serde_json::{Map, Value};

use crate::error::{Error, KeyKind, Location, bad_value_reason, missing_key_reason};
use crate::format::Format;
use crate::reject::Reject;

/// A problem with one record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Problem {
    /// A value that is not a valid value of its column's type.
    BadValue {
        column: String,
        value: String,
        expected: CqlType,
    },
    /// No value (NULL or empty) for a primary-key column.
    MissingKey {
        column: String,
        kind: KeyKind,
        expected: CqlType,
    },
    /// A record that could not be split into columns; `raw` is its text.
    Malformed {
        format: Format,
        problem: String,
        raw: String,
    },
}

impl Problem {
    /// The error this problem is when rejects are not kept.
    pub fn into_error(self, at: Location) -> Error {
        match self {
            Problem::BadValue {
                column,
                value,
                expected,
            } => Error::BadValue {
                at,
                column,
                value,
                expected,
            },
            Problem::MissingKey { column, kind, .. } => Error::MissingKey { at, column, kind },
            Problem::Malformed {
                format, problem, ..
            } => Error::Malformed {
                at,
                format,
                problem,
            },
        }
    }

    /// The reject this problem is when rejects are kept; `at` must have a position.
    pub fn into_reject(self, at: &Location, record: Map<String, Value>) -> Reject {
        let line = at.position.map_or(0, |p| p.number());
        let source = at.input.clone();
        match self {
            Problem::BadValue {
                column,
                value,
                expected,
            } => Reject {
                source,
                line,
                reason: bad_value_reason(&column, &value, expected),
                column: Some(column),
                value: Some(value),
                expected: Some(expected.name().to_string()),
                record,
            },
            Problem::MissingKey {
                column,
                kind,
                expected,
            } => Reject {
                source,
                line,
                reason: missing_key_reason(&column, kind),
                column: Some(column),
                value: None,
                expected: Some(expected.name().to_string()),
                record,
            },
            Problem::Malformed {
                format,
                problem,
                raw,
            } => Reject {
                source,
                line,
                reason: format!("not valid {}: {problem}", format.label()),
                column: None,
                value: Some(raw),
                expected: None,
                record,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Position;

    #[test]
    fn errors_and_rejects_give_the_same_reason() {
        let problem = Problem::BadValue {
            column: "value".into(),
            value: "abc".into(),
            expected: CqlType::Double,
        };
        let at = Location::at("readings.csv", Position::Line(17));
        let reject = problem.clone().into_reject(&at, Map::new());
        let error = problem.into_error(at).to_string();
        assert_eq!(error, format!("readings.csv line 17: {}", reject.reason));
        assert_eq!(reject.line, 17);
        assert_eq!(reject.expected.as_deref(), Some("double"));
    }
}
