//! Uncorrelated scalar subqueries run before the plan that uses their values.
//!
//! DataFusion plans `WHERE x > (SELECT avg(y) FROM t)` as a `ScalarSubqueryExec` over the main
//! plan: it runs each subquery once and fills a results container that the `ScalarSubqueryExpr`s
//! inside the main plan read. A stage of the main plan cut out and sent to a worker would carry
//! those expressions without the container. So, as Spark does, the subqueries run first (each
//! as a job of its own, distributed like any query), their values go into the container, and the
//! `ScalarSubqueryExec` is dropped; an expression whose value is known is sent as that value (a
//! literal, see [`SubqueryValues`]).
//!
//! ```text
//!   ScalarSubqueryExec ─┬─ main plan (… x > scalar_subquery#0 …)      main plan (… x > 42.5 …)
//!                       └─ subquery #0 ──run first──▶ 42.5       ──▶   cut into stages as usual
//! ```

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, internal_datafusion_err};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr_with_converter;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalPlanNodeExt,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use futures::future::BoxFuture;

use crate::error::Result;

/// Runs a plan to completion somewhere (for the driver: as a distributed job).
pub trait RunPlan: Sync {
    fn run(&self, plan: Arc<dyn ExecutionPlan>) -> BoxFuture<'_, Result<Vec<RecordBatch>>>;
}

/// `plan` with every `ScalarSubqueryExec` replaced by its main input, after running its
/// subqueries with `runner` and storing their values where the main input's expressions read
/// them. Subqueries nested in subqueries run first.
pub fn run_scalar_subqueries<'a>(
    plan: Arc<dyn ExecutionPlan>,
    runner: &'a dyn RunPlan,
) -> BoxFuture<'a, Result<Arc<dyn ExecutionPlan>>> {
    Box::pin(async move {
        if let Some(exec) = plan.downcast_ref::<ScalarSubqueryExec>() {
            for link in exec.subqueries() {
                let subquery = run_scalar_subqueries(link.plan.clone(), runner).await?;
                let schema = subquery.schema();
                let batches = runner.run(subquery).await?;
                exec.results()
                    .set(link.index, single_value(&schema, &batches)?)?;
            }
            return run_scalar_subqueries(exec.input().clone(), runner).await;
        }
        let children = plan.children();
        if children.is_empty() {
            return Ok(plan);
        }
        let mut resolved = Vec::with_capacity(children.len());
        let mut changed = false;
        for child in children {
            let new = run_scalar_subqueries(child.clone(), runner).await?;
            changed |= !Arc::ptr_eq(&new, child);
            resolved.push(new);
        }
        Ok(if changed {
            replace_children_if_necessary(plan, resolved)?
        } else {
            plan
        })
    })
}

/// A plan cut from its scalar subqueries, none of them run ([`split_scalar_subqueries`]).
#[derive(Debug)]
pub struct SplitSubqueries {
    /// The plan without its `ScalarSubqueryExec`s; its expressions that read a subquery's value
    /// stay pending (`scalar_subquery(<pending>)`), so it must not be run or sent.
    pub main: Arc<dyn ExecutionPlan>,
    /// The subqueries, in the order they would run (nested ones first).
    pub subqueries: Vec<Arc<dyn ExecutionPlan>>,
}

/// `plan` cut from its scalar subqueries without running them: what `EXPLAIN` shows.
pub fn split_scalar_subqueries(plan: Arc<dyn ExecutionPlan>) -> Result<SplitSubqueries> {
    let mut subqueries = Vec::new();
    let main = split_into(plan, &mut subqueries)?;
    Ok(SplitSubqueries { main, subqueries })
}

fn split_into(
    plan: Arc<dyn ExecutionPlan>,
    subqueries: &mut Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(exec) = plan.downcast_ref::<ScalarSubqueryExec>() {
        for link in exec.subqueries() {
            let subquery = split_into(link.plan.clone(), subqueries)?;
            subqueries.push(subquery);
        }
        return split_into(exec.input().clone(), subqueries);
    }
    let children = plan.children();
    if children.is_empty() {
        return Ok(plan);
    }
    let resolved = children
        .into_iter()
        .map(|child| split_into(child.clone(), subqueries))
        .collect::<Result<Vec<_>>>()?;
    Ok(replace_children_if_necessary(plan, resolved)?)
}

/// The value of a scalar subquery from its rows: NULL for none, an error for more than one (as
/// DataFusion's `ScalarSubqueryExec` and SQL have it).
fn single_value(schema: &Schema, batches: &[RecordBatch]) -> DfResult<ScalarValue> {
    if schema.fields().len() != 1 {
        return exec_err!(
            "a scalar subquery must return one column, and this one returns {}",
            schema.fields().len()
        );
    }
    let mut rows = batches.iter().filter(|b| b.num_rows() > 0);
    match (rows.next(), rows.next()) {
        (None, _) => ScalarValue::try_from(schema.field(0).data_type()),
        (Some(batch), None) if batch.num_rows() == 1 => {
            ScalarValue::try_from_array(batch.column(0), 0)
        }
        _ => exec_err!(
            "a scalar subquery returned more than one row; use IN, EXISTS, or an aggregate such \
             as max() to make it return one"
        ),
    }
}

/// Encodes a `ScalarSubqueryExpr` whose subquery has run as its value, so that a stage sent to
/// a worker carries the value and not a reference to the driver's results container. Every other
/// plan node and expression is encoded as DataFusion does.
#[derive(Debug, Default)]
pub struct SubqueryValues;

impl PhysicalProtoConverterExtension for SubqueryValues {
    fn proto_to_execution_plan(
        &self,
        proto: &protobuf::PhysicalPlanNode,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.default_proto_to_execution_plan(proto, ctx)
    }

    fn execution_plan_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> DfResult<protobuf::PhysicalPlanNode> {
        protobuf::PhysicalPlanNode::try_from_physical_plan_with_converter(
            Arc::clone(plan),
            codec,
            self,
        )
    }

    fn proto_to_physical_expr(
        &self,
        proto: &protobuf::PhysicalExprNode,
        input_schema: &Schema,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> DfResult<Arc<dyn PhysicalExpr>> {
        parse_physical_expr_with_converter(proto, input_schema, ctx, self)
    }

    fn physical_expr_to_proto(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> DfResult<protobuf::PhysicalExprNode> {
        if expr.is::<ScalarSubqueryExpr>() {
            let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
            let value = match expr.evaluate(&empty) {
                Ok(ColumnarValue::Scalar(value)) => value,
                _ => {
                    return Err(internal_datafusion_err!(
                        "a scalar subquery reached a stage before it ran: {expr}"
                    ));
                }
            };
            let literal: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(value));
            return serialize_physical_expr_with_converter(&literal, codec, self);
        }
        serialize_physical_expr_with_converter(expr, codec, self)
    }
}
