//! Which token ranges a scan must read: the shards it asked for, narrowed by its `token()`
//! predicates, and by its partition key when `=` or `IN` fixes every key column. Every store plans
//! from these ranges.

use arrow::array::{Array, ArrayRef};
use arrow::compute::cast;
use quarry_core::ids::ShardId;
use quarry_core::partition_key::{KeyColumn, tokens};
use quarry_core::schema::TableDef;
use quarry_core::shard_map::ShardMap;
use quarry_core::token::TokenRange;

use crate::predicate::{CmpOp, Predicate};
use crate::store::ScanRequest;

/// At most this many partition-key combinations are turned into tokens for pruning.
const MAX_KEY_COMBINATIONS: usize = 1024;

/// The token ranges a scan may touch: the requested shards (each range of the shard set as one
/// token range, shards past the keyspace's count dropped), each narrowed by the token predicates,
/// then by partition-key equalities. Sorted and disjoint: a shard set's ranges are sorted and
/// disjoint, and so are the token ranges of disjoint shard ranges.
pub fn allowed_ranges(
    table: &TableDef,
    shards: ShardMap,
    request: &ScanRequest,
) -> Vec<TokenRange> {
    let last_shard = shards.shard_count() - 1;
    let base: Vec<TokenRange> = match &request.shards {
        Some(set) => set
            .ranges()
            .iter()
            .filter(|r| *r.start() <= last_shard)
            .map(|r| {
                TokenRange::new(
                    shards.range_of(ShardId(*r.start())).start,
                    shards.range_of(ShardId((*r.end()).min(last_shard))).end,
                )
            })
            .collect(),
        None => vec![TokenRange::FULL],
    };
    let mut predicate = TokenRange::FULL;
    for p in &request.filters {
        if let Predicate::TokenRange(r) = p {
            predicate = predicate.intersect(r);
        }
    }
    let ranges: Vec<TokenRange> = base
        .iter()
        .map(|r| r.intersect(&predicate))
        .filter(|r| !r.is_empty())
        .collect();
    if ranges.is_empty() {
        return Vec::new();
    }
    match key_tokens(table, &request.filters) {
        Some(mut tokens) => {
            tokens.sort_unstable();
            tokens.dedup();
            tokens
                .into_iter()
                .filter(|t| ranges.iter().any(|r| r.contains(*t)))
                .map(|t| TokenRange::new(t - 1, t))
                .collect()
        }
        None => ranges,
    }
}

/// When every partition-key column is fixed by `=` or `IN`, the tokens of all combinations.
fn key_tokens(table: &TableDef, filters: &[Predicate]) -> Option<Vec<i64>> {
    let mut per_column: Vec<ArrayRef> = Vec::new();
    for index in table.partition_key_indices() {
        let column = &table.columns[index];
        let target = column.cql_type.arrow_type();
        let values = filters.iter().find_map(|p| match p {
            Predicate::Compare {
                column: c,
                op: CmpOp::Eq,
                value,
            } if *c == column.name => Some(value.clone()),
            Predicate::InList { column: c, values } if *c == column.name => Some(values.clone()),
            _ => None,
        })?;
        let values = cast(&values, &target).ok()?;
        if values.null_count() > 0 {
            return None;
        }
        per_column.push(values);
    }
    let combinations = per_column.iter().map(|a| a.len()).product::<usize>();
    if combinations == 0 || combinations > MAX_KEY_COMBINATIONS {
        return None;
    }
    // Expand the cartesian product column by column.
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); per_column.len()];
    for combo in 0..combinations {
        let mut rest = combo;
        for (c, values) in per_column.iter().enumerate().rev() {
            indices[c].push((rest % values.len()) as u32);
            rest /= values.len();
        }
    }
    let expanded: Vec<ArrayRef> = per_column
        .iter()
        .zip(&indices)
        .map(|(values, idx)| {
            arrow::compute::take(values, &arrow::array::UInt32Array::from(idx.clone()), None)
        })
        .collect::<Result<_, _>>()
        .ok()?;
    let key: Vec<KeyColumn<'_>> = table
        .partition_key_indices()
        .into_iter()
        .zip(&expanded)
        .map(|(i, values)| KeyColumn {
            name: &table.columns[i].name,
            cql_type: table.columns[i].cql_type,
            values,
        })
        .collect();
    tokens(&key, combinations).ok().map(|t| t.values().to_vec())
}
