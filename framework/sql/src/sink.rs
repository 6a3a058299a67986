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
use quarry_core::schema::TableName;
use quarry_store::Store;

use crate::error::to_datafusion;

/// Writes a statement's rows to one table.
#[derive(Debug)]
pub struct StoreSink {
    store: Arc<dyn Store>,
    table: TableName,
    /// What the insert plan delivers (the provider's schema).
    schema: SchemaRef,
    /// What the store takes (the table's own schema).
    table_schema: SchemaRef,
}

impl StoreSink {
    pub fn new(
        store: Arc<dyn Store>,
        table: TableName,
        schema: SchemaRef,
        table_schema: SchemaRef,
    ) -> Self {
        StoreSink {
            store,
            table,
            schema,
            table_schema,
        }
    }
}

impl DisplayAs for StoreSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StoreSink: table={}", self.table)
    }
}

#[async_trait]
impl DataSink for StoreSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let batches: Vec<RecordBatch> = data.try_collect().await?;
        // The insert plan casts values to the provider's types; convert to the table's own schema
        // so that types, nullability and metadata match exactly (a NULL key is refused here).
        let batches = batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| quarry_store::cast_batch(&b, &self.table_schema))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                datafusion::error::DataFusionError::Plan(format!(
                    "cannot insert into {}: {e}",
                    self.table
                ))
            })?;
        let summary = self
            .store
            .write(&self.table, batches)
            .await
            .map_err(to_datafusion)?;
        Ok(summary.rows)
    }
}
