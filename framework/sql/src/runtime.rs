//! What a process's queries may use: memory up to a limit (past it, operators spill to disk) and,
//! for the user's own process only, local files.

use std::num::NonZeroUsize;
use std::sync::Arc;

use datafusion::error::Result;
use datafusion::execution::memory_pool::TrackConsumersPool;
use datafusion::execution::object_store::{
    DefaultObjectStoreRegistry, ObjectStoreRegistry, ObjectStoreUrl,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::SessionConfig;

use crate::memory_pool::HeadroomPool;

/// Limits on what the queries of one process may use.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeLimits {
    /// Bytes the process's running queries may hold together. Past it, sorts, aggregates and
    /// joins spill to temporary files; what cannot spill fails, naming the largest consumers.
    /// `None`: bounded by the machine only.
    pub memory: Option<usize>,
    /// Whether queries may read and write local files through an object store (`file://`).
    /// Daemons serving the network run without.
    pub local_files: bool,
}

impl RuntimeLimits {
    /// `config` fitted to the memory limit: a sort keeps memory aside for merging what it
    /// spilled (10 MiB by default, more than a small limit has); under a limit, a sixteenth of it.
    pub fn fit(&self, mut config: SessionConfig) -> SessionConfig {
        if let Some(bytes) = self.memory {
            let execution = &mut config.options_mut().execution;
            execution.sort_spill_reservation_bytes =
                execution.sort_spill_reservation_bytes.min(bytes / 16);
        }
        config
    }
}

/// The DataFusion runtime for `limits`: one memory pool, shared by every query and task of the
/// process, so that the limit is the process's and not each query's.
pub fn runtime_env(limits: RuntimeLimits) -> Result<Arc<RuntimeEnv>> {
    let mut builder = RuntimeEnvBuilder::new();
    if let Some(bytes) = limits.memory {
        // Fair: each spilling operator may use an equal share, so one large sort does not
        // starve the others into failing, and a part is kept for what cannot spill; tracked:
        // an error names the top consumers.
        let pool = TrackConsumersPool::new(
            HeadroomPool::new(bytes),
            NonZeroUsize::MIN.saturating_add(4),
        );
        builder = builder.with_memory_pool(Arc::new(pool));
    }
    if !limits.local_files {
        let objects = DefaultObjectStoreRegistry::new();
        // Nothing else is registered; without `file://` no file can be read or written.
        let _local = objects.deregister_store(ObjectStoreUrl::local_filesystem().as_ref());
        builder = builder.with_object_store_registry(Arc::new(objects));
    }
    builder.build_arc()
}
