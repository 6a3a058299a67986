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
//! | list, set | 4-byte count, then each element as 4-byte length and bytes |
//! | map | 4-byte count, then each key and each value as 4-byte length and bytes |
//!
//! Decoding never rounds: a decimal with more fraction digits than its column keeps, or more
//! digits than its precision, is an error naming the value, as is a time past midnight or text
//! that is not UTF-8. CQL collections hold no NULL elements: a NULL in an Arrow list or map value
//! is an error when encoding, and a NULL element in a cell is an error when decoding.

use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder,
    Date32Array, Decimal128Array, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
    Int64Array, ListArray, MapArray, PrimitiveBuilder, StringArray, StringBuilder, StructArray,
    Time64NanosecondArray, TimestampMillisecondArray,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, FieldRef, Fields, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, Time64NanosecondType, TimeUnit, TimestampMillisecondType,
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
    /// A list or set column and an encoder of all its elements.
    List(ListArray, Box<CellEncoder>),
    /// A map column and encoders of all its keys and all its values.
    Map(MapArray, Box<CellEncoder>, Box<CellEncoder>),
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
            CqlType::List(element) | CqlType::Set(element) => {
                let list = array.as_list::<i32>().clone();
                let elements = CellEncoder::new(*element, list.values())?;
                Values::List(list, Box::new(elements))
            }
            CqlType::Map(key, value) => {
                let map = array.as_map().clone();
                let keys = CellEncoder::new(*key, map.keys())?;
                let values = CellEncoder::new(*value, map.values())?;
                Values::Map(map, Box::new(keys), Box::new(values))
            }
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
            Values::List(a, _) => a,
            Values::Map(a, ..) => a,
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
            Values::List(a, elements) => {
                let range = offset_range(a.value_offsets(), row);
                out.extend_from_slice(&(range.len() as i32).to_be_bytes());
                for i in range {
                    elements.write_element(row, i, out)?;
                }
            }
            Values::Map(a, keys, values) => {
                let range = offset_range(a.value_offsets(), row);
                out.extend_from_slice(&(range.len() as i32).to_be_bytes());
                for i in range {
                    keys.write_element(row, i, out)?;
                    values.write_element(row, i, out)?;
                }
            }
        }
        Ok(())
    }

    /// Appends element `i` of a collection (in row `row`) with its 4-byte length.
    fn write_element(&self, row: usize, i: usize, out: &mut Vec<u8>) -> Result<(), String> {
        if self.is_null(i) {
            return Err(format!(
                "holds a NULL inside the collection at row {row}; CQL collections cannot hold NULLs"
            ));
        }
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        self.write(i, out)
            .map_err(|e| format!("inside the collection at row {row}: {e}"))?;
        let len = (out.len() - at - 4) as i32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

/// The positions of row `row`'s elements in a list's or map's flat values.
fn offset_range(offsets: &[i32], row: usize) -> std::ops::Range<usize> {
    offsets[row] as usize..offsets[row + 1] as usize
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
    List {
        field: FieldRef,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        elements: Box<CellDecoder>,
    },
    Map {
        entries: FieldRef,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        keys: Box<CellDecoder>,
        values: Box<CellDecoder>,
    },
}

impl CellDecoder {
    /// A decoder of `capacity` cells, to start with. After [`CellDecoder::push`] fails, the
    /// decoder holds part of the bad cell: drop it.
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
            CqlType::List(element) | CqlType::Set(element) => {
                let DataType::List(field) = cql_type.arrow_type() else {
                    unreachable!("a list or set is held as an Arrow list")
                };
                Builder::List {
                    field,
                    offsets: first_offset(capacity),
                    nulls: NullBufferBuilder::new(capacity),
                    elements: Box::new(CellDecoder::new(*element, capacity)),
                }
            }
            CqlType::Map(key, value) => {
                let DataType::Map(entries, _) = cql_type.arrow_type() else {
                    unreachable!("a map is held as an Arrow map")
                };
                Builder::Map {
                    entries,
                    offsets: first_offset(capacity),
                    nulls: NullBufferBuilder::new(capacity),
                    keys: Box::new(CellDecoder::new(*key, capacity)),
                    values: Box::new(CellDecoder::new(*value, capacity)),
                }
            }
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
            Builder::List {
                offsets,
                nulls,
                elements,
                ..
            } => {
                let mut cells = Elements::new(bytes)?;
                let count = cells.count;
                for _ in 0..count {
                    elements.push(Some(cells.next(cql_type)?))?;
                }
                cells.end()?;
                push_offset(offsets, count)?;
                nulls.append_non_null();
            }
            Builder::Map {
                offsets,
                nulls,
                keys,
                values,
                ..
            } => {
                let mut cells = Elements::new(bytes)?;
                let count = cells.count;
                for _ in 0..count {
                    keys.push(Some(cells.next(cql_type)?))?;
                    values.push(Some(cells.next(cql_type)?))?;
                }
                cells.end()?;
                push_offset(offsets, count)?;
                nulls.append_non_null();
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
            Builder::List { offsets, nulls, .. } | Builder::Map { offsets, nulls, .. } => {
                offsets.push(offsets.last().copied().unwrap_or(0));
                nulls.append_null();
            }
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
            Builder::List {
                field,
                offsets,
                nulls,
                elements,
            } => Arc::new(ListArray::new(
                Arc::clone(field),
                take_offsets(offsets),
                elements.finish(),
                nulls.finish(),
            )),
            Builder::Map {
                entries,
                offsets,
                nulls,
                keys,
                values,
            } => {
                let DataType::Struct(fields) = entries.data_type() else {
                    unreachable!("a map's entries are a struct")
                };
                let fields: Fields = fields.clone();
                let entry_values =
                    StructArray::new(fields, vec![keys.finish(), values.finish()], None);
                Arc::new(MapArray::new(
                    Arc::clone(entries),
                    take_offsets(offsets),
                    entry_values,
                    nulls.finish(),
                    false,
                ))
            }
        }
    }
}

/// The offsets of an empty list column, with room for `capacity` rows.
fn first_offset(capacity: usize) -> Vec<i32> {
    let mut offsets = Vec::with_capacity(capacity + 1);
    offsets.push(0);
    offsets
}

fn push_offset(offsets: &mut Vec<i32>, count: usize) -> Result<(), String> {
    let last = offsets.last().copied().unwrap_or(0);
    let next = i32::try_from(count)
        .ok()
        .and_then(|n| last.checked_add(n))
        .ok_or_else(|| {
            "a batch holds more collection elements than fit in one column".to_string()
        })?;
    offsets.push(next);
    Ok(())
}

/// The offsets built so far; the builder starts over with none.
fn take_offsets(offsets: &mut Vec<i32>) -> OffsetBuffer<i32> {
    let taken = std::mem::replace(offsets, vec![0]);
    OffsetBuffer::new(ScalarBuffer::from(taken))
}

/// The elements of a serialized collection, read in order.
struct Elements<'a> {
    rest: &'a [u8],
    count: usize,
}

impl<'a> Elements<'a> {
    fn new(cell: &'a [u8]) -> Result<Self, String> {
        if cell.len() < 4 {
            return Err(format!(
                "a CQL collection starts with a 4-byte count, this one has {} bytes",
                cell.len()
            ));
        }
        let count = i32::from_be_bytes(array(&cell[..4]));
        // Every element takes at least its 4-byte length, which bounds what a bad count can ask
        // the builders to hold.
        if count < 0 || count as usize > (cell.len() - 4) / 4 {
            return Err(format!(
                "a CQL collection of {} bytes cannot hold {count} elements",
                cell.len()
            ));
        }
        Ok(Elements {
            rest: &cell[4..],
            count: count as usize,
        })
    }

    fn next(&mut self, cql_type: CqlType) -> Result<&'a [u8], String> {
        if self.rest.len() < 4 {
            return Err(format!(
                "a {cql_type} value ends inside an element's length"
            ));
        }
        let len = i32::from_be_bytes(array(&self.rest[..4]));
        if len < 0 {
            return Err(format!(
                "a {cql_type} value holds a NULL element; CQL collections cannot hold NULLs"
            ));
        }
        let len = len as usize;
        if self.rest.len() - 4 < len {
            return Err(format!("a {cql_type} value ends inside an element"));
        }
        let (element, rest) = self.rest[4..].split_at(len);
        self.rest = rest;
        Ok(element)
    }

    fn end(&self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "a CQL collection has {} bytes after its last element",
                self.rest.len()
            ))
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
    use arrow::array::Float64Builder;

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
    fn collections_round_trip_and_refuse_null_elements() {
        use arrow::array::{Int32Builder, ListBuilder, MapBuilder};

        let mut lists = ListBuilder::new(Int32Builder::new());
        lists.append_value([Some(3), Some(1), Some(2)]);
        lists.append_null();
        lists.append_value([]);
        let lists: ArrayRef = Arc::new(lists.finish());
        let list = CqlType::list(CqlType::Int).unwrap();
        assert_eq!(round_trip(list, lists.clone()).as_ref(), lists.as_ref());

        let mut maps = MapBuilder::new(None, StringBuilder::new(), Float64Builder::new());
        maps.keys().append_value("a");
        maps.values().append_value(1.5);
        maps.keys().append_value("b");
        maps.values().append_value(-2.0);
        maps.append(true).unwrap();
        maps.append(false).unwrap();
        let maps: ArrayRef = Arc::new(maps.finish());
        let map = CqlType::map(CqlType::Text, CqlType::Double).unwrap();
        let back = round_trip(map, maps.clone());
        assert_eq!(back.data_type(), &map.arrow_type());
        let back = back.as_map();
        assert_eq!(back.value_offsets(), &[0, 2, 2]);
        assert!(back.is_null(1));
        assert_eq!(back.keys().as_ref(), maps.as_map().keys().as_ref());
        assert_eq!(back.values().as_ref(), maps.as_map().values().as_ref());

        let mut with_null = ListBuilder::new(Int32Builder::new());
        with_null.append_value([Some(1), None]);
        let with_null: ArrayRef = Arc::new(with_null.finish());
        let encoder = CellEncoder::new(list, &with_null).unwrap();
        let err = encoder.write(0, &mut Vec::new()).unwrap_err();
        assert!(err.contains("cannot hold NULLs"), "{err}");

        let mut d = CellDecoder::new(list, 1);
        let null_element = [1i32.to_be_bytes(), (-1i32).to_be_bytes()].concat();
        assert!(d.push(Some(&null_element)).unwrap_err().contains("NULL"));
        let mut d = CellDecoder::new(list, 1);
        let huge = i32::MAX.to_be_bytes();
        assert!(d.push(Some(&huge)).unwrap_err().contains("cannot hold"));
        let mut d = CellDecoder::new(list, 1);
        let short = [1i32.to_be_bytes(), 4i32.to_be_bytes()].concat();
        assert!(d.push(Some(&short)).unwrap_err().contains("ends inside"));
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
