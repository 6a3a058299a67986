//! The Rust job modules a driver keeps: each checked once when a client sends it, written to
//! `DATA-DIR/driver/modules/<sha256>.wasm` (so a job record, a retry or a schedule can name it
//! by hash after a restart), compiled once per process, and served to workers by hash.

use std::path::PathBuf;
use std::sync::Arc;

use quarry_wasm::{JobModule, ModuleHash, Runtime};

use super::{Error, Result};

#[derive(Debug)]
pub struct ModuleStore {
    dir: PathBuf,
    runtime: Arc<Runtime>,
}

impl ModuleStore {
    pub fn new(dir: PathBuf, runtime: Arc<Runtime>) -> Self {
        ModuleStore { dir, runtime }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    fn path(&self, hash: &ModuleHash) -> PathBuf {
        self.dir.join(format!("{hash}.wasm"))
    }

    /// Checks and keeps a module a client sent; the same bytes again are the same module.
    pub async fn put(&self, bytes: Vec<u8>) -> Result<Arc<JobModule>> {
        let runtime = self.runtime.clone();
        let (module, bytes) = tokio::task::spawn_blocking(move || {
            let module = runtime.load(&bytes);
            (module, bytes)
        })
        .await
        .map_err(|e| std::io::Error::other(format!("loading a job module stopped: {e}")))?;
        let module = module.map_err(quarry_jobs::Error::from)?;
        let path = self.path(&module.hash());
        if !path.exists() {
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || write_durably(&dir, &path, &bytes))
                .await
                .map_err(|e| {
                    std::io::Error::other(format!("keeping a job module stopped: {e}"))
                })??;
        }
        Ok(module)
    }

    /// A module by hash: loaded in this process, or kept on disk by an earlier one.
    pub async fn get(&self, hash: &ModuleHash) -> Result<Arc<JobModule>> {
        if let Some(module) = self.runtime.module(hash) {
            return Ok(module);
        }
        let bytes = self.bytes(hash)?;
        let runtime = self.runtime.clone();
        let module = tokio::task::spawn_blocking(move || runtime.load(&bytes))
            .await
            .map_err(|e| std::io::Error::other(format!("loading a job module stopped: {e}")))?
            .map_err(quarry_jobs::Error::from)?;
        Ok(module)
    }

    /// The bytes of a kept module.
    pub fn bytes(&self, hash: &ModuleHash) -> Result<Vec<u8>> {
        std::fs::read(self.path(hash)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Plan(quarry_jobs::Error::Job {
                message: format!(
                    "the driver has no job module {hash}; send it first (quarry submit does)"
                ),
            }),
            _ => Error::Io(e),
        })
    }
}

/// Writes `bytes` to `path` through a temporary file, synced, then renamed into place.
fn write_durably(dir: &std::path::Path, path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| Error::Io(e.error))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
