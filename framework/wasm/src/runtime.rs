//! The per-process WASM runtime: one engine, and the job modules loaded into it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use quarry_sdk::dag::ABI_VERSION;
use wasmtime::{Config, Engine, Linker, Module, ProfilingStrategy, WasmFeatures};

use crate::disk_cache::DiskCache;
use crate::epoch_ticker;
use crate::error::{Error, Result};
use crate::guest_abi;
use crate::guest_instance::HostState;
use crate::job_module::JobModule;
use crate::module_hash::ModuleHash;
use crate::sandbox_limits::SandboxLimits;

/// `QUARRY_WASM_PROFILER=perfmap` makes the runtime name the job modules' compiled functions
/// for Linux `perf` (a `/tmp/perf-PID.map` file), so `perf record` of a worker shows which
/// closures and SDK functions a job spends its time in.
pub const PROFILER_ENV: &str = "QUARRY_WASM_PROFILER";

/// How a process's [`Runtime`] is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Limits of every instance. Default: [`SandboxLimits::default`].
    pub limits: SandboxLimits,
    /// Where compiled modules are kept across restarts; `None` (the default) compiles every
    /// module once per process. The directory must be writable only by this process's user:
    /// the files in it are machine code that the runtime maps and runs as it finds it.
    pub cache_dir: Option<PathBuf>,
}

/// The sandbox for job modules: one per process, shared in an `Arc` (it is `Send + Sync`).
///
/// It owns the one wasmtime `Engine` (epoch interruption on; fuel metering, threads, memory64
/// and multi-memory off), an empty `Linker` (job modules import nothing), the thread
/// that ticks the epoch, and the modules loaded so far, memoized by content hash.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: SandboxLimits,
    disk_cache: Option<DiskCache>,
    modules: Mutex<HashMap<ModuleHash, Arc<JobModule>>>,
    /// One lock per module being loaded, so that concurrent loads of one module compile it once.
    loading: Mutex<HashMap<ModuleHash, Arc<Mutex<()>>>>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        let limits = config.limits;
        let mut wasm = Config::new();
        // No fuel: instances' CPU cost is their calls' CPU time (see `cpu_clock`), and the
        // deadline bounds a call.
        wasm.epoch_interruption(true)
            .max_wasm_stack(limits.max_wasm_stack)
            .wasm_features(
                WasmFeatures::THREADS | WasmFeatures::SHARED_EVERYTHING_THREADS,
                false,
            )
            .wasm_memory64(false)
            .wasm_multi_memory(false);
        if std::env::var_os(PROFILER_ENV).is_some_and(|v| v == "perfmap") {
            // Names the modules' compiled functions in /tmp/perf-PID.map, for `perf report`.
            wasm.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm)
            .map_err(|e| Error::internal(format!("configuring wasmtime: {e:#}")))?;
        epoch_ticker::start(&engine)
            .map_err(|e| Error::internal(format!("starting the epoch thread: {e}")))?;
        Ok(Runtime {
            linker: Linker::new(&engine),
            disk_cache: config.cache_dir.map(|dir| DiskCache::new(&dir, &engine)),
            engine,
            limits,
            modules: Mutex::default(),
            loading: Mutex::default(),
        })
    }

    /// The limits every instance runs under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// Checks and compiles a job module, or returns the one already loaded with these bytes.
    ///
    /// Refuses, as [`Error::InvalidModule`], bytes that are not a core wasm module, that do not
    /// compile, that import anything, or that lack an ABI export of the exact type; and as
    /// [`Error::AbiMismatch`] a module built for another ABI version (asked of a throwaway
    /// instance, under the sandbox limits). Compiling takes a while for a large module: call
    /// this on a blocking thread. With a cache directory, a module compiled by an earlier
    /// process is loaded from disk instead.
    pub fn load(&self, wasm: &[u8]) -> Result<Arc<JobModule>> {
        if wasm.len() > crate::MAX_MODULE_BYTES {
            return Err(Error::InvalidModule {
                problem: format!(
                    "it is {} bytes, more than the {} a job module may have; build it in release \
                     with strip = true and lto = true (quarry submit does)",
                    wasm.len(),
                    crate::MAX_MODULE_BYTES
                ),
            });
        }
        check_magic(wasm)?;
        let hash = ModuleHash::of(wasm);
        if let Some(module) = self.module(&hash) {
            return Ok(module);
        }
        let gate = Arc::clone(lock(&self.loading).entry(hash).or_default());
        let loaded = {
            // Whoever waited on the gate finds the module memoized, since it is inserted
            // before the gate opens.
            let _compiling = lock(&gate);
            match self.module(&hash) {
                Some(module) => Ok(module),
                None => self
                    .compile(hash, wasm)
                    .map(|module| Arc::clone(lock(&self.modules).entry(hash).or_insert(module))),
            }
        };
        let mut loading = lock(&self.loading);
        if loading
            .get(&hash)
            .is_some_and(|other| Arc::ptr_eq(other, &gate))
        {
            loading.remove(&hash);
        }
        loaded
    }

    /// The module loaded earlier with this hash, if any.
    pub fn module(&self, hash: &ModuleHash) -> Option<Arc<JobModule>> {
        lock(&self.modules).get(hash).cloned()
    }

    fn compile(&self, hash: ModuleHash, wasm: &[u8]) -> Result<Arc<JobModule>> {
        let started = Instant::now();
        let cached = self
            .disk_cache
            .as_ref()
            .and_then(|cache| cache.load(&self.engine, hash));
        let from_disk_cache = cached.is_some();
        let module = match cached {
            Some(module) => module,
            None => Module::from_binary(&self.engine, wasm)
                .map_err(|e| Error::invalid_module(format!("it does not compile: {e:#}")))?,
        };
        guest_abi::check_imports(&module)?;
        guest_abi::check_exports(&module)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| Error::invalid_module(format!("it cannot be instantiated: {e:#}")))?;
        let job = JobModule::new(hash, pre, self.limits, from_disk_cache);
        let version = job.abi_version()?;
        if version != ABI_VERSION {
            return Err(Error::AbiMismatch {
                module: version,
                host: ABI_VERSION,
            });
        }
        if let (Some(cache), false) = (&self.disk_cache, from_disk_cache) {
            cache.store(hash, &module);
        }
        tracing::info!(
            %hash,
            bytes = wasm.len(),
            from_disk_cache,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded job module"
        );
        Ok(Arc::new(job))
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.limits)
            .field("disk_cache", &self.disk_cache)
            .field("modules", &lock(&self.modules).len())
            .finish_non_exhaustive()
    }
}

/// Tells apart the usual wrong files before wasmtime's less specific errors.
fn check_magic(wasm: &[u8]) -> Result<()> {
    if !wasm.starts_with(b"\0asm") {
        return Err(Error::invalid_module(
            "not a WebAssembly module (it does not start with \\0asm); pass the `.wasm` file \
             that `cargo build --release --target wasm32-unknown-unknown` writes under \
             target/wasm32-unknown-unknown/release/",
        ));
    }
    if wasm.get(4..8) != Some(&[1, 0, 0, 0][..]) {
        return Err(Error::invalid_module(
            "a WebAssembly component or another binary format version, not a core module: \
             build the job with quarry-sdk for wasm32-unknown-unknown (not wasip2 or \
             cargo-component)",
        ));
    }
    Ok(())
}

/// Locks a mutex whose data stays consistent even if a holder panicked (plain maps, updated by
/// single inserts and removes).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
