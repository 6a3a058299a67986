//! Integer `+`, `-` and `*` that fail on overflow instead of wrapping.
//!
//! DataFusion adds and multiplies integers with wrapping kernels: `9223372036854775807 + 1` is
//! a large negative number, without a word. [`CheckedIntegerArithmetic`], an analyzer rule that
//! every [`QuarrySession`](crate::QuarrySession) runs after DataFusion's type coercion, replaces
//! each integer `a + b`, `a - b` and `a * b` with a [`CheckedOperator`] call, which computes it
//! with Arrow's checked kernels and fails naming the expression.
//!
//! ```text
//!   a * b  (Int64, Int64) ──analyzer──▶ checked_multiply(a, b)  named "a * b", as before
//!          ──physical plan──▶ ScalarFunctionExpr ──plan codec (the expression text travels
//!          with the function, see `QuarryCodec::try_encode_udf`)──▶ the same on a worker
//! ```
//!
//! The function names its output column as the expression did, so result columns are unchanged.
//! Decimal arithmetic is not rewritten: DataFusion already fails when a decimal result does not
//! fit. Integer division fails already too (by zero, and `i64::MIN / -1`).

use std::sync::Arc;

use arrow::compute::kernels::numeric;
use arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::utils::take_function_args;
use datafusion::common::{DataFusionError, Result, exec_datafusion_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr_common::datum::apply;

/// The function names of the three operators, as plans on the wire name them.
const FUNCTIONS: [(Operator, &str); 3] = [
    (Operator::Plus, "checked_add"),
    (Operator::Minus, "checked_subtract"),
    (Operator::Multiply, "checked_multiply"),
];

/// One integer operator of one expression, checked: `expression` is the SQL it came from, for
/// the error.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CheckedOperator {
    op: Operator,
    expression: String,
    signature: Signature,
}

impl CheckedOperator {
    /// `op` (`+`, `-` or `*`) of the expression `expression`; `None` for another operator.
    pub fn new(op: Operator, expression: String) -> Option<Self> {
        FUNCTIONS
            .iter()
            .any(|(o, _)| *o == op)
            .then(|| CheckedOperator {
                op,
                expression,
                signature: Signature::any(2, Volatility::Immutable),
            })
    }

    /// The operator a function name stands for, when it is one of these functions.
    pub fn operator(function: &str) -> Option<Operator> {
        FUNCTIONS
            .iter()
            .find(|(_, name)| *name == function)
            .map(|(op, _)| *op)
    }

    /// The expression whose overflow this call reports.
    pub fn expression(&self) -> &str {
        &self.expression
    }
}

impl ScalarUDFImpl for CheckedOperator {
    fn name(&self) -> &str {
        FUNCTIONS
            .iter()
            .find(|(op, _)| *op == self.op)
            .map(|(_, name)| *name)
            .expect("constructed from one of FUNCTIONS")
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Named as the operator was, so that a query's columns keep their names.
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        let [left, right] = take_function_args(self.name(), args)?;
        Ok(format!(
            "{} {} {}",
            left.schema_name(),
            self.op,
            right.schema_name()
        ))
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let [left, right] = take_function_args(self.name(), arg_types)?;
        if left != right || !left.is_integer() {
            return Err(exec_datafusion_err!(
                "{} needs two integers of one type, not {left} and {right}",
                self.name()
            ));
        }
        Ok(left.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [left, right] = take_function_args(self.name(), args.args)?;
        let kernel = match self.op {
            Operator::Plus => numeric::add,
            Operator::Minus => numeric::sub,
            _ => numeric::mul,
        };
        apply(&left, &right, kernel).map_err(|e| match e {
            DataFusionError::ArrowError(arrow, _) => {
                let data_type = left.data_type();
                exec_datafusion_err!(
                    "integer overflow in `{}`: the result does not fit {data_type} ({arrow}); \
                     cast an operand to a wider type, e.g. CAST(x AS decimal(38, 0)), for an \
                     exact result",
                    self.expression
                )
            }
            other => other,
        })
    }
}

/// The analyzer rule that puts [`CheckedOperator`]s in place of integer `+`, `-` and `*`.
#[derive(Debug, Default)]
pub struct CheckedIntegerArithmetic;

impl AnalyzerRule for CheckedIntegerArithmetic {
    fn name(&self) -> &str {
        "checked_integer_arithmetic"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let schema = merge_schema(&plan.inputs());
            plan.map_expressions(|expr| {
                // Down from the root, so that an operator's text is taken before its operands
                // are rewritten.
                expr.transform_down(|expr| {
                    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr else {
                        return Ok(Transformed::no(expr));
                    };
                    // Type coercion has run: both sides of an integer operator have one type.
                    // A type that cannot be resolved here is left for DataFusion to report.
                    let integer = |e: &Expr| e.get_type(&schema).is_ok_and(|t| t.is_integer());
                    let checked = match CheckedOperator::new(*op, expr.to_string()) {
                        Some(checked) if integer(left) && integer(right) => checked,
                        _ => return Ok(Transformed::no(expr)),
                    };
                    let args = vec![left.as_ref().clone(), right.as_ref().clone()];
                    Ok(Transformed::yes(Expr::ScalarFunction(
                        ScalarFunction::new_udf(Arc::new(ScalarUDF::new_from_impl(checked)), args),
                    )))
                })
            })
        })
        .map(|t| t.data)
    }
}
