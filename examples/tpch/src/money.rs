//! How the money columns are typed.
//!
//! TPC-H defines every price, cost, balance, quantity, discount and tax as `decimal(15,2)`, and
//! `tpchgen-arrow` generates them as `Decimal128(15, 2)`; `tables.cql` declares them so, and
//! [`MONEY`] is [`Money::Decimal`]. [`Money::Double`] types them as `double` / `Float64` instead,
//! in the DDL and in the generated batches that both Quarry and plain DataFusion read: one edit
//! of [`MONEY`] compares the two on floats (as the suite did before Quarry had `decimal(p,s)`).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

/// How money columns are typed in the tables and in the generated batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Money {
    /// `decimal(15,2)` / `Decimal128(15, 2)`, as the specification says.
    Decimal,
    /// `double` / `Float64`: approximate, for a store without `decimal(p,s)`.
    Double,
}

/// The money type in force.
pub const MONEY: Money = Money::Decimal;

impl Money {
    /// The CQL type of a money column.
    pub fn cql_type(self) -> &'static str {
        match self {
            Money::Decimal => "decimal(15,2)",
            Money::Double => "double",
        }
    }

    /// `schema` with its decimal columns in this money type.
    pub(crate) fn convert_schema(self, schema: &SchemaRef) -> SchemaRef {
        if self == Money::Decimal {
            return schema.clone();
        }
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|field| match field.data_type() {
                DataType::Decimal128(_, _) => {
                    Field::new(field.name(), DataType::Float64, field.is_nullable())
                }
                _ => field.as_ref().clone(),
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// `batch` with its decimal columns in this money type.
    pub(crate) fn convert(self, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        if self == Money::Decimal {
            return Ok(batch);
        }
        let schema = self.convert_schema(&batch.schema());
        let columns = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, column)| cast(column, field.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(schema, columns)
    }
}
