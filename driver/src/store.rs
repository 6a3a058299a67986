//! Which store a command runs on, and the one place stores are opened: the embedded store in
//! `--data-dir`, or a ScyllaDB/Cassandra cluster (`--store scylla --scylla-nodes ...`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use quarry_scylla::{Consistency, ScyllaOptions, ScyllaStore};
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};

use crate::cli::{StoreArgs, StoreKind};

/// An open store, with what only the embedded store offers kept reachable.
#[derive(Debug, Clone)]
pub enum OpenedStore {
    Embedded(Arc<EmbeddedStore>),
    Scylla(Arc<ScyllaStore>),
}

impl OpenedStore {
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            OpenedStore::Embedded(s) => s.clone(),
            OpenedStore::Scylla(s) => s.clone(),
        }
    }

    /// The embedded store, for what only it has (storage statistics, its data directory).
    pub fn embedded(&self) -> Option<&Arc<EmbeddedStore>> {
        match self {
            OpenedStore::Embedded(s) => Some(s),
            OpenedStore::Scylla(_) => None,
        }
    }
}

/// The CQL addresses of the cluster's nodes, as co-located workers are named after them.
pub fn ring_nodes(store: &ScyllaStore) -> Vec<String> {
    store
        .session()
        .get_cluster_state()
        .get_nodes_info()
        .iter()
        .map(|n| n.address.to_string())
        .collect()
}

/// How a command uses the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads, and writes when it can: an embedded directory another process writes is opened
    /// read-only, with a note.
    Any,
    /// Writes: waits up to 10 s for another process to let go of an embedded directory.
    Write,
}

/// How long [`Access::Write`] waits for another process to let go of the data directory.
const WAIT_FOR_WRITER: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the store `args` select.
pub async fn open(
    data_dir: &Path,
    args: &StoreArgs,
    access: Access,
) -> anyhow::Result<OpenedStore> {
    match args.kind {
        StoreKind::Embedded => Ok(OpenedStore::Embedded(Arc::new(open_embedded(
            data_dir, access,
        )?))),
        StoreKind::Scylla => {
            let options = scylla_options(args)?;
            let nodes = options.nodes.join(", ");
            let store = ScyllaStore::connect(options)
                .await
                .with_context(|| format!("opening the ScyllaDB/Cassandra store at {nodes}"))?;
            Ok(OpenedStore::Scylla(Arc::new(store)))
        }
    }
}

pub fn open_embedded(data_dir: &Path, access: Access) -> anyhow::Result<EmbeddedStore> {
    let context = || format!("opening the data directory {}", data_dir.display());
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        match EmbeddedStore::open(data_dir, EmbeddedOptions::default()) {
            Ok(store) => return Ok(store),
            // Another process writes the directory (a streaming load): read what it committed.
            Err(e) if e.is_locked() && access == Access::Any => {
                eprintln!(
                    "note: another process is writing {}; reading what it has committed \
                     (read-only)",
                    data_dir.display()
                );
                return EmbeddedStore::open_reader(data_dir, EmbeddedOptions::default())
                    .with_context(context);
            }
            Err(e) if e.is_locked() && started.elapsed() < WAIT_FOR_WRITER => {
                if !told {
                    eprintln!(
                        "waiting for another process to let go of {}",
                        data_dir.display()
                    );
                    told = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e).with_context(context),
        }
    }
}

/// The connector's settings from the command line (and its environment variables).
pub fn scylla_options(args: &StoreArgs) -> anyhow::Result<ScyllaOptions> {
    if args.scylla_nodes.is_empty() {
        anyhow::bail!(
            "--store scylla needs the cluster's contact points: --scylla-nodes HOST:PORT,... (or \
             QUARRY_SCYLLA_NODES)"
        );
    }
    let password = match &args.scylla_password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the password file {}", path.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        None => None,
    };
    if args.scylla_user.is_some() != password.is_some() {
        anyhow::bail!(
            "--scylla-user and --scylla-password-file go together (QUARRY_SCYLLA_USER and \
             QUARRY_SCYLLA_PASSWORD_FILE)"
        );
    }
    let tls = match (
        &args.scylla_tls_ca,
        &args.scylla_tls_cert,
        &args.scylla_tls_key,
    ) {
        (None, None, None) => None,
        (Some(ca), cert, key) => {
            if cert.is_some() != key.is_some() {
                anyhow::bail!(
                    "--scylla-tls-cert and --scylla-tls-key go together (QUARRY_SCYLLA_TLS_CERT \
                     and QUARRY_SCYLLA_TLS_KEY)"
                );
            }
            Some(quarry_scylla::tls::ScyllaTls {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })
        }
        (None, _, _) => anyhow::bail!(
            "--scylla-tls-cert needs --scylla-tls-ca, the CA that signed the nodes' certificates \
             (QUARRY_SCYLLA_TLS_CA)"
        ),
    };
    let defaults = ScyllaOptions::default();
    Ok(ScyllaOptions {
        tls,
        nodes: args.scylla_nodes.clone(),
        user: args.scylla_user.clone(),
        password,
        local_dc: args.scylla_dc.clone(),
        read_consistency: match &args.scylla_read_consistency {
            Some(c) => consistency(c)?,
            None => defaults.read_consistency,
        },
        write_consistency: match &args.scylla_write_consistency {
            Some(c) => consistency(c)?,
            None => defaults.write_consistency,
        },
        split_bytes: match args.scylla_split_mb {
            Some(0) => anyhow::bail!("--scylla-split-mb must be at least 1"),
            Some(mib) => mib.saturating_mul(1 << 20),
            None => defaults.split_bytes,
        },
        write_ttl: match args.scylla_write_ttl {
            // CQL's bounds: 0 would mean "no TTL", and ScyllaDB refuses more than 20 years.
            Some(s) if !(1..=MAX_TTL_SECONDS).contains(&s) => anyhow::bail!(
                "--scylla-write-ttl must be between 1 and {MAX_TTL_SECONDS} seconds (20 years), \
                 got {s}; leave it out to keep rows"
            ),
            ttl => ttl,
        },
        read_rows_per_second: args.scylla_read_rows_per_sec,
        write_rows_per_second: args.scylla_write_rows_per_sec,
        ..defaults
    })
}

/// The longest TTL CQL accepts.
const MAX_TTL_SECONDS: u32 = 630_720_000;

fn consistency(name: &str) -> anyhow::Result<Consistency> {
    Ok(match name.to_ascii_lowercase().replace('-', "_").as_str() {
        "any" => Consistency::Any,
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "three" => Consistency::Three,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "local_one" => Consistency::LocalOne,
        _ => anyhow::bail!(
            "'{name}' is not a consistency level; use one of any, one, two, three, quorum, all, \
             local_quorum, each_quorum, local_one"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_levels_read_as_cqlsh_writes_them() {
        assert_eq!(
            consistency("LOCAL_QUORUM").unwrap(),
            Consistency::LocalQuorum
        );
        assert_eq!(consistency("local-one").unwrap(), Consistency::LocalOne);
        let err = consistency("most").unwrap_err().to_string();
        assert!(err.contains("local_quorum"), "{err}");
    }
}
