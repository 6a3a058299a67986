//! Compiled modules kept on disk, so that a restarted process does not compile them again.
//!
//! ```text
//!   <cache_dir>/wasmtime-<major>/<engine configuration hash>/<module sha256>.cwasm
//! ```
//!
//! The configuration hash covers everything that makes an artefact loadable by an engine
//! (wasmtime's exact version, target, Cranelift and CPU flags, tunables, wasm features), so
//! engines that differ never share a directory; wasmtime still checks each artefact and rejects a
//! mismatch safely.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module, ModuleVersionStrategy};

use crate::module_hash::ModuleHash;

/// The directory of one engine configuration. Failures to read or write are logged and
/// otherwise ignored: the cache only saves time.
#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    pub(crate) fn new(root: &Path, engine: &Engine) -> DiskCache {
        let version = ModuleVersionStrategy::WasmtimeVersion;
        DiskCache {
            dir: root
                .join(format!("wasmtime-{}", version.as_str()))
                .join(engine_hash(engine)),
        }
    }

    /// Where the artefact of `hash` lives.
    pub(crate) fn path(&self, hash: ModuleHash) -> PathBuf {
        self.dir.join(format!("{hash}.cwasm"))
    }

    /// The cached artefact of `hash`, if there is a good one. A bad one is deleted, so the
    /// caller's fresh compile replaces it.
    pub(crate) fn load(&self, engine: &Engine, hash: ModuleHash) -> Option<Module> {
        let path = self.path(hash);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("cannot read cached module {}: {e}", path.display());
                return None;
            }
        };
        #[allow(
            unsafe_code,
            reason = "loading a precompiled artefact is unsafe in wasmtime; the cache exists to do it"
        )]
        // SAFETY: `deserialize` runs the artefact's machine code after only light checks, so it
        // must be an artefact that wasmtime produced. Files here are written only by `store`
        // below, from `Module::serialize`, to a temporary file renamed into place (never a torn
        // file); wasmtime itself refuses, safely, artefacts of another version or configuration.
        // What remains is trusting the directory: `RuntimeConfig::cache_dir` says it must be
        // writable only by the worker's own user. The bytes are read into memory rather than
        // mapped (`deserialize_file`), so a file changed or truncated later cannot fault (SIGBUS)
        // code that is running.
        let loaded = unsafe { Module::deserialize(engine, &bytes) };
        match loaded {
            Ok(module) => Some(module),
            Err(e) => {
                tracing::warn!(
                    "discarding cached module {}, which this engine cannot load: {e:#}",
                    path.display()
                );
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!("cannot delete {}: {e}", path.display());
                }
                None
            }
        }
    }

    /// Writes the artefact of `module` for `hash`.
    pub(crate) fn store(&self, hash: ModuleHash, module: &Module) {
        if let Err(e) = self.try_store(hash, module) {
            tracing::warn!(
                "cannot cache compiled module {hash} in {}: {e}",
                self.dir.display()
            );
        }
    }

    fn try_store(&self, hash: ModuleHash, module: &Module) -> io::Result<()> {
        let bytes = module.serialize().map_err(io::Error::other)?;
        fs::create_dir_all(&self.dir)?;
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(&bytes)?;
        file.as_file().sync_all()?;
        file.persist(self.path(hash)).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Hex of a SHA-256 over the engine's compatibility hash: stable across processes and builds,
/// unlike `DefaultHasher`, whose keys may change between Rust releases.
fn engine_hash(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Feeds what a `Hash` impl writes into SHA-256.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::Config;

    #[test]
    fn engines_configured_alike_share_a_directory_and_others_do_not() {
        let engine = |fuel| {
            let mut config = Config::new();
            config.consume_fuel(fuel);
            Engine::new(&config).unwrap()
        };
        let root = Path::new("/cache");
        let a = DiskCache::new(root, &engine(true));
        assert_eq!(a.dir, DiskCache::new(root, &engine(true)).dir);
        assert_ne!(a.dir, DiskCache::new(root, &engine(false)).dir);
        let hash = ModuleHash::of(b"x");
        let path = a.path(hash);
        assert!(path.starts_with("/cache/wasmtime-48"), "{}", path.display());
        assert_eq!(path.file_name().unwrap(), &*format!("{hash}.cwasm"));
    }
}
