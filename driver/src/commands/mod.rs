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

use quarry_sql::QuarrySession;
use quarry_store::{EmbeddedStore, Store};

use crate::backend::Backend;
use crate::cli::{DriverConnection, StoreArgs};
use crate::store::{Access, OpenedStore};

/// Opens the embedded store in `data_dir` and a SQL session over it; a directory another
/// process writes is opened read-only, with a note.
pub fn open(data_dir: &Path) -> anyhow::Result<(Arc<EmbeddedStore>, QuarrySession)> {
    let store = Arc::new(crate::store::open_embedded(data_dir, Access::Any)?);
    let session = QuarrySession::new(store.clone() as Arc<dyn Store>);
    Ok((store, session))
}

/// The store `args` select and a SQL session over it.
pub async fn open_store(
    data_dir: &Path,
    args: &StoreArgs,
    access: Access,
) -> anyhow::Result<(OpenedStore, QuarrySession)> {
    let opened = crate::store::open(data_dir, args, access).await?;
    let session = QuarrySession::new(opened.store());
    Ok((opened, session))
}

/// The driver named by `--driver`, or a session over the store `store` selects.
pub async fn backend(
    data_dir: &Path,
    driver: &DriverConnection,
    store: &StoreArgs,
) -> anyhow::Result<Backend> {
    match &driver.url {
        Some(_) => Ok(Backend::Remote(driver.connect(data_dir).await?)),
        None => Ok(Backend::Local(
            open_store(data_dir, store, Access::Any).await?.1,
        )),
    }
}
