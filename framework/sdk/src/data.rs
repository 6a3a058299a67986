//! How a job's Rust values become Arrow columns and back.
//!
//! Every value a dataset holds implements [`Data`]: it occupies [`Data::WIDTH`] Arrow columns
//! (its *leaves*), appends itself to their builders, and reads itself back from a row of them.
//! Composite values flatten: a tuple `(K, V)` is `K`'s columns followed by `V`'s, a
//! `#[derive(Record)]` struct is its fields' columns in order, named after the fields. That flat
//! layout is what crosses the module boundary and what the host hashes, joins and writes, so a
//! key's columns are always the first columns of a keyed row.
//!
//! | Rust                | Arrow                          | CQL        |
//! |---------------------|--------------------------------|------------|
//! | `bool`              | Boolean                        | boolean    |
//! | `i8` `i16` `i32` `i64` | Int8 Int16 Int32 Int64      | tinyint smallint int bigint |
//! | `f32` `f64`         | Float32 Float64                | float double |
//! | `String`            | Utf8                           | text       |
//! | [`Blob`]            | Binary                         | blob       |
//! | [`Timestamp`]       | Timestamp(ms, "UTC")           | timestamp  |
//! | [`Date`]            | Date32                         | date       |
//! | [`Time`]            | Time64(ns)                     | time       |
//! | [`Decimal<P, S>`](Decimal) | Decimal128(P, S)        | decimal (`decimal(P,S)`; plain `decimal` is `Decimal<38, 6>`) |
//! | `Option<T>`         | `T`'s column, nullable         |            |
//! | `Vec<T>`            | List of `T` (a struct if `T` is composite) | list, set  |
//! | `BTreeMap<K, V>`    | Map of `K` to `V` (single-column `K` and `V`) | map     |
//!
//! A NULL list or map column reads as an empty `Vec` or `BTreeMap`: in CQL an empty collection
//! *is* NULL, so the two cannot be told apart (read `Option<Vec<T>>` to see which rows have one).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, BooleanBuilder, StringBuilder};
use arrow_array::types::{
    ArrowPrimitiveType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, Time64NanosecondType, TimestampMillisecondType,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, ListArray, MapArray, PrimitiveArray, RecordBatch,
    StringArray, StructArray,
};
use arrow_buffer::{BooleanBufferBuilder, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};

/// The time zone of CQL timestamps as the store maps them.
pub const TIMESTAMP_TZ: &str = "UTC";

/// A value that can travel in a dataset: see the module docs for the mapping.
pub trait Data: Sized + 'static {
    /// Arrow columns one value occupies.
    const WIDTH: usize;
    /// Whether a value is fixed-width columns only (no text, bytes or collections): reading one
    /// allocates nothing, so keyed operators hash and compare such keys as values rather than
    /// as their Arrow row-format bytes.
    const FIXED_WIDTH: bool = false;
    /// Builds the columns of many values.
    type Builder;
    /// Reads values back from columns.
    type Reader<'a>;

    /// Appends this type's leaf fields, named under `name` (see [`child_name`]); `nullable`
    /// when an enclosing `Option` makes them so.
    fn fields(name: &str, nullable: bool, out: &mut Vec<Field>);
    fn builder(capacity: usize) -> Self::Builder;
    fn append(builder: &mut Self::Builder, value: Self);
    /// Appends a null in every leaf (for an enclosing `Option`).
    fn append_null(builder: &mut Self::Builder);
    fn finish(builder: Self::Builder, out: &mut Vec<ArrayRef>);
    /// A reader over exactly [`Data::WIDTH`] columns, checking their types.
    fn reader<'a>(columns: Columns<'a>) -> Result<Self::Reader<'a>, DataError>;
    fn read(reader: &Self::Reader<'_>, row: usize) -> Result<Self, DataError>;
    /// Whether the value at `row` is null (meaningful for single-column types).
    fn is_null(reader: &Self::Reader<'_>, row: usize) -> bool;
    /// [`Data::read`] of a row [`Data::is_null`] said is not null: a single-column type skips
    /// checking again.
    #[inline(always)]
    fn read_valid(reader: &Self::Reader<'_>, row: usize) -> Result<Self, DataError> {
        Self::read(reader, row)
    }
}

/// The columns a reader reads, with their fields (for messages).
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    pub arrays: &'a [ArrayRef],
    pub fields: &'a [FieldRef],
}

impl<'a> Columns<'a> {
    pub fn of(batch: &'a RecordBatch) -> Columns<'a> {
        Columns {
            arrays: batch.columns(),
            fields: batch.schema_ref().fields(),
        }
    }

    /// The first `n` columns, and the rest.
    pub fn split(self, n: usize) -> Result<(Columns<'a>, Columns<'a>), DataError> {
        if self.arrays.len() < n || self.fields.len() < n {
            return Err(DataError::Shape {
                expected: n,
                found: self.arrays.len(),
            });
        }
        let (a, b) = self.arrays.split_at(n);
        let (f, g) = self.fields.split_at(n);
        Ok((
            Columns {
                arrays: a,
                fields: f,
            },
            Columns {
                arrays: b,
                fields: g,
            },
        ))
    }
}

/// A row that does not fit the type that reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataError {
    /// A column of another type than the field that reads it.
    Type {
        column: String,
        expected: String,
        found: String,
    },
    /// A null where the type has no `Option`.
    Null { column: String },
    /// Fewer columns than the type occupies.
    Shape { expected: usize, found: usize },
    /// Arrow refused to build the columns.
    Arrow { message: String },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Type {
                column,
                expected,
                found,
            } => write!(
                f,
                "column '{column}' is {found}, but the field reading it expects {expected}"
            ),
            DataError::Null { column } => write!(
                f,
                "column '{column}' holds a null; declare the field as Option<...> to read it"
            ),
            DataError::Shape { expected, found } => write!(
                f,
                "a row of {found} columns cannot hold a value of {expected} columns"
            ),
            DataError::Arrow { message } => write!(f, "building Arrow columns: {message}"),
        }
    }
}

impl std::error::Error for DataError {}

/// The name of a child column: `child` at the top level, `parent_child` below it.
pub fn child_name(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}_{child}")
    }
}

/// The schema of a dataset of `T`.
pub fn schema_of<T: Data>() -> SchemaRef {
    let mut fields = Vec::with_capacity(T::WIDTH);
    T::fields("", false, &mut fields);
    Arc::new(Schema::new(fields))
}

/// Encodes values as one batch of [`schema_of::<T>`](schema_of).
pub fn to_batch<T: Data>(values: impl IntoIterator<Item = T>) -> Result<RecordBatch, DataError> {
    let values = values.into_iter();
    let mut builder = T::builder(values.size_hint().0);
    let mut rows = 0;
    for value in values {
        T::append(&mut builder, value);
        rows += 1;
    }
    finish_batch::<T>(builder, rows)
}

/// Finishes a builder of `rows` values into a batch.
pub fn finish_batch<T: Data>(builder: T::Builder, rows: usize) -> Result<RecordBatch, DataError> {
    let mut columns = Vec::with_capacity(T::WIDTH);
    T::finish(builder, &mut columns);
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema_of::<T>(), columns, &options).map_err(|e| {
        DataError::Arrow {
            message: e.to_string(),
        }
    })
}

/// Decodes every row of `batch` as a `T`.
pub fn from_batch<T: Data>(batch: &RecordBatch) -> Result<Vec<T>, DataError> {
    let reader = T::reader(Columns::of(batch))?;
    (0..batch.num_rows())
        .map(|row| T::read(&reader, row))
        .collect()
}

/// Reads one column as an array of type `A`.
pub struct LeafReader<'a, A> {
    array: &'a A,
    name: &'a str,
    has_nulls: bool,
}

impl<A> fmt::Debug for LeafReader<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafReader")
            .field("name", &self.name)
            .finish()
    }
}

impl<'a, A: Array + 'static> LeafReader<'a, A> {
    fn new(columns: Columns<'a>, expected: &DataType) -> Result<Self, DataError> {
        let (Some(array), Some(field)) = (columns.arrays.first(), columns.fields.first()) else {
            return Err(DataError::Shape {
                expected: 1,
                found: 0,
            });
        };
        let mismatch = || DataError::Type {
            column: field.name().clone(),
            expected: expected.to_string(),
            found: array.data_type().to_string(),
        };
        if !same_type(array.data_type(), expected) {
            return Err(mismatch());
        }
        let array = array.as_any().downcast_ref::<A>().ok_or_else(mismatch)?;
        Ok(LeafReader {
            array,
            name: field.name(),
            has_nulls: array.null_count() > 0,
        })
    }

    /// The array, after checking that `row` is not null.
    #[inline(always)]
    fn non_null(&self, row: usize) -> Result<&'a A, DataError> {
        if self.has_nulls && self.array.is_null(row) {
            return Err(null_in(self.name));
        }
        Ok(self.array)
    }
}

/// The error of a null in a column read without `Option`: out of line, so that the reads a row
/// decode inlines stay small.
#[cold]
#[inline(never)]
fn null_in(column: &str) -> DataError {
    DataError::Null {
        column: column.to_string(),
    }
}

/// Types equal up to nested field names and nullability (a list's item may be named otherwise,
/// and a store's list items are nullable where a `Vec`'s are not).
pub fn same_type(found: &DataType, expected: &DataType) -> bool {
    match (found, expected) {
        (DataType::List(a), DataType::List(b)) | (DataType::Map(a, _), DataType::Map(b, _)) => {
            same_type(a.data_type(), b.data_type())
        }
        (DataType::Struct(a), DataType::Struct(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b.iter())
                    .all(|(a, b)| same_type(a.data_type(), b.data_type()))
        }
        _ => found == expected,
    }
}

/// `Data` for a type of one column: its builder and array types, its Arrow type, how to make a
/// builder of a capacity, append a value and read one back.
macro_rules! leaf_data {
    (
        impl[$($generics:tt)*] $rust:ty, $builder:ty, $array:ty, $data_type:expr, fixed: $fixed:expr,
        new: $new:expr, append: |$b:ident, $v:ident| $append:expr, read: |$a:ident, $row:ident| $read:expr
    ) => {
        impl<$($generics)*> Data for $rust {
            const WIDTH: usize = 1;
            const FIXED_WIDTH: bool = $fixed;
            type Builder = $builder;
            type Reader<'a> = LeafReader<'a, $array>;

            fn fields(name: &str, nullable: bool, out: &mut Vec<Field>) {
                out.push(Field::new(leaf_name(name), $data_type, nullable));
            }
            fn builder(capacity: usize) -> Self::Builder {
                $new(capacity)
            }
            #[inline(always)]
            fn append($b: &mut Self::Builder, $v: Self) {
                $append
            }
            #[inline(always)]
            fn append_null(builder: &mut Self::Builder) {
                builder.append_null();
            }
            fn finish(mut builder: Self::Builder, out: &mut Vec<ArrayRef>) {
                out.push(Arc::new(builder.finish()));
            }
            fn reader<'a>(columns: Columns<'a>) -> Result<Self::Reader<'a>, DataError> {
                LeafReader::new(columns, &$data_type)
            }
            #[inline(always)]
            fn read(reader: &Self::Reader<'_>, $row: usize) -> Result<Self, DataError> {
                let $a = reader.non_null($row)?;
                Ok($read)
            }
            #[inline(always)]
            fn is_null(reader: &Self::Reader<'_>, row: usize) -> bool {
                reader.array.is_null(row)
            }
            #[inline(always)]
            fn read_valid(reader: &Self::Reader<'_>, $row: usize) -> Result<Self, DataError> {
                let $a = reader.array;
                Ok($read)
            }
        }
    };
    (
        $rust:ty, $builder:ty, $array:ty, $data_type:expr, fixed: $fixed:expr,
        new: $new:expr, append: |$b:ident, $v:ident| $append:expr, read: |$a:ident, $row:ident| $read:expr
    ) => {
        leaf_data!(
            impl[] $rust, $builder, $array, $data_type, fixed: $fixed,
            new: $new, append: |$b, $v| $append, read: |$a, $row| $read
        );
    };
}

macro_rules! primitive_data {
    ($rust:ty, $arrow:ty, $data_type:expr) => {
        leaf_data!(
            $rust, PrimitiveColumn<$arrow>, PrimitiveArray<$arrow>, $data_type, fixed: true,
            new: |capacity| PrimitiveColumn::with_capacity(capacity, $data_type),
            append: |builder, value| builder.append_value(value),
            read: |array, row| array.value(row)
        );
    };
}

primitive_data!(i8, Int8Type, DataType::Int8);
primitive_data!(i16, Int16Type, DataType::Int16);
primitive_data!(i32, Int32Type, DataType::Int32);
primitive_data!(i64, Int64Type, DataType::Int64);
primitive_data!(f32, Float32Type, DataType::Float32);
primitive_data!(f64, Float64Type, DataType::Float64);

/// The name of a single column: `value` at the top level.
fn leaf_name(name: &str) -> String {
    if name.is_empty() {
        "value".to_string()
    } else {
        name.to_string()
    }
}

/// A CQL `timestamp`: milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const MILLIS_PER_HOUR: i64 = 3_600_000;

    pub fn millis(self) -> i64 {
        self.0
    }

    /// The start of the `bucket_millis`-long bucket holding this instant (`date_trunc`-like for
    /// buckets that divide a day; times before 1970 round down too).
    pub fn truncate(self, bucket_millis: i64) -> Timestamp {
        Timestamp(self.0.div_euclid(bucket_millis.max(1)) * bucket_millis.max(1))
    }
}

/// A CQL `date`: days since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Date(pub i32);

/// A CQL `time`: nanoseconds since midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub i64);

impl Time {
    pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

    /// The time of day `hours:minutes:seconds`.
    pub fn hms(hours: i64, minutes: i64, seconds: i64) -> Time {
        Time(((hours * 60 + minutes) * 60 + seconds) * Self::NANOS_PER_SECOND)
    }
}

/// A CQL `decimal` as its column holds it: fixed point, `PRECISION` digits of which `SCALE`
/// after the point, kept as the unscaled integer (`Decimal::<15, 2>(12345)` is 123.45). A
/// `decimal(15,2)` column reads as `Decimal<15, 2>`, plain `decimal` as `Decimal<38, 6>`; a
/// field of another precision or scale than its column is refused by name at submit time, as
/// any other type mismatch is, so no value is ever rescaled silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Decimal<const PRECISION: u8, const SCALE: i8>(pub i128);

impl<const PRECISION: u8, const SCALE: i8> Decimal<PRECISION, SCALE> {
    /// The unscaled integer.
    pub fn unscaled(self) -> i128 {
        self.0
    }

    /// The nearest `f64` (for arithmetic where exactness does not matter).
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / 10f64.powi(i32::from(SCALE))
    }
}

impl<const PRECISION: u8, const SCALE: i8> fmt::Display for Decimal<PRECISION, SCALE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scale = usize::try_from(SCALE).unwrap_or(0);
        let digits = self.0.unsigned_abs().to_string();
        let sign = if self.0 < 0 { "-" } else { "" };
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{whole}.{fraction}")
    }
}

/// A CQL `blob`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Blob(pub Vec<u8>);

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from(TIMESTAMP_TZ)))
}

/// The builder of a primitive column: values pushed onto a `Vec`, which inlines into a row's
/// append (arrow's `PrimitiveBuilder` goes through a buffer builder call per value), and a
/// validity bitmap made only at the first null.
pub struct PrimitiveColumn<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    valid: Option<BooleanBufferBuilder>,
    data_type: DataType,
}

impl<T: ArrowPrimitiveType> fmt::Debug for PrimitiveColumn<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrimitiveColumn")
            .field("data_type", &self.data_type)
            .field("len", &self.values.len())
            .finish()
    }
}

impl<T: ArrowPrimitiveType> PrimitiveColumn<T> {
    /// A builder of a `data_type` column (`T`'s own type, or one with a time zone or
    /// precision).
    pub fn with_capacity(capacity: usize, data_type: DataType) -> Self {
        PrimitiveColumn {
            values: Vec::with_capacity(capacity),
            valid: None,
            data_type,
        }
    }

    #[inline(always)]
    pub fn append_value(&mut self, value: T::Native) {
        self.values.push(value);
        if let Some(valid) = &mut self.valid {
            valid.append(true);
        }
    }

    #[inline]
    pub fn append_null(&mut self) {
        let valid = self.valid.get_or_insert_with(|| {
            let mut valid = BooleanBufferBuilder::new(self.values.capacity());
            valid.append_n(self.values.len(), true);
            valid
        });
        valid.append(false);
        self.values.push(T::Native::default());
    }

    /// The column of the values appended so far, leaving the builder empty (as arrow's
    /// builders do).
    pub fn finish(&mut self) -> PrimitiveArray<T> {
        let nulls = self
            .valid
            .take()
            .map(|mut valid| NullBuffer::new(valid.finish()));
        let values = ScalarBuffer::from(std::mem::take(&mut self.values));
        PrimitiveArray::<T>::new(values, nulls).with_data_type(self.data_type.clone())
    }
}

leaf_data!(
    Timestamp, PrimitiveColumn<TimestampMillisecondType>,
    PrimitiveArray<TimestampMillisecondType>, timestamp_type(), fixed: true,
    new: |capacity| PrimitiveColumn::with_capacity(capacity, timestamp_type()),
    append: |builder, value| builder.append_value(value.0),
    read: |array, row| Timestamp(array.value(row))
);
leaf_data!(
    Date, PrimitiveColumn<Date32Type>, PrimitiveArray<Date32Type>, DataType::Date32, fixed: true,
    new: |capacity| PrimitiveColumn::with_capacity(capacity, DataType::Date32),
    append: |builder, value| builder.append_value(value.0),
    read: |array, row| Date(array.value(row))
);
leaf_data!(
    impl[const PRECISION: u8, const SCALE: i8] Decimal<PRECISION, SCALE>,
    PrimitiveColumn<Decimal128Type>, PrimitiveArray<Decimal128Type>,
    DataType::Decimal128(PRECISION, SCALE), fixed: true,
    new: |capacity| PrimitiveColumn::with_capacity(capacity, DataType::Decimal128(PRECISION, SCALE)),
    append: |builder, value| builder.append_value(value.0),
    read: |array, row| Decimal(array.value(row))
);
leaf_data!(
    Time, PrimitiveColumn<Time64NanosecondType>, PrimitiveArray<Time64NanosecondType>,
    DataType::Time64(TimeUnit::Nanosecond), fixed: true,
    new: |capacity| PrimitiveColumn::with_capacity(capacity, DataType::Time64(TimeUnit::Nanosecond)),
    append: |builder, value| builder.append_value(value.0),
    read: |array, row| Time(array.value(row))
);
leaf_data!(
    bool, BooleanBuilder, BooleanArray, DataType::Boolean, fixed: true,
    new: BooleanBuilder::with_capacity,
    append: |builder, value| builder.append_value(value),
    read: |array, row| array.value(row)
);
leaf_data!(
    String, StringBuilder, StringArray, DataType::Utf8, fixed: false,
    new: |capacity| StringBuilder::with_capacity(capacity, capacity * 8),
    append: |builder, value| builder.append_value(value),
    read: |array, row| array.value(row).to_string()
);
leaf_data!(
    Blob, BinaryBuilder, BinaryArray, DataType::Binary, fixed: false,
    new: |capacity| BinaryBuilder::with_capacity(capacity, capacity * 8),
    append: |builder, value| builder.append_value(value.0),
    read: |array, row| Blob(array.value(row).to_vec())
);

/// `Option<T>` of a single-column `T` is that column, nullable. A composite `T` gets a leading
/// boolean column named `<name>_some` (true, or null for `None`) before its nullable columns, so
/// that `Some` of an all-null value stays `Some`.
pub struct OptionBuilder<T: Data> {
    marker: Option<BooleanBuilder>,
    inner: T::Builder,
}

impl<T: Data> fmt::Debug for OptionBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionBuilder").finish_non_exhaustive()
    }
}

pub struct OptionReader<'a, T: Data> {
    marker: Option<&'a BooleanArray>,
    inner: T::Reader<'a>,
}

impl<T: Data> fmt::Debug for OptionReader<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionReader").finish_non_exhaustive()
    }
}

impl<T: Data> Data for Option<T> {
    const WIDTH: usize = if T::WIDTH == 1 { 1 } else { T::WIDTH + 1 };
    const FIXED_WIDTH: bool = T::FIXED_WIDTH;
    type Builder = OptionBuilder<T>;
    type Reader<'a> = OptionReader<'a, T>;

    fn fields(name: &str, _nullable: bool, out: &mut Vec<Field>) {
        if T::WIDTH != 1 {
            out.push(Field::new(
                child_name(name, "some"),
                DataType::Boolean,
                true,
            ));
        }
        T::fields(name, true, out);
    }
    fn builder(capacity: usize) -> Self::Builder {
        OptionBuilder {
            marker: (T::WIDTH != 1).then(|| BooleanBuilder::with_capacity(capacity)),
            inner: T::builder(capacity),
        }
    }
    #[inline(always)]
    fn append(builder: &mut Self::Builder, value: Self) {
        match value {
            Some(value) => {
                if let Some(marker) = &mut builder.marker {
                    marker.append_value(true);
                }
                T::append(&mut builder.inner, value);
            }
            None => Self::append_null(builder),
        }
    }
    #[inline(always)]
    fn append_null(builder: &mut Self::Builder) {
        if let Some(marker) = &mut builder.marker {
            marker.append_null();
        }
        T::append_null(&mut builder.inner);
    }
    fn finish(builder: Self::Builder, out: &mut Vec<ArrayRef>) {
        if let Some(mut marker) = builder.marker {
            out.push(Arc::new(marker.finish()));
        }
        T::finish(builder.inner, out);
    }
    fn reader<'a>(columns: Columns<'a>) -> Result<Self::Reader<'a>, DataError> {
        if T::WIDTH == 1 {
            return Ok(OptionReader {
                marker: None,
                inner: T::reader(columns)?,
            });
        }
        let (marker, rest) = columns.split(1)?;
        let marker = LeafReader::<BooleanArray>::new(marker, &DataType::Boolean)?;
        Ok(OptionReader {
            marker: Some(marker.array),
            inner: T::reader(rest)?,
        })
    }
    #[inline(always)]
    fn read(reader: &Self::Reader<'_>, row: usize) -> Result<Self, DataError> {
        match reader.marker {
            Some(marker) if marker.is_valid(row) => T::read(&reader.inner, row).map(Some),
            None if !T::is_null(&reader.inner, row) => T::read_valid(&reader.inner, row).map(Some),
            _ => Ok(None),
        }
    }
    #[inline(always)]
    fn is_null(reader: &Self::Reader<'_>, row: usize) -> bool {
        match reader.marker {
            Some(marker) => marker.is_null(row),
            None => T::is_null(&reader.inner, row),
        }
    }
}

/// `Vec<T>` is one list column; its items are `T`'s column, or a struct of `T`'s columns.
pub struct ListBuilder<T: Data> {
    items: T::Builder,
    offsets: Vec<i32>,
    valid: Vec<bool>,
}

impl<T: Data> fmt::Debug for ListBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListBuilder")
            .field("lists", &self.valid.len())
            .finish_non_exhaustive()
    }
}

pub struct ListReader<'a, T: Data> {
    list: &'a ListArray,
    name: &'a str,
    items: T::Reader<'a>,
}

impl<T: Data> fmt::Debug for ListReader<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListReader")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn item_fields<T: Data>() -> Vec<Field> {
    let mut fields = Vec::with_capacity(T::WIDTH);
    T::fields("", false, &mut fields);
    fields
}

fn list_item_field<T: Data>() -> Field {
    let fields = item_fields::<T>();
    if T::WIDTH == 1 {
        fields
            .into_iter()
            .next()
            .map(|f| f.with_name("item"))
            .unwrap_or_else(|| Field::new("item", DataType::Null, true))
    } else {
        Field::new("item", DataType::Struct(Fields::from(fields)), false)
    }
}

impl<T: Data> Data for Vec<T> {
    const WIDTH: usize = 1;
    type Builder = ListBuilder<T>;
    type Reader<'a> = ListReader<'a, T>;

    fn fields(name: &str, nullable: bool, out: &mut Vec<Field>) {
        out.push(Field::new(
            leaf_name(name),
            DataType::List(Arc::new(list_item_field::<T>())),
            nullable,
        ));
    }
    fn builder(capacity: usize) -> Self::Builder {
        let mut offsets = Vec::with_capacity(capacity + 1);
        offsets.push(0);
        ListBuilder {
            items: T::builder(capacity),
            offsets,
            valid: Vec::with_capacity(capacity),
        }
    }
    #[inline]
    fn append(builder: &mut Self::Builder, value: Self) {
        let end = builder.offsets.last().copied().unwrap_or(0) + value.len() as i32;
        for item in value {
            T::append(&mut builder.items, item);
        }
        builder.offsets.push(end);
        builder.valid.push(true);
    }
    #[inline]
    fn append_null(builder: &mut Self::Builder) {
        let end = builder.offsets.last().copied().unwrap_or(0);
        builder.offsets.push(end);
        builder.valid.push(false);
    }
    fn finish(builder: Self::Builder, out: &mut Vec<ArrayRef>) {
        let mut items = Vec::with_capacity(T::WIDTH);
        T::finish(builder.items, &mut items);
        let item_field = list_item_field::<T>();
        let values: ArrayRef = if T::WIDTH == 1 {
            items
                .pop()
                .unwrap_or_else(|| arrow_array::new_empty_array(&DataType::Null))
        } else {
            let fields = Fields::from(item_fields::<T>());
            let len = builder.offsets.last().copied().unwrap_or(0) as usize;
            if items.is_empty() {
                Arc::new(StructArray::new_empty_fields(len, None))
            } else {
                Arc::new(StructArray::new(fields, items, None))
            }
        };
        let nulls = builder
            .valid
            .iter()
            .any(|v| !v)
            .then(|| NullBuffer::from(builder.valid.clone()));
        out.push(Arc::new(ListArray::new(
            Arc::new(item_field),
            OffsetBuffer::new(builder.offsets.into()),
            values,
            nulls,
        )));
    }
    fn reader<'a>(columns: Columns<'a>) -> Result<Self::Reader<'a>, DataError> {
        let (Some(array), Some(field)) = (columns.arrays.first(), columns.fields.first()) else {
            return Err(DataError::Shape {
                expected: 1,
                found: 0,
            });
        };
        let expected = DataType::List(Arc::new(list_item_field::<T>()));
        let mismatch = || DataError::Type {
            column: field.name().clone(),
            expected: expected.to_string(),
            found: array.data_type().to_string(),
        };
        let list = array
            .as_any()
            .downcast_ref::<ListArray>()
            .ok_or_else(mismatch)?;
        if !same_type(list.data_type(), &expected) {
            return Err(mismatch());
        }
        let DataType::List(item) = list.data_type() else {
            return Err(mismatch());
        };
        let items = if T::WIDTH == 1 {
            Columns {
                arrays: std::slice::from_ref(list.values()),
                fields: std::slice::from_ref(item),
            }
        } else {
            let values = list
                .values()
                .as_any()
                .downcast_ref::<StructArray>()
                .ok_or_else(mismatch)?;
            let DataType::Struct(fields) = item.data_type() else {
                return Err(mismatch());
            };
            Columns {
                arrays: values.columns(),
                fields,
            }
        };
        Ok(ListReader {
            list,
            name: field.name(),
            items: T::reader(items)?,
        })
    }
    #[inline]
    fn read(reader: &Self::Reader<'_>, row: usize) -> Result<Self, DataError> {
        if reader.list.is_null(row) {
            // An empty CQL collection is NULL.
            return Ok(Vec::new());
        }
        let offsets = reader.list.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        (start..end).map(|i| T::read(&reader.items, i)).collect()
    }
    #[inline]
    fn is_null(reader: &Self::Reader<'_>, row: usize) -> bool {
        reader.list.is_null(row)
    }
}

/// `BTreeMap<K, V>` is one map column (a CQL `map<K, V>`); `K` and `V` are single-column types.
pub struct MapBuilder<K: Data, V: Data> {
    keys: K::Builder,
    values: V::Builder,
    offsets: Vec<i32>,
    valid: Vec<bool>,
}

impl<K: Data, V: Data> fmt::Debug for MapBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapBuilder")
            .field("maps", &self.valid.len())
            .finish_non_exhaustive()
    }
}

pub struct MapReader<'a, K: Data, V: Data> {
    map: &'a MapArray,
    keys: K::Reader<'a>,
    values: V::Reader<'a>,
}

impl<K: Data, V: Data> fmt::Debug for MapReader<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapReader").finish_non_exhaustive()
    }
}

/// The entries field of a map of `K` to `V`, named as the store names a `map<K, V>` column's.
fn map_entries_field<K: Data, V: Data>() -> FieldRef {
    const {
        assert!(
            K::WIDTH == 1 && V::WIDTH == 1,
            "a BTreeMap's keys and values are single-column types"
        )
    };
    let mut fields = Vec::with_capacity(2);
    K::fields("keys", false, &mut fields);
    V::fields("values", true, &mut fields);
    Arc::new(Field::new(
        "entries",
        DataType::Struct(Fields::from(fields)),
        false,
    ))
}

impl<K: Data + Ord, V: Data> Data for BTreeMap<K, V> {
    const WIDTH: usize = 1;
    type Builder = MapBuilder<K, V>;
    type Reader<'a> = MapReader<'a, K, V>;

    fn fields(name: &str, nullable: bool, out: &mut Vec<Field>) {
        out.push(Field::new(
            leaf_name(name),
            DataType::Map(map_entries_field::<K, V>(), false),
            nullable,
        ));
    }
    fn builder(capacity: usize) -> Self::Builder {
        let mut offsets = Vec::with_capacity(capacity + 1);
        offsets.push(0);
        MapBuilder {
            keys: K::builder(capacity),
            values: V::builder(capacity),
            offsets,
            valid: Vec::with_capacity(capacity),
        }
    }
    #[inline]
    fn append(builder: &mut Self::Builder, value: Self) {
        let end = builder.offsets.last().copied().unwrap_or(0) + value.len() as i32;
        for (k, v) in value {
            K::append(&mut builder.keys, k);
            V::append(&mut builder.values, v);
        }
        builder.offsets.push(end);
        builder.valid.push(true);
    }
    #[inline]
    fn append_null(builder: &mut Self::Builder) {
        let end = builder.offsets.last().copied().unwrap_or(0);
        builder.offsets.push(end);
        builder.valid.push(false);
    }
    fn finish(builder: Self::Builder, out: &mut Vec<ArrayRef>) {
        let mut columns = Vec::with_capacity(2);
        K::finish(builder.keys, &mut columns);
        V::finish(builder.values, &mut columns);
        let entries = map_entries_field::<K, V>();
        let DataType::Struct(fields) = entries.data_type() else {
            unreachable!("a map's entries are a struct")
        };
        let nulls = builder
            .valid
            .iter()
            .any(|v| !v)
            .then(|| NullBuffer::from(builder.valid.clone()));
        out.push(Arc::new(MapArray::new(
            Arc::clone(&entries),
            OffsetBuffer::new(builder.offsets.into()),
            StructArray::new(fields.clone(), columns, None),
            nulls,
            false,
        )));
    }
    fn reader<'a>(columns: Columns<'a>) -> Result<Self::Reader<'a>, DataError> {
        let (Some(array), Some(field)) = (columns.arrays.first(), columns.fields.first()) else {
            return Err(DataError::Shape {
                expected: 1,
                found: 0,
            });
        };
        let expected = DataType::Map(map_entries_field::<K, V>(), false);
        let mismatch = || DataError::Type {
            column: field.name().clone(),
            expected: expected.to_string(),
            found: array.data_type().to_string(),
        };
        if !same_type(array.data_type(), &expected) {
            return Err(mismatch());
        }
        let map = array
            .as_any()
            .downcast_ref::<MapArray>()
            .ok_or_else(mismatch)?;
        let DataType::Struct(fields) = map.entries().data_type() else {
            return Err(mismatch());
        };
        let entries = map.entries().columns();
        Ok(MapReader {
            map,
            keys: K::reader(Columns {
                arrays: &entries[..1],
                fields: &fields[..1],
            })?,
            values: V::reader(Columns {
                arrays: &entries[1..],
                fields: &fields[1..],
            })?,
        })
    }
    #[inline]
    fn read(reader: &Self::Reader<'_>, row: usize) -> Result<Self, DataError> {
        if reader.map.is_null(row) {
            // An empty CQL collection is NULL.
            return Ok(BTreeMap::new());
        }
        let offsets = reader.map.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        (start..end)
            .map(|i| Ok((K::read(&reader.keys, i)?, V::read(&reader.values, i)?)))
            .collect()
    }
    #[inline]
    fn is_null(reader: &Self::Reader<'_>, row: usize) -> bool {
        reader.map.is_null(row)
    }
}

/// `()` occupies no columns: `key_by(|_| ())` keys everything alike, `map(|r| (r.id, ()))` is a
/// set of keys.
impl Data for () {
    const WIDTH: usize = 0;
    const FIXED_WIDTH: bool = true;
    type Builder = ();
    type Reader<'a> = ();

    fn fields(_name: &str, _nullable: bool, _out: &mut Vec<Field>) {}
    fn builder(_capacity: usize) -> Self::Builder {}
    #[inline]
    fn append(_builder: &mut Self::Builder, _value: Self) {}
    #[inline]
    fn append_null(_builder: &mut Self::Builder) {}
    fn finish(_builder: Self::Builder, _out: &mut Vec<ArrayRef>) {}
    fn reader<'a>(_columns: Columns<'a>) -> Result<Self::Reader<'a>, DataError> {
        Ok(())
    }
    #[inline]
    fn read(_reader: &Self::Reader<'_>, _row: usize) -> Result<Self, DataError> {
        Ok(())
    }
    #[inline]
    fn is_null(_reader: &Self::Reader<'_>, _row: usize) -> bool {
        false
    }
}

macro_rules! tuple_data {
    ($($name:ident $index:tt),+) => {
        impl<$($name: Data),+> Data for ($($name,)+) {
            const WIDTH: usize = 0 $(+ $name::WIDTH)+;
            const FIXED_WIDTH: bool = true $(&& $name::FIXED_WIDTH)+;
            type Builder = ($($name::Builder,)+);
            type Reader<'a> = ($($name::Reader<'a>,)+);

            fn fields(name: &str, nullable: bool, out: &mut Vec<Field>) {
                $($name::fields(&child_name(name, concat!("_", stringify!($index))), nullable, out);)+
            }
            fn builder(capacity: usize) -> Self::Builder {
                ($($name::builder(capacity),)+)
            }
            #[inline(always)]
            fn append(builder: &mut Self::Builder, value: Self) {
                $($name::append(&mut builder.$index, value.$index);)+
            }
            #[inline(always)]
            fn append_null(builder: &mut Self::Builder) {
                $($name::append_null(&mut builder.$index);)+
            }
            fn finish(builder: Self::Builder, out: &mut Vec<ArrayRef>) {
                $($name::finish(builder.$index, out);)+
            }
            #[allow(non_snake_case, reason = "each element's columns are named after its type parameter")]
            fn reader<'a>(columns: Columns<'a>) -> Result<Self::Reader<'a>, DataError> {
                let rest = columns;
                $(let ($name, rest) = rest.split($name::WIDTH)?;)+
                let _ = rest;
                Ok(($($name::reader($name)?,)+))
            }
            #[inline(always)]
            fn read(reader: &Self::Reader<'_>, row: usize) -> Result<Self, DataError> {
                Ok(($($name::read(&reader.$index, row)?,)+))
            }
            #[inline]
            fn is_null(_reader: &Self::Reader<'_>, _row: usize) -> bool {
                false
            }
        }
    };
}

tuple_data!(A 0);
tuple_data!(A 0, B 1);
tuple_data!(A 0, B 1, C 2);
tuple_data!(A 0, B 1, C 2, D 3);
tuple_data!(A 0, B 1, C 2, D 3, E 4);
tuple_data!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_data!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_data!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Data + Clone + PartialEq + fmt::Debug>(values: Vec<T>) -> RecordBatch {
        let batch = to_batch(values.clone()).unwrap();
        assert_eq!(batch.num_columns(), T::WIDTH);
        assert_eq!(from_batch::<T>(&batch).unwrap(), values);
        batch
    }

    fn column_types(batch: &RecordBatch) -> Vec<DataType> {
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect()
    }

    #[test]
    fn maps_round_trip_and_cql_nulls_read_as_empty_collections() {
        let mut tags = BTreeMap::new();
        tags.insert("site".to_string(), 3i64);
        tags.insert("kind".to_string(), 1i64);
        let batch = round_trip(vec![(7i64, tags.clone()), (8i64, BTreeMap::new())]);
        let DataType::Map(entries, false) = batch.schema().field(1).data_type().clone() else {
            panic!("{:?}", batch.schema())
        };
        assert_eq!(entries.name(), "entries");

        // A store's map<text, bigint> and list<double> columns, NULL in the second row.
        let mut maps = arrow_array::builder::MapBuilder::new(
            None,
            StringBuilder::new(),
            arrow_array::builder::PrimitiveBuilder::<Int64Type>::new(),
        );
        maps.keys().append_value("site");
        maps.values().append_value(3);
        maps.append(true).unwrap();
        maps.append(false).unwrap();
        let mut lists =
            arrow_array::builder::ListBuilder::new(arrow_array::builder::PrimitiveBuilder::<
                Float64Type,
            >::new())
            .with_field(Arc::new(Field::new("item", DataType::Float64, true)));
        lists.append_value([Some(1.5)]);
        lists.append_null();
        let stored = RecordBatch::try_from_iter(vec![
            ("tags", Arc::new(maps.finish()) as ArrayRef),
            ("readings", Arc::new(lists.finish()) as ArrayRef),
        ])
        .unwrap();
        let rows = from_batch::<(BTreeMap<String, i64>, Vec<f64>)>(&stored).unwrap();
        assert_eq!(rows[0].0.get("site"), Some(&3));
        assert_eq!(rows[0].1, vec![1.5]);
        assert!(rows[1].0.is_empty() && rows[1].1.is_empty());
        let optional = from_batch::<Option<Vec<f64>>>(&stored.project(&[1]).unwrap()).unwrap();
        assert_eq!(optional, vec![Some(vec![1.5]), None]);

        let err = from_batch::<BTreeMap<String, String>>(&stored.project(&[0]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("column 'tags'"), "{err}");
    }

    #[test]
    fn primitives_round_trip_as_the_stores_types() {
        let batch = round_trip(vec![(1i64, 2.5f64, "a".to_string(), Timestamp(7), true)]);
        assert_eq!(
            column_types(&batch),
            vec![
                DataType::Int64,
                DataType::Float64,
                DataType::Utf8,
                timestamp_type(),
                DataType::Boolean
            ]
        );
        round_trip(vec![(1i8, 2i16, 3i32, 4f32, Date(5), Blob(vec![1, 2]))]);
    }

    #[test]
    fn decimals_and_times_round_trip_at_their_columns_types() {
        let batch = round_trip(vec![
            (Decimal::<15, 2>(12_345), Time::hms(13, 5, 9)),
            (Decimal::<15, 2>(-7), Time(0)),
        ]);
        assert_eq!(
            column_types(&batch),
            vec![
                DataType::Decimal128(15, 2),
                DataType::Time64(TimeUnit::Nanosecond)
            ]
        );
        assert_eq!(Decimal::<15, 2>(12_345).to_string(), "123.45");
        assert_eq!(Decimal::<15, 2>(-7).to_string(), "-0.07");
        assert_eq!(Decimal::<38, 0>(42).to_string(), "42");
        assert!((Decimal::<15, 2>(12_345).to_f64() - 123.45).abs() < 1e-9);
        // Another precision or scale than the column's is a type error, never a rescale.
        let err = from_batch::<(Decimal<15, 3>, Time)>(&batch).unwrap_err();
        assert!(
            matches!(&err, DataError::Type { expected, found, .. }
                if expected == "Decimal128(15, 3)" && found == "Decimal128(15, 2)"),
            "{err:?}"
        );
    }

    #[test]
    fn options_keep_some_of_all_null_values_apart_from_none() {
        round_trip(vec![Some(1i64), None, Some(3)]);
        let batch = round_trip(vec![
            (1i64, Some((Some(2i64), None::<String>))),
            (2, Some((None, None))),
            (3, None),
        ]);
        // key, marker, two nullable leaves.
        assert_eq!(batch.num_columns(), 4);
        assert_eq!(batch.schema().field(1).name(), "_1_some");
    }

    #[test]
    fn primitive_columns_get_nulls_wherever_the_first_one_comes() {
        // Null first, null after values, no null at all; a time zone kept with its nulls.
        let rows = vec![
            (None, Some(1.5f64), 1i64, Some(Timestamp(3))),
            (Some(2i32), None, 2, None),
            (Some(3), Some(-0.0), 3, Some(Timestamp(-4))),
        ];
        let batch = round_trip(rows);
        assert_eq!(
            batch
                .columns()
                .iter()
                .map(|c| c.null_count())
                .collect::<Vec<_>>(),
            vec![1, 1, 0, 1]
        );
        assert!(
            batch.column(2).nulls().is_none(),
            "no bitmap without a null"
        );
        assert_eq!(batch.schema().field(3).data_type(), &timestamp_type());
    }

    #[test]
    fn lists_of_leaves_and_of_tuples_round_trip() {
        round_trip(vec![vec![1.5f64, 2.5], vec![], vec![3.0]]);
        round_trip(vec![(
            "k".to_string(),
            vec![(1i64, "x".to_string()), (2, "y".to_string())],
        )]);
        round_trip(vec![Some(vec![1i32]), None]);
    }

    #[test]
    fn a_null_into_a_plain_field_names_the_column() {
        let batch = to_batch(vec![Some(1i64), None]).unwrap();
        let err = from_batch::<i64>(&batch).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column 'value' holds a null; declare the field as Option<...> to read it"
        );
    }

    #[test]
    fn a_column_of_another_type_names_both_types() {
        let batch = to_batch(vec![(1i64, "x".to_string())]).unwrap();
        let err = from_batch::<(i64, f64)>(&batch).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column '_1' is Utf8, but the field reading it expects Float64"
        );
        let err = from_batch::<(i64, String, i64)>(&batch).unwrap_err();
        assert!(matches!(err, DataError::Shape { .. }), "{err}");
    }

    #[test]
    fn timestamps_truncate_to_buckets() {
        assert_eq!(
            Timestamp(3_700_000).truncate(3_600_000),
            Timestamp(3_600_000)
        );
        assert_eq!(Timestamp(-1).truncate(3_600_000), Timestamp(-3_600_000));
    }
}
