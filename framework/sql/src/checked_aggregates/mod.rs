//! `sum` and `avg` that never return a wrapped value.
//!
//! DataFusion adds integer and decimal sums with wrapping arithmetic: a `sum` that overflows
//! returns a plausible wrong number, with no error. Quarry registers these replacements under
//! the same names in every session ([`QuarrySession`](crate::QuarrySession), and so in every
//! worker, which decodes plans with a session's functions and looks aggregates up by name),
//! so an aggregate whose result does not fit its type fails with an error that names the
//! expression and the cast that makes it fit.
//!
//! ```text
//!   [`checked_sum`]  sum(x): totals kept exact (in i128 / i256 when the input type cannot hold
//!                    them, see [`sum_input`]), checked against the result type, precision
//!                    included, when evaluated; GROUP BY in [`sum_groups`]
//!   [`checked_avg`]  avg(x) of decimals: count + checked sum in DataFusion's state layout,
//!                    divided as DataFusion does; GROUP BY in [`avg_groups`]
//!   [`overflow`]     the error messages
//! ```
//!
//! Everything that cannot wrap (floats, integer averages, which are `Float64`) is DataFusion's
//! own code, called through. What still wraps, because DataFusion adds it up and these do not
//! replace it: `sum` of intervals, and `avg` of durations.

pub mod checked_avg;
pub mod checked_sum;

mod avg_groups;
mod overflow;
mod sum_groups;
mod sum_input;

pub use checked_avg::{CheckedAvg, checked_avg_udaf};
pub use checked_sum::{CheckedSum, checked_sum_udaf};
