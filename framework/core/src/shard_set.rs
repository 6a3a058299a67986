//! Sets of shards, such as the shards one node holds under consistent-hash placement.
//!
//! A node's shards are scattered around the ring, so a task that reads them reads a
//! non-contiguous set. [`ShardSet`] keeps it as sorted, disjoint, non-adjacent inclusive ranges
//! (adjacent and overlapping ranges are merged), which stays small for the common cases (all
//! shards, one range, a few hundred scattered shards) and makes `contains` a binary search.
//!
//! Its text form lists the ranges in order, comma-separated, a single shard as one number:
//! `0-9,12,15-20`. The empty set is the empty string.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::ShardId;

/// A set of shard indices, stored as sorted, disjoint, non-adjacent inclusive ranges.
///
/// Serialized (serde) as its text form, `0-9,12,15-20`, and checked when deserialized.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ShardSet {
    /// Sorted by start; `end + 1 < next.start` for consecutive ranges; never empty ranges.
    ranges: Vec<RangeInclusive<u32>>,
}

impl ShardSet {
    /// The empty set.
    pub fn new() -> Self {
        ShardSet::default()
    }

    /// The set of the given shards, in any order, duplicates allowed.
    pub fn from_shards(shards: impl IntoIterator<Item = ShardId>) -> Self {
        let mut indices: Vec<u32> = shards.into_iter().map(|s| s.0).collect();
        indices.sort_unstable();
        indices.dedup();
        let mut ranges: Vec<RangeInclusive<u32>> = Vec::new();
        for i in indices {
            match ranges.last_mut() {
                Some(last) if last.end().checked_add(1) == Some(i) => *last = *last.start()..=i,
                _ => ranges.push(i..=i),
            }
        }
        ShardSet { ranges }
    }

    /// The union of the given ranges, in any order; overlapping and adjacent ranges are merged and
    /// empty ones (`5..=3`) ignored.
    pub fn from_ranges(ranges: impl IntoIterator<Item = RangeInclusive<u32>>) -> Self {
        let mut input: Vec<RangeInclusive<u32>> =
            ranges.into_iter().filter(|r| !r.is_empty()).collect();
        input.sort_unstable_by_key(|r| (*r.start(), *r.end()));
        let mut merged: Vec<RangeInclusive<u32>> = Vec::with_capacity(input.len());
        for r in input {
            match merged.last_mut() {
                // Overlapping or adjacent (no `end + 1` overflow: `r.start() <= u32::MAX`).
                Some(last) if *r.start() as u64 <= *last.end() as u64 + 1 => {
                    if r.end() > last.end() {
                        *last = *last.start()..=*r.end();
                    }
                }
                _ => merged.push(r),
            }
        }
        ShardSet { ranges: merged }
    }

    /// Every shard of a keyspace of `count` shards: `0..=count-1` (empty when `count` is 0).
    pub fn full(count: u32) -> Self {
        match count {
            0 => ShardSet::new(),
            n => ShardSet {
                ranges: vec![0..=n - 1],
            },
        }
    }

    /// The ranges, sorted, disjoint and non-adjacent.
    pub fn ranges(&self) -> &[RangeInclusive<u32>] {
        &self.ranges
    }

    /// The number of shards in the set (saturating at `u32::MAX`, which only the set of every
    /// `u32` exceeds).
    pub fn len(&self) -> u32 {
        let total: u64 = self
            .ranges
            .iter()
            .map(|r| *r.end() as u64 - *r.start() as u64 + 1)
            .sum();
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `shard` is in the set, by binary search over the ranges.
    pub fn contains(&self, shard: ShardId) -> bool {
        let after = self.ranges.partition_point(|r| *r.end() < shard.0);
        self.ranges.get(after).is_some_and(|r| r.contains(&shard.0))
    }

    /// The shards in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.ranges.iter().flat_map(|r| r.clone().map(ShardId))
    }
}

impl From<RangeInclusive<u32>> for ShardSet {
    fn from(range: RangeInclusive<u32>) -> Self {
        ShardSet::from_ranges([range])
    }
}

impl FromIterator<ShardId> for ShardSet {
    fn from_iter<I: IntoIterator<Item = ShardId>>(iter: I) -> Self {
        ShardSet::from_shards(iter)
    }
}

impl fmt::Display for ShardSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

impl FromStr for ShardSet {
    type Err = Error;

    /// Parses the text form, `0-9,12,15-20` (spaces around pieces allowed; pieces in any order,
    /// overlaps merged). The empty string is the empty set.
    fn from_str(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Ok(ShardSet::new());
        }
        let number = |piece: &str, part: &str| -> Result<u32> {
            part.trim().parse::<u32>().map_err(|_| {
                Error::syntax(format!(
                    "shard set '{text}': '{}' is not a shard number (0 to {}); write shard sets \
                     as comma-separated shards and ranges, such as 0-9,12,15-20",
                    piece.trim(),
                    u32::MAX
                ))
            })
        };
        let mut ranges = Vec::new();
        for piece in text.split(',') {
            let range = match piece.split_once('-') {
                Some((start, end)) => {
                    let (start, end) = (number(piece, start)?, number(piece, end)?);
                    if start > end {
                        return Err(Error::syntax(format!(
                            "shard set '{text}': range '{}' ends before it starts; write it as \
                             {end}-{start}",
                            piece.trim()
                        )));
                    }
                    start..=end
                }
                None => {
                    let shard = number(piece, piece)?;
                    shard..=shard
                }
            };
            ranges.push(range);
        }
        Ok(ShardSet::from_ranges(ranges))
    }
}

impl TryFrom<String> for ShardSet {
    type Error = Error;

    fn try_from(text: String) -> Result<Self> {
        text.parse()
    }
}

impl From<ShardSet> for String {
    fn from(set: ShardSet) -> String {
        set.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> ShardSet {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_merge_when_they_overlap_or_touch() {
        let s = ShardSet::from_ranges([
            15..=20,
            0..=4,
            5..=9,
            12..=12,
            17..=18,
            RangeInclusive::new(8, 3),
        ]);
        assert_eq!(s.ranges(), &[0..=9, 12..=12, 15..=20]);
        assert_eq!(s.len(), 17);
        let s = ShardSet::from_ranges([0..=10, 2..=3, 11..=11, u32::MAX..=u32::MAX]);
        assert_eq!(s.ranges(), &[0..=11, u32::MAX..=u32::MAX]);
        assert_eq!(
            ShardSet::from_ranges([u32::MAX - 1..=u32::MAX, 0..=u32::MAX - 2]).len(),
            u32::MAX
        );
        assert!(ShardSet::from_ranges([RangeInclusive::new(3, 2)]).is_empty());
    }

    #[test]
    fn shards_become_ranges() {
        let s = ShardSet::from_shards([9, 3, 4, 5, 3, 20, 21, 7].map(ShardId));
        assert_eq!(s.ranges(), &[3..=5, 7..=7, 9..=9, 20..=21]);
        assert_eq!(s.len(), 7);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [3, 4, 5, 7, 9, 20, 21].map(ShardId)
        );
        assert_eq!(s.iter().collect::<ShardSet>(), s);
        assert_eq!(
            ShardSet::from_shards([ShardId(u32::MAX), ShardId(u32::MAX - 1)]).ranges(),
            &[u32::MAX - 1..=u32::MAX]
        );
    }

    #[test]
    fn full_and_empty_sets() {
        assert_eq!(ShardSet::full(800).ranges(), &[0..=799]);
        assert_eq!(ShardSet::full(800).len(), 800);
        assert!(ShardSet::full(0).is_empty());
        assert_eq!(ShardSet::new(), ShardSet::default());
        assert_eq!(ShardSet::new().len(), 0);
        assert!(!ShardSet::new().contains(ShardId(0)));
        assert_eq!(ShardSet::from(4..=6), set("4-6"));
    }

    #[test]
    fn contains_checks_every_range() {
        let s = set("0-9,12,15-20");
        let inside: Vec<u32> = (0..30).filter(|&i| s.contains(ShardId(i))).collect();
        let expected: Vec<u32> = (0..=9).chain([12]).chain(15..=20).collect();
        assert_eq!(inside, expected);
        assert_eq!(s.iter().map(|s| s.0).collect::<Vec<_>>(), expected);
    }

    #[test]
    fn text_round_trips() {
        for text in ["", "0", "0-9,12,15-20", "3,5,7", "0-4294967295"] {
            assert_eq!(set(text).to_string(), text);
        }
        assert_eq!(set(" 15-20 , 0-9,12, 5-8 ").to_string(), "0-9,12,15-20");
        assert_eq!(set("1-1,2").to_string(), "1-2");
        let s = set("0-9,12,15-20");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"0-9,12,15-20\"");
        assert_eq!(serde_json::from_str::<ShardSet>(&json).unwrap(), s);
    }

    #[test]
    fn bad_text_names_the_piece() {
        let err = "0-9,x,15".parse::<ShardSet>().unwrap_err().to_string();
        assert!(err.contains("'x' is not a shard number"), "{err}");
        let err = "0-9,,15".parse::<ShardSet>().unwrap_err().to_string();
        assert!(err.contains("'' is not a shard number"), "{err}");
        let err = "1-2-3".parse::<ShardSet>().unwrap_err().to_string();
        assert!(err.contains("'1-2-3' is not a shard number"), "{err}");
        let err = "0,-4".parse::<ShardSet>().unwrap_err().to_string();
        assert!(err.contains("'-4'"), "{err}");
        let err = "9-3".parse::<ShardSet>().unwrap_err().to_string();
        assert!(err.contains("range '9-3' ends before it starts"), "{err}");
        let err = "4294967296".parse::<ShardSet>().unwrap_err().to_string();
        assert!(err.contains("'4294967296'"), "{err}");
        assert!(serde_json::from_str::<ShardSet>("\"7-x\"").is_err());
    }
}
