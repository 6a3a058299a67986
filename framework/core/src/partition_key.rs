//! Partition keys in CQL's serialized form, and their tokens.
//!
//! A one-column key is hashed as the column's serialized value. A composite key is hashed as
//! CQL's composite encoding: for each component a 2-byte big-endian length, the bytes, then a
//! `0x00` byte. Each value is serialized as in
//! [`crate::cql_value`] (the same bytes a CQL client sends).

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::DataType;

use crate::cql_type::CqlType;
use crate::cql_value::CellEncoder;
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

/// A key column with its encoder, for errors that name the column.
struct Encoder<'a> {
    name: &'a str,
    cell: CellEncoder,
}

impl<'a> Encoder<'a> {
    fn new(column: &KeyColumn<'a>) -> Result<Self> {
        let cell = CellEncoder::new(column.cql_type, column.values).map_err(|problem| {
            Error::InvalidKey {
                column: column.name.to_string(),
                problem,
            }
        })?;
        Ok(Encoder {
            name: column.name,
            cell,
        })
    }

    fn write(&self, row: usize, out: &mut Vec<u8>) -> Result<()> {
        if self.cell.is_null(row) {
            return Err(null_key(self.name, row));
        }
        self.cell
            .write(row, out)
            .map_err(|problem| Error::InvalidKey {
                column: self.name.to_string(),
                problem,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn varints_are_minimal_twos_complement() {
        let enc = |v: i128| {
            let mut out = Vec::new();
            crate::cql_value::encode_varint(v, &mut out);
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
