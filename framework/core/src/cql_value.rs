//! CQL values in their serialized (native protocol) form, to and from Arrow columns.
//!
//! The same bytes are hashed into tokens ([`crate::partition_key`]), sent in CQL result rows and
//! bound to CQL statements, so one codec serves all three. Per type:
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
//!
//! Decoding never rounds: a decimal with more fraction digits than its column keeps, or more
//! digits than its precision, is an error naming the value, as is a time past midnight or text
//! that is not UTF-8.

use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder,
    Date32Array, Decimal128Array, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
    Int64Array, PrimitiveBuilder, StringArray, StringBuilder, Time64NanosecondArray,
    TimestampMillisecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, Time64NanosecondType, TimeUnit, TimestampMillisecondType,
};

use crate::cql_type::{CqlType, TIMESTAMP_TZ};

/// Nanoseconds in a day: CQL `time` values are below it.
const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// One Arrow column downcast once, so that encoding a cell is a match and a copy.
#[derive(Debug)]
pub struct CellEncoder {
    values: Values,
}

#[derive(Debug)]
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

impl CellEncoder {
    /// An encoder for `values` as CQL `cql_type`; the array is cast first when its Arrow type is
    /// not the type's own (text as `Utf8View`, for example). The error says why it cannot be.
    pub fn new(cql_type: CqlType, values: &ArrayRef) -> Result<Self, String> {
        let target = match cql_type {
            CqlType::Decimal { .. } if matches!(values.data_type(), DataType::Decimal128(..)) => {
                values.data_type().clone()
            }
            t => t.arrow_type(),
        };
        let array = if values.data_type() == &target {
            values.clone()
        } else {
            cast(values, &target).map_err(|e| {
                format!(
                    "has type {} which cannot be read as CQL {cql_type}: {e}",
                    values.data_type()
                )
            })?
        };
        let values = match cql_type {
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
        Ok(CellEncoder { values })
    }

    fn array(&self) -> &dyn Array {
        match &self.values {
            Values::Boolean(a) => a,
            Values::TinyInt(a) => a,
            Values::SmallInt(a) => a,
            Values::Int(a) => a,
            Values::BigInt(a) => a,
            Values::Float(a) => a,
            Values::Double(a) => a,
            Values::Decimal(a, _) => a,
            Values::Text(a) | Values::Uuid(a) | Values::Inet(a) => a,
            Values::Blob(a) => a,
            Values::Timestamp(a) => a,
            Values::Date(a) => a,
            Values::Time(a) => a,
        }
    }

    pub fn is_null(&self, row: usize) -> bool {
        self.array().is_null(row)
    }

    /// Appends the serialized value of `row`, which must not be null. Text-held values (uuid,
    /// inet) that do not parse are an error saying so.
    pub fn write(&self, row: usize, out: &mut Vec<u8>) -> Result<(), String> {
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
                let uuid = uuid::Uuid::parse_str(text).map_err(|e| {
                    format!("holds '{text}' at row {row}, which is not a uuid: {e}")
                })?;
                out.extend_from_slice(uuid.as_bytes());
            }
            Values::Inet(a) => {
                let text = a.value(row);
                let ip: IpAddr = text.parse().map_err(|_| {
                    format!("holds '{text}' at row {row}, which is not an IPv4 or IPv6 address")
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

/// A decimal as CQL serializes it, with trailing zeros of the fraction stripped so that equal
/// values (1.5 and 1.50) have equal bytes and therefore equal tokens.
fn encode_decimal(mut unscaled: i128, mut scale: i8, out: &mut Vec<u8>) {
    while scale > 0 && unscaled % 10 == 0 {
        unscaled /= 10;
        scale -= 1;
    }
    out.extend_from_slice(&i32::from(scale).to_be_bytes());
    encode_varint(unscaled, out);
}

/// The serialized form of the decimal `unscaled × 10^-scale`.
pub fn decimal_cell(unscaled: i128, scale: i32) -> Vec<u8> {
    let mut out = scale.to_be_bytes().to_vec();
    encode_varint(unscaled, &mut out);
    out
}

/// Minimal big-endian two's complement, as CQL `varint`.
pub(crate) fn encode_varint(value: i128, out: &mut Vec<u8>) {
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

/// Builds one Arrow column (of the CQL type's own Arrow type) from serialized CQL cells.
#[derive(Debug)]
pub struct CellDecoder {
    cql_type: CqlType,
    builder: Builder,
}

#[derive(Debug)]
enum Builder {
    Boolean(BooleanBuilder),
    TinyInt(PrimitiveBuilder<Int8Type>),
    SmallInt(PrimitiveBuilder<Int16Type>),
    Int(PrimitiveBuilder<Int32Type>),
    BigInt(PrimitiveBuilder<Int64Type>),
    Float(PrimitiveBuilder<Float32Type>),
    Double(PrimitiveBuilder<Float64Type>),
    Decimal(PrimitiveBuilder<Decimal128Type>, u8, i8),
    Text(StringBuilder),
    Blob(BinaryBuilder),
    Timestamp(PrimitiveBuilder<TimestampMillisecondType>),
    Date(PrimitiveBuilder<Date32Type>),
    Time(PrimitiveBuilder<Time64NanosecondType>),
}

impl CellDecoder {
    pub fn new(cql_type: CqlType, capacity: usize) -> Self {
        let builder = match cql_type {
            CqlType::Boolean => Builder::Boolean(BooleanBuilder::with_capacity(capacity)),
            CqlType::TinyInt => Builder::TinyInt(PrimitiveBuilder::with_capacity(capacity)),
            CqlType::SmallInt => Builder::SmallInt(PrimitiveBuilder::with_capacity(capacity)),
            CqlType::Int => Builder::Int(PrimitiveBuilder::with_capacity(capacity)),
            CqlType::BigInt => Builder::BigInt(PrimitiveBuilder::with_capacity(capacity)),
            CqlType::Float => Builder::Float(PrimitiveBuilder::with_capacity(capacity)),
            CqlType::Double => Builder::Double(PrimitiveBuilder::with_capacity(capacity)),
            CqlType::Decimal { precision, scale } => {
                Builder::Decimal(PrimitiveBuilder::with_capacity(capacity), precision, scale)
            }
            CqlType::Text | CqlType::Ascii | CqlType::Uuid | CqlType::TimeUuid | CqlType::Inet => {
                Builder::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            CqlType::Blob => Builder::Blob(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            CqlType::Timestamp => Builder::Timestamp(PrimitiveBuilder::with_capacity(capacity)),
            CqlType::Date => Builder::Date(PrimitiveBuilder::with_capacity(capacity)),
            CqlType::Time => Builder::Time(PrimitiveBuilder::with_capacity(capacity)),
        };
        CellDecoder { cql_type, builder }
    }

    /// Appends one cell (`None` is null). The error says what is wrong with the bytes, for a
    /// message that names the column.
    pub fn push(&mut self, cell: Option<&[u8]>) -> Result<(), String> {
        let Some(bytes) = cell else {
            self.push_null();
            return Ok(());
        };
        let cql_type = self.cql_type;
        let fixed = |n: usize| -> Result<&[u8], String> {
            if bytes.len() == n {
                Ok(bytes)
            } else {
                Err(format!(
                    "a CQL {cql_type} value is {n} bytes, this one has {}",
                    bytes.len()
                ))
            }
        };
        match &mut self.builder {
            Builder::Boolean(b) => b.append_value(fixed(1)?[0] != 0),
            Builder::TinyInt(b) => b.append_value(fixed(1)?[0] as i8),
            Builder::SmallInt(b) => b.append_value(i16::from_be_bytes(array(fixed(2)?))),
            Builder::Int(b) => b.append_value(i32::from_be_bytes(array(fixed(4)?))),
            Builder::BigInt(b) => b.append_value(i64::from_be_bytes(array(fixed(8)?))),
            Builder::Float(b) => {
                b.append_value(f32::from_bits(u32::from_be_bytes(array(fixed(4)?))))
            }
            Builder::Double(b) => {
                b.append_value(f64::from_bits(u64::from_be_bytes(array(fixed(8)?))))
            }
            Builder::Decimal(b, precision, scale) => {
                b.append_value(decode_decimal(bytes, *precision, *scale)?)
            }
            Builder::Text(b) => b.append_value(text_of(cql_type, bytes)?),
            Builder::Blob(b) => b.append_value(bytes),
            Builder::Timestamp(b) => b.append_value(i64::from_be_bytes(array(fixed(8)?))),
            Builder::Date(b) => {
                let days = u32::from_be_bytes(array(fixed(4)?));
                b.append_value((i64::from(days) - (1i64 << 31)) as i32)
            }
            Builder::Time(b) => {
                let nanos = i64::from_be_bytes(array(fixed(8)?));
                if !(0..NANOS_PER_DAY).contains(&nanos) {
                    return Err(format!(
                        "{nanos} nanoseconds is not a time of day (0 to {})",
                        NANOS_PER_DAY - 1
                    ));
                }
                b.append_value(nanos)
            }
        }
        Ok(())
    }

    fn push_null(&mut self) {
        match &mut self.builder {
            Builder::Boolean(b) => b.append_null(),
            Builder::TinyInt(b) => b.append_null(),
            Builder::SmallInt(b) => b.append_null(),
            Builder::Int(b) => b.append_null(),
            Builder::BigInt(b) => b.append_null(),
            Builder::Float(b) => b.append_null(),
            Builder::Double(b) => b.append_null(),
            Builder::Decimal(b, ..) => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Blob(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
        }
    }

    /// The column built so far (the decoder starts over, empty).
    pub fn finish(&mut self) -> ArrayRef {
        match &mut self.builder {
            Builder::Boolean(b) => Arc::new(b.finish()),
            Builder::TinyInt(b) => Arc::new(b.finish()),
            Builder::SmallInt(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::BigInt(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Double(b) => Arc::new(b.finish()),
            Builder::Decimal(b, precision, scale) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*precision, *scale)
                    .expect("precision and scale were checked by CqlType::decimal"),
            ),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Blob(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish().with_timezone(TIMESTAMP_TZ)),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
        }
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(bytes);
    out
}

/// The text a text-held CQL value is kept as.
fn text_of(cql_type: CqlType, bytes: &[u8]) -> Result<String, String> {
    Ok(match cql_type {
        CqlType::Uuid | CqlType::TimeUuid => uuid::Uuid::from_slice(bytes)
            .map_err(|_| format!("a uuid is 16 bytes, this one has {}", bytes.len()))?
            .hyphenated()
            .to_string(),
        CqlType::Inet => match bytes.len() {
            4 => IpAddr::from(array::<4>(bytes)).to_string(),
            16 => IpAddr::from(array::<16>(bytes)).to_string(),
            n => return Err(format!("an inet is 4 or 16 bytes, this one has {n}")),
        },
        _ => {
            let text = std::str::from_utf8(bytes).map_err(|e| format!("is not UTF-8: {e}"))?;
            if cql_type == CqlType::Ascii && !text.is_ascii() {
                return Err(format!("'{text}' is not ASCII"));
            }
            text.to_string()
        }
    })
}

/// A serialized CQL decimal at the column's scale, or why it does not fit without rounding.
fn decode_decimal(bytes: &[u8], precision: u8, scale: i8) -> Result<i128, String> {
    if bytes.len() < 5 {
        return Err(format!(
            "a CQL decimal is at least 5 bytes, this one has {}",
            bytes.len()
        ));
    }
    let value_scale = i32::from_be_bytes(array(&bytes[..4]));
    let digits = &bytes[4..];
    if digits.len() > 16 {
        return Err(format!(
            "a decimal of {} bytes does not fit decimal({precision}, {scale})",
            digits.len()
        ));
    }
    let mut unscaled: i128 = if digits[0] & 0x80 != 0 { -1 } else { 0 };
    for &b in digits {
        unscaled = (unscaled << 8) | i128::from(b);
    }
    let shown = || format!("{unscaled}E{}", -value_scale);
    let target = i32::from(scale);
    let value = if value_scale <= target {
        10i128
            .checked_pow((target - value_scale) as u32)
            .and_then(|factor| unscaled.checked_mul(factor))
            .ok_or_else(|| format!("{} does not fit decimal({precision}, {scale})", shown()))?
    } else {
        let divisor = 10i128
            .checked_pow((value_scale - target) as u32)
            .ok_or_else(|| format!("{} has too many fraction digits", shown()))?;
        if unscaled % divisor != 0 {
            return Err(format!(
                "{} has more than {scale} fraction digits, which decimal({precision}, {scale}) \
                 keeps; round it first",
                shown()
            ));
        }
        unscaled / divisor
    };
    let limit = 10i128.pow(u32::from(precision));
    if value.unsigned_abs() >= limit as u128 {
        return Err(format!(
            "{} has more than {precision} digits, which decimal({precision}, {scale}) holds",
            shown()
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(cql_type: CqlType, values: ArrayRef) -> ArrayRef {
        let encoder = CellEncoder::new(cql_type, &values).unwrap();
        let mut decoder = CellDecoder::new(cql_type, values.len());
        for row in 0..values.len() {
            if encoder.is_null(row) {
                decoder.push(None).unwrap();
            } else {
                let mut cell = Vec::new();
                encoder.write(row, &mut cell).unwrap();
                decoder.push(Some(&cell)).unwrap();
            }
        }
        decoder.finish()
    }

    #[test]
    fn every_type_round_trips_with_nulls() {
        let cases: Vec<(CqlType, ArrayRef)> = vec![
            (
                CqlType::BigInt,
                Arc::new(Int64Array::from(vec![Some(i64::MIN), None, Some(7)])),
            ),
            (
                CqlType::Double,
                Arc::new(Float64Array::from(vec![Some(-0.5), None, Some(1e300)])),
            ),
            (
                CqlType::decimal(15, 2).unwrap(),
                Arc::new(
                    Decimal128Array::from(vec![Some(150), None, Some(-99_999)])
                        .with_precision_and_scale(15, 2)
                        .unwrap(),
                ),
            ),
            (
                CqlType::Uuid,
                Arc::new(StringArray::from(vec![
                    Some("9b2e5f1a-0c3d-4e5f-8a9b-0c1d2e3f4a5b"),
                    None,
                ])),
            ),
            (
                CqlType::Inet,
                Arc::new(StringArray::from(vec![Some("10.0.0.1"), Some("::1")])),
            ),
            (
                CqlType::Date,
                Arc::new(Date32Array::from(vec![Some(-719_162), Some(20_000)])),
            ),
            (
                CqlType::Text,
                Arc::new(StringArray::from(vec![Some("héllo"), None, Some("")])),
            ),
        ];
        for (cql_type, values) in cases {
            let back = round_trip(cql_type, values.clone());
            assert_eq!(back.as_ref(), values.as_ref(), "{cql_type}");
        }
    }

    #[test]
    fn decimals_of_another_scale_are_rescaled_or_refused() {
        let mut cell = Vec::new();
        // 1.5 sent at scale 1 reads as 1.50 in decimal(15, 2).
        encode_decimal(15, 1, &mut cell);
        assert_eq!(decode_decimal(&cell, 15, 2), Ok(150));
        // 1.505 does not fit two fraction digits: refused, never rounded.
        cell.clear();
        encode_decimal(1505, 3, &mut cell);
        let err = decode_decimal(&cell, 15, 2).unwrap_err();
        assert!(err.contains("fraction digits"), "{err}");
        // 10^4 has five digits, one more than decimal(4, 0) holds.
        cell.clear();
        encode_decimal(10_000, 0, &mut cell);
        assert!(decode_decimal(&cell, 4, 0).unwrap_err().contains("digits"));
    }

    #[test]
    fn malformed_cells_are_errors() {
        let mut d = CellDecoder::new(CqlType::Int, 1);
        assert!(d.push(Some(&[1, 2])).unwrap_err().contains("4 bytes"));
        let mut d = CellDecoder::new(CqlType::Time, 1);
        assert!(
            d.push(Some(&NANOS_PER_DAY.to_be_bytes()))
                .unwrap_err()
                .contains("time of day")
        );
        let mut d = CellDecoder::new(CqlType::Ascii, 1);
        assert!(d.push(Some("é".as_bytes())).is_err());
    }
}
