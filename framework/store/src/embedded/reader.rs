//! Reading a data directory that another process writes.
//!
//! ```text
//!   writer process:  write ─▶ log + memtable ─flush─▶ run files (fsynced) ─▶ MANIFEST.json (rename)
//!                                                                                │
//!   reader process:  catalog call / plan_scan ─▶ manifest changed? ──yes──▶ reload ┘
//!                                                      │ no                (open files reused)
//!                                                      ▼
//!                                              the state loaded last
//! ```
//!
//! The writer replaces the manifest atomically and lists a run only once its files are fsynced,
//! so a reader always loads a whole manifest whose files exist, except for files a compaction
//! removed after that manifest was replaced: loading retries on a newer manifest, and a scan
//! planned before the compaction fails with [`Error::DataFileGone`] (retryable).
//!
//! Deciding whether the manifest changed costs one `stat` in the steady state: the file's length,
//! modification time and inode (a rename always brings a new inode) are compared with those of the
//! file loaded last. Because file times are coarse, a manifest modified less than
//! [`RACY_WINDOW`] before it was last read could be replaced by another with the same stamp, so
//! in that window the contents are read and compared as well (git's "racy clean" rule).

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::embedded::manifest::{MANIFEST_FILE, Manifest};
use crate::embedded::{EmbeddedOptions, State, lock};
use crate::error::{Error, Result};

/// A manifest modified this close to (or after) the moment it was read is compared by content,
/// not by its stamp alone. Far more than any local file system's timestamp granularity.
const RACY_WINDOW: Duration = Duration::from_secs(1);

/// Loads retried when a listed data file is missing (a compaction removed it after the manifest
/// was read; a newer manifest no longer lists it).
const LOAD_ATTEMPTS: usize = 3;

/// The read-only side of an embedded data directory; see the module docs.
#[derive(Debug)]
pub(super) struct Reader {
    dir: PathBuf,
    options: EmbeddedOptions,
    /// What the state was loaded from; held while checking and reloading, so that concurrent
    /// callers reload once.
    seen: Mutex<Seen>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct Seen {
    /// The manifest the state was loaded from; `None` when there was none.
    file: Option<ManifestFile>,
    /// When the manifest was last read, taken before reading; `None` before the first load.
    read_at: Option<SystemTime>,
}

#[derive(Debug, PartialEq, Eq)]
struct ManifestFile {
    stamp: Stamp,
    bytes: Vec<u8>,
}

/// What `stat` says about the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    fn of(metadata: &fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Stamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            inode,
        }
    }
}

impl Seen {
    /// True when `now` (the manifest's stamp, `None` when absent) proves the manifest is the one
    /// loaded last, without reading it.
    fn unchanged(&self, now: Option<Stamp>) -> bool {
        let Some(read_at) = self.read_at else {
            return false;
        };
        match (&self.file, now) {
            (None, None) => true,
            (Some(file), Some(now)) => {
                file.stamp == now
                    && now
                        .modified
                        .and_then(|m| m.checked_add(RACY_WINDOW))
                        .is_some_and(|settled| settled < read_at)
            }
            _ => false,
        }
    }
}

impl Reader {
    /// A reader of `dir`, with the manifest loaded.
    pub(super) fn open(dir: PathBuf, options: EmbeddedOptions) -> Result<Reader> {
        let empty = State::from_manifest(&dir, &Manifest::default(), &Default::default())?;
        let reader = Reader {
            dir,
            options,
            seen: Mutex::new(Seen::default()),
            state: Mutex::new(empty),
        };
        reader.refresh()?;
        Ok(reader)
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn options(&self) -> &EmbeddedOptions {
        &self.options
    }

    /// The state, reloaded first if the manifest changed since it was loaded.
    pub(super) fn state(&self) -> Result<MutexGuard<'_, State>> {
        self.refresh()?;
        Ok(lock(&self.state))
    }

    /// The state as loaded last, without looking at the manifest.
    pub(super) fn last_loaded(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Reloads the state if the manifest changed since it was loaded.
    fn refresh(&self) -> Result<()> {
        let path = self.dir.join(MANIFEST_FILE);
        let mut seen = lock(&self.seen);
        if seen.unchanged(stat(&path)?) {
            return Ok(());
        }
        let mut attempt = 1;
        loop {
            let read_at = SystemTime::now();
            let file = read(&path)?;
            if seen.file.as_ref().map(|f| &f.bytes) == file.as_ref().map(|f| &f.bytes) {
                // Same contents under a new stamp (or a stamp too recent to trust); before the
                // first load, no manifest is the empty state the reader starts with.
                *seen = Seen {
                    file,
                    read_at: Some(read_at),
                };
                return Ok(());
            }
            let manifest = match &file {
                Some(f) => Manifest::from_bytes(&path, &f.bytes)?,
                None => Manifest::default(),
            };
            let open_files = lock(&self.state).open_files();
            match State::from_manifest(&self.dir, &manifest, &open_files) {
                Ok(state) => {
                    *lock(&self.state) = state;
                    *seen = Seen {
                        file,
                        read_at: Some(read_at),
                    };
                    tracing::debug!(dir = %self.dir.display(), "reloaded the manifest");
                    return Ok(());
                }
                Err(e) if attempt < LOAD_ATTEMPTS && is_missing_file(&e) => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The manifest's stamp, `None` when there is no manifest.
fn stat(path: &Path) -> Result<Option<Stamp>> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(Some(Stamp::of(&metadata))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path)(e)),
    }
}

/// The manifest's contents and the stamp of the very file read, `None` when there is no manifest.
fn read(path: &Path) -> Result<Option<ManifestFile>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("opening", path)(e)),
    };
    let metadata = file.metadata().map_err(Error::io("reading", path))?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.read_to_end(&mut bytes)
        .map_err(Error::io("reading", path))?;
    Ok(Some(ManifestFile {
        stamp: Stamp::of(&metadata),
        bytes,
    }))
}

fn is_missing_file(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(modified: SystemTime) -> Stamp {
        Stamp {
            len: 10,
            modified: Some(modified),
            inode: 7,
        }
    }

    #[test]
    fn a_stamp_is_trusted_only_once_the_file_has_settled() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let seen = |read_at: SystemTime| Seen {
            file: Some(ManifestFile {
                stamp: stamp(t),
                bytes: b"{}".to_vec(),
            }),
            read_at: Some(read_at),
        };
        // Read long after the last change: the stamp proves nothing changed.
        assert!(seen(t + Duration::from_secs(5)).unchanged(Some(stamp(t))));
        // Read right after a change: another change could carry the same stamp.
        assert!(!seen(t + Duration::from_millis(3)).unchanged(Some(stamp(t))));
        // Any difference in the stamp, or a vanished manifest, means a reload.
        let later = seen(t + Duration::from_secs(5));
        assert!(!later.unchanged(Some(stamp(t + Duration::from_secs(4)))));
        assert!(!later.unchanged(Some(Stamp {
            inode: 8,
            ..stamp(t)
        })));
        assert!(!later.unchanged(None));
        // No manifest then and now.
        let absent = Seen {
            file: None,
            read_at: Some(t),
        };
        assert!(absent.unchanged(None));
        assert!(!absent.unchanged(Some(stamp(t))));
        assert!(!Seen::default().unchanged(None));
    }
}
