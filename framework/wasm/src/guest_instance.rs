//! One instance of a job module in a store of its own, and the ABI's calls into it.
//!
//! Everything read from guest memory is bounds-checked here: a pointer or length the guest hands
//! back is data from untrusted code, and a bad one is the guest's fault ([`Error::BadResult`]),
//! never a host panic.

use std::time::Duration;

use arrow_buffer::Buffer;
use wasmtime::{InstancePre, Memory, Store, Trap, TypedFunc};

use crate::cpu_clock::thread_cpu_time;
use crate::error::{Error, Result};
use crate::guest_abi::{self, status};
use crate::memory_limiter::MemoryLimiter;
use crate::sandbox_limits::SandboxLimits;

/// What a store carries for the host.
#[derive(Debug)]
pub(crate) struct HostState {
    limiter: MemoryLimiter,
}

/// The exports the host calls after instantiation, looked up once.
struct Exports {
    abi_version: TypedFunc<(), u32>,
    alloc: TypedFunc<u32, u32>,
    free: TypedFunc<(u32, u32), ()>,
    plan: TypedFunc<(u32, u32), u64>,
    start: TypedFunc<(u32, u32, u32), u64>,
    push: TypedFunc<(u32, u32), u64>,
    finish: TypedFunc<(), u64>,
}

/// A fresh instance: its own `Store`, so its memory, statics and allocator are its own, and
/// dropping it frees everything. After any trap it refuses further calls
/// ([`Error::InstanceFailed`]): the guest's allocator or statics may be half-updated.
pub(crate) struct GuestInstance {
    store: Store<HostState>,
    memory: Memory,
    exports: Exports,
    /// `(ptr, capacity)` of the guest's panic message buffer, read right after instantiation
    /// so that after a trap the host never has to call into the guest again.
    panic_buffer: Option<(u32, u32)>,
    limits: SandboxLimits,
    failed: bool,
    /// CPU time spent in calls into this instance so far.
    cpu_time: Duration,
}

impl GuestInstance {
    /// Instantiates the module in a new store under `limits`. `op` names the work in errors.
    pub(crate) fn new(
        pre: &InstancePre<HostState>,
        limits: SandboxLimits,
        op: &str,
    ) -> Result<GuestInstance> {
        let state = HostState {
            limiter: MemoryLimiter::new(limits.memory_bytes),
        };
        let mut store = Store::new(pre.module().engine(), state);
        store.limiter(|state| &mut state.limiter);
        // A start function would run here: it gets the same deadline as any call.
        store.set_epoch_deadline(limits.epoch_ticks());
        let instance = match pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(error) => {
                let refused = store.data().limiter.refused();
                return Err(trap_error(op, error, &limits, refused, None));
            }
        };

        let missing = |name: &str| {
            Error::internal(format!(
                "export `{name}` vanished after the module was checked"
            ))
        };
        let memory = instance
            .get_memory(&mut store, guest_abi::MEMORY)
            .ok_or_else(|| missing(guest_abi::MEMORY))?;
        macro_rules! func {
            ($name:expr) => {
                instance
                    .get_typed_func(&mut store, $name)
                    .map_err(|_| missing($name))?
            };
        }
        let exports = Exports {
            abi_version: func!(guest_abi::ABI_VERSION),
            alloc: func!(guest_abi::ALLOC),
            free: func!(guest_abi::FREE),
            plan: func!(guest_abi::PLAN),
            start: func!(guest_abi::START),
            push: func!(guest_abi::PUSH),
            finish: func!(guest_abi::FINISH),
        };
        let panic_buffer: TypedFunc<(), u64> = func!(guest_abi::PANIC_BUFFER);

        let mut guest = GuestInstance {
            store,
            memory,
            exports,
            panic_buffer: None,
            limits,
            failed: false,
            cpu_time: Duration::ZERO,
        };
        let packed = guest.enter(op, |store| panic_buffer.call(store, ()))?;
        guest.panic_buffer = guest.check_panic_buffer(packed)?;
        Ok(guest)
    }

    /// `quarry_abi_version()`.
    pub(crate) fn abi_version(&mut self) -> Result<u32> {
        let func = self.exports.abi_version.clone();
        self.enter(guest_abi::ABI_VERSION, |store| func.call(store, ()))
    }

    /// `quarry_plan(args)`: the ok payload (the archived `JobDag`).
    pub(crate) fn plan(&mut self, op: &str, args: &[u8]) -> Result<Buffer> {
        let (ptr, len) = self.hand_over(op, args)?;
        let func = self.exports.plan.clone();
        let packed = self.enter(op, |store| func.call(store, (ptr, len)))?;
        self.take_result(op, packed)
    }

    /// `quarry_start(index, args)`: prepares operator `index` in this instance.
    pub(crate) fn start(&mut self, op: &str, index: u32, args: &[u8]) -> Result<()> {
        let (ptr, len) = self.hand_over(op, args)?;
        let func = self.exports.start.clone();
        let packed = self.enter(op, |store| func.call(store, (index, ptr, len)))?;
        self.take_result(op, packed).map(drop)
    }

    /// `quarry_push(input)`: the ok payload (Arrow IPC stream bytes, or none).
    pub(crate) fn push(&mut self, op: &str, input: &[u8]) -> Result<Buffer> {
        let (ptr, len) = self.hand_over(op, input)?;
        let func = self.exports.push.clone();
        let packed = self.enter(op, |store| func.call(store, (ptr, len)))?;
        self.take_result(op, packed)
    }

    /// `quarry_finish()`: the ok payload, as for [`GuestInstance::push`].
    pub(crate) fn finish(&mut self, op: &str) -> Result<Buffer> {
        let func = self.exports.finish.clone();
        let packed = self.enter(op, |store| func.call(store, ()))?;
        self.take_result(op, packed)
    }

    /// Makes the instance refuse further calls: for ABI breaches the host finds only after the
    /// call (output that does not decode).
    pub(crate) fn mark_failed(&mut self) {
        self.failed = true;
    }

    /// CPU time the calls into this instance have used so far, the failed ones included.
    pub(crate) fn cpu_time(&self) -> Duration {
        self.cpu_time
    }

    /// Runs one call into the guest under a fresh deadline, adding the CPU time it takes to the
    /// instance's, and turning a trap into the error it stands for.
    fn enter<R>(
        &mut self,
        op: &str,
        call: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        if self.failed {
            return Err(Error::InstanceFailed { op: op.to_owned() });
        }
        self.store.set_epoch_deadline(self.limits.epoch_ticks());
        self.store.data_mut().limiter.reset();
        let before = thread_cpu_time();
        let outcome = call(&mut self.store);
        self.cpu_time += thread_cpu_time().saturating_sub(before);
        outcome.map_err(|error| {
            self.failed = true;
            let refused = self.store.data().limiter.refused();
            trap_error(op, error, &self.limits, refused, self.panic_message())
        })
    }

    /// Copies `input` into a buffer from `quarry_alloc`; the guest owns it from then on.
    fn hand_over(&mut self, op: &str, input: &[u8]) -> Result<(u32, u32)> {
        let len = u32::try_from(input.len()).map_err(|_| {
            Error::internal(format!(
                "cannot pass {} bytes to {op}: a wasm32 module addresses at most 4 GiB",
                input.len()
            ))
        })?;
        let alloc = self.exports.alloc.clone();
        let ptr = self.enter(op, |store| alloc.call(store, len))?;
        if ptr == 0 && len > 0 {
            self.failed = true;
            if self.store.data().limiter.refused() {
                return Err(Error::MemoryLimit {
                    op: op.to_owned(),
                    limit_bytes: self.limits.memory_bytes,
                });
            }
            return Err(Error::bad_result(
                op,
                format!(
                    "`{}({len})` returned 0 (allocation failed)",
                    guest_abi::ALLOC
                ),
            ));
        }
        if self
            .memory
            .write(&mut self.store, ptr as usize, input)
            .is_err()
        {
            self.failed = true;
            let size = self.memory.data_size(&self.store);
            return Err(Error::bad_result(
                op,
                format!(
                    "`{}({len})` returned {ptr:#x}, which with {len} bytes lies outside its \
                     {size} bytes of memory",
                    guest_abi::ALLOC
                ),
            ));
        }
        Ok((ptr, len))
    }

    /// Copies a result buffer out of guest memory, frees it, and reads its status byte. The
    /// payload lands in an aligned `Buffer`, so Arrow can use it without copying again.
    fn take_result(&mut self, op: &str, packed: u64) -> Result<Buffer> {
        let (ptr, len) = unpack(packed);
        let data = self.memory.data(&self.store);
        let size = data.len();
        let buffer = (ptr as usize)
            .checked_add(len as usize)
            .and_then(|end| data.get(ptr as usize..end));
        let Some(buffer) = buffer else {
            self.failed = true;
            return Err(Error::bad_result(
                op,
                format!(
                    "its result buffer ({len} bytes at {ptr:#x}) lies outside its {size} bytes \
                     of memory"
                ),
            ));
        };
        let outcome = match buffer.split_first() {
            None => Err(Error::bad_result(
                op,
                "its result buffer is empty: it has no status byte",
            )),
            Some((&status::OK, payload)) => Ok(Buffer::from_slice_ref(payload)),
            Some((&status::JOB_ERROR, message)) => Err(Error::JobError {
                op: op.to_owned(),
                message: String::from_utf8_lossy(message).into_owned(),
            }),
            Some((&other, _)) => Err(Error::bad_result(
                op,
                format!(
                    "its result starts with status {other}; the ABI knows {} (ok) and {} (job \
                     error)",
                    status::OK,
                    status::JOB_ERROR
                ),
            )),
        };
        if let Err(Error::BadResult { .. }) = outcome {
            self.failed = true;
            return outcome;
        }
        let free = self.exports.free.clone();
        self.enter(op, |store| free.call(store, (ptr, len)))?;
        outcome
    }

    /// Checks the panic buffer's address once, so reading it after a trap needs no checks
    /// beyond the bounds.
    fn check_panic_buffer(&mut self, packed: u64) -> Result<Option<(u32, u32)>> {
        let (ptr, capacity) = unpack(packed);
        if capacity == 0 {
            return Ok(None);
        }
        let size = self.memory.data_size(&self.store) as u64;
        if capacity < 4 || u64::from(ptr) + u64::from(capacity) > size {
            self.failed = true;
            return Err(Error::invalid_module(format!(
                "`{}` says its panic buffer is {capacity} bytes at {ptr:#x}, which is not a \
                 4-byte length and a message inside its {size} bytes of memory",
                guest_abi::PANIC_BUFFER
            )));
        }
        Ok(Some((ptr, capacity)))
    }

    /// The message the guest's panic hook left: `[u32 LE length][UTF-8]`, read straight from
    /// memory without calling into the (trapped) guest.
    fn panic_message(&self) -> Option<String> {
        let (ptr, capacity) = self.panic_buffer?;
        let data = self.memory.data(&self.store);
        let start = ptr as usize;
        let header = data.get(start..start.checked_add(4)?)?;
        let len = u32::from_le_bytes(header.try_into().ok()?).min(capacity - 4);
        let text = data.get(start + 4..(start + 4).checked_add(len as usize)?)?;
        let message = String::from_utf8_lossy(text).trim().to_owned();
        (!message.is_empty()).then_some(message)
    }
}

/// `(ptr << 32) | len`, as the guest packs buffers.
fn unpack(packed: u64) -> (u32, u32) {
    ((packed >> 32) as u32, packed as u32)
}

/// What a failed call into the guest means, in order of certainty: the deadline (wasmtime says
/// so), the memory limit (the limiter refused growth during the call, and an out-of-memory abort
/// leaves no message), the panic message, and last the trap's own text.
fn trap_error(
    op: &str,
    error: wasmtime::Error,
    limits: &SandboxLimits,
    memory_refused: bool,
    panic_message: Option<String>,
) -> Error {
    let op = op.to_owned();
    let trap = error.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) {
        return Error::Timeout {
            op,
            limit: limits.deadline,
        };
    }
    if memory_refused {
        return Error::MemoryLimit {
            op,
            limit_bytes: limits.memory_bytes,
        };
    }
    if let Some(message) = panic_message {
        return Error::UserCode { op, message };
    }
    let message = match trap {
        Some(Trap::StackOverflow) => format!(
            "{} (recursion deeper than the {} KiB wasm stack allows)",
            Trap::StackOverflow,
            limits.max_wasm_stack / 1024
        ),
        Some(Trap::UnreachableCodeReached) => format!(
            "{} (the module aborted without leaving a panic message)",
            Trap::UnreachableCodeReached
        ),
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    Error::UserCode { op, message }
}
