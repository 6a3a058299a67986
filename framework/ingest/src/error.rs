//! The error type of `quarry-ingest`, and the [`Location`] every message starts with.
//!
//! Messages are written for the person running `quarry load`: they name the input, the line (or
//! Parquet row), the column, the value and the type that was expected, and say what to change.

use std::fmt;

use arrow::error::ArrowError;
use parquet::errors::ParquetError;
use quarry_core::cql_type::CqlType;

use crate::format::{Format, KNOWN_EXTENSIONS};

/// Where in an input something happened: a 1-based line of a CSV or NDJSON file (the CSV header is
/// line 1), or a 1-based row of a Parquet file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Position {
    Line(u64),
    Row(u64),
}

impl Position {
    /// The line or row number.
    pub fn number(self) -> u64 {
        match self {
            Position::Line(n) | Position::Row(n) => n,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// An input and, when the problem is in one record, where that record is. Displays as
/// `readings.csv` or `readings.csv line 17`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The input's name: its path, or `<stdin>`.
    pub input: String,
    pub position: Option<Position>,
}

impl Location {
    pub fn input(input: impl Into<String>) -> Self {
        Location {
            input: input.into(),
            position: None,
        }
    }

    pub fn at(input: impl Into<String>, position: Position) -> Self {
        Location {
            input: input.into(),
            position: Some(position),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(position) => write!(f, "{} {position}", self.input),
            None => f.write_str(&self.input),
        }
    }
}

/// Which part of the primary key a column belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    PartitionKey,
    Clustering,
}

impl KeyKind {
    /// What every row must therefore have, for the end of a message.
    fn requirement(self) -> &'static str {
        match self {
            KeyKind::PartitionKey => "every row needs a partition key",
            KeyKind::Clustering => "every row needs a value for each clustering column",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::PartitionKey => "partition-key",
            KeyKind::Clustering => "clustering",
        })
    }
}

/// What went wrong while reading an input into a table's schema.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input could not be opened or read.
    #[error("cannot read {input}: {source}")]
    Io {
        input: String,
        #[source]
        source: std::io::Error,
    },

    /// No `--format` was given and the input's name does not tell the format.
    #[error(
        "cannot tell the format of {input}: the known extensions are {}; pass --format csv, \
         --format ndjson or --format parquet",
        KNOWN_EXTENSIONS.join(", ")
    )]
    UnknownFormat { input: String },

    /// A format name that is not one of Quarry's.
    #[error("unknown format '{name}'; the formats are csv, ndjson (or jsonl, json) and parquet")]
    UnknownFormatName { name: String },

    /// A CSV input without even a header row.
    #[error(
        "{input} is empty; a CSV file starts with a header row naming its columns, for example \
         {columns}"
    )]
    MissingHeader { input: String, columns: String },

    /// A CSV header field with no name.
    #[error(
        "{input} line 1: header column {index} has no name; name every column after a column of \
         the table ({columns})"
    )]
    UnnamedColumn {
        input: String,
        /// 1-based position in the header.
        index: usize,
        columns: String,
    },

    /// The input has a column (a CSV header field, an NDJSON key, a Parquet field) that the table
    /// does not.
    #[error("{at}: column '{column}' is not in table {table}; columns are {columns}")]
    UnknownColumn {
        at: Location,
        column: String,
        table: String,
        columns: String,
    },

    /// Two columns of the input name the same table column.
    #[error("{at}: columns '{first}' and '{second}' both name column '{column}'; keep one of them")]
    DuplicateColumn {
        at: Location,
        column: String,
        first: String,
        second: String,
    },

    /// A primary-key column is missing from the input's columns altogether.
    #[error(
        "{input} has no column '{column}', a {kind} column of table {table}; {}: add the column",
        .kind.requirement()
    )]
    MissingKeyColumn {
        input: String,
        column: String,
        kind: KeyKind,
        table: String,
    },

    /// A value that is not a valid value of its column's type.
    #[error(
        "{at}: {}",
        bad_value_reason(.column, .value, *.expected)
    )]
    BadValue {
        at: Location,
        column: String,
        value: String,
        expected: CqlType,
    },

    /// A row without a value for a primary-key column.
    #[error("{at}: {}", missing_key_reason(.column, *.kind))]
    MissingKey {
        at: Location,
        column: String,
        kind: KeyKind,
    },

    /// A record that cannot be read as a row at all (a CSV line with the wrong number of fields,
    /// an NDJSON line that is not a JSON object, bytes that are not UTF-8).
    #[error("{at}: not valid {}: {problem}", .format.label())]
    Malformed {
        at: Location,
        format: Format,
        problem: String,
    },

    /// The Parquet reader failed (not a Parquet file, a corrupt page, an unsupported encoding).
    #[error("cannot read {input} as Parquet: {source}")]
    Parquet {
        input: String,
        #[source]
        source: ParquetError,
    },

    /// An Arrow kernel failed on data that had already been checked; this is Quarry's bug, not
    /// the input's.
    #[error("internal error while reading {input}: {source}; please report this")]
    Arrow {
        input: String,
        #[source]
        source: ArrowError,
    },

    /// An invariant of this crate did not hold; this is Quarry's bug, not the input's.
    #[error(
        "{input} cannot be read as a live stream: Parquet keeps its footer at the end of the \
         file; stream CSV or NDJSON (--format csv|ndjson), or load Parquet files whole"
    )]
    NotStreamable { input: String },
    #[error("internal error while reading {input}: {message}; please report this")]
    Internal { input: String, message: String },
    /// Storing a part of the input's rows failed (see `read_source_in_parts`).
    #[error("storing rows of {input}: {message}")]
    Stored { input: String, message: String },
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the input (or the command line) is at fault and fixing it is the remedy; false
    /// for failures to read the input and for Quarry's own bugs.
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            Error::Io { .. } | Error::Arrow { .. } | Error::Internal { .. } | Error::Stored { .. }
        )
    }

    pub(crate) fn io(input: &str, source: std::io::Error) -> Self {
        Error::Io {
            input: input.to_string(),
            source,
        }
    }

    pub(crate) fn arrow(input: &str, source: ArrowError) -> Self {
        Error::Arrow {
            input: input.to_string(),
            source,
        }
    }

    pub(crate) fn internal(input: &str, message: impl Into<String>) -> Self {
        Error::Internal {
            input: input.to_string(),
            message: message.into(),
        }
    }
}

/// Values longer than this are shortened in messages (never in reject records).
const MAX_SHOWN_VALUE_CHARS: usize = 60;

/// The reason text of a bad value, shared by [`Error::BadValue`] and reject records.
pub(crate) fn bad_value_reason(column: &str, value: &str, expected: CqlType) -> String {
    format!(
        "column '{column}' has '{}', expected {expected}{}",
        shorten(value),
        value_hint(expected)
    )
}

/// The reason text of a missing key value, shared by [`Error::MissingKey`] and reject records.
pub(crate) fn missing_key_reason(column: &str, kind: KeyKind) -> String {
    format!("{kind} column '{column}' is empty; {}", kind.requirement())
}

fn shorten(value: &str) -> String {
    match value.char_indices().nth(MAX_SHOWN_VALUE_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_string(),
    }
}

/// How to write a value of `ty`, for types whose text form is not obvious.
fn value_hint(ty: CqlType) -> std::borrow::Cow<'static, str> {
    let hint = match ty {
        CqlType::Boolean => " (true or false; yes/no and 1/0 work too)",
        CqlType::TinyInt => " (a whole number from -128 to 127)",
        CqlType::SmallInt => " (a whole number from -32768 to 32767)",
        CqlType::Int => " (a whole number from -2147483648 to 2147483647)",
        CqlType::BigInt => " (a whole number that fits in 64 bits)",
        CqlType::Decimal { precision, scale } => {
            return format!(
                " (a number with at most {} integer and {scale} fraction digits)",
                precision as i16 - scale as i16
            )
            .into();
        }
        CqlType::Ascii => " (text of ASCII characters only)",
        CqlType::Blob => " (hex with a 0x prefix, like 0xcafe01)",
        CqlType::Timestamp => {
            " (RFC 3339 like 2024-01-15T10:30:00Z, 'YYYY-MM-DD HH:MM:SS[.fff]' in UTC, or \
             milliseconds since the epoch)"
        }
        CqlType::Date => " (YYYY-MM-DD)",
        CqlType::Time => " (HH:MM:SS[.fffffffff])",
        CqlType::Uuid => " (like 123e4567-e89b-12d3-a456-426614174000)",
        CqlType::TimeUuid => " (a version-1 uuid, like 5b6962dd-3f90-11ee-be56-0242ac120002)",
        CqlType::Inet => " (an IPv4 or IPv6 address)",
        CqlType::List(_) | CqlType::Set(_) => " (a JSON array, like [1, 2])",
        CqlType::Map(..) => " (a JSON object, like {\"key\": 1})",
        CqlType::Float | CqlType::Double | CqlType::Text => "",
    };
    hint.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_read_like_prose() {
        assert_eq!(Location::input("a.csv").to_string(), "a.csv");
        assert_eq!(
            Location::at("a.csv", Position::Line(3)).to_string(),
            "a.csv line 3"
        );
        assert_eq!(
            Location::at("a.parquet", Position::Row(9)).to_string(),
            "a.parquet row 9"
        );
    }

    #[test]
    fn bad_values_name_everything() {
        let err = Error::BadValue {
            at: Location::at("readings.csv", Position::Line(17)),
            column: "value".into(),
            value: "abc".into(),
            expected: CqlType::Double,
        };
        assert_eq!(
            err.to_string(),
            "readings.csv line 17: column 'value' has 'abc', expected double"
        );
        assert!(err.is_user_error());
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(200);
        let reason = bad_value_reason("c", &long, CqlType::Int);
        assert!(reason.contains('…'), "{reason}");
        assert!(reason.len() < 200, "{reason}");
    }

    #[test]
    fn missing_keys_say_why_rows_need_them() {
        let err = Error::MissingKey {
            at: Location::at("readings.csv", Position::Line(9)),
            column: "device_id".into(),
            kind: KeyKind::PartitionKey,
        };
        assert_eq!(
            err.to_string(),
            "readings.csv line 9: partition-key column 'device_id' is empty; every row needs a \
             partition key"
        );
    }

    #[test]
    fn unknown_formats_list_extensions_and_the_flag() {
        let msg = Error::UnknownFormat {
            input: "data.txt".into(),
        }
        .to_string();
        assert!(msg.contains(".csv") && msg.contains(".parquet"), "{msg}");
        assert!(msg.contains("--format"), "{msg}");
    }
}
