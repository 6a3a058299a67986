//! A compiled, checked job module, from which plans and operator instances are made.

use std::fmt;

use quarry_sdk::dag::{ABI_VERSION, JobArgs, JobDag};
use wasmtime::InstancePre;

use crate::error::{Error, Result};
use crate::guest_instance::{GuestInstance, HostState};
use crate::module_hash::ModuleHash;
use crate::op_instance::OpInstance;
use crate::sandbox_limits::SandboxLimits;

/// How the planning call is named in errors.
const PLAN: &str = "the job's plan";

/// A job module that compiled and passed the checks of [`Runtime::load`](crate::Runtime::load).
///
/// Cheap to share (`Arc`) and `Send + Sync`: it holds the compiled code and an `InstancePre`
/// built once, and every [`plan`](JobModule::plan) or [`start`](JobModule::start) instantiates
/// into a fresh `Store`, so nothing one call does can leak into another.
pub struct JobModule {
    hash: ModuleHash,
    pre: InstancePre<HostState>,
    limits: SandboxLimits,
    from_disk_cache: bool,
}

impl JobModule {
    pub(crate) fn new(
        hash: ModuleHash,
        pre: InstancePre<HostState>,
        limits: SandboxLimits,
        from_disk_cache: bool,
    ) -> JobModule {
        JobModule {
            hash,
            pre,
            limits,
            from_disk_cache,
        }
    }

    /// The SHA-256 of the module's bytes.
    pub fn hash(&self) -> ModuleHash {
        self.hash
    }

    /// Whether the compiled code came from the runtime's disk cache instead of being compiled by
    /// this process.
    pub fn from_disk_cache(&self) -> bool {
        self.from_disk_cache
    }

    /// Runs the module's planning export with the job's arguments and returns the DAG it builds,
    /// under the same sandbox limits as any operator (planning is user code too).
    pub fn plan(&self, args: &JobArgs) -> Result<JobDag> {
        let mut guest = GuestInstance::new(&self.pre, self.limits, PLAN)?;
        let bytes = guest.plan(PLAN, &args.to_bytes())?;
        let dag = JobDag::from_bytes(&bytes).map_err(|problem| {
            Error::bad_result(
                PLAN,
                format!("it returned bytes that are not an archived JobDag ({problem})"),
            )
        })?;
        if dag.abi_version != ABI_VERSION {
            return Err(Error::AbiMismatch {
                module: dag.abi_version,
                host: ABI_VERSION,
            });
        }
        Ok(dag)
    }

    /// Instantiates the module and prepares its operator `op` (an index into
    /// [`JobDag::ops`]) with the job's arguments. `op_name` ([`OpInfo::name`], naming the
    /// closures) is how errors from this instance refer to it.
    ///
    /// [`OpInfo::name`]: quarry_sdk::dag::OpInfo::name
    pub fn start(&self, op: u32, op_name: &str, args: &JobArgs) -> Result<OpInstance> {
        let mut guest = GuestInstance::new(&self.pre, self.limits, op_name)?;
        guest.start(op_name, op, &args.to_bytes())?;
        Ok(OpInstance::new(guest, op_name.to_owned()))
    }

    /// The ABI version the module speaks, from a throwaway instance.
    pub(crate) fn abi_version(&self) -> Result<u32> {
        GuestInstance::new(&self.pre, self.limits, "instantiation")?.abi_version()
    }
}

impl fmt::Debug for JobModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobModule")
            .field("hash", &self.hash)
            .field("limits", &self.limits)
            .field("from_disk_cache", &self.from_disk_cache)
            .finish_non_exhaustive()
    }
}
