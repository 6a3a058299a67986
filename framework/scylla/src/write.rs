//! Writes: rows grouped by their primary replica into unlogged batches of prepared INSERTs,
//! a bounded number in flight, at the configured consistency (LOCAL_QUORUM by default).
//!
//! ```text
//!   batches ─dedupe by primary key (last wins)─▶ tokens ─▶ primary replica ─▶ groups
//!   group, in token order ─chunks of ≤ batch_rows and ≤ batch_bytes─▶ UNLOGGED BATCH of
//!   INSERT ... VALUES (?, ...) ─▶ cluster
//! ```
//!
//! Values go from Arrow columns to the wire through the same codec the token hash uses
//! ([`CellEncoder`]), so nothing is converted twice. A cluster write is not all-or-nothing: a
//! failure says how many rows landed first; INSERTs are idempotent upserts, so writing the same
//! rows again is safe.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::StreamExt;
use quarry_core::cql_value::CellEncoder;
use quarry_core::schema::TableDef;
use quarry_store::{Error, Result, WriteSummary, row_tokens};
use scylla::policies::load_balancing::LoadBalancingPolicy;
use scylla::serialize::SerializationError;
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::writers::RowWriter;
use scylla::statement::batch::{Batch, BatchType};

use crate::catalog::quote;
use crate::owners::{Owners, Replica};
use crate::{Inner, errors};

/// One row's cells in CQL's wire form, encoded once: measured to cut batches by bytes, then
/// sent as they are.
struct EncodedRow {
    bytes: Vec<u8>,
    /// Each cell's bytes in `bytes`; `None` for a null.
    cells: Vec<Option<std::ops::Range<usize>>>,
}

impl EncodedRow {
    /// Row `row` of `columns`; a value that cannot be encoded is an error naming its column,
    /// before anything is sent.
    fn encode(def: &TableDef, columns: &[CellEncoder], row: usize) -> Result<EncodedRow> {
        let mut bytes = Vec::new();
        let mut cells = Vec::with_capacity(columns.len());
        for (c, column) in columns.iter().enumerate() {
            if column.is_null(row) {
                cells.push(None);
                continue;
            }
            let start = bytes.len();
            column
                .write(row, &mut bytes)
                .map_err(|problem| Error::SchemaMismatch {
                    table: def.table_name().to_string(),
                    problem: format!("column {} {problem}", def.columns[c].name),
                })?;
            cells.push(Some(start..bytes.len()));
        }
        Ok(EncodedRow { bytes, cells })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CellError(String);

impl SerializeRow for EncodedRow {
    fn serialize(
        &self,
        _ctx: &RowSerializationContext<'_>,
        writer: &mut RowWriter,
    ) -> Result<(), SerializationError> {
        for cell in &self.cells {
            let w = writer.make_cell_writer();
            match cell {
                None => {
                    w.set_null();
                }
                Some(range) => {
                    w.set_value(&self.bytes[range.clone()])
                        .map_err(|e| SerializationError::new(CellError(e.to_string())))?;
                }
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

/// Upserts `batches` (in the table's schema) into the cluster.
pub(crate) async fn write(
    inner: &Arc<Inner>,
    def: &TableDef,
    batches: Vec<RecordBatch>,
) -> Result<WriteSummary> {
    let batches = quarry_store::conform::conform_batches(def, batches)?;
    let encoders: Vec<Vec<CellEncoder>> = batches
        .iter()
        .map(|b| {
            def.columns
                .iter()
                .zip(b.columns())
                .map(|(c, values)| {
                    CellEncoder::new(c.cql_type, values).map_err(|problem| Error::SchemaMismatch {
                        table: def.table_name().to_string(),
                        problem: format!("column {} {problem}", c.name),
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let tokens = batches
        .iter()
        .map(|b| row_tokens(def, b))
        .collect::<Result<Vec<_>>>()?;

    // Later rows of the same primary key win, as in one embedded write.
    let key_columns = def.primary_key_indices();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut keep: Vec<(usize, usize)> = Vec::new();
    let mut key = Vec::new();
    for (b, batch) in batches.iter().enumerate().rev() {
        for row in (0..batch.num_rows()).rev() {
            key.clear();
            for &c in &key_columns {
                let e = &encoders[b][c];
                if e.is_null(row) {
                    return Err(Error::SchemaMismatch {
                        table: def.table_name().to_string(),
                        problem: format!(
                            "column {} is part of the primary key and cannot be NULL",
                            def.columns[c].name
                        ),
                    });
                }
                let start = key.len();
                key.extend_from_slice(&[0; 4]);
                e.write(row, &mut key)
                    .map_err(|problem| Error::SchemaMismatch {
                        table: def.table_name().to_string(),
                        problem: format!("column {} {problem}", def.columns[c].name),
                    })?;
                let len = (key.len() - start - 4) as u32;
                key[start..start + 4].copy_from_slice(&len.to_be_bytes());
            }
            if seen.insert(key.clone()) {
                keep.push((b, row));
            }
        }
    }
    keep.reverse();
    let total = keep.len() as u64;
    if total == 0 {
        return Ok(WriteSummary { rows: 0 });
    }

    // Group by primary replica (and, for a tablet, the shard holding it there), so a batch is
    // applied where its rows live.
    let owners = Owners::now(inner, &def.table_name()).await;
    type Group = (Option<Replica>, Vec<(usize, usize)>);
    let mut groups: HashMap<Option<(uuid::Uuid, Option<u32>)>, Group> = HashMap::new();
    // In token order, a batch's rows share partitions where they can (a batch over many
    // partitions costs its coordinator more).
    keep.sort_by_key(|&(b, row)| tokens[b].value(row));
    for (b, row) in keep {
        let token = tokens[b].value(row);
        let primary = owners.replicas(token).into_iter().next();
        let key = primary.as_ref().map(|r| (r.node.host_id, r.shard));
        groups
            .entry(key)
            .or_insert_with(|| (primary, Vec::new()))
            .1
            .push((b, row));
    }
    // The driver routes a vnode table's rows to their replicas itself (token-aware); a tablet's
    // replicas it may not know yet, so those batches name theirs.
    let default_policy = inner
        .session
        .get_default_execution_profile_handle()
        .to_profile()
        .get_load_balancing_policy()
        .clone();

    let mut insert = inner
        .prepare(&insert_cql(def, inner.options.write_ttl))
        .await?;
    insert.set_consistency(inner.options.write_consistency);
    insert.set_is_idempotent(true);

    let chunks: Vec<(Option<Replica>, Vec<EncodedRow>)> = groups
        .into_values()
        .map(|(primary, rows)| {
            let target = primary.filter(|r| r.shard.is_some());
            let encoded = rows
                .into_iter()
                .map(|(b, row)| EncodedRow::encode(def, &encoders[b], row))
                .collect::<Result<Vec<_>>>()?;
            Ok(chunk_rows(
                encoded,
                inner.options.batch_rows.max(1),
                inner.options.batch_bytes,
                |row| row.bytes.len(),
            )
            .into_iter()
            .map(move |chunk| (target.clone(), chunk)))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    let name = def.table_name();
    let results: Vec<Result<u64>> = futures::stream::iter(chunks)
        .map(|(target, chunk)| {
            let mut insert = insert.clone();
            let name = &name;
            let policy = target.map(|r| r.first_then(default_policy.clone()));
            async move {
                let policy = policy.map(|p| Arc::new(p) as Arc<dyn LoadBalancingPolicy>);
                inner.write_throttle.take(chunk.len()).await;
                let rows = chunk;
                let n = rows.len() as u64;
                let result = if let [only] = rows.as_slice() {
                    insert.set_load_balancing_policy(policy);
                    inner
                        .session
                        .execute_unpaged(&insert, only)
                        .await
                        .map(|_| ())
                } else {
                    let mut batch = Batch::new(BatchType::Unlogged);
                    batch.set_consistency(inner.options.write_consistency);
                    batch.set_is_idempotent(true);
                    batch.set_load_balancing_policy(policy);
                    for _ in 0..rows.len() {
                        batch.append_statement(insert.clone());
                    }
                    inner.session.batch(&batch, rows).await.map(|_| ())
                };
                result
                    .map(|()| n)
                    .map_err(|e| errors::execution(&format!("writing {n} rows to {name}"), e))
            }
        })
        .buffer_unordered(inner.options.writes_in_flight.max(1))
        .collect()
        .await;
    let written: u64 = results.iter().filter_map(|r| r.as_ref().ok()).sum();
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        let failure = e.failure();
        return Err(Error::Cluster {
            message: format!(
                "{e} ({written} of {total} rows were written before the failure; writes are \
                 idempotent upserts, so writing the same rows again is safe)"
            ),
            failure,
        });
    }
    Ok(WriteSummary { rows: total })
}

/// Consecutive chunks of `rows` with at most `max_rows` rows and `max_bytes` bytes each (by
/// `bytes`); a row larger than `max_bytes` is a chunk of its own.
fn chunk_rows<T>(
    rows: Vec<T>,
    max_rows: usize,
    max_bytes: usize,
    bytes: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut current: Vec<T> = Vec::new();
    let mut held = 0usize;
    for row in rows {
        let size = bytes(&row);
        if !current.is_empty() && (current.len() == max_rows || held + size > max_bytes) {
            chunks.push(std::mem::take(&mut current));
            held = 0;
        }
        held += size;
        current.push(row);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The prepared INSERT of every column of `def`, with rows expiring after `ttl` seconds.
fn insert_cql(def: &TableDef, ttl: Option<u32>) -> String {
    let columns: Vec<String> = def.columns.iter().map(|c| quote(&c.name)).collect();
    let markers = vec!["?"; columns.len()].join(", ");
    let mut text = format!(
        "INSERT INTO {}.{} ({}) VALUES ({markers})",
        quote(&def.keyspace),
        quote(&def.name),
        columns.join(", ")
    );
    if let Some(seconds) = ttl {
        text.push_str(&format!(" USING TTL {seconds}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{chunk_rows, insert_cql};
    use quarry_core::cql_type::CqlType;
    use quarry_core::schema::{ColumnDef, TableDef};

    #[test]
    fn inserts_name_every_column_and_carry_the_ttl() {
        let def = TableDef::new(
            "ks",
            "rollup",
            vec![
                ColumnDef::new("id", CqlType::BigInt),
                ColumnDef::new("v", CqlType::Double),
            ],
            vec!["id".into()],
            vec![],
        )
        .unwrap();
        assert_eq!(
            insert_cql(&def, None),
            r#"INSERT INTO "ks"."rollup" ("id", "v") VALUES (?, ?)"#
        );
        assert_eq!(
            insert_cql(&def, Some(86_400)),
            r#"INSERT INTO "ks"."rollup" ("id", "v") VALUES (?, ?) USING TTL 86400"#
        );
    }

    #[test]
    fn chunks_hold_at_most_their_rows_and_bytes_and_a_large_row_goes_alone() {
        let sizes = [10, 10, 10, 50, 10, 200, 10, 10, 10, 10, 10];
        let chunks = chunk_rows(sizes.to_vec(), 4, 60, |&s| s);
        assert_eq!(
            chunks,
            vec![
                vec![10, 10, 10],
                vec![50, 10],
                vec![200],
                vec![10, 10, 10, 10],
                vec![10],
            ]
        );
        assert!(chunk_rows(Vec::<usize>::new(), 4, 60, |&s| s).is_empty());
    }
}
