//! Scans: Quarry's shards of a table, cut where its owners change (ring tokens, tablet ends), each piece read
//! with a prepared, paged `SELECT ... WHERE token(pk) > ? AND token(pk) <= ?` on a replica of it.
//!
//! ```text
//!   request ─allowed_ranges─▶ token ranges ─▶ splits of about `split_bytes` each (by the
//!                                              cluster's size estimates; else SPLIT_SHARDS shards)
//!   split.open() ─▶ for each piece (cut at ring tokens):
//!        page ◀── SELECT on the piece's primary replica (then the next replica, then any node)
//!        page ─▶ Arrow builders (one CellDecoder per column) ─▶ RecordBatch
//! ```
//!
//! A split names its pieces' replicas, so a worker beside one of them reads from its own node.
//! Rows come back in the table's scan schema (text as `Utf8View`), like the embedded store's.

use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use quarry_core::cql_value::CellDecoder;
use quarry_core::schema::TableDef;
use quarry_core::shard_map::ShardMap;
use quarry_core::token::TokenRange;
use quarry_store::{
    BatchStream, ReadCounters, Result, ScanPlan, ScanRequest, ScanSplit, SplitSource, cast_batch,
    scan_ranges, scan_schema,
};
use scylla::deserialize::row::ColumnIterator;
use scylla::policies::load_balancing::{NodeIdentifier, SingleTargetLoadBalancingPolicy};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::prepared::PreparedStatement;

use crate::catalog::quote;
use crate::owners::{Owners, Replica};
use crate::sizes::TableSize;
use crate::{Inner, errors};

/// Shards per split without a size estimate: a full scan of an 800-shard keyspace is 32 splits.
const SPLIT_SHARDS: u32 = 25;

/// Shards per split so that a split reads about `split_bytes` of a table of `size` (Quarry's
/// shards cut the ring evenly, and Murmur3 spreads partitions evenly over it); without an
/// estimate, [`SPLIT_SHARDS`].
fn shards_per_split(size: Option<TableSize>, shard_count: u32, split_bytes: u64) -> u32 {
    match size {
        Some(size) if size.bytes > 0 => {
            let bytes = u128::from(size.bytes);
            // Rounded to the nearest shard.
            let per_split =
                (u128::from(shard_count) * u128::from(split_bytes.max(1)) + bytes / 2) / bytes;
            u32::try_from(per_split)
                .unwrap_or(u32::MAX)
                .clamp(1, shard_count.max(1))
        }
        Some(_) => shard_count.max(1),
        None => SPLIT_SHARDS,
    }
}

/// Plans a scan of one snapshot-free read of the cluster (CQL has no snapshots: each page reads
/// what the replicas hold then).
pub(crate) fn plan(inner: &Arc<Inner>, def: TableDef, request: &ScanRequest) -> Result<ScanPlan> {
    let keyspace = inner.keyspace_def(&def.keyspace)?;
    let shards = ShardMap::new(keyspace.shards);
    let projection: Vec<usize> = match &request.projection {
        Some(p) => {
            if let Some(bad) = p.iter().find(|&&i| i >= def.columns.len()) {
                return Err(quarry_store::Error::Internal(format!(
                    "projection index {bad} is past the {} columns of {}",
                    def.columns.len(),
                    def.table_name()
                )));
            }
            p.clone()
        }
        None => (0..def.columns.len()).collect(),
    };
    let schema = Arc::new(scan_schema(&def).project(&projection)?);
    let allowed = scan_ranges::allowed_ranges(&def, shards, request);
    let owners = Owners::of(inner, &def.table_name());
    let boundaries = owners.boundaries();
    let size = inner.table_size(&def.table_name());
    let per_split = shards_per_split(size, shards.shard_count(), inner.options.split_bytes);
    let def = Arc::new(def);
    let mut splits = Vec::new();
    let mut selected = 0;
    for range in &allowed {
        let Some(covered) = shards.shards_overlapping(range) else {
            continue;
        };
        selected += covered.end() - covered.start() + 1;
        let mut first = *covered.start();
        while first <= *covered.end() {
            let last = (first + per_split - 1).min(*covered.end());
            let span = TokenRange::new(
                shards.range_of(quarry_core::ids::ShardId(first)).start,
                shards.range_of(quarry_core::ids::ShardId(last)).end,
            )
            .intersect(range);
            let pieces: Vec<Piece> = cut_at(&boundaries, span)
                .into_iter()
                .map(|r| Piece {
                    range: r,
                    replicas: owners.replicas(r.end),
                })
                .collect();
            if !pieces.is_empty() {
                let width: u128 = pieces.iter().map(|p| p.range.width()).sum();
                splits.push(ScanSplit {
                    shards: first..=last,
                    estimated_rows: size.map_or(0, |s| {
                        u64::try_from((u128::from(s.partitions) * width) >> 64).unwrap_or(u64::MAX)
                    }),
                    source: Arc::new(ScyllaSplit {
                        inner: inner.clone(),
                        def: def.clone(),
                        projection: projection.clone(),
                        schema: schema.clone(),
                        pieces,
                        limit: request.limit,
                    }),
                });
            }
            first = last + 1;
        }
    }
    Ok(ScanPlan {
        schema,
        splits,
        shards_selected: selected,
        shards_total: shards.shard_count(),
    })
}

/// `range` cut at every boundary strictly inside it, so each piece has one replica set.
fn cut_at(boundaries: &[i64], range: TokenRange) -> Vec<TokenRange> {
    if range.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = range.start;
    let from = boundaries.partition_point(|t| *t <= range.start);
    for &t in &boundaries[from..] {
        if t >= range.end {
            break;
        }
        out.push(TokenRange::new(start, t));
        start = t;
    }
    out.push(TokenRange::new(start, range.end));
    out
}

/// A token range and its replicas, primary first.
#[derive(Debug, Clone)]
struct Piece {
    range: TokenRange,
    replicas: Vec<Replica>,
}

#[derive(Debug)]
struct ScyllaSplit {
    inner: Arc<Inner>,
    def: Arc<TableDef>,
    projection: Vec<usize>,
    schema: SchemaRef,
    pieces: Vec<Piece>,
    limit: Option<usize>,
}

impl SplitSource for ScyllaSplit {
    fn open_counted(&self, reads: Arc<ReadCounters>) -> Result<BatchStream> {
        let reader = Reader {
            inner: self.inner.clone(),
            def: self.def.clone(),
            projection: self.projection.clone(),
            schema: self.schema.clone(),
            statement: None,
            reads,
        };
        let start = (
            reader,
            self.pieces.clone(),
            0usize,
            PagingState::start(),
            0usize,
        );
        let limit = self.limit;
        let stream = futures::stream::unfold(Some(start), move |state| async move {
            let (mut reader, pieces, mut index, mut paging, read) = state?;
            loop {
                if index >= pieces.len() || limit.is_some_and(|l| read >= l) {
                    return None;
                }
                match reader.page(&pieces[index], paging.clone()).await {
                    Ok((batch, next)) => {
                        match next {
                            PagingStateResponse::HasMorePages { state } => paging = state,
                            PagingStateResponse::NoMorePages => {
                                index += 1;
                                paging = PagingState::start();
                            }
                        }
                        if batch.num_rows() == 0 {
                            continue;
                        }
                        let read = read + batch.num_rows();
                        return Some((Ok(batch), Some((reader, pieces, index, paging, read))));
                    }
                    Err(e) => return Some((Err(e), None)),
                }
            }
        });
        Ok(stream.boxed())
    }

    fn describe(&self) -> String {
        let first = self.pieces.first().map(|p| p.range.start).unwrap_or(0);
        let last = self.pieces.last().map(|p| p.range.end).unwrap_or(0);
        let nodes: Vec<String> = self
            .pieces
            .iter()
            .filter_map(|p| p.replicas.first())
            .map(|r| r.node.address.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        format!(
            "scylla {}.{} tokens ({first}, {last}] in {} pieces from {}",
            self.def.keyspace,
            self.def.name,
            self.pieces.len(),
            nodes.join(", ")
        )
    }
}

/// Reads the pages of one split.
struct Reader {
    inner: Arc<Inner>,
    def: Arc<TableDef>,
    projection: Vec<usize>,
    schema: SchemaRef,
    statement: Option<PreparedStatement>,
    reads: Arc<ReadCounters>,
}

impl Reader {
    /// The range SELECT of the projected columns (the first key column when none is projected:
    /// CQL selects at least one, and a count needs only the rows).
    async fn statement(&mut self) -> Result<PreparedStatement> {
        if let Some(s) = &self.statement {
            return Ok(s.clone());
        }
        let columns: Vec<String> = if self.projection.is_empty() {
            vec![quote(&self.def.partition_key[0])]
        } else {
            self.projection
                .iter()
                .map(|&i| quote(&self.def.columns[i].name))
                .collect()
        };
        let key: Vec<String> = self.def.partition_key.iter().map(|c| quote(c)).collect();
        let token = format!("token({})", key.join(", "));
        let text = format!(
            "SELECT {} FROM {}.{} WHERE {token} > ? AND {token} <= ?",
            columns.join(", "),
            quote(&self.def.keyspace),
            quote(&self.def.name)
        );
        let mut statement = self.inner.prepare(&text).await?;
        statement.set_consistency(self.inner.options.read_consistency);
        statement.set_page_size(self.inner.options.page_size);
        statement.set_is_idempotent(true);
        self.statement = Some(statement.clone());
        Ok(statement)
    }

    /// One page of `piece`: from its replicas in order (primary first; on a tablet's replica,
    /// through a connection to the CPU shard holding it), then through any node.
    async fn page(
        &mut self,
        piece: &Piece,
        paging: PagingState,
    ) -> Result<(RecordBatch, PagingStateResponse)> {
        let statement = self.statement().await?;
        let bounds = (piece.range.start, piece.range.end);
        let mut targets: Vec<Option<Replica>> = piece.replicas.iter().cloned().map(Some).collect();
        // The node beside this process first, when it holds the piece.
        if let Some(local) = &self.inner.options.local_node
            && let Some(i) = piece
                .replicas
                .iter()
                .position(|r| &r.node.address.to_string() == local)
        {
            targets[..=i].rotate_right(1);
        }
        targets.push(None);
        let mut last_error = None;
        for target in targets {
            let mut s = statement.clone();
            if let Some(replica) = &target {
                s.set_load_balancing_policy(Some(SingleTargetLoadBalancingPolicy::new(
                    NodeIdentifier::Node(replica.node.clone()),
                    replica.shard,
                )));
            }
            match self
                .inner
                .session
                .execute_single_page(&s, bounds, paging.clone())
                .await
            {
                Ok((result, next)) => {
                    let local = match (&target, &self.inner.options.local_node) {
                        (Some(replica), Some(local)) => &replica.node.address.to_string() == local,
                        _ => false,
                    };
                    let counter = if local {
                        &self.inner.local_pages
                    } else {
                        &self.inner.remote_pages
                    };
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

                    let rows = result.into_rows_result().map_err(|e| {
                        errors::other(&format!("reading {}", self.def.table_name()), e)
                    })?;
                    let batch = self.decode(&rows)?;
                    self.reads.add(local, batch.num_rows() as u64);
                    self.inner.read_throttle.take(batch.num_rows()).await;
                    return Ok((batch, next));
                }
                Err(e) => {
                    let where_ = target
                        .as_ref()
                        .map(|r| r.node.address.to_string())
                        .unwrap_or_else(|| "any node".into());
                    let e = errors::execution(
                        &format!(
                            "reading {} tokens {} on {where_}",
                            self.def.table_name(),
                            piece.range
                        ),
                        e,
                    );
                    if !e.failure().retryable {
                        return Err(e);
                    }
                    tracing::debug!("{e}; trying another replica");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| quarry_store::Error::Internal("no replica tried".into())))
    }

    fn decode(
        &self,
        rows: &scylla::response::query_result::QueryRowsResult,
    ) -> Result<RecordBatch> {
        let n = rows.rows_num();
        let mut decoders: Vec<CellDecoder> = self
            .projection
            .iter()
            .map(|&i| CellDecoder::new(self.def.columns[i].cql_type, n))
            .collect();
        let iter = rows
            .rows::<ColumnIterator>()
            .map_err(|e| errors::other(&format!("reading {}", self.def.table_name()), e))?;
        for row in iter {
            let row =
                row.map_err(|e| errors::other(&format!("reading {}", self.def.table_name()), e))?;
            for (decoder, (column, &i)) in decoders.iter_mut().zip(row.zip(&self.projection)) {
                let column = column
                    .map_err(|e| errors::other(&format!("reading {}", self.def.table_name()), e))?;
                decoder
                    .push(column.slice.map(|s| s.as_slice()))
                    .map_err(|problem| quarry_store::Error::SchemaMismatch {
                        table: self.def.table_name().to_string(),
                        problem: format!("column {} {problem}", self.def.columns[i].name),
                    })?;
            }
        }
        let columns = decoders.iter_mut().map(CellDecoder::finish).collect();
        let table_schema = Arc::new(self.def.arrow_schema().project(&self.projection)?);
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let batch = RecordBatch::try_new_with_options(table_schema, columns, &options)?;
        cast_batch(&batch, &self.schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_cut_at_ring_tokens_inside_them() {
        let ring = [-100, 0, 100];
        assert_eq!(
            cut_at(&ring, TokenRange::new(-150, 50)),
            vec![
                TokenRange::new(-150, -100),
                TokenRange::new(-100, 0),
                TokenRange::new(0, 50)
            ]
        );
        assert_eq!(
            cut_at(&ring, TokenRange::new(0, 100)),
            vec![TokenRange::new(0, 100)]
        );
        assert!(cut_at(&ring, TokenRange::new(5, 5)).is_empty());
    }
}
