//! What a worker runs: only the operators Quarry ships.
//!
//! A task's plan arrives over the network as `datafusion-proto` bytes, and that format can carry
//! any operator DataFusion has: file scans and file sinks of the worker's local file system among
//! them. A worker runs a decoded plan only if every node is one of Quarry's (store scan, exchange
//! reader, shard router, store write, WASM stage) or one of DataFusion's compute operators, and
//! reads in-memory rows (`VALUES`) but no files.

use std::sync::Arc;

use datafusion::common::{Result, plan_err};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;

/// DataFusion's compute operators and Quarry's own, by [`ExecutionPlan::name`].
const ALLOWED: &[&str] = &[
    // Quarry's.
    "StoreScanExec",
    "ExchangeReaderExec",
    "ShardRouterExec",
    "StoreWriteExec",
    "WasmExec",
    // DataFusion's, which compute over their inputs and touch nothing else.
    "AggregateExec",
    "AsyncFuncExec",
    "BoundedWindowAggExec",
    "BufferExec",
    "CoalesceBatchesExec",
    "CoalescePartitionsExec",
    "CooperativeExec",
    "CrossJoinExec",
    "EmptyExec",
    "FilterExec",
    "GlobalLimitExec",
    "HashJoinExec",
    "InterleaveExec",
    "LocalLimitExec",
    "NestedLoopJoinExec",
    "PartialSortExec",
    "PiecewiseMergeJoinExec",
    "PlaceholderRowExec",
    "ProjectionExec",
    "RepartitionExec",
    "SortExec",
    "SortMergeJoinExec",
    "SortPreservingMergeExec",
    "SymmetricHashJoinExec",
    "UnionExec",
    "UnnestExec",
    "WindowAggExec",
];

/// Refuses a task plan with a node a worker must not run, naming it.
pub fn check_task_plan(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    let mut stack = vec![plan.clone()];
    while let Some(node) = stack.pop() {
        let name = node.name();
        let allowed = if let Some(source) = node.downcast_ref::<DataSourceExec>() {
            // Rows carried in the plan itself; a file source would read the worker's disk.
            source.data_source().is::<MemorySourceConfig>()
        } else {
            // Some operators name their variant after the type: `SortExec(TopK)`.
            let kind = name.split('(').next().unwrap_or(name);
            ALLOWED.contains(&kind)
        };
        if !allowed {
            return plan_err!(
                "a worker runs only Quarry's operators and DataFusion's compute operators, not \
                 {name} (file scans and sinks are refused); this plan did not come from a Quarry \
                 driver of this version"
            );
        }
        stack.extend(node.children().into_iter().cloned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn physical(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
        ctx.sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn compute_and_values_pass_file_scans_and_sinks_do_not() {
        let ctx = SessionContext::new();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.parquet");
        ctx.sql(&format!(
            "COPY (VALUES (1)) TO '{}' STORED AS PARQUET",
            file.display()
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{}'",
            file.display()
        ))
        .await
        .unwrap();
        let values = physical(
            &ctx,
            "SELECT column1, count(*) FROM (VALUES (1), (2), (2)) GROUP BY column1 ORDER BY 1",
        )
        .await;
        check_task_plan(&values).unwrap();
        let scan = physical(&ctx, "SELECT column1 FROM t").await;
        let err = check_task_plan(&scan).unwrap_err().to_string();
        assert!(err.contains("not DataSourceExec"), "{err}");
        let out = dir.path().join("out.parquet");
        let copy = physical(
            &ctx,
            &format!("COPY (VALUES (1)) TO '{}' STORED AS PARQUET", out.display()),
        )
        .await;
        let err = check_task_plan(&copy).unwrap_err().to_string();
        assert!(err.contains("not DataSinkExec"), "{err}");
    }
}
