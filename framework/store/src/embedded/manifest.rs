//! The manifest: the one file that says what the embedded store holds.
//!
//! It lists keyspaces, tables, views and each table's runs (sets of Parquet files, each with its
//! deletion vector once newer writes superseded some of its rows), the next sequence
//! number, and the last write-ahead-log segment whose contents are already in runs. It is
//! replaced atomically: written to a temporary file, fsynced, renamed over the old one, and the
//! directory fsynced. A file on disk that the manifest does not list is garbage from a crash.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use quarry_core::schema::{KeyspaceDef, TableDef, ViewDef};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Compaction;

pub const MANIFEST_FILE: &str = "MANIFEST.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The next sequence number to hand out (writes and runs are ordered by sequence number).
    pub next_seq: u64,
    /// The next table or file id.
    pub next_id: u64,
    /// Write-ahead-log segments up to and including this one are fully in runs.
    pub wal_checkpoint: u64,
    pub keyspaces: Vec<KeyspaceDef>,
    pub tables: Vec<TableEntry>,
    /// Absent from manifests written before views existed.
    #[serde(default)]
    pub views: Vec<ViewDef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableEntry {
    /// Never reused, so a dropped table's log records cannot reach a new table of the same name.
    pub id: u64,
    pub def: TableDef,
    pub runs: Vec<RunEntry>,
    /// What the table's last compaction did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_compaction: Option<Compaction>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunEntry {
    pub seq: u64,
    /// Paths relative to the data directory.
    pub files: Vec<String>,
    /// Each file's deletion vector, where it has one: data file path to deletion-vector path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deletes: BTreeMap<String, String>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            format: FORMAT,
            next_seq: 1,
            next_id: 1,
            wal_checkpoint: 0,
            keyspaces: Vec::new(),
            tables: Vec::new(),
            views: Vec::new(),
        }
    }
}

impl Manifest {
    /// Reads the manifest of `dir`, or `None` for a new directory.
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", &path)(e)),
        };
        Manifest::from_bytes(&path, &bytes).map(Some)
    }

    /// Parses the contents of the manifest file at `path` (named in errors).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Manifest> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        if manifest.format != FORMAT {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                problem: format!(
                    "manifest format {} is not the supported format {FORMAT}",
                    manifest.format
                ),
            });
        }
        Ok(manifest)
    }

    /// Replaces the manifest of `dir` atomically and durably.
    pub fn commit(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let path = dir.join(MANIFEST_FILE);
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Internal(format!("serialising the manifest: {e}")))?;
        let mut file = File::create(&tmp).map_err(Error::io("creating", &tmp))?;
        file.write_all(&bytes).map_err(Error::io("writing", &tmp))?;
        file.sync_all().map_err(Error::io("syncing", &tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(Error::io("renaming", &tmp))?;
        sync_dir(dir)
    }
}

/// fsyncs a directory so that renames and new files in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("syncing directory", dir))
}

/// Creates `dir` and any missing parents, fsyncing each new directory's parent so that the new
/// entries survive a crash.
pub fn create_dir_durably(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    for created in missing.into_iter().rev() {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}
