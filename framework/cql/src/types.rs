//! Column types on the wire, and literals turned into serialized values.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::compute::cast;
use quarry_core::cql_type::CqlType;
use quarry_core::cql_value::{CellDecoder, CellEncoder, decimal_cell};

use crate::parse::Literal;
use crate::wire::Body;

/// The type of a result column or bind marker: a table's CQL type, or a collection (which only
/// the system tables have).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Cql(CqlType),
    List(Box<ColumnType>),
    Set(Box<ColumnType>),
    Map(Box<ColumnType>, Box<ColumnType>),
}

pub const TEXT: ColumnType = ColumnType::Cql(CqlType::Text);

impl ColumnType {
    pub fn set_of(t: ColumnType) -> ColumnType {
        ColumnType::Set(Box::new(t))
    }

    pub fn map_of(k: ColumnType, v: ColumnType) -> ColumnType {
        ColumnType::Map(Box::new(k), Box::new(v))
    }

    /// Writes the type as an `[option]`.
    pub fn write(&self, body: &mut Body) {
        match self {
            ColumnType::Cql(t) => {
                body.short(match t {
                    CqlType::Ascii => 0x0001,
                    CqlType::BigInt => 0x0002,
                    CqlType::Blob => 0x0003,
                    CqlType::Boolean => 0x0004,
                    CqlType::Decimal { .. } => 0x0006,
                    CqlType::Double => 0x0007,
                    CqlType::Float => 0x0008,
                    CqlType::Int => 0x0009,
                    CqlType::Timestamp => 0x000B,
                    CqlType::Uuid => 0x000C,
                    CqlType::Text => 0x000D,
                    CqlType::TimeUuid => 0x000F,
                    CqlType::Inet => 0x0010,
                    CqlType::Date => 0x0011,
                    CqlType::Time => 0x0012,
                    CqlType::SmallInt => 0x0013,
                    CqlType::TinyInt => 0x0014,
                });
            }
            ColumnType::List(t) => {
                body.short(0x0020);
                t.write(body);
            }
            ColumnType::Set(t) => {
                body.short(0x0022);
                t.write(body);
            }
            ColumnType::Map(k, v) => {
                body.short(0x0021);
                k.write(body);
                v.write(body);
            }
        }
    }

    /// The type as a CQL schema names it (`system_schema.columns.type`).
    pub fn cql_name(&self) -> String {
        match self {
            // The cluster's schema says `decimal`: precision and scale are Quarry's own.
            ColumnType::Cql(t) => t.name().to_string(),
            ColumnType::List(t) => format!("list<{}>", t.cql_name()),
            ColumnType::Set(t) => format!("set<{}>", t.cql_name()),
            ColumnType::Map(k, v) => format!("map<{}, {}>", k.cql_name(), v.cql_name()),
        }
    }
}

/// A serialized list or set of serialized elements: the count, then each element.
pub fn collection_cell(elements: &[&[u8]]) -> Vec<u8> {
    entries_cell(elements.len(), elements)
}

/// A serialized map: the number of entries, then each key and value.
pub fn map_cell(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let flat: Vec<&[u8]> = entries.iter().flat_map(|(k, v)| [*k, *v]).collect();
    entries_cell(entries.len(), &flat)
}

fn entries_cell(count: usize, elements: &[&[u8]]) -> Vec<u8> {
    let mut out = (count as i32).to_be_bytes().to_vec();
    for e in elements {
        out.extend_from_slice(&(e.len() as i32).to_be_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// The elements of a serialized list or set.
pub fn collection_elements(cell: &[u8]) -> Result<Vec<Option<Vec<u8>>>, String> {
    let mut r = crate::wire::Reader::new(cell);
    let n = r.int().map_err(|e| e.0)?;
    (0..n.max(0)).map(|_| r.bytes().map_err(|e| e.0)).collect()
}

/// The serialized value of a literal for a column of type `t`; `None` is null.
pub fn literal_cell(literal: &Literal, t: CqlType) -> Result<Option<Vec<u8>>, String> {
    let wrong = |shown: &str| format!("{shown} is not a valid CQL {t} value");
    Ok(Some(match (literal, t) {
        (Literal::Null, _) => return Ok(None),
        (Literal::Bool(b), CqlType::Boolean) => vec![u8::from(*b)],
        (Literal::Num(n), CqlType::TinyInt) => i8::try_from(int(n, t)?)
            .map_err(|_| wrong(n))?
            .to_be_bytes()
            .to_vec(),
        (Literal::Num(n), CqlType::SmallInt) => i16::try_from(int(n, t)?)
            .map_err(|_| wrong(n))?
            .to_be_bytes()
            .to_vec(),
        (Literal::Num(n), CqlType::Int) => i32::try_from(int(n, t)?)
            .map_err(|_| wrong(n))?
            .to_be_bytes()
            .to_vec(),
        (Literal::Num(n), CqlType::BigInt | CqlType::Timestamp) => {
            int(n, t)?.to_be_bytes().to_vec()
        }
        (Literal::Num(n), CqlType::Float) => float(n, t)?
            .parse::<f32>()
            .map_err(|_| wrong(n))?
            .to_bits()
            .to_be_bytes()
            .to_vec(),
        (Literal::Num(n), CqlType::Double) => float(n, t)?
            .parse::<f64>()
            .map_err(|_| wrong(n))?
            .to_bits()
            .to_be_bytes()
            .to_vec(),
        (Literal::Num(n), CqlType::Decimal { .. }) => {
            let (unscaled, scale) = decimal(n).ok_or_else(|| wrong(n))?;
            decimal_cell(unscaled, scale)
        }
        (Literal::Str(s), CqlType::Text | CqlType::Ascii) => {
            if t == CqlType::Ascii && !s.is_ascii() {
                return Err(format!("'{s}' is not ASCII"));
            }
            s.as_bytes().to_vec()
        }
        (Literal::Str(s) | Literal::Uuid(s), CqlType::Uuid | CqlType::TimeUuid | CqlType::Inet) => {
            encode_text_held(s, t)?
        }
        (Literal::Str(s), CqlType::Timestamp | CqlType::Date | CqlType::Time) => {
            let text: ArrayRef = Arc::new(StringArray::from(vec![s.as_str()]));
            let value = cast(&text, &t.arrow_type())
                .ok()
                .filter(|a| a.null_count() == 0)
                .ok_or_else(|| {
                    format!(
                        "'{s}' is not a CQL {t}; write it as {}",
                        match t {
                            CqlType::Timestamp => "'2026-01-31 12:00:00+0000' or milliseconds",
                            CqlType::Date => "'2026-01-31'",
                            _ => "'12:00:00.000'",
                        }
                    )
                })?;
            encode_one(t, &value)?
        }
        (Literal::Blob(b), CqlType::Blob) => b.clone(),
        (literal, _) => {
            let shown = match literal {
                Literal::Str(s) => format!("'{s}'"),
                Literal::Num(n) | Literal::Uuid(n) => n.clone(),
                Literal::Bool(b) => b.to_string(),
                Literal::Blob(_) => "a blob literal".into(),
                Literal::Null => "null".into(),
            };
            return Err(wrong(&shown));
        }
    }))
}

/// Reads a serialized value back, checking it (a bound value from a client can be anything).
pub fn check_cell(cell: &[u8], t: CqlType) -> Result<(), String> {
    CellDecoder::new(t, 1).push(Some(cell))
}

fn encode_one(t: CqlType, value: &ArrayRef) -> Result<Vec<u8>, String> {
    let encoder = CellEncoder::new(t, value)?;
    let mut out = Vec::new();
    encoder.write(0, &mut out)?;
    Ok(out)
}

fn encode_text_held(s: &str, t: CqlType) -> Result<Vec<u8>, String> {
    let text: ArrayRef = Arc::new(StringArray::from(vec![s]));
    encode_one(t, &text).map_err(|_| format!("'{s}' is not a valid CQL {t} value"))
}

fn int(n: &str, t: CqlType) -> Result<i64, String> {
    n.parse::<i64>()
        .map_err(|_| format!("{n} is not a valid CQL {t} value (a whole number is expected)"))
}

fn float(n: &str, _t: CqlType) -> Result<String, String> {
    Ok(match n.to_ascii_lowercase().as_str() {
        "nan" => "NaN".into(),
        "infinity" => "inf".into(),
        "-infinity" => "-inf".into(),
        _ => n.to_string(),
    })
}

/// `123.45e-1` as (unscaled, scale), exactly.
fn decimal(n: &str) -> Option<(i128, i32)> {
    let (mantissa, exponent) = match n.find(['e', 'E']) {
        Some(i) => (&n[..i], n[i + 1..].parse::<i32>().ok()?),
        None => (n, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let unscaled = digits.parse::<i128>().ok()?;
    Some((unscaled, fraction.len() as i32 - exponent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_become_the_bytes_a_driver_would_send() {
        assert_eq!(
            literal_cell(&Literal::Num("42".into()), CqlType::Int).unwrap(),
            Some(42i32.to_be_bytes().to_vec())
        );
        assert!(literal_cell(&Literal::Num("4000000000".into()), CqlType::Int).is_err());
        assert_eq!(
            literal_cell(&Literal::Num("1.50".into()), CqlType::DECIMAL).unwrap(),
            Some(decimal_cell(150, 2))
        );
        assert_eq!(
            literal_cell(&Literal::Str("1970-01-02".into()), CqlType::Date).unwrap(),
            Some(((1u32 << 31) + 1).to_be_bytes().to_vec())
        );
        assert!(literal_cell(&Literal::Str("soon".into()), CqlType::Timestamp).is_err());
        assert!(literal_cell(&Literal::Str("x".into()), CqlType::Int).is_err());
        assert_eq!(literal_cell(&Literal::Null, CqlType::Int).unwrap(), None);
    }

    #[test]
    fn collections_round_trip() {
        let cell = collection_cell(&[b"a", b"bc"]);
        assert_eq!(
            collection_elements(&cell).unwrap(),
            vec![Some(b"a".to_vec()), Some(b"bc".to_vec())]
        );
    }
}
