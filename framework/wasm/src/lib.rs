//! The sandbox that runs users' job modules: wasm32 core modules built with `quarry-sdk`, run by
//! wasmtime with a deadline per call, a memory cap, and CPU time metering.
//!
//! ```text
//!   wasm bytes ──▶ Runtime::load ──▶ Arc<JobModule> ──plan(args)──────────▶ JobDag   (driver)
//!                  │ sha256 memo, disk cache  │
//!                  │ checks: magic, compile,  └──start(op, name, args)──▶ OpInstance (a task)
//!                  │ imports, exports, ABI                                 push(batch) ─▶ batches
//!                                                                          finish()    ─▶ batches
//! ```
//!
//! A process has one [`Runtime`]: one wasmtime `Engine` and a thread ticking its epoch every
//! 10 ms. [`Runtime::load`] checks a module once and memoizes it by [`ModuleHash`]; with a cache
//! directory the compiled code also survives restarts. Every [`JobModule::plan`] and
//! [`JobModule::start`] instantiates into a fresh `Store`, so a task's memory and statics are
//! its own and are freed with it.
//!
//! Calls into the guest follow the ABI in `guest_abi` ([`quarry_sdk::dag::ABI_VERSION`]): the
//! host copies input (rkyv `JobArgs`, Arrow IPC batches) into a buffer from `quarry_alloc`, calls
//! the entry point, and copies out the result buffer it returns (a status byte, then the payload
//! or a message) before freeing it. Each call runs under [`SandboxLimits`]:
//!
//! - a **deadline** per call, by epoch interruption → [`Error::Timeout`];
//! - a **memory** cap on linear memory, by a resource limiter that remembers refusing growth,
//!   because an out-of-memory abort leaves no message → [`Error::MemoryLimit`];
//! - a **panic** traps after the guest's hook wrote the message into a buffer whose address the
//!   host read right after instantiation → [`Error::UserCode`] with that message;
//! - **CPU time** is metered, not limited: [`OpInstance::cpu_time`], the thread's CPU time
//!   across each call, is the job's CPU cost.
//!
//! Calls are synchronous and CPU-bound: run them on a CPU pool, not on an async runtime.

mod cpu_clock;
mod disk_cache;
mod epoch_ticker;
mod error;
mod guest_abi;
mod guest_instance;
mod job_module;
mod memory_limiter;
mod module_hash;
mod op_instance;
mod runtime;
mod sandbox_limits;

pub use error::{Error, Result};

/// The largest module a host accepts (a release build of a job with Arrow is about 2 MiB).
pub const MAX_MODULE_BYTES: usize = 64 << 20;
pub use job_module::JobModule;
pub use module_hash::ModuleHash;
pub use op_instance::OpInstance;
pub use runtime::{PROFILER_ENV, Runtime, RuntimeConfig};
pub use sandbox_limits::SandboxLimits;
