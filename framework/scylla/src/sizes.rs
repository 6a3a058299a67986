//! How much a table holds, as the cluster estimates it (`system.size_estimates`), for sizing
//! scan splits.
//!
//! A node lists its estimates for the token ranges it is the primary replica of: partitions and
//! their mean size per range. As Spark's Cassandra connector does, the estimate of the whole table
//! is what the answering node lists, scaled up by the share of the ring its ranges cover. The
//! estimates change slowly (Cassandra recomputes them every few minutes), so each table's is read
//! in the background at most once a minute, and scans are planned with the last one read (or
//! without one, at first).

use std::time::Duration;

use futures::TryStreamExt;
use quarry_core::schema::TableName;
use quarry_store::Result;
use scylla::client::session::Session;

use crate::errors;

/// How long an estimate is used before it is read again.
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(60);

/// A table's estimated size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSize {
    /// Partitions (CQL rows, for tables without clustering columns).
    pub partitions: u64,
    pub bytes: u64,
}

/// Reads `table`'s estimate from the node the driver asks.
pub(crate) async fn read(session: &Session, table: &TableName) -> Result<Option<TableSize>> {
    let what = format!("reading the size estimates of {table}");
    let mut rows = session
        .query_iter(
            "SELECT range_start, range_end, mean_partition_size, partitions_count \
             FROM system.size_estimates WHERE keyspace_name = ? AND table_name = ?",
            (table.keyspace.as_str(), table.table.as_str()),
        )
        .await
        .map_err(|e| errors::other(&what, e))?
        .rows_stream::<(String, String, i64, i64)>()
        .map_err(|e| errors::other(&what, e))?;
    let mut ranges = Vec::new();
    while let Some((start, end, mean_size, partitions)) =
        rows.try_next().await.map_err(|e| errors::other(&what, e))?
    {
        let (Ok(start), Ok(end)) = (start.parse::<i64>(), end.parse::<i64>()) else {
            continue;
        };
        ranges.push((
            (start, end),
            mean_size.max(0) as u64,
            partitions.max(0) as u64,
        ));
    }
    Ok(whole_table(&ranges))
}

/// The whole table's size from one node's `((start, end], mean partition size, partitions)`
/// ranges: their sums scaled up by the share of the ring the ranges cover.
fn whole_table(ranges: &[((i64, i64), u64, u64)]) -> Option<TableSize> {
    let mut covered: u128 = 0;
    let (mut partitions, mut bytes) = (0u128, 0u128);
    for &((start, end), mean_size, count) in ranges {
        let width = end.wrapping_sub(start) as u64;
        covered += if width == 0 {
            1 << 64
        } else {
            u128::from(width)
        };
        partitions += u128::from(count);
        bytes += u128::from(count) * u128::from(mean_size);
    }
    if covered == 0 {
        return None;
    }
    let covered = covered.min(1 << 64);
    let scale = |n: u128| u64::try_from((n << 64) / covered).unwrap_or(u64::MAX);
    Some(TableSize {
        partitions: scale(partitions),
        bytes: scale(bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_ranges_scale_up_to_the_whole_ring() {
        // A quarter of the ring, 100 partitions of 50 bytes: 400 and 20,000 in all.
        let quarter = (i64::MIN, i64::MIN / 2);
        assert_eq!(
            whole_table(&[(quarter, 50, 100)]),
            Some(TableSize {
                partitions: 400,
                bytes: 20_000
            })
        );
        // A range that wraps around the ring, and one node holding every token.
        let wrap = (i64::MAX - (1 << 62) + 1, i64::MIN + (1 << 62));
        assert_eq!(
            whole_table(&[(wrap, 1, 10)]).map(|s| s.partitions),
            Some(20)
        );
        assert_eq!(whole_table(&[((7, 7), 2, 10)]).map(|s| s.bytes), Some(20));
        assert_eq!(whole_table(&[]), None);
    }
}
