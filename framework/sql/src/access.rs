//! What a session may do beyond reading and writing the store.
//!
//! A user running `quarry sql` on their own machine may do anything their account can: `COPY ...
//! TO` a local file, set any DataFusion option. A client of a daemon is someone else: the driver
//! writes files as its own user and passes options on to every worker, so its sessions may set
//! only the options below (with caps where a value sizes allocations), and touch the driver's
//! file system only where its operator allowed it (`quarry driver --allow-file-access`).

use datafusion::logical_expr::{DdlStatement, LogicalPlan};

use crate::error::{Error, Result};
use crate::session::KEYSPACE_SETTING;
use crate::temporary_views::TEMPORARY_VIEW_SETTING;

/// Who a session serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// The user on their own machine: everything.
    #[default]
    Local,
    /// A client of a daemon: allow-listed settings; the local file system only when `files`.
    Client { files: bool },
}

/// Option prefixes a client may set: how DataFusion plans and executes, how EXPLAIN prints, and
/// Quarry's own options. Not `datafusion.runtime.*` (memory pool, spill directory) nor
/// `datafusion.catalog.*` (whose `location` registers a directory of files as a table).
const CLIENT_PREFIXES: &[&str] = &[
    "datafusion.execution.",
    "datafusion.optimizer.",
    "datafusion.explain.",
    "datafusion.sql_parser.",
    "datafusion.format.",
    "quarry.",
];

/// Options that size allocations, with the largest value a client may give.
const CAPS: &[(&str, u64)] = &[
    ("datafusion.execution.target_partitions", 1024),
    ("datafusion.execution.planning_concurrency", 1024),
    ("datafusion.execution.batch_size", 1 << 20),
    ("datafusion.execution.meta_fetch_concurrency", 1024),
];

impl Access {
    /// Refuses a setting this session may not make.
    pub fn check_setting(&self, key: &str, value: &str) -> Result<()> {
        if *self == Access::Local {
            return Ok(());
        }
        let key = key.trim().to_ascii_lowercase();
        let allowed = key == KEYSPACE_SETTING
            || key.starts_with(TEMPORARY_VIEW_SETTING)
            || CLIENT_PREFIXES.iter().any(|p| key.starts_with(p));
        if !allowed {
            return Err(Error::NotAllowed {
                message: format!(
                    "a client of the driver may not set {key}; it may set the keyspace (USE) and \
                     options under {}",
                    CLIENT_PREFIXES
                        .iter()
                        .map(|p| format!("{p}*"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        if let Some((_, cap)) = CAPS.iter().find(|(k, _)| *k == key)
            && value.trim().parse::<u64>().is_ok_and(|v| v > *cap)
        {
            return Err(Error::NotAllowed {
                message: format!("{key} = {value} is more than a client may set (at most {cap})"),
            });
        }
        Ok(())
    }

    /// Refuses a plan that reads or writes the local file system where this session may not.
    pub fn check_plan(&self, plan: &LogicalPlan) -> Result<()> {
        if !matches!(self, Access::Client { files: false }) {
            return Ok(());
        }
        let what = match plan {
            LogicalPlan::Copy(copy) => Some(format!("COPY ... TO '{}'", copy.output_url)),
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(table)) => Some(format!(
                "CREATE EXTERNAL TABLE over '{}'",
                table.locations.join("', '")
            )),
            _ => None,
        };
        match what {
            Some(what) => Err(Error::NotAllowed {
                message: format!(
                    "{what} would use the driver's file system, which clients may not; an \
                     operator can allow it with `quarry driver --allow-file-access`, or run the \
                     statement with `quarry sql` without --driver on the machine that holds the \
                     files"
                ),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_set_planning_options_and_the_keyspace_but_not_the_runtime_or_catalog() {
        let client = Access::Client { files: false };
        for (key, value) in [
            ("datafusion.execution.target_partitions", "8"),
            (
                "datafusion.optimizer.hash_join_single_partition_threshold",
                "0",
            ),
            ("datafusion.catalog.default_schema", "iot"),
            ("quarry.pushdown", "false"),
        ] {
            client.check_setting(key, value).unwrap();
        }
        for (key, value, expected) in [
            ("datafusion.runtime.temp_directory", "/etc", "may not set"),
            ("datafusion.catalog.location", "/home", "may not set"),
            (
                "datafusion.execution.target_partitions",
                "1000000000",
                "at most 1024",
            ),
        ] {
            let err = client.check_setting(key, value).unwrap_err().to_string();
            assert!(err.contains(expected), "{key}: {err}");
        }
        Access::Local
            .check_setting("datafusion.runtime.temp_directory", "/tmp")
            .unwrap();
    }
}
