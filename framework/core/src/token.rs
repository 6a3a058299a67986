//! Murmur3 tokens and CQL token ranges.
//!
//! The hash itself is the `scylla` driver's public [`Murmur3Partitioner`], the same code the driver
//! uses for token-aware routing, so an embedded keyspace and a ScyllaDB keyspace agree on every
//! row's token. What is hashed is the partition key in CQL's serialized form; see
//! [`crate::partition_key`].

use std::fmt;

use scylla::routing::partitioner::{Murmur3Partitioner, Partitioner};
use serde::{Deserialize, Serialize};

/// A signed 64-bit Murmur3 token. `i64::MIN` never occurs: like Cassandra, the partitioner maps it
/// to `i64::MAX`.
pub type Token = i64;

/// The smallest token a key can hash to.
pub const MIN_TOKEN: Token = i64::MIN + 1;

/// The token of an already serialized partition key.
pub fn token_of(serialized_key: &[u8]) -> Token {
    Murmur3Partitioner.hash_one(serialized_key).value()
}

/// A token range `(start, end]`, as in CQL's `token(pk) > start AND token(pk) <= end`.
///
/// `start == i64::MIN` means "from the bottom of the ring". Ranges never wrap here: a wrapping CQL
/// range is two of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenRange {
    /// Exclusive lower bound.
    pub start: Token,
    /// Inclusive upper bound.
    pub end: Token,
}

impl TokenRange {
    /// The whole ring.
    pub const FULL: TokenRange = TokenRange {
        start: i64::MIN,
        end: i64::MAX,
    };

    pub fn new(start: Token, end: Token) -> Self {
        TokenRange { start, end }
    }

    /// True when no token lies in the range.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// Tokens in the range (0 when empty).
    pub fn width(&self) -> u128 {
        if self.is_empty() {
            0
        } else {
            (i128::from(self.end) - i128::from(self.start)) as u128
        }
    }

    pub fn contains(&self, token: Token) -> bool {
        token > self.start && token <= self.end
    }

    /// The tokens in both ranges.
    pub fn intersect(&self, other: &TokenRange) -> TokenRange {
        TokenRange {
            start: self.start.max(other.start),
            end: self.end.min(other.end),
        }
    }

    /// The smallest and largest tokens of a non-empty range.
    pub fn bounds_inclusive(&self) -> Option<(Token, Token)> {
        (!self.is_empty()).then(|| (self.start + 1, self.end))
    }
}

impl fmt::Display for TokenRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {}]", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_start_exclusive_end_inclusive() {
        let r = TokenRange::new(10, 20);
        assert!(!r.contains(10));
        assert!(r.contains(11));
        assert!(r.contains(20));
        assert!(!r.contains(21));
        assert_eq!(r.bounds_inclusive(), Some((11, 20)));
        assert!(TokenRange::new(5, 5).is_empty());
        assert_eq!(
            r.intersect(&TokenRange::new(15, 30)),
            TokenRange::new(15, 20)
        );
    }

    #[test]
    fn the_minimum_token_is_normalised_like_cassandra() {
        // Whatever the input, the partitioner never yields i64::MIN.
        for key in [&b""[..], b"a", b"quarry"] {
            assert_ne!(token_of(key), i64::MIN);
        }
    }
}
