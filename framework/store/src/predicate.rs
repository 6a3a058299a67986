//! Filters a store can use to skip data.
//!
//! Predicates are hints for pruning: a store may skip shards, files or row groups that cannot hold
//! a matching row, but it may also return rows that do not match. Whoever asked (the SQL layer)
//! applies the filter again. Literals are one-element Arrow arrays so that every column type works
//! without a value enum of our own.

use std::fmt;

use arrow::array::ArrayRef;
use quarry_core::token::TokenRange;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    /// The operator with its operands swapped (`5 < x` is `x > 5`).
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::Eq,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "=",
            CmpOp::Lt => "<",
            CmpOp::LtEq => "<=",
            CmpOp::Gt => ">",
            CmpOp::GtEq => ">=",
        })
    }
}

/// One pushed-down filter.
#[derive(Debug, Clone)]
pub enum Predicate {
    /// `column <op> literal`; the literal is a one-element array of any type castable to the
    /// column's type.
    Compare {
        column: String,
        op: CmpOp,
        value: ArrayRef,
    },
    /// `column IN (literals)`; the literals are one array.
    InList { column: String, values: ArrayRef },
    /// `token(partition key) in (start, end]`.
    TokenRange(TokenRange),
}

impl Predicate {
    /// `token(pk) <op> value` as a token range, the form CQL's `token()` comparisons take.
    pub fn token_compare(op: CmpOp, value: i64) -> Predicate {
        let range = match op {
            CmpOp::Eq => TokenRange::new(value.saturating_sub(1), value),
            CmpOp::Lt => TokenRange::new(i64::MIN, value.saturating_sub(1)),
            CmpOp::LtEq => TokenRange::new(i64::MIN, value),
            CmpOp::Gt => TokenRange::new(value, i64::MAX),
            CmpOp::GtEq => TokenRange::new(value.saturating_sub(1), i64::MAX),
        };
        Predicate::TokenRange(range)
    }
}
