//! Cutting the token ring into S equal, contiguous shards.
//!
//! Shard `i` holds the tokens `t` with `floor((t - MIN) * S / 2^64) == i`, so finding a token's
//! shard is one multiplication, and shard `i`'s range is `(lower(i) - 1, lower(i + 1) - 1]` with
//! `lower(i) = MIN + ceil(i * 2^64 / S)`.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::ids::ShardId;
use crate::token::{Token, TokenRange};

/// The shards of a keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    shards: u32,
}

const RING: u128 = 1 << 64;

impl ShardMap {
    /// A map of `shards` shards (at least one).
    pub fn new(shards: u32) -> Self {
        ShardMap {
            shards: shards.max(1),
        }
    }

    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// The shard that owns `token`, in O(1).
    pub fn shard_of(&self, token: Token) -> ShardId {
        let offset = (token as i128 - i64::MIN as i128) as u128;
        ShardId(((offset * self.shards as u128) >> 64) as u32)
    }

    /// The smallest token of shard `i` (for `i == S`, one past the ring).
    fn lower(&self, i: u32) -> i128 {
        let s = self.shards as u128;
        i64::MIN as i128 + (i as u128 * RING).div_ceil(s) as i128
    }

    /// The token range `(start, end]` of a shard.
    pub fn range_of(&self, shard: ShardId) -> TokenRange {
        let start = self.lower(shard.0) - 1;
        let end = self.lower(shard.0 + 1) - 1;
        // Shard 0 starts below i64::MIN, which no token reaches; clamp to the ring.
        TokenRange::new(start.max(i64::MIN as i128) as i64, end as i64)
    }

    /// The shards that own at least one token of `range`, as an inclusive interval.
    pub fn shards_overlapping(&self, range: &TokenRange) -> Option<RangeInclusive<u32>> {
        let (first, last) = range.bounds_inclusive()?;
        Some(self.shard_of(first).0..=self.shard_of(last).0)
    }

    /// Every shard, in ring order.
    pub fn all(&self) -> impl Iterator<Item = ShardId> + use<> {
        (0..self.shards).map(ShardId)
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::SmallRng};

    use super::*;

    #[test]
    fn ranges_tile_the_ring_without_gaps() {
        for s in [1, 2, 3, 7, 800, 1000] {
            let map = ShardMap::new(s);
            assert_eq!(map.range_of(ShardId(0)).start, i64::MIN);
            assert_eq!(map.range_of(ShardId(s - 1)).end, i64::MAX);
            for i in 1..s {
                assert_eq!(
                    map.range_of(ShardId(i - 1)).end,
                    map.range_of(ShardId(i)).start
                );
            }
        }
    }

    #[test]
    fn shard_of_agrees_with_range_of() {
        let mut rng = SmallRng::seed_from_u64(7);
        for s in [1, 3, 800, 4096] {
            let map = ShardMap::new(s);
            for _ in 0..10_000 {
                let t: i64 = rng.random_range(i64::MIN + 1..=i64::MAX);
                let shard = map.shard_of(t);
                assert!(map.range_of(shard).contains(t), "{t} in {shard} of {s}");
            }
            for i in 0..s {
                let r = map.range_of(ShardId(i));
                assert_eq!(map.shard_of(r.end), ShardId(i));
                if r.start > i64::MIN {
                    assert_eq!(map.shard_of(r.start).0, i - 1);
                }
            }
        }
    }

    #[test]
    fn overlapping_shards_of_a_token_range() {
        let map = ShardMap::new(800);
        let r = map.range_of(ShardId(10));
        assert_eq!(map.shards_overlapping(&r), Some(10..=10));
        let wide = TokenRange::new(r.start, map.range_of(ShardId(12)).start + 1);
        assert_eq!(map.shards_overlapping(&wide), Some(10..=12));
        assert_eq!(map.shards_overlapping(&TokenRange::new(5, 5)), None);
        assert_eq!(map.shards_overlapping(&TokenRange::FULL), Some(0..=799));
    }
}
