//! CQL's `token()` as a DataFusion scalar function.
//!
//! `token(device_id)` returns the row's Murmur3 token exactly as `SELECT token(device_id) ...`
//! does in ScyllaDB or Cassandra. The CQL type of each argument comes from the column's field
//! metadata (so a `uuid` column is hashed as 16 bytes, not as its text), or else from its Arrow
//! type. A comparison of `token(partition key)` with a constant is pushed into scans as a token
//! range, reading only the shards it overlaps.

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use quarry_core::cql_type::{CQL_TYPE_METADATA_KEY, CqlType};
use quarry_core::partition_key::{KeyColumn, tokens};

/// The function's SQL name.
pub const TOKEN_FUNCTION: &str = "token";

/// `token(pk1, pk2, ...) -> bigint`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TokenFunction {
    signature: Signature,
}

impl Default for TokenFunction {
    fn default() -> Self {
        TokenFunction {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

/// The `token` UDF, ready to register.
pub fn token_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(TokenFunction::default())
}

impl ScalarUDFImpl for TokenFunction {
    fn name(&self) -> &str {
        TOKEN_FUNCTION
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.is_empty() {
            return plan_err!("token() needs the partition-key columns, e.g. token(device_id)");
        }
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<_>>()?;
        let mut types = Vec::with_capacity(arrays.len());
        for (field, array) in args.arg_fields.iter().zip(&arrays) {
            let from_metadata = field
                .metadata()
                .get(CQL_TYPE_METADATA_KEY)
                .and_then(|t| t.parse::<CqlType>().ok());
            match from_metadata.or_else(|| CqlType::from_arrow(array.data_type())) {
                Some(t) => types.push(t),
                None => {
                    return exec_err!(
                        "token() cannot hash a value of type {}; pass partition-key columns",
                        array.data_type()
                    );
                }
            }
        }
        let columns: Vec<KeyColumn<'_>> = args
            .arg_fields
            .iter()
            .zip(&arrays)
            .zip(&types)
            .map(|((field, values), cql_type)| KeyColumn {
                name: field.name(),
                cql_type: *cql_type,
                values,
            })
            .collect();
        let out = tokens(&columns, rows)
            .map_err(|e| datafusion::error::DataFusionError::Execution(e.to_string()))?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}
