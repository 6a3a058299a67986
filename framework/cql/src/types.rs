//! Column types on the wire, and literals turned into serialized values.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::compute::cast;
use quarry_core::cql_type::CqlType;
use quarry_core::cql_value::{CellDecoder, CellEncoder, decimal_cell};

use crate::parse::Literal;
use crate::wire::Body;

pub const TEXT: CqlType = CqlType::Text;

/// A result column's type on the wire: a column type, or a type only system tables hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Column(CqlType),
    /// `frozen<list<frozen<tuple<...>>>>`, as ScyllaDB's `system.tablets` lists a tablet's
    /// replicas: `(host_id uuid, shard int)` pairs.
    TupleList(&'static [CqlType]),
}

impl From<CqlType> for WireType {
    fn from(t: CqlType) -> Self {
        WireType::Column(t)
    }
}

impl WireType {
    /// The type as CQL writes it (`system_schema.columns.type`).
    pub fn cql_name(self) -> String {
        match self {
            WireType::Column(t) => t.cql_name(),
            WireType::TupleList(fields) => {
                let fields: Vec<String> = fields.iter().map(|f| f.cql_name()).collect();
                format!("frozen<list<frozen<tuple<{}>>>>", fields.join(", "))
            }
        }
    }

    /// The column type, for values that are read or written as columns.
    pub fn column(self) -> Result<CqlType, String> {
        match self {
            WireType::Column(t) => Ok(t),
            WireType::TupleList(_) => {
                Err("a list of tuples can be read, not compared or written".into())
            }
        }
    }
}

/// Writes a result column's type as an `[option]`.
pub fn write_wire_type(t: WireType, body: &mut Body) {
    match t {
        WireType::Column(t) => write_type(t, body),
        WireType::TupleList(fields) => {
            body.short(0x0020).short(0x0031).short(fields.len() as u16);
            for f in fields {
                write_type(*f, body);
            }
        }
    }
}

/// Writes a column type as an `[option]`.
pub fn write_type(t: CqlType, body: &mut Body) {
    let id = match t {
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
        CqlType::List(_) => 0x0020,
        CqlType::Map(..) => 0x0021,
        CqlType::Set(_) => 0x0022,
    };
    body.short(id);
    match t {
        CqlType::List(e) | CqlType::Set(e) => write_type(*e, body),
        CqlType::Map(k, v) => {
            write_type(*k, body);
            write_type(*v, body);
        }
        _ => {}
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

/// A serialized tuple of serialized fields (null fields as `None`).
pub fn tuple_cell(fields: &[Option<&[u8]>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        match f {
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
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
        (Literal::List(items), CqlType::List(e)) | (Literal::Set(items), CqlType::Set(e)) => {
            let cells = items
                .iter()
                .map(|item| element_cell(item, *e, t))
                .collect::<Result<Vec<_>, _>>()?;
            collection_cell(&cells.iter().map(Vec::as_slice).collect::<Vec<_>>())
        }
        (Literal::Set(empty), CqlType::Map(..)) if empty.is_empty() => map_cell(&[]),
        (Literal::Map(entries), CqlType::Map(k, v)) => {
            let cells = entries
                .iter()
                .map(|(key, value)| Ok((element_cell(key, *k, t)?, element_cell(value, *v, t)?)))
                .collect::<Result<Vec<_>, String>>()?;
            let pairs: Vec<(&[u8], &[u8])> = cells
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            map_cell(&pairs)
        }
        (literal, _) => {
            let shown = match literal {
                Literal::Str(s) => format!("'{s}'"),
                Literal::Num(n) | Literal::Uuid(n) => n.clone(),
                Literal::Bool(b) => b.to_string(),
                Literal::Blob(_) => "a blob literal".into(),
                Literal::Null => "null".into(),
                Literal::List(_) => "a list literal [...]".into(),
                Literal::Set(_) => "a set literal {...}".into(),
                Literal::Map(_) => "a map literal {...: ...}".into(),
            };
            return Err(wrong(&shown));
        }
    }))
}

/// One element of a collection literal for a `collection` column.
fn element_cell(
    literal: &Literal,
    element: CqlType,
    collection: CqlType,
) -> Result<Vec<u8>, String> {
    literal_cell(literal, element)?
        .ok_or_else(|| format!("a {collection} cannot hold null; leave the element out"))
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
    fn collection_literals_become_collection_cells() {
        let tags = CqlType::map(CqlType::Text, CqlType::Int).unwrap();
        let literal = Literal::Map(vec![(Literal::Str("a".into()), Literal::Num("1".into()))]);
        assert_eq!(
            literal_cell(&literal, tags).unwrap(),
            Some(map_cell(&[(b"a", &1i32.to_be_bytes())]))
        );
        assert_eq!(
            literal_cell(&Literal::Set(vec![]), tags).unwrap(),
            Some(map_cell(&[]))
        );
        let list = CqlType::list(CqlType::BigInt).unwrap();
        let literal = Literal::List(vec![Literal::Num("7".into())]);
        assert_eq!(
            literal_cell(&literal, list).unwrap(),
            Some(collection_cell(&[&7i64.to_be_bytes()]))
        );
        let err = literal_cell(&Literal::List(vec![Literal::Null]), list).unwrap_err();
        assert!(err.contains("cannot hold null"), "{err}");
        let err = literal_cell(&Literal::Set(vec![]), list).unwrap_err();
        assert!(err.contains("set literal"), "{err}");
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
