//! Partition keys in CQL's serialized form, and their tokens.
//!
//! A one-column key is hashed as the column's serialized value. A composite key is hashed as
//! CQL's composite encoding: for each component a 2-byte big-endian length, the bytes, then a
//! `0x00` byte. Per type, the serialized value is:
//!
//! | CQL type | bytes |
//! |---|---|
//! | boolean, tinyint, smallint, int, bigint | big-endian two's complement, 1/1/2/4/8 bytes |
//! | float, double | IEEE 754 bits, big-endian |
//! | decimal | 4-byte scale, then the unscaled value as a minimal big-endian varint (trailing zeros stripped) |
//! | text, ascii | UTF-8 bytes |
//! | blob | the bytes |
//! | timestamp | 8-byte milliseconds since the epoch |
//! | date | 4-byte unsigned days, with the epoch at 2^31 |
//! | time | 8-byte nanoseconds since midnight |
//! | uuid, timeuuid | the 16 bytes |
//! | inet | 4 (IPv4) or 16 (IPv6) bytes |

use std::net::IpAddr;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, StringArray,
    Time64NanosecondArray, TimestampMillisecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};

use crate::cql_type::CqlType;
use crate::error::{Error, Result};
use crate::token::{Token, token_of};

/// One partition-key column: its name (for errors), its CQL type and its values.
#[derive(Debug, Clone)]
pub struct KeyColumn<'a> {
    pub name: &'a str,
    pub cql_type: CqlType,
    pub values: &'a ArrayRef,
}

/// The token of every row, for the given partition-key columns (in key order).
///
/// A NULL in any key column is an error naming the column and the row, as CQL refuses such rows.
pub fn tokens(columns: &[KeyColumn<'_>], num_rows: usize) -> Result<Int64Array> {
    if let [only] = columns
        && only.cql_type == CqlType::BigInt
        && only.values.data_type() == &DataType::Int64
    {
        return bigint_tokens(only);
    }
    let encoders = columns
        .iter()
        .map(Encoder::new)
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(num_rows);
    let mut value = Vec::with_capacity(32);
    let mut composite = Vec::with_capacity(64);
    for row in 0..num_rows {
        if let [only] = encoders.as_slice() {
            value.clear();
            only.write(row, &mut value)?;
            out.push(token_of(&value));
        } else {
            composite.clear();
            for encoder in &encoders {
                value.clear();
                encoder.write(row, &mut value)?;
                let len = u16::try_from(value.len()).map_err(|_| Error::InvalidKey {
                    column: encoder.name.to_string(),
                    problem: format!(
                        "holds a value of {} bytes at row {row}; a component of a composite \
                         partition key is at most 65535 bytes",
                        value.len()
                    ),
                })?;
                composite.extend_from_slice(&len.to_be_bytes());
                composite.extend_from_slice(&value);
                composite.push(0);
            }
            out.push(token_of(&composite));
        }
    }
    Ok(Int64Array::from(out))
}

/// The token of a single serialized value or of composite components, for tests and tools.
pub fn token_of_components(components: &[Vec<u8>]) -> Token {
    if let [only] = components {
        return token_of(only);
    }
    let mut composite = Vec::new();
    for c in components {
        composite.extend_from_slice(&(c.len() as u16).to_be_bytes());
        composite.extend_from_slice(c);
        composite.push(0);
    }
    token_of(&composite)
}

fn bigint_tokens(column: &KeyColumn<'_>) -> Result<Int64Array> {
    let values = column.values.as_primitive::<arrow::datatypes::Int64Type>();
    if values.null_count() > 0 {
        let row = (0..values.len()).find(|&i| values.is_null(i)).unwrap_or(0);
        return Err(null_key(column.name, row));
    }
    Ok(values
        .values()
        .iter()
        .map(|v| token_of(&v.to_be_bytes()))
        .collect())
}

fn null_key(column: &str, row: usize) -> Error {
    Error::InvalidKey {
        column: column.to_string(),
        problem: format!("is part of the partition key and cannot be NULL (row {row})"),
    }
}

/// A key column downcast once, so that per-row encoding is a match and a copy.
struct Encoder<'a> {
    name: &'a str,
    values: Values,
}

enum Values {
    Boolean(BooleanArray),
    TinyInt(Int8Array),
    SmallInt(Int16Array),
    Int(Int32Array),
    BigInt(Int64Array),
    Float(Float32Array),
    Double(Float64Array),
    Decimal(Decimal128Array, i8),
    Text(StringArray),
    Uuid(StringArray),
    Inet(StringArray),
    Blob(BinaryArray),
    Timestamp(TimestampMillisecondArray),
    Date(Date32Array),
    Time(Time64NanosecondArray),
}

impl<'a> Encoder<'a> {
    fn new(column: &KeyColumn<'a>) -> Result<Self> {
        let target = match column.cql_type {
            // Keep the column's own scale: it is what the serialized decimal carries.
            CqlType::Decimal { .. } => match column.values.data_type() {
                DataType::Decimal128(_, _) => column.values.data_type().clone(),
                _ => column.cql_type.arrow_type(),
            },
            t => t.arrow_type(),
        };
        let array = if column.values.data_type() == &target {
            column.values.clone()
        } else {
            cast(column.values, &target).map_err(|e| Error::InvalidKey {
                column: column.name.to_string(),
                problem: format!(
                    "has type {} which cannot be read as CQL {}: {e}",
                    column.values.data_type(),
                    column.cql_type
                ),
            })?
        };
        let values = match column.cql_type {
            CqlType::Boolean => Values::Boolean(array.as_boolean().clone()),
            CqlType::TinyInt => Values::TinyInt(array.as_primitive().clone()),
            CqlType::SmallInt => Values::SmallInt(array.as_primitive().clone()),
            CqlType::Int => Values::Int(array.as_primitive().clone()),
            CqlType::BigInt => Values::BigInt(array.as_primitive().clone()),
            CqlType::Float => Values::Float(array.as_primitive().clone()),
            CqlType::Double => Values::Double(array.as_primitive().clone()),
            CqlType::Decimal { scale, .. } => {
                let scale = match array.data_type() {
                    DataType::Decimal128(_, s) => *s,
                    _ => scale,
                };
                Values::Decimal(array.as_primitive().clone(), scale)
            }
            CqlType::Text | CqlType::Ascii => Values::Text(array.as_string().clone()),
            CqlType::Uuid | CqlType::TimeUuid => Values::Uuid(array.as_string().clone()),
            CqlType::Inet => Values::Inet(array.as_string().clone()),
            CqlType::Blob => Values::Blob(array.as_binary().clone()),
            CqlType::Timestamp => {
                debug_assert!(matches!(
                    array.data_type(),
                    DataType::Timestamp(TimeUnit::Millisecond, _)
                ));
                Values::Timestamp(array.as_primitive().clone())
            }
            CqlType::Date => Values::Date(array.as_primitive().clone()),
            CqlType::Time => Values::Time(array.as_primitive().clone()),
        };
        Ok(Encoder {
            name: column.name,
            values,
        })
    }

    fn write(&self, row: usize, out: &mut Vec<u8>) -> Result<()> {
        let is_null = match &self.values {
            Values::Boolean(a) => a.is_null(row),
            Values::TinyInt(a) => a.is_null(row),
            Values::SmallInt(a) => a.is_null(row),
            Values::Int(a) => a.is_null(row),
            Values::BigInt(a) => a.is_null(row),
            Values::Float(a) => a.is_null(row),
            Values::Double(a) => a.is_null(row),
            Values::Decimal(a, _) => a.is_null(row),
            Values::Text(a) | Values::Uuid(a) | Values::Inet(a) => a.is_null(row),
            Values::Blob(a) => a.is_null(row),
            Values::Timestamp(a) => a.is_null(row),
            Values::Date(a) => a.is_null(row),
            Values::Time(a) => a.is_null(row),
        };
        if is_null {
            return Err(null_key(self.name, row));
        }
        match &self.values {
            Values::Boolean(a) => out.push(u8::from(a.value(row))),
            Values::TinyInt(a) => out.extend_from_slice(&a.value(row).to_be_bytes()),
            Values::SmallInt(a) => out.extend_from_slice(&a.value(row).to_be_bytes()),
            Values::Int(a) => out.extend_from_slice(&a.value(row).to_be_bytes()),
            Values::BigInt(a) => out.extend_from_slice(&a.value(row).to_be_bytes()),
            Values::Float(a) => out.extend_from_slice(&a.value(row).to_bits().to_be_bytes()),
            Values::Double(a) => out.extend_from_slice(&a.value(row).to_bits().to_be_bytes()),
            Values::Decimal(a, scale) => encode_decimal(a.value(row), *scale, out),
            Values::Text(a) => out.extend_from_slice(a.value(row).as_bytes()),
            Values::Uuid(a) => {
                let text = a.value(row);
                let uuid = uuid::Uuid::parse_str(text).map_err(|e| Error::InvalidKey {
                    column: self.name.to_string(),
                    problem: format!("holds '{text}' at row {row}, which is not a uuid: {e}"),
                })?;
                out.extend_from_slice(uuid.as_bytes());
            }
            Values::Inet(a) => {
                let text = a.value(row);
                let ip: IpAddr = text.parse().map_err(|_| Error::InvalidKey {
                    column: self.name.to_string(),
                    problem: format!(
                        "holds '{text}' at row {row}, which is not an IPv4 or IPv6 address"
                    ),
                })?;
                match ip {
                    IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
                    IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
                }
            }
            Values::Blob(a) => out.extend_from_slice(a.value(row)),
            Values::Timestamp(a) => out.extend_from_slice(&a.value(row).to_be_bytes()),
            Values::Date(a) => {
                let days = (i64::from(a.value(row)) + (1i64 << 31)) as u32;
                out.extend_from_slice(&days.to_be_bytes());
            }
            Values::Time(a) => out.extend_from_slice(&a.value(row).to_be_bytes()),
        }
        Ok(())
    }
}

/// CQL `decimal`: a 4-byte scale and a minimal big-endian two's complement varint. Trailing
/// fractional zeros are stripped first so that 1.5 and 1.50 hash alike.
fn encode_decimal(mut unscaled: i128, mut scale: i8, out: &mut Vec<u8>) {
    while scale > 0 && unscaled % 10 == 0 {
        unscaled /= 10;
        scale -= 1;
    }
    out.extend_from_slice(&i32::from(scale).to_be_bytes());
    encode_varint(unscaled, out);
}

fn encode_varint(value: i128, out: &mut Vec<u8>) {
    let bytes = value.to_be_bytes();
    let mut start = 0;
    while start < bytes.len() - 1 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn varints_are_minimal_twos_complement() {
        let enc = |v: i128| {
            let mut out = Vec::new();
            encode_varint(v, &mut out);
            out
        };
        assert_eq!(enc(0), vec![0x00]);
        assert_eq!(enc(127), vec![0x7f]);
        assert_eq!(enc(128), vec![0x00, 0x80]);
        assert_eq!(enc(-1), vec![0xff]);
        assert_eq!(enc(-128), vec![0x80]);
        assert_eq!(enc(-129), vec![0xff, 0x7f]);
    }

    #[test]
    fn null_keys_are_refused_with_the_row() {
        let values: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
        let col = KeyColumn {
            name: "device_id",
            cql_type: CqlType::BigInt,
            values: &values,
        };
        let err = tokens(&[col], 2).unwrap_err().to_string();
        assert!(err.contains("device_id") && err.contains("row 1"), "{err}");
    }

    #[test]
    fn the_bigint_fast_path_agrees_with_the_general_path() {
        let values: ArrayRef = Arc::new(Int64Array::from(vec![0, 1, -1, 42, i64::MAX]));
        let fast = tokens(
            &[KeyColumn {
                name: "k",
                cql_type: CqlType::BigInt,
                values: &values,
            }],
            5,
        )
        .unwrap();
        let encoder = Encoder::new(&KeyColumn {
            name: "k",
            cql_type: CqlType::BigInt,
            values: &values,
        })
        .unwrap();
        for row in 0..5 {
            let mut buf = Vec::new();
            encoder.write(row, &mut buf).unwrap();
            assert_eq!(fast.value(row), token_of(&buf));
        }
    }
}
