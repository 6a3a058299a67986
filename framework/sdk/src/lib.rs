//! Quarry jobs in Rust: typed, lazy datasets that run beside the data.
//!
//! A job is a function from a [`JobContext`] that reads store tables as typed [`Dataset`]s,
//! transforms them with plain closures (`map`, `filter`, `flat_map`, `key_by`,
//! `reduce_by_key`, `aggregate_by_key`, `group_by_key`, `join`, `left_join`, `distinct`,
//! `union`) and ends them in sinks (`write_to`, `collect`, `count`, `take`). [`job!`] makes the
//! crate a job module: built for `wasm32-unknown-unknown`, it is what `quarry submit` sends. The
//! driver asks the module for its DAG; every worker runs the same module over the batches of its
//! own shards, so closures are never serialized. The same function runs natively with
//! [`LocalJob`] in the job's own tests.
//!
//! ```text
//!   job fn ──JobContext──▶ Datasets ──sinks──▶ DAG (rkyv) ──▶ driver: stages, like SQL's
//!                                     operators ◀── workers: Arrow IPC batches in and out
//! ```
//!
//! This crate builds for wasm32 and the host alike and has no async runtime, DataFusion or
//! network client in it.
//!
//! ```
//! use quarry_sdk::prelude::*;
//!
//! #[derive(Record, Debug, Clone, PartialEq)]
//! struct Reading {
//!     device_id: i64,
//!     ts: Timestamp,
//!     sensor: String,
//!     value: f64,
//! }
//!
//! #[derive(Record, Debug, Clone, PartialEq)]
//! struct Peak {
//!     device_id: i64,
//!     max_value: f64,
//! }
//!
//! fn peaks(ctx: &JobContext) -> Result<()> {
//!     ctx.source::<Reading>("iot.readings")
//!         .where_sql("sensor = 'temp'")
//!         .key_by(|r| r.device_id)
//!         .map(|(device, r)| (device, r.value))
//!         .reduce_by_key(f64::max)
//!         .map(|(device_id, max_value)| Peak { device_id, max_value })
//!         .write_to("synth.peaks");
//!     Ok(())
//! }
//! quarry_sdk::job!(peaks);
//!
//! let reading = |device_id, value| Reading {
//!     device_id, ts: Timestamp(0), sensor: "temp".into(), value,
//! };
//! let output = LocalJob::new(peaks)
//!     .table("iot.readings", vec![reading(1, 20.0), reading(1, 25.0), reading(2, 5.0)])
//!     .prefiltered("iot.readings")
//!     .run()
//!     .unwrap();
//! let mut written = output.written::<Peak>("synth.peaks").unwrap();
//! written.sort_by_key(|p| p.device_id);
//! assert_eq!(written, vec![
//!     Peak { device_id: 1, max_value: 25.0 },
//!     Peak { device_id: 2, max_value: 5.0 },
//! ]);
//! ```

pub mod abi;
pub mod dag;
pub mod data;
pub mod dataset;
pub mod error;
pub mod ipc;
pub mod local;
mod merge;

pub use arrow_array;
pub use arrow_schema;
pub use data::{Blob, Data, Date, Decimal, Time, Timestamp};
pub use dataset::{Dataset, JobContext, JobFn};
pub use error::{JobError, Result};
pub use local::{LocalJob, LocalOutput};
pub use quarry_sdk_derive::Record;

/// What a job needs in scope.
pub mod prelude {
    pub use crate::{
        Blob, Data, Dataset, Date, JobContext, JobError, LocalJob, Record, Result, Timestamp,
    };
}

/// Makes this crate a job module running `job` (a `fn(&JobContext) -> Result<()>`): on wasm32
/// it exports the entry points the host calls (see [`abi`]); elsewhere it does nothing, and
/// tests run the job with [`LocalJob`].
#[macro_export]
macro_rules! job {
    ($job:path) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            const JOB: $crate::JobFn = $job;
            #[allow(unsafe_code, reason = "the host calls the module's exports by name")]
            #[unsafe(no_mangle)]
            extern "C" fn quarry_abi_version() -> u32 {
                $crate::dag::ABI_VERSION
            }
            #[allow(unsafe_code, reason = "the host calls the module's exports by name")]
            #[unsafe(no_mangle)]
            extern "C" fn quarry_alloc(len: u32) -> u32 {
                $crate::abi::raw::alloc(len)
            }
            #[allow(unsafe_code, reason = "the host calls the module's exports by name")]
            #[unsafe(no_mangle)]
            extern "C" fn quarry_free(ptr: u32, len: u32) {
                $crate::abi::raw::free(ptr, len)
            }
            #[allow(unsafe_code, reason = "the host calls the module's exports by name")]
            #[unsafe(no_mangle)]
            extern "C" fn quarry_panic_buffer() -> u64 {
                $crate::abi::raw::panic_buffer()
            }
            #[allow(unsafe_code, reason = "the host calls the module's exports by name")]
            #[unsafe(no_mangle)]
            extern "C" fn quarry_plan(ptr: u32, len: u32) -> u64 {
                $crate::abi::raw::plan(JOB, ptr, len)
            }
            #[allow(unsafe_code, reason = "the host calls the module's exports by name")]
            #[unsafe(no_mangle)]
            extern "C" fn quarry_start(op: u32, ptr: u32, len: u32) -> u64 {
                $crate::abi::raw::start(JOB, op, ptr, len)
            }
            #[allow(unsafe_code, reason = "the host calls the module's exports by name")]
            #[unsafe(no_mangle)]
            extern "C" fn quarry_push(ptr: u32, len: u32) -> u64 {
                $crate::abi::raw::push(ptr, len)
            }
            #[allow(unsafe_code, reason = "the host calls the module's exports by name")]
            #[unsafe(no_mangle)]
            extern "C" fn quarry_finish() -> u64 {
                $crate::abi::raw::finish()
            }
        };
    };
}
