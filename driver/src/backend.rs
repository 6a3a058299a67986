//! Where the CLI's statements run: in this process on the embedded store, or on a driver.

use quarry_sql::{QuarrySession, QueryOutput};

use crate::remote::RemoteDriver;

/// A place to run SQL.
#[derive(Debug)]
pub enum Backend {
    /// In this process, over the embedded store in `--data-dir`.
    Local(QuarrySession),
    /// On the driver at `--driver`, as distributed jobs.
    Remote(RemoteDriver),
}

impl Backend {
    pub async fn execute(&mut self, sql: &str) -> anyhow::Result<QueryOutput> {
        match self {
            Backend::Local(session) => Ok(session.execute(sql).await?),
            Backend::Remote(driver) => driver.execute(sql).await,
        }
    }

    /// What the shell's banner says it is connected to.
    pub fn describe(&self, data_dir: &std::path::Path) -> String {
        match self {
            Backend::Local(_) => data_dir.display().to_string(),
            Backend::Remote(driver) => format!("the driver at {}", driver.url()),
        }
    }
}
