//! One store table as a DataFusion table provider.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use quarry_core::schema::TableDef;
use quarry_store::{ScanRequest, Store, scan_schema};

use crate::error::to_datafusion;
use crate::filters::to_predicate;
use crate::options::QuarryOptions;
use crate::scan_exec::StoreScanExec;
use crate::sink::StoreSink;

/// A table of a [`Store`], with projection, limit and filter pushdown and upserting inserts.
/// Its schema is the store's scan schema (text as `Utf8View`).
#[derive(Debug)]
pub struct StoreTable {
    store: Arc<dyn Store>,
    def: TableDef,
    schema: SchemaRef,
}

impl StoreTable {
    pub fn new(store: Arc<dyn Store>, def: TableDef) -> Self {
        let schema = scan_schema(&def);
        StoreTable { store, def, schema }
    }
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match to_predicate(&self.def, f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let pushdown = state
            .config()
            .options()
            .extensions
            .get::<QuarryOptions>()
            .is_none_or(|o| o.pushdown);
        let predicates: Vec<_> = if pushdown {
            filters
                .iter()
                .filter_map(|f| to_predicate(&self.def, f))
                .collect()
        } else {
            Vec::new()
        };
        let pushed = predicates.len();
        // Filters are inexact, so a limit is only safe to pass down when there are none.
        let limit = if filters.is_empty() && pushdown {
            limit
        } else {
            None
        };
        // Without pushdown, read every column and let DataFusion project.
        let read_all = !pushdown && projection.is_some();
        let request = ScanRequest {
            table: self.def.table_name(),
            projection: if pushdown { projection.cloned() } else { None },
            filters: predicates,
            limit,
            shards: None,
        };
        let plan = self.store.plan_scan(&request).map_err(to_datafusion)?;
        let scan: Arc<dyn ExecutionPlan> = Arc::new(StoreScanExec::new(
            request,
            plan,
            state.config().target_partitions(),
            pushed,
        ));
        match projection {
            Some(columns) if read_all => {
                let exprs: Vec<(Arc<dyn datafusion::physical_expr::PhysicalExpr>, String)> =
                    columns
                        .iter()
                        .map(|&i| {
                            let name = self.schema.field(i).name().clone();
                            let column: Arc<dyn datafusion::physical_expr::PhysicalExpr> = Arc::new(
                                datafusion::physical_expr::expressions::Column::new(&name, i),
                            );
                            (column, name)
                        })
                        .collect();
                Ok(Arc::new(
                    datafusion::physical_plan::projection::ProjectionExec::try_new(exprs, scan)?,
                ))
            }
            _ => Ok(scan),
        }
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return datafusion::common::not_impl_err!(
                "{insert_op} is not supported for {}; INSERT INTO upserts by primary key",
                self.def.table_name()
            );
        }
        let shard_count = self
            .store
            .keyspace(&self.def.keyspace)
            .map_err(to_datafusion)?
            .shards;
        let sink = StoreSink::new(
            self.store.clone(),
            self.def.clone(),
            shard_count,
            self.schema.clone(),
        );
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}
