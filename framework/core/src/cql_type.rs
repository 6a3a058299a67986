//! CQL column types and the one Arrow type each maps to.
//!
//! | CQL                      | Arrow                         | notes                                   |
//! |--------------------------|-------------------------------|-----------------------------------------|
//! | `boolean`                | `Boolean`                     |                                         |
//! | `tinyint`                | `Int8`                        |                                         |
//! | `smallint`               | `Int16`                       |                                         |
//! | `int`                    | `Int32`                       |                                         |
//! | `bigint`                 | `Int64`                       |                                         |
//! | `float`                  | `Float32`                     |                                         |
//! | `double`                 | `Float64`                     |                                         |
//! | `decimal`                | `Decimal128(38, 10)`          | at most 28 integer and 10 fraction digits |
//! | `text`, `varchar`, `ascii` | `Utf8`                      | `ascii` values are checked to be ASCII  |
//! | `blob`                   | `Binary`                      |                                         |
//! | `timestamp`              | `Timestamp(Millisecond, UTC)` | milliseconds since the epoch, as CQL    |
//! | `date`                   | `Date32`                      | days since the epoch                    |
//! | `time`                   | `Time64(Nanosecond)`          | nanoseconds since midnight, as CQL      |
//! | `uuid`, `timeuuid`       | `Utf8`                        | canonical lowercase `8-4-4-4-12` text   |
//! | `inet`                   | `Utf8`                        | canonical IPv4 or IPv6 text             |
//!
//! Every Arrow field Quarry produces for a column carries its CQL type in the field metadata under
//! [`CQL_TYPE_METADATA_KEY`], so `token()` hashes a `uuid` as 16 bytes and not as text.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Field-metadata key under which a column's CQL type name is kept.
pub const CQL_TYPE_METADATA_KEY: &str = "quarry.cql_type";

/// Precision and scale of the Arrow decimal that holds a CQL `decimal`.
pub const DECIMAL_PRECISION: u8 = 38;
pub const DECIMAL_SCALE: i8 = 10;

/// The time zone of CQL `timestamp` values (they are instants, stored as UTC milliseconds).
pub const TIMESTAMP_TZ: &str = "UTC";

/// A CQL column type supported by Quarry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum CqlType {
    Boolean,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Float,
    Double,
    Decimal,
    Text,
    Ascii,
    Blob,
    Timestamp,
    Date,
    Time,
    Uuid,
    TimeUuid,
    Inet,
}

impl CqlType {
    /// Every supported type, in the order the docs list them.
    pub const ALL: [CqlType; 17] = [
        CqlType::Boolean,
        CqlType::TinyInt,
        CqlType::SmallInt,
        CqlType::Int,
        CqlType::BigInt,
        CqlType::Float,
        CqlType::Double,
        CqlType::Decimal,
        CqlType::Text,
        CqlType::Ascii,
        CqlType::Blob,
        CqlType::Timestamp,
        CqlType::Date,
        CqlType::Time,
        CqlType::Uuid,
        CqlType::TimeUuid,
        CqlType::Inet,
    ];

    /// The CQL name, as `DESCRIBE` prints it.
    pub fn name(self) -> &'static str {
        match self {
            CqlType::Boolean => "boolean",
            CqlType::TinyInt => "tinyint",
            CqlType::SmallInt => "smallint",
            CqlType::Int => "int",
            CqlType::BigInt => "bigint",
            CqlType::Float => "float",
            CqlType::Double => "double",
            CqlType::Decimal => "decimal",
            CqlType::Text => "text",
            CqlType::Ascii => "ascii",
            CqlType::Blob => "blob",
            CqlType::Timestamp => "timestamp",
            CqlType::Date => "date",
            CqlType::Time => "time",
            CqlType::Uuid => "uuid",
            CqlType::TimeUuid => "timeuuid",
            CqlType::Inet => "inet",
        }
    }

    /// The Arrow type that holds values of this CQL type (see the module table).
    pub fn arrow_type(self) -> DataType {
        match self {
            CqlType::Boolean => DataType::Boolean,
            CqlType::TinyInt => DataType::Int8,
            CqlType::SmallInt => DataType::Int16,
            CqlType::Int => DataType::Int32,
            CqlType::BigInt => DataType::Int64,
            CqlType::Float => DataType::Float32,
            CqlType::Double => DataType::Float64,
            CqlType::Decimal => DataType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
            CqlType::Text | CqlType::Ascii | CqlType::Uuid | CqlType::TimeUuid | CqlType::Inet => {
                DataType::Utf8
            }
            CqlType::Blob => DataType::Binary,
            CqlType::Timestamp => {
                DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from(TIMESTAMP_TZ)))
            }
            CqlType::Date => DataType::Date32,
            CqlType::Time => DataType::Time64(TimeUnit::Nanosecond),
        }
    }

    /// The CQL type an Arrow type stands for when no metadata says otherwise (for example the
    /// argument of `token(42)`).
    pub fn from_arrow(data_type: &DataType) -> Option<CqlType> {
        Some(match data_type {
            DataType::Boolean => CqlType::Boolean,
            DataType::Int8 => CqlType::TinyInt,
            DataType::Int16 => CqlType::SmallInt,
            DataType::Int32 => CqlType::Int,
            DataType::Int64 => CqlType::BigInt,
            DataType::Float32 => CqlType::Float,
            DataType::Float64 => CqlType::Double,
            DataType::Decimal128(_, _) => CqlType::Decimal,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => CqlType::Text,
            DataType::Binary | DataType::BinaryView | DataType::LargeBinary => CqlType::Blob,
            DataType::Timestamp(TimeUnit::Millisecond, _) => CqlType::Timestamp,
            DataType::Date32 => CqlType::Date,
            DataType::Time64(TimeUnit::Nanosecond) => CqlType::Time,
            _ => return None,
        })
    }

    fn supported_list() -> String {
        let mut names: Vec<&str> = Self::ALL.iter().map(|t| t.name()).collect();
        names.push("varchar");
        names.join(", ")
    }
}

impl fmt::Display for CqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CqlType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        if lower == "varchar" {
            return Ok(CqlType::Text);
        }
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.name() == lower)
            .ok_or_else(|| Error::UnknownType {
                name: s.to_string(),
                supported: Self::supported_list(),
            })
    }
}

impl From<CqlType> for String {
    fn from(t: CqlType) -> String {
        t.name().to_string()
    }
}

impl TryFrom<String> for CqlType {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_resolve() {
        for t in CqlType::ALL {
            assert_eq!(t.name().parse::<CqlType>().unwrap(), t);
            assert_eq!(t.to_string().to_uppercase().parse::<CqlType>().unwrap(), t);
        }
        assert_eq!("VARCHAR".parse::<CqlType>().unwrap(), CqlType::Text);
    }

    #[test]
    fn unknown_types_name_the_alternatives() {
        let err = "varint2".parse::<CqlType>().unwrap_err().to_string();
        assert!(err.contains("'varint2'"), "{err}");
        assert!(err.contains("bigint"), "{err}");
    }

    #[test]
    fn arrow_types_map_back_for_unambiguous_types() {
        for t in [
            CqlType::Boolean,
            CqlType::BigInt,
            CqlType::Int,
            CqlType::Double,
            CqlType::Timestamp,
            CqlType::Date,
            CqlType::Time,
            CqlType::Blob,
            CqlType::Text,
        ] {
            assert_eq!(CqlType::from_arrow(&t.arrow_type()), Some(t));
        }
    }
}

/// The canonical text of a value of a CQL type that Quarry holds as text, or why the text is not
/// such a value: uuids become lowercase and hyphenated, `timeuuid`s must be version 1, addresses
/// are printed the standard way, `ascii` must be ASCII. Other types are returned unchanged.
pub fn canonical_text(
    cql_type: CqlType,
    text: &str,
) -> std::result::Result<std::borrow::Cow<'_, str>, String> {
    use std::borrow::Cow;
    let canonical = match cql_type {
        CqlType::Uuid | CqlType::TimeUuid => {
            let uuid = uuid::Uuid::try_parse(text).map_err(|_| "is not a uuid".to_string())?;
            if cql_type == CqlType::TimeUuid && uuid.get_version_num() != 1 {
                return Err("is not a time-based (version 1) uuid".into());
            }
            uuid.hyphenated().to_string()
        }
        CqlType::Inet => text
            .parse::<std::net::IpAddr>()
            .map_err(|_| "is not an IPv4 or IPv6 address".to_string())?
            .to_string(),
        CqlType::Ascii if !text.is_ascii() => return Err("is not ASCII".into()),
        _ => return Ok(Cow::Borrowed(text)),
    };
    Ok(if canonical == text {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(canonical)
    })
}

#[cfg(test)]
mod canonical_text_tests {
    use super::*;

    #[test]
    fn text_held_types_are_checked_and_normalised() {
        let u = "9B2E5F1A-0C3D-4E5F-8A9B-0C1D2E3F4A5B";
        assert_eq!(
            canonical_text(CqlType::Uuid, u).unwrap(),
            "9b2e5f1a-0c3d-4e5f-8a9b-0c1d2e3f4a5b"
        );
        assert!(canonical_text(CqlType::Uuid, "nope").is_err());
        assert!(canonical_text(CqlType::TimeUuid, u).is_err());
        assert_eq!(
            canonical_text(CqlType::Inet, "0:0:0:0:0:0:0:1").unwrap(),
            "::1"
        );
        assert!(canonical_text(CqlType::Ascii, "héllo").is_err());
        assert_eq!(canonical_text(CqlType::Text, "héllo").unwrap(), "héllo");
    }
}
