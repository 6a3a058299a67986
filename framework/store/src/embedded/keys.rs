//! Finding the rows of one place whose primary keys another place also holds, without comparing
//! every key.
//!
//! ```text
//!   new rows ──▶ KeySet (key hash ──▶ rows, plus a one-probe bit filter)
//!                   │
//!   older data file, row group by row group:
//!     _key column, sorted once ──▶ galloping search for the set's hashes ──▶ candidates
//!       ──▶ their key columns compared ──▶ matches
//! ```
//!
//! Every row has a key hash: the Murmur3 token of its whole primary key in CQL's composite
//! serialization (the partition key's token, computed over every key column). It is defined by
//! CQL's byte format, not by an in-memory layout, so hashes written into data files by one
//! version stay comparable with hashes computed by the next. Data files keep it in a hidden column
//! ([`KEY_COLUMN`]) and memtable chunks compute it on arrival, so a search decodes eight bytes a
//! row; the key columns themselves are decoded only for the few rows whose hash matches, and
//! equal hashes count only when the keys are equal.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, concat};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use quarry_core::partition_key::{KeyColumn, tokens};
use quarry_core::schema::TableDef;

use crate::embedded::data_file::DataFileRef;
use crate::embedded::threads::yield_to_queries;
use crate::error::{Error, Result};

/// Rows a key set built in the idle class inserts between two checkpoints
/// ([`yield_to_queries`]).
const CHECKPOINT_ROWS: usize = 65_536;

/// The hidden column of data files that holds each row's key hash, after the token column.
pub const KEY_COLUMN: &str = "_key";

/// The field of [`KEY_COLUMN`].
pub fn key_field() -> Field {
    Field::new(KEY_COLUMN, DataType::Int64, false)
}

/// Rows in stored form with their key hashes as a column after the token ([`KEY_COLUMN`]): as
/// they are when they carry it already (read from a data file, or a flush's memtable rows),
/// otherwise with the hashes computed.
pub fn with_key_column(table: &TableDef, rows: &RecordBatch) -> Result<RecordBatch> {
    if carries_key_column(table, rows) {
        return Ok(rows.clone());
    }
    let hashes = key_hashes(table, rows)?;
    append_key_column(rows, Arc::new(hashes))
}

/// Rows in stored form (without key hashes) with `hashes`, one per row, after the token column.
pub fn append_key_column(rows: &RecordBatch, hashes: ArrayRef) -> Result<RecordBatch> {
    let mut columns = rows.columns().to_vec();
    columns.push(hashes);
    Ok(RecordBatch::try_new(
        with_key_field(&rows.schema()),
        columns,
    )?)
}

/// A stored-form schema (without key hashes) with the [`KEY_COLUMN`] after the token column.
pub fn with_key_field(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(key_field()));
    Arc::new(Schema::new(fields))
}

/// The key hashes of rows in stored form: their [`KEY_COLUMN`] when they carry it, otherwise
/// computed from their keys.
pub fn stored_key_hashes(table: &TableDef, rows: &RecordBatch) -> Result<Int64Array> {
    if carries_key_column(table, rows) {
        return Ok(rows
            .column(table.columns.len() + 1)
            .as_primitive::<Int64Type>()
            .clone());
    }
    key_hashes(table, rows)
}

/// Whether rows in stored form carry their key hashes after the token column.
fn carries_key_column(table: &TableDef, rows: &RecordBatch) -> bool {
    let schema = rows.schema();
    schema
        .fields()
        .get(table.columns.len() + 1)
        .is_some_and(|field| field.name() == KEY_COLUMN && field.data_type() == &DataType::Int64)
}

/// The key hash of every row of `batch`, whose first columns are the table's.
pub fn key_hashes(table: &TableDef, batch: &RecordBatch) -> Result<Int64Array> {
    let columns: Vec<ArrayRef> = table
        .primary_key_indices()
        .into_iter()
        .map(|i| batch.column(i).clone())
        .collect();
    hash_keys(table, &columns, batch.num_rows())
}

/// The key hash of every row, given the table's primary-key columns in key order.
fn hash_keys(table: &TableDef, columns: &[ArrayRef], rows: usize) -> Result<Int64Array> {
    let key: Vec<KeyColumn<'_>> = table
        .primary_key_indices()
        .into_iter()
        .zip(columns)
        .map(|(i, values)| KeyColumn {
            name: &table.columns[i].name,
            cql_type: table.columns[i].cql_type,
            values,
        })
        .collect();
    Ok(tokens(&key, rows)?)
}

/// Key hashes are Murmur3 output already: hashing them again would only cost time.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_i64(&mut self, v: i64) {
        self.0 = v as u64;
    }
}

/// A row group's key hashes in ascending order, with the row (within the group) of each, and a
/// filter of them.
#[derive(Debug, PartialEq)]
pub struct GroupKeys {
    hashes: Vec<i64>,
    rows: Vec<u32>,
    filter: HashFilter,
}

impl GroupKeys {
    /// Sorts the hashes of a group's rows, given in row order.
    pub fn sorted(hashes: Vec<i64>) -> GroupKeys {
        let filter = HashFilter::new(&hashes);
        let mut pairs: Vec<(i64, u32)> = hashes
            .into_iter()
            .enumerate()
            .map(|(row, hash)| (hash, row as u32))
            .collect();
        pairs.sort_unstable();
        let (hashes, rows) = pairs.into_iter().unzip();
        GroupKeys {
            hashes,
            rows,
            filter,
        }
    }

    pub fn rows(&self) -> usize {
        self.hashes.len()
    }

    /// False when no row of the group has key hash `hash`.
    pub fn may_hold(&self, hash: i64) -> bool {
        self.filter.may_hold(hash)
    }

    /// What the keys of `rows` rows hold in memory.
    pub fn bytes_for(rows: usize) -> u64 {
        (rows * (size_of::<i64>() + size_of::<u32>())) as u64 + HashFilter::bytes_for(rows)
    }
}

/// A blocked Bloom filter of key hashes: each hash sets three bits of one 64-bit word, with a
/// word for every four hashes or fewer (16 to 32 bits a hash), so a lookup reads one word and
/// about one absent hash in two hundred passes. Most keys a search looks for are new (absent
/// from every older run): the filter turns away almost all of them before any search.
#[derive(Debug, PartialEq)]
struct HashFilter {
    words: Vec<u64>,
    mask: u64,
}

impl HashFilter {
    fn words_for(hashes: usize) -> usize {
        hashes.div_ceil(4).next_power_of_two()
    }

    fn bytes_for(hashes: usize) -> u64 {
        (HashFilter::words_for(hashes) * size_of::<u64>()) as u64
    }

    fn new(hashes: &[i64]) -> HashFilter {
        let words = HashFilter::words_for(hashes.len());
        let mut filter = HashFilter {
            words: vec![0; words],
            mask: words as u64 - 1,
        };
        for &hash in hashes {
            let (word, bits) = filter.place(hash);
            filter.words[word] |= bits;
        }
        filter
    }

    /// The word of `hash` (from its low bits) and the bits it sets there (from its high bits:
    /// key hashes are Murmur3 output, so the two are independent).
    fn place(&self, hash: i64) -> (usize, u64) {
        let h = hash as u64;
        let bits = (1 << (h >> 46 & 63)) | (1 << (h >> 52 & 63)) | (1 << (h >> 58));
        ((h & self.mask) as usize, bits)
    }

    fn may_hold(&self, hash: i64) -> bool {
        let (word, bits) = self.place(hash);
        self.words[word] & bits == bits
    }
}

/// A row group's key hashes: sorted when they are cached, in row order when the cache is full.
pub enum GroupHashes {
    Sorted(std::sync::Arc<GroupKeys>),
    InRowOrder(Vec<i64>),
}

/// The first index at or after `from` whose hash is at least `hash` (`hashes` ascending):
/// galloping from `from`, so a walk through ascending `hash`es costs the logarithm of each gap.
fn gallop(hashes: &[i64], from: usize, hash: i64) -> usize {
    let mut low = from;
    let mut step = 1;
    loop {
        let probe = low + step - 1;
        if probe >= hashes.len() {
            return low + hashes[low..].partition_point(|&h| h < hash);
        }
        if hashes[probe] >= hash {
            return low + hashes[low..probe].partition_point(|&h| h < hash);
        }
        low = probe + 1;
        step *= 2;
    }
}

/// Builds hash maps and sets keyed by key hashes.
pub type PassThroughBuild = BuildHasherDefault<PassThrough>;

const END: u32 = u32::MAX;

/// The primary keys of a set of rows, each with a tag (the sequence number of its write), indexed
/// by key hash.
#[derive(Debug)]
pub struct KeySet {
    /// The key columns of the set's rows, in the table's types.
    keys: Vec<ArrayRef>,
    tags: Vec<u64>,
    /// First row of each hash; further rows of the same hash follow `next`.
    head: HashMap<i64, u32, BuildHasherDefault<PassThrough>>,
    next: Vec<u32>,
    /// The distinct hashes, ascending, for searching sorted row groups.
    sorted: Vec<i64>,
    /// Every row's token and hash, by token: a row group covering part of the ring is searched
    /// for the hashes of that part only (equal keys have equal tokens).
    by_token: Vec<(i64, i64)>,
    /// One bit per hash bucket: most rows of a search are not in the set and stop here.
    filter: Vec<u64>,
    filter_mask: u64,
    min_token: i64,
    max_token: i64,
}

/// Keys of some rows, with the tag they carry in a [`KeySet`].
pub struct Tagged<'a> {
    /// The primary-key columns, in key order.
    pub keys: Vec<ArrayRef>,
    pub tokens: &'a [i64],
    pub hashes: &'a [i64],
    pub tag: u64,
}

impl<'a> Tagged<'a> {
    /// The keys of rows in stored form (the table's columns, then the token).
    pub fn of_rows(table: &TableDef, rows: &'a RecordBatch, hashes: &'a [i64], tag: u64) -> Self {
        Tagged {
            keys: table
                .primary_key_indices()
                .into_iter()
                .map(|i| rows.column(i).clone())
                .collect(),
            tokens: rows
                .column(table.columns.len())
                .as_primitive::<Int64Type>()
                .values(),
            hashes,
            tag,
        }
    }
}

impl KeySet {
    /// The keys of `parts`, in order: row `i` of the set is the `i`-th row over all parts.
    pub fn new(table: &TableDef, parts: &[Tagged<'_>]) -> Result<KeySet> {
        let types = key_types(table);
        let mut keys = Vec::with_capacity(types.len());
        for (k, key_type) in types.iter().enumerate() {
            let columns = parts
                .iter()
                .map(|p| cast_to(&p.keys[k], key_type))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&dyn Array> = columns.iter().map(|c| c.as_ref()).collect();
            keys.push(if refs.is_empty() {
                arrow::array::new_empty_array(key_type)
            } else {
                concat(&refs)?
            });
            yield_to_queries();
        }
        let total: usize = parts.iter().map(|p| p.hashes.len()).sum();
        let bits = (total.max(1) * 16).next_power_of_two().max(64);
        let mut set = KeySet {
            keys,
            tags: Vec::with_capacity(total),
            head: HashMap::with_capacity_and_hasher(total, Default::default()),
            next: Vec::with_capacity(total),
            sorted: Vec::new(),
            by_token: Vec::with_capacity(total),
            filter: vec![0; bits / 64],
            filter_mask: bits as u64 - 1,
            min_token: i64::MAX,
            max_token: i64::MIN,
        };
        for part in parts {
            if part.tokens.len() != part.hashes.len() {
                return Err(Error::Internal(format!(
                    "{} key hashes for {} rows",
                    part.hashes.len(),
                    part.tokens.len()
                )));
            }
            // A piece at a time, with a checkpoint between pieces (a run's key set may hold
            // millions of rows).
            for (tokens, hashes) in part
                .tokens
                .chunks(CHECKPOINT_ROWS)
                .zip(part.hashes.chunks(CHECKPOINT_ROWS))
            {
                yield_to_queries();
                if let (Some(min), Some(max)) = (tokens.iter().min(), tokens.iter().max()) {
                    set.min_token = set.min_token.min(*min);
                    set.max_token = set.max_token.max(*max);
                }
                set.by_token
                    .extend(tokens.iter().copied().zip(hashes.iter().copied()));
                for &hash in hashes {
                    let row = set.tags.len() as u32;
                    set.tags.push(part.tag);
                    let bucket = hash as u64 & set.filter_mask;
                    set.filter[(bucket / 64) as usize] |= 1 << (bucket % 64);
                    let previous = set.head.insert(hash, row).unwrap_or(END);
                    set.next.push(previous);
                }
            }
        }
        yield_to_queries();
        set.sorted = set.head.keys().copied().collect();
        set.sorted.sort_unstable();
        yield_to_queries();
        // Each part is sorted by token already (memtable chunks, runs): the stable sort finds
        // those runs and merges them, in O(n log k) for k parts.
        set.by_token.sort();
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// The tag of row `row` of the set.
    pub fn tag(&self, row: u32) -> u64 {
        self.tags[row as usize]
    }

    /// Whether rows with tokens in `[min, max]` can hold a key of the set.
    pub fn may_overlap(&self, min: i64, max: i64) -> bool {
        !self.is_empty() && min <= self.max_token && max >= self.min_token
    }

    /// Pairs `(i, row)` where `hashes[i]` equals the hash of the set's row `row`; the keys
    /// still have to be compared ([`KeySet::confirm`]).
    pub fn candidates(&self, hashes: &[i64]) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for (i, &hash) in hashes.iter().enumerate() {
            let bucket = hash as u64 & self.filter_mask;
            if self.filter[(bucket / 64) as usize] & (1 << (bucket % 64)) == 0 {
                continue;
            }
            let mut row = self.head.get(&hash).copied().unwrap_or(END);
            while row != END {
                out.push((i as u32, row));
                row = self.next[row as usize];
            }
        }
        out
    }

    /// As [`KeySet::candidates`], over a row group's sorted hashes whose rows have tokens in
    /// `tokens` (pairs whose set row lies outside them may be found too, when every row of the
    /// group is probed; their keys cannot be equal). The set's hashes in that token range that
    /// the group's filter lets through are looked up by galloping through the group's, so the
    /// work grows with the set's share of the group's part of the ring, not with the group (a
    /// memtable's new keys against a run of millions, cut at shard boundaries into row groups).
    pub fn candidates_in(
        &self,
        group: &GroupKeys,
        tokens: std::ops::RangeInclusive<i64>,
    ) -> Vec<(u32, u32)> {
        let from = self.by_token.partition_point(|&(t, _)| t < *tokens.start());
        let to = self.by_token.partition_point(|&(t, _)| t <= *tokens.end());
        // Checking a hash against the group's filter costs about what probing one of the
        // group's rows against the set's does: past as many hashes as the group has rows,
        // probing every row is cheaper.
        if to - from > group.rows() {
            let mut out = self.candidates(&group.hashes);
            for pair in &mut out {
                pair.0 = group.rows[pair.0 as usize];
            }
            return out;
        }
        let hashes: Vec<i64> = if to - from == self.by_token.len() {
            let held = self.sorted.iter().copied();
            held.filter(|&hash| group.may_hold(hash)).collect()
        } else {
            let part = self.by_token[from..to].iter().map(|&(_, hash)| hash);
            let mut held: Vec<i64> = part.filter(|&hash| group.may_hold(hash)).collect();
            held.sort_unstable();
            held.dedup();
            held
        };
        let mut out = Vec::new();
        let mut at = 0;
        for hash in hashes {
            at = gallop(&group.hashes, at, hash);
            if at == group.hashes.len() {
                break;
            }
            let mut i = at;
            while i < group.hashes.len() && group.hashes[i] == hash {
                let mut row = self.head.get(&hash).copied().unwrap_or(END);
                while row != END {
                    out.push((group.rows[i], row));
                    row = self.next[row as usize];
                }
                i += 1;
            }
        }
        out
    }

    /// Of `candidates` (pairs of a row of `other` and a row of the set), those whose keys are
    /// equal. `other` holds the key columns of the other side (any text representation), in key
    /// order.
    pub fn confirm(
        &self,
        table: &TableDef,
        other: &[ArrayRef],
        candidates: &[(u32, u32)],
    ) -> Result<Vec<(u32, u32)>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let types = key_types(table);
        let converter =
            RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
        let theirs = UInt32Array::from_iter_values(candidates.iter().map(|c| c.0));
        let ours = UInt32Array::from_iter_values(candidates.iter().map(|c| c.1));
        let their_columns = other
            .iter()
            .zip(&types)
            .map(|(c, t)| cast_to(&arrow::compute::take(c, &theirs, None)?, t))
            .collect::<Result<Vec<_>>>()?;
        let our_columns = self
            .keys
            .iter()
            .map(|c| Ok(arrow::compute::take(c, &ours, None)?))
            .collect::<Result<Vec<_>>>()?;
        let their_rows = converter.convert_columns(&their_columns)?;
        let our_rows = converter.convert_columns(&our_columns)?;
        Ok(candidates
            .iter()
            .enumerate()
            .filter(|(i, _)| their_rows.row(*i) == our_rows.row(*i))
            .map(|(_, c)| *c)
            .collect())
    }

    /// Rows of `batch` (stored form, with `hashes`) whose key the set holds, as pairs of a row
    /// of `batch` and a row of the set.
    pub fn matches_in_batch(
        &self,
        table: &TableDef,
        batch: &RecordBatch,
        hashes: &[i64],
    ) -> Result<Vec<(u32, u32)>> {
        let candidates = self.candidates(hashes);
        let key_columns: Vec<ArrayRef> = table
            .primary_key_indices()
            .into_iter()
            .map(|i| batch.column(i).clone())
            .collect();
        self.confirm(table, &key_columns, &candidates)
    }

    /// Rows of row group `group` of `file` whose key the set holds, as pairs of a row of the
    /// group and a row of the set.
    pub fn matches_in_group(
        &self,
        table: &TableDef,
        file: &DataFileRef,
        group: usize,
    ) -> Result<Vec<(u32, u32)>> {
        let info = file.groups[group];
        if !self.may_overlap(info.min_token, info.max_token) {
            return Ok(Vec::new());
        }
        let key_indices = table.primary_key_indices();
        let hashes = file.key_hashes(group, || match file.key_column {
            Some(column) => {
                let mut hashes = Vec::with_capacity(info.rows as usize);
                for batch in crate::embedded::scan::read_group(file, group, &[column], None)? {
                    hashes.extend_from_slice(batch?.column(0).as_primitive::<Int64Type>().values());
                }
                Ok(hashes)
            }
            None => {
                // A file written before key hashes were stored: hash its keys now.
                let mut hashes = Vec::with_capacity(info.rows as usize);
                for batch in crate::embedded::scan::read_group(file, group, &key_indices, None)? {
                    let batch = batch?;
                    let rows = batch.num_rows();
                    hashes.extend_from_slice(hash_keys(table, batch.columns(), rows)?.values());
                }
                Ok(hashes)
            }
        })?;
        let candidates = match &hashes {
            GroupHashes::Sorted(keys) => self.candidates_in(keys, info.min_token..=info.max_token),
            GroupHashes::InRowOrder(hashes) => self.candidates(hashes),
        };
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // Decode the key columns of the candidate rows only.
        let mut rows: Vec<u32> = candidates.iter().map(|c| c.0).collect();
        rows.sort_unstable();
        rows.dedup();
        let ranges = rows.iter().map(|&r| r as usize..r as usize + 1).collect();
        let mut parts: Vec<RecordBatch> = Vec::new();
        for batch in crate::embedded::scan::read_group(file, group, &key_indices, Some(ranges))? {
            parts.push(batch?);
        }
        let schema = match parts.first() {
            Some(b) => b.schema(),
            None => return Err(Error::Internal("candidate rows could not be read".into())),
        };
        let keys = arrow::compute::concat_batches(&schema, &parts)?;
        // Candidate rows, renumbered to their place among the rows read.
        let renumbered: Vec<(u32, u32)> = candidates
            .iter()
            .map(|&(r, ours)| (rows.binary_search(&r).unwrap_or(0) as u32, ours))
            .collect();
        let confirmed = self.confirm(table, keys.columns(), &renumbered)?;
        Ok(confirmed
            .into_iter()
            .map(|(at, ours)| (rows[at as usize], ours))
            .collect())
    }
}

/// The keys of every row of `file` (key columns, tokens and hashes), in file order.
pub fn file_keys(table: &TableDef, file: &DataFileRef) -> Result<FileKeys> {
    let key_indices = table.primary_key_indices();
    let token_column = table.columns.len();
    let mut columns = key_indices.clone();
    columns.push(token_column);
    if let Some(key) = file.key_column {
        columns.push(key);
    }
    let mut batches = Vec::new();
    for group in 0..file.groups.len() {
        for batch in crate::embedded::scan::read_group(file, group, &columns, None)? {
            batches.push(batch?);
            yield_to_queries();
        }
    }
    let types: Vec<DataType> = key_types(table);
    let mut keys = Vec::with_capacity(types.len());
    for (k, key_type) in types.iter().enumerate() {
        let parts = batches
            .iter()
            .map(|b| cast_to(b.column(k), key_type))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&dyn Array> = parts.iter().map(|c| c.as_ref()).collect();
        keys.push(if refs.is_empty() {
            arrow::array::new_empty_array(key_type)
        } else {
            concat(&refs)?
        });
    }
    let n = key_indices.len();
    let mut tokens = Vec::new();
    let mut hashes = Vec::new();
    for batch in &batches {
        tokens.extend_from_slice(batch.column(n).as_primitive::<Int64Type>().values());
        match file.key_column {
            Some(_) => {
                hashes.extend_from_slice(batch.column(n + 1).as_primitive::<Int64Type>().values())
            }
            None => hashes.extend_from_slice(
                hash_keys(table, &batch.columns()[..n], batch.num_rows())?.values(),
            ),
        }
    }
    Ok(FileKeys {
        keys,
        tokens,
        hashes,
    })
}

/// What [`file_keys`] reads.
pub struct FileKeys {
    pub keys: Vec<ArrayRef>,
    pub tokens: Vec<i64>,
    pub hashes: Vec<i64>,
}

impl FileKeys {
    pub fn tagged(&self, tag: u64) -> Tagged<'_> {
        Tagged {
            keys: self.keys.clone(),
            tokens: &self.tokens,
            hashes: &self.hashes,
            tag,
        }
    }
}

/// The key columns' types as the table declares them (text as `Utf8`).
fn key_types(table: &TableDef) -> Vec<DataType> {
    let schema = table.arrow_schema();
    table
        .primary_key_indices()
        .into_iter()
        .map(|i| schema.field(i).data_type().clone())
        .collect()
}

fn cast_to(column: &ArrayRef, target: &DataType) -> Result<ArrayRef> {
    if column.data_type() == target {
        Ok(column.clone())
    } else {
        Ok(cast(column, target)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use quarry_core::cql_type::CqlType;
    use quarry_core::schema::ColumnDef;

    use super::*;

    #[test]
    fn galloping_finds_the_first_hash_not_below_from_any_start() {
        let hashes: Vec<i64> = vec![-9, -9, -4, 0, 3, 3, 3, 8, 21, 40];
        for from in 0..=hashes.len() {
            for hash in -12..45 {
                let expected = from + hashes[from..].partition_point(|&h| h < hash);
                assert_eq!(gallop(&hashes, from, hash), expected, "from {from}, {hash}");
            }
        }
        assert_eq!(gallop(&[], 0, 5), 0);
    }

    /// The filter never turns away a hash the group holds, and lets through few it does not.
    #[test]
    fn a_group_filter_holds_every_hash_and_few_others() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Spread over all 64 bits, as Murmur3 output is.
            state.wrapping_mul(0x9E37_79B9_7F4A_7C15) as i64
        };
        for rows in [0, 1, 3, 1_000, 100_000] {
            let held: Vec<i64> = (0..rows).map(|_| next()).collect();
            let group = GroupKeys::sorted(held.clone());
            assert!(held.iter().all(|&h| group.may_hold(h)), "{rows} rows");
            let passed = (0..100_000).filter(|_| group.may_hold(next())).count();
            // About one in two hundred at four hashes a word; far fewer when words are spare.
            assert!(
                passed < 1_000,
                "{passed} of 100,000 absent hashes passed {rows} rows' filter"
            );
        }
    }

    /// `ks.t (id bigint PRIMARY KEY, v double)`, for the store's unit tests.
    pub(crate) fn id_value_table() -> TableDef {
        TableDef::new(
            "ks",
            "t",
            vec![
                ColumnDef::new("id", CqlType::BigInt),
                ColumnDef::new("v", CqlType::Double),
            ],
            vec!["id".into()],
            vec![],
        )
        .unwrap()
    }

    /// The sorted search finds exactly the pairs the filter probe over rows in order finds,
    /// repeated hashes (on both sides) included.
    #[test]
    fn searching_sorted_hashes_finds_what_probing_every_row_finds() {
        let table = id_value_table();
        // A small xorshift: hashes drawn from a narrow range so that many repeat.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |range: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % range) as i64 - (range / 2) as i64
        };
        for (set_rows, group_rows, range) in [(5, 10_000, 50_000), (3_000, 2_000, 4_000)] {
            let set_hashes: Vec<i64> = (0..set_rows).map(|_| next(range)).collect();
            let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..set_rows as i64));
            let tokens: Vec<i64> = (0..set_rows as i64).collect();
            let set = KeySet::new(
                &table,
                &[Tagged {
                    keys: vec![ids],
                    tokens: &tokens,
                    hashes: &set_hashes,
                    tag: 1,
                }],
            )
            .unwrap();
            let in_row_order: Vec<i64> = (0..group_rows).map(|_| next(range)).collect();
            let mut probed = set.candidates(&in_row_order);
            let group = GroupKeys::sorted(in_row_order);
            let mut searched = set.candidates_in(&group, i64::MIN..=i64::MAX);
            probed.sort_unstable();
            searched.sort_unstable();
            assert!(!probed.is_empty());
            assert_eq!(
                searched, probed,
                "{set_rows} keys against {group_rows} rows"
            );
            // A group over part of the ring: every pair whose set row has a token in that part
            // (row `i` of the set has token `i` here); when the set is searched rather than
            // probed, only those.
            let part = set_rows as i64 / 3..=set_rows as i64 / 2;
            let mut in_part = set.candidates_in(&group, part.clone());
            in_part.sort_unstable();
            let expected: Vec<(u32, u32)> = probed
                .iter()
                .copied()
                .filter(|&(_, ours)| part.contains(&i64::from(ours)))
                .collect();
            assert!(!expected.is_empty());
            if set_rows <= group_rows {
                assert_eq!(in_part, expected, "{set_rows} keys, tokens {part:?}");
            } else {
                assert!(
                    expected.iter().all(|pair| in_part.contains(pair))
                        && in_part.iter().all(|pair| probed.contains(pair)),
                    "{set_rows} keys, tokens {part:?}"
                );
            }
        }
    }
}
