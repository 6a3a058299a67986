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
    let store = Arc::new(
        EmbeddedStore::open(data_dir, EmbeddedOptions::default())
            .with_context(|| format!("opening the data directory {}", data_dir.display()))?,
    );
    let session = QuarrySession::new(store.clone() as Arc<dyn Store>);
    Ok((store, session))
}

/// The driver named by `--driver`, or a session over the embedded store in `data_dir`.
pub async fn backend(data_dir: &Path, driver: &DriverConnection) -> anyhow::Result<Backend> {
    match &driver.url {
        Some(_) => Ok(Backend::Remote(driver.connect(data_dir).await?)),
        None => Ok(Backend::Local(open(data_dir)?.1)),
    }
}
