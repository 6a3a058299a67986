//! Query answers as rows of comparable cells, and their comparison.
//!
//! Two answers agree when they have the same columns and the same rows: as a multiset where the
//! query leaves the order open, in order where its `ORDER BY` fixes it. Cells compare by value,
//! not by Arrow type: integers of any width alike, strings of any encoding alike, decimals
//! exactly at any scale (`1.50` is `1.5`), floats within a relative [`FLOAT_TOLERANCE`] (a sum's
//! last bits depend on the order it adds in). A float never equals a decimal or an integer.

use std::cmp::Ordering;
use std::fmt;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{Error, Result};

/// How far apart two floats may be, relative to the larger, and still be equal.
pub const FLOAT_TOLERANCE: f64 = 1e-9;

/// One value of an answer.
#[derive(Debug, Clone)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    /// `unscaled / 10^scale`, with trailing zeros removed so that equal values are equal here.
    Decimal {
        unscaled: i128,
        scale: i8,
    },
    Text(String),
    /// Any other type (dates, timestamps), as Arrow displays it.
    Other(String),
}

/// A query's result: column names and rows.
#[derive(Debug, Clone)]
pub struct Answer {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// Whether row order is part of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The query orders every row; answers must agree row by row.
    Rows,
    /// The query leaves the order open; answers must hold the same rows.
    Any,
}

/// How an answer differs from the expected one, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference(pub String);

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Difference {}

impl Answer {
    /// The rows of `batches`, whose columns are those of `schema`.
    pub fn from_batches(schema: &Schema, batches: &[RecordBatch]) -> Result<Answer> {
        let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut rows = Vec::new();
        for batch in batches {
            let cells: Vec<Vec<Cell>> = batch
                .columns()
                .iter()
                .map(cells)
                .collect::<Result<_, _>>()
                .map_err(|source| Error::Answer { source })?;
            for row in 0..batch.num_rows() {
                rows.push(cells.iter().map(|column| column[row].clone()).collect());
            }
        }
        Ok(Answer { columns, rows })
    }
}

/// The values of one column.
fn cells(array: &ArrayRef) -> Result<Vec<Cell>, arrow::error::ArrowError> {
    let n = array.len();
    let valid = |i: usize| array.is_valid(i);
    let out = match array.data_type() {
        DataType::Boolean => {
            let a = array.as_boolean();
            (0..n)
                .map(|i| valid(i).then(|| Cell::Bool(a.value(i))))
                .collect::<Vec<_>>()
        }
        t if t.is_integer() => {
            let a = cast(array, &DataType::Int64)?;
            let a = a.as_primitive::<Int64Type>();
            (0..n)
                .map(|i| valid(i).then(|| Cell::Int(i128::from(a.value(i)))))
                .collect()
        }
        t if t.is_floating() => {
            let a = cast(array, &DataType::Float64)?;
            let a = a.as_primitive::<Float64Type>();
            (0..n)
                .map(|i| valid(i).then(|| Cell::Float(a.value(i))))
                .collect()
        }
        DataType::Decimal128(_, scale) => {
            let a = array.as_primitive::<Decimal128Type>();
            (0..n)
                .map(|i| valid(i).then(|| decimal(a.value(i), *scale)))
                .collect()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let a = cast(array, &DataType::Utf8)?;
            let a = a.as_string::<i32>();
            (0..n)
                .map(|i| valid(i).then(|| Cell::Text(a.value(i).to_string())))
                .collect()
        }
        _ => {
            let format = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())?;
            (0..n)
                .map(|i| valid(i).then(|| Cell::Other(format.value(i).to_string())))
                .collect()
        }
    };
    Ok(out.into_iter().map(|c| c.unwrap_or(Cell::Null)).collect())
}

fn decimal(mut unscaled: i128, mut scale: i8) -> Cell {
    while scale > 0 && unscaled % 10 == 0 {
        unscaled /= 10;
        scale -= 1;
    }
    Cell::Decimal { unscaled, scale }
}

/// Whether two cells hold the same value (floats within [`FLOAT_TOLERANCE`]).
fn same(a: &Cell, b: &Cell) -> bool {
    match (a, b) {
        (Cell::Null, Cell::Null) => true,
        (Cell::Bool(a), Cell::Bool(b)) => a == b,
        (Cell::Int(a), Cell::Int(b)) => a == b,
        (Cell::Float(a), Cell::Float(b)) => {
            a == b
                || (a.is_nan() && b.is_nan())
                || (a - b).abs() <= FLOAT_TOLERANCE * a.abs().max(b.abs())
        }
        (
            Cell::Decimal {
                unscaled: a,
                scale: s,
            },
            Cell::Decimal {
                unscaled: b,
                scale: t,
            },
        ) => a == b && s == t,
        (Cell::Text(a), Cell::Text(b)) | (Cell::Other(a), Cell::Other(b)) => a == b,
        _ => false,
    }
}

fn same_row(a: &[Cell], b: &[Cell]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
}

/// An order over cells for sorting multisets; floats by their value rounded to 9 significant
/// digits, so that nearly equal floats sort by the columns after them.
fn sort_order(a: &Cell, b: &Cell) -> Ordering {
    fn rank(c: &Cell) -> u8 {
        match c {
            Cell::Null => 0,
            Cell::Bool(_) => 1,
            Cell::Int(_) => 2,
            Cell::Float(_) => 3,
            Cell::Decimal { .. } => 4,
            Cell::Text(_) => 5,
            Cell::Other(_) => 6,
        }
    }
    fn rounded(x: f64) -> f64 {
        format!("{x:.8e}").parse().unwrap_or(x)
    }
    match (a, b) {
        (Cell::Bool(a), Cell::Bool(b)) => a.cmp(b),
        (Cell::Int(a), Cell::Int(b)) => a.cmp(b),
        (Cell::Float(a), Cell::Float(b)) => rounded(*a).total_cmp(&rounded(*b)),
        (
            Cell::Decimal {
                unscaled: a,
                scale: s,
            },
            Cell::Decimal {
                unscaled: b,
                scale: t,
            },
        ) => decimal_order(*a, *s, *b, *t),
        (Cell::Text(a), Cell::Text(b)) | (Cell::Other(a), Cell::Other(b)) => a.cmp(b),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Numeric order of `a / 10^s` and `b / 10^t`.
fn decimal_order(a: i128, s: i8, b: i128, t: i8) -> Ordering {
    let scale = s.max(t);
    let widen = |v: i128, from: i8| {
        10i128
            .checked_pow(u32::try_from(scale - from).unwrap_or(0))
            .and_then(|f| v.checked_mul(f))
    };
    match (widen(a, s), widen(b, t)) {
        (Some(a), Some(b)) => a.cmp(&b),
        // Too large to widen exactly: close enough for sorting.
        _ => (a as f64 / 10f64.powi(s.into())).total_cmp(&(b as f64 / 10f64.powi(t.into()))),
    }
}

fn sorted(rows: &[Vec<Cell>]) -> Vec<&Vec<Cell>> {
    let mut rows: Vec<&Vec<Cell>> = rows.iter().collect();
    rows.sort_by(|a, b| {
        a.iter()
            .zip(b.iter())
            .map(|(a, b)| sort_order(a, b))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
    rows
}

/// Checks `actual` against `expected`: same column names, same rows (in order for
/// [`Order::Rows`]). The difference names the first row that differs.
pub fn compare(expected: &Answer, actual: &Answer, order: Order) -> Result<(), Difference> {
    if expected.columns != actual.columns {
        return Err(Difference(format!(
            "columns differ: expected {:?}, got {:?}",
            expected.columns, actual.columns
        )));
    }
    let (want, got) = (sorted(&expected.rows), sorted(&actual.rows));
    if let Some(i) = (0..want.len().max(got.len()))
        .find(|&i| !matches!((want.get(i), got.get(i)), (Some(w), Some(g)) if same_row(w, g)))
    {
        let show = |row: Option<&&Vec<Cell>>| row.map_or("no row".to_string(), |r| text(r));
        let counts = if want.len() == got.len() {
            format!("{} rows as expected", got.len())
        } else {
            format!("expected {} rows, got {}", want.len(), got.len())
        };
        return Err(Difference(format!(
            "{counts}; in sorted order, row {} is `{}` where `{}` was expected",
            i + 1,
            show(got.get(i)),
            show(want.get(i)),
        )));
    }
    if order == Order::Rows
        && let Some(i) =
            (0..expected.rows.len()).find(|&i| !same_row(&expected.rows[i], &actual.rows[i]))
    {
        return Err(Difference(format!(
            "the same {} rows in another order: row {} is `{}` where `{}` was expected",
            expected.rows.len(),
            i + 1,
            text(&actual.rows[i]),
            text(&expected.rows[i]),
        )));
    }
    Ok(())
}

/// A row as `a|b|c`.
fn text(row: &[Cell]) -> String {
    row.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("|")
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Null => f.write_str("NULL"),
            Cell::Bool(b) => write!(f, "{b}"),
            Cell::Int(i) => write!(f, "{i}"),
            Cell::Float(x) => write!(f, "{x}"),
            Cell::Decimal { unscaled, scale } => {
                let digits = unscaled.unsigned_abs().to_string();
                let scale = usize::try_from(*scale).unwrap_or(0);
                let sign = if *unscaled < 0 { "-" } else { "" };
                if scale == 0 {
                    write!(f, "{sign}{digits}")
                } else {
                    let digits = format!("{digits:0>width$}", width = scale + 1);
                    let (whole, fraction) = digits.split_at(digits.len() - scale);
                    write!(f, "{sign}{whole}.{fraction}")
                }
            }
            Cell::Text(s) | Cell::Other(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Decimal128Array, Float64Array, Int32Array, StringViewArray};
    use arrow::datatypes::Field;

    use super::*;

    fn answer(columns: Vec<ArrayRef>) -> Answer {
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        Answer::from_batches(&schema, &[batch]).unwrap()
    }

    fn dec(values: &[i128], scale: i8) -> ArrayRef {
        Arc::new(
            Decimal128Array::from(values.to_vec())
                .with_precision_and_scale(38, scale)
                .unwrap(),
        )
    }

    #[test]
    fn decimals_compare_exactly_at_any_scale() {
        let a = answer(vec![dec(&[150, 2], 2)]);
        let b = answer(vec![dec(&[15_000_000, 200_000], 7)]);
        assert_eq!(compare(&a, &b, Order::Rows), Ok(()));
        let c = answer(vec![dec(&[151, 2], 2)]);
        let err = compare(&a, &c, Order::Any).unwrap_err().0;
        assert!(err.contains("`1.51` where `1.5` was expected"), "{err}");
    }

    #[test]
    fn floats_compare_within_the_tolerance_and_never_equal_decimals() {
        let a = answer(vec![Arc::new(Float64Array::from(vec![1.0e6, 0.1]))]);
        let b = answer(vec![Arc::new(Float64Array::from(vec![1.0e6 + 1e-6, 0.1]))]);
        assert_eq!(compare(&a, &b, Order::Rows), Ok(()));
        let c = answer(vec![Arc::new(Float64Array::from(vec![1.0e6 + 1.0, 0.1]))]);
        assert!(compare(&a, &c, Order::Rows).is_err());
        let d = answer(vec![dec(&[100_000_000, 10], 2)]);
        assert!(compare(&a, &d, Order::Any).is_err());
    }

    #[test]
    fn row_order_matters_only_when_the_query_fixes_it() {
        let a = answer(vec![
            Arc::new(Int32Array::from(vec![1, 2])),
            Arc::new(StringViewArray::from(vec!["x", "y"])),
        ]);
        let b = answer(vec![
            Arc::new(Int32Array::from(vec![2, 1])),
            Arc::new(arrow::array::StringArray::from(vec!["y", "x"])),
        ]);
        assert_eq!(compare(&a, &b, Order::Any), Ok(()));
        let err = compare(&a, &b, Order::Rows).unwrap_err().0;
        assert!(
            err.starts_with("the same 2 rows in another order: row 1 is `2|y`"),
            "{err}"
        );
    }

    #[test]
    fn missing_and_extra_rows_are_counted() {
        let a = answer(vec![Arc::new(Int32Array::from(vec![1, 2]))]);
        let b = answer(vec![Arc::new(Int32Array::from(vec![1]))]);
        let err = compare(&a, &b, Order::Any).unwrap_err().0;
        assert!(
            err.starts_with(
                "expected 2 rows, got 1; in sorted order, row 2 is `no row` where `2` was expected"
            ),
            "{err}"
        );
    }
}
