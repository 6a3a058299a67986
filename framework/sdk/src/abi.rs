//! The module's side of the host contract ([`ABI_VERSION`](crate::dag::ABI_VERSION)).
//!
//! [`job!`](crate::job) exports these as `quarry_*` functions. Arguments and results are scalars
//! only; a buffer travels as `(ptr << 32) | len`. Every result buffer starts with a status byte
//! ([`STATUS_OK`] or [`STATUS_ERROR`], then a UTF-8 message) and is freed by the host with
//! `quarry_free`. Input buffers the host allocated with `quarry_alloc` pass to the module.
//!
//! ```text
//!   host                                   module
//!   quarry_plan(args)            ──▶  run the job function ──▶ [0][JobDag (rkyv)]
//!   quarry_start(op, args)       ──▶  run it again, keep op's fresh state
//!   quarry_push(IPC batch) × n   ──▶  [0][IPC stream: 0..n batches]
//!   quarry_finish()              ──▶  [0][IPC stream: the keyed state's rows]
//! ```
//!
//! A panic writes `closure at file:line:col panicked at ...: message` to a static buffer (whose
//! address `quarry_panic_buffer` gives) and traps; the host reads the message from memory.

use std::cell::RefCell;
use std::sync::Once;
use std::sync::atomic::{AtomicU8, Ordering};

use arrow_array::RecordBatch;
use arrow_ipc::writer::StreamWriter;

use crate::dag::JobArgs;
use crate::dataset::{JobContext, JobFn, OpState, current_closure};
use crate::error::JobError;
use crate::ipc;

pub const STATUS_OK: u8 = 0;
pub const STATUS_ERROR: u8 = 1;

const PANIC_CAPACITY: usize = 4096;

/// `[u32 LE length][message]` of the last panic.
static PANIC_BUFFER: [AtomicU8; PANIC_CAPACITY] = [const { AtomicU8::new(0) }; PANIC_CAPACITY];

thread_local! {
    /// The operator this instance runs (one per task).
    static RUNNING: RefCell<Option<Box<dyn OpState>>> = RefCell::new(None);
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload_as_str()
                .unwrap_or("(a panic without a message)");
            let at = info
                .location()
                .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            record_panic(&format!("{} panicked{at}: {message}", current_closure()));
        }));
    });
}

fn record_panic(message: &str) {
    let bytes = message.as_bytes();
    let len = bytes.len().min(PANIC_CAPACITY - 4);
    for (slot, byte) in PANIC_BUFFER[4..].iter().zip(&bytes[..len]) {
        slot.store(*byte, Ordering::Relaxed);
    }
    for (slot, byte) in PANIC_BUFFER.iter().zip((len as u32).to_le_bytes()) {
        slot.store(byte, Ordering::Relaxed);
    }
}

/// Where panic messages go: `(address, capacity)`.
pub fn panic_buffer() -> (usize, usize) {
    (PANIC_BUFFER.as_ptr() as usize, PANIC_CAPACITY)
}

fn error(e: &JobError) -> Vec<u8> {
    let message = e.to_string();
    let mut out = Vec::with_capacity(1 + message.len());
    out.push(STATUS_ERROR);
    out.extend_from_slice(message.as_bytes());
    out
}

fn ok(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + payload.len());
    out.push(STATUS_OK);
    out.extend_from_slice(payload);
    out
}

fn args(bytes: &[u8]) -> Result<JobArgs, JobError> {
    JobArgs::from_bytes(bytes).map_err(|e| JobError::Plan {
        message: format!("the host sent arguments this SDK cannot read: {e}"),
    })
}

/// `quarry_plan`: the job's DAG.
pub fn plan(job: JobFn, args_bytes: &[u8]) -> Vec<u8> {
    install_panic_hook();
    match args(args_bytes).and_then(|a| JobContext::build(job, a)) {
        Ok(built) => ok(&built.dag.to_bytes()),
        Err(e) => error(&e),
    }
}

/// `quarry_start`: prepares operator `op` for this instance's task.
pub fn start(job: JobFn, op: u32, args_bytes: &[u8]) -> Vec<u8> {
    install_panic_hook();
    let built = match args(args_bytes).and_then(|a| JobContext::build(job, a)) {
        Ok(built) => built,
        Err(e) => return error(&e),
    };
    let Some(factory) = built.factories.get(op as usize) else {
        return error(&JobError::Plan {
            message: format!(
                "the job has {} operators, none numbered {op}: was the module rebuilt with other \
                 arguments or code?",
                built.factories.len()
            ),
        });
    };
    let state = factory();
    RUNNING.with(|r| *r.borrow_mut() = Some(state));
    ok(&[])
}

/// `quarry_push`: one IPC batch in, its output out.
pub fn push(input: Vec<u8>) -> Vec<u8> {
    let result = ipc::decode_owned(input)
        .map_err(JobError::from)
        .and_then(|batches| {
            with_running(|state| {
                let mut out = Vec::new();
                for batch in &batches {
                    out.extend(state.push(batch)?);
                }
                Ok(out)
            })
        });
    respond(result)
}

/// `quarry_finish`: the end of the input.
pub fn finish() -> Vec<u8> {
    respond(with_running(|state| state.finish()))
}

fn with_running(
    f: impl FnOnce(&mut dyn OpState) -> Result<Vec<RecordBatch>, JobError>,
) -> Result<Vec<RecordBatch>, JobError> {
    RUNNING.with(|r| match r.borrow_mut().as_mut() {
        Some(state) => f(state.as_mut()),
        None => Err(JobError::Plan {
            message: "no operator was started in this instance".into(),
        }),
    })
}

/// The status byte, then an IPC stream of the batches (nothing for none).
fn respond(result: Result<Vec<RecordBatch>, JobError>) -> Vec<u8> {
    let batches = match result {
        Ok(batches) => batches,
        Err(e) => return error(&e),
    };
    let Some(first) = batches.first() else {
        return vec![STATUS_OK];
    };
    let written = StreamWriter::try_new(vec![STATUS_OK], first.schema_ref()).and_then(|mut w| {
        for batch in &batches {
            w.write(batch)?;
        }
        w.into_inner()
    });
    match written {
        Ok(bytes) => bytes,
        Err(e) => error(&e.into()),
    }
}

/// The raw exports' bodies: buffers as `(ptr, len)` in the module's memory.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[allow(
    unsafe_code,
    reason = "the host hands buffers over as addresses in linear memory"
)]
pub mod raw {
    use super::*;

    pub fn alloc(len: u32) -> u32 {
        let mut buffer = Vec::<u8>::with_capacity(len as usize);
        let ptr = buffer.as_mut_ptr();
        std::mem::forget(buffer);
        ptr as u32
    }

    pub fn free(ptr: u32, len: u32) {
        // SAFETY: the host frees only buffers this module allocated (`alloc`) or returned
        // (`give`), with their length; both have capacity `len` and alignment 1.
        drop(unsafe { Vec::from_raw_parts(ptr as *mut u8, 0, len as usize) });
    }

    /// Takes over a buffer the host filled after `alloc(len)`.
    fn take(ptr: u32, len: u32) -> Vec<u8> {
        // SAFETY: `ptr` came from `alloc(len)` and the host wrote `len` bytes into it.
        unsafe { Vec::from_raw_parts(ptr as *mut u8, len as usize, len as usize) }
    }

    fn give(bytes: Vec<u8>) -> u64 {
        let bytes = bytes.into_boxed_slice();
        let len = bytes.len() as u64;
        let ptr = Box::into_raw(bytes) as *mut u8 as u32 as u64;
        (ptr << 32) | len
    }

    pub fn panic_buffer() -> u64 {
        let (ptr, capacity) = super::panic_buffer();
        ((ptr as u64) << 32) | capacity as u64
    }

    pub fn plan(job: JobFn, ptr: u32, len: u32) -> u64 {
        give(super::plan(job, &take(ptr, len)))
    }

    pub fn start(job: JobFn, op: u32, ptr: u32, len: u32) -> u64 {
        give(super::start(job, op, &take(ptr, len)))
    }

    pub fn push(ptr: u32, len: u32) -> u64 {
        give(super::push(take(ptr, len)))
    }

    pub fn finish() -> u64 {
        give(super::finish())
    }
}
