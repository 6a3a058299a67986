//! What the cluster says of each table that changes slowly (size estimates, tablet maps), kept
//! per table and read again in the background once stale: planning, which cannot wait on the
//! cluster, uses the last value read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use quarry_core::schema::TableName;
use quarry_store::Result;

#[derive(Debug)]
struct Entry<T> {
    read_at: Option<Instant>,
    value: Option<T>,
    reading: bool,
}

/// The last value read of each table, and which are being read.
#[derive(Debug)]
pub(crate) struct TableCache<T> {
    what: &'static str,
    fresh_for: Duration,
    entries: Mutex<HashMap<TableName, Entry<T>>>,
}

impl<T: Clone> TableCache<T> {
    /// A cache of `what` (for logs), each value used for `fresh_for` before it is read again.
    pub(crate) fn new(what: &'static str, fresh_for: Duration) -> Self {
        TableCache {
            what,
            fresh_for,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The last value of `table`, and whether it should be read again (it is missing or stale
    /// and no read is under way; the caller then reads it and calls [`TableCache::store`]).
    pub(crate) fn get(&self, table: &TableName) -> (Option<T>, bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry(table.clone()).or_insert(Entry {
            read_at: None,
            value: None,
            reading: false,
        });
        let stale = entry.read_at.is_none_or(|at| at.elapsed() > self.fresh_for);
        let read = stale && !entry.reading;
        if read {
            entry.reading = true;
        }
        (entry.value.clone(), read)
    }

    /// Records what a read found (`None`: the cluster has nothing for the table; an error keeps
    /// the last value).
    pub(crate) fn store(&self, table: &TableName, value: Result<Option<T>>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry(table.clone()).or_insert(Entry {
            read_at: None,
            value: None,
            reading: false,
        });
        entry.reading = false;
        match value {
            Ok(value) => {
                entry.value = value;
                entry.read_at = Some(Instant::now());
            }
            Err(e) => tracing::debug!("reading the {} of {table}: {e}", self.what),
        }
    }

    /// Replaces every value with `values`, read just now (one read of every table's): tables
    /// left out have none. No reader sees the cache empty in between.
    pub(crate) fn replace_all(&self, values: HashMap<TableName, T>) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for entry in entries.values_mut() {
            entry.value = None;
            entry.read_at = Some(now);
        }
        for (table, value) in values {
            let entry = entries.entry(table).or_insert(Entry {
                read_at: None,
                value: None,
                reading: false,
            });
            entry.value = Some(value);
            entry.read_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_or_missing_value_is_read_once_at_a_time() {
        let cache = TableCache::new("test values", Duration::from_secs(60));
        let t = TableName::new("ks", "t");
        assert_eq!(cache.get(&t), (None, true));
        assert_eq!(cache.get(&t), (None, false), "a read is under way");
        cache.store(&t, Ok(Some(5)));
        assert_eq!(cache.get(&t), (Some(5), false));
        let u = TableName::new("ks", "u");
        cache.replace_all(HashMap::from([(u.clone(), 7)]));
        assert_eq!(cache.get(&t), (None, false), "fresh: read as having none");
        assert_eq!(cache.get(&u), (Some(7), false));
    }
}
