//! `INSERT INTO` a store table: DataFusion's insert plan ends in a [`StoreSink`].
//!
//! The sink gathers the statement's rows and hands them to the store in one write, which is
//! all-or-nothing and upserts by primary key, so re-running an `INSERT ... SELECT` converges to
//! the same table instead of duplicating rows.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::common::Result;
use datafusion::datasource::sink::DataSink;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};
use futures::TryStreamExt;
use quarry_core::schema::{TableDef, TableName};
use quarry_store::Store;

use crate::error::to_datafusion;

/// Writes a statement's rows to one table. In a cluster, the distributed planner replaces it
/// with writes from the workers that own the target shards (it reads the table and its keyspace's
/// shard count from here).
#[derive(Debug)]
pub struct StoreSink {
    store: Arc<dyn Store>,
    def: TableDef,
    table: TableName,
    /// Shards of the table's keyspace.
    shard_count: u32,
    /// What the insert plan delivers (the provider's schema, every column nullable).
    schema: SchemaRef,
}

impl StoreSink {
    pub fn new(store: Arc<dyn Store>, def: TableDef, shard_count: u32, schema: SchemaRef) -> Self {
        let nullable: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        StoreSink {
            store,
            table: def.table_name(),
            def,
            shard_count,
            schema: Arc::new(arrow::datatypes::Schema::new_with_metadata(
                nullable,
                schema.metadata().clone(),
            )),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn def(&self) -> &TableDef {
        &self.def
    }

    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }
}

/// `batches` as the store takes them for `def`: the table's own types, nullability and
/// metadata (the insert plan casts values to the provider's types). A NULL key is refused here.
pub fn to_table_schema(def: &TableDef, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let table_schema = def.arrow_schema();
    for batch in &batches {
        for i in def.primary_key_indices() {
            if batch.num_columns() > i && batch.column(i).logical_null_count() > 0 {
                return Err(datafusion::error::DataFusionError::Plan(format!(
                    "cannot insert into {}: {} is in the primary key, so it cannot be NULL",
                    def.table_name(),
                    def.columns[i].name
                )));
            }
        }
    }
    batches
        .into_iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| quarry_store::cast_batch(&b, &table_schema))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            datafusion::error::DataFusionError::Plan(format!(
                "cannot insert into {}: {e}",
                def.table_name()
            ))
        })
}

impl DisplayAs for StoreSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StoreSink: table={}", self.table)
    }
}

#[async_trait]
impl DataSink for StoreSink {
    /// Every column nullable: DataFusion then leaves NULL keys to [`to_table_schema`], whose
    /// message names the table and the column.
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let batches: Vec<RecordBatch> = data.try_collect().await?;
        let batches = to_table_schema(&self.def, batches)?;
        let summary = self
            .store
            .write(&self.table, batches)
            .await
            .map_err(to_datafusion)?;
        Ok(summary.rows)
    }
}
