//! Converting one input column to the Arrow type of its table column's CQL type.
//!
//! Conversion never fails on a bad value: the value becomes NULL, and [`bad_rows`] finds it by
//! comparing null masks (non-null in, NULL out). Most conversions are Arrow's `cast` kernel with
//! `safe` on; the rest are the CQL types Arrow has no notion of (uuid, timeuuid, inet, ascii, blob
//! literals) and timestamps written as epoch milliseconds.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, ListArray, MapArray, StringArray,
    StringBuilder, StructArray, TimestampMillisecondArray, new_null_array,
};
use arrow::buffer::{BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::kernels::cmp::eq;
use arrow::compute::kernels::zip::zip;
use arrow::compute::{CastOptions, can_cast_types, cast_with_options, filter, not, nullif};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use quarry_core::cql_type::{CqlType, TIMESTAMP_TZ};
use uuid::Uuid;

use crate::cql_text::{
    inet_from_bytes, parse_blob_hex, parse_epoch_millis, parse_inet, parse_uuid, uuid_from_bytes,
};

/// Converts `input` to `ty`'s Arrow type, row for row. Values that are not valid values of `ty`
/// become NULL; find them with [`bad_rows`].
pub(crate) fn convert_column(input: &ArrayRef, ty: CqlType) -> Result<ArrayRef, ArrowError> {
    let target = ty.arrow_type();
    let input = plain(input)?;
    if input.data_type() == &DataType::Null {
        return Ok(new_null_array(&target, input.len()));
    }
    if ty.is_collection() {
        return convert_collection(&input, ty);
    }
    let converted = match (ty, input.data_type()) {
        (CqlType::Uuid | CqlType::TimeUuid, DataType::Utf8) => {
            uuid_from_text(input.as_string::<i32>(), ty == CqlType::TimeUuid)
        }
        (CqlType::Uuid | CqlType::TimeUuid, DataType::Binary) => {
            uuid_from_binary(input.as_binary::<i32>(), ty == CqlType::TimeUuid)
        }
        (CqlType::Uuid | CqlType::TimeUuid, _) => {
            let text = cast_or_nulls(&input, &DataType::Utf8);
            uuid_from_text(text.as_string::<i32>(), ty == CqlType::TimeUuid)
        }
        (CqlType::Inet, DataType::Utf8) => inet_from_text(input.as_string::<i32>()),
        (CqlType::Inet, DataType::Binary) => inet_from_binary(input.as_binary::<i32>()),
        (CqlType::Inet, _) => {
            let text = cast_or_nulls(&input, &DataType::Utf8);
            inet_from_text(text.as_string::<i32>())
        }
        (CqlType::Ascii, _) => {
            let text = cast_or_nulls(&input, &DataType::Utf8);
            ascii_only(text.as_string::<i32>())
        }
        (CqlType::Text, DataType::Utf8) => input,
        (CqlType::Blob, DataType::Utf8) => blob_from_hex(input.as_string::<i32>()),
        (CqlType::Timestamp, DataType::Utf8) => timestamp_from_text(&input)?,
        (CqlType::Timestamp, t) if t.is_integer() => {
            // Whole numbers are milliseconds since the epoch, whatever their width.
            let millis = cast_or_nulls(&input, &DataType::Int64);
            cast_or_nulls(&millis, &target)
        }
        (_, t) if target.is_integer() && (t.is_floating() || t.is_decimal()) => {
            whole_numbers_only(&input, cast_or_nulls(&input, &target))?
        }
        _ => cast_or_nulls(&input, &target),
    };
    debug_assert_eq!(converted.data_type(), &target);
    Ok(converted)
}

/// The Arrow type a text input decodes a column of `ty` into before conversion: text for a native
/// type, so that typing happens column by column; a list or map of text for a collection, so that
/// JSON arrays and objects keep their shape.
pub(crate) fn raw_type(ty: CqlType) -> DataType {
    match ty {
        CqlType::List(_) | CqlType::Set(_) => CqlType::list(CqlType::Text)
            .map(CqlType::arrow_type)
            .unwrap_or(DataType::Utf8),
        CqlType::Map(..) => CqlType::map(CqlType::Text, CqlType::Text)
            .map(CqlType::arrow_type)
            .unwrap_or(DataType::Utf8),
        _ => DataType::Utf8,
    }
}

/// A list, set or map column from a list or map input (Parquet, NDJSON) or from JSON text (CSV),
/// converting elements as columns of their own type. A row with an element that does not convert
/// becomes NULL, as a bad value of any column does.
fn convert_collection(input: &ArrayRef, ty: CqlType) -> Result<ArrayRef, ArrowError> {
    let input = match input.data_type() {
        DataType::Utf8 => collections_from_json(input.as_string::<i32>(), ty)?,
        DataType::LargeList(_) => cast_or_nulls(input, &raw_type(ty)),
        _ => Arc::clone(input),
    };
    let target = ty.arrow_type();
    Ok(match (ty, input.data_type()) {
        (CqlType::List(element) | CqlType::Set(element), DataType::List(_)) => {
            let list = input.as_list::<i32>();
            let elements = convert_column(list.values(), *element)?;
            let (keep, offsets, nulls) =
                whole_rows(list, list.value_offsets(), elements.len(), |i| {
                    elements.is_valid(i)
                });
            let DataType::List(field) = &target else {
                unreachable!("a list or set is held as an Arrow list")
            };
            Arc::new(ListArray::new(
                Arc::clone(field),
                offsets,
                filter(&elements, &keep)?,
                nulls,
            ))
        }
        (CqlType::Map(key, value), DataType::Map(..)) => {
            let map = input.as_map();
            let keys = convert_column(map.keys(), *key)?;
            let values = convert_column(map.values(), *value)?;
            let (keep, offsets, nulls) = whole_rows(map, map.value_offsets(), keys.len(), |i| {
                keys.is_valid(i) && values.is_valid(i)
            });
            let DataType::Map(entries, _) = &target else {
                unreachable!("a map is held as an Arrow map")
            };
            let DataType::Struct(fields) = entries.data_type() else {
                unreachable!("a map's entries are a struct")
            };
            let entry_values = StructArray::new(
                fields.clone(),
                vec![filter(&keys, &keep)?, filter(&values, &keep)?],
                None,
            );
            Arc::new(MapArray::new(
                Arc::clone(entries),
                offsets,
                entry_values,
                nulls,
                false,
            ))
        }
        // A Parquet or JSON value of another shape (a number where a list belongs): every row is
        // bad.
        _ => new_null_array(&target, input.len()),
    })
}

/// For a list-like input whose rows are `offsets` into its elements: which elements to keep
/// (those of rows whose every element converted, by `element_ok`), the offsets over the kept
/// elements, and the rows' validity (a row with a bad element becomes NULL).
fn whole_rows(
    input: &dyn Array,
    offsets: &[i32],
    element_count: usize,
    element_ok: impl Fn(usize) -> bool,
) -> (BooleanArray, OffsetBuffer<i32>, Option<NullBuffer>) {
    let mut keep = Vec::with_capacity(element_count);
    let mut kept_offsets = Vec::with_capacity(offsets.len());
    kept_offsets.push(0i32);
    let mut valid = Vec::with_capacity(input.len());
    for (row, w) in offsets.windows(2).enumerate() {
        let range = w[0] as usize..w[1] as usize;
        let whole = input.is_valid(row) && range.clone().all(&element_ok);
        keep.extend(std::iter::repeat_n(whole, range.len()));
        let kept = if whole { range.len() as i32 } else { 0 };
        kept_offsets.push(kept_offsets[row] + kept);
        valid.push(whole);
    }
    // Elements outside the rows' offsets (of a sliced input) are never kept.
    let mut keep_all = vec![false; offsets.first().copied().unwrap_or(0) as usize];
    keep_all.extend(keep);
    keep_all.resize(element_count, false);
    let nulls = NullBuffer::from(valid);
    (
        BooleanArray::from(keep_all),
        OffsetBuffer::new(ScalarBuffer::from(kept_offsets)),
        (nulls.null_count() > 0).then_some(nulls),
    )
}

/// JSON arrays (for a list or set) or objects (for a map) held as text, as a list or map of text;
/// text that is not such JSON becomes NULL.
fn collections_from_json(input: &StringArray, ty: CqlType) -> Result<ArrayRef, ArrowError> {
    let raw = raw_type(ty);
    let wanted_object = matches!(ty, CqlType::Map(..));
    let schema = Arc::new(Schema::new(vec![Field::new("v", raw.clone(), true)]));
    let mut lines = Vec::with_capacity(input.len() * 16);
    for value in input.iter() {
        let json = value.filter(|text| {
            serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| {
                if wanted_object {
                    v.as_object().is_some_and(|o| o.values().all(is_scalar))
                } else {
                    v.as_array().is_some_and(|a| a.iter().all(is_scalar))
                }
            })
        });
        lines.extend_from_slice(b"{\"v\":");
        lines.extend_from_slice(json.unwrap_or("null").as_bytes());
        lines.extend_from_slice(b"}\n");
    }
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
        .with_batch_size(input.len().max(1))
        .with_coerce_primitive(true)
        .build_decoder()?;
    decoder.decode(&lines)?;
    match decoder.flush()? {
        Some(batch) => Ok(Arc::clone(batch.column(0))),
        None => Ok(new_null_array(&raw, input.len())),
    }
}

/// A JSON value that can be one element of a collection of a native type.
fn is_scalar(value: &serde_json::Value) -> bool {
    !(value.is_array() || value.is_object())
}

/// Rows that are non-null in `input` but NULL in `output`: the values conversion rejected.
pub(crate) fn bad_rows(input: &dyn Array, output: &dyn Array) -> Vec<usize> {
    let Some(out_nulls) = output.logical_nulls() else {
        return Vec::new();
    };
    let in_nulls = input.logical_nulls();
    let in_null_count = in_nulls.as_ref().map_or(0, |n| n.null_count());
    if out_nulls.null_count() == in_null_count {
        // Conversion never turns NULL into a value, so equal counts mean equal masks.
        return Vec::new();
    }
    let bad: BooleanBuffer = match in_nulls {
        Some(in_nulls) => in_nulls.inner() & &!out_nulls.inner(),
        None => !out_nulls.inner(),
    };
    bad.set_indices().collect()
}

/// Rows of a converted key column that hold no key: NULL, or empty text or bytes.
pub(crate) fn keyless_rows(column: &dyn Array) -> Vec<usize> {
    let empty = |row: usize, len: usize| column.is_null(row) || len == 0;
    match column.data_type() {
        DataType::Utf8 => {
            let strings = column.as_string::<i32>();
            (0..column.len())
                .filter(|&row| empty(row, strings.value_length(row) as usize))
                .collect()
        }
        DataType::Binary => {
            let bytes = column.as_binary::<i32>();
            (0..column.len())
                .filter(|&row| empty(row, bytes.value_length(row) as usize))
                .collect()
        }
        _ if column.null_count() == 0 => Vec::new(),
        _ => (0..column.len())
            .filter(|&row| column.is_null(row))
            .collect(),
    }
}

/// `input` with dictionary encoding removed and large or view strings and binaries as plain
/// `Utf8` and `Binary`, so the conversions below see a handful of types.
fn plain(input: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let to = match input.data_type() {
        DataType::Dictionary(_, values) => Some(values.as_ref().clone()),
        DataType::LargeUtf8 | DataType::Utf8View => Some(DataType::Utf8),
        DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            Some(DataType::Binary)
        }
        _ => None,
    };
    match to {
        Some(to) => plain(&cast_with_options(input, &to, &safe())?),
        None => Ok(Arc::clone(input)),
    }
}

fn safe() -> CastOptions<'static> {
    CastOptions {
        safe: true,
        ..Default::default()
    }
}

/// Arrow's cast with bad values as NULL; a type pair cast cannot convert makes every value bad.
fn cast_or_nulls(input: &ArrayRef, to: &DataType) -> ArrayRef {
    if input.data_type() == to {
        return Arc::clone(input);
    }
    if !can_cast_types(input.data_type(), to) {
        return new_null_array(to, input.len());
    }
    cast_with_options(input, to, &safe()).unwrap_or_else(|_| new_null_array(to, input.len()))
}

/// `output` (an integer cast of the fractional `input`) with values that lost a fraction set to
/// NULL: cast truncates 1.5 to 1, but a CQL `int` column must refuse 1.5.
fn whole_numbers_only(input: &ArrayRef, output: ArrayRef) -> Result<ArrayRef, ArrowError> {
    let back = cast_or_nulls(&output, input.data_type());
    let same = eq(input, &back)?;
    nullif(&output, &not(&same)?)
}

fn uuid_from_text(input: &StringArray, time_based: bool) -> ArrayRef {
    let mut out = StringBuilder::with_capacity(input.len(), input.len() * 36);
    let mut buf = Uuid::encode_buffer();
    for value in input.iter() {
        match value.and_then(|text| parse_uuid(text, time_based)) {
            Some(u) => out.append_value(u.hyphenated().encode_lower(&mut buf)),
            None => out.append_null(),
        }
    }
    Arc::new(out.finish())
}

fn uuid_from_binary(input: &arrow::array::BinaryArray, time_based: bool) -> ArrayRef {
    let mut out = StringBuilder::with_capacity(input.len(), input.len() * 36);
    let mut buf = Uuid::encode_buffer();
    for value in input.iter() {
        match value.and_then(|bytes| uuid_from_bytes(bytes, time_based)) {
            Some(u) => out.append_value(u.hyphenated().encode_lower(&mut buf)),
            None => out.append_null(),
        }
    }
    Arc::new(out.finish())
}

fn inet_from_text(input: &StringArray) -> ArrayRef {
    let out: StringArray = input
        .iter()
        .map(|value| value.and_then(parse_inet).map(|ip| ip.to_string()))
        .collect();
    Arc::new(out)
}

fn inet_from_binary(input: &arrow::array::BinaryArray) -> ArrayRef {
    let out: StringArray = input
        .iter()
        .map(|value| value.and_then(inet_from_bytes).map(|ip| ip.to_string()))
        .collect();
    Arc::new(out)
}

fn ascii_only(input: &StringArray) -> ArrayRef {
    if input.values().is_ascii() {
        return Arc::new(input.clone());
    }
    let out: StringArray = input
        .iter()
        .map(|value| value.filter(|text| text.is_ascii()))
        .collect();
    Arc::new(out)
}

fn blob_from_hex(input: &StringArray) -> ArrayRef {
    let mut out = BinaryBuilder::with_capacity(input.len(), input.values().len() / 2);
    let mut bytes = Vec::new();
    for value in input.iter() {
        match value {
            Some(text) if parse_blob_hex(text, &mut bytes) => out.append_value(&bytes),
            _ => out.append_null(),
        }
    }
    Arc::new(out.finish())
}

/// Timestamps as text (RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]` in UTC, via cast) or as epoch
/// milliseconds. The first value picks which reading is tried first; values it rejects get the
/// other one, so a column may mix the two.
fn timestamp_from_text(input: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let target = CqlType::Timestamp.arrow_type();
    let strings = input.as_string::<i32>();
    let as_text = || cast_or_nulls(input, &target);
    let as_millis = || -> ArrayRef {
        let millis: TimestampMillisecondArray = strings
            .iter()
            .map(|value| value.and_then(parse_epoch_millis))
            .collect();
        Arc::new(millis.with_timezone(TIMESTAMP_TZ))
    };
    let millis_first = strings
        .iter()
        .flatten()
        .next()
        .is_some_and(|text| parse_epoch_millis(text).is_some());
    if millis_first {
        first_valid(input, as_millis(), as_text)
    } else {
        first_valid(input, as_text(), as_millis)
    }
}

/// `primary`, with the values it rejected taken from `fallback` (computed only if needed).
fn first_valid(
    input: &ArrayRef,
    primary: ArrayRef,
    fallback: impl FnOnce() -> ArrayRef,
) -> Result<ArrayRef, ArrowError> {
    if bad_rows(input.as_ref(), primary.as_ref()).is_empty() {
        return Ok(primary);
    }
    let Some(valid) = primary.logical_nulls() else {
        return Ok(primary);
    };
    let mask = BooleanArray::new(valid.into_inner(), None);
    zip(&mask, &primary, &fallback())
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        BinaryArray, Date32Array, Decimal128Array, FixedSizeBinaryArray, Float64Array, Int32Array,
        Int64Array, Time64NanosecondArray, TimestampMicrosecondArray,
    };

    use super::*;

    fn text(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    /// Converts and returns (output, bad rows).
    fn run(input: ArrayRef, ty: CqlType) -> (ArrayRef, Vec<usize>) {
        let out = convert_column(&input, ty).unwrap();
        assert_eq!(out.data_type(), &ty.arrow_type(), "{ty}");
        assert_eq!(out.len(), input.len());
        let bad = bad_rows(input.as_ref(), out.as_ref());
        (out, bad)
    }

    #[test]
    fn numbers_from_text_flag_bad_values_and_keep_nulls() {
        let (out, bad) = run(
            text(&[Some("1.5"), None, Some("abc"), Some("-2")]),
            CqlType::Double,
        );
        let out = out.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(out.value(0), 1.5);
        assert!(out.is_null(1));
        assert_eq!(bad, vec![2]);

        let (_, bad) = run(text(&[Some("127"), Some("128")]), CqlType::TinyInt);
        assert_eq!(bad, vec![1]);
        let (_, bad) = run(text(&[Some("1.0"), Some("7")]), CqlType::Int);
        assert_eq!(bad, vec![0]);
    }

    #[test]
    fn booleans_accept_common_spellings() {
        let (out, bad) = run(
            text(&[
                Some("true"),
                Some("FALSE"),
                Some("yes"),
                Some("No"),
                Some("1"),
                Some("0"),
            ]),
            CqlType::Boolean,
        );
        assert!(bad.is_empty());
        let out = out.as_boolean();
        let got: Vec<bool> = (0..6).map(|i| out.value(i)).collect();
        assert_eq!(got, vec![true, false, true, false, true, false]);
        let (_, bad) = run(text(&[Some("maybe")]), CqlType::Boolean);
        assert_eq!(bad, vec![0]);
    }

    #[test]
    fn timestamps_from_text_and_epoch_millis() {
        let (out, bad) = run(
            text(&[
                Some("2024-01-15T10:30:00Z"),
                Some("2024-01-15 10:30:00.250"),
                Some("2024-01-15T12:30:00+02:00"),
                Some("1705314600000"),
                Some("yesterday"),
            ]),
            CqlType::Timestamp,
        );
        assert_eq!(bad, vec![4]);
        let out = out
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(out.value(0), 1_705_314_600_000);
        assert_eq!(out.value(1), 1_705_314_600_250);
        assert_eq!(out.value(2), 1_705_314_600_000);
        assert_eq!(out.value(3), 1_705_314_600_000);

        // Millisecond-first columns fall back to text.
        let (out, bad) = run(
            text(&[Some("1705314600000"), Some("2024-01-15T10:30:00Z")]),
            CqlType::Timestamp,
        );
        assert!(bad.is_empty());
        let out = out
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(out.value(1), 1_705_314_600_000);
    }

    #[test]
    fn timestamps_from_numbers_and_other_units() {
        let (out, bad) = run(
            Arc::new(Int64Array::from(vec![1_705_314_600_000])),
            CqlType::Timestamp,
        );
        assert!(bad.is_empty());
        assert_eq!(
            out.as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .unwrap()
                .value(0),
            1_705_314_600_000
        );
        let micros = TimestampMicrosecondArray::from(vec![1_705_314_600_000_123]);
        let (out, _) = run(Arc::new(micros), CqlType::Timestamp);
        assert_eq!(
            out.as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .unwrap()
                .value(0),
            1_705_314_600_000
        );
    }

    #[test]
    fn dates_times_and_decimals_from_text() {
        let (out, bad) = run(text(&[Some("1970-01-11"), Some("Jan 1")]), CqlType::Date);
        assert_eq!(bad, vec![1]);
        assert_eq!(
            out.as_any().downcast_ref::<Date32Array>().unwrap().value(0),
            10
        );
        let (out, bad) = run(text(&[Some("00:00:01.5"), Some("25:00")]), CqlType::Time);
        assert_eq!(bad, vec![1]);
        assert_eq!(
            out.as_any()
                .downcast_ref::<Time64NanosecondArray>()
                .unwrap()
                .value(0),
            1_500_000_000
        );
        let (out, bad) = run(text(&[Some("12.25"), Some("x")]), CqlType::DECIMAL);
        assert_eq!(bad, vec![1]);
        assert_eq!(
            out.as_any()
                .downcast_ref::<Decimal128Array>()
                .unwrap()
                .value(0),
            12_250_000
        );
    }

    #[test]
    fn uuids_inets_ascii_and_blobs() {
        let (out, bad) = run(
            text(&[Some("123E4567-E89B-12D3-A456-426614174000"), Some("nope")]),
            CqlType::Uuid,
        );
        assert_eq!(bad, vec![1]);
        assert_eq!(
            out.as_string::<i32>().value(0),
            "123e4567-e89b-12d3-a456-426614174000"
        );
        let (_, bad) = run(
            text(&[Some("9b2f0e4c-5a1d-4c2b-8e7f-0a1b2c3d4e5f")]),
            CqlType::TimeUuid,
        );
        assert_eq!(bad, vec![0]);
        let uuid_bytes = Uuid::parse_str("123e4567-e89b-12d3-a456-426614174000")
            .unwrap()
            .into_bytes();
        let fixed = FixedSizeBinaryArray::try_from_iter(std::iter::once(uuid_bytes)).unwrap();
        let (out, bad) = run(Arc::new(fixed), CqlType::TimeUuid);
        assert!(bad.is_empty());
        assert_eq!(
            out.as_string::<i32>().value(0),
            "123e4567-e89b-12d3-a456-426614174000"
        );

        let (out, bad) = run(
            text(&[Some("0:0:0:0:0:0:0:1"), Some("1.2.3.4"), Some("host")]),
            CqlType::Inet,
        );
        assert_eq!(bad, vec![2]);
        assert_eq!(out.as_string::<i32>().value(0), "::1");

        let (_, bad) = run(text(&[Some("plain"), Some("café")]), CqlType::Ascii);
        assert_eq!(bad, vec![1]);

        let (out, bad) = run(text(&[Some("0xcafe"), Some("cafe")]), CqlType::Blob);
        assert_eq!(bad, vec![1]);
        assert_eq!(out.as_binary::<i32>().value(0), &[0xca, 0xfe]);
        let (out, bad) = run(
            Arc::new(BinaryArray::from(vec![&b"\x01\x02"[..]])),
            CqlType::Blob,
        );
        assert!(bad.is_empty());
        assert_eq!(out.as_binary::<i32>().value(0), &[1, 2]);
    }

    #[test]
    fn text_from_other_types_and_impossible_casts() {
        let (out, bad) = run(Arc::new(Int32Array::from(vec![7])), CqlType::Text);
        assert!(bad.is_empty());
        assert_eq!(out.as_string::<i32>().value(0), "7");
        let (_, bad) = run(Arc::new(Int32Array::from(vec![7])), CqlType::Uuid);
        assert_eq!(bad, vec![0]);
    }

    #[test]
    fn integers_refuse_fractions_from_floats_and_decimals() {
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![Some(2.0), Some(1.5), None]));
        let (out, bad) = run(floats, CqlType::Int);
        assert_eq!(bad, vec![1]);
        assert_eq!(
            out.as_any().downcast_ref::<Int32Array>().unwrap().value(0),
            2
        );
        let decimals: ArrayRef = Arc::new(
            Decimal128Array::from(vec![300, 250])
                .with_precision_and_scale(5, 2)
                .unwrap(),
        );
        let (out, bad) = run(decimals, CqlType::BigInt);
        assert_eq!(bad, vec![1]);
        assert_eq!(
            out.as_any().downcast_ref::<Int64Array>().unwrap().value(0),
            3
        );
        let (_, bad) = run(Arc::new(Float64Array::from(vec![1e10])), CqlType::Int);
        assert_eq!(bad, vec![0]);
    }

    #[test]
    fn collections_from_json_text_and_from_lists_flag_rows_with_bad_elements() {
        let list = CqlType::list(CqlType::Int).unwrap();
        let (out, bad) = run(
            text(&[
                Some("[1, 2]"),
                Some("[1, \"x\"]"),
                Some("[]"),
                None,
                Some("{}"),
                Some("[[1]]"),
            ]),
            list,
        );
        assert_eq!(bad, vec![1, 4, 5]);
        let out = out.as_list::<i32>();
        assert_eq!(out.value_offsets(), &[0, 2, 2, 2, 2, 2, 2]);
        assert_eq!(
            out.values()
                .as_primitive::<arrow::datatypes::Int32Type>()
                .values(),
            &[1, 2]
        );

        let map = CqlType::map(CqlType::Text, CqlType::Double).unwrap();
        let (out, bad) = run(
            text(&[
                Some("{\"a\": 1.5, \"b\": 2}"),
                Some("{\"a\": \"high\"}"),
                Some("[1]"),
            ]),
            map,
        );
        assert_eq!(bad, vec![1, 2]);
        let out = out.as_map();
        assert_eq!(out.value_offsets(), &[0, 2, 2, 2]);
        assert_eq!(out.keys().as_string::<i32>().value(1), "b");
        assert_eq!(
            out.values()
                .as_primitive::<arrow::datatypes::Float64Type>()
                .values(),
            &[1.5, 2.0]
        );

        // A list input (Parquet, NDJSON) converts element by element: uuids are checked.
        let mut uuids = arrow::array::ListBuilder::new(StringBuilder::new());
        uuids.append_value([Some("9B2E5F1A-0C3D-4E5F-8A9B-0C1D2E3F4A5B")]);
        uuids.append_value([Some("nope")]);
        let set = CqlType::set(CqlType::Uuid).unwrap();
        let (out, bad) = run(Arc::new(uuids.finish()), set);
        assert_eq!(bad, vec![1]);
        assert_eq!(
            out.as_list::<i32>().value(0).as_string::<i32>().value(0),
            "9b2e5f1a-0c3d-4e5f-8a9b-0c1d2e3f4a5b"
        );
    }

    #[test]
    fn keyless_rows_are_null_or_empty() {
        let column = text(&[Some("a"), Some(""), None]);
        assert_eq!(keyless_rows(column.as_ref()), vec![1, 2]);
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
        assert_eq!(keyless_rows(ints.as_ref()), vec![1]);
    }
}
