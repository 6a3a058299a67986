//! One module per subcommand.

pub mod catalog;
pub mod daemons;
pub mod demo;
pub mod jobs;
pub mod load;
pub mod sql;
pub mod submit;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use quarry_sql::QuarrySession;
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};

use crate::backend::Backend;
use crate::cli::DriverConnection;

/// Opens the embedded store in `data_dir` and a SQL session over it.
pub fn open(data_dir: &Path) -> anyhow::Result<(Arc<EmbeddedStore>, QuarrySession)> {
    let context = || format!("opening the data directory {}", data_dir.display());
    let store = match EmbeddedStore::open(data_dir, EmbeddedOptions::default()) {
        Ok(store) => store,
        // Another process writes the directory (a streaming load): read what it has committed.
        Err(e) if e.is_locked() => {
            eprintln!(
                "note: another process is writing {}; reading what it has committed (read-only)",
                data_dir.display()
            );
            EmbeddedStore::open_reader(data_dir, EmbeddedOptions::default())
                .with_context(context)?
        }
        Err(e) => return Err(e).with_context(context),
    };
    let store = Arc::new(store);
    let session = QuarrySession::new(store.clone() as Arc<dyn Store>);
    Ok((store, session))
}

/// The embedded store in `data_dir`, open for writing: when another process has it open, waits
/// for it to let go (a `quarry sql` beside a load holds it for moments) for up to 10 s.
pub fn open_writer(data_dir: &Path) -> anyhow::Result<(Arc<EmbeddedStore>, QuarrySession)> {
    let started = std::time::Instant::now();
    let mut told = false;
    let store = loop {
        match EmbeddedStore::open(data_dir, EmbeddedOptions::default()) {
            Ok(store) => break store,
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
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("opening the data directory {}", data_dir.display()));
            }
        }
    };
    let store = Arc::new(store);
    let session = QuarrySession::new(store.clone() as Arc<dyn Store>);
    Ok((store, session))
}

/// How long [`open_writer`] waits for another process to let go of the data directory.
const WAIT_FOR_WRITER: std::time::Duration = std::time::Duration::from_secs(10);

/// The driver named by `--driver`, or a session over the embedded store in `data_dir`.
pub async fn backend(data_dir: &Path, driver: &DriverConnection) -> anyhow::Result<Backend> {
    match &driver.url {
        Some(_) => Ok(Backend::Remote(driver.connect(data_dir).await?)),
        None => Ok(Backend::Local(open(data_dir)?.1)),
    }
}
