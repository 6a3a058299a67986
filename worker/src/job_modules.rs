//! The Rust job modules this worker runs: fetched from the driver by content hash the first time
//! a task needs one, compiled once per process (and kept compiled on disk, so a restart does not
//! recompile), and instantiated afresh for every task by the plan's `WasmExec`s.
//!
//! ```text
//!   task (modules: [hash]) ──ensure──▶ Runtime has it? ──no──▶ driver GetModule(hash)
//!                                            │                  check sha256, compile (CPU)
//!                                            ▼
//!                           QuarryCodec decodes WasmExec over Runtime::module(hash)
//! ```

use std::sync::Arc;

use quarry_jobs::{FailureKind, TaskFailure};
use quarry_proto::v1 as pb;
use quarry_proto::v1::driver_service_client::DriverServiceClient;
use quarry_wasm::{ModuleHash, Runtime};

use quarry_client::auth::AuthChannel;

/// A worker's modules and where to fetch the missing ones.
pub struct JobModules {
    runtime: Arc<Runtime>,
    driver: DriverServiceClient<AuthChannel>,
    /// One fetch at a time: tasks of one job arrive together and want the same module.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for JobModules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobModules").finish_non_exhaustive()
    }
}

fn failure(kind: FailureKind, retryable: bool, message: String) -> TaskFailure {
    TaskFailure {
        kind,
        retryable,
        message,
        unreachable_endpoint: None,
    }
}

impl JobModules {
    /// Modules fetched from the driver through `driver`, which carries the cluster secret.
    pub fn new(runtime: Arc<Runtime>, driver: AuthChannel) -> Self {
        JobModules {
            runtime,
            driver: DriverServiceClient::new(driver)
                .max_decoding_message_size(quarry_wasm::MAX_MODULE_BYTES + 1024),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Makes sure every module of `hashes` is loaded, fetching and compiling those that are not.
    pub async fn ensure(&self, hashes: &[ModuleHash]) -> Result<(), TaskFailure> {
        for hash in hashes {
            if self.runtime.module(hash).is_some() {
                continue;
            }
            let _one_at_a_time = self.fetching.lock().await;
            if self.runtime.module(hash).is_some() {
                continue;
            }
            let response = self
                .driver
                .clone()
                .get_module(pb::GetModuleRequest {
                    protocol_version: quarry_proto::PROTOCOL_VERSION,
                    hash: hash.to_string(),
                })
                .await
                .map_err(|e| {
                    failure(
                        FailureKind::External,
                        true,
                        format!(
                            "fetching job module {hash} from the driver: {}",
                            e.message()
                        ),
                    )
                })?;
            let bytes = response.into_inner().module;
            if ModuleHash::of(&bytes) != *hash {
                return Err(failure(
                    FailureKind::Internal,
                    false,
                    format!("the driver sent other bytes for job module {hash}"),
                ));
            }
            let runtime = self.runtime.clone();
            tokio::task::spawn_blocking(move || runtime.load(&bytes))
                .await
                .map_err(|e| {
                    failure(
                        FailureKind::Internal,
                        false,
                        format!("compiling job module {hash} stopped: {e}"),
                    )
                })?
                .map_err(|e| {
                    let user = e.is_user_error();
                    failure(
                        if user {
                            FailureKind::User
                        } else {
                            FailureKind::Internal
                        },
                        false,
                        format!("job module {hash}: {e}"),
                    )
                })?;
        }
        Ok(())
    }
}
