//! Turning DataFusion filter expressions into store predicates.
//!
//! Only shapes a store can use to skip data are translated: `column <op> constant`,
//! `column IN (constants)`, and `token(partition key) <op> constant`. The store treats them as
//! hints, so DataFusion still evaluates every filter (pushdown is "inexact").

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use quarry_core::schema::TableDef;
use quarry_store::{CmpOp, Predicate};

use crate::token_udf::TOKEN_FUNCTION;

/// The predicate `expr` can be pushed down as, if any.
pub fn to_predicate(table: &TableDef, expr: &Expr) -> Option<Predicate> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let op = cmp_op(*op)?;
            if let Some(value) = literal(right) {
                side_predicate(table, left, op, value)
            } else if let Some(value) = literal(left) {
                side_predicate(table, right, op.flip(), value)
            } else {
                None
            }
        }
        Expr::InList(list) if !list.negated => {
            let column = column_name(table, &list.expr)?;
            let values: Vec<ScalarValue> =
                list.list.iter().map(literal).collect::<Option<Vec<_>>>()?;
            if values.iter().any(ScalarValue::is_null) {
                return None;
            }
            let values = ScalarValue::iter_to_array(values).ok()?;
            Some(Predicate::InList { column, values })
        }
        _ => None,
    }
}

fn side_predicate(
    table: &TableDef,
    side: &Expr,
    op: CmpOp,
    value: ScalarValue,
) -> Option<Predicate> {
    if value.is_null() {
        return None;
    }
    if is_token_of_partition_key(table, side) {
        let token = match value {
            ScalarValue::Int64(Some(v)) => v,
            ScalarValue::Int32(Some(v)) => i64::from(v),
            other => match other.cast_to(&arrow::datatypes::DataType::Int64).ok()? {
                ScalarValue::Int64(Some(v)) => v,
                _ => return None,
            },
        };
        return Some(Predicate::token_compare(op, token));
    }
    let column = column_name(table, side)?;
    let value = value.to_array_of_size(1).ok()?;
    Some(Predicate::Compare { column, op, value })
}

fn cmp_op(op: Operator) -> Option<CmpOp> {
    Some(match op {
        Operator::Eq => CmpOp::Eq,
        Operator::Lt => CmpOp::Lt,
        Operator::LtEq => CmpOp::LtEq,
        Operator::Gt => CmpOp::Gt,
        Operator::GtEq => CmpOp::GtEq,
        _ => return None,
    })
}

fn literal(expr: &Expr) -> Option<ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Some(value.clone()),
        _ => None,
    }
}

fn column_name(table: &TableDef, expr: &Expr) -> Option<String> {
    match expr {
        Expr::Column(c) if table.column(&c.name).is_ok() => Some(c.name.clone()),
        _ => None,
    }
}

/// `token(p1, p2, ...)` over exactly the table's partition-key columns, in key order.
fn is_token_of_partition_key(table: &TableDef, expr: &Expr) -> bool {
    let Expr::ScalarFunction(f) = expr else {
        return false;
    };
    if f.name() != TOKEN_FUNCTION || f.args.len() != table.partition_key.len() {
        return false;
    }
    f.args
        .iter()
        .zip(&table.partition_key)
        .all(|(arg, key)| matches!(arg, Expr::Column(c) if c.name == *key))
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};
    use quarry_core::cql_type::CqlType;
    use quarry_core::schema::ColumnDef;

    use super::*;
    use crate::token_udf::token_udf;

    fn table() -> TableDef {
        TableDef::new(
            "iot",
            "readings",
            vec![
                ColumnDef::new("device_id", CqlType::BigInt),
                ColumnDef::new("value", CqlType::Double),
            ],
            vec!["device_id".into()],
            vec![],
        )
        .unwrap()
    }

    #[test]
    fn comparisons_in_lists_and_token_ranges_translate() {
        let t = table();
        assert!(matches!(
            to_predicate(&t, &col("value").gt(lit(90.0))),
            Some(Predicate::Compare { op: CmpOp::Gt, .. })
        ));
        // 5 < value is value > 5.
        assert!(matches!(
            to_predicate(&t, &lit(5.0).lt(col("value"))),
            Some(Predicate::Compare { op: CmpOp::Gt, .. })
        ));
        assert!(matches!(
            to_predicate(
                &t,
                &col("device_id").in_list(vec![lit(1i64), lit(2i64)], false)
            ),
            Some(Predicate::InList { .. })
        ));
        let token = token_udf().call(vec![col("device_id")]);
        match to_predicate(&t, &token.gt(lit(100i64))) {
            Some(Predicate::TokenRange(r)) => assert_eq!((r.start, r.end), (100, i64::MAX)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_shapes_are_not_pushed() {
        let t = table();
        assert!(to_predicate(&t, &(col("value") + lit(1.0)).gt(lit(2.0))).is_none());
        assert!(to_predicate(&t, &col("value").not_eq(lit(2.0))).is_none());
        assert!(to_predicate(&t, &col("device_id").in_list(vec![lit(1i64)], true)).is_none());
        let token_of_value = token_udf().call(vec![col("value")]);
        assert!(to_predicate(&t, &token_of_value.gt(lit(1i64))).is_none());
    }
}
