//! Deletion vectors: the rows of a data file that newer writes superseded.
//!
//! When a run is added, the rows of older runs with the same primary keys stop being live; rather
//! than merge runs on every read, the store marks those rows by position (their row number in the
//! file) in a Roaring bitmap, as Iceberg v3 and Delta Lake do. A scan skips marked rows while it
//! decodes, so runs are read side by side, each row group on its own, and every key is live in
//! exactly one place.
//!
//! A deletion vector is immutable: adding rows to it writes a new file (`<data file>.del-<id>`)
//! that the manifest lists in place of the old one. Layout: `QDV1`, a little-endian CRC-32 of the
//! rest, then the bitmap in Roaring's portable format.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use roaring::RoaringBitmap;

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"QDV1";

/// The deleted rows of one data file, as one version of its deletion vector.
#[derive(Debug)]
pub struct Deletes {
    /// Path relative to the data directory, as the manifest lists it.
    pub relative: String,
    path: PathBuf,
    /// Row numbers within the data file.
    pub rows: RoaringBitmap,
    /// Set when a newer version replaced this one or the file's run left the manifest.
    obsolete: AtomicBool,
    /// The rows of each row group, numbered within it: worked out once, by the first scan.
    by_group: OnceLock<Vec<Arc<Vec<u32>>>>,
}

impl Deletes {
    /// Writes a new version, fsynced (the directory is synced by the caller, once for all).
    pub fn write(data_dir: &Path, relative: String, rows: RoaringBitmap) -> Result<Deletes> {
        let path = data_dir.join(&relative);
        let mut payload = Vec::with_capacity(rows.serialized_size());
        rows.serialize_into(&mut payload)
            .map_err(Error::io("encoding", &path))?;
        let mut file = File::create(&path).map_err(Error::io("creating", &path))?;
        file.write_all(MAGIC)
            .and_then(|()| file.write_all(&crc32fast::hash(&payload).to_le_bytes()))
            .and_then(|()| file.write_all(&payload))
            .and_then(|()| file.sync_all())
            .map_err(Error::io("writing", &path))?;
        Ok(Deletes {
            relative,
            path,
            rows,
            obsolete: AtomicBool::new(false),
            by_group: OnceLock::new(),
        })
    }

    /// Reads a version the manifest lists.
    pub fn read(data_dir: &Path, relative: &str) -> Result<Deletes> {
        let path = data_dir.join(relative);
        let bytes = fs::read(&path).map_err(Error::io("reading", &path))?;
        let corrupt = |problem: &str| Error::Corrupt {
            path: path.clone(),
            problem: problem.to_string(),
        };
        if bytes.len() < 8 || &bytes[..4] != MAGIC {
            return Err(corrupt("not a deletion vector (bad header)"));
        }
        let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if crc32fast::hash(&bytes[8..]) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        let rows = RoaringBitmap::deserialize_from(&bytes[8..])
            .map_err(|e| corrupt(&format!("undecodable bitmap: {e}")))?;
        Ok(Deletes {
            relative: relative.to_string(),
            path,
            rows,
            obsolete: AtomicBool::new(false),
            by_group: OnceLock::new(),
        })
    }

    /// The deleted rows of each row group of the data file, whose groups start at rows
    /// `group_starts`, numbered within the group. A version never changes, so every scan of it
    /// shares what the first one worked out (or [`Self::split_after`], ahead of any scan).
    pub fn in_groups(&self, group_starts: &[u64]) -> &[Arc<Vec<u32>>] {
        let split = || {
            (0..group_starts.len())
                .map(|g| {
                    let (start, end) = group_bounds(group_starts, g);
                    Arc::new(self.rows.range(start..end).map(|r| r - start).collect())
                })
                .collect()
        };
        if let Some(groups) = self.by_group.get() {
            return groups;
        }
        if super::threads::in_background() {
            // A compaction's step or the cover thread: a scan must not wait for it to finish the
            // split (see `threads.rs`), so it splits aside and keeps whichever split was stored
            // first.
            let _ = self.by_group.set(split());
        }
        self.by_group.get_or_init(split)
    }

    /// Works out [`Self::in_groups`] for a version that is `previous` plus the rows `added`, on
    /// the thread that wrote it rather than in the first scan to read it. A flush supersedes a
    /// few rows in each group of a large file; the groups that gained none share `previous`'s
    /// lists, and the rest merge theirs with the new rows, instead of walking every deleted row
    /// of the file again.
    pub fn split_after(&self, group_starts: &[u64], previous: Option<&Deletes>, added: &[u32]) {
        let before = previous
            .and_then(|p| p.by_group.get())
            .filter(|before| before.len() == group_starts.len());
        let Some(before) = before else {
            self.in_groups(group_starts);
            return;
        };
        let mut added = added.to_vec();
        added.sort_unstable();
        added.dedup();
        let groups = (0..group_starts.len())
            .map(|g| {
                let (start, end) = group_bounds(group_starts, g);
                let from = added.partition_point(|&r| r < start);
                let to = added.partition_point(|&r| r < end);
                if from == to {
                    return before[g].clone();
                }
                let new: Vec<u32> = added[from..to].iter().map(|r| r - start).collect();
                Arc::new(union(&before[g], &new))
            })
            .collect();
        // Only this thread has the version yet, so nothing can have split it meanwhile.
        let _ = self.by_group.set(groups);
    }

    /// Marks the file for deletion once nothing holds this version.
    pub fn retire(&self) {
        self.obsolete.store(true, Ordering::SeqCst);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The rows of group `g` among groups starting at `group_starts`, as a range of row numbers
/// in the file (the last group runs to the end).
fn group_bounds(group_starts: &[u64], g: usize) -> (u32, u32) {
    let row = |start: u64| u32::try_from(start).unwrap_or(u32::MAX);
    let end = group_starts.get(g + 1).map_or(u32::MAX, |&next| row(next));
    (row(group_starts[g]), end)
}

/// The rows of `a` and of `b` (each sorted and unique), sorted and unique.
pub(crate) fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

impl Drop for Deletes {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::SeqCst)
            && let Err(e) = fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not delete an obsolete deletion vector");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_union_of_rows_is_sorted_unique_and_loses_none() {
        let cases: [(&[u32], &[u32]); 5] = [
            (&[], &[]),
            (&[1, 4, 9], &[]),
            (&[], &[0, 2]),
            (&[1, 4, 9, 12], &[0, 4, 5, 12, 40]),
            (&[7], &[1, 2, 3, 7, 8]),
        ];
        for (a, b) in cases {
            let mut expected: Vec<u32> = a.iter().chain(b).copied().collect();
            expected.sort_unstable();
            expected.dedup();
            assert_eq!(union(a, b), expected, "{a:?} and {b:?}");
        }
    }

    #[test]
    fn deleted_rows_split_into_row_groups_numbered_within_each() {
        let dir = tempfile::tempdir().unwrap();
        let rows: RoaringBitmap = [0u32, 5, 9, 10, 25, 29].into_iter().collect();
        let deletes = Deletes::write(dir.path(), "a.del-1".into(), rows).unwrap();
        let groups: Vec<Vec<u32>> = deletes
            .in_groups(&[0, 10, 20, 30])
            .iter()
            .map(|g| g.to_vec())
            .collect();
        assert_eq!(groups, [vec![0, 5, 9], vec![0], vec![5, 9], vec![]]);
    }

    #[test]
    fn a_new_version_splits_like_a_fresh_one_and_shares_the_groups_it_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let starts = [0u64, 100, 200, 300, 400];
        let old_rows: RoaringBitmap = (0..500).filter(|r| r % 7 == 0).collect();
        let old = Deletes::write(dir.path(), "a.del-1".into(), old_rows.clone()).unwrap();
        old.in_groups(&starts);
        // New rows in groups 1 and 3 only, unsorted, one already deleted and one given twice.
        let added = [399u32, 105, 140, 301, 105, 150];
        let mut rows = old_rows;
        rows.extend(added);
        let new = Deletes::write(dir.path(), "a.del-2".into(), rows.clone()).unwrap();
        new.split_after(&starts, Some(&old), &added);
        let fresh = Deletes::write(dir.path(), "a.del-3".into(), rows).unwrap();
        let lists = |d: &Deletes| -> Vec<Vec<u32>> {
            d.in_groups(&starts).iter().map(|g| g.to_vec()).collect()
        };
        assert_eq!(lists(&new), lists(&fresh));
        assert!(lists(&new)[1].contains(&5) && lists(&new)[3].contains(&99));
        let shared: Vec<bool> = (0..starts.len())
            .map(|g| Arc::ptr_eq(&new.in_groups(&starts)[g], &old.in_groups(&starts)[g]))
            .collect();
        assert_eq!(shared, [true, false, true, false, true]);
    }

    #[test]
    fn a_deletion_vector_reads_back_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let rows: RoaringBitmap = [3u32, 7, 1_000_000].into_iter().collect();
        Deletes::write(dir.path(), "a.del-1".into(), rows.clone()).unwrap();
        assert_eq!(Deletes::read(dir.path(), "a.del-1").unwrap().rows, rows);
        let path = dir.path().join("a.del-1");
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let e = Deletes::read(dir.path(), "a.del-1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("checksum"), "{e}");
    }
}
