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
//! | `decimal`                | `Decimal128(38, 6)`           | at most 32 integer and 6 fraction digits; see below |
//! | `decimal(p, s)`          | `Decimal128(p, s)`            | a Quarry extension; `decimal` to CQL    |
//! | `text`, `varchar`, `ascii` | `Utf8`                      | `ascii` values are checked to be ASCII  |
//! | `blob`                   | `Binary`                      |                                         |
//! | `timestamp`              | `Timestamp(Millisecond, UTC)` | milliseconds since the epoch, as CQL    |
//! | `date`                   | `Date32`                      | days since the epoch                    |
//! | `time`                   | `Time64(Nanosecond)`          | nanoseconds since midnight, as CQL      |
//! | `uuid`, `timeuuid`       | `Utf8`                        | canonical lowercase `8-4-4-4-12` text   |
//! | `inet`                   | `Utf8`                        | canonical IPv4 or IPv6 text             |
//! | `list<T>`                | `List(T)`                     | elements never NULL                     |
//! | `set<T>`                 | `List(T)`                     | elements sorted and distinct            |
//! | `map<K, V>`              | `Map(K, V)`                   | keys sorted and distinct; values never NULL |
//!
//! Collections hold the types above (`frozen<...>` reads as the collection it freezes). Their
//! elements are never collections themselves, and a decimal element is plain `decimal`: nested
//! collections, tuples and user-defined types are refused, naming the type. Keeping elements to
//! the native types keeps `CqlType` a small `Copy` value that every codec matches on.
//!
//! Decimals are fixed-point: a column holds every value at its scale, so `1.5` and `1.50` are one
//! value. Plain `decimal` is `decimal(38, 6)`: six fraction digits keep cents and most rates
//! exactly, and leave room for arithmetic, whose scales add up (`price * (1 - discount) * (1 +
//! tax)` has scale 18 and 20 integer digits, enough to sum a billion rows of prices up to a
//! million). `decimal(p, s)` declares a narrower column (TPC-H's money is `decimal(15, 2)`); on a
//! CQL cluster the column is a CQL `decimal`, which holds any such value.
//!
//! Every Arrow field Quarry produces for a column carries its CQL type in the field metadata under
//! [`CQL_TYPE_METADATA_KEY`], so `token()` hashes a `uuid` as 16 bytes and not as text.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Field-metadata key under which a column's CQL type name is kept.
pub const CQL_TYPE_METADATA_KEY: &str = "quarry.cql_type";

/// Field names of a `map<K, V>` column's Arrow type (Arrow's own `MapBuilder` names).
pub const MAP_ENTRIES: &str = "entries";
pub const MAP_KEYS: &str = "keys";
pub const MAP_VALUES: &str = "values";

/// The largest precision of a decimal column (Arrow's `Decimal128`).
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// Precision and scale of plain `decimal` (see the module docs for why).
pub const DEFAULT_DECIMAL_PRECISION: u8 = 38;
pub const DEFAULT_DECIMAL_SCALE: i8 = 6;

/// Precision and scale that a catalog written before `decimal(p, s)` existed means by `decimal`:
/// its files hold `Decimal128(38, 10)`.
const LEGACY_DECIMAL_PRECISION: u8 = 38;
const LEGACY_DECIMAL_SCALE: i8 = 10;

/// The time zone of CQL `timestamp` values (they are instants, stored as UTC milliseconds).
pub const TIMESTAMP_TZ: &str = "UTC";

/// A CQL column type supported by Quarry.
///
/// In a catalog it is kept as its full name (`decimal(15,2)`); see [`CqlType::catalog_name`].
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
    /// A fixed-point number held as `Decimal128(precision, scale)`; build it with
    /// [`CqlType::decimal`], which checks the bounds.
    Decimal {
        precision: u8,
        scale: i8,
    },
    Text,
    Ascii,
    Blob,
    Timestamp,
    Date,
    Time,
    Uuid,
    TimeUuid,
    Inet,
    /// `list<T>`: build it with [`CqlType::list`], which checks that `T` can be an element.
    List(&'static CqlType),
    /// `set<T>`, held as a list whose elements are sorted and distinct.
    Set(&'static CqlType),
    /// `map<K, V>`, whose keys are sorted and distinct.
    Map(&'static CqlType, &'static CqlType),
}

/// The types a collection can hold, one `'static` value each, so that a collection type stays
/// `Copy`.
static ELEMENT_TYPES: [CqlType; 17] = CqlType::ALL;

/// The `'static` form of `t` as a collection's element, or why it cannot be one.
fn element(t: CqlType) -> Result<&'static CqlType> {
    if let Some(found) = ELEMENT_TYPES.iter().find(|e| **e == t) {
        return Ok(found);
    }
    Err(Error::definition(match t {
        CqlType::Decimal { .. } => {
            format!("a collection holds plain decimal, not {t}; declare the element as decimal")
        }
        _ => format!(
            "a collection cannot hold {t}: elements are native types (collections of \
             collections, tuples and user-defined types are not supported)"
        ),
    }))
}

impl CqlType {
    /// Plain `decimal`: `decimal(38, 6)`.
    pub const DECIMAL: CqlType = CqlType::Decimal {
        precision: DEFAULT_DECIMAL_PRECISION,
        scale: DEFAULT_DECIMAL_SCALE,
    };

    /// `decimal(precision, scale)`, or why it cannot be a column type.
    pub fn decimal(precision: u8, scale: i8) -> Result<CqlType> {
        if precision == 0 || precision > MAX_DECIMAL_PRECISION {
            return Err(Error::definition(format!(
                "decimal({precision}, {scale}) has precision {precision}; precision is the number \
                 of digits, from 1 to {MAX_DECIMAL_PRECISION}"
            )));
        }
        if scale < 0 || scale as u8 > precision {
            return Err(Error::definition(format!(
                "decimal({precision}, {scale}) has scale {scale}; scale is the number of fraction \
                 digits, from 0 to the precision ({precision})"
            )));
        }
        Ok(CqlType::Decimal { precision, scale })
    }

    /// `list<element>`, or why `element` cannot be one.
    pub fn list(element_type: CqlType) -> Result<CqlType> {
        Ok(CqlType::List(element(element_type)?))
    }

    /// `set<element>`, or why `element` cannot be one.
    pub fn set(element_type: CqlType) -> Result<CqlType> {
        Ok(CqlType::Set(element(element_type)?))
    }

    /// `map<key, value>`, or why one of them cannot be in a map.
    pub fn map(key: CqlType, value: CqlType) -> Result<CqlType> {
        Ok(CqlType::Map(element(key)?, element(value)?))
    }

    /// Whether this is a list, set or map.
    pub fn is_collection(self) -> bool {
        matches!(self, CqlType::List(_) | CqlType::Set(_) | CqlType::Map(..))
    }

    /// Every native (non-collection) type, in the order the docs list them.
    pub const ALL: [CqlType; 17] = [
        CqlType::Boolean,
        CqlType::TinyInt,
        CqlType::SmallInt,
        CqlType::Int,
        CqlType::BigInt,
        CqlType::Float,
        CqlType::Double,
        CqlType::DECIMAL,
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

    /// The CQL name of the type's kind (`decimal` for every decimal); `Display` gives the full
    /// type as `DESCRIBE` prints it.
    pub fn name(self) -> &'static str {
        match self {
            CqlType::Boolean => "boolean",
            CqlType::TinyInt => "tinyint",
            CqlType::SmallInt => "smallint",
            CqlType::Int => "int",
            CqlType::BigInt => "bigint",
            CqlType::Float => "float",
            CqlType::Double => "double",
            CqlType::Decimal { .. } => "decimal",
            CqlType::Text => "text",
            CqlType::Ascii => "ascii",
            CqlType::Blob => "blob",
            CqlType::Timestamp => "timestamp",
            CqlType::Date => "date",
            CqlType::Time => "time",
            CqlType::Uuid => "uuid",
            CqlType::TimeUuid => "timeuuid",
            CqlType::Inet => "inet",
            CqlType::List(_) => "list",
            CqlType::Set(_) => "set",
            CqlType::Map(..) => "map",
        }
    }

    /// The type as a CQL cluster's schema names it (`system_schema.columns.type`, DDL sent to a
    /// cluster): decimals are plain `decimal`, whose values carry their own scale.
    pub fn cql_name(self) -> String {
        match self {
            CqlType::List(e) => format!("list<{}>", e.cql_name()),
            CqlType::Set(e) => format!("set<{}>", e.cql_name()),
            CqlType::Map(k, v) => format!("map<{}, {}>", k.cql_name(), v.cql_name()),
            other => other.name().to_string(),
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
            CqlType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            CqlType::Text | CqlType::Ascii | CqlType::Uuid | CqlType::TimeUuid | CqlType::Inet => {
                DataType::Utf8
            }
            CqlType::Blob => DataType::Binary,
            CqlType::Timestamp => {
                DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from(TIMESTAMP_TZ)))
            }
            CqlType::Date => DataType::Date32,
            CqlType::Time => DataType::Time64(TimeUnit::Nanosecond),
            CqlType::List(e) | CqlType::Set(e) => {
                DataType::List(Arc::new(Field::new_list_field(e.arrow_type(), true)))
            }
            CqlType::Map(k, v) => DataType::Map(
                Arc::new(Field::new(
                    MAP_ENTRIES,
                    DataType::Struct(Fields::from(vec![
                        Field::new(MAP_KEYS, k.arrow_type(), false),
                        Field::new(MAP_VALUES, v.arrow_type(), true),
                    ])),
                    false,
                )),
                false,
            ),
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
            DataType::Decimal128(precision, scale) => CqlType::decimal(*precision, *scale).ok()?,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => CqlType::Text,
            DataType::Binary | DataType::BinaryView | DataType::LargeBinary => CqlType::Blob,
            DataType::Timestamp(TimeUnit::Millisecond, _) => CqlType::Timestamp,
            DataType::Date32 => CqlType::Date,
            DataType::Time64(TimeUnit::Nanosecond) => CqlType::Time,
            DataType::List(f) | DataType::LargeList(f) => {
                CqlType::list(CqlType::from_arrow(f.data_type())?).ok()?
            }
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(fields) if fields.len() == 2 => CqlType::map(
                    CqlType::from_arrow(fields[0].data_type())?,
                    CqlType::from_arrow(fields[1].data_type())?,
                )
                .ok()?,
                _ => return None,
            },
            _ => return None,
        })
    }

    /// The supported type names, for an error message.
    pub fn supported_list() -> String {
        let mut names: Vec<&str> = Self::ALL.iter().map(|t| t.name()).collect();
        names.insert(
            names.iter().position(|n| *n == "decimal").unwrap_or(0) + 1,
            "decimal(p, s)",
        );
        names.push("varchar");
        names.extend(["list<T>", "set<T>", "map<K, V>"]);
        names.join(", ")
    }

    /// The name a catalog keeps: as `Display`, but decimals always with precision and scale, so
    /// that the meaning of plain `decimal` can change without changing stored tables.
    pub fn catalog_name(self) -> String {
        match self {
            CqlType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            CqlType::List(e) => format!("list<{}>", e.catalog_name()),
            CqlType::Set(e) => format!("set<{}>", e.catalog_name()),
            CqlType::Map(k, v) => format!("map<{},{}>", k.catalog_name(), v.catalog_name()),
            other => other.to_string(),
        }
    }

    /// Reads a type name as a catalog keeps it. Catalogs written before `decimal(p, s)` existed
    /// say plain `decimal` for what is held as `Decimal128(38, 10)`.
    fn from_catalog_name(name: &str) -> Result<CqlType> {
        if name.trim().eq_ignore_ascii_case("decimal") {
            return Ok(CqlType::Decimal {
                precision: LEGACY_DECIMAL_PRECISION,
                scale: LEGACY_DECIMAL_SCALE,
            });
        }
        name.parse()
    }
}

impl fmt::Display for CqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CqlType::DECIMAL => f.write_str("decimal"),
            CqlType::Decimal { precision, scale } => write!(f, "decimal({precision}, {scale})"),
            CqlType::List(e) => write!(f, "list<{e}>"),
            CqlType::Set(e) => write!(f, "set<{e}>"),
            CqlType::Map(k, v) => write!(f, "map<{k}, {v}>"),
            other => f.write_str(other.name()),
        }
    }
}

/// `decimal(p, s)` or `decimal(p)` (scale 0), spaces allowed; `None` when `text` is not of that
/// shape at all.
fn parse_decimal_parameters(text: &str) -> Option<Result<CqlType>> {
    let rest = text.strip_prefix("decimal")?.trim_start();
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    let mut parts = inner.split(',').map(str::trim);
    let (precision, scale) = (parts.next()?, parts.next().unwrap_or("0"));
    if parts.next().is_some() {
        return None;
    }
    let number = |what: &str, digits: &str| {
        digits.parse::<u8>().map_err(|_| {
            Error::definition(format!(
                "'{text}' has {what} '{digits}', which is not a whole number from 0 to \
                 {MAX_DECIMAL_PRECISION}"
            ))
        })
    };
    Some((|| {
        let precision = number("precision", precision)?;
        let scale = number("scale", scale)?;
        CqlType::decimal(precision, i8::try_from(scale).unwrap_or(i8::MAX))
    })())
}

/// `list<T>`, `set<T>`, `map<K, V>` or `frozen<...>` of one of them, spaces allowed; `None` when
/// `text` is not of that shape at all.
fn parse_collection(text: &str) -> Option<Result<CqlType>> {
    let open = text.find('<')?;
    let kind = text[..open].trim().to_ascii_lowercase();
    let inner = text[open + 1..].trim_end().strip_suffix('>')?;
    let parse = |part: &str| -> Result<CqlType> {
        let t: CqlType = part.trim().parse()?;
        if t.is_collection() {
            return Err(Error::definition(format!(
                "'{text}' nests {t}; collections of collections are not supported"
            )));
        }
        Ok(t)
    };
    Some(match kind.as_str() {
        "frozen" => inner.parse::<CqlType>().and_then(|t| {
            if t.is_collection() {
                Ok(t)
            } else {
                Err(Error::definition(format!(
                    "'{text}' freezes {t}; Quarry reads frozen lists, sets and maps only"
                )))
            }
        }),
        "list" => parse(inner).and_then(CqlType::list),
        "set" => parse(inner).and_then(CqlType::set),
        "map" => match split_top_level_comma(inner) {
            Some((k, v)) => parse(k).and_then(|k| CqlType::map(k, parse(v)?)),
            None => Err(Error::definition(format!(
                "'{text}' needs a key and a value type: map<K, V>"
            ))),
        },
        _ => return None,
    })
}

/// `K, V` split at the comma outside any `<...>` or `(...)`.
fn split_top_level_comma(text: &str) -> Option<(&str, &str)> {
    let mut depth = 0i32;
    for (i, c) in text.char_indices() {
        match c {
            '<' | '(' => depth += 1,
            '>' | ')' => depth -= 1,
            ',' if depth == 0 => return Some((&text[..i], &text[i + 1..])),
            _ => {}
        }
    }
    None
}

impl FromStr for CqlType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        if lower == "varchar" {
            return Ok(CqlType::Text);
        }
        if let Some(decimal) = parse_decimal_parameters(&lower) {
            return decimal;
        }
        if let Some(collection) = parse_collection(s.trim()) {
            return collection;
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

/// The catalog's form (serde): see [`CqlType::catalog_name`].
impl From<CqlType> for String {
    fn from(t: CqlType) -> String {
        t.catalog_name()
    }
}

/// The catalog's form (serde): see [`CqlType::catalog_name`].
impl TryFrom<String> for CqlType {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        CqlType::from_catalog_name(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_resolve() {
        for t in CqlType::ALL {
            assert_eq!(t.to_string().parse::<CqlType>().unwrap(), t);
            assert_eq!(t.to_string().to_uppercase().parse::<CqlType>().unwrap(), t);
            assert_eq!(CqlType::from_catalog_name(&t.catalog_name()).unwrap(), t);
        }
        assert_eq!("VARCHAR".parse::<CqlType>().unwrap(), CqlType::Text);
    }

    #[test]
    fn decimals_take_precision_and_scale() {
        let money = "decimal(15, 2)".parse::<CqlType>().unwrap();
        assert_eq!(money, CqlType::decimal(15, 2).unwrap());
        assert_eq!(money.arrow_type(), DataType::Decimal128(15, 2));
        assert_eq!(money.to_string(), "decimal(15, 2)");
        assert_eq!(
            "DECIMAL(9)".parse::<CqlType>().unwrap().arrow_type(),
            DataType::Decimal128(9, 0)
        );
        assert_eq!(
            "decimal".parse::<CqlType>().unwrap().arrow_type(),
            DataType::Decimal128(38, 6)
        );
        assert_eq!(CqlType::DECIMAL.to_string(), "decimal");
        assert_eq!(CqlType::DECIMAL.catalog_name(), "decimal(38,6)");
        for bad in [
            "decimal(0, 0)",
            "decimal(39, 2)",
            "decimal(5, 6)",
            "decimal(10, x)",
        ] {
            let err = bad.parse::<CqlType>().unwrap_err().to_string();
            assert!(
                err.contains(bad.trim_start_matches("decimal")) || err.contains("decimal("),
                "{err}"
            );
        }
    }

    #[test]
    fn catalogs_from_before_decimal_parameters_keep_their_scale() {
        let old: CqlType = serde_json::from_str("\"decimal\"").unwrap();
        assert_eq!(old.arrow_type(), DataType::Decimal128(38, 10));
        let new: CqlType =
            serde_json::from_str(&serde_json::to_string(&CqlType::DECIMAL).unwrap()).unwrap();
        assert_eq!(new, CqlType::DECIMAL);
    }

    #[test]
    fn unknown_types_name_the_alternatives() {
        let err = "varint2".parse::<CqlType>().unwrap_err().to_string();
        assert!(err.contains("'varint2'"), "{err}");
        assert!(err.contains("bigint"), "{err}");
    }

    #[test]
    fn collections_parse_print_and_map_to_arrow() {
        let err = "MAP<text, frozen<list<int>>>"
            .parse::<CqlType>()
            .unwrap_err();
        assert!(
            err.to_string().contains("collections of collections"),
            "{err}"
        );

        let map: CqlType = "map< text , decimal >".parse().unwrap();
        assert_eq!(map, CqlType::map(CqlType::Text, CqlType::DECIMAL).unwrap());
        assert_eq!(map.to_string(), "map<text, decimal>");
        assert_eq!(map.cql_name(), "map<text, decimal>");
        assert_eq!(
            CqlType::from_catalog_name(&map.catalog_name()).unwrap(),
            map
        );
        let DataType::Map(entries, false) = map.arrow_type() else {
            panic!("{}", map.arrow_type())
        };
        assert_eq!(entries.name(), MAP_ENTRIES);
        assert_eq!(CqlType::from_arrow(&map.arrow_type()), Some(map));

        let set: CqlType = "frozen<set<uuid>>".parse().unwrap();
        assert_eq!(set, CqlType::set(CqlType::Uuid).unwrap());
        assert_eq!(
            set.arrow_type(),
            CqlType::list(CqlType::Text).unwrap().arrow_type()
        );
        assert_eq!(
            serde_json::from_str::<CqlType>(&serde_json::to_string(&set).unwrap()).unwrap(),
            set
        );

        let list = CqlType::list(CqlType::Int).unwrap();
        assert_eq!(list.to_string().parse::<CqlType>().unwrap(), list);
        assert!(list.is_collection() && !CqlType::Int.is_collection());

        for (bad, says) in [
            ("list<decimal(15, 2)>", "plain decimal"),
            ("set<list<int>>", "collections of collections"),
            ("map<int>", "a key and a value"),
            ("frozen<int>", "frozen lists, sets and maps"),
            ("list<varint>", "'varint'"),
        ] {
            let err = bad.parse::<CqlType>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
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
